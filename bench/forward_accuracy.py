"""Berg–Scherg (3 fitted dipoles) vs the exact multi-shell series: scalp potential error.

For each model and eccentricity (source distance from the centre over the
innermost radius), sources on an ico-2 shell at that eccentricity, radial and
two tangential unit dipoles each, 642 electrodes on the scalp sphere (ico-3),
average reference. Error per dipole: ||V_bs - V_exact||_2 / ||V_exact||_2;
prints the median and the maximum over dipoles. Not a test.

Run: python bench/forward_accuracy.py
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from exg_jax.source_space import ico_source_space  # noqa: E402
from exg_jax.sphere import SphereModel, berg_scherg_params  # noqa: E402
from exg_jax.sphere_forward import make_sphere_forward_free  # noqa: E402


def errors(sphere, ecc):
    c = np.asarray(sphere.center)
    r_in, r_out = float(sphere.radii[0]), float(sphere.radii[-1])
    el, _ = ico_source_space(3, r_out, c)
    src, nn = ico_source_space(2, ecc * r_in, c)
    bs = make_sphere_forward_free(el, src, sphere).gain
    ex = make_sphere_forward_free(el, src, sphere, method="exact").gain
    n = src.shape[0]
    bs = np.asarray(bs).reshape(-1, n, 3)
    ex = np.asarray(ex).reshape(-1, n, 3)
    # Local frame per source: radial + two tangential directions.
    nn = np.asarray(nn)
    t1 = np.cross(nn, [0.3, 0.5, 0.8])
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(nn, t1)
    out = {}
    for name, d in (("radial", nn), ("tangential", np.concatenate([t1, t2]))):
        k = len(d) // n
        vb = np.concatenate(
            [np.einsum("esk,sk->es", bs, d[i * n : (i + 1) * n]) for i in range(k)], 1
        )
        ve = np.concatenate(
            [np.einsum("esk,sk->es", ex, d[i * n : (i + 1) * n]) for i in range(k)], 1
        )
        rel = np.linalg.norm(vb - ve, axis=0) / np.linalg.norm(ve, axis=0)
        out[name] = (np.median(rel), rel.max())
    return out


def main():
    models = {
        "3-shell default (67/70/75 mm, 0.33/0.0042/0.33 S/m)": SphereModel(),
        "MNE 4-shell default (0.90/0.92/0.97/1 x 90 mm)": SphereModel.mne_default(),
    }
    for label, sph in models.items():
        fit = berg_scherg_params(sph)
        print(
            f"{label}: mu = {np.round(np.asarray(fit.mu), 5)}, residual = {float(fit.residual):.3g}"
        )
        r_in, r_out = float(sph.radii[0]), float(sph.radii[-1])
        for ecc in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
            e = errors(sph, ecc)
            print(
                f"  |r0|/r_inner = {ecc:4.2f} (|r0|/R = {ecc * r_in / r_out:5.3f}):"
                f"  radial median {100 * e['radial'][0]:.4f} % max {100 * e['radial'][1]:.4f} %;"
                f"  tangential median {100 * e['tangential'][0]:.4f} % max {100 * e['tangential'][1]:.4f} %"
            )


if __name__ == "__main__":
    main()
