"""Data-driven choice of the regularisation λ² of the minimum-norm family.

Five rules pick λ² (MNE-Python's ``lambda2`` = 1 / SNR², amplitude SNR)
from sensor data through an :class:`~exg_jax.InverseOperator`: the Bayesian
evidence (Gaussian marginal likelihood), generalised cross-validation (GCV),
the L-curve corner, Morozov's discrepancy principle and MNE's SNR rule. Each
is an object with a fixed interface (:class:`AbstractLambda2Rule`); the
strings of :data:`LAMBDA2_RULES` are aliases, as the method strings are
(``"MNE"`` … in :mod:`exg_jax.inverse`). :func:`select_lambda2` searches
λ² for any rule; :func:`log_evidence`, :func:`gcv`, :func:`l_curve`,
:func:`discrepancy` evaluate the criteria for any array of λ² values (one
compiled program for any number of values), differentiably in λ² and in
every array of the operator.

The model
---------
The operator holds the whitener ``W`` (r × n_chan, r = ``inv.rank``) and the
thin SVD of the normalised whitened gain ``A = W G R^½ = U S Vᵀ``
(``inv.eigen_fields`` = Uᵀ, k × r; ``inv.sing`` = s, k = min(r, n_src ·
n_orient)); ``R`` is trace-normalised so that ``‖A‖²_F = Σ s_i² = r``.
Whitened data ``z_t = W y_t`` (r-dimensional) follow

    z_t = A x_t + e_t,   x_t ~ N(0, σ²/λ² I),   e_t ~ N(0, σ² I),

so in the U basis ``c_it = u_iᵀ z_t ~ N(0, σ² d_i)`` with
``d_i = 1 + s_i²/λ²`` (i < k), and the other ``m = r − k`` whitened
directions hold noise of variance σ² only. σ² = 1 means that the noise
covariance is right. Every criterion depends on the data only through

    q_i = Σ_t c_it²  (k values),   P = Σ_t ‖z_t‖²,   N (samples),

and ``P_rest = max(P − Σ q_i, 0)`` (the power outside the eigen fields, 0
when k = r). N is ``n_times`` for evoked data and ``n_epochs · n_times``
for epochs (pooled). With the MNE fit ``x̂ = R^½ V Γ Uᵀ z``,
``Γ = S/(S² + λ²)``, and the filter factors ``f_i = s_i²/(s_i² + λ²)``:

- residual ``‖res‖² = Σ_t ‖z_t − A R^{-½} x̂_t‖² = Σ q_i (λ²/(s_i² + λ²))² + P_rest``,
- penalty ``‖x‖² = Σ_t ‖R^{-½} x̂_t‖² = Σ q_i s_i²/(s_i² + λ²)²``,
- degrees of freedom ``df = tr(W G K) = Σ f_i`` (hat-matrix trace).

Why λ² = 1/SNR²: under the model ``E[P/(N r)] = σ² (1 + Σ s_i²/(r λ²)) =
σ² (1 + 1/λ²)``, because of the trace normalisation. The signal power per
whitened channel over the noise power, SNR², is therefore 1/λ² — the
moment estimator of λ² is MNE's rule (:class:`SnrRule`).

Numerics
--------
The sufficient statistics of the data (:class:`DataStats`, V²) are computed
scale-free (``m² · (Y/m)(Y/m)ᵀ``), and the whitened ones dimensionlessly
(``(W √m) (S/m) (W √m)ᵀ``), so float32 handles SI units (data ≈ 1e-6 V,
whiteners ≈ 1e6 /V). ``log(1 + s²/λ²)`` is computed as ``log1p(s²/λ²)``
where ``s² ≤ λ²`` and as ``log(s² + λ²) − log λ²`` elsewhere (``s²/λ²``
overflows float32 for a tiny λ²).
"""

from __future__ import annotations

import abc
import numbers
import warnings
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from ._numerics import safe_div, scale_of
from ._typing import IntScalar, NestedSequence, RealScalar
from ._validate import (
    as_int,
    check_array,
    check_finite,
    check_positive_finite_scalar,
    check_sensor_data,
    check_type,
    is_concrete,
    lambda2_error_if,
)
from .inverse import InverseOperator, as_method, compiled_method
from .methods import AbstractMinimumNorm
from .status import (
    RESULTS,
    SolverStatus,
    _user_stacklevel,
    error_if_failed,
    make_status,
)

__all__ = [
    "GCV",
    "LAMBDA2_RULES",
    "AbstractCriterionRule",
    "AbstractLambda2Rule",
    "DataStats",
    "Discrepancy",
    "Evidence",
    "LCurve",
    "LCurvePoint",
    "Lambda2Selection",
    "SnrRule",
    "WhitenedStats",
    "data_stats",
    "discrepancy",
    "gcv",
    "hat_matrix_trace",
    "l_curve",
    "log_evidence",
    "select_lambda2",
    "snr_rule_lambda2",
    "whitened_stats",
]

_LOG_2PI = float(np.log(2 * np.pi))
_MAX_BISECT = 200  # bisection steps of the refinement (it stops at ~ulp width)


# --------------------------------------------------------------------------- #
# Sufficient statistics
# --------------------------------------------------------------------------- #
class DataStats(eqx.Module):
    """Sufficient statistics of sensor data for the λ² criteria.

    Attributes
    ----------
    scatter : Array, shape (n_chan, n_chan), V²
        ``Σ_t y_t y_tᵀ`` over all samples (and epochs).
    n_samples : Array, shape ()
        Number of samples N (``n_times``, or ``n_epochs · n_times``), a
        float array of the scatter's dtype.

    Notes
    -----
    Build it with :func:`data_stats`; every function that takes ``data``
    accepts either the array or its ``DataStats`` (computing it once saves
    work when many criteria are evaluated on the same data).
    """

    scatter: Float[Array, "chan chan"]
    n_samples: Float[Array, ""]


class WhitenedStats(NamedTuple):
    """Whitened sufficient statistics (dimensionless; see the module's model).

    Attributes
    ----------
    q : Array, shape (n_comp,)
        ``q_i = Σ_t (u_iᵀ W y_t)²``.
    total : Array, shape ()
        ``P = Σ_t ‖W y_t‖²``.
    rest : Array, shape ()
        ``P_rest = max(P − Σ q_i, 0)`` (exactly 0 when n_comp = r).
    n_samples : Array, shape ()
        N.
    rank : Array, shape ()
        r = ``inv.rank`` (as a float).
    sing : Array, shape (n_comp,)
        The operator's singular values s.
    """

    q: Float[Array, " comp"]
    total: Float[Array, ""]
    rest: Float[Array, ""]
    n_samples: Float[Array, ""]
    rank: Float[Array, ""]
    sing: Float[Array, " comp"]


def _stats_of(data) -> DataStats:
    """Pure: the :class:`DataStats` of a (n_chan, n_times) or 3-D array."""
    if not jnp.issubdtype(data.dtype, jnp.floating):
        data = data.astype(jnp.result_type(float))
    m = scale_of(data)  # V, held constant: (y/m)² never leaves the dtype's range
    y = data / m
    if y.ndim == 3:
        scatter = jnp.einsum("ect,edt->cd", y, y)
        n = y.shape[0] * y.shape[2]
    else:
        scatter = y @ y.T
        n = y.shape[1]
    return DataStats((scatter * m) * m, jnp.asarray(n, dtype=y.dtype))


_stats_jit = eqx.filter_jit(_stats_of)


def whitened_stats(stats: DataStats, inv: InverseOperator) -> WhitenedStats:
    """The whitened statistics ``(q, P, P_rest, N, r, s)`` of ``stats`` (pure).

    Traceable and differentiable w.r.t. every array of ``stats`` and ``inv``.
    ``W S Wᵀ`` is formed as ``(W √m)(S/m)(W √m)ᵀ`` with ``m = max |S|`` held
    constant (dimensionless, no V² in the dtype).
    """
    scatter = stats.scatter
    m = scale_of(scatter)
    wn = inv.whitener * jnp.sqrt(m)
    white = wn @ (scatter / m) @ wn.T  # (r, r), Σ_t z_t z_tᵀ
    ef = inv.eigen_fields
    q = jnp.sum((ef @ white) * ef, axis=1)
    total = jnp.trace(white)
    dtype = q.dtype
    if ef.shape[0] < inv.rank:
        rest = jnp.maximum(total - jnp.sum(q), 0)
    else:  # the eigen fields span the whitened space: no power outside
        rest = jnp.zeros((), dtype)
    return WhitenedStats(
        q=q,
        total=total,
        rest=rest,
        n_samples=jnp.asarray(stats.n_samples, dtype),
        rank=jnp.asarray(inv.rank, dtype),
        sing=inv.sing.astype(dtype),
    )


# --------------------------------------------------------------------------- #
# The criteria as functions of (whitened statistics, λ²), λ² a scalar
# --------------------------------------------------------------------------- #
def _ratios(w: WhitenedStats, lam):
    """``(s², s² + λ², λ²/(s² + λ²))``."""
    s2 = w.sing * w.sing
    den = s2 + lam
    return s2, den, lam / den


def _log_d(s2, den, lam):
    """``log(1 + s²/λ²)``, without ``s²/λ²`` where it could overflow."""
    small = s2 <= lam
    ratio = jnp.where(small, s2, 0) / lam  # ≤ 1
    return jnp.where(small, jnp.log1p(ratio), jnp.log(den) - jnp.log(lam))


def _residual(w: WhitenedStats, lam):
    """``‖res‖² = Σ q_i (λ²/(s_i² + λ²))² + P_rest``."""
    _, _, g = _ratios(w, lam)
    return jnp.sum(w.q * g * g) + w.rest


def _penalty(w: WhitenedStats, lam):
    """``‖x‖² = Σ q_i s_i²/(s_i² + λ²)²`` (the Tikhonov penalty, R-weighted)."""
    s2, den, _ = _ratios(w, lam)
    return jnp.sum(w.q * (s2 / den) / den)


def _log_evidence(w: WhitenedStats, lam, noise_scale):
    s2, den, g = _ratios(w, lam)
    log_d = jnp.sum(_log_d(s2, den, lam))
    fit = jnp.sum(w.q * g) + w.rest  # Σ q_i / d_i + P_rest
    n, r = w.n_samples, w.rank
    if noise_scale is None:
        sigma2 = fit / (n * r)
        return -0.5 * n * (log_d + r * (_LOG_2PI + jnp.log(sigma2)) + r)
    sigma2 = jnp.asarray(noise_scale, fit.dtype)
    return -0.5 * (fit / sigma2 + n * log_d + n * r * (_LOG_2PI + jnp.log(sigma2)))


def _gcv(w: WhitenedStats, lam):
    _, _, g = _ratios(w, lam)
    r = w.rank
    # r − df = (r − k) + Σ λ²/(s² + λ²): no cancellation for a small λ²
    resid_dof = (r - w.q.shape[0]) + jnp.sum(g)
    return (_residual(w, lam) / (w.n_samples * r)) / (resid_dof / r) ** 2


class LCurvePoint(NamedTuple):
    """A point of the L-curve (:func:`l_curve`).

    Attributes
    ----------
    rho : Array
        ``½ log ‖res‖²`` (log of the whitened residual norm).
    eta : Array
        ``½ log ‖x‖²`` (log of the R-weighted solution norm).
    curvature : Array
        Signed curvature of ``(rho, eta)``, positive at the corner.
    """

    rho: Float[Array, "*shape"]
    eta: Float[Array, "*shape"]
    curvature: Float[Array, "*shape"]


def _l_curve(w: WhitenedStats, lam) -> LCurvePoint:
    """(ρ, η, κ) at λ²; closed-form derivatives in ``t = log λ²``.

    With ``g = λ²/(s² + λ²)`` (``dg/dt = g(1 − g)``) and ``h = s²/(s² +
    λ²)²`` (``dh/dt = −2hg``): ``‖res‖²' = 2 Σ q g²(1 − g)``, ``‖res‖²'' =
    2 Σ q g²(1 − g)(2 − 3g)``, ``‖x‖²' = −2 Σ q h g``, ``‖x‖²'' = −2 Σ q h g
    (1 − 3g)``; ``ρ' = ‖res‖²'/(2‖res‖²)``, ``ρ'' = (‖res‖²'' ‖res‖² −
    ‖res‖²'²)/(2‖res‖⁴)``, the same for η.
    """
    s2, den, g = _ratios(w, lam)
    q = w.q
    h = (s2 / den) / den
    a = q * g * g * (1 - g)
    res = jnp.sum(q * g * g) + w.rest
    res1 = 2 * jnp.sum(a)
    res2 = 2 * jnp.sum(a * (2 - 3 * g))
    b = q * h * g
    pen = jnp.sum(q * h)
    pen1 = -2 * jnp.sum(b)
    pen2 = -2 * jnp.sum(b * (1 - 3 * g))
    rho1 = res1 / (2 * res)
    eta1 = pen1 / (2 * pen)
    rho2 = (res2 / res - (res1 / res) ** 2) / 2
    eta2 = (pen2 / pen - (pen1 / pen) ** 2) / 2
    num = rho1 * eta2 - rho2 * eta1
    speed2 = rho1 * rho1 + eta1 * eta1
    kappa = safe_div(num, speed2 * jnp.sqrt(speed2))
    return LCurvePoint(jnp.log(res) / 2, jnp.log(pen) / 2, kappa)


def _discrepancy(w: WhitenedStats, lam, tau):
    return _residual(w, lam) / (w.n_samples * w.rank) - jnp.asarray(tau, w.q.dtype)


def _snr_power(w: WhitenedStats):
    """``P/(N r) − 1``: signal over noise power per whitened channel (SNR²)."""
    return w.total / (w.n_samples * w.rank) - 1


def _snr_lambda2(w: WhitenedStats):
    tiny = jnp.finfo(w.total.dtype).tiny
    return 1 / jnp.maximum(_snr_power(w), tiny)


# --------------------------------------------------------------------------- #
# Rules
# --------------------------------------------------------------------------- #
class Lambda2Selection(NamedTuple):
    """Result of :func:`select_lambda2` (``lambda2, value, status = ...``).

    Attributes
    ----------
    lambda2 : Array, shape ()
        The selected λ² (= 1/SNR²), within ``bounds``.
    value : Array, shape ()
        The rule's criterion at ``lambda2`` (evidence: log evidence; GCV:
        the GCV value; L-curve: the curvature; discrepancy: D(λ²) ≈ 0; SNR
        rule: the estimated SNR² ``P/(N r) − 1``, ≤ 0 for pure noise).
    status : SolverStatus
        ``result``: ``RESULTS.successful``, ``RESULTS.at_bound`` when the
        optimum / root lies at (or beyond) a bound of ``bounds`` (then
        ``lambda2`` is that bound), ``RESULTS.nonfinite`` for NaN / Inf
        criteria; ``iterations``: refinement (bisection) steps; ``change``:
        final bracket width in log λ²; ``stats["at_bound"]``: −1 (lower), 0
        (none) or +1 (upper).
    """

    lambda2: Float[Array, ""]
    value: Float[Array, ""]
    status: SolverStatus


class AbstractLambda2Rule(eqx.Module):
    """Interface of a λ² selection rule.

    Subclasses set the class attribute ``name`` and implement :meth:`select`,
    a pure, traceable function of the whitened statistics. A rule given by a
    scalar criterion of λ² subclasses :class:`AbstractCriterionRule` instead
    and only implements ``criterion``. Numeric fields are pytree leaves
    (:func:`select_lambda2` turns Python numbers into arrays: a new value
    does not recompile).
    """

    name: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def select(
        self,
        w: WhitenedStats,
        bounds: tuple[Float[Array, ""], Float[Array, ""]],
        n_grid: int,
    ) -> Lambda2Selection:
        """Select λ² within ``bounds = (lo, hi)`` (pure, traceable).

        ``n_grid`` (static) is the size of the initial log-spaced grid. The
        status says ``RESULTS.at_bound`` when the optimum lies at a bound.
        """


class AbstractCriterionRule(AbstractLambda2Rule):
    """A rule that maximises, minimises or finds the root of a criterion of λ².

    Subclasses set ``goal`` (``"max"``, ``"min"`` or ``"root"``; a root
    criterion must increase with λ²) and implement :meth:`criterion`.
    :meth:`select` is shared: the criterion on a grid of ``n_grid`` values
    of ``t = log λ²`` (one vmapped evaluation), then bisection of ``∂f/∂t``
    (``f`` itself for a root) within the bracket of the best grid point, to
    a bracket of a few ulps. The result is differentiable w.r.t. the data
    and the operator by the implicit-function theorem
    (``dt*/dθ = −(∂h/∂θ)/(∂h/∂t)`` with ``h`` the bisected function); at a
    bound its derivative is 0.
    """

    goal: eqx.AbstractClassVar[str]
    #: True: prefer the best *interior* local optimum of the grid to a better
    #: value at an end of the grid (for criteria that only tend to their
    #: optimum asymptotically, as the L-curve's curvature tends to 0).
    interior_optimum: ClassVar[bool] = False

    @abc.abstractmethod
    def criterion(
        self, w: WhitenedStats, lambda2: Float[Array, ""]
    ) -> Float[Array, ""]:
        """The criterion at one λ² (scalar; pure, traceable, differentiable)."""

    def select(
        self,
        w: WhitenedStats,
        bounds: tuple[Float[Array, ""], Float[Array, ""]],
        n_grid: int,
    ) -> Lambda2Selection:
        lo, hi = bounds
        dtype = w.q.dtype
        ts = jnp.linspace(jnp.log(lo), jnp.log(hi), n_grid, dtype=dtype)
        w0 = jax.lax.stop_gradient(w)  # the search; gradients come implicitly

        def crit(t, ww):
            return self.criterion(ww, jnp.exp(t))

        vals = jax.vmap(crit, in_axes=(0, None))(ts, w0)
        finite = jnp.all(jnp.isfinite(vals))
        last = n_grid - 1
        if self.goal == "root":
            # h = −f decreases through 0 at the root: h(a) > 0 ≥ h(b)
            def h(t, ww):
                return -crit(t, ww)

            at_lo = vals[0] >= 0
            at_hi = vals[last] < 0
            j = jnp.clip(jnp.argmax(vals >= 0), 1, last)
            a, b = ts[j - 1], ts[j]
            best = j  # only used for the guard below: none for a root
        else:
            sign = 1.0 if self.goal == "max" else -1.0

            def h(t, ww):  # ∂(sign · f)/∂t: + below the optimum, − above
                return sign * jax.grad(crit)(t, ww)

            score = jnp.where(jnp.isnan(vals), -jnp.inf, sign * vals)
            best = jnp.argmax(score)
            if self.interior_optimum:
                # the best interior local optimum of the grid, when there is one
                mid = score[1:-1]
                peak = (mid > score[:-2]) & (mid >= score[2:])
                local = jnp.argmax(jnp.where(peak, mid, -jnp.inf)) + 1
                best = jnp.where(jnp.any(peak), local, best)
            h_best = h(ts[best], w0)
            at_lo = (best == 0) & (h_best <= 0)
            at_hi = (best == last) & (h_best >= 0)
            up = h_best > 0
            a = jnp.where(up, ts[best], ts[jnp.maximum(best - 1, 0)])
            b = jnp.where(up, ts[jnp.minimum(best + 1, last)], ts[best])

        # at a bound there is nothing to refine: an empty bracket
        t_bound = jnp.where(at_lo, ts[0], ts[last])
        a = jnp.where(at_lo | at_hi, t_bound, a)
        b = jnp.where(at_lo | at_hi, t_bound, b)
        eps = jnp.finfo(dtype).eps

        def cond(carry):
            a, b, it = carry
            width = b - a
            tol = 4 * eps * jnp.maximum(1, jnp.maximum(jnp.abs(a), jnp.abs(b)))
            return (width > tol) & (it < _MAX_BISECT)

        def body(carry):
            a, b, it = carry
            mid = 0.5 * (a + b)
            pos = h(mid, w0) > 0
            return jnp.where(pos, mid, a), jnp.where(pos, b, mid), it + 1

        a, b, iters = jax.lax.while_loop(cond, body, (a, b, jnp.asarray(0)))
        t_star = 0.5 * (a + b)
        if self.goal != "root":
            # guard: never worse than the best grid point
            worse = sign * crit(t_star, w0) < score[best]
            t_star = jnp.where(worse, ts[best], t_star)
        interior = ~(at_lo | at_hi)
        t_star = jax.lax.stop_gradient(jnp.where(interior, t_star, t_bound))
        # implicit derivative: value t*, gradient −(∂h/∂θ)/(∂h/∂t)
        h_live, dh_dt = jax.jvp(lambda t: h(t, w), (t_star,), (jnp.ones_like(t_star),))
        step = safe_div(
            h_live - jax.lax.stop_gradient(h_live), jax.lax.stop_gradient(dh_dt)
        )
        t_out = t_star - jnp.where(interior, step, 0)
        lam = jnp.where(at_lo, lo, jnp.where(at_hi, hi, jnp.exp(t_out)))
        value = self.criterion(w, lam)
        finite = finite & jnp.isfinite(t_star) & jnp.isfinite(value)
        bound = jnp.where(at_lo, -1, jnp.where(at_hi, 1, 0)).astype(jnp.int8)
        status = make_status(
            interior,
            iters,
            (b - a).astype(dtype),
            finite=finite,
            stats={"at_bound": bound},
            failed_code=RESULTS.at_bound,
        )
        lam = jnp.where(finite, lam, jnp.nan)
        return Lambda2Selection(lam, value, status)


def _check_positive(name, x):
    if x is not None and not isinstance(x, jax.core.Tracer):
        check_positive_finite_scalar(name, x)


class Evidence(AbstractCriterionRule):
    """Maximum marginal likelihood (Bayesian evidence) of the data.

    Parameters
    ----------
    noise_scale : float > 0 or None
        σ², the variance of the whitened noise relative to the noise
        covariance. None (default): profiled (σ² estimated with λ²); 1.0:
        trust the noise covariance.

    Notes
    -----
    See :func:`log_evidence`.
    """

    name: ClassVar[str] = "evidence"
    goal: ClassVar[str] = "max"
    noise_scale: RealScalar | None = None

    def __check_init__(self):
        _check_positive("noise_scale", self.noise_scale)

    def criterion(self, w, lambda2):
        return _log_evidence(w, lambda2, self.noise_scale)


class GCV(AbstractCriterionRule):
    """Minimum of generalised cross-validation (Golub, Heath & Wahba 1979).

    See :func:`gcv`.
    """

    name: ClassVar[str] = "gcv"
    goal: ClassVar[str] = "min"

    def criterion(self, w, lambda2):
        return _gcv(w, lambda2)


class LCurve(AbstractCriterionRule):
    """Corner of the L-curve: maximum curvature (Hansen & O'Leary 1993).

    The corner is the interior local maximum of the signed curvature κ
    (:func:`l_curve`) with the largest κ on the grid; the ends of the curve
    are straight (κ → 0) and are not corners, even when every interior κ is
    negative. ``RESULTS.at_bound`` when κ has no interior local maximum.

    Notes
    -----
    When the eigen fields span the whitened space (k = r, the usual EEG
    case) the residual tends to 0 as λ² → 0 and the curve has no classic
    L corner: it runs from a flat branch (small λ², only the residual
    changes) down a steep one (large λ², only the solution norm changes),
    a clockwise turn (κ < 0). The corner selected is then the dimple of the
    largest κ between them, where the components with ``s_i² ≈ λ²`` leave
    the fit. See :func:`l_curve`.
    """

    name: ClassVar[str] = "lcurve"
    goal: ClassVar[str] = "max"
    interior_optimum: ClassVar[bool] = True

    def criterion(self, w, lambda2):
        return _l_curve(w, lambda2).curvature


class Discrepancy(AbstractCriterionRule):
    """Morozov's discrepancy principle: the residual power equals the noise's.

    Parameters
    ----------
    tau : float > 0
        Target whitened residual power per channel and sample (1: the noise
        covariance's level; MNE's whitened noise has unit variance).

    Notes
    -----
    See :func:`discrepancy`. The root is unique (D increases with λ²); it
    lies beyond the upper bound when the data hold no more power than the
    noise (``P/(N r) ≤ tau``).
    """

    name: ClassVar[str] = "discrepancy"
    goal: ClassVar[str] = "root"
    tau: RealScalar = 1.0

    def __check_init__(self):
        _check_positive("tau", self.tau)

    def criterion(self, w, lambda2):
        return _discrepancy(w, lambda2, self.tau)


class SnrRule(AbstractLambda2Rule):
    """MNE's rule λ² = 1/SNR² with the SNR estimated from the data.

    ``SNR² = max(P/(N r) − 1, tiny)``: the whitened power per channel and
    sample less the noise's (1), i.e. the signal-to-noise power ratio — the
    moment estimator of 1/λ² under the model (see the module docstring).
    MNE's ``estimate_snr`` reports ``snr(t)² = ‖z_t‖²/r`` per time point
    (signal *plus* noise); here ``P/(N r)`` is its mean over the samples.
    See :func:`snr_rule_lambda2`. No search: :meth:`select` clips to
    ``bounds`` (``RESULTS.at_bound`` when it had to).
    """

    name: ClassVar[str] = "snr"

    def select(self, w, bounds, n_grid):
        lo, hi = bounds
        raw = _snr_lambda2(w)
        at_lo, at_hi = raw < lo, raw > hi
        lam = jnp.clip(raw, lo, hi)
        bound = jnp.where(at_lo, -1, jnp.where(at_hi, 1, 0)).astype(jnp.int8)
        status = make_status(
            ~(at_lo | at_hi),
            jnp.asarray(0),
            jnp.zeros((), raw.dtype),
            finite=jnp.isfinite(raw),
            stats={"at_bound": bound},
            failed_code=RESULTS.at_bound,
        )
        return Lambda2Selection(lam, _snr_power(w), status)


#: Aliases of the rule objects (default settings), as ``"MNE"`` is of ``MNE()``.
LAMBDA2_RULES: dict[str, type[AbstractLambda2Rule]] = {
    "evidence": Evidence,
    "gcv": GCV,
    "lcurve": LCurve,
    "discrepancy": Discrepancy,
    "snr": SnrRule,
}


def _as_rule(rule) -> AbstractLambda2Rule:
    if isinstance(rule, AbstractLambda2Rule):
        return rule
    if isinstance(rule, str) and rule in LAMBDA2_RULES:
        return LAMBDA2_RULES[rule]()
    choices = ", ".join(repr(k) for k in LAMBDA2_RULES)
    raise (ValueError if isinstance(rule, str) else TypeError)(
        f"rule must be a λ² rule object (e.g. exg_jax.Evidence(noise_scale=1.0)) or "
        f"one of {choices}, got {rule!r}."
    )


def _traced_numbers(tree, dtype):
    """Python numbers in a pytree as arrays of ``dtype`` (leaves, not static)."""

    def conv(x):
        if isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_):
            return jnp.asarray(x, dtype)
        return x

    return jax.tree_util.tree_map(conv, tree)


# --------------------------------------------------------------------------- #
# Eager layer
# --------------------------------------------------------------------------- #
def _check_inv(inv):
    check_type(
        "inv", inv, InverseOperator, "an InverseOperator (from make_inverse_operator)"
    )


def _check_data(data, inv):
    """Validate ``data`` (array or DataStats) against ``inv``; return it as arrays."""
    if isinstance(data, DataStats):
        n = inv.n_chan
        shape = tuple(np.shape(data.scatter))
        if shape != (n, n):
            raise ValueError(
                f"data.scatter has shape {shape} but the inverse operator has {n} "
                f"channels: expected ({n}, {n})."
            )
        if tuple(np.shape(data.n_samples)) != ():
            raise ValueError(
                f"data.n_samples must be a scalar, got shape {np.shape(data.n_samples)}."
            )
        check_finite("data.scatter", data.scatter)
        if is_concrete(data.n_samples) and not float(data.n_samples) > 0:
            raise ValueError(f"data.n_samples must be > 0, got {data.n_samples!r}.")
        # one dtype (and no weak type) for both fields: one compiled program
        scatter = jnp.asarray(data.scatter)
        if not jnp.issubdtype(scatter.dtype, jnp.floating):
            scatter = scatter.astype(jnp.result_type(float))
        return DataStats(scatter, jnp.asarray(data.n_samples, dtype=scatter.dtype))
    check_sensor_data("data", data, inv.n_chan, (2, 3), "the inverse operator has")
    if np.shape(data)[-1] < 1:
        raise ValueError(f"data has no sample (shape {tuple(np.shape(data))}).")
    return jnp.asarray(data)


def _dtype(inv):
    return jnp.result_type(inv.sing)


def _check_lambda2_array(lambda2, inv):
    """λ² as an array of the operator's dtype: real, finite, > 0 (any shape)."""
    check_array("lambda2", lambda2)
    dtype = _dtype(inv)
    if is_concrete(lambda2):
        v = np.asarray(lambda2, dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            cast = v.astype(dtype)
        bad = ~(np.isfinite(v) & (v > 0) & np.isfinite(cast) & (cast > 0))
        if np.any(bad):
            raise ValueError(
                f"lambda2 must be finite and > 0 in {np.dtype(dtype)} (λ² = 1 / SNR², "
                f"e.g. 1/9 for SNR 3), got {v[bad] if v.ndim else v.item()!r}."
            )
    return jnp.asarray(lambda2, dtype=dtype)


def _prepare(data, inv, lambda2):
    _check_inv(inv)
    data = _check_data(data, inv)
    lam = _check_lambda2_array(lambda2, inv)
    return data, lam


@eqx.debug.assert_max_traces(max_traces=None)  # counts traces (tests read it)
def _evaluate_traced(data, inv, lambda2, fn):
    stats = data if isinstance(data, DataStats) else _stats_of(data)
    w = whitened_stats(stats, inv)
    lam = lambda2_error_if(lambda2)  # survives jit / vmap (≤ 0, NaN, Inf)
    out = jax.vmap(fn, in_axes=(None, 0))(w, lam.reshape(-1))
    return jax.tree_util.tree_map(lambda o: o.reshape(lam.shape), out)


_evaluate = eqx.filter_jit(_evaluate_traced)


def data_stats(
    data: Real[ArrayLike, "*epoch chan time"] | NestedSequence,
) -> DataStats:
    """Sufficient statistics of sensor data: scatter matrix and sample count.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V
        Evoked data or epochs (pooled).

    Returns
    -------
    DataStats
        ``scatter`` (n_chan, n_chan), V², ``Σ_t y_t y_tᵀ``; ``n_samples``
        N = ``n_times`` or ``n_epochs · n_times``.

    Raises
    ------
    TypeError
        ``data`` not a real array (MNE objects: pass their ``.data`` /
        ``get_data()``).
    ValueError
        Another number of dimensions, no sample, NaN / Inf.
    """
    check_array("data", data)
    shape = tuple(np.shape(data))
    if len(shape) not in (2, 3):
        raise ValueError(
            "data must have shape (n_chan, n_times) or (n_epochs, n_chan, n_times), "
            f"got {shape}."
        )
    if shape[-1] < 1 or shape[-2] < 1:
        raise ValueError(f"data has no channel or no sample (shape {shape}).")
    check_finite("data", data)
    return _stats_jit(jnp.asarray(data))


_DATA_DOC = """data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V, or DataStats
        Sensor data on the operator's channels (epochs are pooled: N =
        n_epochs · n_times), or their :func:`data_stats`."""


def log_evidence(
    data: Real[ArrayLike, "*epoch chan time"] | DataStats | NestedSequence,
    inv: InverseOperator,
    lambda2: Real[ArrayLike, "*shape"] | NestedSequence,
    *,
    noise_scale: RealScalar | None = None,
) -> Float[Array, "*shape"]:
    """Log marginal likelihood (Bayesian evidence) of the data as a function of λ².

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V, or DataStats
        Sensor data on the operator's channels (epochs are pooled: N =
        n_epochs · n_times), or their :func:`data_stats`.
    inv : InverseOperator
    lambda2 : float or Array of any shape
        λ² = 1/SNR² (amplitude SNR), > 0; one compiled program for any
        number of values.
    noise_scale : float > 0 or None
        σ², the whitened noise variance. None: profiled (the maximiser
        σ̂² for each λ²); 1.0: the noise covariance is trusted as it is.

    Returns
    -------
    Array, shape of ``lambda2``
        ``log p(z | λ², σ²)``, total over the N samples (nats).

    Notes
    -----
    Under the model of :mod:`exg_jax.regularization` (``z_t ~ N(0, σ² (A Aᵀ/λ²
    + I))`` on the r whitened channels), with ``d_i = 1 + s_i²/λ²``:

    ``log p = −½ [Σ q_i/(σ² d_i) + P_rest/σ² + N Σ log d_i + N r log(2πσ²)]``

    and, with σ² profiled, ``σ̂² = (Σ q_i/d_i + P_rest)/(N r)`` and
    ``log p = −½ N [Σ log d_i + r log(2π σ̂²) + r]``. Differentiable w.r.t.
    λ², the data and every array of ``inv``.
    """
    if noise_scale is not None:
        check_positive_finite_scalar("noise_scale", noise_scale)
    data, lam = _prepare(data, inv, lambda2)
    rule = _traced_numbers(Evidence(noise_scale), lam.dtype)
    return _evaluate(data, inv, lam, rule.criterion)


def gcv(
    data: Real[ArrayLike, "*epoch chan time"] | DataStats | NestedSequence,
    inv: InverseOperator,
    lambda2: Real[ArrayLike, "*shape"] | NestedSequence,
) -> Float[Array, "*shape"]:
    """Generalised cross-validation of the MNE fit as a function of λ².

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V, or DataStats
        As :func:`log_evidence`.
    inv : InverseOperator
    lambda2 : float or Array of any shape
        λ² = 1/SNR², > 0.

    Returns
    -------
    Array, shape of ``lambda2``
        ``GCV(λ²) = (‖res‖²/(N r)) / (1 − df/r)²`` (dimensionless).

    Notes
    -----
    ``‖res‖² = Σ q_i (λ²/(s_i² + λ²))² + P_rest`` (whitened residual power of
    the MNE fit, summed over samples), ``df = Σ s_i²/(s_i² + λ²)`` (the trace
    of the hat matrix ``W G K``, :func:`hat_matrix_trace`).
    """
    data, lam = _prepare(data, inv, lambda2)
    return _evaluate(data, inv, lam, GCV().criterion)


def l_curve(
    data: Real[ArrayLike, "*epoch chan time"] | DataStats | NestedSequence,
    inv: InverseOperator,
    lambda2: Real[ArrayLike, "*shape"] | NestedSequence,
) -> LCurvePoint:
    """The L-curve of the MNE fit: log residual, log solution norm, curvature.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V, or DataStats
        As :func:`log_evidence`.
    inv : InverseOperator
    lambda2 : float or Array of any shape
        λ² = 1/SNR², > 0.

    Returns
    -------
    LCurvePoint
        NamedTuple ``(rho, eta, curvature)``, each of ``lambda2``'s shape:
        ``rho = ½ log ‖res‖²``, ``eta = ½ log ‖x‖²`` and the signed
        curvature κ of the curve ``(rho, eta)``, positive at the corner
        (:class:`LCurve` maximises it).

    Notes
    -----
    ``‖res‖² = Σ q_i (λ²/(s_i² + λ²))² + P_rest``; ``‖x‖² = Σ_t ‖R^{-½}
    x̂_t‖² = Σ q_i s_i²/(s_i² + λ²)²`` (the Tikhonov penalty of the MNE
    solution). With ``t = log λ²`` and ``'`` = d/dt,
    ``κ = (ρ' η'' − ρ'' η') / (ρ'² + η'²)^{3/2}``, the derivatives in closed
    form (``g = λ²/(s² + λ²)``, ``dg/dt = g(1 − g)``). As λ² grows, the curve runs
    down its steep branch and turns right along the flat one: a
    counter-clockwise turn, so κ > 0 at the corner.
    """
    data, lam = _prepare(data, inv, lambda2)
    return _evaluate(data, inv, lam, _l_curve)


def discrepancy(
    data: Real[ArrayLike, "*epoch chan time"] | DataStats | NestedSequence,
    inv: InverseOperator,
    lambda2: Real[ArrayLike, "*shape"] | NestedSequence,
    *,
    tau: RealScalar = 1.0,
) -> Float[Array, "*shape"]:
    """Morozov's discrepancy ``D(λ²) = ‖res‖²/(N r) − τ``.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V, or DataStats
        As :func:`log_evidence`.
    inv : InverseOperator
    lambda2 : float or Array of any shape
        λ² = 1/SNR², > 0.
    tau : float > 0
        Target residual power per whitened channel and sample (1: the noise
        level of the noise covariance).

    Returns
    -------
    Array, shape of ``lambda2``
        D(λ²), increasing in λ² (from ``P_rest/(N r) − τ`` to
        ``P/(N r) − τ``); :class:`Discrepancy` selects its root.
    """
    check_positive_finite_scalar("tau", tau)
    data, lam = _prepare(data, inv, lambda2)
    rule = _traced_numbers(Discrepancy(tau), lam.dtype)
    return _evaluate(data, inv, lam, rule.criterion)


def snr_rule_lambda2(
    data: Real[ArrayLike, "*epoch chan time"] | DataStats | NestedSequence,
    inv: InverseOperator,
) -> Float[Array, ""]:
    """MNE's λ² = 1/SNR² with the SNR estimated from the data (no search).

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V, or DataStats
        As :func:`log_evidence`.
    inv : InverseOperator

    Returns
    -------
    Array, shape ()
        ``λ² = 1/SNR²`` with ``SNR² = max(P/(N r) − 1, tiny)``: the signal
        power per whitened channel over the noise power (1). Pure noise gives
        ``1/tiny`` (``tiny`` the dtype's smallest normal number).

    Notes
    -----
    Under the model, ``E[P/(N r)] = σ²(1 + 1/λ²)`` (the operator's trace
    normalisation ``Σ s_i² = r``), so with σ² = 1 this is the moment
    estimator of λ². MNE-Python's ``estimate_snr`` reports
    ``snr(t) = √(‖z_t‖²/r)`` per time point, whose square includes the
    noise; ``P/(N r)`` is the mean of ``snr(t)²``.
    """
    _check_inv(inv)
    data = _check_data(data, inv)
    dtype = _dtype(inv)
    return _evaluate(data, inv, jnp.ones((), dtype), _snr_point)


def _snr_point(w, lam):
    del lam
    return _snr_lambda2(w)


# --------------------------------------------------------------------------- #
# Hat-matrix trace (any minimum-norm method)
# --------------------------------------------------------------------------- #
def _hat_trace_traced(inv, lambda2, method):
    lam = lambda2_error_if(lambda2)

    def one(lam):
        fac, status = method.factors(inv, lam)
        s2 = fac.sing * fac.sing
        return jnp.sum(s2 / (s2 + lam)), status

    df, status = jax.vmap(one)(lam.reshape(-1))
    return df.reshape(lam.shape), status


_hat_trace_jit = eqx.filter_jit(_hat_trace_traced)


def hat_matrix_trace(
    inv: InverseOperator,
    lambda2: Real[ArrayLike, "*shape"] | NestedSequence,
    method: str | AbstractMinimumNorm = "MNE",
) -> Float[Array, "*shape"]:
    """Trace of the hat matrix ``W G K`` (effective degrees of freedom).

    Parameters
    ----------
    inv : InverseOperator
    lambda2 : float or Array of any shape
        λ² = 1/SNR², > 0.
    method : AbstractMinimumNorm or {"MNE", "dSPM", "sLORETA", "eLORETA"}
        A minimum-norm method (its factors: eLORETA's depend on λ²).

    Returns
    -------
    Array, shape of ``lambda2``
        ``df(λ²) = Σ_f s_f²/(s_f² + λ²)`` with the singular values ``s_f``
        of the method's factors (:meth:`AbstractMinimumNorm.factors`);
        between 0 and ``inv.rank``.

    Raises
    ------
    TypeError
        ``method`` not a minimum-norm method (e.g. a beamformer).
    RuntimeError
        eLORETA's weight fit not converged (``throw=True``).

    Notes
    -----
    ``W G K = U S Vᵀ V Γ Uᵀ = U diag(s²/(s² + λ²)) Uᵀ`` for the factors
    ``W G R^½ = U S Vᵀ`` of the method. Noise normalisation (dSPM,
    sLORETA) scales each source's estimate after the fit and does not
    change the fitted data: those methods have the MNE hat matrix.
    """
    _check_inv(inv)
    m = as_method(method)
    if not isinstance(m, AbstractMinimumNorm):
        raise TypeError(
            "method must be a minimum-norm method (an AbstractMinimumNorm: MNE, "
            f"dSPM, sLORETA, eLORETA), got {type(m).__name__}."
        )
    lam = _check_lambda2_array(lambda2, inv)
    df, status = _hat_trace_jit(inv, lam, compiled_method(m, inv, lam))
    m.check(status)
    return df


# --------------------------------------------------------------------------- #
# select_lambda2
# --------------------------------------------------------------------------- #
def _select_traced(data, inv, rule, lo, hi, n_grid, throw):
    stats = data if isinstance(data, DataStats) else _stats_of(data)
    w = whitened_stats(stats, inv)
    out = rule.select(w, (lo, hi), n_grid)
    if throw:
        lam, value = error_if_failed((out.lambda2, out.value), out.status, True)
        out = Lambda2Selection(lam, value, out.status)
    return out


_select_jit = eqx.filter_jit(_select_traced)


def _check_bounds(bounds, dtype):
    if isinstance(bounds, str | bytes) or not isinstance(
        bounds, tuple | list | np.ndarray | jax.Array
    ):
        raise TypeError(
            f"bounds must be a pair (lo, hi) of λ² values, got {type(bounds).__name__}."
        )
    if len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (lo, hi), got {len(bounds)} values.")
    lo, hi = bounds
    check_positive_finite_scalar("bounds[0]", lo, dtype)
    check_positive_finite_scalar("bounds[1]", hi, dtype)
    if is_concrete(lo, hi) and not float(lo) < float(hi):
        raise ValueError(f"bounds must satisfy 0 < lo < hi, got {tuple(bounds)!r}.")
    return jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)


def _check_selection(status, rule, bounds, throw):
    """Eager: raise (``throw``) or warn when the selection failed."""
    codes = np.atleast_1d(np.asarray(status.result._value))
    if np.all(codes == 0):
        return
    nonfinite = np.any(codes == RESULTS.nonfinite._value)
    where = np.atleast_1d(np.asarray(status.stats["at_bound"]))
    lo, hi = (float(b) for b in bounds)
    what = f"λ² selection (rule {rule.name!r})"
    if nonfinite:
        msg = (
            f"{what} failed: the criterion is not finite (NaN or Inf in the data "
            "or the operator)."
        )
    else:
        side = "upper" if np.any(where > 0) else "lower"
        val = hi if side == "upper" else lo
        hint = (
            "the data hold no more power than the noise covariance predicts "
            "(pure noise) for this rule, or the bound is too tight"
            if side == "upper"
            else "the data are explained with less regularisation than the bound allows"
        )
        msg = (
            f"{what} failed: the optimum lies at the {side} bound λ² = {val:.3g} of "
            f"bounds=({lo:.3g}, {hi:.3g}): {hint}. Widen bounds, or pass "
            "throw=False to get the bound with status.result == RESULTS.at_bound."
        )
    if throw:
        raise RuntimeError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=_user_stacklevel())


def select_lambda2(
    data: Real[ArrayLike, "*epoch chan time"] | DataStats | NestedSequence,
    inv: InverseOperator,
    rule: str | AbstractLambda2Rule = "evidence",
    *,
    bounds: tuple[RealScalar, RealScalar] = (1e-6, 1e3),
    n_grid: IntScalar = 200,
    throw: bool | np.bool_ = True,
) -> Lambda2Selection:
    """Select the regularisation λ² from the data by a rule.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V, or DataStats
        As :func:`log_evidence`.
    inv : InverseOperator
    rule : AbstractLambda2Rule or {"evidence", "gcv", "lcurve", "discrepancy", "snr"}
        A rule object (``Evidence(noise_scale=1.0)``, ``Discrepancy(tau=)``,
        ...) or an alias of :data:`LAMBDA2_RULES` (default settings).
    bounds : (float, float)
        Search interval ``0 < lo < hi`` of λ² (= 1/SNR²). Traced: new bounds
        do not recompile.
    n_grid : int >= 3
        Size of the initial grid, log-spaced over ``bounds`` (static).
    throw : bool
        When the optimum / root lies at a bound (or the criterion is not
        finite): True (default), a ``RuntimeError`` on the eager path and
        an ``eqx.error_if`` under ``jit`` / ``vmap``; False, a
        ``RuntimeWarning`` (eagerly) and the status says it
        (``RESULTS.at_bound``, ``RESULTS.nonfinite``).

    Returns
    -------
    Lambda2Selection
        NamedTuple ``(lambda2, value, status)``, see :class:`Lambda2Selection`.

    Notes
    -----
    Criterion rules (:class:`AbstractCriterionRule`): the criterion on the
    grid (one vmapped evaluation), then bisection of its derivative in
    ``log λ²`` (of the criterion itself for the discrepancy) within the
    bracket of the best grid point, to a few ulps of ``log λ²``. The selected
    λ² is differentiable w.r.t. the data and the operator (implicit
    function theorem). Pure-noise data (``P/(N r) ≤ 1``) put the evidence,
    GCV, discrepancy and SNR rules at the upper bound: ``RESULTS.at_bound``.
    """
    _check_inv(inv)
    data = _check_data(data, inv)
    rule = _as_rule(rule)
    dtype = _dtype(inv)
    lo, hi = _check_bounds(bounds, dtype)
    n_grid = as_int("n_grid", n_grid, minimum=3)
    if not isinstance(throw, bool | np.bool_):
        raise TypeError(f"throw must be True or False, got {throw!r}.")
    throw = bool(throw)
    rule = _traced_numbers(rule, dtype)
    concrete = is_concrete(data, inv, rule, lo, hi)
    out = _select_jit(data, inv, rule, lo, hi, n_grid, throw and not concrete)
    if concrete:
        _check_selection(out.status, rule, (lo, hi), throw)
    return out
