"""Benchmark: biosemi64 x ico-4 (2562 sources), free orientation, EEG sphere forward.

Times ``exg_jax.sphere_forward.make_sphere_forward_free`` (first call, which
includes JAX compilation and a run of the Berg–Scherg fit and the lead-field
kernel, then the steady-state median of several calls, where the fit of the
unchanged model is memoised, as MNE-Python keeps it in its sphere model; see
``clear_berg_scherg_cache``) against MNE-Python's
``make_forward_solution`` (numba installed, as MNE users run it; the sphere
model and its Berg–Scherg fit are built once beforehand, outside the timing)
in the same run, on the 3-shell default model, float64. Also reports the
exg_jax steady state with MNE's (mu, lam) passed explicitly (no fit) and the
max difference between the two gains. Not a test.

Run: python bench/forward.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from exg_jax.source_space import ico_source_space  # noqa: E402
from exg_jax.sphere import SphereModel  # noqa: E402
from exg_jax.sphere_forward import make_sphere_forward_free  # noqa: E402


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def main():
    import mne

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    mne.set_log_level("error")
    try:
        import numba  # noqa: F401

        has_numba = True
    except ImportError:
        has_numba = False

    sphere = SphereModel()
    center = np.asarray(sphere.center)
    mne_sphere = mne.make_sphere_model(
        r0=tuple(center),
        head_radius=0.075,
        relative_radii=(0.067 / 0.075, 0.070 / 0.075, 1.0),
        sigmas=(0.33, 0.0042, 0.33),
    )
    mont = mne.channels.make_standard_montage("biosemi64")
    info = mne.create_info(mont.ch_names, 1000.0, "eeg")
    info.set_montage(mont)
    el = np.array([ch["loc"][:3] for ch in info["chs"]])
    pos, nn = ico_source_space(4, 0.06, center)
    pos, nn = np.asarray(pos), np.asarray(nn)
    src = mne.setup_volume_source_space(pos=dict(rr=pos, nn=nn), sphere=mne_sphere)
    print(
        f"biosemi64 ({len(el)} electrodes) x ico-4 ({len(pos)} sources, free), 3-shell sphere, "
        f"float64; jax {jax.__version__} on {jax.devices()[0].platform}, mne {mne.__version__}, "
        f"numba {'installed' if has_numba else 'NOT installed'}"
    )

    def ours():
        return make_sphere_forward_free(
            el, pos, sphere, src_nn=nn
        ).gain.block_until_ready()

    bs = (mne_sphere["mu"], mne_sphere["lambda"])

    def ours_mne_params():
        return make_sphere_forward_free(
            el, pos, sphere, src_nn=nn, berg_scherg=bs
        ).gain.block_until_ready()

    def theirs():
        fwd = mne.make_forward_solution(
            info, None, src, mne_sphere, eeg=True, meg=False
        )
        return fwd["sol"]["data"]

    t0 = time.perf_counter()
    g = ours()
    t_first = time.perf_counter() - t0
    t_ours, ts_ours = _median_time(ours, args.repeat)
    ours_mne_params()
    t_ours_p, ts_ours_p = _median_time(ours_mne_params, args.repeat)

    t0 = time.perf_counter()
    g_mne = theirs()
    t_mne_first = time.perf_counter() - t0
    t_mne, ts_mne = _median_time(theirs, args.repeat)

    g_mne = g_mne - g_mne.mean(axis=0)
    g_p = np.asarray(ours_mne_params())
    scale = np.abs(g_mne).max()
    print(
        f"exg_jax make_sphere_forward_free, first call (incl. compile): {t_first:.3f} s"
    )
    print(f"MNE make_forward_solution, first call: {t_mne_first:.3f} s")
    print(f"steady state: median (min) of {args.repeat} calls")
    rows = [
        ("exg_jax make_sphere_forward_free (own fit)", t_ours, ts_ours),
        ("exg_jax make_sphere_forward_free (MNE mu/lam)", t_ours_p, ts_ours_p),
        ("MNE make_forward_solution", t_mne, ts_mne),
    ]
    for label, med, ts in rows:
        print(f"  {label:46s} {med:8.4f} s ({min(ts):.4f} s)")
    print(f"ratio MNE / exg_jax (steady state, own fit):  {t_mne / t_ours:6.1f}x")
    print(f"ratio MNE / exg_jax (steady state, MNE mu/lam): {t_mne / t_ours_p:6.1f}x")
    print(
        f"ratio MNE / exg_jax (min times, own fit):     {min(ts_mne) / min(ts_ours):6.1f}x"
    )
    print(
        "max |gain difference| / max |gain|: own fit "
        f"{np.abs(np.asarray(g) - g_mne).max() / scale:.2e}, MNE mu/lam {np.abs(g_p - g_mne).max() / scale:.2e}"
    )


if __name__ == "__main__":
    main()
