"""Source power of a data covariance through a minimum-norm inverse (``apply_inverse_cov``).

The source estimate of data ``x(t)`` is linear, ``ŝ(t) = K x(t)``, so its
power over the segment a covariance ``C`` was estimated on is ``diag(K C Kᵀ)``
— computed from the covariance alone, without the data (Sabbagh et al. 2020,
MNE-Python's ``mne.minimum_norm.apply_inverse_cov``). Any inverse method
object works (the kernel comes from :func:`exg_jax.imaging_kernel`'s pure
layer); the result is a pure, jit-compiled function of the covariance, λ²
and the operator, and differentiable w.r.t. all three.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Real

from ._numerics import scale_of
from ._typing import IntScalar, NestedSequence, RealScalar
from ._validate import (
    as_int,
    check_array,
    check_finite,
    check_not_mne,
    check_option,
    check_type,
    is_concrete,
)
from .covariance import NoiseCov
from .inverse import (
    InverseOperator,
    _kernel_of,
    _lambda2_array,
    _validate_operator,
    compiled_method,
)
from .kernel import ImagingKernel
from .methods import AbstractInverseMethod
from .source_estimate import SourceEstimate

__all__ = ["apply_inverse_cov"]

#: pick_ori values of ``apply_inverse_cov`` (MNE's: no "vector").
PICK_ORIS_COV = (None, "normal")


# --------------------------------------------------------------------------- #
# Pure kernel
# --------------------------------------------------------------------------- #
def _kernel_power(k: ImagingKernel, cov, nave):
    """Pure: per-source power ``diag(K C Kᵀ)`` of an imaging kernel, (n_src, 1).

    The rows of a 3-row source are summed (the power of its vector
    estimate, rotation invariant); the noise normalisation, squared and
    scaled by ``nave`` (the noise variance of an average of ``nave`` trials
    is ``1 / nave`` times that of one), multiplies the sum.

    Scale-free: ``K`` (A·m/V, 1e-3 and less) and ``C`` (V², 1e-12 and less)
    are each divided by constants — per source, the max-abs of its kernel
    rows ``a_k``; for ``C``, its max-abs ``b`` — before the product, and the
    result is multiplied by ``f_k² = (a_k √b · noise_norm_k)²``, a factor
    of the size of the result. Neither squared A·m (1e-24 for small data)
    nor a squared noise normalisation (1e20 and more) is formed, so float32
    neither underflows nor overflows; the constants are held for
    differentiation (``stop_gradient``), so values and derivatives are exact.
    """
    n_src, n_orient = k.n_src, k.n_orient
    kern = k.kernel.reshape(n_src, n_orient, -1)
    a = scale_of(kern, axis=(1, 2))  # (n_src,), per-source scale
    b = scale_of(cov)
    kn = (kern / a[:, None, None]).reshape(n_src * n_orient, -1)
    pn = jnp.einsum("ij,ij->i", kn, kn @ (cov / b))
    pn = pn.reshape(n_src, n_orient).sum(axis=1)
    f = a * jnp.sqrt(b)
    if k.noise_norm is not None:
        f = f * k.noise_norm
        pn = pn * nave
    return (pn * f * f)[:, None]


def _power_traced(cov, inv, lambda2, nave, method, pick_ori):
    k = _kernel_of(inv, lambda2, method, pick_ori)
    return _kernel_power(k, cov, nave), k.status


_power_jit = eqx.filter_jit(_power_traced)


# --------------------------------------------------------------------------- #
# Eager validation
# --------------------------------------------------------------------------- #
def _as_data_cov(name, c, n_chan, op_dtype):
    """A covariance argument (NoiseCov or array) as an array, validated."""
    if isinstance(c, NoiseCov):
        data = c.data
    else:
        check_not_mne(name, c, "a NoiseCov or an array")
        check_array(name, c)
        data = c
    shape = tuple(np.shape(data))
    if shape != (n_chan, n_chan):
        raise ValueError(
            f"{name} has shape {shape} but the inverse operator has {n_chan} "
            f"channels: expected ({n_chan}, {n_chan})."
        )
    check_finite(name, data)
    data = jnp.asarray(data)
    if is_concrete(data):
        # the tolerance of check_covariance_values (never symmetrised silently)
        eps = max(
            np.finfo(np.dtype(d)).eps
            for d in (data.dtype, op_dtype, np.float64)
            if np.issubdtype(np.dtype(d), np.floating)
        )
        a = np.asarray(data, dtype=np.float64)
        asym = np.abs(a - a.T)
        tol = max(1e-6, 64 * eps) * float(np.max(np.abs(a)))
        if asym.size and asym.max() > tol:
            i, j = np.unravel_index(np.argmax(asym), a.shape)
            raise ValueError(
                f"{name} is not symmetric: |C[{i}, {j}] - C[{j}, {i}]| = "
                f"{asym.max():.3g} > {tol:.3g}. It is not symmetrised silently: "
                "pass (C + C.T) / 2 if the asymmetry is rounding."
            )
    return data.astype(op_dtype)


# --------------------------------------------------------------------------- #
# Public function
# --------------------------------------------------------------------------- #
def apply_inverse_cov(
    cov: NoiseCov | Real[ArrayLike, "chan chan"] | NestedSequence,
    inv: InverseOperator,
    lambda2: RealScalar = 1.0 / 9.0,
    method: str | AbstractInverseMethod = "dSPM",
    *,
    nave: IntScalar = 1,
    pick_ori: str | None = None,
) -> SourceEstimate:
    """Source power of a data covariance through an inverse operator.

    Parameters
    ----------
    cov : NoiseCov or Array, shape (n_chan, n_chan), V²
        Data covariance (e.g. :func:`exg_jax.compute_covariance` of the
        segment whose source power is wanted), channels in the operator's
        order; symmetric. Not required to be positive semi-definite: the
        result is linear in ``cov``, so a difference of two covariances
        gives the difference of the powers. Traced (differentiable).
    inv : InverseOperator
    lambda2 : float or scalar Array
        Regularisation λ² = 1 / SNR² (amplitude SNR); > 0. Traced.
    method : AbstractInverseMethod or {"MNE", "dSPM", "sLORETA", "eLORETA"}
        As :func:`exg_jax.apply_inverse` (any method object).
    nave : int >= 1
        Number of averages the noise covariance is scaled for (MNE's
        ``nave``): the noise variance of the data is ``1 / nave`` times that
        of the operator's noise covariance. Only the noise normalisation
        depends on it (dSPM / sLORETA powers are multiplied by ``nave``);
        the MNE and eLORETA kernels do not.
    pick_ori : {None, "normal"}
        None: for a free inverse the power summed over the three
        orientations (x, y, z); "normal": the power of the component along
        the source normal (free operator built with normals). ``"vector"``
        is not supported (as in MNE).

    Returns
    -------
    stc : SourceEstimate
        ``data`` (n_src, 1): the power of each source's estimate, (A·m)²
        for MNE / eLORETA, dimensionless for dSPM / sLORETA; ``status`` as
        :func:`exg_jax.apply_inverse` (eLORETA's weight fit).

    Raises
    ------
    ValueError, TypeError
        Bad input, naming the argument (``cov`` shape / symmetry / NaN,
        ``nave``, ``pick_ori``, ``lambda2``, ``method``, ``inv``).
    RuntimeError
        eLORETA not converged with ``throw=True``.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.apply_inverse_cov(cov, info, inv, nave,
    lambda2, method, pick_ori)`` (with ``method_params`` for eLORETA's
    settings). With ``K`` the imaging kernel (whitener and average-reference
    projector included, :func:`exg_jax.imaging_kernel`) and ``n_k`` the
    noise normalisation of source ``k`` for ``nave = 1`` (1 for MNE /
    eLORETA)::

        P_k = ν n_k² Σ_{r ∈ rows(k)} (K C Kᵀ)_rr

    where ``rows(k)`` are the three Cartesian rows of a free source with
    ``pick_ori=None`` (MNE's ``combine_xyz(sol, square=False)`` of the
    vector estimate), else its single row, and ``ν = nave`` for a
    noise-normalised method (dSPM / sLORETA), else 1. With ``C = X Xᵀ / T``
    this is the time average of the squared vector estimate of ``X``,
    summed over x, y, z.
    """
    if isinstance(pick_ori, str) and pick_ori == "vector":
        raise ValueError(
            "pick_ori='vector' is not supported by apply_inverse_cov (as in MNE): "
            "the power is summed over the orientations; use pick_ori=None or "
            "'normal'."
        )
    check_type(
        "inv", inv, InverseOperator, "an InverseOperator (from make_inverse_operator)"
    )
    check_option("pick_ori", pick_ori, PICK_ORIS_COV)
    method = _validate_operator(inv, method, pick_ori, lambda2)
    nave = as_int("nave", nave, minimum=1)
    dtype = jnp.result_type(inv.sing)
    c = _as_data_cov("cov", cov, inv.n_chan, dtype)
    lam = _lambda2_array(lambda2, inv)
    nv = jnp.asarray(nave, dtype=dtype)
    p, status = _power_jit(
        c, inv, lam, nv, compiled_method(method, c, inv, lam), pick_ori
    )
    method.check(status)
    return SourceEstimate(
        p, inv.src_pos, method=method.name, pick_ori=pick_ori, status=status
    )
