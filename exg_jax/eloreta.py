"""Exact low-resolution electromagnetic tomography: the method ``eLORETA()``.

eLORETA (Pascual-Marqui 2007, 2011) is the minimum-norm kernel with a source
weighting ``R`` that is the fixed point of a re-weighting iteration. Here it
is an inverse-method object (:class:`eLORETA`, an
:class:`~exg_jax.methods.AbstractMinimumNorm`): its :meth:`~eLORETA.factors`
fit ``R`` for the operator and λ² and return the SVD factors of the weighted
problem; the kernel, the orientation handling and the application are the
family's. The fixed point is solved by ``optimistix.fixed_point`` with MNE's
stopping rule and differentiated implicitly (forward and reverse mode).

Public API
----------
``eLORETA(eps=1e-6, max_iter=20, force_equal=None, throw=True)``
    The method (``apply_inverse(data, inv, lambda2, eLORETA())``).
``eloreta_weights(gain, lambda2, ...)``
    The array-level weight fit (whitened gain in, weights and status out).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Float, Real

from ._numerics import safe_div, safe_norm, scale_of
from ._typing import IntScalar, NestedSequence, RealScalar
from ._validate import (
    as_int,
    check_array,
    check_finite,
    check_lambda2,
    check_shape,
    check_type,
    is_concrete,
    lambda2_error_if,
)
from .linalg import inv_sqrtm_sym, sqrtm_sym, svd_thin
from .methods import AbstractMinimumNorm, SvdFactors
from .status import SolverStatus, check_status, error_if_failed, make_status

if TYPE_CHECKING:  # pragma: no cover (annotation only: inverse imports eloreta)
    from .inverse import InverseOperator

__all__ = ["eLORETA", "eloreta_weights"]


def _to_float(x: float | int | np.floating | np.integer) -> float:
    """NumPy / Python reals to ``float`` (static fields hash alike); else unchanged."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_):
        return float(x)
    return x


def _to_int(x: int | np.integer) -> int:
    """NumPy / Python integers to ``int``; anything else unchanged (checked later)."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_):
        return int(x)
    return x


def _to_bool(x: bool | np.bool_ | None) -> bool | None:
    return bool(x) if isinstance(x, np.bool_) else x


class eLORETA(AbstractMinimumNorm):
    """Exact LORETA: minimum norm with a fitted source weighting (A·m).

    Parameters
    ----------
    eps : float
        Stop when the relative change of the weights between two iterations,
        ``‖R_k − R_{k−1}‖_F / ‖R_{k−1}‖_F``, falls below ``eps``.
    max_iter : int
        Maximum number of iterations.
    force_equal : bool or None
        Free orientation only. ``None`` or ``False``: one symmetric 3 x 3
        weight matrix per source (independent orientation weights, the
        reference eLORETA). ``True``: one scalar weight per source, shared by
        its three orientations.
    throw : bool
        What happens when the fit has not converged after ``max_iter``
        iterations (as ``throw`` in optimistix). True (default): an error —
        on the eager path a ``RuntimeError`` with the iteration count and the
        final change, under ``jit`` / ``vmap`` / ``grad`` an ``eqx.error_if``
        in the compiled kernel (a ``RuntimeError`` subclass when the program
        runs). False: the result is returned with ``status.converged`` False
        (and, on the eager path, a ``RuntimeWarning``).

    All four are static (a change recompiles). NumPy scalars are accepted
    (stored as Python ``float`` / ``int``).

    Notes
    -----
    Equivalent to ``mne.minimum_norm.apply_inverse(..., method="eLORETA",
    method_params=dict(eps=, max_iter=, force_equal=))`` (which only warns on
    non-convergence: pass ``throw=False`` for that behaviour), with the same
    iteration counts. See :meth:`factors` and :func:`eloreta_weights`.
    """

    eps: float = eqx.field(static=True, default=1e-6, converter=_to_float)
    max_iter: int = eqx.field(static=True, default=20, converter=_to_int)
    force_equal: bool | None = eqx.field(static=True, default=None, converter=_to_bool)
    throw: bool = eqx.field(static=True, default=True, converter=_to_bool)

    name: ClassVar[str] = "eLORETA"

    def __check_init__(self):
        if isinstance(self.eps, bool) or not isinstance(self.eps, numbers.Real):
            raise TypeError(f"eps must be a real number, got {self.eps!r}.")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be finite and > 0, got {self.eps!r}.")
        as_int("max_iter", self.max_iter, minimum=1)
        if not (self.force_equal is None or isinstance(self.force_equal, bool)):
            raise TypeError(
                f"force_equal must be None, True or False, got {self.force_equal!r}."
            )
        if not isinstance(self.throw, bool):
            raise TypeError(f"throw must be True or False, got {self.throw!r}.")

    def factors(
        self, inv: InverseOperator, lambda2: Float[Array, ""]
    ) -> tuple[SvdFactors, SolverStatus]:
        """Fit the eLORETA weights ``R`` and return the weighted SVD factors.

        Parameters
        ----------
        inv : InverseOperator
            Not modified; its depth prior is not used (eLORETA compensates
            depth bias itself), its orientation prior is.
        lambda2 : scalar Array
            λ² (the weights depend on it).

        Returns
        -------
        factors : SvdFactors
            ``U``ᵀ, ``S`` and ``R^½ V`` of the thin SVD ``G R^½ = U S Vᵀ``
            (``G`` the whitened gain without the source prior), A·m.
        status : SolverStatus
            Iterations, final relative change of the weights, result code.
            With ``throw=True`` a failure is an ``eqx.error_if`` in the
            compiled program.

        Notes
        -----
        Equivalent to the operator preparation of MNE-Python's
        ``apply_inverse(..., method="eLORETA")`` (``_compute_eloreta``), without
        mutating the input.
        """
        cfg = _config(inv.n_orient, inv.rank, self)
        # Whitened gain from the SVD, undoing the source covariance weighting,
        # in units of 1/σ (σ = max source std, a constant): the whitened gain
        # itself reaches 1e10 and beyond in SI units and its squares (the Gram
        # blocks) overflow float32. The fixed point is invariant to a scale of
        # the gain (R is renormalised to trace(G R Gᵀ) = rank), so fitting on
        # ``gain_n = σ · gain`` gives R_n = R σ²; below, G R^½ = gain_n R_n^½
        # and V R^½ = σ · V R_n^½.
        sigma = scale_of(inv.source_std)
        gain = (inv.eigen_fields.T * inv.sing) @ inv.eigen_leads.T
        gain = gain / (inv.source_std / sigma)
        if inv.orient_prior is None:
            source_std = jnp.ones(gain.shape[1], gain.dtype)
        else:
            source_std = jnp.sqrt(inv.orient_prior)
        r, status = _solve_weights(gain, source_std, lambda2, cfg)
        r_sqrt = _weights_sqrt(r, cfg)
        u, sing, vt = svd_thin(_times_r_sqrt(gain, r_sqrt, cfg))
        leads = _times_r_sqrt(vt, r_sqrt, cfg).T * sigma
        out = (SvdFactors(u.T, sing, leads), status)
        return error_if_failed(out, status, self.throw)

    def noise_weight(
        self, sing: Float[Array, " comp"], lambda2: Float[Array, ""]
    ) -> None:
        return None  # eLORETA is not noise-normalised (A·m)

    def for_eager(self) -> eLORETA:
        """A copy with ``throw=False``: :meth:`check` raises afterwards, with details.

        (A new instance: ``eqx.tree_at`` cannot replace a static field.)
        """
        return eLORETA(
            eps=self.eps,
            max_iter=self.max_iter,
            force_equal=self.force_equal,
            throw=False,
        )

    def check(self, status: SolverStatus | None) -> None:
        """Raise (``throw``) or warn when a concrete ``status`` reports a failure."""
        check_status(
            status,
            throw=self.throw,
            what="eLORETA weight fitting",
            advice=(
                f"(eLORETA: relative change of the weights >= eps={self.eps:g} "
                f"after max_iter={self.max_iter} iterations; raise max_iter or eps, "
                "or use eLORETA(..., throw=False).)"
            ),
        )


# ---------------------------------------------------------------------------
# The eLORETA map
# ---------------------------------------------------------------------------

# MNE's ``sqrtm_sym`` cut: eigenvalues of a 3 x 3 block at or below 1e-7 times
# its largest are treated as zero.
_RCOND = 1e-7


class _Config(NamedTuple):
    n_orient: int
    blocks: bool  # 3 x 3 weight blocks (free, independent orientations)
    force_equal: bool
    n_nzero: int
    eps: float
    max_iter: int


def _config(n_orient, n_nzero, method):
    force_equal = bool(method.force_equal)
    return _Config(
        n_orient=int(n_orient),
        blocks=(n_orient == 3 and not force_equal),
        force_equal=force_equal,
        n_nzero=int(n_nzero),
        eps=float(method.eps),
        max_iter=int(method.max_iter),
    )


def _gain_blocks(gain, n_orient):
    """(n_chan, n_src * 3) -> (n_src, 3, n_chan)."""
    return jnp.transpose(gain.reshape(gain.shape[0], -1, n_orient), (1, 2, 0))


def _block_gram(a, b):
    """Per-source 3 x 3 blocks ``A_sᵀ B_s`` of (n_chan, n_src * 3) matrices."""
    return _gain_blocks(a, 3) @ jnp.swapaxes(_gain_blocks(b, 3), -1, -2)


def _r_times_gt(gain, r, cfg):
    """R G^T, shape (n_src * n_orient, n_chan)."""
    if cfg.blocks:
        g3 = gain.reshape(gain.shape[0], -1, 3)
        return jnp.einsum("nij,cnj->nic", r, g3).reshape(-1, gain.shape[0])
    return r[:, None] * gain.T


def _gain_gram(gain, cfg):
    """Per-source G_sᵀ G_s (3 x 3 blocks) or column sums of squares of G."""
    if cfg.blocks:
        return _block_gram(gain, gain)
    return jnp.sum(gain * gain, axis=0)


def _normalize(gain, r, cfg, gram=None):
    """Scale R so that trace(G R G^T) = n_nzero (keeps lambda2's meaning).

    trace(G R Gᵀ) = Σ R ∘ (G_sᵀ G_s), without forming G R Gᵀ; ``gram`` is
    ``_gain_gram(gain, cfg)`` when the caller already has it.
    """
    gram = _gain_gram(gain, cfg) if gram is None else gram
    return r * (cfg.n_nzero / jnp.sum(r * gram))


def _initial_weights(gain, r_prior, cfg):
    """Identity weights with the prior applied (3 x 3 blocks: I o R_prior)."""
    if cfg.blocks:
        r_prior = r_prior * jnp.eye(3, dtype=r_prior.dtype)
    return _normalize(gain, r_prior, cfg)


def _regularized_inverse_times_gain(grgt, gain, lambda2, cfg):
    """N G with N = (G R G^T + lambda2 I)^-1 on the top-n_nzero eigenspace."""
    n = grgt.shape[0]
    if cfg.n_nzero >= n:
        # Full rank: the truncated eigen-inverse is the plain regularized inverse.
        # (small n x n inverse, then one GEMM: faster than a solve with many columns)
        eye = jnp.eye(n, dtype=grgt.dtype)
        chol = jax.scipy.linalg.cho_factor(grgt + lambda2 * eye, lower=True)
        n_inv = jax.scipy.linalg.cho_solve(chol, eye)
        n_inv = 0.5 * (n_inv + n_inv.T)
        return n_inv @ gain
    s, u = jnp.linalg.eigh(grgt)
    s = jnp.abs(s)
    order = jnp.argsort(-s)[: cfg.n_nzero]
    s, u = s[order], u[:, order]
    pos = s > 0
    inv_s = jnp.where(pos, 1.0 / (jnp.where(pos, s, 1.0) + lambda2), 0.0)
    return ((u * inv_s) @ u.T) @ gain


def _update(r, gain, r_prior, lambda2, gram, cfg):
    """One eLORETA re-weighting step, F(R) (the fixed-point map).

    ``gram`` is ``_gain_gram(gain, cfg)``, computed once outside the loop; it
    is an argument of the map, so the implicit derivative sees its
    dependence on the gain.
    """
    grgt = gain @ _r_times_gt(gain, r, cfg)
    ng = _regularized_inverse_times_gain(grgt, gain, lambda2, cfg)
    if cfg.n_orient == 1:
        new = 1.0 / jnp.sqrt(jnp.sum(ng * gain, axis=0))
    else:
        m = _block_gram(gain, ng)  # G_s^T N G_s
        m = 0.5 * (m + jnp.swapaxes(m, -1, -2))
        if cfg.force_equal:
            # mean of the square roots of the eigenvalues = trace(M^1/2) / 3
            mean_root = jnp.trace(sqrtm_sym(m, _RCOND), axis1=-2, axis2=-1) / 3.0
            new = jnp.repeat(1.0 / mean_root, 3)
        else:
            new = inv_sqrtm_sym(m, _RCOND)
    new = new * r_prior  # re-apply the orientation prior (Hadamard product)
    return _normalize(gain, new, cfg, gram)


def _rel_change(new, old):
    """||new - old||_F / ||old||_F, scale-free (``safe_norm``).

    The weights carry physical units (≈ 1e-19 for a whitened EEG gain in
    V/(A·m)); squaring them unscaled underflows in float32.
    """
    return safe_norm(new - old) / safe_norm(old)


# ---------------------------------------------------------------------------
# The fixed point: optimistix, with MNE's stopping rule; implicit adjoint
# ---------------------------------------------------------------------------


class _EloretaMap(eqx.Module):
    """``R ↦ F(R)`` as optimistix's ``fn(y, args)``; ``args = (gain, prior, λ², gram)``."""

    cfg: _Config = eqx.field(static=True)

    def __call__(self, r, args):
        gain, r_prior, lambda2, gram = args
        return _update(r, gain, r_prior, lambda2, gram, self.cfg)


class _MneIteration(optx.AbstractFixedPointSolver):
    """Plain fixed-point iteration ``R ← F(R)`` with MNE-Python's stopping rule.

    Stops when ``‖R_k − R_{k−1}‖_F / ‖R_{k−1}‖_F < rtol`` (``rtol`` is eLORETA's
    ``eps``), so the iteration count equals MNE's; optimistix's ``max_steps``
    is ``max_iter``. The state is that last relative change. A NaN change
    stops at once with ``RESULTS.nonfinite``. (optimistix's own
    ``FixedPointIteration`` tests an elementwise ``atol + rtol·|y|`` scale,
    which counts iterations differently.)
    """

    rtol: float
    atol: float = 0.0
    norm: object = optx.two_norm

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        return jnp.asarray(jnp.inf, f_struct.dtype)

    def step(self, fn, y, args, options, state, tags):
        new, aux = fn(y, args)
        return new, _rel_change(new, y).astype(new.dtype), aux

    def terminate(self, fn, y, args, options, state, tags):
        nan = jnp.isnan(state)
        result = optx.RESULTS.where(
            nan, optx.RESULTS.nonfinite, optx.RESULTS.successful
        )
        return (state < self.rtol) | nan, result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


class _NeumannSolver(lx.AbstractLinearSolver):
    """``(J − I) x = b`` for a contraction ``J`` by ``x ← J x − b`` (Neumann series).

    The linear system of the implicit derivative of ``R = F(R)``: ``J =
    ∂F/∂R`` at the fixed point, a contraction wherever the forward iteration
    converges (at the same linear rate), so the series converges too. Only
    products with ``J`` (forward mode) or ``Jᵀ`` (reverse mode, through
    :meth:`transpose`) are formed, never ``J`` itself. Stops when the relative
    change of ``x`` is at most ``rtol``.
    """

    rtol: float
    max_steps: int

    def init(self, operator, options):
        return lx.linearise(operator)  # the primal of F is evaluated once

    def compute(self, state, vector, options):
        op, b = state, vector

        def cond(carry):
            k, _, change = carry
            return (k < self.max_steps) & (change > self.rtol)

        def body(carry):
            k, x, _ = carry
            new = op.mv(x) + x - b  # J x − b
            return k + 1, new, safe_div(safe_norm(new - x), safe_norm(new))

        init = (jnp.asarray(0), -b, jnp.asarray(jnp.inf, b.dtype))
        steps, x, change = jax.lax.while_loop(cond, body, init)
        result = lx.RESULTS.where(
            change > self.rtol, lx.RESULTS.max_steps_reached, lx.RESULTS.successful
        )
        return x, result, {"num_steps": steps}

    def transpose(self, state, options):
        return state.transpose(), options

    def conj(self, state, options):
        return state, options  # real

    def assume_full_rank(self):
        return True


def _adjoint(dtype, cfg):
    tol = 1e-13 if dtype == jnp.float64 else 1e-6
    solver = _NeumannSolver(rtol=tol, max_steps=max(20 * cfg.max_iter, 2000))
    return optx.ImplicitAdjoint(linear_solver=solver)


def _fixed_point(gain, r_prior, lambda2, cfg):
    """``R = F(R)`` from the identity weights; returns (R, SolverStatus)."""
    r0 = jax.lax.stop_gradient(_initial_weights(gain, r_prior, cfg))
    args = (gain, r_prior, lambda2, _gain_gram(gain, cfg))
    sol = optx.fixed_point(
        _EloretaMap(cfg),
        _MneIteration(rtol=cfg.eps),
        r0,
        args,
        max_steps=cfg.max_iter,
        throw=False,
        adjoint=_adjoint(r0.dtype, cfg),
    )
    change = jax.lax.stop_gradient(sol.state)
    status = make_status(
        sol.result == optx.RESULTS.successful,
        jax.lax.stop_gradient(sol.stats["num_steps"]),
        change,
        finite=jnp.isfinite(change),
    )
    return sol.value, status


def _prior_weights(source_std, cfg):
    """R_prior: std_i std_j per 3 x 3 block, or std^2 for scalar weights."""
    if cfg.blocks:
        s = source_std.reshape(-1, 3)
        return s[:, :, None] * s[:, None, :]
    return source_std**2


def _solve_weights(gain, source_std, lambda2, cfg):
    """Run the fit on the prior-biased gain; return R normalised on ``gain``.

    ``gain`` is the whitened gain *without* the orientation prior; the fit is
    done on ``gain * source_std`` and the final normalisation on ``gain``, as
    MNE-Python does.
    """
    lambda2 = jnp.asarray(lambda2, gain.dtype)
    r_prior = _prior_weights(source_std, cfg)
    # Fit on gain / c (c = max |gain|, a constant): the whitened gain is ≈ 1e8
    # and more in SI units and its Gram blocks overflow float32. The fixed
    # point is invariant to the scale of the gain; R scales as 1 / c².
    c = scale_of(gain)
    gain = gain / c
    r, status = _fixed_point(gain * source_std, r_prior, lambda2, cfg)
    r = _normalize(gain, r, cfg) / (c * c)
    return r, status


def _weights_sqrt(r, cfg):
    if cfg.blocks:
        return sqrtm_sym(r, _RCOND)
    return jnp.sqrt(r)


def _times_r_sqrt(other, r_sqrt, cfg):
    """``other @ R^1/2`` for ``other`` of shape (k, n_src * n_orient)."""
    if cfg.blocks:
        k = other.shape[0]
        out = r_sqrt @ _gain_blocks(other, 3)  # (n_src, 3, k)
        return out.reshape(-1, k).T
    return other * r_sqrt


@eqx.filter_jit
def _weights_kernel(gain, source_std, lambda2, n_orient, n_nzero, method):
    lambda2 = lambda2_error_if(lambda2)  # survives jit / vmap (≤ 0, NaN, Inf)
    cfg = _config(n_orient, n_nzero, method)
    out = _solve_weights(gain, source_std, lambda2, cfg)
    return error_if_failed(out, out[1], method.throw)


def eloreta_weights(
    gain: Real[ArrayLike, "white src_orient"] | NestedSequence,
    lambda2: RealScalar,
    *,
    n_orient: IntScalar,
    source_std: Real[ArrayLike, " src_orient"] | NestedSequence | None = None,
    n_nzero: IntScalar | None = None,
    method: eLORETA | None = None,
) -> tuple[Float[Array, " src_orient"] | Float[Array, "src 3 3"], SolverStatus]:
    """Fit the eLORETA weights for a whitened gain matrix.

    Parameters
    ----------
    gain : Array, shape (n_white, n_src * n_orient)
        Whitened lead field (dimensionless after whitening), columns ordered
        (s0x, s0y, s0z, s1x, ...) for free orientation; without depth weighting.
    lambda2 : float or Array, shape ()
        Regularisation parameter (1 / SNR², dimensionless). Traced.
    n_orient : {1, 3}
        Orientations per source.
    source_std : Array, shape (n_src * n_orient,) or None
        Square root of the orientation prior (loose orientation), or None (ones).
    n_nzero : int or None
        Rank of the whitened problem: only the ``n_nzero`` largest eigenvalues
        of ``G R Gᵀ`` are inverted. Defaults to ``n_white``.
    method : eLORETA or None
        Solver settings (``eps``, ``max_iter``, ``force_equal``, ``throw``);
        defaults to ``eLORETA()``.

    Returns
    -------
    R : Array, shape (n_src * n_orient,) or (n_src, 3, 3)
        The weights (source covariance), normalised so that
        ``trace(G R Gᵀ) = n_nzero``; 3 x 3 blocks for free orientation with
        independent orientation weights.
    status : SolverStatus
        ``iterations``, ``change`` (the final relative change of ``R``),
        ``result`` / ``converged``.

    Raises
    ------
    RuntimeError
        When the fit does not converge and ``method.throw`` is True (the
        default); see :class:`eLORETA`.

    Notes
    -----
    Equivalent to the weight fit in MNE-Python's
    ``mne/minimum_norm/_eloreta.py``. One iteration computes
    ``N = (G R Gᵀ + λ² I)⁻¹`` and sets ``R_s = (G_sᵀ N G_s)^-1/2`` per source
    (or the reciprocal of the mean square root of its eigenvalues for
    ``force_equal=True``, or ``1/sqrt(g_sᵀ N g_s)`` for fixed orientation),
    re-applies the orientation prior elementwise and rescales ``R`` so that
    ``trace(G R Gᵀ) = n_nzero``. The iteration is ``optimistix.fixed_point``
    with MNE's stopping rule. Derivatives of ``R`` are implicit (forward and
    reverse mode, ``optimistix.ImplicitAdjoint``): at the fixed point ``R =
    F(R, θ)``, ``(I − ∂F/∂R) dR = ∂F/∂θ dθ`` is solved by the Neumann series
    ``x ← (∂F/∂R) x + b`` (a contraction at a convergent fixed point) with
    Jacobian-vector products only.
    """
    method = eLORETA() if method is None else method
    check_type("method", method, eLORETA, "an eLORETA or None")
    n_orient = as_int("n_orient", n_orient)
    if n_orient not in (1, 3):
        raise ValueError(f"n_orient must be 1 or 3, got {n_orient!r}.")
    check_array("gain", gain)
    gain = jnp.asarray(gain)
    if gain.ndim != 2 or gain.shape[1] % n_orient:
        raise ValueError(
            f"gain must have shape (n_chan, n_src * {n_orient}), got {gain.shape}."
        )
    if gain.size == 0:
        raise ValueError(
            f"gain is empty (shape {gain.shape}): it needs >= 1 channel and >= 1 source."
        )
    check_finite("gain", gain)
    check_lambda2(lambda2, gain.dtype)
    if source_std is None:
        source_std = jnp.ones(gain.shape[1], gain.dtype)
    else:
        check_array("source_std", source_std)
        check_shape("source_std", source_std, (gain.shape[1],))
        check_finite("source_std", source_std)
    n_nzero = as_int("n_nzero", n_nzero, allow_none=True)
    n_nzero = gain.shape[0] if n_nzero is None else n_nzero
    if not 1 <= n_nzero <= gain.shape[0]:
        raise ValueError(f"n_nzero must lie in [1, {gain.shape[0]}], got {n_nzero}.")
    source_std = jnp.asarray(source_std, gain.dtype)
    lambda2 = jnp.asarray(lambda2, gain.dtype)
    concrete = is_concrete(gain, source_std, lambda2)
    r, status = _weights_kernel(
        gain,
        source_std,
        lambda2,
        n_orient,
        n_nzero,
        method.for_eager() if concrete else method,
    )
    method.check(status)
    return r, status
