"""Tests for exg_jax.snr.estimate_snr against mne.minimum_norm.estimate_snr."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exg_jax.covariance import NoiseCov
from exg_jax.interop import forward_from_mne
from exg_jax.inverse import make_inverse_operator
from exg_jax.snr import SnrEstimate, _chi2_isf, estimate_snr
from exg_jax.status import RESULTS, SolverStatus


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
    F = forward_from_mne(fwd, reference=None)
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
    snr, est, status = estimate_snr(problem["data"], problem["inv"], nave)
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
    snr, est, status = estimate_snr(data, inv, 2)
    snr_j, est_j, status_j = f(data, inv)
    np.testing.assert_allclose(snr_j, snr, rtol=1e-13)
    np.testing.assert_allclose(est_j, est, rtol=1e-13)
    assert int(status_j.iterations) == int(status.iterations)
    batch = jnp.stack([data, 2 * data, 0.5 * data])
    snr_v, est_v, status_v = jax.vmap(lambda d: estimate_snr(d, inv, 2))(batch)
    assert status_v.iterations.shape == (3,) and status_v.change.shape == (3,)
    for k in range(3):
        s, e, st_ = estimate_snr(batch[k], inv, 2)
        assert int(status_v.iterations[k]) == int(st_.iterations)
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
    s1, e1, _ = estimate_snr(data, inv, 1)
    s4 = estimate_snr(data, inv, 4).snr
    # Averaging 4 trials halves the noise amplitude: the SNR doubles.
    np.testing.assert_allclose(s4, 2 * s1, rtol=1e-12)
    # snr_est is 0 exactly where the whitened RMS is <= 1, and never above
    # the start value where the χ² test passes at once.
    np.testing.assert_array_equal(np.asarray(e1) == 0, np.asarray(s1) <= 1)
    # Whitened noise has unit variance per effective channel: snr² ≈ 1.
    rng = np.random.default_rng(7)
    L = np.linalg.cholesky(np.asarray(inv.noise_cov.data) + 1e-20 * np.eye(32))
    noise = L @ rng.normal(size=(32, 4000))
    s_noise = estimate_snr(noise, inv).snr
    assert abs(np.mean(np.asarray(s_noise) ** 2) - 1.0) < 0.05


def test_validation(problem):
    inv = problem["inv"]
    with pytest.raises(ValueError, match="channels"):
        estimate_snr(np.ones((31, 5)), inv)
    with pytest.raises(ValueError, match="nave"):
        estimate_snr(np.ones((32, 5)), inv, 0)
    with pytest.raises(ValueError, match="non-finite"):
        estimate_snr(np.full((32, 5), np.nan), inv)
    with pytest.raises(TypeError, match="throw"):
        estimate_snr(np.ones((32, 5)), inv, throw="yes")


def test_status_fields(problem):
    out = estimate_snr(problem["data"], problem["inv"])
    assert isinstance(out, SnrEstimate) and isinstance(out.status, SolverStatus)
    st = out.status
    assert st.result == RESULTS.successful and bool(st.converged)
    assert st.iterations.shape == () and jnp.issubdtype(
        st.iterations.dtype, jnp.integer
    )
    # the λ² search really ran (snr_est > 1 needs many 1 % steps), within 1000
    assert 1 < int(st.iterations) < 1000
    assert st.change.shape == () and st.change.dtype == out.snr.dtype
    assert float(st.change) == 0.0 and st.stats == {}


# 30x the evoked data: about a third of the time points need λ² below the
# grid's end 10 * 0.99**1000 (SNR above ~48), so the search cannot converge.
LOUD = 30.0


def test_not_converged_raises_by_default(problem):
    data = LOUD * problem["data"]
    with pytest.raises(RuntimeError, match="1000 iterations.*SNR above ~48"):
        estimate_snr(data, problem["inv"])
    f = eqx.filter_jit(lambda d, i: estimate_snr(d, i))
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge"):
        jax.block_until_ready(f(jnp.asarray(data), problem["inv"]))


def test_not_converged_throw_false_warns(problem):
    data = LOUD * problem["data"]
    with pytest.warns(RuntimeWarning, match="1000 iterations"):
        snr, est, st = estimate_snr(data, problem["inv"], throw=False)
    assert not bool(st.converged) and st.result == RESULTS.max_steps_reached
    assert int(st.iterations) == 1000 and 0.0 < float(st.change) < 1.0
    # the unconverged points keep the last λ² tried: snr_est = 1 / sqrt(10 * 0.99**1000)
    np.testing.assert_allclose(np.max(np.asarray(est)), 1 / np.sqrt(10 * 0.99**1000))
    # traced: no warning, no error, the status says it (batched under vmap)
    g = eqx.filter_jit(
        jax.vmap(lambda d, i: estimate_snr(d, i, throw=False), in_axes=(0, None))
    )
    batch = jnp.stack([jnp.asarray(problem["data"]), jnp.asarray(data)])
    _, _, st_v = g(batch, problem["inv"])
    np.testing.assert_array_equal(np.asarray(st_v.converged), [True, False])
    np.testing.assert_allclose(st_v.change[1], st.change)


def test_nan_operator_is_nan_not_failure(problem):
    """NaN in gives NaN out and is not a convergence failure (throw=True)."""
    inv = problem["inv"]
    ef = inv.eigen_fields.at[0].set(jnp.nan)
    bad = eqx.tree_at(lambda i: i.eigen_fields, inv, ef)
    snr, est, st = estimate_snr(problem["data"], bad)  # eager: no error
    assert bool(st.converged) and float(st.change) == 0.0
    s = np.asarray(snr)
    # finite snr (the whitener is fine) but a NaN fit: snr_est NaN where
    # the search ran (snr > 1), 0 elsewhere
    assert np.all(np.isfinite(s))
    np.testing.assert_array_equal(np.isnan(np.asarray(est)), s > 1)
    f = eqx.filter_jit(lambda d: estimate_snr(d, inv))
    nan_data = jnp.asarray(problem["data"]).at[:, :3].set(jnp.nan)
    snr_t, est_t, st_t = f(nan_data)  # traced NaN data: no error either
    assert bool(st_t.converged)
    assert np.all(np.isnan(np.asarray(snr_t)[:3])) and np.all(np.isnan(est_t[:3]))
    assert not np.any(np.isnan(np.asarray(est_t)[3:]))
