"""Fitting the spherical head model to data by gradients (``fit_head_model``).

The head model's conductivities, radii and centre (and λ²) are fitted to EEG
data by minimising a criterion with an optimistix solver, differentiating
through the Berg–Scherg fit, the lead field and the inverse operator:

* :class:`DistributedSources` (default): the Gaussian log evidence (marginal
  likelihood) of the data under the minimum-norm model over a distributed
  source space, jointly in the head model and λ²
  (:func:`exg_jax.regularization.log_evidence`);
* :class:`KnownDipoles`: dipoles at known positions with known moments
  (whitened least squares);
* :class:`UnknownMoments`: dipoles at known positions, moments eliminated in
  closed form (variable projection).

Criteria are objects with a fixed interface
(:class:`AbstractHeadModelCriterion`); a new one is a subclass. The
parameterisation (:class:`HeadModelProblem`) keeps the model valid whatever
the solver tries: log conductivities, ordered radii, and sources kept inside
the innermost shell by a projection plus an exterior penalty, so a
line-search probe never aborts the run.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float

from ._numerics import safe_norm
from ._validate import (
    as_float_array,
    as_int,
    check_array,
    check_finite,
    check_sensor_data,
    check_type,
    is_concrete,
)
from .covariance import NoiseCov, check_covariance_values, whitener_rank
from .forward import ForwardOperator
from .inverse import make_inverse_operator
from .linalg import _whitener_kernel
from .regularization import DataStats, _log_evidence, data_stats, whitened_stats
from .sphere import SphereModel, berg_scherg_params
from .sphere_forward import _berg_scherg_gain, _exact_gain, _exact_terms
from .status import RESULTS, SolverStatus, check_status, error_if_failed

__all__ = [
    "AbstractHeadModelCriterion",
    "DistributedSources",
    "HeadModelFit",
    "HeadModelProblem",
    "HeadModelTrace",
    "KnownDipoles",
    "UnknownMoments",
    "fit_head_model",
    "make_head_model_problem",
]

#: Centre displacements are optimised in centimetres (parameters of order one).
CENTER_UNIT = 0.01
#: Sources are kept within ``(1 - INSIDE_MARGIN)`` of the innermost radius.
INSIDE_MARGIN = 1e-3
#: Weight of the exterior penalty per squared relative violation.
PENALTY_WEIGHT = 1e4
#: Parameters are clipped to these boxes (beyond them the model would be
#: invalid or overflow: a conductivity of exp(1e4)), with the excess penalised
#: like a violation: conductivities (S/m), outer radius (m), centre
#: displacement (cm, per axis), λ².
SIGMA_RANGE = (1e-5, 1e2)
OUTER_RADIUS_RANGE = (0.02, 0.45)
CENTER_RANGE_CM = 10.0
LAMBDA2_RANGE = (1e-10, 1e10)


# --------------------------------------------------------------------------- #
# Criteria
# --------------------------------------------------------------------------- #
class _Prepared(NamedTuple):
    """Data-side quantities every criterion may use (fixed during a fit)."""

    whitener: Float[Array, "white chan"]
    noise_cov: NoiseCov
    stats: DataStats
    data: Float[Array, "chan time"] | None
    # constants of the fit, whitened once (not in every evaluation)
    white_data: Float[Array, "white time"] | None
    white_scatter: Float[Array, "white white"]


class AbstractHeadModelCriterion(eqx.Module):
    """Interface of a head-model fitting criterion.

    Subclasses hold their sources (``src_pos``, shape (n_src, 3), m) and
    implement :meth:`value` (a scalar to minimise, per data sample) and, if
    the criterion is a sum of squares, :meth:`residuals` (then least-squares
    solvers such as ``optx.LevenbergMarquardt`` can be used).
    ``fits_lambda2`` says whether λ² is a parameter of the criterion.
    """

    name: eqx.AbstractClassVar[str]
    fits_lambda2: eqx.AbstractClassVar[bool]
    src_pos: eqx.AbstractVar[Float[Array, "src 3"]]

    @property
    def src_nn(self) -> Float[Array, "src 3"] | None:
        return None

    @abc.abstractmethod
    def value(
        self,
        gain: Float[Array, "chan cols"],
        prepared: _Prepared,
        lambda2: Float[Array, ""],
        reference: str | None,
    ) -> Float[Array, ""]:
        """The criterion (per data sample) for a gain (V/(A·m)) and λ²."""

    def residuals(
        self, gain: Float[Array, "chan cols"], prepared: _Prepared
    ) -> Float[Array, " res"] | None:
        """Whitened residuals, ``value = ½ ‖residuals‖² / N``; None when the
        criterion is not a sum of squares."""
        return None

    def prepare_data(self, data: Float[Array, "..."]) -> Float[Array, "..."] | None:
        """The raw data a criterion keeps (default: none, the scatter suffices)."""
        return None


class DistributedSources(AbstractHeadModelCriterion):
    """Negative log evidence of the minimum-norm model over distributed sources.

    Parameters
    ----------
    src_pos : Array, shape (n_src, 3), m
        Source space, inside the innermost shell.
    src_nn : Array, shape (n_src, 3) or None
        Source normals (needed for ``loose < 1``).
    loose : float
        Orientation prior (MNE's ``loose``; 1 = free, the default).
    noise_scale : float or None
        Noise variance scale σ² of the whitened data (None: profiled, the
        default; 1.0: trust the noise covariance). See
        :func:`exg_jax.regularization.log_evidence`.

    Notes
    -----
    The value is ``-log p(Y | θ, λ²) / N`` (``N`` samples) with the inverse
    operator built from the head model θ **without depth weighting**
    (``depth=None``): MNE's depth prior is computed from the gain G(θ), so
    with it the prior itself would move with θ and the evidence would not
    compare one source model across head models. λ² is relative to the
    operator's trace-normalised prior (MNE's convention, λ² = 1/SNR²).
    """

    name: ClassVar[str] = "distributed_sources"
    fits_lambda2: ClassVar[bool] = True
    src_pos: Float[Array, "src 3"]
    nn: Float[Array, "src 3"] | None = None
    loose: float = eqx.field(default=1.0, static=True)
    noise_scale: float | None = eqx.field(default=None, static=True)

    @property
    def src_nn(self):
        return self.nn

    def value(self, gain, prepared, lambda2, reference):
        fwd = ForwardOperator(
            gain=gain,
            src_pos=self.src_pos,
            src_nn=self.nn,
            orientation="free",
            reference=reference,
        )
        inv = make_inverse_operator(fwd, prepared.noise_cov, None, loose=self.loose)
        w = whitened_stats(prepared.stats, inv)
        ev = _log_evidence(w, lambda2, self.noise_scale)
        return -ev / prepared.stats.n_samples


class KnownDipoles(AbstractHeadModelCriterion):
    """Whitened misfit of dipoles with known positions and moments.

    Parameters
    ----------
    src_pos : Array, shape (n_dip, 3), m
        Dipole positions.
    moments : Array, shape (n_dip, 3, n_times), A·m
        Dipole moments (Cartesian) at each time of the data.

    Notes
    -----
    ``value = ½ ‖W (Y − G(θ) M)‖²_F / N`` (``W`` the noise whitener).
    """

    name: ClassVar[str] = "known_dipoles"
    fits_lambda2: ClassVar[bool] = False
    src_pos: Float[Array, "dip 3"]
    moments: Float[Array, "dip 3 time"]

    def prepare_data(self, data):
        return data

    def residuals(self, gain, prepared):
        m = self.moments.reshape(-1, self.moments.shape[-1])
        # scale-free: whiten the data and the model separately (W ~ 1e6 / V)
        res = prepared.white_data - (prepared.whitener @ gain) @ m
        return res.reshape(-1)

    def value(self, gain, prepared, lambda2, reference):
        r = self.residuals(gain, prepared)
        return 0.5 * jnp.sum(r * r) / prepared.stats.n_samples


class UnknownMoments(AbstractHeadModelCriterion):
    """Whitened misfit of dipoles at known positions, moments eliminated.

    Parameters
    ----------
    src_pos : Array, shape (n_dip, 3), m
        Dipole positions; their moments (free orientation, any time course)
        are solved by linear least squares for every head model.

    Notes
    -----
    Variable projection (Golub & Pereyra): with ``A = W G(θ)`` (n_white,
    3 n_dip) and ``Q`` an orthonormal basis of its range,
    ``value = ½ ‖(I − Q Qᵀ) W Y‖²_F / N = ½ (tr(S) − tr(Qᵀ S Q)) / N``
    with ``S = W Y Yᵀ Wᵀ``. An overall conductivity scale is absorbed by the
    moments: fit conductivity *ratios* (the default fits only the middle
    shells).
    """

    name: ClassVar[str] = "unknown_moments"
    fits_lambda2: ClassVar[bool] = False
    src_pos: Float[Array, "dip 3"]

    def prepare_data(self, data):
        return data

    def _basis(self, gain, prepared):
        a = prepared.whitener @ gain
        # orthonormal basis of range(A) (A has full column rank 3 n_dip < n_white)
        q, _ = jnp.linalg.qr(a)
        return q

    def residuals(self, gain, prepared):
        q = self._basis(gain, prepared)
        z = prepared.white_data
        return (z - q @ (q.T @ z)).reshape(-1)

    def value(self, gain, prepared, lambda2, reference):
        q = self._basis(gain, prepared)
        s = prepared.white_scatter
        return 0.5 * (jnp.trace(s) - jnp.sum(q * (s @ q))) / prepared.stats.n_samples


# --------------------------------------------------------------------------- #
# Parameterisation
# --------------------------------------------------------------------------- #
class HeadModelTrace(NamedTuple):
    """Points the optimiser accepted, in physical units (see :func:`fit_head_model`).

    Arrays of length ``max_steps + 2``; entries with ``valid == False`` are
    padding or repeats of the previous point. ``path()`` returns only the valid
    ones as NumPy arrays.

    Attributes
    ----------
    values : Array, shape (n,)
        Criterion (per sample, penalty included).
    conductivities : Array, shape (n, n_shells), S/m
    radii : Array, shape (n, n_shells), m
    center : Array, shape (n, 3), m
    lambda2 : Array, shape (n,)
    valid : Array of bool, shape (n,)
    """

    values: Float[Array, " n"]
    conductivities: Float[Array, "n shell"]
    radii: Float[Array, "n shell"]
    center: Float[Array, "n 3"]
    lambda2: Float[Array, " n"]
    valid: Bool[Array, " n"]

    def path(self) -> dict[str, np.ndarray]:
        """The accepted points only, as a dict of NumPy arrays (host)."""
        keep = np.asarray(self.valid)
        return {
            k: np.asarray(getattr(self, k))[keep]
            for k in ("values", "conductivities", "radii", "center", "lambda2")
        }


class _Eval(NamedTuple):
    """What one evaluation of the objective reports (the solver's aux)."""

    value: Float[Array, ""]
    penalty: Float[Array, ""]
    conductivities: Float[Array, " shell"]
    radii: Float[Array, " shell"]
    center: Float[Array, " 3"]
    lambda2: Float[Array, ""]
    mu: Float[Array, " fit"]
    lam: Float[Array, " fit"]
    refit_ok: Bool[Array, ""]
    evaluated: Bool[Array, ""]


def _logit(p):
    return jnp.log(p) - jnp.log1p(-p)


class HeadModelProblem(eqx.Module):
    """A head-model fitting problem: parameters ↔ :class:`SphereModel`, and the
    objective. Built by :func:`make_head_model_problem`.

    Parameters (the pytree ``params``, a dict, only the fitted entries):

    * ``"log_sigma"`` (n_fit_sigma,): log conductivities (S/m) of the fitted
      shells;
    * ``"radii"`` (n_shells,): ordered radii, ``r_N = r_N⁰ e^{a_N}`` and
      ``r_k = r_{k+1} σ(a_k + logit(r_k⁰ / r_{k+1}⁰))`` (``σ`` the logistic
      function): every vector gives ``0 < r_1 < … < r_N``; zero is the start;
    * ``"center"`` (3,): the centre's displacement from the start in cm;
    * ``"log_lambda2"`` (): log λ² (criteria that fit λ²).

    Sources are projected onto the ball of radius ``(1 − INSIDE_MARGIN) r_1``
    when outside it, and every violation (a source beyond that radius, an
    electrode inside the innermost shell) adds
    ``PENALTY_WEIGHT · (relative violation)²``: the objective is finite and
    continuous everywhere, so a solver's probe never aborts the run.
    """

    criterion: AbstractHeadModelCriterion
    base: SphereModel
    electrodes: Float[Array, "elec 3"]
    prepared: _Prepared
    lambda2: Float[Array, ""]
    sigma_index: tuple[int, ...] = eqx.field(static=True)
    fit_radii: bool = eqx.field(static=True)
    fit_center: bool = eqx.field(static=True)
    forward: str = eqx.field(static=True)
    n_terms: int = eqx.field(static=True)
    reference: str | None = eqx.field(static=True)

    @property
    def fit_lambda2(self) -> bool:
        return self.criterion.fits_lambda2

    def init_params(self) -> dict[str, Array]:
        """The start: the base model and λ² (all parameters at their origin)."""
        dtype = self.base.radii.dtype
        y = {}
        if self.sigma_index:
            y["log_sigma"] = jnp.log(
                self.base.conductivities[np.asarray(self.sigma_index)]
            )
        if self.fit_radii:
            y["radii"] = jnp.zeros(self.base.radii.shape, dtype)
        if self.fit_center:
            y["center"] = jnp.zeros(3, dtype)
        if self.fit_lambda2:
            y["log_lambda2"] = jnp.log(self.lambda2)
        return y

    def _clip(self, params):
        """Parameters clipped to their boxes, and the excess (penalised)."""
        r0n = self.base.radii[-1]
        boxes = {
            "log_sigma": tuple(np.log(SIGMA_RANGE)),
            "radii": (-30.0, 30.0),
            "center": (-CENTER_RANGE_CM, CENTER_RANGE_CM),
            "log_lambda2": tuple(np.log(LAMBDA2_RANGE)),
        }
        out, excess = {}, []
        for k, v in params.items():
            lo, hi = boxes[k]
            if k == "radii":  # the outer radius is e^{a_N} r_N⁰
                lo = (
                    jnp.full_like(v, lo)
                    .at[-1]
                    .set(jnp.log(OUTER_RADIUS_RANGE[0] / r0n))
                )
                hi = (
                    jnp.full_like(v, hi)
                    .at[-1]
                    .set(jnp.log(OUTER_RADIUS_RANGE[1] / r0n))
                )
            lo, hi = jnp.asarray(lo, v.dtype), jnp.asarray(hi, v.dtype)
            # A non-finite probe (a solver's step from a NaN direction) gives
            # the start's model and a NaN excess: NaN value, not an abort in
            # the model's checks.
            finite = jnp.isfinite(v)
            c = jnp.clip(jnp.where(finite, v, 0.0), lo, hi)
            out[k] = c
            excess.append(jnp.ravel(jnp.where(finite, v - c, jnp.nan)))
        return out, jnp.concatenate(excess) if excess else jnp.zeros((0,))

    def unpack(self, params: dict[str, Array]) -> tuple[SphereModel, Array]:
        """``(sphere, lambda2)`` for a parameter pytree (clipped to the boxes
        ``SIGMA_RANGE``, ``OUTER_RADIUS_RANGE``, ``CENTER_RANGE_CM``,
        ``LAMBDA2_RANGE``, so that every pytree gives a valid model)."""
        params, _ = self._clip(params)
        base = self.base
        sigmas = base.conductivities
        if self.sigma_index:
            sigmas = sigmas.at[np.asarray(self.sigma_index)].set(
                jnp.exp(params["log_sigma"])
            )
        radii = base.radii
        if self.fit_radii:
            a = params["radii"]
            r0 = base.radii
            out = [r0[-1] * jnp.exp(a[-1])]
            for k in range(r0.shape[0] - 2, -1, -1):
                frac = jax.nn.sigmoid(a[k] + _logit(r0[k] / r0[k + 1]))
                out.append(out[-1] * frac)
            radii = jnp.stack(out[::-1])
        center = base.center
        if self.fit_center:
            center = center + CENTER_UNIT * params["center"]
        lambda2 = jnp.exp(params["log_lambda2"]) if self.fit_lambda2 else self.lambda2
        sphere = eqx.tree_at(
            lambda m: (m.radii, m.conductivities, m.center),
            base,
            (radii, sigmas, center),
        )
        return sphere, lambda2

    def _inside(self, sphere, params):
        """Sources projected inside the innermost shell, and the violations
        (with the parameters' excess over their boxes)."""
        src = self.criterion.src_pos
        r_in = sphere.radii[0]
        lim = (1.0 - INSIDE_MARGIN) * r_in
        d = src - sphere.center
        dist = safe_norm(d, axis=-1)
        scale = jnp.where(dist > lim, lim / jnp.where(dist > lim, dist, 1.0), 1.0)
        src_in = sphere.center + d * scale[:, None]
        viol = [jnp.maximum(dist / r_in - (1.0 - INSIDE_MARGIN), 0.0)]
        if sphere.radii.shape[0] > 1:
            d_el = safe_norm(self.electrodes - sphere.center, axis=-1)
            viol.append(jnp.maximum(1.0 - d_el / r_in, 0.0))
        viol.append(self._clip(params)[1].astype(dist.dtype))
        viol = jnp.concatenate(viol)
        return src_in, viol

    def _gain(self, sphere, src, bs_init):
        dtype = sphere.radii.dtype
        if self.forward == "berg_scherg":
            bs = berg_scherg_params(sphere, throw=False, init=bs_init)
            mu, lam = bs.mu, bs.lam
            ok = bs.status.converged
            gain = _berg_scherg_gain(
                self.electrodes, src, None, sphere.center, sphere.radii,
                mu, lam, False, self.reference, False,
            )  # fmt: skip
        else:
            mu = lam = jnp.zeros((0,), dtype)
            ok = jnp.asarray(True)
            gain = _exact_gain(
                self.electrodes, src, None, sphere, self.n_terms, False,
                self.reference, False,
            )  # fmt: skip
        return gain, mu, lam, ok

    def evaluate(
        self, params: dict[str, Array], bs_init: tuple[Array, Array] | None = None
    ) -> tuple[Float[Array, ""], _Eval]:
        """Objective (criterion per sample + penalty) and what it reports.

        ``bs_init``: Berg–Scherg ``(mu, lam)`` of a nearby model (warm start).
        """
        sphere, lambda2 = self.unpack(params)
        src, viol = self._inside(sphere, params)
        pen = PENALTY_WEIGHT * jnp.sum(viol * viol)
        gain, mu, lam, ok = self._gain(sphere, src, bs_init)
        crit = self.criterion.value(gain, self.prepared, lambda2, self.reference)
        value = crit + pen
        aux = _Eval(
            value, pen, sphere.conductivities, sphere.radii, sphere.center,
            jnp.asarray(lambda2, value.dtype), mu, lam, ok, jnp.asarray(True),
        )  # fmt: skip
        return value, aux

    def value(self, params: dict[str, Array]) -> Float[Array, ""]:
        """The objective alone (cold Berg–Scherg fit): differentiate this."""
        return self.evaluate(params)[0]

    def residuals(
        self, params: dict[str, Array], bs_init: tuple[Array, Array] | None = None
    ) -> tuple[Float[Array, " res"], _Eval]:
        """Residual vector ``r`` with ``½ ‖r‖² = value`` (least-squares
        criteria only; with ``fits_lambda2`` False) and the evaluation's aux."""
        sphere, lambda2 = self.unpack(params)
        src, viol = self._inside(sphere, params)
        gain, mu, lam, ok = self._gain(sphere, src, bs_init)
        res = self.criterion.residuals(gain, self.prepared)
        n = self.prepared.stats.n_samples
        r = jnp.concatenate([res / jnp.sqrt(n), jnp.sqrt(2.0 * PENALTY_WEIGHT) * viol])
        pen = PENALTY_WEIGHT * jnp.sum(viol * viol)
        aux = _Eval(
            0.5 * jnp.sum(r * r), pen, sphere.conductivities, sphere.radii,
            sphere.center, jnp.asarray(lambda2, r.dtype), mu, lam, ok,
            jnp.asarray(True),
        )  # fmt: skip
        return r, aux


# --------------------------------------------------------------------------- #
# The fit
# --------------------------------------------------------------------------- #
class HeadModelFit(NamedTuple):
    """Result of :func:`fit_head_model`.

    Attributes
    ----------
    sphere : SphereModel
        The fitted head model.
    lambda2 : Array, shape ()
        Fitted λ² (= 1/SNR², amplitude SNR) when the criterion fits it, else
        the given one.
    value : Array, shape ()
        Criterion at the fit (per sample; penalty included, 0 when feasible).
    params : dict
        The fitted parameters (see :class:`HeadModelProblem`).
    berg_scherg : BergSchergParams-like tuple ``(mu, lam)`` or None
        Berg–Scherg parameters of the fitted model (``forward="berg_scherg"``).
    trace : HeadModelTrace
        The accepted points, for plots (``trace.path()``).
    status : SolverStatus
        ``result`` (``RESULTS.successful``, ``max_steps_reached``,
        ``nonfinite``, ``infeasible``, ``refit_failed`` or ``solver_failed``),
        ``iterations`` (solver steps), ``change`` (the last relative change of
        the criterion between accepted points) and ``stats`` =
        ``{"penalty": ..., "refit_failures": ...}`` (the number of accepted
        points whose Berg–Scherg refit failed).
    """

    sphere: SphereModel
    lambda2: Float[Array, ""]
    value: Float[Array, ""]
    params: dict[str, Array]
    berg_scherg: tuple[Array, Array] | None
    trace: HeadModelTrace
    status: SolverStatus


def _fn_minimise(params, args):
    problem, warm = args
    return problem.evaluate(params, warm)


def _fn_least_squares(params, args):
    problem, warm = args
    return problem.residuals(params, warm)


def _map_result(res):
    """optimistix result code -> ours."""
    ours = RESULTS.where(
        res == optx.RESULTS.successful, RESULTS.successful, RESULTS.solver_failed
    )
    ours = RESULTS.where(
        res == optx.RESULTS.nonlinear_max_steps_reached,
        RESULTS.max_steps_reached,
        ours,
    )
    return RESULTS.where(res == optx.RESULTS.nonfinite, RESULTS.nonfinite, ours)


@eqx.filter_jit
def _fit_kernel(problem, params0, solver, max_steps, least_squares, throw):
    fn = _fn_least_squares if least_squares else _fn_minimise
    dtype = problem.base.radii.dtype
    if problem.forward == "berg_scherg":
        bs0 = berg_scherg_params(problem.base, throw=False)
        warm0 = (bs0.mu, bs0.lam)
    else:
        warm0 = None
    args0 = (problem, warm0)
    f_struct, aux_struct = eqx.filter_eval_shape(fn, params0, args0)
    aux0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), aux_struct)
    options: dict[str, Any] = {}
    tags: frozenset = frozenset()
    state0 = solver.init(fn, params0, args0, options, f_struct, aux_struct, tags)
    dyn0, static_state = eqx.partition(state0, eqx.is_array)
    n_shells = problem.base.radii.shape[0]
    size = max_steps + 2
    buf = HeadModelTrace(
        values=jnp.full((size,), jnp.nan, dtype),
        conductivities=jnp.full((size, n_shells), jnp.nan, dtype),
        radii=jnp.full((size, n_shells), jnp.nan, dtype),
        center=jnp.full((size, 3), jnp.nan, dtype),
        lambda2=jnp.full((size,), jnp.nan, dtype),
        valid=jnp.zeros((size,), bool),
    )

    def record(buf, k, aux, last):
        new = aux.evaluated & (
            ~last.evaluated
            | jnp.any(aux.conductivities != last.conductivities)
            | jnp.any(aux.radii != last.radii)
            | jnp.any(aux.center != last.center)
            | (aux.lambda2 != last.lambda2)
        )
        return HeadModelTrace(
            values=buf.values.at[k].set(aux.value),
            conductivities=buf.conductivities.at[k].set(aux.conductivities),
            radii=buf.radii.at[k].set(aux.radii),
            center=buf.center.at[k].set(aux.center),
            lambda2=buf.lambda2.at[k].set(aux.lambda2),
            valid=buf.valid.at[k].set(new),
        )

    def cond(carry):
        _, step, _, _, terminate, result, _, _, _ = carry
        return (~terminate) & (result == optx.RESULTS.successful) & (step < max_steps)

    def body(carry):
        y, step, dyn, last, _, _, warm, buf, n_bad = carry
        state = eqx.combine(static_state, dyn)
        y_new, state_new, aux = solver.step(
            fn, y, (problem, warm), options, state, tags
        )
        terminate, result = solver.terminate(
            fn, y_new, (problem, warm), options, state_new, tags
        )
        finite = jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(y_new)])
        )
        result = optx.RESULTS.where(finite, result, optx.RESULTS.nonfinite)
        buf_new = record(buf, step, aux, last)
        is_new = buf_new.valid[step]
        n_bad = n_bad + jnp.where(is_new & ~aux.refit_ok, 1, 0)
        if warm is not None:
            # warm start of the next refits: the last accepted point's fit
            use = aux.evaluated & aux.refit_ok
            warm = (
                jnp.where(use, aux.mu, warm[0]),
                jnp.where(use, aux.lam, warm[1]),
            )
        last = jax.tree_util.tree_map(
            lambda a, b: jnp.where(aux.evaluated, a, b), aux, last
        )
        dyn_new, _ = eqx.partition(state_new, eqx.is_array)
        return y_new, step + 1, dyn_new, last, terminate, result, warm, buf_new, n_bad

    terminate0, result0 = solver.terminate(fn, params0, args0, options, state0, tags)
    carry0 = (
        params0, jnp.asarray(0), dyn0, aux0, terminate0, result0, warm0, buf,
        jnp.asarray(0),
    )  # fmt: skip
    carry = jax.lax.while_loop(cond, body, carry0)
    y, steps, dyn, last, terminate, result, warm, buf, n_bad = carry
    result = optx.RESULTS.where(
        (result == optx.RESULTS.successful) & ~terminate,
        optx.RESULTS.nonlinear_max_steps_reached,
        result,
    )
    state = eqx.combine(static_state, dyn)
    y, _, _ = solver.postprocess(
        fn, y, last, (problem, warm), options, state, tags, result
    )
    # The final point, evaluated once more with a cold Berg–Scherg fit: the
    # reported value and (mu, lam) are those of problem.value(params) (the
    # warm-started refits of the loop follow one local branch of the fit,
    # which can differ from the cold fit at the 1e-4 misfit level).
    if least_squares:
        r, final = problem.residuals(y, None)
        value = 0.5 * jnp.sum(r * r)
    else:
        value, final = problem.evaluate(y, None)
    buf = record(buf, steps, final, last)
    change = jnp.abs(final.value - last.value) / jnp.maximum(jnp.abs(final.value), 1.0)
    ours = _map_result(result)
    ours = RESULTS.where(final.refit_ok, ours, RESULTS.refit_failed)
    ours = RESULTS.where(final.penalty > 0, RESULTS.infeasible, ours)
    ours = RESULTS.where(jnp.isfinite(value), ours, RESULTS.nonfinite)
    status = SolverStatus(
        result=ours,
        iterations=steps,
        change=change,
        stats={"penalty": final.penalty, "refit_failures": n_bad},
    )
    y = error_if_failed(y, status, throw)
    sphere, lambda2 = problem.unpack(y)
    bs = (final.mu, final.lam) if problem.forward == "berg_scherg" else None
    return sphere, lambda2, value, y, bs, buf, status


# --------------------------------------------------------------------------- #
# Public layer
# --------------------------------------------------------------------------- #
_FORWARDS = ("berg_scherg", "exact")


def _check_criterion(criterion, n_chan, data):
    check_type(
        "criterion",
        criterion,
        AbstractHeadModelCriterion,
        "a head-model criterion (DistributedSources, KnownDipoles, UnknownMoments)",
    )
    pos = criterion.src_pos
    if np.ndim(pos) != 2 or np.shape(pos)[-1] != 3 or np.shape(pos)[0] == 0:
        raise ValueError(
            f"criterion.src_pos must have shape (n_src, 3) with n_src >= 1, got "
            f"{np.shape(pos)}."
        )
    check_finite("criterion.src_pos", pos)
    if isinstance(criterion, KnownDipoles):
        m = criterion.moments
        want = (np.shape(pos)[0], 3, np.shape(data)[-1])
        if np.ndim(data) != 2 or tuple(np.shape(m)) != want:
            raise ValueError(
                "KnownDipoles needs data of shape (n_chan, n_times) and moments of "
                f"shape (n_dip, 3, n_times) = {want}; got data {np.shape(data)} and "
                f"moments {np.shape(m)}."
            )
        check_finite("criterion.moments", m)
    if isinstance(criterion, UnknownMoments) and 3 * np.shape(pos)[0] >= n_chan - 1:
        raise ValueError(
            f"UnknownMoments with {np.shape(pos)[0]} dipoles has {3 * np.shape(pos)[0]} "
            f"unknown moments per sample, not fewer than the {n_chan - 1} independent "
            "channels: nothing would be left to fit the head model."
        )


def make_head_model_problem(
    data: Float[ArrayLike, "*epochs chan time"],
    electrodes: Float[ArrayLike, "chan 3"],
    noise_cov: NoiseCov | Float[ArrayLike, "chan chan"],
    sphere: SphereModel,
    criterion: AbstractHeadModelCriterion,
    *,
    fit_conductivities: tuple[int, ...] | None = None,
    fit_radii: bool = False,
    fit_center: bool = True,
    lambda2: float = 1.0 / 9.0,
    forward: str = "berg_scherg",
    n_terms: int | None = None,
    reference: str | None = "average",
) -> HeadModelProblem:
    """The fitting problem of :func:`fit_head_model` (same arguments), for
    evaluating or differentiating its objective yourself (e.g. a grid).

    Returns
    -------
    problem : HeadModelProblem
        ``problem.init_params()`` is the start; ``problem.value(params)`` the
        objective (differentiable: ``jax.grad``, ``jax.jacfwd``,
        ``jax.hessian``); ``problem.unpack(params)`` gives
        ``(SphereModel, lambda2)``.
    """
    check_type("sphere", sphere, SphereModel, "a SphereModel")
    electrodes = as_float_array("electrodes", electrodes)
    if electrodes.ndim != 2 or electrodes.shape[-1] != 3:
        raise ValueError(
            f"electrodes must have shape (n_chan, 3), got {tuple(electrodes.shape)}."
        )
    check_finite("electrodes", electrodes)
    n_chan = int(electrodes.shape[0])
    check_sensor_data("data", data, n_chan, (2, 3), "electrodes has")
    _check_criterion(criterion, n_chan, data)
    if forward not in _FORWARDS:
        raise ValueError(f"forward must be one of {_FORWARDS}, got {forward!r}.")
    if reference not in ("average", None):
        raise ValueError(f"reference must be 'average' or None, got {reference!r}.")
    for name, flag in (("fit_radii", fit_radii), ("fit_center", fit_center)):
        if not isinstance(flag, bool | np.bool_):
            raise TypeError(f"{name} must be True or False, got {flag!r}.")
    n_shells = int(sphere.radii.shape[0])
    if fit_conductivities is None:
        fit_conductivities = tuple(range(1, n_shells - 1))
    try:
        idx = tuple(sorted({int(i) for i in fit_conductivities}))
    except (TypeError, ValueError) as err:
        raise TypeError(
            "fit_conductivities must be a tuple of shell indices (0 = innermost), "
            f"got {fit_conductivities!r}."
        ) from err
    if any(not 0 <= i < n_shells for i in idx):
        raise ValueError(
            f"fit_conductivities {idx} must index the {n_shells} shells (0 .. "
            f"{n_shells - 1}, 0 = innermost)."
        )
    lam = float(lambda2)
    if not (np.isfinite(lam) and lam > 0):
        raise ValueError(f"lambda2 must be a positive finite number, got {lambda2!r}.")
    if isinstance(noise_cov, NoiseCov):
        cov = noise_cov
    else:
        check_array("noise_cov", noise_cov)
        cov = NoiseCov(jnp.asarray(noise_cov))
    if tuple(cov.data.shape) != (n_chan, n_chan):
        raise ValueError(
            f"noise_cov has shape {tuple(cov.data.shape)}; expected ({n_chan}, {n_chan})."
        )
    dtype = jnp.result_type(electrodes, sphere.radii, jnp.asarray(data))
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(dtype, jnp.float32)
    proj, rank = whitener_rank(n_chan, reference, None, None)
    check_covariance_values("noise_cov", cov.data, proj, rank, dtype)
    cov = NoiseCov(jnp.asarray(cov.data, dtype), nfree=cov.nfree)
    whitener, _ = _whitener_kernel(cov.data, proj, rank)
    data = jnp.asarray(data, dtype)
    flat = data if data.ndim == 2 else jnp.moveaxis(data, 0, -2).reshape(n_chan, -1)
    stats = data_stats(flat)
    kept = criterion.prepare_data(flat)
    base = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), sphere)
    if forward == "exact":
        n_terms = _exact_terms(electrodes, criterion.src_pos, base, n_terms)
    else:
        if n_terms is not None:
            raise ValueError("n_terms applies to forward='exact' only.")
        n_terms = 0
    return HeadModelProblem(
        criterion=jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, dtype) if eqx.is_array(a) else a, criterion
        ),
        base=base,
        electrodes=electrodes.astype(dtype),
        prepared=_Prepared(
            whitener,
            cov,
            stats,
            kept,
            None if kept is None else whitener @ kept,
            whitener @ stats.scatter @ whitener.T,
        ),
        lambda2=jnp.asarray(lam, dtype),
        sigma_index=idx,
        fit_radii=bool(fit_radii),
        fit_center=bool(fit_center),
        forward=forward,
        n_terms=int(n_terms),
        reference=reference,
    )


def fit_head_model(
    data: Float[ArrayLike, "*epochs chan time"],
    electrodes: Float[ArrayLike, "chan 3"],
    noise_cov: NoiseCov | Float[ArrayLike, "chan chan"],
    sphere: SphereModel,
    criterion: AbstractHeadModelCriterion,
    *,
    fit_conductivities: tuple[int, ...] | None = None,
    fit_radii: bool = False,
    fit_center: bool = True,
    lambda2: float = 1.0 / 9.0,
    solver: Any = None,
    max_steps: int = 200,
    forward: str = "berg_scherg",
    n_terms: int | None = None,
    reference: str | None = "average",
    throw: bool = True,
) -> HeadModelFit:
    """Fit a spherical head model (and λ²) to EEG data by gradients.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V
        EEG data, channels in the order of ``electrodes``.
    electrodes : Array, shape (n_chan, 3), m
        Electrode positions (head frame), as for ``make_sphere_forward``.
    noise_cov : NoiseCov or Array, shape (n_chan, n_chan), V²
        Sensor noise covariance (whitened with the average-reference projector
        when ``reference="average"``).
    sphere : SphereModel
        The start; unfitted quantities keep its values.
    criterion : AbstractHeadModelCriterion
        :class:`DistributedSources` (evidence over a source space, fits λ²),
        :class:`KnownDipoles` or :class:`UnknownMoments`.
    fit_conductivities : tuple of int or None
        Shells whose conductivity is fitted (0 = innermost). None: every
        shell but the innermost and the outermost (the skull of a 3-shell
        model); EEG fixes conductivities only up to a common factor, so at
        least one should stay fixed.
    fit_radii : bool
        Fit the radii (ordered parameterisation; default False).
    fit_center : bool
        Fit the centre (default True).
    lambda2 : float
        Start (or, for criteria that do not fit it, the value) of λ² = 1/SNR².
    solver : optimistix solver or None
        Any ``optx.AbstractMinimiser`` (default ``optx.BFGS(rtol=1e-6,
        atol=1e-6)``: the objective is smooth only to about 1e-13 relative
        (the refits are warm-started along the path), so much tighter
        tolerances can stall in the line search; ``optx.OptaxMinimiser(optax.lbfgs(), ...)`` wraps an optax
        optimiser) or, for least-squares criteria (``KnownDipoles``,
        ``UnknownMoments``), an ``optx.AbstractLeastSquaresSolver`` such as
        ``optx.LevenbergMarquardt`` (forward-mode Jacobians work).
    max_steps : int
        Maximum solver steps (static).
    forward : {"berg_scherg", "exact"}
        Lead field inside the fit: MNE's Berg–Scherg approximation, refitted
        for every model from the last accepted point's parameters (warm
        start), or the exact series with ``n_terms`` terms (default from the
        start geometry).
    reference : {"average", None}
        Reference of the lead field (and the whitener's projector).
    throw : bool
        True (default): a failed fit raises ``RuntimeError`` (eagerly) or is
        an ``eqx.error_if`` when traced. False: the status says what happened.

    Returns
    -------
    fit : HeadModelFit
        ``sphere``, ``lambda2``, ``value``, ``params``, ``berg_scherg``,
        ``trace`` (the accepted points) and ``status``.

    Notes
    -----
    The objective and its parameterisation are those of
    :class:`HeadModelProblem` (see :func:`make_head_model_problem`). The solver
    loop is optimistix's ``init`` / ``step`` / ``terminate`` run in one
    ``lax.while_loop``, recording the accepted points and warm-starting the
    Berg–Scherg refit from the last one; the whole fit compiles once.
    """
    problem = make_head_model_problem(
        data, electrodes, noise_cov, sphere, criterion,
        fit_conductivities=fit_conductivities, fit_radii=fit_radii,
        fit_center=fit_center, lambda2=lambda2, forward=forward, n_terms=n_terms,
        reference=reference,
    )  # fmt: skip
    if solver is None:
        solver = optx.BFGS(rtol=1e-6, atol=1e-6)
    least_squares = isinstance(solver, optx.AbstractLeastSquaresSolver)
    if not (least_squares or isinstance(solver, optx.AbstractMinimiser)):
        raise TypeError(
            "solver must be an optimistix minimiser (e.g. optx.BFGS) or least-squares "
            f"solver (e.g. optx.LevenbergMarquardt), got {type(solver).__name__}."
        )
    if least_squares and (
        problem.fit_lambda2
        or type(problem.criterion).residuals is AbstractHeadModelCriterion.residuals
    ):
        raise TypeError(
            f"{type(problem.criterion).__name__} is not a sum of squares: use a "
            "minimiser (e.g. optx.BFGS), not a least-squares solver."
        )
    if (
        least_squares
        and problem.base.radii.dtype == jnp.float32
        and jax.config.jax_enable_x64
    ):
        raise TypeError(
            "solver: optimistix 0.1's least-squares solvers fail on float32 "
            "parameters when jax_enable_x64 is on ('Vector and operator structures "
            "do not match'); use a minimiser (optx.BFGS) or float64 inputs."
        )
    max_steps = as_int("max_steps", max_steps, minimum=1)
    if not isinstance(throw, bool | np.bool_):
        raise TypeError(f"throw must be True or False, got {throw!r}.")
    eager = is_concrete(*jax.tree_util.tree_leaves(problem))
    out = _fit_kernel(
        problem, problem.init_params(), solver, max_steps, least_squares,
        bool(throw) and not eager,
    )  # fmt: skip
    sphere_fit, lambda2_fit, value, params, bs, trace, status = out
    if eager:
        check_status(
            status,
            throw=bool(throw),
            what="fit_head_model",
            change="final relative change of the criterion",
        )
    return HeadModelFit(sphere_fit, lambda2_fit, value, params, bs, trace, status)
