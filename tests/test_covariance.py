"""Covariance estimators: scikit-learn / NumPy parity, jit, vmap, gradient, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.covariance as sk  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st

from exg_jax.covariance import NoiseCov, compute_covariance, compute_covariance_epochs


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))


@settings(max_examples=5)
@given(st.integers(0, 10_000), st.integers(3, 12), st.integers(5, 60))
def test_matches_sklearn(seed, n_ch, n_t):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_ch, n_t)) * 1e-6 + rng.standard_normal((n_ch, 1)) * 1e-5
    emp = sk.empirical_covariance(x.T)
    # measured <= 8.6e-16 (float64 rounding); headroom for random shapes and scales
    tol = 2e-14
    assert _rel(compute_covariance(x, "empirical").data, emp) <= tol
    assert (
        _rel(compute_covariance(x, "ledoit_wolf").data, sk.ledoit_wolf(x.T)[0]) <= tol
    )
    assert _rel(compute_covariance(x, "diagonal").data, np.diag(np.diag(emp))) <= tol
    shr = sk.shrunk_covariance(emp, shrinkage=0.3)
    assert _rel(compute_covariance(x, "ledoit_wolf", shrinkage=0.3).data, shr) <= tol
    assert compute_covariance(x).nfree == n_t


def test_epochs_pooling_matches_numpy_and_sklearn():
    rng = np.random.default_rng(1)
    ep = rng.standard_normal((4, 6, 30)) + rng.standard_normal((4, 6, 1)) * 5
    xc = ep - ep.mean(axis=2, keepdims=True)
    pooled = np.concatenate(list(xc), axis=1)
    ref = pooled @ pooled.T / pooled.shape[1]
    got = compute_covariance_epochs(ep, "empirical")
    # measured 2.0e-16 and 0
    assert _rel(got.data, ref) <= 1e-14 and got.nfree == 120
    lw = sk.ledoit_wolf(pooled.T, assume_centered=True)[0]
    assert _rel(compute_covariance_epochs(ep).data, lw) <= 1e-14


def test_jit_vmap_grad_and_psd():
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((3, 5, 40))
    f = jax.jit(lambda x: compute_covariance(x, "ledoit_wolf").data)
    loop = np.stack([compute_covariance(x, "ledoit_wolf").data for x in xs])
    np.testing.assert_allclose(jax.vmap(f)(jnp.asarray(xs)), loop, rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(loop) > 0)  # shrinkage makes it positive definite

    def loss(t):
        return jnp.sum(
            compute_covariance(
                jnp.asarray(xs[0]) * (1 + t * jnp.arange(40.0) / 40)
            ).data
            ** 2
        )

    g = float(jax.grad(loss)(0.1))
    h = 1e-6
    fd = (float(loss(0.1 + h)) - float(loss(0.1 - h))) / (2 * h)
    assert abs(g - fd) <= 1e-8 * abs(fd)  # measured 6.7e-11


def test_bad_input():
    x = np.random.default_rng(3).standard_normal((4, 10))
    with pytest.raises(ValueError, match="'robust'"):
        compute_covariance(x, "robust")
    with pytest.raises(ValueError, match="shrinkage"):
        compute_covariance(x, "ledoit_wolf", shrinkage=1.5)
    with pytest.raises(ValueError, match="shrinkage"):
        compute_covariance(x, "empirical", shrinkage=0.5)
    x[1, 1] = np.nan
    with pytest.raises(ValueError, match="data"):
        compute_covariance(x)
    with pytest.raises(ValueError, match="epochs"):
        compute_covariance_epochs(x[None])
    with pytest.raises(ValueError, match="3-D"):
        compute_covariance_epochs(np.zeros((4, 10)))


def test_nfree_is_a_data_leaf():
    """``nfree`` is an integer array leaf (None when unknown): no recompilation."""
    x = np.random.default_rng(4).standard_normal((3, 10))
    cov = compute_covariance(x)
    assert jnp.issubdtype(cov.nfree.dtype, jnp.integer) and cov.nfree.shape == ()
    assert NoiseCov(jnp.eye(3)).nfree is None
    assert int(NoiseCov(jnp.eye(3), 7).nfree) == 7  # positional, MNE's cov["nfree"]
    assert len(jax.tree_util.tree_leaves(cov)) == 2
    traces = []

    @jax.jit
    def trace(c):
        traces.append(None)
        return jnp.trace(c.data) * c.nfree

    assert float(trace(NoiseCov(jnp.eye(3), 10))) == 30.0
    assert float(trace(NoiseCov(jnp.eye(3), 20))) == 60.0
    assert len(traces) == 1
    for bad in (2.5, True, np.array(2.0), "10"):
        with pytest.raises(TypeError, match="nfree"):
            NoiseCov(jnp.eye(3), bad)
