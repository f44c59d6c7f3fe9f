"""Tests for exg_jax.eloreta: the eLORETA weight fit, its implicit gradient and MNE parity."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exg_jax.eloreta import (
    EloretaOptions,
    EloretaStatus,
    _make_config,
    _solve_weights,
    _sym_pow,
    _times_r_sqrt,
    _weights_sqrt,
    eloreta_weights,
)

# (n_orient, force_equal, loose)
CASES = [
    (1, None, None),
    (3, False, None),
    (3, True, None),
    (3, None, 0.2),
    (3, True, 0.2),
]
CASE_IDS = ["fixed", "free-indep", "free-equal", "loose0.2-indep", "loose0.2-equal"]


# --------------------------------------------------------------------------- #
# An independent NumPy re-implementation of the reference iteration
# --------------------------------------------------------------------------- #
def _np_psd_pow(m, power):
    w, u = np.linalg.eigh(m)
    cut = w <= w[..., -1:] * 1e-7
    w = np.where(cut, 1.0, w)
    f = np.where(cut, 0.0, w**power)
    return np.einsum("...ij,...j,...kj->...ik", u, f, u)


def np_eloreta(G, n_orient, std, lam2, eps, max_iter, force_equal, n_nzero=None):
    """Plain-loop eLORETA weights; returns (R normalised on G/std, n_iter, delta)."""
    n_chan, n_col = G.shape
    n_src = n_col // n_orient
    n_nzero = n_chan if n_nzero is None else n_nzero
    std = np.ones(n_col) if std is None else std
    Gb = G * std
    blocks = n_orient == 3 and not force_equal

    def grgt(Gm, R):
        if blocks:
            Gs = Gm.reshape(n_chan, n_src, 3)
            return np.einsum("cni,nij,dnj->cd", Gs, R, Gs)
        return (Gm * R) @ Gm.T

    def norm(Gm, R):
        return R * (n_nzero / np.trace(grgt(Gm, R)))

    if blocks:
        s3 = std.reshape(n_src, 3)
        prior = s3[:, :, None] * s3[:, None, :]
    else:
        prior = std**2
    R = norm(Gb, prior.copy())
    n_iter, delta = 0, np.inf
    for _ in range(max_iter):
        w, u = np.linalg.eigh(grgt(Gb, R))
        idx = np.argsort(np.abs(w))[::-1][:n_nzero]
        N = (u[:, idx] / (np.abs(w[idx]) + lam2)) @ u[:, idx].T
        if n_orient == 1:
            new = 1.0 / np.sqrt(np.einsum("ck,cd,dk->k", Gb, N, Gb))
        else:
            Gs = Gb.reshape(n_chan, n_src, 3)
            M = np.einsum("cni,cd,dnj->nij", Gs, N, Gs)
            if force_equal:
                roots = np.sqrt(np.clip(np.linalg.eigvalsh(M), 0, None))
                new = np.repeat(1.0 / roots.mean(-1), 3)
            else:
                new = _np_psd_pow(M, -0.5)
        new = norm(Gb, new * prior)
        delta = np.linalg.norm(new - R) / np.linalg.norm(R)
        R = new
        n_iter += 1
        if delta < eps:
            break
    return norm(G, R), n_iter, delta


def _np_kernel(G, R, n_orient, force_equal, lam2):
    """eLORETA kernel R Gᵀ (G R Gᵀ + λ² I)⁻¹ (whitened)."""
    if n_orient == 3 and not force_equal:
        n_src = R.shape[0]
        Rf = np.zeros((3 * n_src, 3 * n_src))
        for s in range(n_src):
            Rf[3 * s : 3 * s + 3, 3 * s : 3 * s + 3] = R[s]
    else:
        Rf = np.diag(R)
    C = G @ Rf @ G.T
    return Rf @ G.T @ np.linalg.inv(C + lam2 * np.eye(C.shape[0]))


def _problem(case, n_chan=12, n_src=25, seed=0):
    n_orient, force_equal, loose = case
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n_chan, n_src * n_orient))
    std = None
    if loose is not None:
        std = np.tile([np.sqrt(loose), np.sqrt(loose), 1.0], n_src)
    return G, std


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_weights_match_numpy_reference(case):
    n_orient, force_equal, _ = case
    G, std = _problem(case)
    lam2 = 0.05
    opts = EloretaOptions(eps=1e-9, max_iter=300, force_equal=force_equal)
    R_ref, it_ref, delta_ref = np_eloreta(
        G, n_orient, std, lam2, 1e-9, 300, force_equal
    )
    R, status = eloreta_weights(
        G, lam2, n_orient=n_orient, source_std=std, options=opts
    )
    assert isinstance(status, EloretaStatus)
    assert int(status.n_iter) == it_ref
    assert bool(status.converged)
    np.testing.assert_allclose(float(status.delta), delta_ref, rtol=1e-3)
    np.testing.assert_allclose(
        np.asarray(R), R_ref, rtol=1e-10, atol=1e-12 * np.abs(R_ref).max()
    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kernel_matches_mne_compute_eloreta(case):
    """The SVD-form operator built from our weights equals MNE's on the same whitened gain."""
    from mne.minimum_norm._eloreta import _compute_eloreta

    n_orient, force_equal, _ = case
    G, std = _problem(case, seed=1)
    lam2 = 0.1
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    inv = dict(
        eigen_fields=dict(data=U.T.copy()),
        sing=s.copy(),
        eigen_leads=dict(data=Vt.T.copy()),
        source_cov=dict(data=np.ones(G.shape[1])),
        orient_prior=None if std is None else dict(data=std**2),
        noise_cov=dict(eig=np.ones(G.shape[0]), diag=False),
        nsource=G.shape[1] // n_orient,
        eigen_leads_weighted=False,
    )
    _compute_eloreta(inv, lam2, dict(eps=1e-10, max_iter=500, force_equal=force_equal))
    K_mne = inv["eigen_leads"]["data"] @ (
        inv["reginv"][:, None] * inv["eigen_fields"]["data"]
    )

    opts = EloretaOptions(eps=1e-10, max_iter=500, force_equal=force_equal)
    R, _ = eloreta_weights(G, lam2, n_orient=n_orient, source_std=std, options=opts)
    K = _np_kernel(G, np.asarray(R), n_orient, force_equal, lam2)
    assert np.abs(K - K_mne).max() <= 1e-9 * np.abs(K_mne).max()


def test_rank_truncation_matches_reference():
    """n_nzero < n_chan: only the leading eigen-space of G R Gᵀ is inverted."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((10, 60))
    G -= G.mean(0)  # rank 9, like an average-referenced unwhitened gain
    opts = EloretaOptions(eps=1e-9, max_iter=300, force_equal=False)
    R_ref, it_ref, _ = np_eloreta(G, 3, None, 0.1, 1e-9, 300, False, n_nzero=9)
    R, status = eloreta_weights(G, 0.1, n_orient=3, n_nzero=9, options=opts)
    assert int(status.n_iter) == it_ref
    np.testing.assert_allclose(
        np.asarray(R), R_ref, rtol=1e-8, atol=1e-10 * np.abs(R_ref).max()
    )


def test_nonconvergence_warns_and_status_says_so():
    G, _ = _problem(CASES[1])
    opts = EloretaOptions(eps=1e-12, max_iter=2, force_equal=False)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _, status = eloreta_weights(G, 0.1, n_orient=3, options=opts)
    assert int(status.n_iter) == 2
    assert not bool(status.converged)
    assert float(status.delta) >= 1e-12
    # converged: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, status = eloreta_weights(
            G, 0.1, n_orient=3, options=EloretaOptions(1e-6, 200)
        )
    assert bool(status.converged)


def test_jit_equals_eager_and_no_recompile_for_lambda2():
    G, _ = _problem(CASES[1])
    opts = EloretaOptions(eps=1e-8, max_iter=100)
    R_eager, st = eloreta_weights(G, 0.1, n_orient=3, options=opts)
    f = jax.jit(lambda g, lam: eloreta_weights(g, lam, n_orient=3, options=opts))
    R_jit, st_jit = f(jnp.asarray(G), 0.1)
    np.testing.assert_allclose(
        np.asarray(R_jit), np.asarray(R_eager), rtol=1e-12, atol=1e-14
    )
    assert int(st_jit.n_iter) == int(st.n_iter)
    f(jnp.asarray(G), 0.2)
    assert f._cache_size() == 1


def test_vmap_over_lambda2_equals_loop():
    G, _ = _problem(CASES[0])
    opts = EloretaOptions(eps=1e-9, max_iter=200)
    lams = jnp.array([0.01, 0.1, 1.0])
    Rb, stb = jax.vmap(lambda lam: eloreta_weights(G, lam, n_orient=1, options=opts))(
        lams
    )
    for i, lam in enumerate(lams):
        R, st = eloreta_weights(G, float(lam), n_orient=1, options=opts)
        np.testing.assert_allclose(np.asarray(Rb[i]), np.asarray(R), rtol=1e-9)
        assert bool(stb.converged[i])


def test_bad_options_raise():
    with pytest.raises(ValueError, match="eps"):
        EloretaOptions(eps=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        EloretaOptions(max_iter=0)
    with pytest.raises(ValueError, match="force_equal"):
        EloretaOptions(force_equal="yes")
    G, _ = _problem(CASES[0])
    with pytest.raises(ValueError, match="lambda2"):
        eloreta_weights(G, -0.1, n_orient=1)
    with pytest.raises(ValueError, match="gain"):
        eloreta_weights(np.full((3, 6), np.nan), 0.1, n_orient=1)


# --------------------------------------------------------------------------- #
# Gradients (implicit differentiation of the fixed point)
# --------------------------------------------------------------------------- #
def _kernel_loss_fn(case, std, y, weights):
    n_orient, force_equal, _ = case
    n_chan = y.shape[0]
    cfg = _make_config(n_orient, n_chan, EloretaOptions(1e-13, 2000, force_equal))
    std = jnp.ones(weights.shape[0]) if std is None else jnp.asarray(std)

    def loss(G, lam):
        R, _ = _solve_weights(G, std, lam, cfg)
        rs = _weights_sqrt(R, cfg)
        u, s, vt = jnp.linalg.svd(_times_r_sqrt(G, rs, cfg), full_matrices=False)
        leads = _times_r_sqrt(vt, rs, cfg).T
        x = leads @ ((s / (s**2 + lam)) * (u.T @ y))
        return jnp.sum(weights * x**2)

    return loss


@pytest.mark.parametrize(
    "case", [CASES[0], CASES[1], CASES[3]], ids=[CASE_IDS[0], CASE_IDS[1], CASE_IDS[3]]
)
def test_grad_lambda2_and_gain_vs_finite_differences(case):
    G, std = _problem(case, n_chan=10, n_src=15, seed=2)
    rng = np.random.default_rng(5)
    y = jnp.asarray(rng.standard_normal(G.shape[0]))
    weights = jnp.asarray(rng.uniform(0.5, 1.5, G.shape[1]))
    loss = _kernel_loss_fn(case, std, y, weights)
    G = jnp.asarray(G)
    D = jnp.asarray(rng.standard_normal(G.shape))
    h = 1e-5

    @jax.jit
    def check(G, lam):
        gG, gl = jax.grad(loss, argnums=(0, 1))(G, lam)
        fd_l = (loss(G, lam + h) - loss(G, lam - h)) / (2 * h)
        fd_G = (loss(G + h * D, lam) - loss(G - h * D, lam)) / (2 * h)
        return gG, gl, fd_l, jnp.sum(gG * D), fd_G

    gG, gl, fd_l, gD, fd_G = check(G, 0.1)
    assert np.isfinite(np.asarray(gG)).all()
    assert abs(gl - fd_l) <= 1e-6 * abs(fd_l)
    assert abs(gD - fd_G) <= 1e-6 * abs(fd_G)


def test_sym_pow_gradient_finite_on_degenerate_blocks():
    """sqrt / inverse sqrt of 3x3 blocks with repeated eigenvalues: finite, correct derivatives."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    m = jnp.asarray(np.stack([Q @ np.diag([2.0, 2.0, 0.5]) @ Q.T, np.eye(3) * 1.5]))
    dm = rng.standard_normal((2, 3, 3))
    dm = jnp.asarray(dm + np.swapaxes(dm, 1, 2))
    h = 1e-6
    for p in (0.5, -0.5):

        @jax.jit
        def check(m, dm, p=p):
            f = lambda a: _sym_pow(a, p)  # noqa: E731
            _, jvp = jax.jvp(f, (m,), (dm,))
            fd = (f(m + h * dm) - f(m - h * dm)) / (2 * h)
            g = jax.grad(lambda a: jnp.sum(f(a) ** 2))(m)
            return jvp, fd, g

        jvp, fd, g = check(m, dm)
        np.testing.assert_allclose(
            np.asarray(jvp), np.asarray(fd), rtol=1e-6, atol=1e-8
        )
        assert np.isfinite(np.asarray(g)).all()


def _unused(x):  # keep eqx import used for future operator tests
    return eqx.is_array(x)
