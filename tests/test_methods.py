"""Inverse methods as objects: aliases, the abstract interface, a user-defined method.

The seam of issue 10: a method is an ``eqx.Module`` implementing
``AbstractInverseMethod.kernel``; the minimum-norm family only says how it
noise-normalises (``noise_weight``). A method defined here, outside the
library, must work through ``apply_inverse``, ``apply_inverse_epochs``,
``imaging_kernel``, the resolution functions, ``jit`` and ``grad``.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exg_jax as ex
from exg_jax.methods import SvdFactors

LAMBDA2 = 1.0 / 9.0


def _close(a, b, tol=1e-12):
    """max |a - b| / max |b| <= tol (float64 rounding of the same formulas)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= tol * np.max(np.abs(b))


class Standardised(ex.AbstractMinimumNorm):
    """Noise-normalised MNE, weights s/(s²+λ²)·(1 + s²/λ²)^(p/2).

    p = 0 is dSPM, p = 1 is sLORETA; ``p`` is a pytree leaf (traced and
    differentiable).
    """

    name: ClassVar[str] = "standardised"
    p: float | jax.Array = 0.5

    def noise_weight(self, sing, lambda2):
        return (
            sing / (sing * sing + lambda2) * (1 + sing * sing / lambda2) ** (self.p / 2)
        )


@pytest.fixture(scope="module")
def problem():
    sphere = ex.SphereModel()
    _, elec = ex.standard_montage("standard_1020", radius=0.075, center=sphere.center)
    src_pos, src_nn = ex.ico_source_space(1, radius=0.055, center=sphere.center)
    rng = np.random.default_rng(11)
    n_chan = elec.shape[0]
    noise = rng.standard_normal((n_chan, 1000)) * 1e-6
    cov = ex.compute_covariance(jnp.asarray(noise))
    fwd = ex.make_sphere_forward_free(
        jnp.asarray(elec), jnp.asarray(src_pos), sphere, src_nn=jnp.asarray(src_nn)
    )
    inv = ex.make_inverse_operator(fwd, cov, loose=0.3)
    data = jnp.asarray(rng.standard_normal((n_chan, 9)) * 1e-6)
    epochs = jnp.asarray(rng.standard_normal((4, n_chan, 9)) * 1e-6)
    return dict(fwd=fwd, inv=inv, data=data, epochs=epochs)


@pytest.mark.parametrize(
    "name, cls", [("MNE", ex.MNE), ("dSPM", ex.dSPM), ("sLORETA", ex.sLORETA)]
)
@pytest.mark.parametrize("pick_ori", [None, "normal", "vector"])
def test_strings_are_aliases(problem, name, cls, pick_ori):
    inv, data = problem["inv"], problem["data"]
    a = ex.apply_inverse(data, inv, LAMBDA2, name, pick_ori=pick_ori)
    b = ex.apply_inverse(data, inv, LAMBDA2, cls(), pick_ori=pick_ori)
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    assert a.method == b.method == name
    assert ex.as_method(name) == cls()


def test_eloreta_alias():
    assert ex.as_method("eLORETA") == ex.eLORETA()
    assert ex.as_method("eLORETA").name == "eLORETA"


def test_as_method_errors():
    with pytest.raises(ValueError, match="method"):
        ex.as_method("LORETA")
    with pytest.raises(TypeError, match="method"):
        ex.as_method(3)
    with pytest.raises(TypeError, match="method"):
        ex.as_method(ex.dSPM)  # the class, not an instance


def test_abstract_interface():
    with pytest.raises(TypeError):
        ex.AbstractInverseMethod()
    with pytest.raises(TypeError):
        ex.AbstractMinimumNorm()


@pytest.mark.parametrize("p, ref", [(0.0, "dSPM"), (1.0, "sLORETA")])
def test_user_method_reproduces_family(problem, p, ref):
    """A method defined outside the library: p = 0 is dSPM, p = 1 is sLORETA."""
    inv, data, epochs = problem["inv"], problem["data"], problem["epochs"]
    m = Standardised(p=p)
    a = ex.apply_inverse(data, inv, LAMBDA2, m)
    b = ex.apply_inverse(data, inv, LAMBDA2, ref)
    _close(a.data, b.data)
    assert a.method == "standardised"
    ae = ex.apply_inverse_epochs(epochs, inv, LAMBDA2, m)
    be = ex.apply_inverse_epochs(epochs, inv, LAMBDA2, ref)
    _close(ae.data, be.data)
    ra = ex.make_resolution_matrix(inv, problem["fwd"], LAMBDA2, m)
    rb = ex.make_resolution_matrix(inv, problem["fwd"], LAMBDA2, ref)
    _close(ra, rb)


def test_user_method_jit_grad(problem):
    """The method's own parameter is traced: no recompilation, and differentiable."""
    inv, data = problem["inv"], problem["data"]

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def f(p):
        k = Standardised(p=p).kernel(inv, jnp.asarray(LAMBDA2), None)
        return jnp.sum(ex.kernel.apply_prepared(k, data))

    vals = [f(jnp.asarray(p)) for p in (0.2, 0.4)]
    assert np.isfinite(vals).all() and vals[0] != vals[1]
    g = jax.grad(f)(jnp.asarray(0.3))
    h = 1e-6
    fd = (f(jnp.asarray(0.3 + h)) - f(jnp.asarray(0.3 - h))) / (2 * h)
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-6)


def test_imaging_kernel_equals_apply(problem):
    inv, data, epochs = problem["inv"], problem["data"], problem["epochs"]
    cases = [(m, p) for m in ("MNE", "sLORETA") for p in (None, "vector", "normal")]
    cases.append((ex.eLORETA(max_iter=100), None))  # eLORETA compiles slowly: one case
    for method, pick_ori in cases:
        k = ex.imaging_kernel(inv, LAMBDA2, method, pick_ori=pick_ori)
        assert k.kernel.shape == (
            inv.n_src * (1 if pick_ori == "normal" else 3),
            inv.n_chan,
        )
        a = ex.apply_imaging_kernel(data, k)
        b = ex.apply_inverse(data, inv, LAMBDA2, method, pick_ori=pick_ori)
        _close(a.data, b.data)
        ae = ex.apply_imaging_kernel(epochs, k, batch_size=2)
        be = ex.apply_inverse_epochs(epochs, inv, LAMBDA2, method, pick_ori=pick_ori)
        _close(ae.data, be.data)
        assert a.method == b.method


def test_resolution_accepts_kernel(problem):
    inv, fwd = problem["inv"], problem["fwd"]
    k = ex.imaging_kernel(inv, LAMBDA2, "dSPM", pick_ori="vector")
    a = ex.make_resolution_matrix(k, fwd)
    b = ex.make_resolution_matrix(inv, fwd, LAMBDA2, "dSPM")
    _close(a, b)
    with pytest.raises(TypeError, match="inv"):
        ex.make_resolution_matrix("dSPM", fwd)


def test_imaging_kernel_bad_input(problem):
    inv, data = problem["inv"], problem["data"]
    k = ex.imaging_kernel(inv, LAMBDA2)
    with pytest.raises(TypeError, match="kernel"):
        ex.apply_imaging_kernel(data, inv)
    with pytest.raises(ValueError, match="channels"):
        ex.apply_imaging_kernel(data[:-1], k)
    with pytest.raises(ValueError, match="data"):
        ex.apply_imaging_kernel(data.at[0, 0].set(jnp.nan), k)
    with pytest.raises(ValueError, match="n_orient"):
        ex.ImagingKernel(k.kernel, None, k.src_pos, n_orient=2)
    with pytest.raises(ValueError, match="lambda2"):
        ex.imaging_kernel(inv, -1.0)


def test_svd_factors_default(problem):
    inv = problem["inv"]
    fac, status = ex.dSPM().factors(inv, jnp.asarray(LAMBDA2))
    assert isinstance(fac, SvdFactors) and status is None
    np.testing.assert_array_equal(
        np.asarray(fac.leads), np.asarray(inv.eigen_leads * inv.source_std[:, None])
    )
