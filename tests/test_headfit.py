"""fit_head_model: objective gradients (reverse, forward) vs finite differences,
float32 vs float64, recovery of a known head model, constraints, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import exg_jax as ex
from exg_jax import headfit as hf
from exg_jax.status import RESULTS

TRUTH_SIGMAS = (0.33, 0.008, 0.33)
TRUTH_OFFSET = np.array([0.003, -0.002, 0.002])


def _truth():
    return ex.SphereModel(
        (0.067, 0.070, 0.075), TRUTH_SIGMAS, np.array([0.0, 0.0, 0.04]) + TRUTH_OFFSET
    )


def _geometry(ico):
    el = np.asarray(ex.standard_montage("standard_1010")[1])[::2]  # 35 electrodes
    pos, nn = ex.ico_source_space(ico, radius=0.06)
    return el, np.asarray(pos)


def _noise_cov(n, rng):
    a = rng.standard_normal((n, n))
    return 1e-12 * (a @ a.T / n + np.eye(n))


@pytest.fixture(scope="module")
def distributed():
    """Data from the evidence's own model: x ~ N(0, R / λ²), noise ~ N(0, C)."""
    rng = np.random.default_rng(0)
    el, pos = _geometry(2)
    cov = _noise_cov(len(el), rng)
    fwd = ex.make_sphere_forward_free(el, pos, _truth())
    inv = ex.make_inverse_operator(fwd, cov, None)
    t = 2000
    x = rng.standard_normal((pos.shape[0] * 3, t)) * np.asarray(inv.source_std)[:, None]
    y = np.asarray(fwd.gain) @ (x / np.sqrt(1 / 9)) + np.linalg.cholesky(
        cov
    ) @ rng.standard_normal((len(el), t))
    return el, pos, cov, y


@pytest.fixture(scope="module")
def dipoles():
    """Noise-free data of three dipoles at known positions and moments."""
    rng = np.random.default_rng(1)
    el, _ = _geometry(1)
    pos = np.array([[0.02, 0.01, 0.07], [-0.04, -0.02, 0.05], [0.0, 0.05, 0.02]])
    mom = 1e-8 * rng.standard_normal((3, 3, 20))
    fwd = ex.make_sphere_forward_free(el, pos, _truth())
    y = np.asarray(fwd.gain) @ mom.reshape(9, 20)
    return el, pos, mom, _noise_cov(len(el), rng), y


def _criteria(distributed, dipoles):
    el, pos, cov, y = distributed
    eld, dpos, mom, covd, yd = dipoles
    return {
        "distributed": (y[:, :200], el, cov, hf.DistributedSources(jnp.asarray(pos))),
        "known": (yd, eld, covd, hf.KnownDipoles(jnp.asarray(dpos), jnp.asarray(mom))),
        "unknown": (yd, eld, covd, hf.UnknownMoments(jnp.asarray(dpos))),
    }


def _direction(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), params
    )


def _shift(params, d, h):
    return jax.tree_util.tree_map(lambda a, b: a + h * b, params, d)


def _dot(a, b):
    return sum(
        jnp.sum(x * y)
        for x, y in zip(
            jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True
        )
    )


@pytest.mark.parametrize("name", ["distributed", "known", "unknown"])
def test_objective_gradients_vs_finite_differences(distributed, dipoles, name):
    """Reverse (grad) and forward (jvp) derivatives of the objective against
    central differences, at a point away from the truth (float64)."""
    y, el, cov, crit = _criteria(distributed, dipoles)[name]
    # the dipole criteria through the exact series (its own path, and cheaper
    # to compile); the evidence through the Berg–Scherg refit
    forward = "berg_scherg" if name == "distributed" else "exact"
    prob = hf.make_head_model_problem(
        y, el, cov, ex.SphereModel(), crit, forward=forward
    )
    p = prob.init_params()
    d = _direction(p, 3)
    h = 1e-5

    @eqx.filter_jit
    def check(p, d):
        # forward mode: the objective linearised (jax.jvp + partial
        # evaluation) and its tangent along d; reverse mode: the transpose of
        # that linear map (what jax.grad computes), one compiled trace for both
        v, lin = jax.linearize(prob.value, p)
        (g,) = jax.linear_transpose(lin, p)(jnp.ones_like(v))
        return v, g, _dot(g, d), lin(d)

    v, g, gd, jvp = check(p, d)
    # central differences: the same compiled function at p ± h d
    fd = (check(_shift(p, d, h), d)[0] - check(_shift(p, d, -h), d)[0]) / (2 * h)
    # measured grad vs FD: 1.2e-9 (distributed), 5.5e-10 (known), 1.2e-8
    # (unknown); jvp vs grad <= 2e-14
    assert abs(gd - fd) <= 1e-6 * abs(fd), (gd, fd)
    assert abs(jvp - gd) <= 1e-10 * abs(gd), (jvp, gd)
    if name == "distributed":  # float32 (the default) against this float64
        _float32_close(y, el, cov, crit, float(v), g)


def _float32_close(y, el, cov, crit, v64, g64):
    dt = np.float32
    sph = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt), ex.SphereModel())
    c = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dt) if eqx.is_array(a) else a, crit
    )
    prob = hf.make_head_model_problem(
        y.astype(dt), el.astype(dt), cov.astype(dt), sph, c
    )
    v32, g32 = eqx.filter_jit(lambda q, p: jax.value_and_grad(q.value)(p))(
        prob, prob.init_params()
    )
    assert v32.dtype == dt
    assert abs(float(v32) - v64) <= 1e-2 * abs(v64)
    for k in g64:
        ref = np.asarray(g64[k])
        np.testing.assert_allclose(
            np.asarray(g32[k], float), ref, atol=1e-2 * np.max(np.abs(ref)), err_msg=k
        )


def test_evidence_fit_recovers_skull_centre_and_lambda2(distributed):
    el, pos, cov, y = distributed
    fit = hf.fit_head_model(
        y, el, cov, ex.SphereModel(), hf.DistributedSources(jnp.asarray(pos))
    )
    assert bool(fit.status.converged)
    sig = float(fit.sphere.conductivities[1])
    assert abs(sig / TRUTH_SIGMAS[1] - 1) <= 0.10, sig
    assert abs(float(fit.lambda2) * 9 - 1) <= 0.10, fit.lambda2
    err = np.linalg.norm(np.asarray(fit.sphere.center) - np.asarray(_truth().center))
    assert err <= 2e-3, err  # 35 electrodes, ico-2: measured 1.4 mm
    path = fit.trace.path()
    # BFGS accepts only decreasing values; the first point is the start, the
    # last the final model re-evaluated with a cold Berg–Scherg fit
    assert len(path["values"]) >= 3
    assert np.all(np.diff(path["values"][:-1]) <= 1e-12 * abs(path["values"][0]))
    assert abs(path["values"][-1] - path["values"][-2]) <= 1e-6 * abs(path["values"][0])
    np.testing.assert_allclose(
        path["conductivities"][0], ex.SphereModel().conductivities
    )
    assert path["values"][-1] == pytest.approx(float(fit.value), rel=1e-12)


def test_known_dipoles_levenberg_marquardt_recovers_exact_model(dipoles):
    """Noise-free dipole data: LM (forward-mode Jacobians through the
    Berg–Scherg refit) reaches the truth."""
    el, pos, mom, cov, y = dipoles
    crit = hf.KnownDipoles(jnp.asarray(pos), jnp.asarray(mom))
    solver = optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10)
    fit = hf.fit_head_model(y, el, cov, ex.SphereModel(), crit, solver=solver)
    assert bool(fit.status.converged)
    np.testing.assert_allclose(fit.sphere.conductivities[1], TRUTH_SIGMAS[1], rtol=1e-5)
    np.testing.assert_allclose(fit.sphere.center, _truth().center, atol=1e-6)
    assert fit.berg_scherg is not None


def test_sources_kept_inside_instead_of_aborting(dipoles):
    """A probe that moves the centre so that sources leave the inner shell gets
    a finite, penalised objective (no EquinoxRuntimeError); a fit started
    there (unknown moments, BFGS) comes back inside and reaches the truth."""
    el, pos, mom, cov, y = dipoles
    crit = hf.UnknownMoments(jnp.asarray(pos))
    far = ex.SphereModel(center=(0.0, 0.0, 0.055))  # 2 sources outside
    prob = hf.make_head_model_problem(y, el, cov, far, crit)
    p = prob.init_params()
    p["center"] = jnp.array([0.0, 0.0, 5.0])  # 5 cm further up
    p["log_sigma"] = jnp.array([1e4])  # far beyond its box (e^1e4 = inf)
    # eagerly (the library's compiled kernels, the glue op by op): the same
    # objective as the solver's traced probes, without compiling it once more
    v, aux = prob.evaluate(p)
    assert np.isfinite(float(v)) and float(aux.penalty) > 0
    fit = hf.fit_head_model(y, el, cov, far, crit)
    assert fit.status.result == RESULTS.successful
    assert float(fit.status.stats["penalty"]) == 0.0
    np.testing.assert_allclose(fit.sphere.conductivities[1], TRUTH_SIGMAS[1], rtol=1e-5)
    np.testing.assert_allclose(fit.sphere.center, _truth().center, atol=1e-6)


def test_failed_refit_is_reported(dipoles, monkeypatch):
    """A Berg–Scherg refit that fails reaches the status (refit_failed, and a
    count over the accepted points), never the forward silently."""
    el, pos, mom, cov, y = dipoles
    real = hf.berg_scherg_params

    def failing(sphere, **kw):
        fit = real(sphere, **kw)
        st = eqx.tree_at(
            lambda s: s.result,
            fit.status,
            RESULTS.where(jnp.asarray(True), RESULTS.poor_fit, fit.status.result),
        )
        return fit._replace(status=st)

    monkeypatch.setattr(hf, "berg_scherg_params", failing)
    crit = hf.KnownDipoles(jnp.asarray(pos), jnp.asarray(mom))
    fit = hf.fit_head_model(y, el, cov, ex.SphereModel(), crit, throw=False)
    assert fit.status.result == RESULTS.refit_failed
    assert int(fit.status.stats["refit_failures"]) >= 1
    with pytest.raises(RuntimeError, match="Berg–Scherg refit"):  # same compile
        hf.fit_head_model(y, el, cov, ex.SphereModel(), crit)


def test_parameterisation_keeps_radii_ordered(dipoles):
    el, pos, mom, cov, y = dipoles
    prob = hf.make_head_model_problem(
        y, el, cov, ex.SphereModel(), hf.UnknownMoments(jnp.asarray(pos)),
        fit_radii=True, fit_conductivities=(0, 1),
    )  # fmt: skip
    p0 = prob.init_params()
    sph, lam = prob.unpack(p0)
    np.testing.assert_allclose(sph.radii, ex.SphereModel().radii, rtol=1e-15)
    np.testing.assert_allclose(sph.conductivities, ex.SphereModel().conductivities)
    rng = np.random.default_rng(5)
    for _ in range(20):
        p = _shift(p0, _direction(p0, int(rng.integers(1000))), 5.0)
        r = np.asarray(prob.unpack(p)[0].radii)
        assert np.all(r > 0) and np.all(np.diff(r) > 0)


def test_bad_input_names_the_argument(dipoles):
    el, pos, mom, cov, y = dipoles
    crit = hf.UnknownMoments(jnp.asarray(pos))
    sph = ex.SphereModel()
    with pytest.raises(TypeError, match="criterion"):
        hf.fit_head_model(y, el, cov, sph, "evidence")
    with pytest.raises(TypeError, match="sphere"):
        hf.fit_head_model(y, el, cov, (0.07, 0.08), crit)
    with pytest.raises(ValueError, match="data"):
        hf.fit_head_model(y[:-1], el, cov, sph, crit)
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="data"):
        hf.fit_head_model(bad, el, cov, sph, crit)
    with pytest.raises(ValueError, match="fit_conductivities"):
        hf.fit_head_model(y, el, cov, sph, crit, fit_conductivities=(3,))
    with pytest.raises(ValueError, match="noise_cov"):
        hf.fit_head_model(y, el, cov[:-1, :-1], sph, crit)
    with pytest.raises(ValueError, match="forward"):
        hf.fit_head_model(y, el, cov, sph, crit, forward="bem")
    with pytest.raises(ValueError, match="n_terms"):
        hf.fit_head_model(y, el, cov, sph, crit, n_terms=100)
    with pytest.raises(ValueError, match="lambda2"):
        hf.fit_head_model(y, el, cov, sph, crit, lambda2=-1.0)
    with pytest.raises(TypeError, match="solver"):
        hf.fit_head_model(y, el, cov, sph, crit, solver="bfgs")
    with pytest.raises(TypeError, match="not a sum of squares"):
        hf.fit_head_model(
            y, el, cov, sph, hf.DistributedSources(jnp.asarray(pos)),
            solver=optx.LevenbergMarquardt(1e-8, 1e-8),
        )  # fmt: skip
    with pytest.raises(ValueError, match="moments"):
        hf.fit_head_model(
            y, el, cov, sph, hf.KnownDipoles(jnp.asarray(pos), mom[:, :, :5])
        )
    with pytest.raises(ValueError, match="src_pos"):
        hf.fit_head_model(y, el, cov, sph, hf.UnknownMoments(jnp.zeros((0, 3))))
    with pytest.raises(ValueError, match="max_steps"):
        hf.fit_head_model(y, el, cov, sph, crit, max_steps=0)
