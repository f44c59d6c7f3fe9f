"""Command-line entry point: ``exg-jax demo`` (also ``python -m exg_jax demo``)."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import numpy as np

    from .covariance import compute_covariance
    from .forward import make_sphere_forward_free
    from .inverse import apply_inverse, make_inverse_operator
    from .montage import standard_montage
    from .source_space import ico_source_space
    from .sphere import SphereModel

    dtype = jnp.float64 if args.float64 else jnp.float32
    rng = np.random.default_rng(args.seed)

    sphere = SphereModel()  # 3-shell default: 67/70/75 mm, 0.33/0.0042/0.33 S/m
    center = np.asarray(sphere.center)
    names, elec = standard_montage(
        args.montage, radius=float(sphere.radii[-1]), center=center
    )
    src_pos, src_nn = ico_source_space(
        args.ico, radius=args.source_radius, center=center
    )
    # Keep the upper part of the sphere (where a cortex would be under the montage).
    keep = np.asarray(src_pos)[:, 2] > center[2] - 0.02
    src_pos, src_nn = (
        jnp.asarray(np.asarray(src_pos)[keep], dtype),
        jnp.asarray(np.asarray(src_nn)[keep], dtype),
    )
    n_src = src_pos.shape[0]
    print(
        f"exg-jax demo: {len(names)} electrodes ({args.montage}), {n_src} sources "
        f"(ico-{args.ico}, r = {args.source_radius * 1e3:.0f} mm, free orientation), "
        f"3-shell sphere, {'float64' if args.float64 else 'float32'}"
    )

    t0 = time.perf_counter()
    fwd = make_sphere_forward_free(
        jnp.asarray(elec, dtype), src_pos, sphere, src_nn=src_nn
    )
    fwd.gain.block_until_ready()
    print(
        f"  forward  ({fwd.gain.shape[0]} x {fwd.gain.shape[1]}): {time.perf_counter() - t0:.2f} s"
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

    t0 = time.perf_counter()
    cov = compute_covariance(jnp.asarray(baseline, dtype), method="ledoit_wolf")
    inv = make_inverse_operator(fwd, cov, depth=0.8, loose=1.0)
    inv.sing.block_until_ready()
    print(f"  covariance + inverse operator: {time.perf_counter() - t0:.2f} s")
    lambda2 = 1.0 / args.snr**2
    peak_t = int(np.argmax(np.abs(wave)))
    print(
        f"  true source #{true_idx} at {np.round(np.asarray(src_pos[true_idx]) * 1e3, 1)} mm; lambda2 = 1/SNR^2 = {lambda2:.3g}"
    )
    print(
        f"  {'method':<9}{'peak error (mm)':>17}{'first call (s)':>16}{'again (s)':>11}"
    )
    results = {}
    for method in ("MNE", "dSPM", "sLORETA", "eLORETA"):
        t0 = time.perf_counter()
        stc = apply_inverse(jnp.asarray(data, dtype), inv, lambda2, method=method)
        stc.data.block_until_ready()
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()  # second call: compiled kernels, λ² traced
        apply_inverse(
            jnp.asarray(data, dtype), inv, lambda2, method=method
        ).data.block_until_ready()
        dt2 = time.perf_counter() - t0
        amp_map = np.asarray(stc.data)[:, peak_t]
        peak = int(np.argmax(amp_map))
        err = float(np.linalg.norm(np.asarray(src_pos[peak] - src_pos[true_idx]))) * 1e3
        results[method] = amp_map
        print(f"  {method:<9}{err:>17.1f}{dt:>16.3f}{dt2:>11.3f}")

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


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command."""
    parser = argparse.ArgumentParser(
        prog="exg-jax", description="EEG source localisation in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo", help="simulate a dipole and localise it with every method"
    )
    d.add_argument(
        "--montage", default="standard_1010", choices=("standard_1020", "standard_1010")
    )
    d.add_argument(
        "--ico", type=int, default=3, help="icosahedron subdivision of the source space"
    )
    d.add_argument(
        "--source-radius", type=float, default=0.060, help="source sphere radius (m)"
    )
    d.add_argument(
        "--source", type=int, default=None, help="index of the simulated source"
    )
    d.add_argument(
        "--snr", type=float, default=3.0, help="amplitude SNR; lambda2 = 1 / snr**2"
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--float64", action="store_true", help="enable float64 (default float32)"
    )
    d.add_argument(
        "--out", default="exg_jax_demo.png", help="figure path (needs matplotlib)"
    )
    d.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.float64:  # scoped: the caller's global JAX config is left alone
            import jax

            with jax.enable_x64(True):
                return _demo(args)
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
