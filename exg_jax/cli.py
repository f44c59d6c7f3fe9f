"""Command-line entry point: ``exg-jax demo`` (also ``python -m exg_jax demo``)."""

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
    args = parser.parse_args(argv)
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
