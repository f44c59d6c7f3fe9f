"""One result type for every iterative part of exg_jax.

The eLORETA weight fit, the Berg–Scherg fit and the SNR (λ²) search return a
:class:`SolverStatus`: iterations, final change, a result code
(:class:`RESULTS`) and solver-specific statistics. Each takes ``throw=``
(default True), as optimistix's solvers do:

* on the **eager** path (all inputs concrete) a failure raises a
  ``RuntimeError`` naming the iteration count and the final change
  (:func:`check_status`); with ``throw=False`` it emits a ``RuntimeWarning``
  and the status says what happened;
* on a **traced** path (``jit`` / ``vmap`` / ``grad``) the check lives in the
  compiled program (:func:`error_if_failed`, an ``eqx.error_if`` with the
  result code's message): ``eqx.EquinoxRuntimeError``, a ``RuntimeError``
  subclass, when the program runs.
"""

from __future__ import annotations

import sys
import warnings

import equinox as eqx
import equinox.internal as eqxi
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._validate import is_concrete

__all__ = ["RESULTS", "SolverStatus", "check_status", "error_if_failed"]


class RESULTS(eqxi.Enumeration):
    """Result codes of exg_jax's iterative solvers (``SolverStatus.result``)."""

    successful = ""
    max_steps_reached = (
        "The iteration did not converge within its maximum number of steps "
        "(raise the iteration limit or the tolerance where the function has "
        "them, or pass throw=False to get the result with status.converged "
        "False)."
    )
    nonfinite = "Non-finite (inf or NaN) values were produced by the iteration."
    poor_fit = (
        "The fit stopped with a misfit above its tolerance (raise n_starts / "
        "max_iter, or pass throw=False to get the best fit found)."
    )
    at_bound = (
        "The optimum lies at a bound of the search range (widen the bounds, or "
        "the data do not determine it, e.g. pure noise; pass throw=False to get "
        "the bound with status.converged False)."
    )
    infeasible = (
        "The fitted head model lies on a constraint: a source at the innermost "
        "shell or an electrode inside it (the penalty is active; move the "
        "start, freeze the centre or the radii, or pass throw=False)."
    )
    refit_failed = (
        "The Berg–Scherg refit of the fitted head model failed (poor fit or "
        "non-finite; use forward='exact', or pass throw=False)."
    )
    solver_failed = (
        "The optimiser stopped on an internal failure (line search or linear "
        "solve; try another solver or start, or pass throw=False)."
    )


class SolverStatus(eqx.Module):
    """Status of an iterative solve (eLORETA weights, Berg–Scherg, SNR search).

    Attributes
    ----------
    result : RESULTS
        ``RESULTS.successful`` or the reason of the failure
        (``max_steps_reached``, ``nonfinite``, ``poor_fit``). Batched under
        ``vmap`` (one code per element).
    iterations : Array of int, shape (...)
        Iterations performed.
    change : Array, shape (...)
        Size of the last step, relative (eLORETA: ``‖R_k − R_{k−1}‖_F /
        ‖R_{k−1}‖_F``; Berg–Scherg: the relative gradient norm at the
        returned optimum; SNR search: the fraction of time points still
        above the χ² threshold). What the solver's tolerance is compared to.
    stats : dict of str to Array
        Solver-specific extras (Berg–Scherg: ``"misfit"``, the series
        misfit, and ``"gradient_converged"``).

    Notes
    -----
    ``converged`` is ``result == RESULTS.successful`` (an Array of bool).
    """

    result: RESULTS
    iterations: Int[Array, "*batch"]
    change: Float[Array, "*batch"]
    stats: dict[str, Array] = eqx.field(default_factory=dict)

    @property
    def converged(self) -> Bool[Array, "*batch"]:
        """``result == RESULTS.successful`` (bool Array)."""
        return self.result == RESULTS.successful


def error_if_failed(token: PyTree, status: SolverStatus, throw: bool) -> PyTree:
    """Traced-path check: ``eqx.error_if`` on ``token`` unless ``status`` succeeded.

    Returns ``token`` unchanged when ``throw`` is False. The error message is
    the result code's (:class:`RESULTS`).
    """
    if not throw:
        return token
    result = status.result
    return result.error_if(token, result != RESULTS.successful)


def _describe(status: SolverStatus) -> tuple[str, int, float]:
    codes = np.atleast_1d(np.asarray(status.result._value))
    bad = int(np.max(codes))
    name = RESULTS._index_to_message[bad] if bad else ""
    iters = int(np.max(np.asarray(status.iterations)))
    change = float(np.max(np.asarray(status.change)))
    return name, iters, change


def check_status(
    status: SolverStatus | None,
    *,
    throw: bool,
    what: str,
    advice: str = "",
    change: str = "final relative change",
) -> None:
    """Eager check of a concrete ``status``: raise (``throw``) or warn on failure.

    Parameters
    ----------
    status : SolverStatus or None
        None and traced statuses are left alone (the traced path has its own
        :func:`error_if_failed`).
    throw : bool
        True: ``RuntimeError``; False: ``RuntimeWarning``.
    what : str
        The solver, for the message (e.g. ``"eLORETA weight fitting"``).
    advice : str
        What the user can do, appended to the message.
    change : str
        What ``status.change`` measures, for the message.
    """
    if status is None or not is_concrete(status.result._value):
        return
    if bool(np.all(np.asarray(status.result._value) == 0)):
        return
    name, iters, value = _describe(status)
    msg = f"{what} failed after {iters} iterations ({change} {value:.3g}): {name}"
    if advice:
        msg = f"{msg} {advice}"
    if throw:
        raise RuntimeError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """``stacklevel`` of the first frame outside exg_jax and equinox (the caller)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("exg_jax", "equinox")):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def make_status(
    converged, iterations, change, *, finite=None, stats=None, failed_code=None
) -> SolverStatus:
    """Build a :class:`SolverStatus` from traced pieces (inside a kernel).

    ``converged`` (bool Array): success. ``finite`` (bool Array or None):
    False gives ``RESULTS.nonfinite`` (takes precedence). ``failed_code``:
    the code for ``~converged`` (default ``RESULTS.max_steps_reached``).
    """
    failed_code = RESULTS.max_steps_reached if failed_code is None else failed_code
    result = RESULTS.where(converged, RESULTS.successful, failed_code)
    if finite is not None:
        result = RESULTS.where(finite, result, RESULTS.nonfinite)
    change = jnp.asarray(change)
    return SolverStatus(
        result=result,
        iterations=jnp.asarray(iterations),
        change=change,
        stats={} if stats is None else dict(stats),
    )
