"""Tests for exg_jax.eloreta: the eLORETA weight fit, its implicit gradient and MNE parity."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exg_jax.eloreta import (
    _config,
    _solve_weights,
    _times_r_sqrt,
    _weights_sqrt,
    eLORETA,
    eloreta_weights,
)
from exg_jax.status import RESULTS, SolverStatus

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
    R = norm(Gb, prior * np.eye(3) if blocks else prior.copy())
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
    method = eLORETA(eps=1e-9, max_iter=300, force_equal=force_equal)
    R_ref, it_ref, delta_ref = np_eloreta(
        G, n_orient, std, lam2, 1e-9, 300, force_equal
    )
    R, status = eloreta_weights(
        G, lam2, n_orient=n_orient, source_std=std, method=method
    )
    assert isinstance(status, SolverStatus)
    assert int(status.iterations) == it_ref
    assert bool(status.converged) and status.result == RESULTS.successful
    # measured: delta 9.6e-7 relative, R 9.0e-13 relative / 1.5e-15 of max |R|
    np.testing.assert_allclose(float(status.change), delta_ref, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(R), R_ref, rtol=1e-11, atol=1e-14 * np.abs(R_ref).max()
    )


def _duck_operator(G, std, n_orient):
    """The fields of an InverseOperator that ``eLORETA.factors`` reads, from G."""
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    return SimpleNamespace(
        eigen_fields=jnp.asarray(U.T),
        sing=jnp.asarray(s),
        eigen_leads=jnp.asarray(Vt.T),
        source_std=jnp.ones(G.shape[1]),
        orient_prior=None if std is None else jnp.asarray(std**2),
        n_orient=n_orient,
        rank=G.shape[0],
    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_factors_match_mne_compute_eloreta(case):
    """eLORETA().factors give MNE's operator (_compute_eloreta) on the same whitened gain."""
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
    # the settings of test_weights_match_numpy_reference (one compilation)
    _compute_eloreta(inv, lam2, dict(eps=1e-9, max_iter=300, force_equal=force_equal))
    K_mne = inv["eigen_leads"]["data"] @ (
        inv["reginv"][:, None] * inv["eigen_fields"]["data"]
    )

    method = eLORETA(eps=1e-9, max_iter=300, force_equal=force_equal)
    fac, status = method.factors(_duck_operator(G, std, n_orient), jnp.asarray(lam2))
    assert bool(status.converged)
    np.testing.assert_allclose(np.asarray(fac.sing), inv["sing"], rtol=1e-12)
    sing = np.asarray(fac.sing)
    K = np.asarray(fac.leads) @ (
        (sing / (sing**2 + lam2))[:, None] * np.asarray(fac.eigen_fields)
    )
    err = np.abs(K - K_mne).max() / np.abs(K_mne).max()
    assert err <= 1e-13, err  # measured <= 5.7e-15
    # and the weights alone give the same kernel R Gᵀ (G R Gᵀ + λ² I)⁻¹
    R, _ = eloreta_weights(G, lam2, n_orient=n_orient, source_std=std, method=method)
    K = _np_kernel(G, np.asarray(R), n_orient, force_equal, lam2)
    err = np.abs(K - K_mne).max() / np.abs(K_mne).max()
    assert err <= 1e-13, err


def test_rank_truncation_matches_reference():
    """n_nzero < n_chan: only the leading eigen-space of G R Gᵀ is inverted."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((10, 60))
    G -= G.mean(0)  # rank 9, like an average-referenced unwhitened gain
    method = eLORETA(eps=1e-9, max_iter=300, force_equal=False)
    R_ref, it_ref, _ = np_eloreta(G, 3, None, 0.1, 1e-9, 300, False, n_nzero=9)
    R, status = eloreta_weights(G, 0.1, n_orient=3, n_nzero=9, method=method)
    assert int(status.iterations) == it_ref
    # measured 1.5e-13 relative, 1.4e-15 of max |R|
    np.testing.assert_allclose(
        np.asarray(R), R_ref, rtol=2e-12, atol=2e-14 * np.abs(R_ref).max()
    )


def test_nonconvergence_warns_and_status_says_so():
    G, _ = _problem(CASES[1])
    method = eLORETA(eps=1e-12, max_iter=2, force_equal=False, throw=False)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _, status = eloreta_weights(G, 0.1, n_orient=3, method=method)
    # default throw=True: an error naming the iterations, max_iter / eps and the way out
    with pytest.raises(
        RuntimeError, match=r"after 2 iterations.*eps=1e-12.*max_iter=2.*throw=False"
    ):
        eloreta_weights(G, 0.1, n_orient=3, method=eLORETA(eps=1e-12, max_iter=2))
    assert int(status.iterations) == 2
    assert not bool(status.converged)
    assert status.result == RESULTS.max_steps_reached
    assert float(status.change) >= 1e-12
    # traced (jit, throw=True): the error lives in the compiled program
    f = jax.jit(
        lambda g: eloreta_weights(
            g, 0.1, n_orient=3, method=eLORETA(eps=1e-12, max_iter=2)
        )[0]
    )
    with pytest.raises(RuntimeError, match="did not converge"):
        jax.block_until_ready(f(jnp.asarray(G)))
    # converged: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, status = eloreta_weights(
            G, 0.1, n_orient=3, method=eLORETA(eps=1e-6, max_iter=200)
        )
    assert bool(status.converged)


def test_jit_equals_eager_and_no_recompile_for_lambda2():
    G, _ = _problem(CASES[1])
    method = eLORETA(eps=1e-8, max_iter=100)
    R_eager, st = eloreta_weights(G, 0.1, n_orient=3, method=method)
    f = jax.jit(lambda g, lam: eloreta_weights(g, lam, n_orient=3, method=method))
    R_jit, st_jit = f(jnp.asarray(G), 0.1)
    np.testing.assert_allclose(
        np.asarray(R_jit), np.asarray(R_eager), rtol=1e-12, atol=1e-14
    )
    assert int(st_jit.iterations) == int(st.iterations)
    f(jnp.asarray(G), 0.2)
    assert f._cache_size() == 1


def test_vmap_over_lambda2_equals_loop():
    G, _ = _problem(CASES[0])
    method = eLORETA(eps=1e-9, max_iter=200)
    lams = jnp.array([0.01, 0.1, 1.0])
    Rb, stb = jax.vmap(lambda lam: eloreta_weights(G, lam, n_orient=1, method=method))(
        lams
    )
    for i, lam in enumerate(lams):
        R, st = eloreta_weights(G, float(lam), n_orient=1, method=method)
        np.testing.assert_allclose(np.asarray(Rb[i]), np.asarray(R), rtol=1e-9)
        assert bool(stb.converged[i])
        assert int(stb.iterations[i]) == int(st.iterations)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="eps"):
        eLORETA(eps=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        eLORETA(max_iter=0)
    with pytest.raises(TypeError, match="force_equal"):
        eLORETA(force_equal="yes")
    with pytest.raises(TypeError, match="throw"):
        eLORETA(throw="no")
    # NumPy scalars are accepted and stored as Python scalars (equal, hashable)
    m = eLORETA(eps=np.float64(1e-6), max_iter=np.int64(20), throw=np.True_)
    assert m == eLORETA() and hash(m) == hash(eLORETA())
    assert type(m.eps) is float and type(m.max_iter) is int
    assert m.for_eager() == eLORETA(throw=False) and m.name == "eLORETA"
    G, _ = _problem(CASES[0])
    with pytest.raises(ValueError, match="lambda2"):
        eloreta_weights(G, -0.1, n_orient=1)
    with pytest.raises(ValueError, match="gain"):
        eloreta_weights(np.full((3, 6), np.nan), 0.1, n_orient=1)
    with pytest.raises(TypeError, match="method"):
        eloreta_weights(G, 0.1, n_orient=1, method="eLORETA")


# --------------------------------------------------------------------------- #
# Gradients (implicit differentiation of the fixed point), reverse and forward
# --------------------------------------------------------------------------- #
def _kernel_loss_fn(case, std, y, weights):
    n_orient, force_equal, _ = case
    n_chan = y.shape[0]
    cfg = _config(
        n_orient, n_chan, eLORETA(eps=1e-13, max_iter=2000, force_equal=force_equal)
    )
    std = jnp.ones(weights.shape[0]) if std is None else jnp.asarray(std)

    def loss(G, lam):
        R, _ = _solve_weights(G, std, lam, cfg)
        rs = _weights_sqrt(R, cfg)
        u, s, vt = jnp.linalg.svd(_times_r_sqrt(G, rs, cfg), full_matrices=False)
        leads = _times_r_sqrt(vt, rs, cfg).T
        x = leads @ ((s / (s**2 + lam)) * (u.T @ y))
        return jnp.sum(weights * x**2)

    return loss


def _grad_problem(case):
    G, std = _problem(case, n_chan=10, n_src=15, seed=2)
    rng = np.random.default_rng(5)
    y = jnp.asarray(rng.standard_normal(G.shape[0]))
    weights = jnp.asarray(rng.uniform(0.5, 1.5, G.shape[1]))
    loss = _kernel_loss_fn(case, std, y, weights)
    D = jnp.asarray(rng.standard_normal(G.shape))
    return loss, jnp.asarray(G), D


def _central_fd(loss, G, lam, D, h):
    """Central differences along D (gain) and along λ², in one vmapped batch."""
    sg = jnp.array([1.0, -1.0, 0.0, 0.0])
    sl = jnp.array([0.0, 0.0, 1.0, -1.0])
    vals = jax.vmap(loss)(G + h * sg[:, None, None] * D, lam + h * sl)
    return (vals[0] - vals[1]) / (2 * h), (vals[2] - vals[3]) / (2 * h)


def _central_fd_calls(f, G, lam, D, h):
    """The same differences from calls of ``f(G, lam)[0]`` (a compiled value)."""
    fd_G = (f(G + h * D, lam)[0] - f(G - h * D, lam)[0]) / (2 * h)
    fd_l = (f(G, lam + h)[0] - f(G, lam - h)[0]) / (2 * h)
    return fd_G, fd_l


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=CASE_IDS[:2])
def test_grad_lambda2_and_gain_vs_finite_differences(case):
    loss, G, D = _grad_problem(case)
    # one compiled function: the loss (for the central differences, at G ± hD
    # and λ² ± h) and its gradient
    check = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    _, (gG, gl) = check(G, 0.1)
    fd_G, fd_l = _central_fd_calls(check, G, 0.1, D, 1e-5)
    gD = jnp.sum(gG * D)
    assert np.isfinite(np.asarray(gG)).all()
    # measured 1.6e-9 and 2.2e-10 (central FD)
    assert abs(gl - fd_l) <= 1e-7 * abs(fd_l)
    assert abs(gD - fd_G) <= 1e-8 * abs(fd_G)


def test_forward_mode_jvp_jacfwd_and_hessian_vs_finite_differences():
    """jax.jvp / jax.jacfwd / jax.hessian through the fixed point (optimistix's
    implicit adjoint is a custom_jvp, so forward mode works; free orientation,
    3 x 3 blocks: the fixed case shares the machinery and costs another compile)."""
    loss, G, D = _grad_problem(CASES[1])
    h = 1e-5

    @jax.jit
    def check(G, lam):
        _, jvp_G = jax.jvp(lambda g: loss(g, lam), (G,), (D,))
        d_lam = jax.jacfwd(loss, argnums=1)(G, lam)
        fd_G, fd_l = _central_fd(loss, G, lam, D, h)
        hess = jax.hessian(loss, argnums=1)(G, lam)
        g = jax.grad(loss, argnums=1)
        fd_h = (g(G, lam + h) - g(G, lam - h)) / (2 * h)
        return jvp_G, fd_G, d_lam, fd_l, hess, fd_h

    jvp_G, fd_G, d_lam, fd_l, hess, fd_h = check(G, 0.1)
    # measured 1.9e-10, 9.6e-10 (as reverse mode) and 2.2e-9 (central FD)
    assert abs(jvp_G - fd_G) <= 1e-8 * abs(fd_G), (jvp_G, fd_G)
    assert abs(d_lam - fd_l) <= 1e-7 * abs(fd_l), (d_lam, fd_l)
    assert np.isfinite(float(hess))
    assert abs(hess - fd_h) <= 1e-6 * abs(fd_h), (hess, fd_h)


# --------------------------------------------------------------------------- #
# Operator level: MNE-Python parity through apply_inverse(method="eLORETA")
# --------------------------------------------------------------------------- #
LAMBDA2 = 1.0 / 9.0
OP_CASES = {
    # name: (make_inverse_operator kwargs, force_equal)
    "free-indep": (dict(loose=1.0, depth=0.8), False),
    "free-equal": (dict(loose=1.0, depth=0.8), True),
    "loose0.2": (dict(loose=0.2, depth=0.8), None),
    "fixed": (dict(loose=0.0, depth=0.8, fixed=True), None),
}


@pytest.fixture(scope="module")
def mne_problem():
    """biosemi32, ico-2 discrete source space with normals, MNE sphere forward, shared gain."""
    import mne
    from _oracle import mne_sphere_forward

    from exg_jax.covariance import NoiseCov
    from exg_jax.interop import forward_from_mne
    from exg_jax.inverse import make_inverse_operator

    mne.set_log_level("ERROR")
    info, _, fwd = mne_sphere_forward("biosemi32", 2)
    fwd = mne.convert_forward_solution(fwd, surf_ori=True)
    rng = np.random.default_rng(0)
    n = len(info.ch_names)
    noise = rng.standard_normal((n, n)) @ rng.standard_normal((n, 2000)) * 1e-6
    cov = noise @ noise.T / noise.shape[1]
    mne_cov = mne.Covariance(cov, info.ch_names, [], [], noise.shape[1])
    data = rng.standard_normal((n, 6)) * 1e-6
    evoked = mne.EvokedArray(data, info, nave=1)
    evoked.set_eeg_reference(projection=True)
    ours = forward_from_mne(fwd, reference=None)
    ops = {}
    for name, (kw, _) in OP_CASES.items():
        inv_m = mne.minimum_norm.make_inverse_operator(evoked.info, fwd, mne_cov, **kw)
        inv_o = make_inverse_operator(
            ours, NoiseCov(jnp.asarray(cov)), avg_ref_proj=True, **kw
        )
        ops[name] = (inv_m, inv_o)
    return dict(mne=mne, evoked=evoked, data=data, ops=ops)


@pytest.mark.parametrize("case", list(OP_CASES))
def test_apply_inverse_eloreta_matches_mne(mne_problem, case):
    from exg_jax.inverse import apply_inverse

    mne = mne_problem["mne"]
    inv_m, inv_o = mne_problem["ops"][case]
    force_equal = OP_CASES[case][1]
    params = dict(eps=1e-8, max_iter=200, force_equal=force_equal)
    with mne.utils.catch_logging() as log:
        ref = mne.minimum_norm.apply_inverse(
            mne_problem["evoked"],
            inv_m,
            LAMBDA2,
            "eLORETA",
            method_params=params,
            verbose="debug",
        ).data
        text = log.getvalue()
    mne_iter = text.count("Iteration ")
    assert mne_iter > 0 and "did not converge" not in text
    stc = apply_inverse(mne_problem["data"], inv_o, LAMBDA2, eLORETA(**params))
    assert stc.method == "eLORETA"
    got = np.asarray(stc.data)
    assert got.shape == ref.shape
    err = np.abs(got - ref).max() / np.abs(ref).max()
    # measured: free / loose <= 4e-13 (float64 rounding); fixed 2.1e-7 (MNE stores
    # its converted fixed gain in float32)
    assert err <= (1e-6 if case == "fixed" else 1e-11), err
    assert int(stc.status.iterations) == mne_iter
    assert bool(stc.status.converged)


def test_factors_leave_operator_unchanged(mne_problem):
    from exg_jax.inverse import apply_inverse

    inv = mne_problem["ops"]["loose0.2"][1]
    before = jax.tree_util.tree_map(np.array, jax.tree_util.tree_leaves(inv))
    fac, status = eLORETA(eps=1e-8, max_iter=200).factors(inv, jnp.asarray(LAMBDA2))
    after = jax.tree_util.tree_leaves(inv)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert fac.leads.shape == inv.eigen_leads.shape
    assert fac.eigen_fields.shape == inv.eigen_fields.shape
    assert fac.sing.shape == inv.sing.shape
    assert bool(status.converged)
    assert eLORETA().noise_weight(fac.sing, LAMBDA2) is None
    with pytest.raises(ValueError, match="lambda2"):
        apply_inverse(mne_problem["data"], inv, 0.0, eLORETA())


def test_jit_equals_eager_and_nonconvergence(mne_problem):
    """imaging_kernel eagerly (for_eager + check) and under jit (throw in the program)."""
    from exg_jax.inverse import apply_inverse, apply_inverse_epochs, imaging_kernel

    inv = mne_problem["ops"]["free-indep"][1]
    method = eLORETA(eps=1e-8, max_iter=200)
    eager = imaging_kernel(inv, LAMBDA2, method)
    jitted = jax.jit(lambda i, lam: imaging_kernel(i, lam, method))(inv, LAMBDA2)
    direct = eqx.filter_jit(lambda i, lam: method.kernel(i, lam, None))(
        inv, jnp.asarray(LAMBDA2)
    )
    for other in (jitted, direct):
        np.testing.assert_allclose(
            np.asarray(other.kernel),
            np.asarray(eager.kernel),
            rtol=1e-10,
            atol=1e-12 * float(jnp.abs(eager.kernel).max()),
        )
        assert int(other.status.iterations) == int(eager.status.iterations)
    assert eager.noise_norm is None and eager.method == "eLORETA"
    lax_ = eLORETA(eps=1e-8, max_iter=3, throw=False)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        k = imaging_kernel(inv, LAMBDA2, lax_)
    st = k.status
    assert int(st.iterations) == 3 and not bool(st.converged)
    assert st.result == RESULTS.max_steps_reached
    strict = eLORETA(eps=1e-8, max_iter=3)
    with pytest.raises(RuntimeError, match=r"after 3 iterations.*max_iter=3"):
        imaging_kernel(inv, LAMBDA2, strict)
    with pytest.raises(RuntimeError, match="did not converge"):
        jax.block_until_ready(
            jax.jit(lambda d: apply_inverse(d, inv, LAMBDA2, strict).data)(
                jnp.asarray(mne_problem["data"])
            )
        )
    # the status reaches the user through apply_inverse_epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stc = apply_inverse_epochs(
            jnp.asarray(mne_problem["data"])[None], inv, LAMBDA2, lax_
        )
    assert int(stc.status.iterations) == 3 and not bool(stc.status.converged)


# --------------------------------------------------------------------------- #
# End to end: SphereModel -> forward -> inverse -> eLORETA, reverse mode
# --------------------------------------------------------------------------- #
def test_grad_sphere_parameters_and_lambda2_end_to_end():
    """SphereModel radii / conductivities and λ² -> forward -> inverse -> eLORETA map."""
    from exg_jax.covariance import NoiseCov
    from exg_jax.inverse import apply_inverse, make_inverse_operator
    from exg_jax.montage import standard_montage
    from exg_jax.source_space import ico_source_space
    from exg_jax.sphere import SphereModel
    from exg_jax.sphere_forward import make_sphere_forward_free

    _, el = standard_montage("standard_1020")
    pos, nn = ico_source_space(1, radius=0.05)
    n = el.shape[0]
    rng = np.random.default_rng(0)
    data = jnp.asarray(rng.standard_normal((n, 4)))
    cov = NoiseCov(jnp.eye(n))
    method = eLORETA(eps=1e-12, max_iter=500)

    def loss(radii, cond, lam):
        sph = SphereModel(radii=radii, conductivities=cond, center=(0.0, 0.0, 0.04))
        fwd = make_sphere_forward_free(
            jnp.asarray(el),
            jnp.asarray(pos),
            sph,
            src_nn=jnp.asarray(nn),
            method="exact",
            n_terms=30,
        )
        inv = make_inverse_operator(fwd, cov, depth=0.8, loose=0.2)
        sol = apply_inverse(data, inv, lam, method).data
        return jnp.sum(sol**2) * 1e-12

    r0 = jnp.array([0.067, 0.070, 0.075])
    c0 = jnp.array([0.33, 0.0042, 0.33])
    lam0 = jnp.asarray(0.1)
    dr = jnp.array([1.0, -0.5, 0.7]) * 1e-3
    dc = jnp.array([0.3, -0.5, 0.2]) * c0
    h = 1e-5

    # one compiled function: the loss (for the central differences, at the
    # four shifted points) and its gradient
    check = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    _, (gr, gc, gl) = check(r0, c0, lam0)
    gd = jnp.sum(gr * dr) + jnp.sum(gc * dc)
    fd = (
        check(r0 + h * dr, c0 + h * dc, lam0)[0]
        - check(r0 - h * dr, c0 - h * dc, lam0)[0]
    ) / (2 * h)
    up, dn = check(r0, c0, lam0 * (1.0 + h))[0], check(r0, c0, lam0 * (1.0 - h))[0]
    fd_l = (up - dn) / (2 * h * lam0)
    assert np.isfinite(np.asarray(gr)).all() and np.isfinite(np.asarray(gc)).all()
    # measured 1.4e-10 and 8.4e-11 (central FD)
    assert abs(gd - fd) <= 1e-8 * abs(fd), (gd, fd)
    assert abs(gl - fd_l) <= 1e-8 * abs(fd_l), (gl, fd_l)


# --------------------------------------------------------------------------- #
# Physical property: zero localisation error (Pascual-Marqui 2002, 2011)
# --------------------------------------------------------------------------- #
@settings(max_examples=5)
@given(
    depth_frac=st.floats(0.3, 0.85),
    log_lambda2=st.floats(-6.0, -3.0),
    seed=st.integers(0, 2**16),
    depth=st.just(0.8),
)
def test_eloreta_and_sloreta_peak_at_true_source(depth_frac, log_lambda2, seed, depth):
    """Noise-free single dipoles on a fixed-orientation sphere forward: every map peaks on its source."""
    from exg_jax.covariance import NoiseCov
    from exg_jax.inverse import apply_inverse, make_inverse_operator
    from exg_jax.montage import standard_montage
    from exg_jax.source_space import ico_source_space
    from exg_jax.sphere import SphereModel
    from exg_jax.sphere_forward import make_sphere_forward

    sphere = SphereModel()
    _, el = standard_montage("standard_1010", radius=0.075)
    pos, radial = ico_source_space(2, radius=0.067 * depth_frac)
    rng = np.random.default_rng(seed)
    nn = radial + 0.7 * rng.standard_normal(radial.shape)  # oblique orientations
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    fwd = make_sphere_forward(
        jnp.asarray(el), jnp.asarray(pos), jnp.asarray(nn), sphere
    )
    inv = make_inverse_operator(
        fwd, NoiseCov(jnp.eye(el.shape[0]) * 1e-12), depth=depth
    )
    lam = 10.0**log_lambda2
    data = fwd.gain  # column k: the noise-free topography of source k alone
    for method in (eLORETA(eps=1e-8, max_iter=500), "sLORETA"):
        maps = np.abs(np.asarray(apply_inverse(data, inv, lam, method).data))
        np.testing.assert_array_equal(np.argmax(maps, axis=0), np.arange(pos.shape[0]))


def test_float32_follows_dtype_and_converges(mne_problem):
    """Physical units (weights ~1e-19) must not underflow the float32 convergence test."""
    inv = mne_problem["ops"]["free-indep"][1]
    inv32 = jax.tree_util.tree_map(
        lambda x: (
            x.astype(jnp.float32)
            if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)
            else x
        ),
        inv,
    )
    fit = eqx.filter_jit(lambda i, m: m.factors(i, jnp.asarray(LAMBDA2, i.sing.dtype)))
    fac64, st64 = fit(inv, eLORETA(eps=1e-8, max_iter=200))
    fac32, st32 = fit(inv32, eLORETA(eps=1e-5, max_iter=200))
    assert fac32.leads.dtype == jnp.float32
    assert bool(st32.converged) and bool(st64.converged)
    assert 0 < int(st32.iterations) < int(st64.iterations)
    k64 = np.asarray(fac64.leads @ (fac64.sing[:, None] * fac64.eigen_fields))
    k32 = np.asarray(
        fac32.leads @ (fac32.sing[:, None] * fac32.eigen_fields), np.float64
    )
    assert np.abs(k32 - k64).max() <= 1e-3 * np.abs(k64).max()
