"""Benchmark: streamed resolution metrics (PSF + CTF, all six metrics).

1. ico-5 free orientation (10242 sources, biosemi64, exg_jax forward): the full
   resolution matrix (30726 x 10242, 2.5 GB in float64) is never built; time
   (first call incl. compilation, then steady state) and peak resident memory.
2. ico-4 free orientation (2562 sources) on an MNE sphere forward: MNE-Python
   (make_inverse_resolution_matrix + its metric computations, PSF and CTF)
   against exg_jax (make_resolution_operator + streamed metrics), same inverse
   method and λ²; ratio of wall times.

Run: ``python bench/resolution.py [--method sLORETA] [--block-size 256]``.
Not a test.
"""

from __future__ import annotations

import argparse
import resource
import time
from unittest import mock

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from exg_jax.covariance import NoiseCov  # noqa: E402
from exg_jax.interop import forward_from_mne  # noqa: E402
from exg_jax.inverse import make_inverse_operator  # noqa: E402
from exg_jax.resolution import (  # noqa: E402
    METRICS,
    get_cross_talk,
    get_point_spread,
    make_resolution_operator,
    resolution_metrics,
)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def block(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), x)


def biosemi64():
    import mne

    mne.set_log_level("ERROR")
    mont = mne.channels.make_standard_montage("biosemi64")
    info = mne.create_info(mont.ch_names, 1000.0, "eeg")
    info.set_montage(mont)
    sphere = mne.make_sphere_model("auto", "auto", info)
    return info, sphere


def noise_cov(n_chan, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_chan, 20 * n_chan)) * 1e-6
    x = x - x.mean(axis=0, keepdims=True)  # average reference
    return x @ x.T / x.shape[1], x


def ours_all_metrics(op, pos, block_size):
    out = {}
    for function in ("psf", "ctf"):
        out[function] = resolution_metrics(
            op, pos, function, METRICS, block_size=block_size
        )
    return block(out)


def run_ico5(method, lambda2, block_size):
    from exg_jax.source_space import ico_source_space
    from exg_jax.sphere import SphereModel
    from exg_jax.sphere_forward import make_sphere_forward_free

    info, msphere = biosemi64()
    el = np.array([ch["loc"][:3] for ch in info["chs"]])
    r0 = np.asarray(msphere["r0"])
    head_r = float(msphere.radius)
    sphere = SphereModel.mne_default(head_radius=head_r, center=tuple(r0))
    pos, nn = ico_source_space(5, radius=0.7 * head_r, center=tuple(r0))
    t0 = time.perf_counter()
    F = make_sphere_forward_free(
        jnp.asarray(el), jnp.asarray(pos), sphere, src_nn=jnp.asarray(nn)
    )
    cov, _ = noise_cov(len(el))
    inv = make_inverse_operator(F, NoiseCov(jnp.asarray(cov), 1280), 0.8)
    op = block(make_resolution_operator(inv, F, lambda2, method))
    t_setup = time.perf_counter() - t0
    rss0 = maxrss_mb()
    n = F.n_src
    print(
        f"ico-5 free: {n} sources, {F.n_chan} channels, R would be {op.shape} "
        f"= {op.shape[0] * op.shape[1] * 8 / 1e9:.2f} GB float64"
    )
    print(
        f"  forward + inverse + K, G ({method}): {t_setup:.2f} s; maxrss {rss0:.0f} MB"
    )
    t0 = time.perf_counter()
    ours_all_metrics(op, F.src_pos, block_size)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = ours_all_metrics(op, F.src_pos, block_size)
    t_steady = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx = np.arange(0, n, 1000)
    block((get_point_spread(op, idx), get_cross_talk(op, idx)))
    t_pc = time.perf_counter() - t0
    rss1 = maxrss_mb()
    print(
        f"  PSF+CTF, 6 metrics each (block_size={block_size}): first {t_first:.2f} s, "
        f"steady {t_steady:.2f} s"
    )
    print(f"  {len(idx)} PSFs + CTFs: {t_pc:.3f} s")
    print(
        f"  peak RSS: {rss1:.0f} MB (before metrics {rss0:.0f} MB, +{rss1 - rss0:.0f} MB)"
    )
    for f in ("psf", "ctf"):
        r = res[f]
        print(
            f"  {f}: median peak_err {1e3 * float(jnp.median(r['peak_err'])):.1f} mm, "
            f"median sd_ext {1e3 * float(jnp.median(r['sd_ext'])):.1f} mm"
        )
    return dict(first=t_first, steady=t_steady, rss=rss1, rss_before=rss0)


def mne_problem(grade):
    import mne
    from mne.surface import _get_ico_surface

    info, sphere = biosemi64()
    rr = _get_ico_surface(grade)["rr"]
    nn = rr / np.linalg.norm(rr, axis=1, keepdims=True)
    pos = 0.7 * float(sphere.radius) * nn + np.asarray(sphere["r0"])
    src = mne.setup_volume_source_space(pos=dict(rr=pos, nn=nn), sphere=sphere)
    fwd = mne.make_forward_solution(info, None, src, sphere)
    _, x = noise_cov(64)
    raw = mne.io.RawArray(x, info)
    raw.set_eeg_reference(projection=True)
    cov = mne.compute_raw_covariance(raw)
    return fwd, raw.info, cov


def mne_all_metrics(R, pos):
    import mne.minimum_norm.spatial_resolution as sr

    out = {}
    with mock.patch.object(sr, "_get_src_locations", lambda src: np.array(pos)):
        Rr = sr._rectify_resolution_matrix(R)
        for function in ("psf", "ctf"):
            d = {}
            for m in ("peak_err", "cog_err"):
                d[m] = sr._localisation_error(R, None, function, m)
            for m in ("sd_ext", "maxrad_ext"):
                d[m] = sr._spatial_extent(Rr, None, function, m)
            for m in ("peak_amp", "sum_amp"):
                d[m] = sr._relative_amplitude(Rr, None, function, m)
            out[function] = d
    return out


def run_ico4(method, lambda2, block_size):
    import mne

    fwd, info, cov = mne_problem(4)
    fwd_fixed = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True)
    inv_mne = mne.minimum_norm.make_inverse_operator(
        info, fwd, cov, loose=1.0, depth=0.8
    )
    pos = np.asarray(fwd["source_rr"])

    t0 = time.perf_counter()
    R = mne.minimum_norm.make_inverse_resolution_matrix(
        fwd_fixed, inv_mne, method, lambda2
    )
    t_r = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = mne_all_metrics(R, pos)
    t_m = time.perf_counter() - t0
    t_mne = t_r + t_m

    F = forward_from_mne(fwd, reference=None)
    inv = make_inverse_operator(
        F, NoiseCov(jnp.asarray(cov.data), int(cov["nfree"])), 0.8, avg_ref_proj=True
    )

    def ours():
        op = make_resolution_operator(inv, F, lambda2, method)
        return ours_all_metrics(op, F.src_pos, block_size)

    t0 = time.perf_counter()
    ours()
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = ours()
    t_steady = time.perf_counter() - t0

    worst = 0.0
    for f in ("psf", "ctf"):
        for m in METRICS:
            scale = 1.0 if m in ("peak_amp", "sum_amp") else 100.0
            if (
                m == "maxrad_ext"
            ):  # MNE 1.13 computes another quantity (see resolution.py)
                continue
            a, b = scale * np.asarray(res[f][m]), ref[f][m]
            worst = max(worst, float(np.max(np.abs(a - b)) / np.max(np.abs(b))))
    print(
        f"ico-4 free: {F.n_src} sources, R {R.shape}, {method}, lambda2={lambda2:.4g}"
    )
    print(
        f"  MNE-Python: resolution matrix {t_r:.2f} s + metrics {t_m:.2f} s = {t_mne:.2f} s"
    )
    print(f"  exg_jax:    first call {t_first:.2f} s, steady {t_steady:.2f} s")
    print(
        f"  ratio MNE / exg_jax: {t_mne / t_steady:.1f}x steady, {t_mne / t_first:.1f}x first call"
    )
    print(f"  max relative difference of the metrics vs MNE: {worst:.2e}")
    return dict(mne=t_mne, first=t_first, steady=t_steady, err=worst)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--method", default="sLORETA")
    p.add_argument("--lambda2", type=float, default=1.0 / 9.0)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--skip-ico5", action="store_true")
    p.add_argument("--skip-ico4", action="store_true")
    a = p.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    if not a.skip_ico5:
        run_ico5(a.method, a.lambda2, a.block_size)
    if not a.skip_ico4:
        run_ico4(a.method, a.lambda2, a.block_size)


if __name__ == "__main__":
    main()
