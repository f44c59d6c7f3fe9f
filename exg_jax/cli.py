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


def _demo(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import numpy as np

    from .covariance import compute_covariance
    from .inverse import apply_inverse, make_inverse_operator
    from .montage import standard_montage
    from .sphere import SphereModel
    from .sphere_forward import make_sphere_forward_free

    dtype = jnp.float64 if args.float64 else jnp.float32
    rng = np.random.default_rng(args.seed)

    sphere = SphereModel(_RADII, _SIGMAS, _CENTER)  # 67/70/75 mm, 0.33/0.0042/0.33 S/m
    center = np.asarray(sphere.center)
    names, elec = standard_montage(
        args.montage, radius=float(sphere.radii[-1]), center=center
    )
    src_pos, src_nn = _demo_sources(args.ico, args.source_radius)
    src_pos, src_nn = jnp.asarray(src_pos, dtype), jnp.asarray(src_nn, dtype)
    n_src = src_pos.shape[0]
    print(
        f"exg-jax demo: {len(names)} electrodes ({args.montage}), {n_src} sources "
        f"(ico-{args.ico}, r = {args.source_radius * 1e3:.0f} mm, free orientation), "
        f"3-shell sphere, {'float64' if args.float64 else 'float32'}"
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

    # Simulate: one dipole, normal to the source surface, a 10 Hz burst, plus sensor noise.
    sfreq, n_t = 250.0, 200
    times = np.arange(n_t) / sfreq - 0.2
    if (
        args.source is None
    ):  # a source well covered by the montage (< 45° from the vertex)
        rel = np.asarray(src_pos) - center
        covered = np.flatnonzero(
            rel[:, 2] / np.linalg.norm(rel, axis=1) > np.cos(np.pi / 4)
        )
        true_idx = int(rng.choice(covered))
    else:
        true_idx = args.source
    wave = np.sin(2 * np.pi * 10 * times) * np.exp(-(((times - 0.2) / 0.08) ** 2))
    g = (
        np.asarray(fwd.gain)[:, 3 * true_idx : 3 * true_idx + 3]
        @ np.asarray(src_nn)[true_idx]
    )
    amp = 20e-9  # 20 nA·m
    signal = amp * np.outer(g, wave)
    # SNR: RMS over electrodes of the signal at its peak, over the noise standard deviation.
    noise_std = np.sqrt(np.mean(signal[:, np.argmax(np.abs(wave))] ** 2)) / args.snr
    noise = lambda n: rng.standard_normal((len(names), n)) * noise_std  # noqa: E731
    data = signal + noise(n_t)
    baseline = noise(2000)
    data -= data.mean(0)  # average reference
    baseline -= baseline.mean(0)

    def build():
        cov = compute_covariance(jnp.asarray(baseline, dtype), method="ledoit_wolf")
        return make_inverse_operator(fwd, cov, depth=0.8, loose=1.0)

    inv, dt, tc = _timed(build)
    print(
        f"  covariance + inverse operator: {dt:.2f} s "
        f"(compile {tc:.2f} s, run {dt - tc:.2f} s)"
    )
    lambda2 = 1.0 / args.snr**2
    peak_t = int(np.argmax(np.abs(wave)))
    print(
        f"  true source #{true_idx} at {np.round(np.asarray(src_pos[true_idx]) * 1e3, 1)} mm; lambda2 = 1/SNR^2 = {lambda2:.3g}"
    )
    print(
        f"  {'method':<9}{'peak error (mm)':>17}{'first call (s)':>16}{'again (s)':>11}"
        f"{'of which compile (s)':>22}"
    )
    results = {}
    for method in ("MNE", "dSPM", "sLORETA", "eLORETA"):
        stc, dt, tc = _timed(
            lambda method=method: apply_inverse(
                jnp.asarray(data, dtype), inv, lambda2, method=method
            )
        )
        t0 = time.perf_counter()  # second call: compiled kernels, λ² traced
        apply_inverse(
            jnp.asarray(data, dtype), inv, lambda2, method=method
        ).data.block_until_ready()
        dt2 = time.perf_counter() - t0
        amp_map = np.asarray(stc.data)[:, peak_t]
        peak = int(np.argmax(amp_map))
        err = float(np.linalg.norm(np.asarray(src_pos[peak] - src_pos[true_idx]))) * 1e3
        results[method] = amp_map
        print(f"  {method:<9}{err:>17.1f}{dt:>16.3f}{dt2:>11.3f}{tc:>22.3f}")

    if not args.no_plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print(
                "  (matplotlib not installed: no figure; pip install 'exg-jax[plot]')"
            )
            return 0

        def flat(p):  # azimuthal equidistant projection about the vertex
            v = np.asarray(p) - center
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
            th = np.arccos(np.clip(v[:, 2], -1, 1))
            ph = np.arctan2(v[:, 1], v[:, 0])
            return th * np.cos(ph), th * np.sin(ph)

        fig, axes = plt.subplots(1, 5, figsize=(18, 3.8))
        ex, ey = flat(elec)
        sc = axes[0].scatter(ex, ey, c=data[:, peak_t] * 1e6, cmap="RdBu_r", s=60)
        axes[0].set_title("sensor data at peak (µV)")
        fig.colorbar(sc, ax=axes[0])
        sx, sy = flat(src_pos)
        tx, ty = flat(src_pos[true_idx : true_idx + 1])
        for ax, (method, m) in zip(axes[1:], results.items(), strict=True):
            sc = ax.scatter(sx, sy, c=m, cmap="hot", s=12)
            ax.plot(tx, ty, "c+", ms=14, mew=2)
            ax.set_title(method)
            fig.colorbar(sc, ax=ax)
        for ax in axes:
            ax.set_aspect("equal")
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.out, dpi=80)
        print(f"  figure written to {args.out}")
    return 0


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
        help="simulate a dipole and localise it with every method",
        description="Simulate a dipole in a 3-shell sphere (radii "
        f"{'/'.join(f'{r * 1e3:g}' for r in _RADII)} mm, conductivities "
        f"{'/'.join(f'{s:g}' for s in _SIGMAS)} S/m) and localise it with MNE, "
        "dSPM, sLORETA and eLORETA.",
        formatter_class=fmt,
    )
    d.add_argument(
        "--montage",
        default="standard_1010",
        choices=("standard_1020", "standard_1010"),
        help="electrode montage (on the outer shell)",
    )
    d.add_argument(
        "--ico",
        type=_int_range(0, _MAX_ICO),
        default=3,
        help=f"icosahedron subdivision of the source space, 0..{_MAX_ICO}",
    )
    d.add_argument(
        "--source-radius",
        type=_source_radius,
        default=0.060,
        help=f"source sphere radius (m); must be > 0 and below the inner shell "
        f"radius {_RADII[0]} m",
    )
    d.add_argument(
        "--source",
        type=_index,
        default=None,
        help="index of the simulated source, in [0, n_src) (n_src is printed); "
        "None: a random source < 45 deg from the vertex",
    )
    d.add_argument(
        "--snr",
        type=_finite_positive,
        default=3.0,
        help="amplitude SNR, finite and > 0; lambda2 = 1 / snr**2",
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
        help="figure path (needs matplotlib); its folder must exist",
    )
    d.add_argument("--no-plot", action="store_true", help="do not draw the figure")
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
        choices=("standard_1020", "standard_1010"), help="electrode montage",
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
        if args.float64:
            import jax

            with jax.enable_x64(True):
                return _batch(args)
        return _batch(args)
    if args.command == "demo":
        # Checks that need several arguments, still before any work.
        if not args.no_plot:
            _check_out(d, args.out)
        if args.source is not None:
            n_src = len(_demo_sources(args.ico, args.source_radius)[0])
            if not 0 <= args.source < n_src:
                d.error(
                    f"argument --source: must lie in [0, {n_src}) (ico-{args.ico} at "
                    f"{args.source_radius} m has {n_src} demo sources), got {args.source}"
                )
        if args.float64:  # scoped: the caller's global JAX config is left alone
            import jax

            with jax.enable_x64(True):
                return _demo(args)
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
