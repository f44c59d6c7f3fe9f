"""Benchmark W1: apply_inverse_epochs vs MNE-Python's apply_inverse_epochs.

biosemi64, ico-4 free orientation (2562 sources), 200 epochs x 500 samples,
MNE sphere forward (make_forward_solution, numba) shared via from_mne.
Float64 and float32 (operator and data cast); first call (with compilation)
and steady state (best of --repeat, MNE timed the same way); fraction of the machine's GEMM throughput (a NumPy matmul
of the kernel's shape for every epoch, timed in the same run).

Usage: PYTHONPATH=. python bench/apply.py [--epochs 200] [--times 500] [--ico 4] [--repeat 3]
"""

import argparse
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import mne  # noqa: E402
import numpy as np  # noqa: E402
from _w1 import LAMBDA2, build_w1, numpy_gemm_time, to_float32  # noqa: E402

from exg_jax.inverse import apply_inverse_epochs  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--times", type=int, default=500)
    ap.add_argument("--ico", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", default="MNE,dSPM,sLORETA,eLORETA")
    args = ap.parse_args()
    w1 = build_w1(args.epochs, args.times, args.ico)
    info, fwd, cov, data, epochs = (
        w1[k] for k in ("info", "fwd", "cov", "data", "epochs")
    )
    inv_m, inv64, lam = w1["inv_mne"], w1["inv"], LAMBDA2
    print(f"MNE forward: {w1['t_fwd']:.1f} s, gain {fwd['sol']['data'].shape}")
    n = len(info.ch_names)
    inv32 = to_float32(inv64)
    d64 = jnp.asarray(data)
    d32 = d64.astype(jnp.float32)

    # GEMM reference: NumPy's K @ x for every epoch, K of the kernel's shape
    rows = inv64.eigen_leads.shape[0]
    gemm = {
        dt: numpy_gemm_time(rows, n, args.epochs, args.times, dt)
        for dt in (np.float64, np.float32)
    }
    flops = 2.0 * rows * n * args.epochs * args.times
    print(
        f"NumPy GEMM per epoch ({rows}x{n} @ {n}x{args.times}, x{args.epochs}): "
        f"f64 {gemm[np.float64]:.3f} s ({flops / gemm[np.float64] / 1e9:.1f} GFLOP/s), "
        f"f32 {gemm[np.float32]:.3f} s ({flops / gemm[np.float32] / 1e9:.1f} GFLOP/s)"
    )
    print(
        f"{'method':8s} {'MNE s':>8s} {'f64 1st':>8s} {'f64':>8s} {'x':>6s} {'%GEMM':>6s} "
        f"{'f32 1st':>8s} {'f32':>8s} {'x':>6s} {'%GEMM':>6s}"
    )
    for method in args.methods.split(","):
        if method == "eLORETA":
            try:
                import exg_jax.eloreta  # noqa: F401
            except ImportError:
                print("eLORETA: exg_jax.eloreta not available, skipped")
                continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # MNE timed as we are: best of --repeat runs
            t_mne = np.inf
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = mne.minimum_norm.apply_inverse_epochs(
                    epochs, inv_m, lam, method, nave=1
                )
                t_mne = min(t_mne, time.perf_counter() - t)
                ref_last = out[-1].data
                del out
        res = {}
        for tag, inv, d in (("f64", inv64, d64), ("f32", inv32, d32)):
            t = time.perf_counter()
            r = apply_inverse_epochs(d, inv, lam, method).data
            r.block_until_ready()
            first = time.perf_counter() - t
            if tag == "f64":
                err = float(
                    np.max(np.abs(np.asarray(r[-1]) - ref_last))
                    / np.max(np.abs(ref_last))
                )
            del r
            best = np.inf
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = apply_inverse_epochs(d, inv, lam, method).data
                r.block_until_ready()
                best = min(best, time.perf_counter() - t)
                del r
            res[tag] = (first, best)
        g64 = gemm[np.float64] / res["f64"][1] * 100
        g32 = gemm[np.float32] / res["f32"][1] * 100
        print(
            f"{method:8s} {t_mne:8.2f} {res['f64'][0]:8.2f} {res['f64'][1]:8.2f} "
            f"{t_mne / res['f64'][1]:6.2f} {g64:6.0f} {res['f32'][0]:8.2f} {res['f32'][1]:8.2f} "
            f"{t_mne / res['f32'][1]:6.2f} {g32:6.0f}   (rel err vs MNE, last epoch: {err:.1e})"
        )


if __name__ == "__main__":
    main()
