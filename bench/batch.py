"""Benchmark: batch source imaging of many epochs (streamed), exg_jax vs MNE-Python.

Workload: ``--epochs`` (10⁴) epochs × 64 channels × 500 samples (sfreq 500 Hz),
float32, in an ``.npy`` memmap on disk (1.3 GB; written once into ``--dir`` or a
temporary directory and reused when it is already there). Electrodes: the first
64 of exg_jax's ideal 10-10 montage on MNE's default 4-shell sphere (head radius
90 mm, centre (0, 0, 40) mm); sources: ico-4 (2562, free orientation) on a
60 mm sphere. One MNE forward (``make_forward_solution``, surface-oriented) is
shared: ``forward_from_mne`` + ``make_inverse_operator(..., loose=1, depth=0.8,
avg_ref_proj=True)`` on our side, ``mne.minimum_norm.make_inverse_operator`` with
the average-reference projector on MNE's (the construction of
``tests/test_inverse.py``). sLORETA, λ² = 1/9. Our operator is built in float64
and its floating arrays cast to float32 (``jax.tree_util.tree_map``); the
streamed data are float32, so the whole data path runs in float32. MNE computes
in float64 (its only mode).

a) Regions: 68 regions (``parcellate(src_pos, 68)``), ``LabelTimeCourses(mode=
   "mean_flip")`` as the streamed reduction (``apply_inverse_epochs(memmap,
   reduce=...)``) vs MNE's ``apply_inverse_epochs(..., return_generator=True)``
   with the same region weights (``LabelTimeCourses.weights``) applied by NumPy
   to every epoch: the loop a user would write. MNE is timed on a subset
   (``--mne-epochs``) of the same data; both sides' region time courses are
   compared on it (float32 vs MNE's float64, relative to the largest value).
   Target: ≥ 3× MNE's epochs/s.
b) Peak RSS of the exg_jax part for 10³ vs 10⁴ epochs (``ru_maxrss`` at the end
   of a fresh subprocess, ``python bench/batch.py --worker ...``; the worker
   runs one chunk first, to compile). Target: within 10 % (flat). Two uses:
   the memmap passed as is with the result returned (what the docs show), and
   ``out=`` an ``.npy`` memmap for the result. A thread samples the anonymous
   (heap: NumPy, XLA buffers) and file-backed (memmap pages mapped into the
   process, read or written; they count in RSS while cached) parts of RSS
   every 50 ms, which ``ru_maxrss`` does not separate. Note that 10⁴ epochs of
   68 regions × 500 samples in float32 are 1.3 GB: the reduced output is as
   large as the input. ``--reader-pair``: also with an iterable of chunks read
   by ``np.fromfile`` (no mapping) as input.
c) Band power: ``BandPower`` (multitaper, bandwidth 4 Hz, theta/alpha/beta,
   fmin 4, fmax 30) on sLORETA, same RSS pair; MNE baseline
   ``compute_source_psd_epochs(..., return_generator=True)`` on a subset
   (``--mne-psd-epochs``) + the NumPy band mean; parity on the subset.
d) ``--ico5``: ico-5 (10242 sources) × ``--epochs`` → regions (``out=`` a
   memmap), in a subprocess: time and peak RSS (minutes).
e) Persistent compilation cache: the first streamed call (imaging kernel +
   compiled step, two chunks) in fresh processes: without a cache; then, with
   ``enable_compilation_cache(dir)`` at the default ``min_compile_time_s=0.5``,
   at 0, and at 0 with ``EQX_ON_ERROR=nan``, an empty cache (populating it) and
   the warm one. Backend compiles, cache hits and entries are counted
   (``jax.monitoring``).
f) Floor: the bare float32 GEMM K (n_rows × 64) @ X (64 × chunk·500) on
   in-memory data, NumPy over the same number of epochs and ``jnp`` (jitted)
   over ``--jnp-floor-epochs`` (its rate); the exg_jax rate as a fraction of
   the faster. Memory-bandwidth fraction: not measurable here (CPU), skipped.
g) Where the streamed time goes (on unless ``--no-profile``; regions,
   ``--profile-epochs``): end to end; the engine's load (memmap view →
   ``device_put``), a real copy out of the memmap and the finite check, over
   all chunks; then, as medians of interleaved calls on one resident chunk,
   the compiled step with the real reduction and with a trivial one (a sum),
   the chunk's GEMM as the engine forms it (vmap: a batched dot), as one 2-D
   dot in XLA and in NumPy (OpenBLAS), and the ``device_get`` of the output;
   plus XLA's temp buffers for one step. Uses the engine's private step
   (``exg_jax._stream._step_jit``), read-only.

Threading: by default both sides use their libraries' normal threading (XLA's
CPU thread pool and OpenBLAS over all cores) — this compares throughput on the
same cores, and neither side is pinned. ``--single-thread`` sets XLA and BLAS
to one thread for both sides (environment set before importing jax/NumPy; the
worker subprocesses inherit it). Timings are wall-clock on whatever machine
runs this (the reference numbers came from a shared 2-core machine with other
jobs running, so expect noise of tens of %). exg_jax's rates are steady state:
each worker first runs one chunk (compilation), then times the full call.

Usage: PYTHONPATH=. python bench/batch.py [--quick] [--ico5] [--dir DIR]
       [--epochs 10000] [--small-epochs 1000] [--mne-epochs 300]
       [--mne-psd-epochs 30] [--chunk-size N] [--no-profile] [--no-bandpower]
       [--reader-pair] [--profile-epochs 1000] [--jnp-floor-epochs 1000]
       [--single-thread]
(``--quick``: 200 epochs, ico-3, MNE subsets 50 / 10, RSS pair 20 vs 200, ico-4
for ``--ico5``: a smoke run of a minute or two.) Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

if "--single-thread" in sys.argv:
    os.environ.setdefault(
        "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import exg_jax as ex  # noqa: E402
from exg_jax.inverse import apply_inverse_epochs  # noqa: E402

N_CHAN = 64
N_TIMES = 500
SFREQ = 500.0
N_LABELS = 68
LAMBDA2 = 1.0 / 9.0
METHOD = "sLORETA"
CENTER = np.array([0.0, 0.0, 0.04])
HEAD_RADIUS = 0.09
SRC_RADIUS = 0.06
BANDS = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
PSD_KW = dict(fmin=4.0, fmax=30.0, bandwidth=4.0)
GPU_LINE = (
    "GPU: none lent to this session (run this script with the device tool where one is)"
)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def rss_status() -> dict:
    """Current / peak RSS and its anonymous / file-backed parts (KiB), Linux."""
    out = {"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0])
    except OSError:  # pragma: no cover - not Linux
        pass
    return out


class RssSampler:
    """Peak anonymous / file-backed RSS (KiB), sampled every ``dt`` s in a thread.

    ``ru_maxrss`` has one peak for all pages; the split tells the process's own
    heap (anonymous: NumPy, XLA buffers) from file pages mapped into it (a
    memmap read or written), which count in RSS while they stay cached.
    """

    def __init__(self, dt=0.05):
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._dt = dt
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            st = rss_status()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], st.get(k, 0))
            self._stop.wait(self._dt)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return dict(self.peak)


def to_float32(tree):
    """Every floating array of a pytree (an operator, a reduction) as float32 JAX."""
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float32) if eqx.is_inexact_array(a) else a, tree
    )


def rel_err(got, ref):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    return (
        float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))),
        float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
    )


def mb(n_bytes) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def kib_mb(kib) -> str:
    return f"{kib / 1024:,.0f} MiB"


def default_chunk(rows: int) -> int:
    """The engine's default chunk (epochs) for a kernel of ``rows`` rows, float32."""
    from exg_jax._stream import default_chunk as dc

    return dc(rows, N_TIMES, 4, 1)


# --------------------------------------------------------------------------- #
# Problem (main process): MNE forward, both operators, reductions, data
# --------------------------------------------------------------------------- #
def build_problem(ico: int, seed: int = 0):
    """MNE forward + MNE / exg_jax (float64) inverse operators for ico-``ico``."""
    import mne

    from exg_jax.covariance import NoiseCov
    from exg_jax.interop import forward_from_mne

    mne.set_log_level("ERROR")
    names, el = ex.standard_montage("standard_1010", radius=HEAD_RADIUS, center=CENTER)
    names, el = list(names[:N_CHAN]), np.asarray(el)[:N_CHAN]
    info = mne.create_info(names, SFREQ, "eeg")
    info.set_montage(
        mne.channels.make_dig_montage(
            ch_pos=dict(zip(names, el, strict=True)), coord_frame="head"
        )
    )
    msph = mne.make_sphere_model(r0=tuple(CENTER), head_radius=HEAD_RADIUS)
    pos, nn = ex.ico_source_space(ico, radius=SRC_RADIUS, center=CENTER)
    pos, nn = np.asarray(pos), np.asarray(nn)
    t0 = time.perf_counter()
    src = mne.setup_volume_source_space(pos=dict(rr=pos, nn=nn), sphere=msph)
    fwd = mne.make_forward_solution(info, None, src, msph, eeg=True, meg=False)
    fwd = mne.convert_forward_solution(fwd, surf_ori=True)
    t_fwd = time.perf_counter() - t0
    assert np.array_equal(fwd["source_rr"], pos)

    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((N_CHAN, N_CHAN))
    noise = mix @ rng.standard_normal((N_CHAN, 5000)) * 1e-6
    cov = noise @ noise.T / noise.shape[1]
    t0 = time.perf_counter()
    inv64 = ex.make_inverse_operator(
        forward_from_mne(fwd, reference=None),
        NoiseCov(jnp.asarray(cov)),
        0.8,
        loose=1.0,
        avg_ref_proj=True,
    )
    jax.block_until_ready(inv64)
    t_inv = time.perf_counter() - t0
    return dict(
        info=info,
        fwd=fwd,
        cov=mne.Covariance(cov, names, [], [], noise.shape[1]),
        pos=pos,
        nn=nn,
        inv64=inv64,
        inv32=to_float32(inv64),
        t_fwd=t_fwd,
        t_inv=t_inv,
    )


def mne_inverse(prob, epochs):
    import mne

    return mne.minimum_norm.make_inverse_operator(
        epochs.info, prob["fwd"], prob["cov"], loose=1.0, depth=0.8
    )


def write_data(path: Path, n_epochs: int, seed: int = 1) -> tuple[float, bool]:
    """The epochs memmap (float32 .npy), written once; reused when present."""
    shape = (n_epochs, N_CHAN, N_TIMES)
    if path.exists():
        try:
            mm = np.load(path, mmap_mode="r")
            if mm.shape == shape and mm.dtype == np.float32:
                return 0.0, True
        except (OSError, ValueError):
            pass
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp.npy")
    mm = np.lib.format.open_memmap(tmp, "w+", np.float32, shape)
    rng = np.random.default_rng(seed)
    t = np.arange(N_TIMES) / SFREQ
    for i in range(0, n_epochs, 250):
        m = min(250, n_epochs - i)
        x = rng.standard_normal((m, N_CHAN, N_TIMES), np.float32)
        # a 10 Hz rhythm with random phase per epoch and channel, on white noise
        ph = rng.uniform(0, 2 * np.pi, (m, N_CHAN, 1)).astype(np.float32)
        x += np.float32(2.0) * np.sin(2 * np.pi * 10.0 * t + ph).astype(np.float32)
        mm[i : i + m] = x * np.float32(1e-6)
    mm.flush()
    del mm
    os.replace(tmp, path)
    return time.perf_counter() - t0, False


# --------------------------------------------------------------------------- #
# Worker (a fresh subprocess): one streamed run, timing + peak RSS
# --------------------------------------------------------------------------- #
def read_chunks(path, n, chunk):
    """Chunks of the .npy read with np.fromfile (no mapping of the file)."""
    mm = np.load(path, mmap_mode="r")
    shape, dtype, offset = mm.shape, mm.dtype, mm.offset
    del mm
    per = shape[1] * shape[2]
    with open(path, "rb") as f:
        f.seek(offset)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            yield np.fromfile(f, dtype, m * per).reshape(m, shape[1], shape[2])


def worker(a):
    res = {"task": a.worker, "input": a.input}
    t_start = time.perf_counter()
    if a.cache and a.cache != "none":
        ex.enable_compilation_cache(a.cache, min_compile_time_s=a.cache_min)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, dur, **kw: compiles.append((name, dur))
    )
    with open(a.inv, "rb") as f:
        inv = pickle.load(f)
    with open(a.reduce, "rb") as f:
        red = pickle.load(f)
    mm = np.load(a.data, mmap_mode="r")
    n = a.n
    rows = int(inv.eigen_leads.shape[0])
    chunk = a.chunk_size or default_chunk(rows)
    res.update(chunk=chunk, n=n, rows=rows)

    def run(data, **kw):
        return apply_inverse_epochs(
            data,
            inv,
            LAMBDA2,
            METHOD,
            reduce=red,
            chunk_size=chunk,
            progress=False,
            **kw,
        )

    if a.worker == "cache":
        t0 = time.perf_counter()
        run(mm[: 2 * chunk])
        res["t_first"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run(mm[: 2 * chunk])
        res["t_second"] = time.perf_counter() - t0
        res["t_process"] = time.perf_counter() - t_start
        bc = [d for k, d in compiles if k.endswith("backend_compile_duration")]
        res["n_compiles"], res["t_compile"] = len(bc), sum(bc)
        res["cache_hits"] = sum(
            1 for k, _ in compiles if k.endswith("cache_retrieval_time_sec")
        )
        if a.cache and a.cache != "none":
            res["cache_files"] = sum(
                1 for p in Path(a.cache).iterdir() if p.name.endswith("-cache")
            )
        return res

    if a.worker == "profile":
        return profile(a, inv, red, mm, chunk, res)

    # warm-up: one chunk (compiles the kernel and the step)
    t0 = time.perf_counter()
    y0 = run(mm[:chunk])
    res["t_warm"] = time.perf_counter() - t0
    out = out_path = None
    if a.output == "memmap":  # out=: the reduced output written to disk
        out_path = Path(a.data).with_name(f"out_{os.getpid()}.npy")
        out = np.lib.format.open_memmap(
            out_path, "w+", y0.dtype, (n,) + tuple(y0.shape[1:])
        )
    del y0
    res["output"] = a.output
    res["rss_before"] = rss_status()
    try:  # reset the peak (VmHWM, ru_maxrss) to get the run's own peak too
        Path("/proc/self/clear_refs").write_text("5")
        res["reset_peak"] = True
    except OSError:
        res["reset_peak"] = False
    sampler = RssSampler()
    data = mm[:n] if a.input == "memmap" else read_chunks(a.data, n, chunk)
    t0 = time.perf_counter()
    y = run(data, out=out) if out is not None else run(data)
    res["t_run"] = time.perf_counter() - t0
    res["sampled"] = sampler.stop()
    res["eps"] = n / res["t_run"]
    res["out_shape"] = list(y.shape)
    res["out_dtype"] = str(y.dtype)
    res["out_bytes"] = int(y.nbytes)
    res["rss_end"] = rss_status()
    res["out_finite"] = all(
        bool(np.all(np.isfinite(y[i : i + 256]))) for i in range(0, len(y), 256)
    )
    del y, out
    if out_path is not None:
        out_path.unlink()
    # whole-process peak: the larger of the warm-up's and the run's
    res["peak_kib"] = max(res["rss_end"]["maxrss_kib"], res["rss_before"]["maxrss_kib"])
    res["run_peak_kib"] = res["rss_end"]["maxrss_kib"] if res["reset_peak"] else None
    return res


def profile(a, inv, red, mm, chunk, res):
    """Where the streamed time goes, per chunk (see the module docstring, g)."""
    from exg_jax._stream import _step_jit
    from exg_jax.inverse import _stream_kernel

    n = a.n
    n_chunks = -(-n // chunk)
    kern = _stream_kernel(inv, LAMBDA2, METHOD, None, red)
    dev = next(iter(kern.kernel.devices()))

    def put(tree):
        dyn, static = eqx.partition(tree, eqx.is_array)
        return eqx.combine(jax.device_put(dyn, dev), static)

    # end to end (the same call as the worker's), compiled first
    run = lambda d: apply_inverse_epochs(  # noqa: E731
        d, inv, LAMBDA2, METHOD, reduce=red, chunk_size=chunk, progress=False
    )
    run(mm[:chunk])
    t0 = time.perf_counter()
    run(mm[:n])
    res["t_stream"] = time.perf_counter() - t0

    # the engine's load(): ascontiguousarray (a no-op view for float32) +
    # device_put, from the memmap; and, separately, a real copy out of it
    t_load = t_copy = t_check = 0.0
    for i in range(0, n, chunk):
        t0 = time.perf_counter()
        jax.block_until_ready(
            jax.device_put(np.ascontiguousarray(mm[i : i + chunk], np.float32), dev)
        )
        t1 = time.perf_counter()
        c = np.array(mm[i : i + chunk], np.float32)
        t2 = time.perf_counter()
        np.all(np.isfinite(c))
        t_check += time.perf_counter() - t2
        t_load += t1 - t0
        t_copy += t2 - t1
    res["t_load"], res["t_copy"], res["t_check"] = t_load, t_copy, t_check

    x_host = np.array(mm[:chunk], np.float32)
    x = jax.device_put(x_host, dev)
    kr_real = put((kern, red))
    kr_sum = put((kern, lambda s: jnp.sum(s, axis=(-2, -1))))
    try:
        mem = _step_jit.lower(kr_real, x, "epochs").compile().compiled
        res["xla_temp_bytes"] = int(mem.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - optional (private API of equinox / jax)
        pass
    y = _step_jit(kr_real, x, "epochs")

    # GEMMs of the chunk: as the engine forms it (vmap: a batched dot), as one
    # 2-D dot K @ X (64 x chunk*500) in XLA, and NumPy's (OpenBLAS) 2-D dot
    k = jax.device_put(jnp.asarray(kern.kernel, jnp.float32), dev)
    n_ch = x.shape[1]
    bat = jax.jit(jax.vmap(lambda x1: k @ x1))
    flat = jax.jit(lambda x: k @ x.transpose(1, 0, 2).reshape(n_ch, -1))
    k_np = np.asarray(k)
    x2 = np.ascontiguousarray(x_host.transpose(1, 0, 2).reshape(n_ch, -1))
    o2 = np.empty((k_np.shape[0], x2.shape[1]), np.float32)
    items = {
        "t_step": lambda: _step_jit(kr_real, x, "epochs"),
        "t_step_sum": lambda: _step_jit(kr_sum, x, "epochs"),
        "t_get": lambda: np.asarray(jax.device_get(y)),
        "t_gemm_batched": lambda: bat(x),
        "t_gemm_2d": lambda: flat(x),
        "t_gemm_numpy": lambda: np.matmul(k_np, x2, out=o2),
    }

    # interleaved rounds (the load of a shared machine hits every item alike);
    # the median per call, scaled to n_chunks calls
    rounds = max(3, min(a.profile_rounds, n_chunks))
    per_call = {key: [] for key in items}
    for f in items.values():
        jax.block_until_ready(f())
    for _ in range(rounds):
        for key, f in items.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            per_call[key].append(time.perf_counter() - t0)
    for key, ts in per_call.items():
        res[key] = float(np.median(ts)) * n_chunks
    res["rounds"] = rounds
    res["n_chunks"] = n_chunks
    return res


def spawn(
    args, task, *, n, inv, reduce, data, inp="memmap", cache=None, cache_min=0.5,
    env=None, output="return", timeout=7200,
):  # fmt: skip
    """Run ``python bench/batch.py --worker task ...`` in a fresh process."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker", task, "--n", str(n), "--inv", str(inv), "--reduce", str(reduce),
        "--data", str(data), "--input", inp, "--cache-min", str(cache_min),
        "--output", output,
    ]  # fmt: skip
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    if cache:
        cmd += ["--cache", str(cache)]
    if args.single_thread:
        cmd += ["--single-thread"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), EXG_JAX_NO_PROGRESS="1", **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-15:])
        raise RuntimeError(f"worker {task} n={n} failed (rc {p.returncode}):\n{tail}")
    res = json.loads(lines[-1][len("RESULT ") :])
    res["wall"] = wall
    return res


# --------------------------------------------------------------------------- #
# Main-process measurements
# --------------------------------------------------------------------------- #
def gemm_floor(rows, n_epochs, chunk, n_jnp, seed=0):
    """K (rows×64) @ X (64 × chunk·500), float32: NumPy over n_epochs epochs, jnp
    over n_jnp (its rate is what counts: XLA's GEMM is the slower one here).
    Returns (t_numpy, n_numpy, t_jnp, n_jnp)."""
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((rows, N_CHAN)).astype(np.float32)
    x = rng.standard_normal((N_CHAN, chunk * N_TIMES)).astype(np.float32)
    reps = -(-n_epochs // chunk)
    out = np.empty((rows, chunk * N_TIMES), np.float32)
    np.matmul(k, x, out=out)
    t0 = time.perf_counter()
    for _ in range(reps):
        np.matmul(k, x, out=out)
    t_np = time.perf_counter() - t0
    del out
    kj, xj = jnp.asarray(k), jnp.asarray(x)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(kj, xj))
    reps_j = max(1, -(-min(n_jnp, n_epochs) // chunk))
    t0 = time.perf_counter()
    for _ in range(reps_j):
        jax.block_until_ready(f(kj, xj))
    t_jnp = time.perf_counter() - t0
    return t_np, reps * chunk, t_jnp, reps_j * chunk


def mne_regions(prob, epochs, weights):
    """MNE's generator + NumPy region mean (the user's loop); seconds, (n, L, T)."""
    import mne

    inv_m = mne_inverse(prob, epochs)
    t0 = time.perf_counter()
    gen = mne.minimum_norm.apply_inverse_epochs(
        epochs, inv_m, LAMBDA2, METHOD, nave=1, return_generator=True
    )
    out = np.stack([weights @ stc.data for stc in gen])
    return time.perf_counter() - t0, out


def mne_bandpower(prob, epochs):
    """MNE's compute_source_psd_epochs generator + NumPy band mean."""
    import mne

    inv_m = mne_inverse(prob, epochs)
    t0 = time.perf_counter()
    gen = mne.minimum_norm.compute_source_psd_epochs(
        epochs, inv_m, LAMBDA2, METHOD, pick_ori=None, nave=1,
        return_generator=True, adaptive=False, low_bias=True, **PSD_KW,
    )  # fmt: skip
    rows = []
    for stc in gen:
        f = stc.times
        rows.append(
            np.stack(
                [
                    stc.data[:, (f >= lo) & (f < hi)].mean(-1)
                    for lo, hi in BANDS.values()
                ],
                -1,
            )
        )
    return time.perf_counter() - t0, np.stack(rows)


def make_epochs(prob, mm, n):
    import mne

    ep = mne.EpochsArray(np.asarray(mm[:n], np.float64), prob["info"], verbose=False)
    ep.set_eeg_reference(projection=True, verbose=False)
    return ep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ico5", action="store_true", help="ico-5 × --epochs → regions")
    ap.add_argument("--dir", default=None, help="where the memmap is written / reused")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--small-epochs", type=int, default=None)
    ap.add_argument("--mne-epochs", type=int, default=None)
    ap.add_argument("--mne-psd-epochs", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-epochs", type=int, default=1000)
    ap.add_argument("--jnp-floor-epochs", type=int, default=1000)
    ap.add_argument("--profile-rounds", type=int, default=7)
    ap.add_argument("--no-bandpower", action="store_true")
    ap.add_argument(
        "--reader-pair",
        action="store_true",
        help="also the RSS pair with np.fromfile chunks as input (no memmap)",
    )
    ap.add_argument("--single-thread", action="store_true")
    ap.add_argument(
        "--skip",
        default="",
        help="comma list of sections to skip: regions, bandpower, profile, cache, "
        "ico5 (the data, operators and GEMM floor always run)",
    )
    # worker-only
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--inv", help=argparse.SUPPRESS)
    ap.add_argument("--reduce", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--input", default="memmap", help=argparse.SUPPRESS)
    ap.add_argument("--output", default="return", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-min", type=float, default=0.5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        res = worker(a)
        print("RESULT " + json.dumps(res), flush=True)
        return

    q = a.quick
    n_big = a.epochs or (200 if q else 10_000)
    n_small = a.small_epochs or max(1, n_big // 10)
    n_mne = min(a.mne_epochs or (50 if q else 300), n_big)
    n_psd = min(a.mne_psd_epochs or (10 if q else 30), n_big)
    ico = 3 if q else 4
    ico_big = 4 if q else 5
    summary = []

    def say(line=""):
        print(line, flush=True)

    def add(line):
        summary.append(line)
        say("  -> " + line)

    t_all = time.perf_counter()
    say("=" * 78)
    say("bench/batch.py: batch source imaging, exg_jax (streamed) vs MNE-Python")
    say(
        "NOTE: timings are on a shared 2-core machine (other jobs running): "
        "expect tens of % noise."
    )
    say(
        f"cores {os.cpu_count()}, jax {jax.__version__} {jax.devices()[0].platform}, "
        f"threading: {'single (XLA + BLAS 1 thread)' if a.single_thread else 'libraries default (XLA pool + OpenBLAS over all cores)'}"
    )
    say(GPU_LINE)
    say("Memory-bandwidth fraction: skipped (CPU; measurable on an accelerator only).")
    say(
        f"sizes: {n_big} epochs x {N_CHAN} ch x {N_TIMES} samples, ico-{ico}, "
        f"RSS pair {n_small} / {n_big}, MNE subsets {n_mne} (regions) / {n_psd} (PSD)"
        + (" [--quick]" if q else "")
    )

    tmpdir = None
    if a.dir:
        work = Path(a.dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmpdir = tempfile.mkdtemp(prefix="exg_batch_")
        work = Path(tmpdir)
    try:
        _main(a, work, n_big, n_small, n_mne, n_psd, ico, ico_big, say, add)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    say()
    say("=" * 78)
    say(
        f"SUMMARY ({'quick' if q else 'full'} run; shared 2-core CPU, noisy; "
        f"total {time.perf_counter() - t_all:.0f} s)"
    )
    for line in summary:
        say("  " + line)
    say("=" * 78)


def _main(a, work, n_big, n_small, n_mne, n_psd, ico, ico_big, say, add):
    from exg_jax.reductions import LabelTimeCourses, parcellate

    skip = {x.strip() for x in (a.skip or "").split(",") if x.strip()}

    # ---------------------------------------------------------------- data
    data = work / f"epochs_{n_big}x{N_CHAN}x{N_TIMES}_f32.npy"
    t_w, reused = write_data(data, n_big)
    say(
        f"data: {data} ({mb(data.stat().st_size)}), "
        + ("reused" if reused else f"written in {t_w:.1f} s")
    )
    mm = np.load(data, mmap_mode="r")

    # ---------------------------------------------------------------- operators
    prob = build_problem(ico)
    inv32 = prob["inv32"]
    rows = int(inv32.eigen_leads.shape[0])
    chunk = a.chunk_size or default_chunk(rows)
    say(
        f"ico-{ico}: {len(prob['pos'])} sources, kernel {rows} x {N_CHAN}; MNE forward "
        f"{prob['t_fwd']:.1f} s, exg_jax operator (float64) {prob['t_inv']:.1f} s; "
        f"chunk {chunk} epochs (engine default: {default_chunk(rows)})"
    )
    labels = parcellate(prob["pos"], N_LABELS, seed=0)
    ltc = LabelTimeCourses(labels, "mean_flip", src_nn=prob["nn"])
    inv_path, ltc_path = work / f"inv32_ico{ico}.pkl", work / f"ltc_ico{ico}.pkl"
    inv_path.write_bytes(pickle.dumps(inv32))
    ltc_path.write_bytes(pickle.dumps(ltc))
    w = dict(inv=inv_path, data=data)

    # ---------------------------------------------------------------- floor
    say()
    say(
        f"[floor] bare float32 GEMM K ({rows}x{N_CHAN}) @ X ({N_CHAN} x {chunk}*{N_TIMES})"
    )
    t_np, n_np, t_jnp, n_jnp = gemm_floor(rows, n_big, chunk, a.jnp_floor_epochs)
    fl = 2.0 * rows * N_CHAN * N_TIMES
    np_eps, jnp_eps = n_np / t_np, n_jnp / t_jnp
    floor_eps = max(np_eps, jnp_eps)
    say(
        f"  NumPy: {n_np} epochs in {t_np:.1f} s ({np_eps:,.0f} epochs/s, "
        f"{fl * np_eps / 1e9:.0f} GFLOP/s); jnp (jit): {n_jnp} epochs in {t_jnp:.1f} s "
        f"({jnp_eps:,.0f} epochs/s, {fl * jnp_eps / 1e9:.0f} GFLOP/s)"
    )
    add(
        f"GEMM floor (f32, ico-{ico} kernel {rows}x{N_CHAN}): NumPy {np_eps:,.0f} "
        f"epochs/s ({n_np} epochs), jnp {jnp_eps:,.0f} epochs/s ({n_jnp} epochs)"
    )

    # ---------------------------------------------------------------- a) regions
    ep = make_epochs(prob, mm, max(n_mne, n_psd))
    if "regions" not in skip:
        say()
        say(f"[a] regions: sLORETA -> {N_LABELS} regions mean_flip")
        say(
            f"  MNE (float64) on a subset of {n_mne} epochs, generator + NumPy region mean"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_mne, y_mne = mne_regions(prob, ep[:n_mne], ltc.weights)
        mne_eps = n_mne / t_mne
        say(
            f"  MNE: {t_mne:.1f} s for {n_mne} epochs = {mne_eps:.1f} epochs/s (subset)"
        )
        y_ours = apply_inverse_epochs(
            mm[:n_mne], inv32, LAMBDA2, METHOD, reduce=ltc, progress=False
        )
        e_max, e_l2 = rel_err(y_ours, y_mne)
        say(
            f"  parity on the subset: exg_jax {y_ours.dtype} vs MNE float64: "
            f"max rel {e_max:.1e}, L2 rel {e_l2:.1e}"
        )
        say(
            f"  exg_jax workers (fresh processes): {n_small} and {n_big} epochs, memmap in"
        )
        r_small = spawn(a, "regions", n=n_small, reduce=ltc_path, **w)
        r_big = spawn(a, "regions", n=n_big, reduce=ltc_path, **w)
        for r in (r_small, r_big):
            say(worker_line(r))
        ratio = r_big["eps"] / mne_eps
        add(
            f"regions ico-{ico}: exg_jax {r_big['eps']:,.0f} epochs/s ({n_big} epochs, "
            f"{r_big['out_dtype']}, memmap) vs MNE {mne_eps:.1f} epochs/s ({n_mne}-epoch "
            f"subset) = {ratio:.1f}x [target >= 3x: {'PASS' if ratio >= 3 else 'FAIL'}]"
        )
        add(
            f"regions parity ({n_mne} epochs, f32 vs MNE f64): max rel {e_max:.1e}, "
            f"L2 rel {e_l2:.1e}"
        )
        add(
            f"regions vs GEMM floor: exg_jax {r_big['eps'] / floor_eps:.0%} of the floor's "
            f"epochs/s; MNE {mne_eps / floor_eps:.1%}"
        )
        rss_pair(add, "regions, memmap in", r_small, r_big)
        if a.reader_pair:
            say("  same, input = iterable of np.fromfile chunks (no file mapping)")
            f_small = spawn(a, "regions", n=n_small, reduce=ltc_path, inp="reader", **w)
            f_big = spawn(a, "regions", n=n_big, reduce=ltc_path, inp="reader", **w)
            for r in (f_small, f_big):
                say(worker_line(r))
            rss_pair(add, "regions, fromfile chunks in", f_small, f_big)
            add(f"regions ico-{ico} with fromfile chunks: {f_big['eps']:,.0f} epochs/s")
        say("  same, memmap in and out= a memmap on disk (nothing O(n) on the heap)")
        o_small = spawn(a, "regions", n=n_small, reduce=ltc_path, output="memmap", **w)
        o_big = spawn(a, "regions", n=n_big, reduce=ltc_path, output="memmap", **w)
        for r in (o_small, o_big):
            say(worker_line(r))
        rss_pair(add, "regions, memmap in + out= memmap", o_small, o_big)

    # ---------------------------------------------------------------- c) band power
    say()
    say(f"[c] band power: BandPower {dict(BANDS)} Hz, multitaper {PSD_KW}")
    if a.no_bandpower or "bandpower" in skip:
        add("band power: skipped (--no-bandpower / --skip)")
    else:
        bandpower(
            a, prob, mm, ep, n_small, n_big, n_psd, w, work, ico, floor_eps, say, add
        )

    # ---------------------------------------------------------------- g) profile
    if not a.no_profile and "profile" not in skip:
        say()
        n_prof = min(n_big, a.profile_epochs)
        say(f"[g] where the streamed time goes (regions, ico-{ico}, {n_prof} epochs)")
        p = spawn(a, "profile", n=n_prof, reduce=ltc_path, **w)
        nc = p["n_chunks"]
        per = lambda k: p[k] / nc * 1e3  # noqa: E731
        say(
            f"  {nc} chunks of {p['chunk']} epochs; ms per chunk (page cache warm; "
            f"end to end and host reads over all chunks, the rest: median of "
            f"{p['rounds']} interleaved calls)"
        )
        rows_ = [
            ("t_stream", "end to end (apply_inverse_epochs, memmap)"),
            ("t_load", "engine's load: memmap view -> device_put"),
            ("t_copy", "  (a real copy out of the memmap, f32)"),
            ("t_check", "finite check (np.isfinite, loader thread)"),
            ("t_step", "compiled step, real reduction (mean_flip)"),
            ("t_step_sum", "compiled step, trivial reduction (sum)"),
            ("t_gemm_batched", "GEMM as the engine forms it (vmap, XLA)"),
            ("t_gemm_2d", "GEMM as one 2-D dot K @ X (XLA)"),
            ("t_gemm_numpy", "GEMM as one 2-D dot, NumPy (OpenBLAS)"),
            ("t_get", "device_get of the reduced output"),
        ]
        for key, name in rows_:
            if key in p:
                say(f"    {name:44s} {per(key):8.1f}")
        if "xla_temp_bytes" in p:
            say(
                f"  XLA temp buffers of one step: {mb(p['xla_temp_bytes'])} (chunk "
                f"budget CHUNK_BYTES = 256 MiB of unreduced estimate)"
            )
        add(
            f"profile, ms per chunk of {p['chunk']} (ico-{ico}, regions): end-to-end "
            f"{per('t_stream'):.0f}; load {per('t_load'):.0f}, check "
            f"{per('t_check'):.0f}, get {per('t_get'):.1f}; step {per('t_step'):.0f} "
            f"(with a trivial reduction {per('t_step_sum'):.0f}); GEMM batched/XLA "
            f"{per('t_gemm_batched'):.0f}, 2-D/XLA {per('t_gemm_2d'):.0f}, 2-D/NumPy "
            f"{per('t_gemm_numpy'):.0f}"
            + (
                f"; XLA temp buffers/step {mb(p['xla_temp_bytes'])}"
                if "xla_temp_bytes" in p
                else ""
            )
        )

    # ---------------------------------------------------------------- e) cache
    if "cache" not in skip:
        say()
        say("[e] persistent compilation cache: first streamed call in fresh processes")
        n_c = 2 * chunk
        res_c = []
        for label, cmin, env in (
            ("default min_compile_time_s=0.5", 0.5, None),
            ("min_compile_time_s=0", 0.0, None),
            ("min 0 + EQX_ON_ERROR=nan", 0.0, {"EQX_ON_ERROR": "nan"}),
        ):
            cdir = work / f"jax_cache_{len(res_c)}"
            shutil.rmtree(cdir, ignore_errors=True)
            say(f"  {label}:")
            trio = []
            for name, cache in (("no cache", "none"), ("empty", cdir), ("warm", cdir)):
                if name == "no cache" and res_c:
                    trio.append(res_c[0][1][0])  # the same process: measured once
                    continue
                c = spawn(
                    a, "cache", n=n_c, reduce=ltc_path, cache=cache, cache_min=cmin,
                    env=env, **w,
                )  # fmt: skip
                trio.append(c)
                say(
                    f"    {name:9s} first call {c['t_first']:6.2f} s, second "
                    f"{c['t_second']:5.2f} s, process {c['wall']:5.1f} s; backend "
                    f"compiles {c['n_compiles']} ({c['t_compile']:.2f} s), cache hits "
                    f"{c['cache_hits']}"
                    + (f", entries {c['cache_files']}" if "cache_files" in c else "")
                )
            res_c.append((label, trio))
        for label, (c0, c1, c2) in res_c:
            add(
                f"compile cache [{label}]: first call {c0['t_first']:.2f} s (none) / "
                f"{c1['t_first']:.2f} s (empty) / {c2['t_first']:.2f} s (warm; "
                f"{c2['cache_hits']} hits, {c2.get('cache_files', 0)} entries); steady "
                f"{c2['t_second']:.2f} s"
            )

    # ---------------------------------------------------------------- d) ico-5
    say()
    if a.ico5 and "ico5" not in skip:
        say(
            f"[d] ico-{ico_big} x {n_big} epochs -> regions (NOTE: this takes minutes "
            "on a 2-core CPU)"
        )
        prob5 = build_problem(ico_big)
        rows5 = int(prob5["inv32"].eigen_leads.shape[0])
        say(
            f"  ico-{ico_big}: {len(prob5['pos'])} sources, kernel {rows5} x {N_CHAN}, "
            f"MNE forward {prob5['t_fwd']:.1f} s, operator {prob5['t_inv']:.1f} s"
        )
        lab5 = parcellate(prob5["pos"], N_LABELS, seed=0)
        p_inv = work / f"inv32_ico{ico_big}.pkl"
        p_ltc = work / f"ltc_ico{ico_big}.pkl"
        p_inv.write_bytes(pickle.dumps(prob5["inv32"]))
        p_ltc.write_bytes(
            pickle.dumps(LabelTimeCourses(lab5, "mean_flip", src_nn=prob5["nn"]))
        )
        del prob5
        # out= a memmap: the 1.3 GB of region time courses go to disk
        r5 = spawn(
            a, "regions", n=n_big, reduce=p_ltc, inv=p_inv, data=data, output="memmap"
        )
        say(worker_line(r5))
        add(
            f"ico-{ico_big} x {n_big} -> regions: {r5['t_run']:.0f} s "
            f"({r5['eps']:,.0f} epochs/s, chunk {r5['chunk']}), peak RSS "
            f"{kib_mb(r5['peak_kib'])} (anon peak "
            f"{kib_mb(r5.get('sampled', {}).get('RssAnon', 0))}; output "
            f"{mb(r5['out_bytes'])}), "
            f"completed: {r5['out_finite']}"
        )
    else:
        say(f"[d] ico-{ico_big}: skipped (pass --ico5, not in --skip; takes minutes)")
        add(f"ico-{ico_big}: skipped (not asked: --ico5 / --skip)")
    add(GPU_LINE)
    add("memory-bandwidth fraction: skipped (CPU)")


def bandpower(
    a, prob, mm, ep, n_small, n_big, n_psd, w, work, ico, floor_eps, say, add
):
    try:
        from exg_jax.spectral import BandPower

        bp = BandPower(SFREQ, N_TIMES, BANDS, **PSD_KW)
        y = apply_inverse_epochs(
            mm[:2], prob["inv32"], LAMBDA2, METHOD, reduce=bp, progress=False
        )
        assert y.shape == (2, len(prob["pos"]), len(BANDS)), y.shape
    except Exception as err:  # noqa: BLE001 - reported, the rest goes on
        msg = f"band power: skipped: exg_jax.spectral.BandPower unavailable or failing ({type(err).__name__}: {err})"
        say("  " + msg)
        add(msg)
        return
    bp_path = work / f"bp_ico{ico}.pkl"
    bp_path.write_bytes(pickle.dumps(bp))
    n_p = min(n_psd, len(ep))
    ep_p = ep[:n_p]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_mne, y_mne = mne_bandpower(prob, ep_p)
    mne_eps = n_p / t_mne
    say(f"  MNE: {t_mne:.1f} s for {n_p} epochs = {mne_eps:.2f} epochs/s (subset)")
    # parity: MNE combines a free source's three PSDs as sqrt(sum of squares)
    # in its source frame; BandPower(combine="mne", orient_frame=...) does the
    # same. The timed runs use the default (combine="sum", the PSD of the vector).
    frame = np.asarray(prob["fwd"]["source_nn"]).reshape(-1, 3, 3)
    try:
        bp_mne = BandPower(
            SFREQ, N_TIMES, BANDS, combine="mne", orient_frame=frame, **PSD_KW
        )
        how = 'combine="mne" + MNE\'s source frames'
    except TypeError as err:
        bp_mne, how = bp, f"default combine (combine='mne' unavailable: {err})"
    t0 = time.perf_counter()
    y_ours = apply_inverse_epochs(
        mm[:n_p], prob["inv32"], LAMBDA2, METHOD, reduce=bp_mne, progress=False
    )
    t_par = time.perf_counter() - t0
    e_max, e_l2 = rel_err(y_ours, y_mne)
    y_sum = apply_inverse_epochs(
        mm[:n_p], prob["inv32"], LAMBDA2, METHOD, reduce=bp, progress=False
    )
    s_max, _ = rel_err(y_sum, y_mne)
    say(
        f"  parity on the subset ({y_ours.dtype} vs f64, {how}): max rel {e_max:.1e}, "
        f"L2 {e_l2:.1e} (first call incl. compile {t_par:.1f} s); the default "
        f"combine='sum' differs from MNE by max rel {s_max:.2f} (by design)"
    )
    r_small = spawn(a, "bandpower", n=n_small, reduce=bp_path, **w)
    r_big = spawn(a, "bandpower", n=n_big, reduce=bp_path, **w)
    for r in (r_small, r_big):
        say(worker_line(r))
    ratio = r_big["eps"] / mne_eps
    add(
        f"band power ico-{ico}: exg_jax {r_big['eps']:,.0f} epochs/s ({n_big} epochs, "
        f"{r_big['out_dtype']}) vs MNE {mne_eps:.2f} epochs/s ({n_p}-epoch subset) = "
        f"{ratio:.1f}x; vs GEMM floor {r_big['eps'] / floor_eps:.0%}"
    )
    add(
        f"band power parity ({n_p} epochs, {how}): max rel {e_max:.1e}, L2 rel "
        f"{e_l2:.1e}"
    )
    rss_pair(add, "band power, memmap in", r_small, r_big)


def worker_line(r):
    end, before, smp = r["rss_end"], r["rss_before"], r.get("sampled", {})
    return (
        f"    {r['task']:9s} n={r['n']:6d} [in {r['input']}, out "
        f"{r.get('output', 'return')}]: warm-up {r['t_warm']:5.1f} s, run "
        f"{r['t_run']:7.1f} s = {r['eps']:7,.1f} epochs/s; peak RSS "
        f"{kib_mb(r['peak_kib'])} (before run {kib_mb(before.get('VmRSS', 0))}; "
        f"sampled peaks during the run: anon {kib_mb(smp.get('RssAnon', 0))}, file "
        f"{kib_mb(smp.get('RssFile', 0))}; at end anon {kib_mb(end.get('RssAnon', 0))}, "
        f"file {kib_mb(end.get('RssFile', 0))}); output {mb(r['out_bytes'])} "
        f"{r['out_dtype']}"
    )


def rss_pair(add, what, r_small, r_big):
    p_s, p_b = r_small["peak_kib"], r_big["peak_kib"]
    ratio = p_b / p_s
    line = (
        f"peak RSS {what}: {r_small['n']} epochs {kib_mb(p_s)}, {r_big['n']} epochs "
        f"{kib_mb(p_b)}: ratio {ratio:.2f} [target <= 1.10: "
        f"{'PASS' if ratio <= 1.10 else 'FAIL'}]"
    )
    a_s = r_small.get("sampled", {}).get("RssAnon")
    a_b = r_big.get("sampled", {}).get("RssAnon")
    if a_s and a_b:
        line += (
            f"; anonymous (heap) peak {kib_mb(a_s)} / {kib_mb(a_b)} = {a_b / a_s:.2f}"
        )
    line += (
        f"; outputs {mb(r_small['out_bytes'])} / {mb(r_big['out_bytes'])}; "
        f"file-backed peak {kib_mb(r_small.get('sampled', {}).get('RssFile', 0))} / "
        f"{kib_mb(r_big.get('sampled', {}).get('RssFile', 0))}"
    )
    add(line)


if __name__ == "__main__":
    main()
