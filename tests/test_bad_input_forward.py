"""Bad input to the head model, forward, montage and source space (issue 9, §3).

Each case asserts the exception type and that the message names the argument.
Classes: 3.4 checks that survive tracing (``eqx.error_if`` under jit / vmap /
grad), 3.5 degenerate sizes, 3.6 units and dtypes, 3.7 argument types, and
inputs that must not be mutated. Problems are tiny (21 electrodes, ico-0
sources, short series) so that the file runs in well under a minute.

Under ``eqx.filter_jit`` (and eagerly under ``vmap`` / ``grad``) a failed
``eqx.error_if`` raises ``eqx.EquinoxRuntimeError``; under a plain
``jax.jit`` the same message arrives inside a ``jax.errors.JaxRuntimeError``
(or a ``ValueError`` from jaxlib's C++ dispatch path), see ``JAX_JIT_ERRORS``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exg_jax.forward import ForwardOperator
from exg_jax.montage import standard_montage
from exg_jax.source_space import grid_source_space, ico_n_vertices, ico_source_space
from exg_jax.sphere import (
    SphereModel,
    berg_scherg_params,
    fit_sphere_to_headshape,
    sphere_series_coefficients,
)
from exg_jax.sphere_forward import make_sphere_forward, make_sphere_forward_free

CENTER = np.array([0.0, 0.0, 0.04])
EL = standard_montage("standard_1020", radius=0.075, center=CENTER)[1]  # (21, 3)
POS, NN = (np.asarray(a) for a in ico_source_space(0, 0.05, CENTER))  # 12 sources
# MNE-Python's (mu, lam) for the 3-shell default: no Berg–Scherg fit is compiled.
BS = (
    np.array([0.99531224, 0.83427871, 0.55377776]),
    np.array([0.183778, 0.65960259, 1.44205458]),
)
RADII = np.array([0.067, 0.070, 0.075])
SIGMAS = np.array([0.33, 0.0042, 0.33])

TRACED = eqx.EquinoxRuntimeError
JAX_JIT_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError, ValueError)


def _points(n=30, seed=0, radius=0.09):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 3))
    u[:, 2] = np.abs(u[:, 2])
    return CENTER + radius * u / np.linalg.norm(u, axis=1, keepdims=True)


# --------------------------------------------------------------------------- #
# 3.4 SphereModel values: eager ValueError naming the argument
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(conductivities=(0.33, 0.0, 0.33)), "conductivities"),
        (dict(conductivities=(0.33, -0.004, 0.33)), "conductivities"),
        (dict(conductivities=(0.33, np.nan, 0.33)), "conductivities"),
        (dict(radii=(0.070, 0.067, 0.075)), "radii.*strictly increasing"),
        (dict(radii=(0.0, 0.070, 0.075)), "radii"),
        (dict(radii=(67.0, 70.0, 75.0)), "radii.*metres"),  # 3.6: millimetres
        (dict(center=(0.0, np.inf, 0.0)), "center"),
    ],
)
def test_sphere_model_eager(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SphereModel(**kwargs)


# --------------------------------------------------------------------------- #
# 3.4 SphereModel values under jit / vmap / grad: eqx.error_if in the kernels
# --------------------------------------------------------------------------- #
BAD_TRACED = {
    "sigma_zero": ("conductivities", np.array([0.33, 0.0, 0.33]), "conductivities"),
    "sigma_neg": ("conductivities", np.array([0.33, -0.1, 0.33]), "conductivities"),
    "sigma_nan": ("conductivities", np.array([0.33, np.nan, 0.33]), "conductivities"),
    "radii_unsorted": ("radii", np.array([0.070, 0.067, 0.075]), "radii"),
    "radii_zero": ("radii", np.array([0.0, 0.070, 0.075]), "radii"),
    "radii_mm": ("radii", np.array([67.0, 70.0, 75.0]), "radii.*metres"),
}


def _model(which, x):
    kw = {"radii": RADII, "conductivities": SIGMAS, "center": CENTER}
    kw[which] = x
    return SphereModel(**kw)


def _coeff_loss(which, x):
    return jnp.sum(sphere_series_coefficients(_model(which, x), 20))


# One compiled function per (transform, argument): reused across the cases.
_COEFF_JIT = {
    w: eqx.filter_jit(lambda x, w=w: _coeff_loss(w, x))
    for w in ("radii", "conductivities")
}


def _coeffs_traced(transform, which, x):
    if transform == "jit":
        return _COEFF_JIT[which](jnp.asarray(x))
    if transform == "vmap":  # a batch of one good and one bad model
        good = RADII if which == "radii" else SIGMAS
        batch = jnp.stack([jnp.asarray(good), jnp.asarray(x)])
        return jax.vmap(lambda v: _coeff_loss(which, v))(batch)
    return jax.grad(lambda v: _coeff_loss(which, v))(jnp.asarray(x))


@pytest.mark.parametrize("transform", ["jit", "vmap", "grad"])
@pytest.mark.parametrize("case", sorted(BAD_TRACED))
def test_series_coefficients_traced(case, transform):
    which, x, match = BAD_TRACED[case]
    with pytest.raises(TRACED, match=match):
        jax.block_until_ready(_coeffs_traced(transform, which, x))


def test_series_coefficients_traced_good_model_passes():
    for transform in ("jit", "vmap", "grad"):
        out = _coeffs_traced(transform, "conductivities", SIGMAS)
        assert np.all(np.isfinite(np.asarray(out)))


_EXACT_JIT = eqx.filter_jit(
    lambda c: (
        make_sphere_forward_free(
            EL, POS, _model("conductivities", c), method="exact", n_terms=20
        ).gain
    )
)
_BS_GIVEN_JIT = eqx.filter_jit(
    lambda r: make_sphere_forward_free(EL, POS, _model("radii", r), berg_scherg=BS).gain
)


@pytest.mark.parametrize(
    "kernel, x, match",
    [
        ("exact_jit", np.array([0.33, -0.1, 0.33]), "conductivities"),
        ("exact_jit", np.array([0.33, np.nan, 0.33]), "conductivities"),
        ("exact_vmap", np.array([0.33, 0.0, 0.33]), "conductivities"),
        # berg_scherg given: the gain does not use the conductivities' values,
        # the model is still checked.
        ("bs_given_jit", np.array([0.070, 0.067, 0.075]), "radii"),
        ("bs_given_jit", np.array([0.067, 0.070, 7.5]), "radii.*metres"),
    ],
)
def test_forward_traced_sphere(kernel, x, match):
    with pytest.raises(TRACED, match=match):
        if kernel == "exact_jit":
            out = _EXACT_JIT(jnp.asarray(x))
        elif kernel == "exact_vmap":
            batch = jnp.stack([jnp.asarray(SIGMAS), jnp.asarray(x)])
            out = jax.vmap(
                lambda c: (
                    make_sphere_forward_free(
                        EL, POS, _model("conductivities", c), method="exact", n_terms=20
                    ).gain
                )
            )(batch)
        else:
            out = _BS_GIVEN_JIT(jnp.asarray(x))
        jax.block_until_ready(out)


_GEOM_JIT = eqx.filter_jit(
    lambda e, p: make_sphere_forward_free(e, p, SphereModel(), berg_scherg=BS).gain
)


def _outside(p):
    p = p.copy()
    p[3] = CENTER + [0.0, 0.0, 0.068]
    return p


def _nan(a):
    a = a.copy()
    a[1, 1] = np.nan
    return a


@pytest.mark.parametrize(
    "el, pos, match",
    [
        (EL, _outside(POS), "src_pos.*innermost"),
        (
            np.where(np.arange(21)[:, None] == 0, CENTER + [0, 0, 0.05], EL),
            POS,
            "electrodes.*inside",
        ),
        (EL * 1000.0, POS, "electrodes.*metres"),  # 3.6 under jit: mm electrodes
        (EL * 100.0, POS, "electrodes.*metres"),  # cm
        (_nan(EL), POS, "electrodes.*NaN"),
        (EL, _nan(POS), "src_pos.*NaN"),
    ],
    ids=["src_outside", "el_inside", "el_mm", "el_cm", "el_nan", "src_nan"],
)
def test_forward_traced_geometry(el, pos, match):
    with pytest.raises(TRACED, match=match):
        jax.block_until_ready(_GEOM_JIT(jnp.asarray(el), jnp.asarray(pos)))


def test_forward_traced_geometry_plain_jax_jit():
    f = jax.jit(
        lambda e: make_sphere_forward_free(e, POS, SphereModel(), berg_scherg=BS).gain
    )
    with pytest.raises(JAX_JIT_ERRORS, match="electrodes.*metres"):
        jax.block_until_ready(f(jnp.asarray(EL * 1000.0)))


def test_forward_traced_berg_scherg_mu():
    f = eqx.filter_jit(
        lambda mu: (
            make_sphere_forward_free(
                EL, POS, SphereModel(), berg_scherg=(mu, BS[1])
            ).gain
        )
    )
    with pytest.raises(TRACED, match="berg_scherg"):
        jax.block_until_ready(f(jnp.array([1.5, 0.8, 0.5])))


# --------------------------------------------------------------------------- #
# 3.4 Berg–Scherg fit: a failed fit never reaches the forward silently
# --------------------------------------------------------------------------- #
# One dipole stopped after 1 iteration: not converged, misfit 4.4e-2 > 1e-3.
_FAIL = dict(n_fit=1, max_iter=1, n_terms=20, n_starts=1)


def test_berg_scherg_failure_eager():
    with pytest.raises(RuntimeError, match="max_iter.*throw=False"):
        berg_scherg_params(SphereModel(), **_FAIL)


# One compiled program for both traced Berg–Scherg cases.
_BS_FAIL_JIT = eqx.filter_jit(
    lambda c: berg_scherg_params(_model("conductivities", c), **_FAIL).mu
)


def test_berg_scherg_failure_traced():
    with pytest.raises(TRACED, match="max_iter.*throw=False"):
        jax.block_until_ready(_BS_FAIL_JIT(jnp.asarray(SIGMAS)))


def test_berg_scherg_throw_false_reports_status():
    status = berg_scherg_params(SphereModel(), **_FAIL, throw=False).status
    assert not bool(status.converged) and float(status.stats["misfit"]) > 1e-3


def test_berg_scherg_throw_type():
    with pytest.raises(TypeError, match="throw"):
        berg_scherg_params(SphereModel(), throw="yes")


def test_berg_scherg_traced_bad_sphere():
    with pytest.raises(TRACED, match="conductivities"):
        jax.block_until_ready(_BS_FAIL_JIT(jnp.array([0.33, -0.1, 0.33])))


# --------------------------------------------------------------------------- #
# 3.4 fit_sphere_to_headshape: degenerate points, eagerly and traced
# --------------------------------------------------------------------------- #
def _coplanar():
    p = _points()
    p[:, 2] = 0.05
    return p


def _collinear():
    t = np.linspace(0, 1, 10)[:, None]
    return CENTER + t * np.array([0.01, 0.02, 0.03])


def _coincident():
    return np.tile(CENTER, (8, 1))


DEGENERATE = {"coplanar": _coplanar, "collinear": _collinear, "coincident": _coincident}


@pytest.mark.parametrize("kind", sorted(DEGENERATE))
def test_fit_sphere_degenerate_eager(kind):
    with pytest.raises(ValueError, match="points are degenerate"):
        fit_sphere_to_headshape(DEGENERATE[kind]())


_FIT_JIT = eqx.filter_jit(fit_sphere_to_headshape)


@pytest.mark.parametrize("transform", ["jit", "vmap", "grad"])
@pytest.mark.parametrize("kind", ["coplanar", "collinear", "nan"])
def test_fit_sphere_degenerate_traced(kind, transform):
    if kind == "nan":
        pts, match = _nan(_points()), "points contain NaN"
    else:
        pts, match = DEGENERATE[kind](), "points are degenerate"
        pts = np.resize(pts, (30, 3))  # same shape as the good batch element
    with pytest.raises(TRACED, match=match):
        if transform == "jit":
            out = _FIT_JIT(jnp.asarray(pts))
        elif transform == "vmap":
            out = jax.vmap(fit_sphere_to_headshape)(
                jnp.stack([jnp.asarray(_points()), jnp.asarray(pts)])
            )
        else:
            out = jax.grad(lambda p: fit_sphere_to_headshape(p)[0])(jnp.asarray(pts))
        jax.block_until_ready(out)


@pytest.mark.parametrize(
    "pts, exc, match",
    [
        (_points()[:3], ValueError, "points must contain at least 4"),
        (_points()[:, :2], ValueError, "points must have shape"),
        (_nan(_points()), ValueError, "points contains"),
        (_points().astype(np.float16), TypeError, "points.*float32 or float64"),
        ("electrodes.sfp", TypeError, "points"),
        (None, TypeError, "points"),
    ],
    ids=["three", "2d", "nan", "float16", "str", "none"],
)
def test_fit_sphere_bad_points(pts, exc, match):
    with pytest.raises(exc, match=match):
        fit_sphere_to_headshape(pts)


# --------------------------------------------------------------------------- #
# 3.5 Degenerate sizes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: make_sphere_forward_free(
                EL[:1], POS, SphereModel(), berg_scherg=BS
            ),
            "electrodes.*at least 2",
        ),
        (
            lambda: make_sphere_forward(EL[:1], POS, NN, SphereModel(), berg_scherg=BS),
            "electrodes.*at least 2",
        ),
        (
            lambda: eqx.filter_jit(
                lambda e: (
                    make_sphere_forward_free(e, POS, SphereModel(), berg_scherg=BS).gain
                )
            )(jnp.asarray(EL[:1])),
            "electrodes.*at least 2",
        ),
        (
            lambda: make_sphere_forward_free(
                EL[:0], POS, SphereModel(), berg_scherg=BS
            ),
            "electrodes",
        ),
        (
            lambda: make_sphere_forward_free(
                EL, POS[:0], SphereModel(), berg_scherg=BS
            ),
            "src_pos",
        ),
        (
            lambda: make_sphere_forward(
                EL, POS[:0], NN[:0], SphereModel(), berg_scherg=BS
            ),
            "src_pos",
        ),
        (
            lambda: ForwardOperator(
                jnp.ones((1, 12)), jnp.asarray(POS), jnp.asarray(NN), "fixed", "average"
            ),
            "reference='average'.*2 channels",
        ),
        (
            lambda: ForwardOperator(
                jnp.ones((0, 12)), jnp.asarray(POS), jnp.asarray(NN), "fixed", None
            ),
            "gain",
        ),
        (
            lambda: ForwardOperator(
                jnp.ones((5, 0)), jnp.ones((0, 3)), jnp.ones((0, 3)), "fixed", None
            ),
            "src_pos",
        ),
    ],
    ids=[
        "free_1el",
        "fixed_1el",
        "jit_1el",
        "0el",
        "0src",
        "fixed_0src",
        "op_1ch",
        "op_0ch",
        "op_0src",
    ],
)
def test_degenerate_sizes(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_one_electrode_without_reference_is_fine():
    g = make_sphere_forward_free(
        EL[:1], POS, SphereModel(), reference=None, berg_scherg=BS
    ).gain
    assert g.shape == (1, 36) and np.all(np.asarray(g) != 0)


# --------------------------------------------------------------------------- #
# 3.6 Units and dtypes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "el, match",
    [
        (EL * 1000.0, r"electrodes.*1\.27e\+03 x the outer radius.*divide by 1000"),
        (EL * 100.0, r"electrodes.*metres"),
        (CENTER + (EL - CENTER) * 3.0, r"electrodes.*0\.5 <= median"),
    ],
    ids=["mm", "cm", "far"],
)
def test_electrode_units(el, match):
    with pytest.raises(ValueError, match=match):
        make_sphere_forward_free(el, POS, SphereModel(), berg_scherg=BS)


@pytest.mark.parametrize(
    "name",
    [
        "electrodes",
        "src_pos",
        "src_nn",
        "radii",
        "conductivities",
        "center",
        "berg_scherg mu",
    ],
)
@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_low_precision_rejected(name, dtype):
    args = {"electrodes": EL, "src_pos": POS, "src_nn": NN}
    sph = {"radii": RADII, "conductivities": SIGMAS, "center": CENTER}
    mu = BS[0]
    if name in args:
        args[name] = np.asarray(args[name]).astype(dtype)
    elif name in sph:
        sph[name] = np.asarray(sph[name]).astype(dtype)
    else:
        mu = mu.astype(dtype)
    with pytest.raises(TypeError, match=f"{name}.*float32 or float64"):
        make_sphere_forward(
            args["electrodes"],
            args["src_pos"],
            args["src_nn"],
            SphereModel(**sph),
            berg_scherg=(mu, BS[1]),
        )


def test_integer_inputs_are_upcast():
    # Integer geometry is cast to the default float dtype (documented).
    m = SphereModel(conductivities=(1, 1, 1))
    assert jnp.issubdtype(m.conductivities.dtype, jnp.floating)
    fn = sphere_series_coefficients(m, 10)
    np.testing.assert_allclose(np.asarray(fn), 1.0, rtol=1e-12)


def test_ico_radius_in_mm_then_forward_rejects():
    # A source space built in mm never reaches the forward silently.
    pos, _ = ico_source_space(0, 50.0, CENTER * 1000)
    with pytest.raises(ValueError, match="src_pos"):
        make_sphere_forward_free(EL, pos, SphereModel(), berg_scherg=BS)


# --------------------------------------------------------------------------- #
# 3.7 Argument types
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "call",
    [
        lambda: sphere_series_coefficients(SphereModel(), np.int64(20)),
        lambda: berg_scherg_params(
            SphereModel.single_shell(), n_terms=np.int32(20), n_fit=np.int64(2)
        ),
        lambda: make_sphere_forward_free(
            EL, POS, SphereModel(), method="exact", n_terms=np.int64(20)
        ),
        lambda: ico_source_space(np.int64(1), np.float32(0.05), CENTER),
        lambda: grid_source_space(np.float32(0.02), np.float64(0.05), CENTER),
        lambda: standard_montage(
            "standard_1020", radius=np.float32(0.075), center=CENTER
        ),
        lambda: ico_n_vertices(np.int16(2)),
        lambda: SphereModel.single_shell(np.float32(0.09), np.float64(0.33)),
    ],
    ids=[
        "coeffs",
        "bs",
        "forward",
        "ico",
        "grid",
        "montage",
        "n_vertices",
        "single_shell",
    ],
)
def test_numpy_scalars_accepted(call):
    out = call()
    assert out is not None


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: sphere_series_coefficients(SphereModel(), 20.0), TypeError, "n_terms"),
        (
            lambda: sphere_series_coefficients(SphereModel(), "200"),
            TypeError,
            "n_terms",
        ),
        (lambda: sphere_series_coefficients(SphereModel(), True), TypeError, "n_terms"),
        (
            lambda: berg_scherg_params(SphereModel(), max_iter=10.5),
            TypeError,
            "max_iter",
        ),
        (
            lambda: make_sphere_forward_free(
                EL, POS, SphereModel(), method="exact", n_terms=2.5
            ),
            TypeError,
            "n_terms",
        ),
        (lambda: ico_source_space("2", 0.05, CENTER), TypeError, "n must"),
        (
            lambda: ico_source_space(8, 0.05, CENTER),
            ValueError,
            r"n must lie in \[0, 7\]",
        ),
        (lambda: ico_source_space(1, "5 cm", CENTER), TypeError, "radius"),
        (lambda: ico_source_space(1, 0.05, "origin"), TypeError, "center"),
        (lambda: grid_source_space("1 cm", 0.05, CENTER), TypeError, "spacing"),
        (lambda: standard_montage(radius=np.inf), ValueError, "radius"),
        (lambda: standard_montage(radius=np.nan), ValueError, "radius"),
        (lambda: standard_montage(radius=0.0), ValueError, "radius"),
        (lambda: standard_montage(radius=-0.075), ValueError, "radius"),
        (lambda: standard_montage(radius="0.075"), TypeError, "radius"),
        (lambda: standard_montage(radius=(0.07, 0.08)), ValueError, "radius"),
        (
            lambda: standard_montage("no_such_montage"),
            ValueError,
            "kind.*standard_1020.*standard_1010",
        ),
        (lambda: standard_montage(1020), TypeError, "kind"),
        (lambda: standard_montage(center="Cz"), TypeError, "center"),
        (
            lambda: make_sphere_forward_free("EL", POS, SphereModel()),
            TypeError,
            "electrodes",
        ),
        (
            lambda: make_sphere_forward_free(EL, "POS", SphereModel()),
            TypeError,
            "src_pos",
        ),
        (
            lambda: make_sphere_forward(EL, POS, "NN", SphereModel()),
            TypeError,
            "src_nn",
        ),
        (
            lambda: make_sphere_forward_free(
                EL, POS, SphereModel(), src_nn=np.ones((12, 3), bool)
            ),
            TypeError,
            "src_nn",
        ),
        (
            lambda: make_sphere_forward_free(EL + 0j, POS, SphereModel()),
            TypeError,
            "electrodes",
        ),
        (lambda: SphereModel(radii="0.067 0.07 0.075"), TypeError, "radii"),
        (lambda: SphereModel(conductivities=None), TypeError, "conductivities"),
    ],
)
def test_argument_types(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- #
# Inputs are never mutated
# --------------------------------------------------------------------------- #
def test_numpy_inputs_not_mutated():
    el, pos, nn, pts, center = (
        EL.copy(),
        POS.copy(),
        NN.copy(),
        _points(),
        CENTER.copy(),
    )
    rad, sig = RADII.copy(), SIGMAS.copy()
    before = [a.copy() for a in (el, pos, nn, pts, center, rad, sig)]
    sph = SphereModel(rad, sig, center)
    make_sphere_forward_free(el, pos, sph, src_nn=nn, berg_scherg=BS)
    make_sphere_forward_free(el, pos, sph, method="exact", n_terms=20)
    fit_sphere_to_headshape(pts)
    standard_montage("standard_1020", radius=0.075, center=center)
    ico_source_space(0, 0.05, center)
    grid_source_space(0.02, 0.05, center)
    for b, a in zip(before, (el, pos, nn, pts, center, rad, sig), strict=True):
        np.testing.assert_array_equal(a, b)
