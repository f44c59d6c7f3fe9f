"""What the sphere approximation costs on the fsaverage template (issue 13, item 4).

A 3-layer BEM built with MNE-Python from the surfaces it ships with
(``mne/data/fsaverage/``) is the reference; exg_jax's sphere fitted to the same
scalp (``exg_jax.templates.fsaverage_template``) is the approximation. Both use
the same conductivities (brain / skull / scalp 0.33 / 0.0042 / 0.33 S/m), the
same electrodes (``fsaverage_1010``, 70) and the same source grid inside the
inner skull.

BEM surfaces (MRI coordinates, passed to MNE as meshes, no subjects dir):

- inner skull: MNE's ``fsaverage-inner_skull-bem.fif`` (an ico-5 mesh,
  10242 vertices) decimated to ico-``--ico`` (default 4: 2562 vertices);
- outer skull: that mesh moved outward along its (smoothed) vertex normals by half its
  distance to the scalp (at most ``--max-skull-mm``, default 8 mm): halfway
  between inner skull and scalp. fsaverage ships no skull, so this is a
  choice; the sphere's skull is placed the same way, r2 = (r1 + R) / 2
  (``FSAVERAGE_SPHERE_PROPORTIONS``);
- scalp: ``fsaverage-head.fif`` as it is (2033 vertices, face and neck included).

Measured per source and orientation (columns of the average-referenced gains):
RDM = ‖g_s/‖g_s‖ − g_b/‖g_b‖‖ (0 … 2) and lnMAG = ln(‖g_s‖/‖g_b‖), and the peak
localisation error of inverses built on the sphere when the data come from the
BEM (noiseless BEM dipoles, every source × x/y/z), against the same inverse built
on the BEM gain. A control run puts the same MNE BEM on three concentric
icospheres (the fitted sphere's shells) against exg_jax's exact series: that
RDM / lnMAG is MNE's BEM discretisation error, the floor under the figures above.

Run: ``PYTHONPATH=. python bench/template.py [--cache FILE]``: 11 min on the 2-core
development VM while other jobs loaded it (two 7000-unknown BEM solutions: 5 min
each there); with ``--cache`` a second run reuses the BEM gains.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import mne  # noqa: E402
import numpy as np  # noqa: E402

import exg_jax as ex  # noqa: E402
from exg_jax.source_space import _ico_unit  # noqa: E402
from exg_jax.templates import fsaverage_template, surface_distance  # noqa: E402

SIGMAS = (0.33, 0.0042, 0.33)


def timed(label, f, *a, **k):
    t = time.perf_counter()
    out = f(*a, **k)
    dt = time.perf_counter() - t
    print(f"  [{label}: {dt:.2f} s]")
    return out, dt


def vertex_normals(rr, tris, n_smooth=5):
    """Area-weighted vertex normals, averaged over the 1-ring ``n_smooth`` times.

    Unsmoothed normals of the decimated (ico-4) inner skull cross in the
    concave region under the temporal lobes: moved 4-8 mm along them, 8 of its
    vertices end up outside the moved mesh (MNE's nesting check fails).
    """
    n = np.zeros_like(rr)
    fn = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
    for k in range(3):
        np.add.at(n, tris[:, k], fn)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    for _ in range(n_smooth):
        acc = n.copy()
        np.add.at(acc, e[:, 0], n[e[:, 1]])
        np.add.at(acc, e[:, 1], n[e[:, 0]])
        n = acc / np.linalg.norm(acc, axis=1, keepdims=True)
    return n


def orient_outward(rr, tris):
    """Triangles wound so that their normals point away from the centroid (on average)."""
    fn = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
    c = rr[tris].mean(axis=1) - rr.mean(axis=0)
    if np.sum(np.einsum("tk,tk->t", fn, c)) < 0:
        tris = tris[:, [0, 2, 1]]
    return tris


def to_mri(rr, t):
    return rr @ t[:3, :3].T + t[:3, 3]


def gain_metrics(gs, gb):
    """RDM and lnMAG per column of two average-referenced gains (n_chan, n_col)."""
    ns, nb = np.linalg.norm(gs, axis=0), np.linalg.norm(gb, axis=0)
    rdm = np.linalg.norm(gs / ns - gb / nb, axis=0)
    return rdm, np.log(ns / nb)


def describe(name, rdm, lnmag):
    print(
        f"  {name}: RDM median {np.median(rdm):.3f}, 95th pct {np.percentile(rdm, 95):.3f}, "
        f"max {rdm.max():.3f}; lnMAG median {np.median(lnmag):+.3f}, "
        f"5–95th pct [{np.percentile(lnmag, 5):+.3f}, {np.percentile(lnmag, 95):+.3f}] "
        f"(MAG median {np.exp(np.median(lnmag)):.3f})"
    )


def avg_ref(g):
    return g - g.mean(axis=0, keepdims=True)


def make_bem(surfs):
    """MNE's 3-layer BEM solution of (inner skull, outer skull, scalp) meshes (m, MRI).

    ``mne.make_bem_model`` reads FreeSurfer ``.surf`` files (nibabel needed);
    the private step it runs on them, ``mne.bem._surfaces_to_bem`` (topology,
    nesting and size checks, conductivities), takes the meshes directly.
    """
    ids = [
        mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_BRAIN,
        mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_SKULL,
        mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_HEAD,
    ]
    model = mne.bem._surfaces_to_bem(
        [dict(rr=rr * 1e3, tris=tris) for rr, tris in surfs], ids, SIGMAS, ico=None
    )
    return mne.make_bem_solution(model, verbose=False)


def mne_forward(tpl, bem, src_mri, nn_mri, info, trans):
    src = mne.setup_volume_source_space(
        pos=dict(rr=src_mri, nn=nn_mri), bem=bem, mindist=0.0, verbose=False
    )
    kept = src[0]["vertno"]
    fwd = mne.make_forward_solution(
        info, trans, src, bem, meg=False, eeg=True, mindist=0.0, verbose=False
    )
    return np.asarray(fwd["sol"]["data"]), kept


def localisation(kernels, g, pos):
    """Peak localisation error (m) of each kernel on every column of g (free sources)."""
    n = pos.shape[0]
    out = {}
    for name, k in kernels.items():
        est = np.asarray(k.kernel) @ g  # (3 n, 3 n)
        amp = np.sqrt(np.sum(est.reshape(n, 3, -1) ** 2, axis=1))  # (n, 3 n)
        if k.noise_norm is not None:
            amp = amp * np.asarray(k.noise_norm)[:, None]
        peak = np.argmax(amp, axis=0)
        true = np.repeat(np.arange(n), 3)
        out[name] = np.linalg.norm(pos[peak] - pos[true], axis=1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--montage", default="fsaverage_1010")
    ap.add_argument("--spacing", type=float, default=0.01, help="source grid step (m)")
    ap.add_argument("--ico", type=int, default=4, help="inner-skull decimation (ico-n)")
    ap.add_argument("--max-skull-mm", type=float, default=8.0)
    ap.add_argument(
        "--cache", default=None, help="npz file keeping MNE's BEM gains between runs"
    )
    ap.add_argument(
        "--no-control", action="store_true", help="skip the sphere-BEM control"
    )
    args = ap.parse_args()
    mne.set_log_level("WARNING")
    warnings.simplefilter("ignore", RuntimeWarning)  # MNE's notes on close surfaces
    t_all = time.perf_counter()
    print(f"MNE {mne.__version__}, jax {jax.__version__}, float64")

    # ---------------------------------------------------------------- template
    print("\n1. Template")
    tpl, t_tpl = timed(
        "fsaverage_template",
        fsaverage_template,
        args.montage,
        spacing=args.spacing,
        relative_radii=None,
    )
    fit = tpl.sphere_fit
    radii = np.asarray(tpl.sphere.radii)
    center = np.asarray(tpl.sphere.center)
    res = fit.residuals
    print(
        f"  sphere fit to {len(res)} scalp vertices (z >= 0): R = {fit.radius * 1e3:.1f} mm, "
        f"centre {np.round(center * 1e3, 1)} mm, {fit.n_iter} iterations; residual RMS "
        f"{np.sqrt(np.mean(res**2)) * 1e3:.2f} mm, median |r| {np.median(np.abs(res)) * 1e3:.2f} mm, "
        f"95th pct |r| {np.percentile(np.abs(res), 95) * 1e3:.2f} mm, max |r| "
        f"{np.abs(res).max() * 1e3:.2f} mm, robust scale {fit.scale * 1e3:.2f} mm"
    )
    d_in = np.linalg.norm(tpl.inner_skull_rr - center, axis=1) / fit.radius
    cap = tpl.inner_skull_rr[:, 2] >= 0
    print(
        f"  inner skull / R over the cap: median {np.median(d_in[cap]):.3f}, "
        f"5–95th pct {np.percentile(d_in[cap], 5):.3f}–{np.percentile(d_in[cap], 95):.3f}"
    )
    print(
        f"  shells {np.round(radii * 1e3, 1)} mm; {tpl.src_pos.shape[0]} sources "
        f"({args.spacing * 1e3:.0f} mm grid), {tpl.n_dropped} dropped outside the "
        f"innermost shell; {len(tpl.ch_names)} electrodes ({args.montage})"
    )
    d_el, _ = surface_distance(tpl.electrodes, tpl.scalp_rr, tpl.scalp_tris)
    r_el = np.linalg.norm(tpl.electrodes - center, axis=1)
    print(
        f"  electrodes: distance to the scalp mesh max {d_el.max() * 1e3:.2f} mm; "
        f"distance from the centre {r_el.min() * 1e3:.1f}–{r_el.max() * 1e3:.1f} mm "
        f"(R = {fit.radius * 1e3:.1f})"
    )

    # ---------------------------------------------------------------- BEM
    print("\n2. MNE BEM on the template surfaces")
    head_mri = tpl.head_mri_t
    base = os.path.join(os.path.dirname(mne.__file__), "data", "fsaverage")
    trans = os.path.join(base, "fsaverage-trans.fif")
    skull = mne.read_bem_surfaces(
        os.path.join(base, "fsaverage-inner_skull-bem.fif"), verbose=False
    )[0]
    inner = mne.bem._ico_downsample(dict(rr=skull["rr"], tris=skull["tris"]), args.ico)
    inner_rr, inner_tris = inner["rr"], orient_outward(inner["rr"], inner["tris"])
    scalp_mri = to_mri(tpl.scalp_rr, head_mri)
    scalp_tris = orient_outward(scalp_mri, tpl.scalp_tris)
    gap, _ = surface_distance(inner_rr, scalp_mri, scalp_tris)
    move = np.minimum(gap / 2, args.max_skull_mm * 1e-3)
    outer_rr = inner_rr + move[:, None] * vertex_normals(inner_rr, inner_tris)
    print(
        f"  inner skull ico-{args.ico}: {len(inner_rr)} vertices; scalp {len(scalp_mri)}; "
        f"inner skull–scalp distance median {np.median(gap) * 1e3:.1f} mm, min "
        f"{gap.min() * 1e3:.1f} mm; skull {np.median(move) * 1e3:.1f} mm (median; "
        f"{np.sum(move < gap / 2)} vertices capped at {args.max_skull_mm} mm)"
    )
    info = mne.create_info(tpl.ch_names, 1000.0, "eeg")
    info.set_montage(mne.channels.make_standard_montage(args.montage))
    src_head = np.asarray(tpl.src_pos)
    nn_head = np.asarray(tpl.src_nn)
    src_mri = to_mri(src_head, head_mri)
    nn_mri = nn_head @ head_mri[:3, :3].T
    cache = (
        dict(np.load(args.cache)) if args.cache and os.path.exists(args.cache) else {}
    )
    if "gb_raw" in cache:
        gb_raw, kept = cache["gb_raw"], cache["kept"]
        t_bem, t_fwd = float(cache["t_bem"]), float(cache["t_fwd"])
        print(
            f"  (MNE BEM gain from {args.cache}: {t_bem:.1f} s + {t_fwd:.1f} s when made)"
        )
    else:
        bem, t_bem = timed(
            "BEM model + solution",
            make_bem,
            [(inner_rr, inner_tris), (outer_rr, inner_tris), (scalp_mri, scalp_tris)],
        )
        (gb_raw, kept), t_fwd = timed(
            "MNE BEM forward", mne_forward, tpl, bem, src_mri, nn_mri, info, trans
        )
        cache.update(gb_raw=gb_raw, kept=kept, t_bem=t_bem, t_fwd=t_fwd)
        if args.cache:
            np.savez(args.cache, **cache)
    if len(kept) != len(src_head):
        print(
            f"  MNE kept {len(kept)} of {len(src_head)} sources (outside its ico mesh)"
        )
    src = src_head[kept]
    nn = nn_head[kept]
    gb = avg_ref(gb_raw)

    # ---------------------------------------------------------------- sphere
    print("\n3. exg_jax sphere forward (exact series) on the fitted sphere")
    sph = tpl.sphere
    u = tpl.electrodes - center
    el_sphere = center + fit.radius * u / np.linalg.norm(u, axis=1, keepdims=True)
    for label in (
        "sphere forward, first call (compiles)",
        "sphere forward, second call",
    ):
        fwd_s, t_sph = timed(
            label,
            ex.make_sphere_forward_free,
            el_sphere,
            jnp.asarray(src),
            sph,
            src_nn=jnp.asarray(nn),
            method="exact",
        )
    fwd_s_given = ex.make_sphere_forward_free(
        tpl.electrodes, jnp.asarray(src), sph, src_nn=jnp.asarray(nn), method="exact"
    )
    gs = np.asarray(fwd_s.gain)
    rdm, lnmag = gain_metrics(gs, gb)
    describe("sphere vs BEM, electrodes on the sphere", rdm, lnmag)
    rdm_g, lnmag_g = gain_metrics(np.asarray(fwd_s_given.gain), gb)
    describe("sphere vs BEM, electrodes as MNE gives them", rdm_g, lnmag_g)
    # by eccentricity
    ecc = np.linalg.norm(src - center, axis=1) / radii[0]
    ecc3 = np.repeat(ecc, 3)
    for lo, hi in ((0, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 1.0)):
        m = (ecc3 >= lo) & (ecc3 < hi)
        if m.any():
            print(
                f"    eccentricity {lo:.2f}–{hi:.2f} ({m.sum() // 3} sources): RDM median "
                f"{np.median(rdm[m]):.3f}, lnMAG median {np.median(lnmag[m]):+.3f}"
            )

    # ---------------------------------------------------------------- control
    if not args.no_control:
        print("\n4. Control: MNE BEM on concentric icospheres vs the exact series")
        shells = []
        for r in radii:
            unit, tris = _ico_unit(args.ico)
            shells.append((to_mri(unit * float(r) + center, head_mri), tris))
        # electrodes on the sphere's scalp icosphere (no projection error)
        info_s = mne.create_info(tpl.ch_names, 1000.0, "eeg")
        mont = mne.channels.make_dig_montage(
            ch_pos=dict(zip(tpl.ch_names, el_sphere, strict=True)), coord_frame="head"
        )
        info_s.set_montage(mont)
        if "gc_raw" in cache:
            gc_raw, kept_c = cache["gc_raw"], cache["kept_c"]
        else:
            bem_c, _ = timed("BEM model + solution (spheres)", make_bem, shells)
            (gc_raw, kept_c), _ = timed(
                "MNE BEM forward (spheres)",
                mne_forward,
                tpl,
                bem_c,
                src_mri[kept],
                nn_mri[kept],
                info_s,
                trans,
            )
            cache.update(gc_raw=gc_raw, kept_c=kept_c)
            if args.cache:
                np.savez(args.cache, **cache)
        gc = avg_ref(gc_raw)
        gs_c = gs.reshape(gs.shape[0], -1, 3)[:, kept_c].reshape(gs.shape[0], -1)
        rdm_c, lnmag_c = gain_metrics(gs_c, gc)
        describe("exact sphere vs MNE BEM of the same spheres", rdm_c, lnmag_c)

    # ---------------------------------------------------------------- inverse
    print(
        "\n5. Localisation: sphere-based inverses on BEM-simulated dipoles (noiseless)"
    )
    n_ch = gs.shape[0]
    cov = np.eye(n_ch) * 1e-12  # white noise, 1 µV
    fwd_b = ex.ForwardOperator(
        jnp.asarray(gb), jnp.asarray(src), jnp.asarray(nn), "free", "average"
    )
    methods = ("MNE", "dSPM", "sLORETA", "eLORETA")
    lam2 = 1.0 / 9.0
    t = time.perf_counter()
    inv_s = ex.make_inverse_operator(fwd_s, cov, depth=0.8)
    inv_b = ex.make_inverse_operator(fwd_b, cov, depth=0.8)
    ks = {m: ex.imaging_kernel(inv_s, lam2, m) for m in methods}
    kb = {m: ex.imaging_kernel(inv_b, lam2, m) for m in methods}
    print(f"  [operators and kernels: {time.perf_counter() - t:.2f} s]")
    err_sb = localisation(ks, gb, src)
    err_ss = localisation(ks, gs, src)
    err_bb = localisation(kb, gb, src)
    print(
        f"  λ² = 1/9, depth 0.8, free orientation, {len(src)} sources × 3 orientations"
    )
    print(
        "  inverse / data:   sphere / BEM          sphere / sphere       BEM / BEM\n"
        "  (peak error: median, 95th pct in mm; share of dipoles found on their own "
        "grid point)"
    )
    for m in methods:
        f = lambda e: (  # noqa: E731
            f"{np.median(e) * 1e3:5.1f} {np.percentile(e, 95) * 1e3:5.1f} "
            f"{np.mean(e == 0) * 100:4.0f} %"
        )
        print(
            f"  {m:8s}  {f(err_sb[m]):>20s}  {f(err_ss[m]):>20s}  {f(err_bb[m]):>20s}"
        )

    print(
        f"\nTimes: template {t_tpl:.1f} s; BEM model+solution {t_bem:.1f} s; MNE BEM forward "
        f"{t_fwd:.1f} s; exg_jax sphere forward {t_sph * 1e3:.1f} ms; total "
        f"{time.perf_counter() - t_all:.0f} s"
    )


if __name__ == "__main__":
    main()
