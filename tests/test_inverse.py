"""Inverse operator and MNE / dSPM / sLORETA: MNE-Python parity, JAX properties, bad input."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import mne  # noqa: E402
import numpy as np
import pytest
from _oracle import mne_sphere_forward  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st

from exg_jax.covariance import NoiseCov
from exg_jax.forward import ForwardOperator
from exg_jax.interop import forward_from_mne
from exg_jax.inverse import (
    apply_inverse,
    apply_inverse_epochs,
    as_method,
    make_inverse_operator,
)


def _kernel(inv, lam, method, pick_ori=None):
    """(K, noise_norm) of a method object: the pure, traceable interface."""
    k = as_method(method).kernel(inv, lam, pick_ori)
    return k.kernel, k.noise_norm


LAMBDA2 = 1.0 / 9.0
# Parity with MNE-Python, max |ours - MNE| / max |MNE| (tolerances ~10x the worst
# value measured with OpenBLAS Haswell and Sandybridge kernels). Free / loose: float64
# rounding, measured <= 1.1e-12. Fixed: MNE stores its converted fixed gain in
# float32, measured <= 2.3e-7.
TOL_FLOAT64 = 1e-11
TOL_FIXED = 1e-6
CASES = {
    "free_depth0.8": dict(loose=1.0, depth=0.8),
    "free_nodepth": dict(loose=1.0, depth=None),
    "loose0.2": dict(loose=0.2, depth=0.8),
    "fixed": dict(loose=0.0, depth=0.8, fixed=True),
}
PARITY_METHODS = ("MNE", "dSPM", "sLORETA")


@pytest.fixture(scope="module")
def problem():
    """biosemi32, ico-2 discrete source space with normals, MNE sphere forward."""
    info, _, fwd = mne_sphere_forward("biosemi32", 2)
    fwd_surf = mne.convert_forward_solution(fwd, surf_ori=True)
    rng = np.random.default_rng(0)
    n = len(info.ch_names)
    mix = rng.standard_normal((n, n))
    noise = mix @ rng.standard_normal((n, 2000)) * 1e-6
    cov = noise @ noise.T / noise.shape[1]
    mne_cov = mne.Covariance(cov, info.ch_names, [], [], noise.shape[1])
    data = rng.standard_normal((n, 12)) * 1e-6
    epochs = rng.standard_normal((3, n, 12)) * 1e-6
    ev = mne.EvokedArray(data, info, nave=1)
    ev.set_eeg_reference(projection=True)
    return dict(
        info=info,
        ev=ev,
        fwd=fwd,
        fwd_surf=fwd_surf,
        ours_inf=forward_from_mne(fwd_surf, reference=None),
        ours_avg=forward_from_mne(fwd, reference="average"),
        cov=cov,
        mne_cov=mne_cov,
        data=data,
        epochs=epochs,
    )


@pytest.fixture(scope="module")
def operators(problem):
    out = {}
    for name, kw in CASES.items():
        inv_m = mne.minimum_norm.make_inverse_operator(
            problem["ev"].info, problem["fwd_surf"], problem["mne_cov"], **kw
        )
        inv_o = make_inverse_operator(
            problem["ours_inf"],
            NoiseCov(jnp.asarray(problem["cov"])),
            avg_ref_proj=True,
            **kw,
        )
        out[name] = (inv_m, inv_o)
    return out


def _rel(got, ref):
    return float(np.max(np.abs(np.asarray(got) - ref)) / np.max(np.abs(ref)))


# --------------------------------------------------------------------------- #
# MNE parity
# --------------------------------------------------------------------------- #
PARITY_GRID = [
    (case, method, pick_ori)
    for case in CASES
    for method in PARITY_METHODS
    # a fixed inverse has no normal / vector output (tested as bad input)
    for pick_ori in ((None,) if case == "fixed" else (None, "normal", "vector"))
]


@pytest.mark.parametrize(("case", "method", "pick_ori"), PARITY_GRID)
def test_apply_inverse_matches_mne(problem, operators, case, method, pick_ori):
    inv_m, inv_o = operators[case]
    ref = mne.minimum_norm.apply_inverse(
        problem["ev"], inv_m, LAMBDA2, method, pick_ori=pick_ori
    ).data
    got = apply_inverse(problem["data"], inv_o, LAMBDA2, method, pick_ori=pick_ori).data
    assert got.shape == ref.shape
    assert _rel(got, ref) <= (TOL_FIXED if case == "fixed" else TOL_FLOAT64)


@pytest.mark.parametrize("method", PARITY_METHODS)
@pytest.mark.parametrize("pick_ori", [None, "vector"])
def test_apply_inverse_epochs_matches_mne(problem, operators, method, pick_ori):
    inv_m, inv_o = operators["loose0.2"]
    epochs = mne.EpochsArray(problem["epochs"], problem["info"], verbose=False)
    epochs.set_eeg_reference(projection=True)
    ref = np.stack(
        [
            s.data
            for s in mne.minimum_norm.apply_inverse_epochs(
                epochs, inv_m, LAMBDA2, method, pick_ori=pick_ori, nave=1
            )
        ]
    )
    got = apply_inverse_epochs(
        problem["epochs"], inv_o, LAMBDA2, method, pick_ori=pick_ori
    ).data
    assert got.shape == ref.shape
    assert _rel(got, ref) <= TOL_FLOAT64


def test_operator_fields_match_mne(operators):
    inv_m, inv_o = operators["free_depth0.8"]
    # singular values: MNE keeps n_chan values with the projected one ~0
    # (measured: sing 6.5e-14, depth prior 1.8e-15, source cov 1.8e-14 relative)
    np.testing.assert_allclose(
        np.asarray(inv_o.sing), inv_m["sing"][: inv_o.rank], rtol=1e-12, atol=0
    )
    np.testing.assert_allclose(
        np.asarray(inv_o.depth_prior), inv_m["depth_prior"]["data"], rtol=2e-14
    )
    np.testing.assert_allclose(
        np.asarray(inv_o.source_cov), inv_m["source_cov"]["data"], rtol=2e-13
    )


def test_average_reference_forward_default(problem):
    """Default path (avg-referenced gain): same whitened kernel; depth from the referenced gain."""
    cov = NoiseCov(jnp.asarray(problem["cov"]))
    inv_a = make_inverse_operator(problem["ours_avg"], cov, depth=None)
    inv_b = make_inverse_operator(
        problem["ours_inf"], cov, depth=None, avg_ref_proj=True
    )
    a = apply_inverse(problem["data"], inv_a, LAMBDA2, "dSPM").data
    b = apply_inverse(problem["data"], inv_b, LAMBDA2, "dSPM").data
    assert _rel(a, np.asarray(b)) <= 5e-14  # measured 3.6e-15


# --------------------------------------------------------------------------- #
# JAX properties
# --------------------------------------------------------------------------- #
def test_jit_equals_eager_and_lambda2_no_recompile(problem, operators):
    inv = operators["loose0.2"][1]
    data = jnp.asarray(problem["data"])
    n_traces = []

    def f(lam):
        n_traces.append(1)
        k, nn = _kernel(inv, lam, "sLORETA", None)
        return nn[:, None] * jnp.linalg.norm(
            (k @ data).reshape(-1, 3, data.shape[1]), axis=1
        )

    jf = jax.jit(f)
    for lam in (0.1, 0.2, 0.3):
        eager = apply_inverse(data, inv, lam, "sLORETA").data
        np.testing.assert_allclose(np.asarray(jf(jnp.asarray(lam))), eager, rtol=1e-12)
    assert len(n_traces) == 1
    # the public apply path traces once per shape, not per lambda2
    from exg_jax import inverse as inv_mod

    fresh = data[:, :7]  # a shape not compiled before
    before = eqx.debug.get_num_traces(inv_mod._apply_traced)
    apply_inverse(fresh, inv, 0.77, "sLORETA")
    apply_inverse(fresh, inv, 0.78, "sLORETA")
    apply_inverse_epochs(jnp.stack([fresh, fresh]), inv, 0.5, "sLORETA")
    apply_inverse_epochs(jnp.stack([fresh, fresh]), inv, 0.6, "sLORETA")
    assert eqx.debug.get_num_traces(inv_mod._apply_traced) - before == 2


def test_epochs_equal_loop_and_vmap(problem, operators):
    inv = operators["free_depth0.8"][1]
    ep = jnp.asarray(problem["epochs"])
    for method in PARITY_METHODS:
        batched = apply_inverse_epochs(ep, inv, LAMBDA2, method, batch_size=2).data
        loop = np.stack([apply_inverse(e, inv, LAMBDA2, method).data for e in ep])
        np.testing.assert_allclose(batched, loop, rtol=1e-12, atol=0)
    vm = jax.vmap(
        lambda e: apply_inverse(e, inv, LAMBDA2, "dSPM", pick_ori="vector").data
    )(ep)
    loop = np.stack(
        [apply_inverse(e, inv, LAMBDA2, "dSPM", pick_ori="vector").data for e in ep]
    )
    np.testing.assert_allclose(vm, loop, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", PARITY_METHODS)
def test_grad_lambda2_matches_fd(problem, operators, method):
    inv = operators["free_depth0.8"][1]
    data = jnp.asarray(problem["data"])

    def loss(lam):
        return jnp.sum(apply_inverse(data, inv, lam, method).data ** 2)

    lam0, h = 0.2, 1e-5
    g = float(jax.grad(loss)(jnp.asarray(lam0)))
    fd = (float(loss(lam0 + h)) - float(loss(lam0 - h))) / (2 * h)
    assert np.isfinite(g)
    assert abs(g - fd) <= 1e-7 * abs(fd)  # measured <= 1.7e-9 (central FD)


def _rank_deficient_problem():
    """Average-referenced gain depending on a parameter and a rank n-1 covariance."""
    rng = np.random.default_rng(3)
    n_chan, n_src = 16, 20
    g0 = rng.standard_normal((n_chan, 3 * n_src))
    g1 = rng.standard_normal((n_chan, 3 * n_src))
    nn = rng.standard_normal((n_src, 3))
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    pos = rng.standard_normal((n_src, 3)) * 0.03
    noise = rng.standard_normal((n_chan, 500))
    noise -= noise.mean(axis=0)  # average-referenced data
    cov = noise @ noise.T / 500
    data = rng.standard_normal((n_chan, 5))
    data -= data.mean(axis=0)
    return g0, g1, nn, pos, cov, data


@pytest.mark.parametrize(
    ("kw", "method"),
    [
        (dict(loose=1.0, depth=0.8), "dSPM"),
        (dict(loose=0.2, depth=0.8), "sLORETA"),
        (dict(loose=0.0, depth=None), "MNE"),
    ],
)
def test_rank_deficient_gradients_finite_and_correct(kw, method):
    g0, g1, nn, pos, cov, data = _rank_deficient_problem()
    assert np.linalg.matrix_rank(cov) == cov.shape[0] - 1

    def loss(theta, lam):
        gain = jnp.asarray(g0) + theta * jnp.asarray(g1)
        gain = gain - jnp.mean(gain, axis=0, keepdims=True)
        fwd = ForwardOperator(
            gain, jnp.asarray(pos), jnp.asarray(nn), "free", "average"
        )
        inv = make_inverse_operator(fwd, NoiseCov(jnp.asarray(cov)), **kw)
        return jnp.sum(apply_inverse(jnp.asarray(data), inv, lam, method).data ** 2)

    th0, lam0, h = 0.3, 0.1, 1e-6
    gt, gl = jax.grad(loss, argnums=(0, 1))(jnp.asarray(th0), jnp.asarray(lam0))
    assert np.isfinite(float(gt)) and np.isfinite(float(gl))
    fd_t = (float(loss(th0 + h, lam0)) - float(loss(th0 - h, lam0))) / (2 * h)
    fd_l = (float(loss(th0, lam0 + h)) - float(loss(th0, lam0 - h))) / (2 * h)
    # measured 2.3e-9 and 1.1e-10 (central FD)
    assert abs(float(gt) - fd_t) <= 1e-7 * abs(fd_t)
    assert abs(float(gl) - fd_l) <= 1e-7 * abs(fd_l)


def test_sphere_parameter_gradient_rank_deficient():
    """d loss / d sphere centre through our sphere forward (avg-referenced, rank n-1)."""
    from exg_jax.source_space import ico_source_space
    from exg_jax.sphere import SphereModel
    from exg_jax.sphere_forward import make_sphere_forward_free

    mont = mne.channels.make_standard_montage("biosemi32")
    elec = np.array(list(mont.get_positions()["ch_pos"].values()))
    ctr = np.array([0.0, 0.0, 0.04])
    elec = ctr + 0.075 * (elec - ctr) / np.linalg.norm(
        elec - ctr, axis=1, keepdims=True
    )
    pos, nn = ico_source_space(1, radius=0.05, center=tuple(ctr))
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((32, 400)) * 1e-6
    noise -= noise.mean(axis=0)
    cov = NoiseCov(jnp.asarray(noise @ noise.T / 400))
    data = jnp.asarray(noise[:, :4])
    # Berg-Scherg parameters held fixed (the fit itself is not under test): our
    # deterministic fit, not MNE's COBYLA one, whose basin moves with the BLAS kernels.
    from exg_jax.sphere import berg_scherg_params

    fit = berg_scherg_params(SphereModel())
    bs = (fit.mu, fit.lam)

    def loss(cz):
        sph = SphereModel(center=jnp.stack([jnp.asarray(0.0), jnp.asarray(0.0), cz]))
        fwd = make_sphere_forward_free(elec, pos, sph, src_nn=nn, berg_scherg=bs)
        inv = make_inverse_operator(fwd, cov, loose=0.2)
        return jnp.sum(apply_inverse(data, inv, 0.1, "dSPM").data ** 2)

    z0, h = 0.041, 1e-6
    jloss = jax.jit(loss)
    g = float(jax.jit(jax.grad(loss))(jnp.asarray(z0)))
    fd = (float(jloss(jnp.asarray(z0 + h))) - float(jloss(jnp.asarray(z0 - h)))) / (
        2 * h
    )
    assert np.isfinite(g)
    assert abs(g - fd) <= 1e-7 * abs(fd)  # measured 7.3e-9 (central FD)


# --------------------------------------------------------------------------- #
# Physical properties
# --------------------------------------------------------------------------- #
def test_noise_free_fit_and_sloreta_peak(problem):
    """Small λ²: MNE explains the whitened data; sLORETA peaks on the true source."""
    fwd = problem["ours_avg"]
    cov = NoiseCov(jnp.eye(fwd.n_chan) * 1e-12)
    inv = make_inverse_operator(fwd, cov, loose=0.0, depth=None)
    gain_fixed = np.einsum(
        "cnj,nj->cn", np.asarray(fwd.gain).reshape(fwd.n_chan, -1, 3), fwd.src_nn
    )
    hits = 0
    for k in range(0, fwd.n_src, 10):
        y = gain_fixed[:, k : k + 1] * 1e-8
        s = np.asarray(apply_inverse(y, inv, 1e-6, "sLORETA").data[:, 0])
        hits += int(np.argmax(np.abs(s)) == k)
        kern, _ = _kernel(inv, jnp.asarray(1e-8), "MNE", None)
        y_hat = gain_fixed @ (np.asarray(kern) @ y)
        np.testing.assert_allclose(y_hat, y, atol=1e-6 * np.abs(y).max())
    assert hits == len(range(0, fwd.n_src, 10))


def test_dspm_noise_units(problem, operators):
    """dSPM of pure sensor noise drawn from C has unit variance per source (fixed, λ²→0 whitened)."""
    inv = operators["fixed"][1]
    rng = np.random.default_rng(5)
    chol = np.linalg.cholesky(problem["cov"])
    noise = chol @ rng.standard_normal((chol.shape[0], 20000))
    kern, nn = _kernel(inv, jnp.asarray(LAMBDA2), "dSPM", None)
    z = np.asarray(nn)[:, None] * (np.asarray(kern) @ noise)
    np.testing.assert_allclose(z.var(axis=1), 1.0, rtol=0.05)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def test_bad_input(problem, operators):
    inv = operators["free_depth0.8"][1]
    inv_fixed = operators["fixed"][1]
    data = problem["data"]
    bad = data.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="data"):
        apply_inverse(bad, inv, LAMBDA2)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="epochs"):
        apply_inverse_epochs(bad[None], inv, LAMBDA2)
    with pytest.raises(ValueError, match="31 channels"):
        apply_inverse(data[:-1], inv, LAMBDA2)
    with pytest.raises(ValueError, match="lambda2"):
        apply_inverse(data, inv, 0.0)
    with pytest.raises(ValueError, match="lambda2"):
        apply_inverse(data, inv, -1.0)
    with pytest.raises(ValueError, match="'dspm'"):
        apply_inverse(data, inv, LAMBDA2, "dspm")
    with pytest.raises(ValueError, match="'tangential'"):
        apply_inverse(data, inv, LAMBDA2, pick_ori="tangential")
    with pytest.raises(ValueError, match="'normal'"):
        apply_inverse(data, inv_fixed, LAMBDA2, pick_ori="normal")
    fwd = problem["ours_avg"]
    cov = NoiseCov(jnp.asarray(problem["cov"]))
    badcov = np.array(problem["cov"])
    badcov[0, 0] = np.nan
    with pytest.raises(ValueError, match="noise_cov"):
        make_inverse_operator(fwd, NoiseCov(jnp.asarray(badcov)))
    with pytest.raises(ValueError, match="noise_cov"):
        make_inverse_operator(fwd, NoiseCov(jnp.asarray(problem["cov"][:-1, :-1])))
    with pytest.raises(ValueError, match="depth"):
        make_inverse_operator(fwd, cov, depth=1.5)
    with pytest.raises(ValueError, match="depth"):
        make_inverse_operator(fwd, cov, depth=-0.1)
    with pytest.raises(ValueError, match="loose"):
        make_inverse_operator(fwd, cov, loose=1.2)
    with pytest.raises(ValueError, match="loose"):
        make_inverse_operator(fwd, cov, loose=-0.5)
    no_nn = eqx.tree_at(lambda f: f.src_nn, fwd, None, is_leaf=lambda x: x is None)
    inv_no_nn = make_inverse_operator(no_nn, cov)
    with pytest.raises(ValueError, match="normal"):
        apply_inverse(data, inv_no_nn, LAMBDA2, pick_ori="normal")
    with pytest.raises(ValueError, match="loose"):
        make_inverse_operator(no_nn, cov, loose=0.2)


def test_eloreta_branch(problem, operators):
    """method='eLORETA' goes through exg_jax.eloreta and reports a status."""
    inv_m, inv_o = operators["loose0.2"]
    from exg_jax.eloreta import eLORETA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mne.minimum_norm.apply_inverse(
            problem["ev"],
            inv_m,
            LAMBDA2,
            "eLORETA",
            method_params=dict(eps=1e-8, max_iter=200),
        ).data
    stc = apply_inverse(
        problem["data"],
        inv_o,
        LAMBDA2,
        eLORETA(eps=1e-8, max_iter=200),
    )
    assert stc.status is not None
    assert _rel(stc.data, ref) <= TOL_FLOAT64  # measured 8.0e-13


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #
@settings(max_examples=10)
@given(
    a=st.floats(-5.0, 5.0, allow_nan=False),
    b=st.floats(-5.0, 5.0, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
    case=st.sampled_from(sorted(CASES)),
)
def test_mne_vector_solution_is_linear_and_reference_free(
    problem, operators, a, b, seed, case
):
    """The MNE (and normal / vector) solution is linear in the data, and adding a
    constant to every electrode (a change of reference) leaves it unchanged."""
    _, inv = operators[case]
    rng = np.random.default_rng(seed)
    n = problem["data"].shape[0]
    x, y = rng.standard_normal((2, n, 4)) * 1e-6
    pick = None if case == "fixed" else "vector"

    def sol(d):
        return np.asarray(
            apply_inverse(jnp.asarray(d), inv, LAMBDA2, "MNE", pick_ori=pick).data
        )

    lhs = sol(a * x + b * y)
    rhs = a * sol(x) + b * sol(y)
    scale = np.max(np.abs(sol(x))) + np.max(np.abs(sol(y)))
    np.testing.assert_allclose(lhs, rhs, atol=1e-10 * scale)
    shifted = x + rng.standard_normal((1, 4)) * 1e-5  # same offset on every channel
    np.testing.assert_allclose(
        sol(shifted), sol(x), atol=1e-10 * np.max(np.abs(sol(x)))
    )
