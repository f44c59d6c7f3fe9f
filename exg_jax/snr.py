"""Signal-to-noise ratio of evoked data, estimated through an inverse operator.

``estimate_snr`` is the exg_jax counterpart of
``mne.minimum_norm.estimate_snr``. Two quantities per time point:

- ``snr``: the root-mean-square of the whitened data over the effective number
  of channels (the whitener's rank). With pure noise its square is about 1.
- ``snr_est``: the SNR implied by the strongest regularisation that still
  explains the whitened data. Writing the regularisation as λ² = 1 / SNR²
  (``lambda2`` in every exg_jax function is this λ², i.e. 1/SNR² and not
  1/SNR), ``snr_est = 1 / sqrt(λ²_est)``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from . import _stream
from ._typing import NestedSequence, RealScalar
from ._validate import (
    check_array,
    check_finite,
    check_positive_finite_scalar,
    check_type,
    is_concrete,
)
from .inverse import InverseOperator, _op_dtype
from .status import SolverStatus, check_status, error_if_failed, make_status

__all__ = ["estimate_snr", "SnrEstimate"]

_LAMBDA2_START = 10.0
_LAMBDA_MULT = 0.99
_MAX_ITER = 1000
_P_VALUE = 1e-3


class SnrEstimate(NamedTuple):
    """Result of :func:`estimate_snr` (a NamedTuple: ``snr, snr_est, status = ...``).

    Attributes
    ----------
    snr : Array, shape (n_times,)
        RMS of the whitened data over the effective number of channels.
    snr_est : Array, shape (n_times,)
        ``1 / sqrt(λ²_est)`` from the λ² search (0 where ``snr <= 1``).
    status : SolverStatus
        Status of the λ² search: ``iterations`` (shrinking steps, at most
        1000), ``change`` (fraction of the time points still above the χ²
        threshold when the search stopped; 0 on success) and ``result``
        (``RESULTS.max_steps_reached`` when some time point never met the
        threshold). ``stats`` is empty. Batched under ``vmap``.
    """

    snr: Float[Array, "*batch time"]
    snr_est: Float[Array, "*batch time"]
    status: SolverStatus


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _chi2_isf(p, dof, dtype):
    """Inverse survival function of the χ² distribution, by bisection.

    Solves ``Q(dof / 2, x / 2) = p`` (``Q``: regularised upper incomplete
    gamma function, decreasing in ``x``) on ``[0, dof + 20 sqrt(dof) + 100]``.
    """
    a = jnp.asarray(dof / 2.0, dtype)
    p = jnp.asarray(p, dtype)
    lo = jnp.asarray(0.0, dtype)
    hi = jnp.asarray(dof + 20.0 * np.sqrt(dof) + 100.0, dtype)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        too_small = jax.scipy.special.gammaincc(a, mid / 2) > p
        return jnp.where(too_small, mid, lo), jnp.where(too_small, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 200, body, (lo, hi))
    return 0.5 * (lo + hi)


@functools.partial(jax.jit, static_argnames=("rank",))
def _snr_kernel(data, whitener, eigen_fields, sing, nave, *, rank):
    dtype = data.dtype
    # The operator is built for nave = 1; averaging nave trials divides the
    # noise covariance by nave, so the whitener grows by sqrt(nave).
    white = jnp.sqrt(jnp.asarray(nave, dtype)) * (whitener @ data)
    white_ef = eigen_fields @ white
    snr2 = jnp.sum(white * white, axis=0) / rank
    val = _chi2_isf(_P_VALUE, rank, dtype)

    sing2 = (sing * sing)[:, None]
    remaining0 = snr2 > 1
    lam0 = jnp.where(remaining0, jnp.asarray(_LAMBDA2_START, dtype), jnp.inf)

    def cond(carry):
        _, remaining, it = carry
        return jnp.any(remaining) & (it < _MAX_ITER)

    def body(carry):
        lam, remaining, it = carry
        lam_safe = jnp.where(remaining, lam, 1)
        f = jnp.where(sing2 > 0, sing2 / (sing2 + lam_safe[None, :]), 0)
        resid = white_ef * (1 - f)
        err = jnp.sum(resid * resid, axis=0)
        # A NaN misfit (NaN operator) leaves the search at once with a NaN λ²:
        # NaN out, not "not converged".
        nan_err = remaining & jnp.isnan(err)
        remaining = remaining & ~(err < val) & ~nan_err
        lam = jnp.where(remaining, lam * _LAMBDA_MULT, jnp.where(nan_err, jnp.nan, lam))
        return lam, remaining, it + 1

    lam, remaining, it = jax.lax.while_loop(
        cond, body, (lam0, remaining0, jnp.asarray(0))
    )
    snr_est = jnp.where(
        jnp.isinf(lam), 0, 1 / jnp.sqrt(jnp.where(jnp.isinf(lam), 1, lam))
    )
    # NaN in (data or operator) gives NaN out, not "SNR 0"
    snr_est = jnp.where(jnp.isnan(snr2), snr2, snr_est)
    # NaN time points never enter (or leave at once) the search: they are not
    # counted as unconverged.
    n_left = jnp.sum(remaining)
    change = (n_left / max(remaining.shape[0], 1)).astype(dtype)
    status = make_status(n_left == 0, it, change)
    return jnp.sqrt(snr2), snr_est, status


def estimate_snr(
    data: Real[ArrayLike, "chan time"] | NestedSequence | Any,
    inv: InverseOperator,
    nave: RealScalar | None = None,
    *,
    throw: bool | np.bool_ = True,
) -> SnrEstimate:
    """Estimate the SNR of evoked data as a function of time.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times), V; or mne.Evoked
        Evoked (averaged) data on the inverse operator's channels, average
        referenced like the operator's forward model. An ``mne.Evoked`` needs
        an operator with ``ch_names`` (as :func:`~exg_jax.apply_inverse`):
        its channels are picked by name and its ``nave`` is used.
    inv : InverseOperator
        The inverse operator (built for single trials, nave = 1).
    nave : int or float > 0, or None
        Number of averaged trials in ``data``; the noise covariance is divided
        by ``nave``. None: ``evoked.nave`` for an ``mne.Evoked``, else 1.
    throw : bool
        What happens when the λ² search does not converge (some time point
        still above the χ² threshold after 1000 steps), as ``throw`` in
        optimistix. True (default): on the eager path a ``RuntimeError``
        naming the iterations and the fraction of time points left; under
        ``jit`` / ``vmap`` / ``grad`` an ``eqx.error_if`` in the program
        (``eqx.EquinoxRuntimeError`` when it runs). False: a
        ``RuntimeWarning`` on the eager path (none when traced) and the
        result, with ``status.result == RESULTS.max_steps_reached``; those
        time points keep the last λ² tried (``snr_est`` ≈ 48.1, a lower
        bound).

    Returns
    -------
    SnrEstimate
        NamedTuple ``(snr, snr_est, status)``:

        snr : Array, shape (n_times,)
            ``sqrt(|W x(t)|² / rank)``: RMS of the whitened data over the
            effective number of channels (``inv.rank``).
        snr_est : Array, shape (n_times,)
            ``1 / sqrt(λ²_est(t))``, where λ²_est is the largest λ² on the
            grid ``10 * 0.99**k`` (k = 0 … 1000) whose regularised fit leaves
            a whitened residual below the χ²(rank) 0.999 quantile; 0 where
            ``snr <= 1``. Here λ² = 1 / SNR² (not 1 / SNR).
        status : SolverStatus
            ``iterations`` (steps taken), ``change`` (fraction of the time
            points still above the threshold, 0 on success), ``result``
            (``RESULTS.successful`` or ``RESULTS.max_steps_reached``).

    Notes
    -----
    Equivalent to ``mne.minimum_norm.estimate_snr`` (MNE-Python's port of
    ``mne_analyze``'s ``compute_regularization``). With whitened data
    ``w = W x`` and its coordinates in the eigen fields ``c = Uᵀ w``, the
    regularised inverse predicts ``ŵ = U Π c`` with
    ``Π_k = s_k² / (s_k² + λ²)``, so the misfit is
    ``Σ_k ((1 - Π_k) c_k)²``. Starting from λ² = 10 the search shrinks λ² by
    1 % per step for each time point until the misfit drops below the χ²
    threshold; if 1000 steps do not suffice for every time point, the
    search has failed (``throw``; ``status.converged`` is False).

    NaN in gives NaN out, not a failure: a NaN operator or (traced) NaN data
    gives NaN ``snr`` / ``snr_est`` at the affected time points, which are
    not counted as unconverged (``throw=True`` does not raise for them).
    Eagerly, non-finite ``data`` is a ``ValueError``.

    The χ² quantile is computed in JAX by bisection on the regularised upper
    incomplete gamma function (no SciPy at run time).
    """
    if isinstance(inv, str | bytes | os.PathLike):
        raise TypeError(
            f"inv must be an InverseOperator, got the path {inv!r}: reading "
            "inverse operators from files is not supported; build one with "
            "make_inverse_operator and pass it."
        )
    check_type(
        "inv", inv, InverseOperator, "an InverseOperator (from make_inverse_operator)"
    )
    got = _stream.sensor_data_from_mne("data", data, inv.ch_names, ("Evoked",))
    if got is not None:
        data = _op_dtype(got.data, inv)
        nave = got.nave if nave is None else nave
    elif nave is None:
        nave = 1
    check_array("data", data)
    data = jnp.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must have shape (n_chan, n_times), got {data.shape}.")
    n_chan = inv.whitener.shape[1]
    if data.shape[0] != n_chan:
        raise ValueError(
            f"data has {data.shape[0]} channels but the inverse operator has {n_chan}."
        )
    check_finite("data", data)
    if not isinstance(throw, bool | np.bool_):
        raise TypeError(f"throw must be True or False, got {throw!r}.")
    rank = int(inv.rank)
    if rank < 1:
        raise ValueError(f"inv.rank must be >= 1, got {rank}.")
    dtype = jnp.result_type(data.dtype, inv.whitener.dtype)
    check_positive_finite_scalar("nave", nave, dtype)
    if not is_concrete(nave):
        # the check that survives jit / vmap: nave <= 0 would give SNR 0 or NaN
        nave = eqx.error_if(
            jnp.asarray(nave),
            ~(jnp.isfinite(nave) & (nave > 0)),
            "nave must be finite and > 0; a traced nave (under jit / vmap) was not.",
        )
    snr, snr_est, status = _snr_kernel(
        data.astype(dtype),
        inv.whitener.astype(dtype),
        inv.eigen_fields.astype(dtype),
        inv.sing.astype(dtype),
        nave,
        rank=rank,
    )
    if is_concrete(status):
        check_status(
            status,
            throw=bool(throw),
            what="SNR estimation (λ² search)",
            change="fraction of time points above the χ² threshold",
            advice=(
                "Some time points need λ² < 10 * 0.99**1000 (SNR above ~48): "
                "snr_est is a lower bound there."
            ),
        )
    else:
        snr, snr_est = error_if_failed((snr, snr_est), status, bool(throw))
    return SnrEstimate(snr, snr_est, status)
