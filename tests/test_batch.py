"""Streamed batch imaging: apply_inverse_epochs / apply_inverse_raw on host data.

Streamed (NumPy, memmap, iterables of chunks), sharded (a 1-D mesh of 4 host
devices, in a subprocess) and in-memory results agree to <= 1e-12; MNE-Python
parity for ``apply_inverse_raw``; one compile for all chunks; errors name the
argument and keep what was written before them.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import mne
import numpy as np
import pytest
from _oracle import mne_sphere_forward

import exg_jax as ex
from exg_jax.covariance import NoiseCov
from exg_jax.interop import forward_from_mne

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-12
LAMBDA2 = 1.0 / 9.0


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def problem():
    sphere = ex.SphereModel()
    _, el = ex.standard_montage("standard_1020", radius=0.075, center=sphere.center)
    pos, nn = ex.ico_source_space(1, radius=0.055, center=sphere.center)
    fwd = ex.make_sphere_forward_free(
        jnp.asarray(el), jnp.asarray(pos), sphere, src_nn=jnp.asarray(nn)
    )
    rng = np.random.default_rng(0)
    n = len(el)
    cov = ex.compute_covariance(jnp.asarray(rng.standard_normal((n, 1000)) * 1e-6))
    inv = ex.make_inverse_operator(fwd, cov, loose=0.2)
    epochs = rng.standard_normal((23, n, 30)) * 1e-6
    raw = rng.standard_normal((n, 700)) * 1e-6
    return dict(inv=inv, epochs=epochs, raw=raw, pos=np.asarray(pos), nn=np.asarray(nn))


def _in_memory(problem, method, pick_ori):
    return np.asarray(
        ex.apply_inverse_epochs(
            jnp.asarray(problem["epochs"]),
            problem["inv"],
            LAMBDA2,
            method,
            pick_ori=pick_ori,
        ).data
    )


@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA"])
@pytest.mark.parametrize("pick_ori", [None, "normal", "vector"])
def test_streamed_equals_in_memory(problem, method, pick_ori, tmp_path):
    ref = _in_memory(problem, method, pick_ori)
    ep = problem["epochs"]
    mm = np.lib.format.open_memmap(tmp_path / "ep.npy", "w+", np.float64, ep.shape)
    mm[:] = ep
    mm.flush()
    mm = np.load(tmp_path / "ep.npy", mmap_mode="r")
    inv = problem["inv"]
    got = {
        "numpy": ex.apply_inverse_epochs(ep, inv, LAMBDA2, method, pick_ori=pick_ori),
        "memmap": ex.apply_inverse_epochs(
            mm, inv, LAMBDA2, method, pick_ori=pick_ori, chunk_size=5
        ),
        "iterable": ex.apply_inverse_epochs(
            (ep[i : i + 7] for i in range(0, len(ep), 7)),
            inv,
            LAMBDA2,
            method,
            pick_ori=pick_ori,
            chunk_size=4,
        ),  # fmt: skip
    }
    for name, stc in got.items():
        assert isinstance(stc.data, np.ndarray), name
        assert stc.data.shape == ref.shape, name
        assert _rel(stc.data, ref) <= TOL, name


def test_out_memmap_and_reduce(problem, tmp_path):
    inv, ep = problem["inv"], problem["epochs"]
    ref = _in_memory(problem, "dSPM", None)
    out = np.lib.format.open_memmap(tmp_path / "out.npy", "w+", np.float64, ref.shape)
    stc = ex.apply_inverse_epochs(ep, inv, LAMBDA2, "dSPM", out=out, chunk_size=6)
    assert stc.data is out
    assert _rel(np.load(tmp_path / "out.npy"), ref) <= TOL

    def power(sol):  # a user reduction: mean power per source and epoch
        return jnp.mean(sol * sol, axis=-1)

    red = ex.apply_inverse_epochs(ep, inv, LAMBDA2, "dSPM", reduce=power, chunk_size=4)
    assert isinstance(red, np.ndarray) and red.shape == ref.shape[:2]
    assert _rel(red, np.mean(ref * ref, axis=-1)) <= TOL
    # traced epochs: the same reduction inside one compiled program (differentiable)
    traced = jax.jit(
        lambda e: ex.apply_inverse_epochs(e, inv, LAMBDA2, "dSPM", reduce=power)
    )(jnp.asarray(ep))
    assert _rel(traced, red) <= TOL


def test_one_compile_for_all_chunks(problem):
    calls = []

    def reduce(sol):
        calls.append(sol.shape)  # runs at trace time only
        return sol[..., 0]

    ep = problem["epochs"]  # 23 epochs: chunks of 5 (the last one padded)
    out = ex.apply_inverse_epochs(
        ep, problem["inv"], LAMBDA2, "MNE", reduce=reduce, chunk_size=5
    )
    assert out.shape[0] == 23
    assert len(calls) == 1, calls
    # No chunk_size: an input smaller than the memory budget is one chunk of
    # its own size (not padded to the ~256 MB budget's epoch count)
    calls.clear()
    ex.apply_inverse_epochs(ep, problem["inv"], LAMBDA2, "MNE", reduce=reduce)
    assert [c[0] for c in calls] == [23], calls


def test_raw_streamed_equals_whole(problem, tmp_path):
    inv, raw = problem["inv"], problem["raw"]
    ref = np.asarray(
        ex.apply_inverse(jnp.asarray(raw[:, 50:650]), inv, LAMBDA2, "sLORETA").data
    )
    for bs in (None, 64, 600):
        got = ex.apply_inverse_raw(
            raw, inv, LAMBDA2, "sLORETA", start=50, stop=650, buffer_size=bs
        )
        assert _rel(got.data, ref) <= TOL, bs
    it = ex.apply_inverse_raw(
        (raw[:, i : i + 100] for i in range(50, 650, 100)), inv, LAMBDA2, "sLORETA",
        buffer_size=100,
    )  # fmt: skip
    assert _rel(it.data, ref) <= TOL
    out = np.lib.format.open_memmap(tmp_path / "raw.npy", "w+", np.float64, ref.shape)
    ex.apply_inverse_raw(
        raw, inv, LAMBDA2, "sLORETA", start=50, stop=650, buffer_size=128, out=out
    )
    assert _rel(out, ref) <= TOL
    red = ex.apply_inverse_raw(
        raw, inv, LAMBDA2, "sLORETA", start=50, stop=650, buffer_size=128,
        reduce=lambda s: s[:3],
    )  # fmt: skip
    assert _rel(red, ref[:3]) <= TOL


def test_nan_chunk_raises_and_keeps_earlier(problem, tmp_path):
    inv = problem["inv"]
    ep = problem["epochs"].copy()
    ep[12, 3, 7] = np.nan
    ref = _in_memory(problem, "dSPM", None)
    out = np.zeros(ref.shape)
    with pytest.raises(
        ValueError, match=r"epochs contains NaN or Inf in epochs 10 to 14"
    ):
        ex.apply_inverse_epochs(ep, inv, LAMBDA2, "dSPM", out=out, chunk_size=5)
    # the first chunks were written before the bad one was read (the reader runs
    # one chunk ahead, so epochs 0-4 at least)
    assert _rel(out[:5], ref[:5]) <= TOL
    raw = problem["raw"].copy()
    raw[0, 400] = np.inf
    with pytest.raises(ValueError, match=r"raw contains NaN or Inf in samples"):
        ex.apply_inverse_raw(raw, inv, LAMBDA2, "dSPM", buffer_size=100)


def test_bad_input(problem):
    inv, ep = problem["inv"], problem["epochs"]
    with pytest.raises(ValueError, match="channels"):
        ex.apply_inverse_epochs(ep[:, :5], inv, chunk_size=4)
    with pytest.raises(ValueError, match="out must have shape"):
        ex.apply_inverse_epochs(ep, inv, out=np.zeros((2, 2)))
    ro = np.zeros((23, inv.n_src, 30))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ex.apply_inverse_epochs(ep, inv, out=ro)
    with pytest.raises(TypeError, match="reduce"):
        ex.apply_inverse_epochs(ep, inv, reduce=3)
    with pytest.raises(ValueError, match="chunk_size"):
        ex.apply_inverse_epochs(ep, inv, chunk_size=0)
    with pytest.raises(ValueError, match="devices"):
        ex.apply_inverse_epochs(ep, inv, devices="gpu0")
    with pytest.raises(ValueError, match="empty"):
        ex.apply_inverse_epochs(iter([]), inv)
    with pytest.raises(ValueError, match="start and stop"):
        ex.apply_inverse_raw(problem["raw"], inv, start=600, stop=100)
    with pytest.raises(ValueError, match="traced"):
        jax.jit(lambda e: ex.apply_inverse_epochs(e, inv, chunk_size=2).data)(
            jnp.asarray(ep)
        )


def test_progress_bar(problem, capsys):
    ex.apply_inverse_epochs(
        problem["epochs"], problem["inv"], LAMBDA2, "MNE", chunk_size=5, progress=True,
        reduce=lambda s: s[..., 0],
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "apply_inverse_epochs" in err and "23/23" in err
    ex.apply_inverse_epochs(
        problem["epochs"], problem["inv"], LAMBDA2, "MNE", chunk_size=5, progress=False,
        reduce=lambda s: s[..., 0],
    )  # fmt: skip
    assert capsys.readouterr().err == ""


def test_raw_matches_mne():
    """apply_inverse_raw with start / stop / buffer_size against MNE-Python's."""
    info, _, fwd = mne_sphere_forward("biosemi32", 1)
    fwd_surf = mne.convert_forward_solution(fwd, surf_ori=True)
    rng = np.random.default_rng(1)
    n = len(info.ch_names)
    noise = rng.standard_normal((n, n)) @ rng.standard_normal((n, 2000)) * 1e-6
    cov = noise @ noise.T / noise.shape[1]
    mne_cov = mne.Covariance(cov, info.ch_names, [], [], noise.shape[1])
    data = rng.standard_normal((n, 400)) * 1e-6
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_eeg_reference(projection=True, verbose=False)
    inv_m = mne.minimum_norm.make_inverse_operator(
        raw.info, fwd_surf, mne_cov, loose=0.2, depth=0.8
    )
    inv_o = ex.make_inverse_operator(
        forward_from_mne(fwd_surf, reference=None), NoiseCov(jnp.asarray(cov)),
        avg_ref_proj=True, loose=0.2, depth=0.8,
    )  # fmt: skip
    for method in ("MNE", "dSPM", "sLORETA"):
        for pick_ori in (None, "normal"):
            ref = mne.minimum_norm.apply_inverse_raw(
                raw, inv_m, LAMBDA2, method, start=30, stop=370, pick_ori=pick_ori,
                buffer_size=100, verbose=False,
            ).data  # fmt: skip
            got = ex.apply_inverse_raw(
                data, inv_o, LAMBDA2, method, start=30, stop=370, pick_ori=pick_ori,
                buffer_size=100,
            ).data  # fmt: skip
            assert got.shape == ref.shape
            # measured <= 2e-12 (float64 rounding), as apply_inverse's parity
            assert _rel(got, ref) <= 1e-11, (method, pick_ori, _rel(got, ref))


SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import exg_jax as ex
    assert len(jax.devices()) == 4, jax.devices()
    sphere = ex.SphereModel()
    _, el = ex.standard_montage("standard_1020", radius=0.075, center=sphere.center)
    pos, nn = ex.ico_source_space(1, radius=0.055, center=sphere.center)
    fwd = ex.make_sphere_forward_free(jnp.asarray(el), jnp.asarray(pos), sphere,
                                      src_nn=jnp.asarray(nn))
    rng = np.random.default_rng(0)
    n = len(el)
    cov = ex.compute_covariance(jnp.asarray(rng.standard_normal((n, 1000)) * 1e-6))
    inv = ex.make_inverse_operator(fwd, cov, loose=0.2)
    ep = rng.standard_normal((19, n, 30)) * 1e-6
    raw = rng.standard_normal((n, 301)) * 1e-6
    def rel(a, b):
        return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))
    worst = 0.0
    for method in ("dSPM", "sLORETA"):
        for po in (None, "vector"):
            ref = np.asarray(ex.apply_inverse_epochs(jnp.asarray(ep), inv, 1/9, method,
                                                     pick_ori=po).data)
            one = ex.apply_inverse_epochs(ep, inv, 1/9, method, pick_ori=po,
                                          chunk_size=8).data
            four = ex.apply_inverse_epochs(ep, inv, 1/9, method, pick_ori=po,
                                           chunk_size=6, devices="all").data
            worst = max(worst, rel(one, ref), rel(four, ref))
    red = lambda s: jnp.mean(s, axis=-1)
    a = ex.apply_inverse_epochs(ep, inv, 1/9, "dSPM", reduce=red, chunk_size=8)
    b = ex.apply_inverse_epochs(ep, inv, 1/9, "dSPM", reduce=red, chunk_size=8,
                                devices=jax.devices())
    worst = max(worst, rel(b, a))
    r1 = ex.apply_inverse_raw(raw, inv, 1/9, "dSPM", buffer_size=64).data
    r4 = ex.apply_inverse_raw(raw, inv, 1/9, "dSPM", buffer_size=64, devices="all").data
    worst = max(worst, rel(r4, r1))
    print("WORST", worst)
    """
)


def test_sharded_over_four_host_devices_equals_one():
    env = dict(os.environ)
    # A fresh flag set (the xdist workers' XLA_FLAGS carry a malformed entry,
    # "intra_op_parallelism_threads=1", after which XLA ignored this flag).
    env["XLA_FLAGS"] = (
        "--xla_force_host_platform_device_count=4 --xla_cpu_multi_thread_eigen=false"
    )
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env,
        timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-5000:]
    worst = float(out.stdout.split("WORST")[1])
    assert worst <= TOL, worst


def test_compilation_cache_is_opt_in(tmp_path):
    code = textwrap.dedent(
        f"""
        import jax, jax.numpy as jnp
        import exg_jax
        assert jax.config.jax_compilation_cache_dir in (None, ""), "import switched it on"
        p = exg_jax.enable_compilation_cache({str(tmp_path / "cache")!r}, min_compile_time_s=0)
        assert jax.config.jax_compilation_cache_dir == str(p)
        jax.jit(lambda x: jnp.sin(x) * 2 + x)(jnp.arange(3.0)).block_until_ready()
        import os
        print("ENTRIES", len(os.listdir(p)))
        """
    )
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split("ENTRIES")[1]) >= 1
    with pytest.raises(ValueError, match="min_compile_time_s"):
        ex.enable_compilation_cache(tmp_path, min_compile_time_s=-1)


@pytest.mark.parametrize("mode", ["mean_flip", "pca_flip"])
def test_region_time_courses_streamed(problem, mode):
    """Built-in reduction: streamed == the reduction of the in-memory estimate."""
    inv, ep = problem["inv"], problem["epochs"]
    labels = ex.parcellate(problem["pos"], 6, seed=0)
    red = ex.LabelTimeCourses(labels, mode=mode, src_nn=problem["nn"])
    ref = np.asarray(red(jnp.asarray(_in_memory(problem, "sLORETA", None))))
    got = ex.apply_inverse_epochs(ep, inv, LAMBDA2, "sLORETA", reduce=red, chunk_size=5)
    assert got.shape == (23, 6, 30)
    assert _rel(got, ref) <= TOL
    raw = problem["raw"]
    if mode == "mean_flip":
        whole = ex.apply_inverse(jnp.asarray(raw), inv, LAMBDA2, "sLORETA").data
        got = ex.apply_inverse_raw(
            raw, inv, LAMBDA2, "sLORETA", reduce=red, buffer_size=128
        )
        assert _rel(got, np.asarray(red(whole))) <= TOL
    else:
        with pytest.raises(ValueError, match="time_local"):
            ex.apply_inverse_raw(raw, inv, LAMBDA2, "sLORETA", reduce=red)


def test_traced_operator_or_lambda2_uses_the_device_path(problem):
    """Host epochs with a traced λ² (inside jit / grad): one program, differentiable."""
    inv, ep, raw = problem["inv"], problem["epochs"], problem["raw"]
    ref = ex.apply_inverse_epochs(ep, inv, 0.2, "dSPM").data
    got = jax.jit(lambda lam: ex.apply_inverse_epochs(ep, inv, lam, "dSPM").data)(0.2)
    assert _rel(got, ref) <= TOL
    ref_raw = ex.apply_inverse_raw(raw, inv, 0.2, "MNE", start=10, stop=300).data
    got_raw = jax.jit(
        lambda lam: ex.apply_inverse_raw(raw, inv, lam, "MNE", start=10, stop=300).data
    )(0.2)
    assert _rel(got_raw, ref_raw) <= TOL
    g = jax.grad(
        lambda lam: jnp.sum(
            ex.apply_inverse_epochs(ep, inv, lam, "MNE", reduce=lambda s: s[..., 0])
        )
    )(0.2)
    assert np.isfinite(float(g)) and float(g) != 0.0
    with pytest.raises(ValueError, match="iterable of chunks"):
        jax.jit(lambda lam: ex.apply_inverse_epochs(iter([ep]), inv, lam).data)(0.2)


def test_times_of_array_input(problem):
    """tmin (s) and sfreq (Hz) set the estimate's times for array input, on
    every path; bad values name the argument."""
    inv, ep, raw = problem["inv"], problem["epochs"], problem["raw"]
    kw = dict(tmin=-0.1, sfreq=250.0)
    want = -0.1 + np.arange(ep.shape[-1]) / 250.0
    stcs = {
        "evoked": ex.apply_inverse(ep[0], inv, LAMBDA2, "MNE", **kw),
        "epochs, in memory": ex.apply_inverse_epochs(
            jnp.asarray(ep), inv, LAMBDA2, "MNE", **kw
        ),
        "epochs, streamed": ex.apply_inverse_epochs(
            ep, inv, LAMBDA2, "MNE", chunk_size=10, **kw
        ),
    }
    for name, stc in stcs.items():
        assert stc.tstep == 1 / 250.0, name
        np.testing.assert_allclose(stc.times, want, rtol=0, atol=1e-15, err_msg=name)
    # raw: tmin is the time of sample 0, the estimate starts at `start`
    stc = ex.apply_inverse_raw(raw, inv, LAMBDA2, "MNE", start=100, stop=300, **kw)
    assert stc.tmin == pytest.approx(-0.1 + 100 / 250.0, abs=1e-15)
    assert stc.n_times == 200
    it = ex.apply_inverse_raw(
        (raw[:, i : i + 350] for i in (0, 350)), inv, LAMBDA2, "MNE",
        buffer_size=350, **kw,
    )  # fmt: skip
    assert it.tmin == -0.1 and it.tstep == 1 / 250.0
    # defaults: times in samples
    stc = ex.apply_inverse_raw(raw, inv, LAMBDA2, "MNE", start=100, stop=300)
    assert (stc.tmin, stc.tstep) == (100.0, 1.0)
    for bad, err, match in (
        (dict(sfreq=0.0), ValueError, "sfreq"),
        (dict(sfreq=np.inf), ValueError, "sfreq"),
        (dict(sfreq="250"), TypeError, "sfreq"),
        (dict(tmin=np.nan), ValueError, "tmin"),
        (dict(tmin=True), TypeError, "tmin"),
        (dict(tmin=np.zeros(2)), ValueError, "tmin"),
    ):
        with pytest.raises(err, match=match):
            ex.apply_inverse(ep[0], inv, LAMBDA2, "MNE", **bad)
        with pytest.raises(err, match=match):
            ex.apply_inverse_epochs(ep, inv, LAMBDA2, "MNE", **bad)
    with pytest.raises(TypeError, match="tmin must be a concrete number"):
        jax.jit(lambda t: ex.apply_inverse(ep[0], inv, LAMBDA2, "MNE", tmin=t).data)(
            0.0
        )
