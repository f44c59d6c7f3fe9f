"""Spherical multi-shell head models (``SphereModel``) and their series / Berg–Scherg parameters.

Public API: :class:`SphereModel`, :func:`sphere_series_coefficients`,
:func:`berg_scherg_params` (-> :class:`BergSchergParams`) and
:func:`fit_sphere_to_headshape`. Numerical kernels live in ``exg_jax._series``.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Real

from . import _series
from ._typing import IntScalar, NestedSequence, Point3, RealScalar
from ._validate import as_float_array, as_int, check_finite, is_concrete
from .status import RESULTS, SolverStatus, error_if_failed, make_status

# Per-shell values (radii, conductivities) and the centre; leading axes: a
# stacked batch of models (for vmap), a centre without them is shared.
_Shells = Real[ArrayLike, "*batch shell"] | NestedSequence
_Center = Real[ArrayLike, "*#batch 3"] | NestedSequence

#: Largest shell radius accepted (m): radii are in metres, a head is ~0.1 m.
MAX_RADIUS = 0.5


class SphereModel(eqx.Module):
    """Concentric spherical shells with piecewise-constant conductivity.

    Parameters
    ----------
    radii : array_like, shape (n_shells,), m
        Shell radii, innermost first, strictly increasing, > 0 and at most
        ``MAX_RADIUS`` = 0.5 m (radii are in metres: a value above a head's
        size means millimetres or centimetres).
    conductivities : array_like, shape (n_shells,), S/m
        Conductivity of each shell (innermost = brain), all > 0.
    center : array_like, shape (3,), m
        Centre of the spheres in head coordinates.

    Notes
    -----
    ``SphereModel()`` is the 3-shell default: radii (0.067, 0.070, 0.075) m,
    conductivities (0.33, 0.0042, 0.33) S/m, centre (0, 0, 0.04) m.
    Value checks (``ValueError`` naming ``radii`` / ``conductivities`` /
    ``center``) run eagerly on concrete inputs only, so a model can be built
    from traced parameters inside ``jax.jit`` / ``jax.grad`` / ``jax.vmap``;
    there the same checks run as ``eqx.error_if`` in every kernel that
    consumes the model (series coefficients, Berg–Scherg fit, forward), and
    raise ``eqx.EquinoxRuntimeError`` when the compiled program runs.
    Dtypes: float16 / bfloat16, bool, complex and strings are refused with a
    ``TypeError``; integer arrays are cast to JAX's default float dtype.
    """

    radii: Float[Array, "*batch shell"]
    conductivities: Float[Array, "*batch shell"]
    center: Float[Array, "*#batch 3"]

    def __init__(
        self,
        radii: _Shells = (0.067, 0.070, 0.075),
        conductivities: _Shells = (0.33, 0.0042, 0.33),
        center: _Center = (0.0, 0.0, 0.04),
    ) -> None:
        self.radii = as_float_array("radii", radii)
        self.conductivities = as_float_array("conductivities", conductivities)
        self.center = as_float_array("center", center)

    def __check_init__(self):
        r, s, c = self.radii, self.conductivities, self.center
        # Leading batch axes are allowed (a stacked batch of models for vmap).
        if r.ndim < 1 or r.shape[-1] < 1:
            raise ValueError(
                f"radii must be a 1-D array with >= 1 shell, got shape {r.shape}."
            )
        if s.shape != r.shape:
            raise ValueError(
                f"conductivities (shape {s.shape}) must match radii (shape {r.shape})."
            )
        if c.ndim < 1 or c.shape[-1] != 3:
            raise ValueError(f"center must have shape (3,), got {c.shape}.")
        if not is_concrete(r, s, c):
            return
        rn, sn, cn = np.asarray(r), np.asarray(s), np.asarray(c)
        if not np.all(np.isfinite(rn)):
            raise ValueError(f"radii must be finite, got {rn!r}.")
        if not np.all(np.isfinite(sn)):
            raise ValueError(f"conductivities must be finite, got {sn!r}.")
        if not np.all(np.isfinite(cn)):
            raise ValueError(f"center must be finite, got {cn!r}.")
        if np.any(rn <= 0):
            raise ValueError(f"radii must be > 0, got {rn!r}.")
        if np.any(rn > MAX_RADIUS):
            raise ValueError(
                f"radii must be <= {MAX_RADIUS} m: radii are in metres (a head is about "
                f"0.1 m), got {rn!r}. Millimetres? Divide by 1000."
            )
        if np.any(np.diff(rn) <= 0):
            raise ValueError(
                f"radii must be strictly increasing (innermost first), got {rn!r}."
            )
        if np.any(sn <= 0):
            raise ValueError(f"conductivities must be > 0, got {sn!r}.")

    @property
    def n_shells(self) -> int:
        return int(self.radii.shape[-1])

    @classmethod
    def single_shell(
        cls,
        radius: RealScalar = 0.09,
        conductivity: RealScalar = 0.33,
        center: Point3 = (0.0, 0.0, 0.04),
    ) -> SphereModel:
        """Homogeneous sphere of ``radius`` (m) and ``conductivity`` (S/m)."""
        return cls(
            jnp.atleast_1d(jnp.asarray(radius)),
            jnp.atleast_1d(jnp.asarray(conductivity)),
            center,
        )

    @classmethod
    def mne_default(
        cls,
        head_radius: RealScalar = 0.09,
        center: Point3 = (0.0, 0.0, 0.04),
    ) -> SphereModel:
        """MNE-Python's 4-shell model: relative radii 0.90/0.92/0.97/1.0, σ 0.33/1.0/0.004/0.33 S/m."""
        rel = jnp.asarray([0.90, 0.92, 0.97, 1.0])
        return cls(
            rel * jnp.asarray(head_radius),
            jnp.asarray([0.33, 1.0, 0.004, 0.33]),
            center,
        )


_TRACED_SPHERE_MSGS = (
    "radii must be finite, > 0, <= 0.5 m (radii are in metres) and strictly "
    "increasing (innermost first); a traced SphereModel (under jit / vmap / grad) "
    "violated this.",
    "conductivities must be finite and > 0; a traced SphereModel (under jit / "
    "vmap / grad) violated this.",
    "center must be finite; a traced SphereModel (under jit / vmap / grad) "
    "violated this.",
)


def _sphere_error_if(radii, sigmas, center=None):
    """The ``SphereModel`` value checks that survive tracing (``eqx.error_if``).

    One ``eqx.branched_error_if`` over ``(radii, sigmas, center)``; returns
    them (use the returned values, so the check is not dropped). Under
    ``vmap`` equinox reports the message of the largest index in the batch,
    so valid elements get index -1 (never shown).
    """
    r_bad = jnp.any(~jnp.isfinite(radii) | (radii <= 0) | (radii > MAX_RADIUS))
    r_bad = r_bad | jnp.any(jnp.diff(radii, axis=-1) <= 0)
    s_bad = jnp.any(~(jnp.isfinite(sigmas) & (sigmas > 0)))
    c_bad = jnp.asarray(False) if center is None else jnp.any(~jnp.isfinite(center))
    index = jnp.maximum(
        jnp.where(r_bad, 0, -1),
        jnp.maximum(jnp.where(s_bad, 1, -1), jnp.where(c_bad, 2, -1)),
    )
    return eqx.branched_error_if(
        (radii, sigmas, center), r_bad | s_bad | c_bad, index, _TRACED_SPHERE_MSGS
    )


# ---------------------------------------------------------------------------
# Series coefficients and Berg–Scherg parameters
# ---------------------------------------------------------------------------


class BergSchergParams(NamedTuple):
    """Berg–Scherg equivalent-dipole parameters of a :class:`SphereModel`.

    A NamedTuple (a pytree: returned from ``jit``, batched by ``vmap``).

    Attributes
    ----------
    mu : Array, shape (n_fit,), dimensionless
        Radial scale factors of the equivalent dipoles, in (-1, 1), sorted in
        descending order (as MNE-Python stores ``sphere['mu']``).
    lam : Array, shape (n_fit,), 1 / (S/m)
        Magnitude factors divided by the outermost conductivity, as MNE-Python
        stores ``sphere['lambda']``; ``sum(lam) == f_1 / sigma_scalp``.
    residual : Array, shape (), dimensionless
        Relative weighted residual variance of the fit (MNE-Python's "RV"):
        ``||r||^2 / ||y||^2`` with ``y`` the weighted target of the terms
        ``n >= 2`` after eliminating ``lambda_0`` for the largest ``mu``.
    status : SolverStatus
        Status of the fit (see :func:`berg_scherg_params`): ``iterations``
        (int, damped-Newton iterations of the retained start), ``change``
        (the relative gradient at the returned optimum), ``result``
        (``RESULTS.successful``, ``poor_fit`` or ``nonfinite``) and
        ``stats`` = ``{"misfit": ..., "gradient_converged": ...}``.
    """

    mu: Float[Array, "*batch fit"]
    lam: Float[Array, "*batch fit"]
    residual: Float[Array, "*batch"]
    status: SolverStatus


#: A fit whose gradient has not converged fails (``throw``) when its series
#: ``misfit`` is above this. Measured: converged 3-dipole fits reach at most
#: ~2e-4 (148 random 2–5-shell models, 4 decades of conductivity) and
#: non-converged ones the same.
BS_MISFIT_TOL = 1e-3


def _bs_status(mu, lam, rv, misfit, n_iter, converged, change) -> SolverStatus:
    """The fit's :class:`SolverStatus`: ``nonfinite`` when anything is not
    finite, ``poor_fit`` when the gradient has not converged and the misfit is
    above ``BS_MISFIT_TOL``; otherwise ``successful``."""
    finite = (
        jnp.all(jnp.isfinite(mu))
        & jnp.all(jnp.isfinite(lam))
        & jnp.isfinite(rv)
        & jnp.isfinite(misfit)
    )
    return make_status(
        converged | (misfit <= BS_MISFIT_TOL),
        n_iter,
        change,
        finite=finite,
        stats={"misfit": misfit, "gradient_converged": converged},
        failed_code=RESULTS.poor_fit,
    )


def _check_model(sphere) -> None:
    if not isinstance(sphere, SphereModel):
        raise TypeError(f"sphere must be a SphereModel, got {type(sphere).__name__}.")


# eqx.filter_jit (ints / bools static): a failed eqx.error_if then surfaces as
# eqx.EquinoxRuntimeError when the kernel is the outermost compiled program.
@eqx.filter_jit
def _coeffs_kernel(radii, sigmas, n_terms, check=False):
    if check:  # the model was traced: its value checks live here
        radii, sigmas, _ = _sphere_error_if(radii, sigmas)
    return _series.series_coefficients(radii, sigmas, n_terms)


def sphere_series_coefficients(
    sphere: SphereModel, n_terms: IntScalar = 200
) -> Float[Array, "*batch term"]:
    r"""Exact multi-shell series coefficients ``f_n``, ``n = 1 .. n_terms``.

    Parameters
    ----------
    sphere : SphereModel
        Head model (any number of shells >= 1).
    n_terms : int
        Number of terms (default 200, as MNE-Python).

    Returns
    -------
    fn : Array, shape (n_terms,), dimensionless
        ``fn[n - 1] = f_n``. Dtype follows the model's arrays.

    Notes
    -----
    Normalisation is MNE-Python's (``mne.bem._fwd_eeg_get_multi_sphere_model_coeffs``;
    equal to it to rounding): ``f_n`` is the factor by which the ``n``-th
    harmonic of the scalp potential of the layered sphere differs from that
    of a *homogeneous* sphere of the same outer radius ``R`` whose conductivity
    is the scalp conductivity ``sigma_N``. A homogeneous sphere therefore has
    ``f_n = 1`` for all ``n``. The coefficients depend only on the radius
    ratios and conductivity ratios.

    Precisely, for a current dipole ``q`` (A·m) at ``r0`` (relative to the
    centre, inside the innermost shell) and an electrode on the scalp at
    ``r = R e`` (``|e| = 1``), with ``b = |r0|``, ``u = r0 / b``,
    ``c = u·e``:

    .. math::

        V(r) = \frac{1}{4\pi\sigma_N R^2} \sum_{n\ge1} f_n\,\frac{2n+1}{n}
               \Big(\frac{b}{R}\Big)^{n-1}
               \Big[n P_n(c)\,(q\cdot u) + P_n'(c)\,\big(q\cdot e - c\,(q\cdot u)\big)\Big]

    (the bracket times ``b^{n-1}`` is ``q · grad_{r0} (b^n P_n(c))``; with all
    ``f_n = 1`` the sum is the closed-form homogeneous-sphere potential that
    MNE-Python's ``_do_eeg_spherepot_coil`` evaluates with ``mu = lambda = 1``
    and conductivity 1).

    The Berg–Scherg approximation replaces ``f_n`` by
    ``sum_j lambda_j mu_j^(n-1)`` with ``lambda_j = sigma_N * lam_j`` (``lam``
    from :func:`berg_scherg_params`): each term is a homogeneous-sphere
    dipole at ``mu_j r0`` of moment ``lambda_j q``, which is exactly what
    MNE-Python's EEG sphere forward sums, scaled by ``lam_j = lambda_j / sigma_N``
    and ``1 / (4 pi)``. So an exact forward consistent with MNE's
    equivalent-dipole forward sums the series above with these ``f_n``.

    Computation: a two-term transfer recursion over the interfaces from the
    scalp inwards (de Munck & Peters 1993; Zhang 1995), vectorised over
    ``n`` and scanned over layers, with the decaying part rescaled at each
    interface so every factor stays bounded (no overflow in float32).
    Differentiable w.r.t. radii and conductivities. A traced model (under
    ``jit`` / ``vmap`` / ``grad``) is checked in the kernel (``eqx.error_if``).
    """
    _check_model(sphere)
    n_terms = as_int("n_terms", n_terms, minimum=1)
    check = not is_concrete(sphere.radii, sphere.conductivities)
    return _coeffs_kernel(sphere.radii, sphere.conductivities, n_terms, check)


def _bs_core(
    radii,
    sigmas,
    n_terms,
    n_fit,
    n_starts,
    max_iter,
    check=False,
    throw=False,
    init=None,
):
    dtype = jnp.result_type(radii, sigmas, jnp.float32)
    radii = radii.astype(dtype)
    sigmas = sigmas.astype(dtype)
    if check:  # the model was traced: its value checks live here
        radii, sigmas, _ = _sphere_error_if(radii, sigmas)
    if radii.shape[-1] == 1:
        # Homogeneous sphere: f_n = 1 exactly, represented by one dipole at
        # mu = 1 with lambda = 1; the other dipoles get lambda = 0.
        mu = jnp.asarray([1.0] + [0.5**k for k in range(1, n_fit)], dtype)
        lam = jnp.zeros((n_fit,), dtype).at[0].set(1.0) / sigmas[-1]
        zero = jnp.zeros((), dtype)
        status = _bs_status(
            mu, lam, zero, zero, jnp.asarray(0), jnp.asarray(True), zero
        )
        return mu, lam, zero, status
    fn = _series.series_coefficients(radii, sigmas, n_terms)
    w = _series.berg_scherg_weights(radii[0] / radii[-1], n_terms, dtype)
    z_init = None
    if init is not None:
        # Warm start in the kernel's unknowns z = (mu, lambda_1..): the
        # returned lam is lambda / sigma_scalp, and lambda_0 is implied by
        # sum(lambda) = f_1. Its derivative does not reach the result.
        mu0, lam0 = (lax.stop_gradient(a.astype(dtype)) for a in init)
        z_init = jnp.concatenate([mu0, lam0[1:] * lax.stop_gradient(sigmas[-1])])
    mu, lam, rv, n_iter, conv, change = _series.berg_scherg_fit(
        fn,
        w,
        n_fit,
        n_starts=n_starts,
        max_iter=max_iter,
        z_init=z_init,
        tol=BS_MISFIT_TOL,
    )
    # Misfit of the whole weighted series (not only after eliminating lambda_0).
    sg = lax.stop_gradient
    model = sg(lam) @ _series.int_powers(sg(mu), n_terms - 1)[:, 1:]
    wt = sg(w[:-1])
    den = jnp.sum((wt * sg(fn[1:])) ** 2)
    misfit = jnp.sum((wt * (sg(fn[1:]) - model)) ** 2) / jnp.where(den > 0, den, 1.0)
    status = _bs_status(mu, lam, rv, misfit, n_iter, conv, change)
    # traced (throw): a failed fit must not reach a forward silently
    mu, lam = error_if_failed((mu, lam), status, throw)
    return mu, lam / sigmas[-1], rv, status


_bs_kernel = eqx.filter_jit(_bs_core)


def as_mu_lam(name: str, value, n_fit: int | None = None):
    """Berg–Scherg ``(mu, lam)`` from a ``BergSchergParams`` or a pair, as two
    float arrays: 1-D of equal length >= 1 (``n_fit`` None) or of shape
    ``(n_fit,)``; finite, ``|mu| <= 1`` when concrete. ``ValueError`` /
    ``TypeError`` name ``name`` (``"init"``, ``"berg_scherg"``)."""
    if isinstance(value, BergSchergParams):
        mu, lam = value.mu, value.lam
    else:
        try:
            mu, lam = value
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{name} must be a BergSchergParams (from "
                "exg_jax.sphere.berg_scherg_params) or a pair (mu, lam) of 1-D "
                f"arrays, got {type(value).__name__}."
            ) from err
    mu, lam = as_float_array(f"{name} mu", mu), as_float_array(f"{name} lam", lam)
    if n_fit is None:
        ok = mu.ndim == 1 and mu.shape == lam.shape and mu.shape[0] >= 1
        want = "1-D arrays of equal length >= 1"
    else:
        ok = mu.shape == lam.shape == (n_fit,)
        want = f"both have shape (n_fit,) = ({n_fit},)"
    if not ok:
        raise ValueError(
            f"{name} (mu, lam) must be {want}, got shapes {mu.shape} and {lam.shape}."
        )
    check_finite(f"{name} mu", mu)
    check_finite(f"{name} lam", lam)
    if is_concrete(mu) and np.any(np.abs(np.asarray(mu)) > 1.0):
        raise ValueError(f"{name} mu must lie in [-1, 1], got {np.asarray(mu)!r}.")
    return mu, lam


def berg_scherg_params(
    sphere: SphereModel,
    n_terms: IntScalar = 200,
    n_fit: IntScalar = 3,
    *,
    n_starts: IntScalar = 8,
    max_iter: IntScalar = 100,
    throw: bool | np.bool_ = True,
    init: BergSchergParams
    | tuple[Real[ArrayLike, " fit"], Real[ArrayLike, " fit"]]
    | None = None,
) -> BergSchergParams:
    """Fit Berg–Scherg equivalent dipoles to the exact multi-shell series.

    Equivalent to the fit in ``mne.make_sphere_model`` (``sphere['mu']``,
    ``sphere['lambda']``), with a global-then-local optimiser in place of
    COBYLA.

    Parameters
    ----------
    sphere : SphereModel
        Head model; a stacked batch of models works under ``jax.vmap``.
    n_terms : int
        Number of series terms fitted (default 200, as MNE-Python).
    n_fit : int
        Number of equivalent dipoles (default 3, as MNE-Python), >= 1.
    n_starts : int
        Number of best grid points refined by damped Newton.
    max_iter : int
        Maximum damped-Newton iterations per start.
    throw : bool
        What happens when the fit *fails* (as ``throw`` in optimistix): a
        non-finite result (``RESULTS.nonfinite``), or a gradient that has not
        converged together with a series ``misfit`` above ``BS_MISFIT_TOL`` =
        1e-3 (``RESULTS.poor_fit``). True (default): on the eager path a
        ``RuntimeError`` with the model, the iterations and the misfit; on a
        traced model (``jit`` / ``vmap`` / ``grad``) an ``eqx.error_if`` in
        the kernel (``eqx.EquinoxRuntimeError`` when the program runs). False:
        the best fit found is returned, silently; ``params.status`` says what
        happened. An unconverged gradient alone is not a failure: it is common
        (about 12 % of 3-shell models over skull conductivities 0.001–0.33
        S/m, e.g. every nearly homogeneous one, where two ``mu`` coalesce) and
        those fits are as good as converged ones (misfit <= 3e-4 measured).
    init : BergSchergParams or (mu, lam), optional
        Warm start: the fit of a nearby model (e.g. the previous step of a
        head-model fit), ``mu`` (n_fit,) in [-1, 1] and ``lam`` (n_fit,) in
        1/(S/m), in the output's convention (``lam = lambda / sigma_scalp``;
        converted with this model's scalp conductivity). One damped Newton
        run from ``init``, without the grid stage, is kept when it is finite,
        its gradient converged and its misfit is <= ``BS_MISFIT_TOL``;
        otherwise the cold fit runs (``lax.cond``). May be traced; its
        derivative does not reach the result. Checked eagerly when concrete
        (``ValueError`` naming ``init``). See Notes.

    Returns
    -------
    params : BergSchergParams
        ``mu`` (n_fit,), ``lam`` (n_fit,) in 1/(S/m), ``residual`` () and
        ``status`` (:class:`~exg_jax.status.SolverStatus`):

        * ``result``: ``RESULTS.successful``, ``RESULTS.poor_fit`` or
          ``RESULTS.nonfinite`` (see ``throw``); ``status.converged`` is
          ``result == RESULTS.successful``;
        * ``iterations`` (int, ()): damped-Newton iterations of the retained
          start (the warm run, when kept; 0 for a single shell);
        * ``change`` (()): the relative gradient at the returned optimum,
          ``max_F |g_F| / (||w p|| ||w f||)`` over the free unknowns ``F``
          (``p = n - 1``; the denominator is the gradient's rounding scale);
        * ``stats["gradient_converged"]`` (bool, ()): ``change <= eps`` (the
          gradient is at rounding level; the implicit derivative is exact);
        * ``stats["misfit"]`` (()): weighted misfit of the whole series
          relative to the weighted target,
          ``sum_n w_{n-1}^2 (f_n - sum_j lambda_j mu_j^(n-1))^2 /
          sum_n w_{n-1}^2 f_n^2`` (``n = 2 .. n_terms``); unlike
          ``residual`` it does not blow up for nearly homogeneous models.

        Batched along with ``mu`` / ``lam`` under ``vmap``.

    Notes
    -----
    With ``f_n`` from :func:`sphere_series_coefficients` and MNE-Python's
    weights ``w_k = sqrt((2k+1)(3k+1)/k) * f^(k-1)`` (``f`` = innermost over
    outermost radius), the fit reproduces the dipole term exactly,
    ``sum_j lambda_j = f_1``, and minimises

    ``sum_{n=2}^{n_terms} w_{n-1}^2 (f_n - sum_j lambda_j mu_j^(n-1))^2``

    (MNE-Python's objective), with ``|mu_j| <= 1 - 2e-6`` (MNE's feasible set
    for COBYLA). Global stage: the cost with ``lambda`` in closed form
    (variable projection) is scored on a fixed grid of ordered ``mu`` tuples
    (denser near 1). Local stage: from ``n_starts`` grid points (half the
    best overall, half the best among tuples whose ``mu`` are at least 0.1
    apart, so that not every start lies where two ``mu`` coalesce), a
    damped Newton iteration on the joint unknowns ``(mu, lambda_1..)`` with
    the exact (closed-form) Hessian, bound-constrained on ``mu``; it
    converges quadratically, to rounding, so the implicit derivative is exact.
    The best start is kept. Returned ``lam = lambda / sigma_N``.

    Derivatives w.r.t. radii and conductivities use the implicit function
    theorem at the optimum (``grad = 0`` on the free unknowns; a ``mu`` held
    at its bound does not move), not the unrolled iterations: a
    ``jax.custom_jvp`` whose tangent is linear (reverse mode by
    transposition) and whose rule differentiates only closed forms at the
    optimum, so ``jax.jvp`` / ``jacfwd`` / ``grad`` / ``jax.hessian`` all
    work, traced models included (``make_sphere_forward``).

    Warm start (``init``): from the fit of a model whose skull conductivity
    is 1–5 % away it takes 7–27 Newton iterations (one start) instead of
    the grid and ``n_starts`` runs; see ``bench/refit.py`` for timings. It
    is local, like any warm start: it returns the optimum of the basin that
    ``init`` lies in. Where the global optimum jumps to another branch as
    the model changes (MNE's 4-shell model between skull conductivities
    0.0036 and 0.0039 S/m: the smallest ``mu`` goes from ~0.63 to ~-0.32),
    a start from the far side converges to the other, slightly worse local
    optimum (measured: from 0.0028 S/m to the 0.004 S/m model, misfit
    9.5e-5 vs 7.4e-5 cold), and is kept. Runs that do not converge, or
    converge to a poor fit, fall back to the cold fit, so where the
    gradient never converges (two ``mu`` coalescing, see ``throw``) a warm
    start costs its run plus the cold fit; under ``vmap`` with a batched
    outcome both run (``lax.cond`` becomes a select). A single shell
    ignores ``init``.

    Measured against MNE-Python's COBYLA fit (tests/test_sphere.py): the
    weighted residual is lower for both default models (3-shell default
    RSS 5.42e-5 vs 5.63e-5; MNE's 4-shell 8.1096e-4 vs 8.1100e-4). Caveat:
    for some layered models the infimum is only approached as two ``mu``
    coalesce with diverging, opposite ``lambda`` (a dipole-derivative
    term); there the iteration stops at ``max_iter`` with
    ``status.stats["gradient_converged"] == False`` and the result is a good
    but not optimal fit. With the default 8 starts, on the 3-shell default geometry and 30
    skull conductivities from 0.002 to 0.1 S/m, every fit converged and
    none had a larger residual than MNE-Python's (tests/test_sphere.py
    checks six of them).

    A single shell is represented exactly: ``mu = (1, 1/2, 1/4, ...)``,
    ``lam = (1/sigma, 0, ...)``, ``residual = 0``.
    """
    _check_model(sphere)
    n_terms = as_int("n_terms", n_terms, minimum=2)
    n_fit = as_int("n_fit", n_fit, minimum=1)
    n_starts = as_int("n_starts", n_starts, minimum=1)
    max_iter = as_int("max_iter", max_iter, minimum=1)
    if not isinstance(throw, bool | np.bool_):
        raise TypeError(f"throw must be a bool, got {type(throw).__name__}.")
    if n_fit >= n_terms:
        raise ValueError(f"n_fit ({n_fit}) must be smaller than n_terms ({n_terms}).")
    if init is not None:
        init = as_mu_lam("init", init, n_fit)
    # A traced init (a concrete model) also makes the outputs traced.
    concrete = is_concrete(sphere.radii, sphere.conductivities, init)
    mu, lam, rv, status = _bs_kernel(
        sphere.radii,
        sphere.conductivities,
        n_terms=n_terms,
        n_fit=n_fit,
        n_starts=n_starts,
        max_iter=max_iter,
        check=not concrete,
        throw=bool(throw) and not concrete,
        init=init,
    )
    if throw and concrete and not bool(np.all(np.asarray(status.converged))):
        # The detailed message of check_status's kind (model, iterations,
        # change, misfit), with what the forward's user can do.
        raise RuntimeError(
            "The Berg–Scherg fit failed for the SphereModel with radii "
            f"{np.asarray(sphere.radii).tolist()} m and conductivities "
            f"{np.asarray(sphere.conductivities).tolist()} S/m after "
            f"{np.asarray(status.iterations).tolist()} iterations "
            f"(max_iter={max_iter}; final relative gradient "
            f"{np.asarray(status.change).tolist()}): series misfit "
            f"{np.asarray(status.stats['misfit']).tolist()} > {BS_MISFIT_TOL:g} "
            "with the gradient not converged, or non-finite values. Use "
            "method='exact' in the forward, pass berg_scherg=(mu, lam), raise "
            "n_starts / max_iter, or pass throw=False to get the best fit found "
            "(with its status)."
        )
    return BergSchergParams(mu, lam, rv, status)


# ---------------------------------------------------------------------------
# Sphere fit to head-shape points
# ---------------------------------------------------------------------------


_fit_points_kernel = jax.jit(_series.fit_sphere_points)

#: Points are degenerate (no unique sphere) when the smallest singular value of
#: the centred points is below this times the largest (float64; traced float32
#: uses ``max(this, 100 eps)``).
_DEGENERATE_TOL = 1e-6


@eqx.filter_jit
def _fit_points_traced(p):
    """Traced path: ``eqx.error_if`` on non-finite or degenerate points, then the fit."""
    q = lax.stop_gradient(p)
    finite = jnp.all(jnp.isfinite(q))
    qc = jnp.where(finite, q - jnp.mean(q, axis=0), 0.0)
    sv = jnp.linalg.svd(qc, compute_uv=False)
    tol = max(_DEGENERATE_TOL, 100.0 * float(jnp.finfo(p.dtype).eps))
    degenerate = (sv[0] == 0) | (sv[2] <= tol * sv[0])
    p = eqx.branched_error_if(
        p,
        ~finite | degenerate,
        # Largest index wins under vmap: valid elements get -1 (never shown).
        jnp.where(~finite, 1, jnp.where(degenerate, 0, -1)),
        (
            "points are degenerate (coincident, collinear or coplanar): no unique "
            "sphere (traced fit_sphere_to_headshape).",
            "points contain NaN or Inf (traced fit_sphere_to_headshape).",
        ),
    )
    return _series.fit_sphere_points(p, jnp.ones(p.shape[0], p.dtype))


def fit_sphere_to_headshape(
    points: Real[ArrayLike, "point 3"] | NestedSequence,
) -> tuple[Float[Array, ""], Float[Array, "3"]]:
    """Least-squares sphere through electrode / digitisation points.

    Equivalent in purpose to ``mne.bem.fit_sphere_to_headshape`` (which takes
    an ``Info``); MNE-Python's fit is the algebraic step only.

    Parameters
    ----------
    points : array_like, shape (n_points, 3), m
        At least 4 finite, non-coplanar points (float32 / float64; integers are
        cast to the default float dtype; float16 is a ``TypeError``). Not
        modified.

    Returns
    -------
    radius : Array, shape (), m
    center : Array, shape (3,), m

    Notes
    -----
    The points are centred and scaled, an algebraic least-squares fit
    (``|p|^2 = 2 p·c + R^2 - |c|^2``, linear in ``c`` and ``R^2 - |c|^2``)
    gives a start, then Gauss–Newton iterations minimise the geometric
    residuals ``|p_i - c| - R``. Degenerate input (fewer than 4 points,
    non-finite values, coplanar or collinear points: smallest singular value of
    the centred points <= 1e-6 times the largest) raises ``ValueError`` naming
    ``points``; under ``jit`` / ``vmap`` / ``grad`` the value checks are an
    ``eqx.error_if`` (``eqx.EquinoxRuntimeError``), never a NaN sphere.
    """
    p = as_float_array("points", points)
    if p.ndim != 2 or p.shape[-1] != 3:
        raise ValueError(f"points must have shape (n_points, 3), got {tuple(p.shape)}.")
    if p.shape[0] < 4:
        raise ValueError(f"points must contain at least 4 points, got {p.shape[0]}.")
    check_finite("points", p)
    if is_concrete(p):
        pn = np.asarray(p, dtype=float)
        s = np.linalg.svd(pn - pn.mean(axis=0), compute_uv=False)
        if s[0] == 0 or s[2] <= _DEGENERATE_TOL * s[0]:
            raise ValueError(
                "points are degenerate (coincident, collinear or coplanar; "
                f"singular values of the centred points {s!r}): no unique sphere."
            )
    n = p.shape[0]
    if is_concrete(p):
        # Pad (in NumPy, no per-shape eager ops) to a bucket size 8^k >= 64
        # with zero-weight copies of the first point, so that point sets of
        # different sizes share one compilation per bucket.
        size = 64
        while size < n:
            size *= 8
        pn = np.asarray(p)
        padded = np.concatenate([pn, np.broadcast_to(pn[:1], (size - n, 3))])
        wts = np.concatenate([np.ones(n, pn.dtype), np.zeros(size - n, pn.dtype)])
        return _fit_points_kernel(padded, wts)
    return _fit_points_traced(p)
