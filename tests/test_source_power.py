"""apply_inverse_cov (exg_jax.source_power): MNE-Python parity, JAX properties, bad input.

Oracle: ``mne.minimum_norm.apply_inverse_cov`` (float64) on MNE's own objects:
the MNE sphere forward of tests/test_inverse.py (biosemi32, 162 discrete
sources with normals, surface-oriented), an info with the EEG
average-reference projector, MNE ``Covariance`` objects; our operators are
built from the same gain against infinity with ``avg_ref_proj=True``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import mne
import numpy as np
import pytest
from _oracle import mne_sphere_forward

from exg_jax.covariance import NoiseCov
from exg_jax.eloreta import eLORETA
from exg_jax.interop import forward_from_mne
from exg_jax.inverse import apply_inverse, make_inverse_operator
from exg_jax.source_power import apply_inverse_cov

LAMBDA2 = 1.0 / 9.0
# max |ours - MNE| / max |MNE|, float64 (OpenBLAS, 2-core x86): measured
# <= 3.1e-13 (MNE / dSPM / sLORETA, free and loose, pick_ori None / "normal",
# nave 1 and 4) and <= 3.6e-13 (eLORETA). Fixed: 1.4e-7, because MNE stores its
# converted fixed gain in float32 (as TOL_FIXED in test_inverse.py).
TOL = 4e-12
TOL_FIXED = 1.5e-6
CASES = {
    "free": dict(loose=1.0, depth=0.8),
    "loose0.2": dict(loose=0.2, depth=0.8),
    "fixed": dict(loose=0.0, depth=0.8, fixed=True),
}
ELORETA_PARAMS = dict(eps=1e-6, max_iter=200)


@pytest.fixture(scope="module")
def problem():
    info, _, fwd = mne_sphere_forward("biosemi32", 2)
    fwd_surf = mne.convert_forward_solution(fwd, surf_ori=True)
    rng = np.random.default_rng(0)
    n = len(info.ch_names)
    noise = rng.standard_normal((n, n)) @ rng.standard_normal((n, 2000)) * 1e-6
    cov = noise @ noise.T / noise.shape[1]
    mne_cov = mne.Covariance(cov, info.ch_names, [], [], noise.shape[1])
    # data: correlated, 1e-6 V; its covariance X Xᵀ / T (no mean removed)
    x = rng.standard_normal((n, n)) @ rng.standard_normal((n, 300)) * 1e-6
    dcov = x @ x.T / x.shape[1]
    mne_dcov = mne.Covariance(dcov, info.ch_names, [], [], x.shape[1])
    ev = mne.EvokedArray(x[:, :4], info, nave=1)
    ev.set_eeg_reference(projection=True)  # the info MNE's operator expects
    ours = forward_from_mne(fwd_surf, reference=None)
    ops = {}
    for name, kw in CASES.items():
        inv_m = mne.minimum_norm.make_inverse_operator(ev.info, fwd_surf, mne_cov, **kw)
        inv_o = make_inverse_operator(
            ours, NoiseCov(jnp.asarray(cov)), avg_ref_proj=True, **kw
        )
        ops[name] = (inv_m, inv_o)
    return dict(info=ev.info, x=x, dcov=dcov, mne_dcov=mne_dcov, ops=ops)


def _rel(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _method(m):
    return eLORETA(**ELORETA_PARAMS) if m == "eLORETA" else m


# --------------------------------------------------------------------------- #
# MNE parity
# --------------------------------------------------------------------------- #
PARITY_GRID = [
    (case, method, pick_ori)
    for case in CASES
    for method in ("MNE", "dSPM", "sLORETA")
    for pick_ori in ((None,) if case == "fixed" else (None, "normal"))
] + [("loose0.2", "eLORETA", "normal")]  # MNE's eLORETA is slow: one case


@pytest.mark.parametrize(("case", "method", "pick_ori"), PARITY_GRID)
def test_matches_mne(problem, case, method, pick_ori):
    inv_m, inv_o = problem["ops"][case]
    params = ELORETA_PARAMS if method == "eLORETA" else None
    # eLORETA does not depend on nave (its weights absorb the noise scale)
    for nave in (4,) if method == "eLORETA" else (1, 4):
        ref = mne.minimum_norm.apply_inverse_cov(
            problem["mne_dcov"],
            problem["info"],
            inv_m,
            nave=nave,
            lambda2=LAMBDA2,
            method=method,
            pick_ori=pick_ori,
            method_params=params,
        ).data
        stc = apply_inverse_cov(
            problem["dcov"],
            inv_o,
            LAMBDA2,
            _method(method),
            nave=nave,
            pick_ori=pick_ori,
        )
        assert stc.data.shape == ref.shape == (inv_o.n_src, 1)
        assert stc.method == method and stc.pick_ori == pick_ori
        assert _rel(stc.data, ref) <= (TOL_FIXED if case == "fixed" else TOL)
        if method in ("dSPM", "sLORETA") and nave == 1:
            p1 = np.asarray(stc.data)
        elif method in ("dSPM", "sLORETA"):
            # the noise variance of an average of 4 is 1/4: the power x 4
            np.testing.assert_allclose(np.asarray(stc.data), 4 * p1, rtol=1e-13)


# --------------------------------------------------------------------------- #
# Link to the apply path: C = X Xᵀ / T gives the mean squared vector estimate
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("case", "pick_ori", "method"),
    [
        (case, pick_ori, method)
        for case, pick_ori in (
            ("loose0.2", None),
            ("loose0.2", "normal"),
            ("fixed", None),
        )
        for method in ("MNE", "dSPM", "sLORETA")
    ]
    # eLORETA: the case whose power program test_matches_mne has compiled
    + [("loose0.2", "normal", "eLORETA")],
)
def test_equals_mean_squared_estimate(problem, case, pick_ori, method):
    inv = problem["ops"][case][1]
    x = problem["x"]
    got = apply_inverse_cov(
        NoiseCov(jnp.asarray(problem["dcov"])),
        inv,
        LAMBDA2,
        _method(method),
        pick_ori=pick_ori,
    )
    ori = "vector" if (case != "fixed" and pick_ori is None) else pick_ori
    sol = np.asarray(apply_inverse(x, inv, LAMBDA2, _method(method), pick_ori=ori).data)
    want = np.mean(sol**2, axis=-1)
    if ori == "vector":
        want = want.sum(axis=1)  # x, y, z
    assert _rel(got.data[:, 0], want) <= 1e-12
    if method == "eLORETA":
        assert bool(got.status.converged)
    else:
        assert got.status is None


# --------------------------------------------------------------------------- #
# JAX properties
# --------------------------------------------------------------------------- #
def test_jit_equals_eager(problem):
    inv = problem["ops"]["loose0.2"][1]
    c = jnp.asarray(problem["dcov"])
    eager = apply_inverse_cov(c, inv, LAMBDA2, "sLORETA", nave=2).data
    jitted = jax.jit(
        lambda c, lam, inv: apply_inverse_cov(c, inv, lam, "sLORETA", nave=2).data
    )(c, jnp.asarray(LAMBDA2), inv)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-13)


def test_gradients(problem):
    """d/dλ², d/d(source prior) vs central differences; linear in the covariance."""
    inv = problem["ops"]["loose0.2"][1]
    c = jnp.asarray(problem["dcov"])
    w = jnp.asarray(np.random.default_rng(5).uniform(0.5, 1.5, (inv.n_src, 1)))

    def loss_lam(lam):
        return jnp.sum(w * apply_inverse_cov(c, inv, lam, "dSPM").data)

    lam = 0.2
    g = float(jax.grad(loss_lam)(jnp.asarray(lam)))
    h = 1e-5 * lam
    fd = (float(loss_lam(lam + h)) - float(loss_lam(lam - h))) / (2 * h)
    assert np.isfinite(g) and abs(g - fd) <= 1e-7 * abs(fd), (g, fd)

    # the operator: a relative perturbation of its source prior (MNE kernel)
    d = jnp.asarray(np.random.default_rng(6).standard_normal(inv.source_std.shape))

    def loss_op(t):
        op = eqx.tree_at(lambda i: i.source_std, inv, inv.source_std * (1 + t * d))
        return jnp.sum(w * apply_inverse_cov(c, op, LAMBDA2, "MNE").data) * 1e15

    g = float(jax.grad(loss_op)(jnp.asarray(0.0)))
    h = 1e-5
    fd = (float(loss_op(h)) - float(loss_op(-h))) / (2 * h)
    assert np.isfinite(g) and abs(g - fd) <= 1e-7 * abs(fd), (g, fd)

    # the covariance: P is linear in C, so its derivative along D is P(D)
    dc = np.random.default_rng(7).standard_normal(c.shape) * 1e-12
    dc = jnp.asarray(dc + dc.T)
    _, tangent = jax.jvp(
        lambda c: apply_inverse_cov(c, inv, LAMBDA2, "dSPM").data, (c,), (dc,)
    )
    direct = apply_inverse_cov(dc, inv, LAMBDA2, "dSPM").data
    assert _rel(tangent, direct) <= 1e-12


@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA"])
def test_float32(problem, method):
    """float32 operator and covariance (SI units) agree with float64.

    The operator is the float64 one cast to float32 (a float32-built one
    adds its own SVD rounding, ~1e-5), so this checks the power step, which
    is the same for every method; eLORETA's float32 fit is tested in
    test_float32.py. Data of 1e-6 V and 1e-9 V: (A·m)² down to 1e-24; for
    the dimensionless methods also 1e-16 V (C ≈ 1e-32 V²), where the
    unscaled ``einsum(K, K @ C)`` (1e-40) is flushed to zero in float32
    (measured: dSPM all zero).
    """
    inv64 = problem["ops"]["loose0.2"][1]
    inv32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, inv64
    )
    m = method
    scales = (1.0, 1e-6) if method == "MNE" else (1.0, 1e-6, 1e-20)
    for scale in scales:
        c = problem["dcov"] * scale
        for pick_ori in (None, "normal"):
            p64 = apply_inverse_cov(c, inv64, LAMBDA2, m, pick_ori=pick_ori).data
            p32 = apply_inverse_cov(
                jnp.asarray(c, jnp.float32), inv32, LAMBDA2, m, pick_ori=pick_ori
            ).data
            assert p32.dtype == jnp.float32
            assert np.all(np.asarray(p32) > 0)
            assert _rel(p32, p64) <= 1e-5, (scale, pick_ori)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def test_bad_input(problem):
    inv = problem["ops"]["loose0.2"][1]
    fixed = problem["ops"]["fixed"][1]
    c = problem["dcov"]
    with pytest.raises(ValueError, match=r"cov has shape \(31, 31\)"):
        apply_inverse_cov(c[:31, :31], inv)
    with pytest.raises(ValueError, match="cov has shape"):
        apply_inverse_cov(c[0], inv)
    asym = c.copy()
    asym[0, 1] += 1e-3 * np.abs(c).max()
    with pytest.raises(ValueError, match="cov is not symmetric"):
        apply_inverse_cov(asym, inv)
    nan = c.copy()
    nan[2, 2] = np.nan
    with pytest.raises(ValueError, match="cov contains"):
        apply_inverse_cov(nan, inv)
    with pytest.raises(ValueError, match="cov contains"):
        apply_inverse_cov(NoiseCov(jnp.asarray(nan)), inv)
    with pytest.raises(TypeError, match="cov"):
        apply_inverse_cov("cov", inv)
    with pytest.raises(TypeError, match="cov"):
        apply_inverse_cov(problem["mne_dcov"], inv)
    with pytest.raises(ValueError, match="nave"):
        apply_inverse_cov(c, inv, nave=0)
    with pytest.raises(TypeError, match="nave"):
        apply_inverse_cov(c, inv, nave=1.5)
    with pytest.raises(ValueError, match="pick_ori='vector'"):
        apply_inverse_cov(c, inv, pick_ori="vector")
    with pytest.raises(ValueError, match="pick_ori"):
        apply_inverse_cov(c, inv, pick_ori="tangential")
    with pytest.raises(ValueError, match="pick_ori"):
        apply_inverse_cov(c, fixed, pick_ori="normal")
    with pytest.raises(ValueError, match="lambda2"):
        apply_inverse_cov(c, inv, 0.0)
    with pytest.raises(ValueError, match="lambda2"):
        apply_inverse_cov(c, inv, -1.0)
    with pytest.raises(ValueError, match="'dspm'"):
        apply_inverse_cov(c, inv, method="dspm")
    with pytest.raises(TypeError, match="inv"):
        apply_inverse_cov(c, problem["ops"]["loose0.2"][0])
