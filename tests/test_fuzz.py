"""Fuzz: finite, valid inputs of random shapes and scales give finite, non-zero maps.

For float32 and float64, random electrode subsets, source spaces, noise and
data scales (V, many decades beyond physiology), methods, orientations,
``loose``, ``depth`` and λ², the whole pipeline (forward → covariance →
inverse → apply) must never return NaN, Inf or an all-zero map for non-zero
data: such inputs are valid, so a silent zero would look like "no activity".
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import exg_jax as ex

SPHERE = ex.SphereModel()
_, ELEC = ex.standard_montage("standard_1010", radius=0.075, center=SPHERE.center)
ELEC = np.asarray(ELEC)
SOURCES = {
    n: ex.ico_source_space(n, radius=0.055, center=SPHERE.center) for n in (0, 1)
}


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from(["float32", "float64"]))
    # decades of the noise level in V: the covariance (V²) stays normal in the dtype
    lo, hi = (-15, 5) if dtype == "float32" else (-140, 140)
    return dict(
        dtype=dtype,
        n_chan=draw(st.sampled_from([6, 16, 32])),
        ico=draw(st.sampled_from([0, 1])),
        noise_exp=draw(st.integers(lo, hi)),
        snr=draw(st.floats(0.1, 100.0)),
        n_times=draw(st.integers(1, 12)),
        method=draw(st.sampled_from(["MNE", "dSPM", "sLORETA", "eLORETA"])),
        pick_ori=draw(st.sampled_from([None, "normal", "vector"])),
        loose=draw(st.sampled_from([1.0, 0.2])),
        depth=draw(st.sampled_from([None, 0.8])),
        lambda2=draw(st.sampled_from([1e-6, 1 / 9, 1.0, 1e3])),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=8)
@given(problems())
def test_pipeline_finite_and_nonzero(p):
    dt = np.dtype(p["dtype"])
    rng = np.random.default_rng(p["seed"])
    idx = np.sort(rng.choice(len(ELEC), p["n_chan"], replace=False))
    src_pos, src_nn = SOURCES[p["ico"]]
    fwd = ex.make_sphere_forward_free(
        jnp.asarray(ELEC[idx], dt),
        jnp.asarray(src_pos, dt),
        ex.SphereModel(
            jnp.asarray(SPHERE.radii, dt),
            jnp.asarray(SPHERE.conductivities, dt),
            jnp.asarray(SPHERE.center, dt),
        ),
        src_nn=jnp.asarray(src_nn, dt),
    )
    gain = np.asarray(fwd.gain, np.float64)
    noise_level = 10.0 ** p["noise_exp"]
    noise = rng.standard_normal((p["n_chan"], 400)) * noise_level
    cov = ex.compute_covariance(jnp.asarray(noise, dt))
    # data: one active source at an amplitude giving the drawn SNR, plus noise
    col = rng.integers(gain.shape[1])
    sig = gain[:, col] / np.linalg.norm(gain[:, col]) * noise_level * p["snr"]
    wave = np.cos(np.arange(p["n_times"]) + 0.3)
    data = (
        sig[:, None] * wave[None, :]
        + 0.1 * rng.standard_normal((p["n_chan"], p["n_times"])) * noise_level
    )
    inv = ex.make_inverse_operator(fwd, cov, depth=p["depth"], loose=p["loose"])
    stc = ex.apply_inverse(
        jnp.asarray(data, dt),
        inv,
        p["lambda2"],
        ex.eLORETA(throw=False) if p["method"] == "eLORETA" else p["method"],
        pick_ori=p["pick_ori"],
    )
    out = np.asarray(stc.data)
    assert out.dtype == dt
    assert np.all(np.isfinite(out)), p
    assert np.any(out != 0), p
    # every source sees some signal (no silent zero rows) unless the data are
    # exactly orthogonal to it, which random data are not
    per_src = np.abs(out).reshape(out.shape[0], -1).max(axis=1)
    assert np.all(per_src > 0), p
