"""float32 (the default dtype) agrees with float64: values and gradients.

Every public differentiable stage is differentiated on a problem in SI units
(electrodes and sources in m, gain in V/(A·m), noise in V, covariance in V²),
once with float64 inputs and once with the same inputs cast to float32; the
float32 gradient must be within 1e-2 (relative, in the norm of the whole
gradient) of the float64 one, which the other test modules check against
central finite differences. Squares of physical quantities reach 1e±20 here:
before the scale-free forms these gradients were off by 0.5-2.2x.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exg_jax as ex
from exg_jax.inverse import METHOD_ALIASES

RTOL = 1e-2
METHODS = tuple(METHOD_ALIASES)  # MNE's strings, one per method object
ELORETA = ex.eLORETA(eps=1e-6, max_iter=100)


def _m(method):
    """The method object: eLORETA with the settings above, else the string."""
    return ELORETA if method == "eLORETA" else method


def _rel(a32, a64):
    a32 = np.asarray(a32, np.float64)
    a64 = np.asarray(a64, np.float64)
    return float(np.linalg.norm(a32 - a64) / np.linalg.norm(a64))


def _tree_cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda x: (
            jnp.asarray(x, dtype)
            if isinstance(x, jax.Array | np.ndarray)
            and jnp.issubdtype(x.dtype, jnp.floating)
            else x
        ),
        tree,
    )


@pytest.fixture(scope="module")
def problem():
    """A small average-referenced SI-unit problem (float64 arrays)."""
    sphere = ex.SphereModel()
    _, elec = ex.standard_montage("standard_1020", radius=0.075, center=sphere.center)
    src_pos, src_nn = ex.ico_source_space(1, radius=0.055, center=sphere.center)
    rng = np.random.default_rng(3)
    n_chan = elec.shape[0]
    noise = rng.standard_normal((n_chan, 2000)) * 1e-7  # V (‖W G‖²_F ≈ 1e21)
    cov = ex.compute_covariance(jnp.asarray(noise))
    fwd = ex.make_sphere_forward_free(
        jnp.asarray(elec), jnp.asarray(src_pos), sphere, src_nn=jnp.asarray(src_nn)
    )
    # evoked-like data: a source pattern plus noise, V
    amp = rng.standard_normal((fwd.gain.shape[1], 1)) * 1e-8  # A·m
    wave = np.sin(np.linspace(0, 3, 40))[None, :]
    data = (
        np.asarray(fwd.gain) @ (amp * wave) + rng.standard_normal((n_chan, 40)) * 1e-7
    )
    return dict(
        sphere=sphere,
        elec=np.asarray(elec),
        src_pos=np.asarray(src_pos),
        src_nn=np.asarray(src_nn),
        cov=np.asarray(cov.data),
        noise=noise,
        gain=np.asarray(fwd.gain),
        data=data,
    )


def _both(fn, *args):
    """Value and gradient (w.r.t. the first argument) in float64 and float32."""
    out = {}
    for dtype in (jnp.float64, jnp.float32):
        cast = [_tree_cast(jnp.asarray(a), dtype) for a in args]
        val, grad = jax.value_and_grad(fn)(*cast)
        assert val.dtype == dtype, (val.dtype, dtype)
        assert grad.dtype == dtype, (grad.dtype, dtype)
        assert np.all(np.isfinite(np.asarray(grad)))
        out[dtype] = (val, grad)
    return out[jnp.float32], out[jnp.float64]


def _inverse(gain, cov, p, loose=0.2, depth=0.8):
    fwd = ex.ForwardOperator(
        gain=gain,
        src_pos=jnp.asarray(p["src_pos"], gain.dtype),
        src_nn=jnp.asarray(p["src_nn"], gain.dtype),
        orientation="free",
        reference="average",
    )
    return ex.make_inverse_operator(fwd, cov, depth=depth, loose=loose)


# --------------------------------------------------------------------------- #
# The whole pipeline, differentiated once per method and dtype
# --------------------------------------------------------------------------- #
SPHERE0 = {
    "radii": np.array([0.067, 0.070, 0.075]),
    "conductivities": np.array([0.33, 0.0042, 0.33]),
    "center": np.array([0.0, 0.0, 0.04]),
}


@pytest.fixture(scope="module")
def pipeline(problem):
    """``pipeline(method)``: value and gradient, in float32 and float64, of

    ``sum(apply_inverse(data, make_inverse_operator(fwd, cov), lambda2).data)``

    with ``fwd`` the sphere forward of the default model (its radii,
    conductivities and centre the variables) plus a zero gain offset, ``cov``
    and ``lambda2`` variables too. One reverse pass per dtype gives every
    gradient the tests below check: the README's d/d sigma_skull (the middle
    conductivity), d/d gain (= d/d offset), d/d cov and d/d lambda2, each the
    same partial derivative as when it alone is differentiated. Eager, like a
    user's ``jax.grad``; computed once per method (the compiled derivatives of
    the forward and the inverse operator are shared by all methods).
    """
    p = problem
    memo = {}

    def loss(args, method):
        kw, offset, cov, lam = args
        dt = lam.dtype
        f = ex.make_sphere_forward_free(
            jnp.asarray(p["elec"], dt),
            jnp.asarray(p["src_pos"], dt),
            ex.SphereModel(**kw),
            src_nn=jnp.asarray(p["src_nn"], dt),
        )
        f = eqx.tree_at(lambda f: f.gain, f, f.gain + offset)
        i = ex.make_inverse_operator(f, cov, loose=0.2)  # depth 0.8
        stc = ex.apply_inverse(jnp.asarray(p["data"], dt), i, lam, method=_m(method))
        return jnp.sum(stc.data)

    def get(method):
        if method not in memo:
            args = (SPHERE0, np.zeros_like(p["gain"]), p["cov"], np.asarray(1 / 9))
            out = {}
            for dtype in (jnp.float64, jnp.float32):
                val, grad = jax.value_and_grad(loss)(_tree_cast(args, dtype), method)
                assert val.dtype == dtype, (val.dtype, dtype)
                for g in jax.tree_util.tree_leaves(grad):
                    assert g.dtype == dtype, (g.dtype, dtype)
                    assert np.all(np.isfinite(np.asarray(g)))
                out[dtype] = (val, grad)
            memo[method] = out[jnp.float32], out[jnp.float64]
        return memo[method]

    return get


# --------------------------------------------------------------------------- #
# The README's example: d loss / d sigma_skull through forward and inverse
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA"])
def test_readme_gradient_sigma_skull(pipeline, method):
    (v32, g32), (v64, g64) = pipeline(method)
    g32, g64 = g32[0]["conductivities"][1], g64[0]["conductivities"][1]
    assert abs(float(v32) - float(v64)) <= 1e-3 * abs(float(v64))
    assert _rel(g32, g64) <= RTOL, (float(g32), float(g64))


# --------------------------------------------------------------------------- #
# Forward: sphere radii, conductivities, centre
# --------------------------------------------------------------------------- #
def test_forward_sphere_gradients(problem):
    """Gradient w.r.t. radii, conductivities and centre at once (one compile per
    dtype), each block compared separately."""
    p = problem
    base = SPHERE0
    w = np.random.default_rng(0).standard_normal(p["gain"].shape)

    def loss(kw):
        dt = kw["radii"].dtype
        f = ex.make_sphere_forward_free(
            jnp.asarray(p["elec"], dt),
            jnp.asarray(p["src_pos"], dt),
            ex.SphereModel(**kw),
            src_nn=jnp.asarray(p["src_nn"], dt),
        )
        return jnp.sum(f.gain * jnp.asarray(w, dt))

    grads = {}
    for dtype in (jnp.float64, jnp.float32):
        val, grad = jax.value_and_grad(loss)(_tree_cast(base, dtype))
        assert val.dtype == dtype
        for k, g in grad.items():
            assert g.dtype == dtype, k
            assert np.all(np.isfinite(np.asarray(g))), k
        grads[dtype] = grad
    for k in base:
        assert _rel(grads[jnp.float32][k], grads[jnp.float64][k]) <= RTOL, k


# --------------------------------------------------------------------------- #
# Inverse operator and application: gain, covariance, lambda2
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_gradient_wrt_gain(pipeline, method):
    (v32, g32), (v64, g64) = pipeline(method)
    assert abs(float(v32) - float(v64)) <= 1e-3 * abs(float(v64))
    assert _rel(g32[1], g64[1]) <= RTOL


@pytest.mark.parametrize("method", METHODS)
def test_gradient_wrt_covariance(pipeline, method):
    (_, g32), (_, g64) = pipeline(method)
    assert _rel(g32[2], g64[2]) <= RTOL


@pytest.mark.parametrize("method", METHODS)
def test_gradient_wrt_lambda2(pipeline, method):
    (_, g32), (_, g64) = pipeline(method)
    assert g32[3].dtype == jnp.float32
    assert _rel(g32[3], g64[3]) <= RTOL


def test_scale_invariant_loss_has_no_radial_gradient(problem, pipeline):
    """dSPM is invariant to a scale of the gain: ⟨∂f/∂G, G⟩ = 0 (float32 too).

    ∂f/∂G of f = sum(apply_inverse(data, inv(G), 1/9, "dSPM").data) at the
    problem's gain G, from the pipeline's reverse pass."""
    for dt, (_, grad) in zip((jnp.float32, jnp.float64), pipeline("dSPM"), strict=True):
        g = jnp.asarray(problem["gain"], dt)
        grad = grad[1]
        assert grad.dtype == dt
        radial = float(jnp.sum(grad * g))
        scale = float(jnp.linalg.norm(grad) * jnp.linalg.norm(g))
        assert abs(radial) <= (1e-10 if dt == jnp.float64 else 1e-3) * scale


# --------------------------------------------------------------------------- #
# Covariance, resolution, SNR
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["empirical", "ledoit_wolf", "diagonal"])
def test_covariance_gradient(problem, method):
    p = problem
    w = np.random.default_rng(1).standard_normal(p["cov"].shape)

    def loss(noise):
        c = ex.compute_covariance(noise, method=method).data
        return jnp.sum(c * jnp.asarray(w, noise.dtype)) / jnp.sum(jnp.abs(c))

    (_, g32), (_, g64) = _both(loss, p["noise"][:, :400])
    assert _rel(g32, g64) <= RTOL


@pytest.mark.parametrize("method", METHODS)
def test_resolution_gradient_wrt_lambda2(problem, method):
    p = problem
    inv64 = _inverse(jnp.asarray(p["gain"]), jnp.asarray(p["cov"]), p)
    fwd64 = ex.ForwardOperator(
        gain=jnp.asarray(p["gain"]),
        src_pos=jnp.asarray(p["src_pos"]),
        src_nn=jnp.asarray(p["src_nn"]),
        orientation="free",
        reference="average",
    )
    out = {}
    for dt in (jnp.float64, jnp.float32):
        inv = _tree_cast(inv64, dt)
        fwd = _tree_cast(fwd64, dt)

        def loss(lam, inv=inv, fwd=fwd):
            R = ex.make_resolution_matrix(inv, fwd, lam, _m(method))
            sd = ex.resolution_metrics(R, fwd.src_pos, "psf", "sd_ext")
            return jnp.mean(sd)

        out[dt] = jax.value_and_grad(loss)(jnp.asarray(1 / 9, dt))
    (v32, g32), (v64, g64) = out[jnp.float32], out[jnp.float64]
    assert abs(float(v32) - float(v64)) <= 1e-3 * abs(float(v64))
    assert _rel(g32, g64) <= RTOL


def test_snr_gradient_wrt_data(problem):
    p = problem
    inv64 = _inverse(jnp.asarray(p["gain"]), jnp.asarray(p["cov"]), p)
    out = {}
    for dt in (jnp.float64, jnp.float32):
        inv = _tree_cast(inv64, dt)

        def loss(data, inv=inv):
            snr = ex.estimate_snr(data, inv).snr
            return jnp.sum(snr)

        out[dt] = jax.grad(loss)(jnp.asarray(p["data"], dt))
    assert _rel(out[jnp.float32], out[jnp.float64]) <= RTOL


# --------------------------------------------------------------------------- #
# Scale robustness: the same problem at extreme (but finite) scales
# --------------------------------------------------------------------------- #
SCALES = [(jnp.float32, s) for s in (1e-16, 1e4)] + [
    (jnp.float64, s) for s in (1e-150, 1e100)
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dtype", "data_scale"), SCALES)
def test_values_follow_the_scale(problem, dtype, method, data_scale):
    """Noise and data scaled by c: dSPM / sLORETA unchanged, MNE / eLORETA × 1."""
    p = problem
    c = data_scale / 1e-7
    gain = jnp.asarray(p["gain"], dtype)
    ref = _inverse(jnp.asarray(p["gain"]), jnp.asarray(p["cov"]), p)
    ref_stc = ex.apply_inverse(jnp.asarray(p["data"]), ref, 1 / 9, _m(method))
    cov = ex.compute_covariance(jnp.asarray(p["noise"] * c, dtype))
    inv = _inverse(gain, cov, p)
    stc = ex.apply_inverse(jnp.asarray(p["data"] * c, dtype), inv, 1 / 9, _m(method))
    got = np.asarray(stc.data, np.float64)
    assert np.all(np.isfinite(got)) and np.any(got != 0)
    want = np.asarray(ref_stc.data)
    if method in ("MNE", "eLORETA"):
        want = want * c  # the source amplitude scales with the data (A·m)
    tol = 2e-3 if dtype == jnp.float32 else 1e-9
    assert _rel(got, want) <= tol
