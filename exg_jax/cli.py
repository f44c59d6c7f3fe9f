"""Command-line entry points: ``exg-jax demo`` and ``exg-jax batch`` (also ``python -m exg_jax ...``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

# The demo's head model: the 3-shell default of ``SphereModel()``.
_RADII = (0.067, 0.070, 0.075)  # m
_SIGMAS = (0.33, 0.0042, 0.33)  # S/m
_CENTER = (0.0, 0.0, 0.04)  # m
_MAX_ICO = 7


class _CompileClock:
    """Wall time spent tracing, lowering and compiling (JAX monitoring events).

    The union of the time spans of ``/jax/core/compile/*`` events recorded
    while the context is open (nested events are counted once).
    """

    def __enter__(self):
        import jax.monitoring

        self._spans: list[tuple[float, float]] = []
        jax.monitoring.register_event_time_span_listener(self._listen)
        return self

    def _listen(self, event, start, end, **kwargs):
        if event.startswith("/jax/core/compile/"):
            self._spans.append((start, end))

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_time_span_listener(self._listen)
        return False

    @property
    def seconds(self) -> float:
        total, cur_start, cur_end = 0.0, None, None
        for a, b in sorted(self._spans):
            if cur_end is None or a > cur_end:
                if cur_end is not None:
                    total += cur_end - cur_start
                cur_start, cur_end = a, b
            else:
                cur_end = max(cur_end, b)
        if cur_end is not None:
            total += cur_end - cur_start
        return total


def _timed(fn):
    """``(result, wall seconds, compile seconds)`` of ``fn()`` (result blocked on)."""
    import jax

    with _CompileClock() as clock:
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        dt = time.perf_counter() - t0
    return out, dt, min(clock.seconds, dt)


def _demo_sources(ico: int, source_radius: float):
    """The demo's source space (NumPy): the ico-``ico`` sphere's upper part."""
    import numpy as np

    from .source_space import ico_source_space

    center = np.asarray(_CENTER)
    src_pos, src_nn = ico_source_space(ico, radius=source_radius, center=center)
    # Keep the upper part of the sphere (where a cortex would be under the montage).
    keep = np.asarray(src_pos)[:, 2] > center[2] - 0.02
    return np.asarray(src_pos)[keep], np.asarray(src_nn)[keep]


_METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
_BELOW = 0.02  # m: demo sources lie above the plane 20 mm below the centre
_MAX_SRC = 20_000  # demo sources at most (a finer --spacing is refused)
_AMP = 20e-9  # A·m: moment of the simulated dipole


def _demo_grid(spacing: float, source_radius: float):
    """The demo's volume source space (NumPy, float64): positions and radial normals.

    A cubic grid of step ``spacing`` (m) strictly inside the sphere of radius
    ``source_radius`` (m) about the head centre, less the points more than
    20 mm below the centre (no electrode covers them). The points are chosen
    on integer grid indices, so the set does not depend on the dtype.
    """
    import numpy as np

    from .source_space import grid_source_space

    center = np.asarray(_CENTER)
    pos, _ = grid_source_space(spacing, radius=source_radius, center=center)
    ijk = np.rint((np.asarray(pos, np.float64) - center) / spacing)
    rel = ijk[ijk[:, 2] * spacing > -_BELOW - 1e-9 * spacing] * spacing
    dist = np.linalg.norm(rel, axis=1)
    nn = np.tile([0.0, 0.0, 1.0], (len(rel), 1))  # the centre point: +z
    nz = dist > 0
    nn[nz] = rel[nz] / dist[nz, None]
    return center + rel, nn


def _depth_band(dist, source_radius: float):
    """Depth band of each distance from the centre (m): thirds of ``source_radius``.

    0 (deep) ... 2 (superficial); a distance on an edge goes to the outer band
    (compared on a 0.1 µm grid, so rounding does not move it).
    """
    import numpy as np

    edges = np.round(np.linspace(0.0, source_radius, 4) * 1e7)
    d = np.round(np.asarray(dist) * 1e7)
    return np.clip(np.searchsorted(edges, d, side="right") - 1, 0, 2)


def _default_source(rel, source_radius: float, rng) -> int:
    """A random source of the middle depth band, < 45 deg from the vertex."""
    import numpy as np

    dist = np.linalg.norm(rel, axis=1)
    cone = rel[:, 2] > np.cos(np.pi / 4) * dist
    mid = _depth_band(dist, source_radius) == 1
    for cand in (mid & cone, cone, np.ones_like(cone)):
        idx = np.flatnonzero(cand)
        if idx.size:
            return int(rng.choice(idx))
    raise AssertionError("no sources")  # pragma: no cover (main checks n_src > 0)


def _xyz(p) -> str:
    """A position (m) as ``(x, y, z)`` in mm (0.1 mm)."""
    return "(" + ", ".join(f"{round(float(v) * 1e3, 1):g}" for v in p) + ")"


def _med_p95(x) -> tuple[float, float]:
    import numpy as np

    x = np.asarray(x, np.float64)
    return float(np.median(x)), float(np.percentile(x, 95))


def _demo(args: argparse.Namespace) -> int:
    with _CompileClock() as clock:
        t0 = time.perf_counter()
        res = _demo_compute(args)
        dt = time.perf_counter() - t0
    print(
        f"  total {dt:.1f} s, of which compilation {min(clock.seconds, dt):.1f} s "
        "(JAX compiles each program on its first call)"
    )
    if not args.no_plot:
        t0 = time.perf_counter()
        written = _demo_plots(args, res)
        if written:
            print(f"  figures written in {time.perf_counter() - t0:.1f} s:")
            for path in written:
                print(f"    {path}")
    return 0


def _demo_compute(args: argparse.Namespace) -> dict:
    """Build, simulate, localise and compute the resolution metrics; print the tables."""
    import jax.numpy as jnp
    import numpy as np

    from .covariance import compute_covariance
    from .inverse import imaging_kernel, make_inverse_operator
    from .kernel import apply_imaging_kernel
    from .resolution import make_resolution_operator, resolution_metrics
    from .sphere import SphereModel
    from .sphere_forward import make_sphere_forward_free

    dtype = jnp.float64 if args.float64 else jnp.float32
    rng = np.random.default_rng(args.seed)

    sphere = SphereModel(_RADII, _SIGMAS, _CENTER)  # 67/70/75 mm, 0.33/0.0042/0.33 S/m
    center = np.asarray(_CENTER)
    names, elec = args.montage_ch  # resolved (and checked) by main()
    src_np, nn_np = _demo_grid(args.spacing, args.source_radius)
    rel = src_np - center
    dist = np.linalg.norm(rel, axis=1)
    band = _depth_band(dist, args.source_radius)
    src_pos, src_nn = jnp.asarray(src_np, dtype), jnp.asarray(nn_np, dtype)
    n_src = len(src_np)
    orient = {1.0: "free orientation", 0.0: "fixed (radial) orientation"}.get(
        args.loose, f"loose orientation {args.loose:g}"
    )
    print(
        f"exg-jax demo: 3-shell sphere, {len(names)} electrodes ({args.montage}), "
        f"{'float64' if args.float64 else 'float32'}"
    )
    print(
        f"  sources: {n_src} on a {args.spacing * 1e3:g} mm grid inside r = "
        f"{args.source_radius * 1e3:g} mm (down to {_BELOW * 1e3:g} mm below the "
        f"centre), {orient}, depth weighting {args.depth:g}"
    )

    fwd, dt, tc = _timed(
        lambda: make_sphere_forward_free(
            jnp.asarray(elec, dtype), src_pos, sphere, src_nn=src_nn
        )
    )
    print(
        f"  forward  ({fwd.gain.shape[0]} x {fwd.gain.shape[1]}): {dt:.2f} s "
        f"(compile {tc:.2f} s, run {dt - tc:.2f} s)"
    )

    # Simulate one radial dipole (a 10 Hz burst) plus white sensor noise.
    sfreq, n_t = 250.0, 200
    times = np.arange(n_t) / sfreq - 0.2
    if args.source is None:
        true_idx = _default_source(rel, args.source_radius, rng)
    else:
        true_idx = args.source
    wave = np.sin(2 * np.pi * 10 * times) * np.exp(-(((times - 0.2) / 0.08) ** 2))
    gain = np.asarray(fwd.gain, np.float64)
    g = gain[:, 3 * true_idx : 3 * true_idx + 3] @ nn_np[true_idx]
    signal = _AMP * np.outer(g, wave)
    peak_t = int(np.argmax(np.abs(wave)))
    # SNR: RMS over electrodes of the signal at its peak over the noise std.
    noise_std = np.sqrt(np.mean(signal[:, peak_t] ** 2)) / args.snr
    noise = lambda n: rng.standard_normal((len(names), n)) * noise_std  # noqa: E731
    data = signal + noise(n_t)
    baseline = noise(2000)
    data -= data.mean(0)  # average reference
    baseline -= baseline.mean(0)

    def build():
        cov = compute_covariance(jnp.asarray(baseline, dtype), method="ledoit_wolf")
        return make_inverse_operator(fwd, cov, depth=args.depth, loose=args.loose)

    inv, dt, tc = _timed(build)
    print(
        f"  covariance + inverse operator: {dt:.2f} s "
        f"(compile {tc:.2f} s, run {dt - tc:.2f} s)"
    )
    lambda2 = 1.0 / args.snr**2

    # Per method: the imaging kernel K, the resolution matrix R = K G (kept
    # factorised) and its metrics over the point-spread functions of all sources.
    def resolution(method):
        k = imaging_kernel(inv, lambda2, method)
        op = make_resolution_operator(k, fwd)  # true sources: radial unit dipoles
        return k, resolution_metrics(op, src_pos, "psf", ("peak_err", "sd_ext"))

    print(
        f"\n  resolution over all {n_src} sources: point-spread functions of radial "
        f"unit dipoles, no noise, lambda2 = 1/SNR^2 = {lambda2:.3g}"
    )
    print(
        f"  {'':<9}{'peak error (mm)':>16}{'spatial dev. (mm)':>19}"
        f"{'run time (s): kernel, R = K G, metrics':>42}"
    )
    print(
        f"  {'method':<9}{'median':>9}{'p95':>7}{'median':>12}{'p95':>7}"
        f"{'first call':>15}{'again':>8}{'of which compile':>19}"
    )
    kernels, res = {}, {}
    for method in _METHODS:
        (k, met), dt, tc = _timed(lambda m=method: resolution(m))
        t0 = time.perf_counter()  # second call: compiled programs, λ² traced
        jnp.asarray(resolution(method)[1]["sd_ext"]).block_until_ready()
        dt2 = time.perf_counter() - t0
        met = {key: np.asarray(v, np.float64) for key, v in met.items()}
        if not all(np.all(np.isfinite(v)) for v in met.values()):
            raise RuntimeError(f"non-finite resolution metrics for {method}")
        kernels[method], res[method] = k, met
        e_med, e_95 = _med_p95(met["peak_err"] * 1e3)
        s_med, s_95 = _med_p95(met["sd_ext"] * 1e3)
        print(
            f"  {method:<9}{e_med:>9.1f}{e_95:>7.1f}{s_med:>12.1f}{s_95:>7.1f}"
            f"{dt:>15.2f}{dt2:>8.2f}{tc:>19.2f}"
        )

    print(
        "  peak error: distance from a source to the peak of its point-spread "
        "function;\n  spatial deviation: RMS distance of the point-spread function "
        "from its source,\n  weighted by its squared amplitude (Molins et al. "
        "2008); p95: 95th percentile."
    )
    edges = np.linspace(0.0, args.source_radius, 4) * 1e3
    labels = [f"{a:g}-{b:g} mm" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for key, what in (("peak_err", "peak localisation error"),
                      ("sd_ext", "spatial deviation")):  # fmt: skip
        print(f"\n  {what} by distance from the centre, median / p95 (mm):")
        print(f"  {'distance':<12}{'n':>5}" + "".join(f"{m:>13}" for m in _METHODS))
        for b, label in enumerate(labels):
            sel = band == b
            cells = []
            for method in _METHODS:
                if sel.any():
                    med, p95 = _med_p95(res[method][key][sel] * 1e3)
                    cells.append(f"{med:.1f} / {p95:.1f}")
                else:
                    cells.append("-")
            print(
                f"  {label:<12}{int(sel.sum()):>5}" + "".join(f"{c:>13}" for c in cells)
            )

    # One simulated dipole, localised with each kernel.
    print(
        f"\n  simulated dipole: source #{true_idx} at {_xyz(src_np[true_idx])} mm, "
        f"{dist[true_idx] * 1e3:.0f} mm from the centre, radial, "
        f"{_AMP * 1e9:g} nA·m, SNR {args.snr:g} (one noise draw)"
    )
    print(f"  {'method':<10}{'estimated peak (mm)':<22}{'error (mm)':>10}")
    maps, peaks = {}, {}
    x = jnp.asarray(data, dtype)
    for method in _METHODS:
        stc = apply_imaging_kernel(x, kernels[method])
        amp_map = np.asarray(stc.data, np.float64)[:, peak_t]
        peak = int(np.argmax(amp_map))
        err = float(np.linalg.norm(src_np[peak] - src_np[true_idx])) * 1e3
        maps[method], peaks[method] = amp_map, peak
        print(f"  {method:<10}{_xyz(src_np[peak]):<22}{err:>10.1f}")
    return dict(
        names=names, elec=np.asarray(elec, np.float64), src_pos=src_np,
        data=data, peak_t=peak_t, true_idx=true_idx, maps=maps, peaks=peaks,
        resolution=res,
    )  # fmt: skip


def _figure_paths(out: str) -> dict[str, str]:
    """The demo's figure files: ``<stem>_<what><ext>`` beside ``out``."""
    stem, ext = os.path.splitext(out)
    ext = ext or ".png"
    return {k: f"{stem}_{k}{ext}" for k in ("topomap", "sources", "resolution")}


def _demo_plots(args: argparse.Namespace, res: dict) -> list[str]:
    """Draw the demo's figures with :mod:`exg_jax.viz` (needs matplotlib).

    Returns the paths written (none without matplotlib).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib not installed: no figures; pip install 'exg-jax[plot]')")
        return []
    import numpy as np

    from . import viz

    center = np.asarray(_CENTER)
    paths = _figure_paths(args.out)
    src, true_idx, peak_t = res["src_pos"], res["true_idx"], res["peak_t"]
    written = []

    fig = viz.plot_topomap(
        res["data"][:, peak_t], res["elec"], center=center, ch_names=res["names"],
        units="V", title=f"sensor data at the dipole's peak (SNR {args.snr:g})",
    )  # fmt: skip
    fig.savefig(paths["topomap"], dpi=100)
    plt.close(fig)
    written.append(paths["topomap"])

    fig = plt.figure(figsize=(12, 3.4 * len(_METHODS)), layout="constrained")
    subs = fig.subfigures(len(_METHODS), 1)
    for sub, method in zip(subs, _METHODS, strict=True):
        units = "A·m" if method in ("MNE", "eLORETA") else ""
        viz.plot_source_projections(
            np.abs(res["maps"][method]), src, center=center, head_radius=_RADII[-1],
            true_pos=src[true_idx], est_pos="peak", units=units,
            title=f"{method}: |estimate| at the peak time", fig=sub,
        )  # fmt: skip
    fig.savefig(paths["sources"], dpi=80)
    plt.close(fig)
    written.append(paths["sources"])

    fig = plt.figure(figsize=(14, 8), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    lam = f"lambda2 = {1 / args.snr**2:.3g}"
    for sub, key, name in ((top, "peak_err", "peak localisation error"),
                           (bottom, "sd_ext", "spatial deviation")):  # fmt: skip
        viz.plot_resolution_metrics(
            {m: res["resolution"][m][key] for m in _METHODS}, src, name=name,
            units="mm", scale=1e3, center=center, fig=sub,
            title=f"{name} of the point-spread functions of all sources ({lam})",
        )  # fmt: skip
    fig.savefig(paths["resolution"], dpi=80)
    plt.close(fig)
    written.append(paths["resolution"])
    return written


def _batch(args: argparse.Namespace) -> int:
    """``exg-jax batch``: stream an epochs file through an inverse, keep a reduction."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .cache import enable_compilation_cache
    from .covariance import NoiseCov
    from .inverse import apply_inverse_epochs, make_inverse_operator
    from .montage import standard_montage
    from .reductions import LabelTimeCourses, parcellate
    from .sphere import SphereModel
    from .sphere_forward import make_sphere_forward_free

    if not args.no_cache:
        path = enable_compilation_cache()
        print(f"compilation cache: {path} (--no-cache to skip)")
    names, el = standard_montage(args.montage, radius=_RADII[-1], center=_CENTER)
    if args.simulate:
        _simulate_epochs(args, len(names))
    try:
        data = np.load(args.data, mmap_mode="r")
    except (OSError, ValueError) as err:
        print(
            f"exg-jax batch: cannot read {args.data!r} as .npy: {err}", file=sys.stderr
        )
        return 2
    if data.ndim != 3:
        print(
            f"exg-jax batch: {args.data} must hold (n_epochs, n_chan, n_times), got "
            f"shape {data.shape}.",
            file=sys.stderr,
        )
        return 2
    n_ep, n_chan, n_times = data.shape
    if n_chan != len(names):
        print(
            f"exg-jax batch: {args.data} has {n_chan} channels but montage "
            f"{args.montage} has {len(names)} (channels in the montage's order).",
            file=sys.stderr,
        )
        return 2
    dtype = jnp.float64 if args.float64 else jnp.float32
    src_pos, src_nn = _demo_sources(args.ico, 0.060)
    sphere = SphereModel(
        radii=jnp.asarray(_RADII), conductivities=jnp.asarray(_SIGMAS),
        center=jnp.asarray(_CENTER),
    )  # fmt: skip
    t0 = time.perf_counter()
    fwd = make_sphere_forward_free(
        jnp.asarray(el), jnp.asarray(src_pos), sphere, src_nn=jnp.asarray(src_nn)
    )
    if args.cov:
        cov = np.load(args.cov)
        what = args.cov
    else:  # channel variances of the first (up to) 100 epochs, average-referenced
        x = np.asarray(data[: min(n_ep, 100)], np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        cov = np.diag(np.mean(x * x, axis=(0, 2)))
        what = "diagonal, channel variances of the data (--cov to give one)"
    inv = make_inverse_operator(fwd, NoiseCov(jnp.asarray(cov)), loose=0.2, depth=0.8)
    inv = jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if isinstance(a, jax.Array)
        and jnp.issubdtype(a.dtype, jnp.floating) else a,
        inv,
    )  # fmt: skip
    labels = parcellate(src_pos, args.regions, seed=0)
    reduce = LabelTimeCourses(labels, mode=args.mode, src_nn=src_nn)
    print(
        f"{n_ep} epochs x {n_chan} channels x {n_times} samples ({data.dtype}) -> "
        f"{args.method}, ico-{args.ico} ({len(src_pos)} free sources), "
        f"{args.regions} regions ({args.mode}), {jnp.dtype(dtype).name}; noise "
        f"covariance: {what}; operator built in {time.perf_counter() - t0:.1f} s"
    )
    out = np.lib.format.open_memmap(
        args.out, "w+", np.dtype(jnp.dtype(dtype).name), (n_ep, args.regions, n_times)
    )
    t0 = time.perf_counter()
    apply_inverse_epochs(
        data, inv, 1.0 / args.snr**2, args.method, reduce=reduce, out=out,
        chunk_size=args.chunk_size, progress=not args.no_progress,
    )  # fmt: skip
    dt = time.perf_counter() - t0
    print(
        f"wrote {args.out}: region time courses {out.shape} in {dt:.1f} s "
        f"({n_ep / dt:.0f} epochs/s, first call's compilation included)"
    )
    return 0


def _simulate_epochs(args: argparse.Namespace, n_chan: int) -> None:
    """Write ``args.simulate`` epochs of noise + a 10 Hz source to ``args.data``."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    n_ep, n_times = args.simulate, args.n_times
    mm = np.lib.format.open_memmap(args.data, "w+", np.float32, (n_ep, n_chan, n_times))
    t = np.arange(n_times) / 500.0
    mix = rng.standard_normal((n_chan, 1))
    for i in range(0, n_ep, 256):
        k = min(256, n_ep - i)
        x = rng.standard_normal((k, n_chan, n_times)) * 1e-6
        x += 2e-6 * mix[None] * np.sin(2 * np.pi * 10 * t)[None, None]
        mm[i : i + k] = x
    mm.flush()
    print(f"simulated {n_ep} epochs into {args.data}")


def _finite_positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _source_radius(text: str) -> float:
    v = _finite_positive(text)
    if v >= _RADII[0]:
        raise argparse.ArgumentTypeError(
            f"must lie strictly inside the inner shell of the head model: "
            f"0 < radius < {_RADII[0]} m, got {text!r}"
        )
    return v


def _int_range(lo: int, hi: int | None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text!r}")
        return v

    return parse


def _index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _unit_interval(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return v


def _check_demo_sources(parser: argparse.ArgumentParser, args) -> None:
    """Fail before any work on a source grid that is empty or too large."""
    if args.spacing >= args.source_radius:
        parser.error(
            f"argument --spacing: must be smaller than --source-radius "
            f"({args.source_radius} m), got {args.spacing}"
        )
    # a cheap estimate first (the sphere's volume over the cell's), then the count
    if 4.19 * (args.source_radius / args.spacing) ** 3 > 4 * _MAX_SRC:
        n_src = None
    else:
        n_src = len(_demo_grid(args.spacing, args.source_radius)[0])
    if n_src is None or n_src > _MAX_SRC:
        parser.error(
            f"argument --spacing: {args.spacing} m gives more than {_MAX_SRC} "
            f"sources inside r = {args.source_radius} m; use a coarser grid"
        )
    if args.source is not None and not 0 <= args.source < n_src:
        parser.error(
            f"argument --source: must lie in [0, {n_src}) (the {args.spacing} m grid "
            f"inside r = {args.source_radius} m has {n_src} sources), got {args.source}"
        )


def _check_out(parser: argparse.ArgumentParser, out: str) -> None:
    """Fail before any work when the figure cannot be written to ``out``."""
    path = os.path.abspath(out)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        parser.error(f"argument --out: {out!r} is a folder; give a file name.")
    if not os.path.isdir(folder):
        parser.error(f"argument --out: the folder {folder!r} does not exist.")
    if not os.access(folder, os.W_OK):
        parser.error(f"argument --out: the folder {folder!r} is not writable.")
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext:
        try:
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:  # no figure will be written (the demo says so)
            return
        types = FigureCanvasBase.get_supported_filetypes()
        if ext not in types:
            parser.error(
                f"argument --out: unsupported figure format {ext!r}; use one of "
                f"{', '.join(sorted(types))}."
            )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="exg-jax",
        description="EEG source localisation in JAX.",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo",
        help="compare MNE, dSPM, sLORETA and eLORETA: resolution over all "
        "sources and one simulated dipole",
        description="Build a 3-shell sphere head model (radii "
        f"{'/'.join(f'{r * 1e3:g}' for r in _RADII)} mm, conductivities "
        f"{'/'.join(f'{s:g}' for s in _SIGMAS)} S/m), a volume grid of sources at "
        "all depths and an EEG montage; for each method (MNE, dSPM, sLORETA, "
        "eLORETA) compute the resolution matrix and print the median and 95th "
        "percentile of the peak localisation error and the spatial deviation of "
        "the point-spread functions over all sources and per depth band; "
        "localise one simulated dipole; print the run times (first call with "
        "its compilation, then again); draw the figures.",
        formatter_class=fmt,
    )
    d.add_argument(
        "--montage",
        default="standard_1010",
        help="electrode montage, placed on the outer shell: standard_1020 or "
        "standard_1010 (built in), or with MNE-Python installed any name "
        "mne.channels.make_standard_montage knows (e.g. biosemi64)",
    )
    d.add_argument(
        "--spacing",
        type=_finite_positive,
        default=0.010,
        help="step (m) of the cubic source grid; > 0, below --source-radius, "
        f"at most {_MAX_SRC} sources",
    )
    d.add_argument(
        "--source-radius",
        type=_source_radius,
        default=0.060,
        help="the grid fills the sphere of this radius (m) about the head centre, "
        f"down to {_BELOW * 1e3:g} mm below the centre; must be > 0 and below "
        f"the inner shell radius {_RADII[0]} m",
    )
    d.add_argument(
        "--loose",
        type=_unit_interval,
        default=1.0,
        help="orientation prior in [0, 1]: 1 free, 0 fixed (radial) orientation",
    )
    d.add_argument(
        "--depth",
        type=_unit_interval,
        default=0.8,
        help="depth-weighting exponent in [0, 1] (0: none)",
    )
    d.add_argument(
        "--source",
        type=_index,
        default=None,
        help="index of the simulated dipole's source, in [0, n_src) (n_src is "
        "printed); None: a random source of the middle depth band (1/3 to 2/3 "
        "of --source-radius from the centre) < 45 deg from the vertex",
    )
    d.add_argument(
        "--snr",
        type=_finite_positive,
        default=3.0,
        help="amplitude SNR of the simulated data, finite and > 0; "
        "lambda2 = 1 / snr**2 for every inverse and resolution matrix",
    )
    d.add_argument(
        "--seed", type=_int_range(0, None), default=0, help="random seed (>= 0)"
    )
    d.add_argument(
        "--float64", action="store_true", help="compute in float64 instead of float32"
    )
    d.add_argument(
        "--out",
        default="exg_jax_demo.png",
        help="names the figures (needs matplotlib): --out STEM.EXT writes "
        "STEM_topomap.EXT, STEM_sources.EXT and STEM_resolution.EXT; its folder "
        "must exist",
    )
    d.add_argument("--no-plot", action="store_true", help="do not draw the figures")
    b = sub.add_parser(
        "batch",
        help="stream an epochs file (.npy, memory-mapped) to region time courses",
        description="Apply an inverse (3-shell sphere, the montage's electrodes, "
        "ico sources) to every epoch of an .npy file of shape (n_epochs, n_chan, "
        "n_times) in V, streamed in chunks, and write the region time courses "
        "(n_epochs, n_regions, n_times) to --out.",
        formatter_class=fmt,
    )
    b.add_argument("data", help="epochs file (.npy), channels in the montage's order")
    b.add_argument(
        "--simulate", type=_int_range(1, None), default=None,
        help="first write this many simulated epochs to DATA (a demo)",
    )  # fmt: skip
    b.add_argument(
        "--n-times", type=_int_range(2, None), default=500,
        help="samples per simulated epoch",
    )  # fmt: skip
    b.add_argument(
        "--montage", default="standard_1010",
        help="electrode montage: standard_1020, standard_1010 or, with MNE-Python "
        "installed, any name mne.channels.make_standard_montage knows",
    )  # fmt: skip
    b.add_argument(
        "--ico", type=_int_range(0, _MAX_ICO), default=3, help="source space"
    )
    b.add_argument(
        "--method", default="sLORETA", choices=("MNE", "dSPM", "sLORETA", "eLORETA"),
        help="inverse method",
    )  # fmt: skip
    b.add_argument(
        "--snr", type=_finite_positive, default=3.0, help="lambda2 = 1/snr**2"
    )
    b.add_argument("--regions", type=_int_range(1, None), default=68, help="regions")
    b.add_argument(
        "--mode", default="mean_flip", choices=("mean", "mean_flip", "pca_flip", "max"),
        help="region time course (as mne.extract_label_time_course)",
    )  # fmt: skip
    b.add_argument("--cov", default=None, help="noise covariance (.npy, V^2)")
    b.add_argument(
        "--chunk-size", type=_int_range(1, None), default=None,
        help="epochs per chunk (default: ~256 MB of source estimate)",
    )  # fmt: skip
    b.add_argument("--out", default="exg_jax_regions.npy", help="output .npy")
    b.add_argument("--float64", action="store_true", help="compute in float64")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument(
        "--no-cache", action="store_true", help="no persistent compilation cache"
    )
    b.add_argument("--seed", type=_int_range(0, None), default=0, help="random seed")
    args = parser.parse_args(argv)
    if args.command == "batch":
        try:
            from .montage import standard_montage

            standard_montage(args.montage, radius=_RADII[-1], center=_CENTER)
        except (ValueError, TypeError, ImportError) as err:
            b.error(f"argument --montage: {err}")
        if args.float64:
            import jax

            with jax.enable_x64(True):
                return _batch(args)
        return _batch(args)
    if args.command == "demo":
        # Checks that need several arguments, still before any work.
        if not args.no_plot:
            _check_out(d, args.out)
        _check_demo_sources(d, args)
        try:
            from .montage import standard_montage

            args.montage_ch = standard_montage(
                args.montage, radius=_RADII[-1], center=_CENTER
            )
        except (ValueError, TypeError, ImportError) as err:
            d.error(f"argument --montage: {err}")
        if args.float64:  # scoped: the caller's global JAX config is left alone
            import jax

            with jax.enable_x64(True):
                return _demo(args)
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
