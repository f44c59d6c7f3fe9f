"""Tests for exg_jax.resolution: R = K G, PSF / CTF, resolution metrics.

Oracle: MNE-Python (make_inverse_resolution_matrix, get_point_spread,
get_cross_talk and the private metric functions of spatial_resolution.py) on a
small problem: an MNE sphere forward on a 162-source discrete source space with
normals (ico-2 on a 6 cm sphere), biosemi32.
"""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exg_jax.covariance import NoiseCov
from exg_jax.interop import forward_from_mne
from exg_jax.inverse import METHOD_ALIASES, make_inverse_operator
from exg_jax.resolution import (
    METRICS,
    ResolutionOperator,
    get_cross_talk,
    get_point_spread,
    make_resolution_matrix,
    make_resolution_operator,
    peak_localisation_error,
    relative_amplitude,
    resolution_metrics,
    spatial_spread,
)

METHODS = tuple(METHOD_ALIASES)  # MNE's strings, one per method object


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem():
    import mne
    from _oracle import mne_sphere_forward

    info, _, fwd = mne_sphere_forward("biosemi32", 2, sphere="auto")
    rng = np.random.default_rng(0)
    raw = mne.io.RawArray(rng.normal(size=(32, 2000)) * 1e-6, info)
    raw.set_eeg_reference(projection=True)
    cov = mne.compute_raw_covariance(raw)
    # MNE casts a converted fixed gain to float32; rebuild it in float64 so
    # that the oracle is not limited to float32 precision.
    fwd_fixed = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True)
    n_src = fwd["nsource"]
    fwd_fixed["sol"]["data"] = np.einsum(
        "cnk,nk->cn", fwd["sol"]["data"].reshape(32, n_src, 3), fwd_fixed["source_nn"]
    )
    inv_free = mne.minimum_norm.make_inverse_operator(
        raw.info, fwd, cov, loose=1.0, depth=0.8
    )
    inv_fixed = mne.minimum_norm.make_inverse_operator(
        raw.info, fwd_fixed, cov, fixed=True, depth=None
    )
    F = forward_from_mne(fwd, reference=None)
    F_fixed = forward_from_mne(fwd_fixed, reference=None)
    C = NoiseCov(jnp.asarray(cov.data), int(cov["nfree"]))
    ours_free = make_inverse_operator(F, C, 0.8, avg_ref_proj=True)
    ours_fixed = make_inverse_operator(F, C, None, fixed=True, avg_ref_proj=True)
    return dict(
        mne=mne,
        fwd=fwd,
        fwd_fixed=fwd_fixed,
        inv=dict(free=inv_free, fixed=inv_fixed),
        ours=dict(free=ours_free, fixed=ours_fixed),
        F=F,
        F_fixed=F_fixed,
        pos=np.asarray(fwd["source_rr"]),
    )


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# ---------------------------------------------------------------------------
# R = K G against MNE
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ori", ["free", "fixed"])
@pytest.mark.parametrize("method", METHODS)
def test_resolution_matrix_matches_mne(problem, method, ori):
    mne = problem["mne"]
    lambda2 = 1.0 / 9.0
    ref = mne.minimum_norm.make_inverse_resolution_matrix(
        problem["fwd_fixed"], problem["inv"][ori], method, lambda2
    )
    R = make_resolution_matrix(problem["ours"][ori], problem["F"], lambda2, method)
    n = problem["F"].n_src
    assert R.shape == ref.shape == ((3 if ori == "free" else 1) * n, n)
    assert _rel(R, ref) < 2e-13  # measured <= 1.9e-14 (eLORETA included)


def test_fixed_forward_equals_normal_projection(problem):
    """A fixed forward and the free forward projected on its normals give the same R."""
    inv = problem["ours"]["free"]
    a = make_resolution_matrix(inv, problem["F"], 1e-2, "dSPM")
    b = make_resolution_matrix(inv, problem["F_fixed"], 1e-2, "dSPM")
    assert _rel(a, b) < 1e-14  # measured 6.2e-16


def test_free_forward_matches_mne(problem):
    """fwd_ori='free' is MNE with a free (Cartesian) forward: shape (3n, 3n)."""
    mne = problem["mne"]
    ref = mne.minimum_norm.make_inverse_resolution_matrix(
        problem["fwd"], problem["inv"]["free"], "MNE", 1.0 / 9.0
    )
    R = make_resolution_matrix(
        problem["ours"]["free"], problem["F"], 1.0 / 9.0, "MNE", fwd_ori="free"
    )
    assert R.shape == ref.shape == (486, 486)
    assert _rel(R, ref) < 1e-13  # measured 7.8e-15


def test_operator_validation(problem):
    inv = problem["ours"]["free"]
    with pytest.raises(ValueError, match="method"):
        make_resolution_operator(inv, problem["F"], 0.1, "LORETA")
    with pytest.raises(ValueError, match="lambda2"):
        make_resolution_operator(inv, problem["F"], -1.0, "MNE")
    with pytest.raises(ValueError, match="fwd_ori"):
        make_resolution_operator(inv, problem["F"], 0.1, "MNE", fwd_ori="tangential")
    with pytest.raises(ValueError, match="rows"):
        ResolutionOperator(kernel=jnp.ones((10, 4)), gain=jnp.ones((4, 3)), n_orient=3)


# ---------------------------------------------------------------------------
# PSF / CTF against MNE
# ---------------------------------------------------------------------------


def test_psf_ctf_match_mne(problem):
    mne = problem["mne"]
    ref_R = mne.minimum_norm.make_inverse_resolution_matrix(
        problem["fwd_fixed"], problem["inv"]["free"], "sLORETA", 1.0 / 9.0
    )
    idx = [0, 5, 161]
    psf_ref = mne.minimum_norm.get_point_spread(ref_R, problem["fwd"]["src"], idx).data
    ctf_ref = mne.minimum_norm.get_cross_talk(ref_R, problem["fwd"]["src"], idx).data
    op = make_resolution_operator(
        problem["ours"]["free"], problem["F"], 1.0 / 9.0, "sLORETA"
    )
    for R in (op, op.dense()):
        psf = get_point_spread(R, np.array(idx))
        ctf = get_cross_talk(R, np.array(idx))
        assert psf.shape == psf_ref.shape == (162, 3)
        assert ctf.shape == ctf_ref.shape == (162, 9)
        # measured <= 6.6e-15
        assert _rel(psf, psf_ref) < 1e-13
        assert _rel(ctf, ctf_ref) < 1e-13
    assert get_point_spread(op, 7).shape == (162, 1)
    with pytest.raises(ValueError, match="idx"):
        get_point_spread(op, 162)


# ---------------------------------------------------------------------------
# Metrics against MNE's private functions
# ---------------------------------------------------------------------------


def _mne_metrics(R, pos, function):
    """MNE-Python's metric computations, on any locations (converted back to m)."""
    import mne.minimum_norm.spatial_resolution as sr

    out = {}
    with mock.patch.object(sr, "_get_src_locations", lambda src: np.array(pos)):
        Rr = sr._rectify_resolution_matrix(np.asarray(R))
        for m in ("peak_err", "cog_err"):
            out[m] = sr._localisation_error(np.asarray(R), None, function, m) / 100.0
        for m in ("sd_ext", "maxrad_ext"):
            out[m] = sr._spatial_extent(Rr, None, function, m) / 100.0
        for m in ("peak_amp", "sum_amp"):
            out[m] = sr._relative_amplitude(Rr, None, function, m)
    return out


def _maxrad_reference(R, pos, function, threshold=0.5):
    """Maximum radius to ``threshold`` of the peak (the documented definition)."""
    R = np.asarray(R)
    n = R.shape[1]
    k = R.shape[0] // n
    A = np.sqrt((R.reshape(n, k, n) ** 2).sum(1))
    if function == "ctf":
        A = A.T
    out = np.empty(n)
    for j in range(n):
        a = np.abs(A[:, j])
        sel = a > threshold * a.max()
        out[j] = np.linalg.norm(pos[sel] - pos[j], axis=1).max()
    return out


@pytest.mark.parametrize("function", ["psf", "ctf"])
@pytest.mark.parametrize("n_orient", [1, 3])
def test_metrics_match_mne_random(function, n_orient):
    rng = np.random.default_rng(n_orient)
    n = 40
    pos = rng.normal(size=(n, 3)) * 0.05
    R = rng.normal(size=(n_orient * n, n))
    ref = _mne_metrics(R, pos, function)
    ours = resolution_metrics(R, pos, function, METRICS, block_size=7, mne_compat=True)
    for m in METRICS:
        assert _rel(ours[m], ref[m]) < 5e-15, m  # measured <= 3.3e-16
    maxrad = resolution_metrics(R, pos, function, "maxrad_ext", block_size=7)
    assert _rel(maxrad, _maxrad_reference(R, pos, function)) < 3e-15  # 1.8e-16


@pytest.mark.parametrize("function", ["psf", "ctf"])
def test_metrics_match_mne_real(problem, function):
    mne = problem["mne"]
    ref_R = mne.minimum_norm.make_inverse_resolution_matrix(
        problem["fwd_fixed"], problem["inv"]["free"], "dSPM", 1.0 / 9.0
    )
    pos = problem["pos"]
    ref = _mne_metrics(ref_R, pos, function)
    ours = resolution_metrics(ref_R, pos, function, METRICS, mne_compat=True)
    for m in METRICS:
        assert _rel(ours[m], ref[m]) < 3e-14, m  # measured <= 2.2e-15
    # Our own R gives the same metrics (R parity 1e-14 here).
    op = make_resolution_operator(
        problem["ours"]["free"], problem["F"], 1.0 / 9.0, "dSPM"
    )
    ours_op = resolution_metrics(
        op, pos, function, METRICS, block_size=50, mne_compat=True
    )
    for m in METRICS:
        assert _rel(ours_op[m], ref[m]) < 5e-14, m  # measured <= 3.8e-15


def test_metric_validation():
    R = np.eye(4)
    pos = np.zeros((4, 3))
    with pytest.raises(ValueError, match="metric"):
        resolution_metrics(R, pos, "psf", "fwhm")
    with pytest.raises(ValueError, match="function"):
        resolution_metrics(R, pos, "xtf", "sd_ext")
    with pytest.raises(ValueError, match="src_pos"):
        resolution_metrics(R, np.zeros((5, 3)), "psf", "sd_ext")
    with pytest.raises(ValueError, match="multiple"):
        resolution_metrics(np.ones((5, 4)), pos, "psf", "sd_ext")
    with pytest.raises(ValueError, match="non-finite"):
        resolution_metrics(np.full((4, 4), np.nan), pos, "psf", "sd_ext")


# ---------------------------------------------------------------------------
# Streaming == dense; index metrics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["psf", "ctf"])
def test_blocked_equals_dense(problem, function):
    op = make_resolution_operator(
        problem["ours"]["free"], problem["F"], 1.0 / 9.0, "MNE"
    )
    R = op.dense()
    pos = problem["pos"]
    dense = resolution_metrics(R, pos, function, METRICS, block_size=162)
    for block_size in (7, 1000):
        blocked = resolution_metrics(op, pos, function, METRICS, block_size=block_size)
        for m in METRICS:
            np.testing.assert_allclose(
                blocked[m], dense[m], rtol=1e-12, atol=0, err_msg=m
            )
    for fn in (peak_localisation_error, spatial_spread):
        np.testing.assert_array_equal(fn(op, function, block_size=7), fn(R, function))
    np.testing.assert_allclose(
        relative_amplitude(op, function, block_size=7),
        relative_amplitude(R, function),
        rtol=1e-12,
    )


def test_index_metrics_reference():
    rng = np.random.default_rng(3)
    n = 30
    R = rng.normal(size=(3 * n, n))
    A = np.sqrt((R.reshape(n, 3, n) ** 2).sum(1))
    np.testing.assert_array_equal(
        peak_localisation_error(R), np.argmax(A, axis=0) - np.arange(n)
    )
    np.testing.assert_array_equal(
        peak_localisation_error(R, "ctf"), np.argmax(A, axis=1) - np.arange(n)
    )
    np.testing.assert_array_equal(spatial_spread(R), (A > 0.5 * A.max(0)).sum(0))
    np.testing.assert_array_equal(
        spatial_spread(R, "ctf", threshold=0.3), (A > 0.3 * A.max(1)[:, None]).sum(1)
    )
    np.testing.assert_allclose(relative_amplitude(R), A.max(0) / A.sum(0), rtol=1e-13)
    eye = np.eye(n)
    assert np.all(np.asarray(peak_localisation_error(eye)) == 0)
    assert np.all(np.asarray(spatial_spread(eye)) == 1)
    np.testing.assert_allclose(relative_amplitude(eye), 1.0)


# ---------------------------------------------------------------------------
# Transformations: jit, vmap, grad
# ---------------------------------------------------------------------------


def test_jit_vmap_grad():
    rng = np.random.default_rng(5)
    n = 12
    pos = jnp.asarray(rng.normal(size=(n, 3)))
    Rs = jnp.asarray(rng.normal(size=(3, 3 * n, n)))

    def f(R):
        out = resolution_metrics(R, pos, "psf", ("sd_ext", "cog_err", "sum_amp"))
        return out["sd_ext"] + out["cog_err"] + out["sum_amp"]

    eager = f(Rs[0])
    np.testing.assert_allclose(jax.jit(f)(Rs[0]), eager, rtol=1e-13)
    np.testing.assert_allclose(
        jax.vmap(f)(Rs), np.stack([f(r) for r in Rs]), rtol=1e-13
    )
    loss = lambda R: jnp.sum(f(R) ** 2)  # noqa: E731
    g = jax.grad(loss)(Rs[0])
    d = jnp.asarray(rng.normal(size=Rs[0].shape))
    h = 1e-6
    fd = (loss(Rs[0] + h * d) - loss(Rs[0] - h * d)) / (2 * h)
    assert abs(float(jnp.vdot(g, d)) - float(fd)) / abs(float(fd)) < 1e-9  # 2.2e-11


def test_grad_through_resolution_matrix(problem):
    """d/dλ² of a resolution metric through the whole pipeline (central FD)."""
    inv, F, pos = problem["ours"]["fixed"], problem["F"], problem["pos"]

    def loss(lam):
        R = make_resolution_matrix(inv, F, lam, "sLORETA")
        return jnp.sum(resolution_metrics(R, pos, "psf", "sd_ext"))

    lam = 0.05
    g = jax.grad(loss)(jnp.asarray(lam))
    h = 1e-6
    fd = (loss(lam + h) - loss(lam - h)) / (2 * h)
    assert abs(float(g) - float(fd)) / abs(float(fd)) < 1e-8  # measured 1.5e-10


# ---------------------------------------------------------------------------
# Physical properties
# ---------------------------------------------------------------------------


@settings(max_examples=4)
@given(log_lambda2=st.floats(min_value=-8.0, max_value=-3.0))
def test_sloreta_zero_peak_error(problem, log_lambda2):
    """sLORETA PSFs peak on their own source (noise-free fixed model, small λ²)."""
    op = make_resolution_operator(
        problem["ours"]["fixed"], problem["F"], 10.0**log_lambda2, "sLORETA"
    )
    assert np.all(np.asarray(peak_localisation_error(op)) == 0)
    np.testing.assert_array_equal(
        np.asarray(resolution_metrics(op, problem["pos"], "psf", "peak_err")), 0.0
    )


def test_mne_resolution_is_idempotent_as_lambda_vanishes(problem):
    """MNE with λ² -> 0: R -> R^½ V Vᵀ R^-½, a projection: R @ R = R."""
    R = make_resolution_matrix(problem["ours"]["fixed"], problem["F"], 1e-12, "MNE")
    R = np.asarray(R)
    assert np.linalg.norm(R @ R - R) / np.linalg.norm(R) < 1e-6
    # Trace of a projection = its rank = rank of the whitened gain (n_chan - 1).
    assert abs(np.trace(R) - 31) < 1e-4
    # With regularisation it is not a projection.
    R1 = np.asarray(
        make_resolution_matrix(problem["ours"]["fixed"], problem["F"], 0.1, "MNE")
    )
    assert np.linalg.norm(R1 @ R1 - R1) / np.linalg.norm(R1) > 1e-2
