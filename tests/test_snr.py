"""Tests for exg_jax.snr.estimate_snr against mne.minimum_norm.estimate_snr."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exg_jax.covariance import NoiseCov
from exg_jax.forward import ForwardOperator
from exg_jax.inverse import make_inverse_operator
from exg_jax.snr import _chi2_isf, estimate_snr


@pytest.fixture(scope="module")
def problem():
    import mne
    from _oracle import mne_sphere_forward

    info, _, fwd = mne_sphere_forward("biosemi32", 1, sphere="auto")
    rng = np.random.default_rng(1)
    raw = mne.io.RawArray(rng.normal(size=(32, 2000)) * 1e-6, info)
    raw.set_eeg_reference(projection=True)
    cov = mne.compute_raw_covariance(raw)
    inv_mne = mne.minimum_norm.make_inverse_operator(
        raw.info, fwd, cov, loose=1.0, depth=0.8
    )
    F = ForwardOperator.from_mne(fwd, reference=None)
    inv = make_inverse_operator(
        F, NoiseCov(jnp.asarray(cov.data), int(cov["nfree"])), 0.8, avg_ref_proj=True
    )
    # Evoked data: two oscillating dipoles of growing amplitude plus noise, so
    # that the SNR spans values below 1 (snr_est = 0) up to well above.
    G = fwd["sol"]["data"]
    t = np.linspace(0.0, 1.0, 200)
    amp = np.zeros((G.shape[1], t.size))
    amp[30] = 400e-9 * t * np.sin(2 * np.pi * 3 * t)
    amp[100] = 300e-9 * t * np.cos(2 * np.pi * 5 * t)
    data = G @ amp + rng.normal(size=(32, t.size)) * 0.5e-6
    return dict(mne=mne, info=raw.info, inv_mne=inv_mne, inv=inv, data=data)


@pytest.mark.parametrize("nave", [1, 4])
def test_estimate_snr_matches_mne(problem, nave):
    mne = problem["mne"]
    ev = mne.EvokedArray(problem["data"], problem["info"], nave=nave)
    snr_ref, est_ref = mne.minimum_norm.estimate_snr(ev, problem["inv_mne"])
    snr, est, status = estimate_snr(
        problem["data"], problem["inv"], nave, return_status=True
    )
    assert bool(status.converged)
    # measured: snr 1.0e-15 relative, snr_est identical
    np.testing.assert_allclose(snr, snr_ref, rtol=1e-14)
    np.testing.assert_allclose(est, est_ref, rtol=1e-14, atol=0)
    # The λ² search really ran: zeros (snr <= 1), the start value and values
    # reached only after many 1 % steps.
    assert np.any(est_ref == 0) and np.any(est_ref > 1.0)


def test_chi2_isf_matches_scipy():
    from scipy.stats import chi2

    for dof in (1, 31, 255):
        got = float(_chi2_isf(1e-3, dof, jnp.float64))
        assert abs(got - chi2.isf(1e-3, dof)) / chi2.isf(1e-3, dof) < 1e-10


def test_jit_vmap_grad(problem):
    inv, data = problem["inv"], jnp.asarray(problem["data"])
    f = eqx.filter_jit(lambda d, i: estimate_snr(d, i, 2))
    snr, est = estimate_snr(data, inv, 2)
    snr_j, est_j = f(data, inv)
    np.testing.assert_allclose(snr_j, snr, rtol=1e-13)
    np.testing.assert_allclose(est_j, est, rtol=1e-13)
    batch = jnp.stack([data, 2 * data, 0.5 * data])
    snr_v, est_v = jax.vmap(lambda d: estimate_snr(d, inv, 2))(batch)
    for k in range(3):
        s, e = estimate_snr(batch[k], inv, 2)
        np.testing.assert_allclose(snr_v[k], s, rtol=1e-13)
        np.testing.assert_allclose(est_v[k], e, rtol=1e-13)
    loss = lambda d: jnp.sum(estimate_snr(d, inv)[0] ** 2)  # noqa: E731
    g = jax.grad(loss)(data)
    rng = np.random.default_rng(0)
    v = jnp.asarray(rng.normal(size=data.shape)) * 1e-6
    h = 1e-3
    fd = (loss(data + h * v) - loss(data - h * v)) / (2 * h)
    assert abs(float(jnp.vdot(g, v)) - float(fd)) / abs(float(fd)) < 1e-8  # 9.3e-11


def test_snr_properties(problem):
    inv, data = problem["inv"], jnp.asarray(problem["data"])
    s1, e1 = estimate_snr(data, inv, 1)
    s4, _ = estimate_snr(data, inv, 4)
    # Averaging 4 trials halves the noise amplitude: the SNR doubles.
    np.testing.assert_allclose(s4, 2 * s1, rtol=1e-12)
    # snr_est is 0 exactly where the whitened RMS is <= 1, and never above
    # the start value where the χ² test passes at once.
    np.testing.assert_array_equal(np.asarray(e1) == 0, np.asarray(s1) <= 1)
    # Whitened noise has unit variance per effective channel: snr² ≈ 1.
    rng = np.random.default_rng(7)
    L = np.linalg.cholesky(np.asarray(inv.noise_cov.data) + 1e-20 * np.eye(32))
    noise = L @ rng.normal(size=(32, 4000))
    s_noise, e_noise = estimate_snr(noise, inv)
    assert abs(np.mean(np.asarray(s_noise) ** 2) - 1.0) < 0.05


def test_validation(problem):
    inv = problem["inv"]
    with pytest.raises(ValueError, match="channels"):
        estimate_snr(np.ones((31, 5)), inv)
    with pytest.raises(ValueError, match="nave"):
        estimate_snr(np.ones((32, 5)), inv, 0)
    with pytest.raises(ValueError, match="non-finite"):
        estimate_snr(np.full((32, 5), np.nan), inv)
