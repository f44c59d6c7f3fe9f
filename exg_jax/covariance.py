"""Noise covariance estimation (``NoiseCov``, ``compute_covariance``).

Estimators follow scikit-learn's conventions (divisor ``N``, Ledoit-Wolf
automatic shrinkage towards ``μ I``) so that results can be checked against
``sklearn.covariance`` directly.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Int, Real
from numpy.typing import DTypeLike

from ._numerics import scale_of
from ._typing import IntScalar, NestedSequence, RealScalar
from ._validate import (
    _mne_class,
    as_ch_names,
    as_int,
    check_array,
    check_finite,
    check_not_mne,
    check_option,
    check_range,
    check_real_scalar,
    is_concrete,
)
from .linalg import average_reference_basis

__all__ = [
    "NoiseCov",
    "compute_covariance",
    "compute_covariance_epochs",
    "cov_from_mne",
]

_METHODS = ("empirical", "ledoit_wolf", "diagonal")


def _as_nfree(x: Int[ArrayLike, ""] | None) -> Int[Array, ""] | None:
    """``nfree`` as an integer JAX array (None kept); bools and floats are refused."""
    if x is None:
        return None
    if isinstance(x, bool | np.bool_) or not isinstance(
        x, numbers.Integral | np.ndarray | jax.Array
    ):
        raise TypeError(f"NoiseCov nfree must be an integer, got {x!r}.")
    return jnp.asarray(x)


class NoiseCov(eqx.Module):
    """A sensor noise covariance.

    Attributes
    ----------
    data : Array, shape (n_chan, n_chan), V²
        Symmetric positive semi-definite covariance matrix.
    nfree : Array, shape (), integer, or None
        Number of samples (degrees of freedom) it was estimated from, as
        MNE-Python's ``Covariance["nfree"]``; None (default) when unknown.
        Metadata only: no computation uses it. An array leaf, not a static
        field, so that covariances of different sample counts share compiled
        code; a Python int is converted.
    ch_names : tuple of str or None
        Static. Names of the rows / columns, when known (a list is
        converted). With names on both the covariance and the forward,
        ``make_inverse_operator`` matches them by name.
    """

    data: Real[ArrayLike, "chan chan"]
    nfree: Int[Array, ""] | None = eqx.field(default=None, converter=_as_nfree)
    ch_names: tuple[str, ...] | None = eqx.field(
        static=True, default=None, converter=as_ch_names
    )

    def __check_init__(self):
        check_not_mne("NoiseCov data", self.data, "an array")
        if isinstance(self.data, str | bytes | dict) or self.data is None:
            raise TypeError(
                f"NoiseCov data must be an array, got {type(self.data).__name__}."
            )
        if self.nfree is not None and not jnp.issubdtype(self.nfree.dtype, jnp.integer):
            raise TypeError(
                f"NoiseCov nfree must be an integer, got dtype {self.nfree.dtype}."
            )
        shape = np.shape(self.data)
        if self.ch_names is not None and (
            len(shape) < 2 or shape[-1] != len(self.ch_names)
        ):
            raise ValueError(
                f"NoiseCov ch_names has {len(self.ch_names)} names but data has "
                f"shape {shape}."
            )


def cov_from_mne(cov: Any, ch_names: Any = None) -> NoiseCov:
    """Convert an ``mne.Covariance`` to a :class:`NoiseCov`, channels matched by name.

    Parameters
    ----------
    cov : mne.Covariance
        A noise covariance (full or diagonal), V².
    ch_names : sequence of str, or an object with ``ch_names``, or None
        The channels wanted, in order: a list of names, or a
        :class:`~exg_jax.ForwardOperator` / ``InverseOperator`` / ``mne.Info``
        / MNE data object with names. Channels the covariance marks bad
        (``cov["bads"]``) or does not have are left out (as MNE-Python's
        ``make_inverse_operator`` does; ``make_inverse_operator`` then uses the
        forward's channels that the covariance has). None: the covariance's
        own channels, in its order, without its bads.

    Returns
    -------
    NoiseCov
        ``data`` (n, n) float64 NumPy (V²; a diagonal covariance as a full
        matrix), ``nfree`` = ``cov["nfree"]``, ``ch_names`` the kept names.

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    TypeError
        ``cov`` is not an ``mne.Covariance``; ``ch_names`` is not a sequence
        of str (or an object with ``ch_names``).
    ValueError
        No channel is left.

    Notes
    -----
    MNE's projectors stored in ``cov["projs"]`` are not applied: the average
    reference is applied by the inverse operator's whitener, as MNE's
    ``make_inverse_operator`` does with the data's projectors.
    """
    try:
        import mne
    except ImportError as err:  # pragma: no cover - mne is installed for the tests
        raise ImportError(
            "cov_from_mne needs MNE-Python: pip install mne (or exg-jax[test])."
        ) from err
    if not isinstance(cov, mne.Covariance):
        raise TypeError(f"cov must be an mne.Covariance, got {type(cov).__name__}.")
    names = list(cov.ch_names)
    bads = set(cov["bads"])
    if ch_names is None:
        want = [n for n in names if n not in bads]
    else:
        if not isinstance(ch_names, str | bytes) and hasattr(ch_names, "ch_names"):
            ch_names = ch_names.ch_names
            if ch_names is None:
                raise TypeError(
                    "ch_names: the object given has no channel names (ch_names is None)."
                )
        elif _mne_class(ch_names) == "Info":
            ch_names = ch_names["ch_names"]
        want = list(as_ch_names(ch_names))
        index = set(names)
        want = [n for n in want if n in index and n not in bads]
    if not want:
        raise ValueError(
            "cov_from_mne: no channel left (none of the wanted channels is a good "
            "channel of the covariance)."
        )
    sel = np.array([names.index(n) for n in want])
    data = np.asarray(cov.data, dtype=np.float64)
    if data.ndim == 1:
        data = np.diag(data)
    data = data[np.ix_(sel, sel)]
    return NoiseCov(data, nfree=int(cov["nfree"]), ch_names=tuple(want))


def _lw_shrinkage(x):
    """Ledoit-Wolf optimal shrinkage of centred samples ``x`` (n_samples, n_features)."""
    n, p = x.shape
    x2 = x * x
    emp_trace = jnp.sum(x2, axis=0) / n
    mu = jnp.sum(emp_trace) / p
    beta_ = jnp.sum(x2.T @ x2)
    delta_ = jnp.sum((x.T @ x) ** 2) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * jnp.sum(emp_trace) + p * mu**2) / p
    beta = jnp.minimum(beta, delta)
    ok = beta != 0
    return jnp.where(ok, beta / jnp.where(delta != 0, delta, 1.0), 0.0)


@partial(jax.jit, static_argnames=("method", "fixed"))
def _cov_kernel(x, shrinkage, method, fixed):
    # x: centred samples (n_samples, n_features), V. Everything is computed on
    # x / m (m = max |x|, a constant for differentiation) and the result scaled
    # by m² at the end: the Ledoit-Wolf statistics are fourth powers of the
    # samples (1e-40 at 1e-10 V, zero in float32) and the shrinkage is
    # scale-invariant.
    n, p = x.shape
    m = scale_of(x)
    x = x / m
    emp = (x.T @ x) / n
    if method == "empirical":
        out = emp
    elif method == "diagonal":
        out = jnp.diag(jnp.diagonal(emp))
    elif p == 1:
        out = emp
    else:
        mu = jnp.trace(emp) / p
        alpha = shrinkage if fixed else _lw_shrinkage(x)
        out = (1.0 - alpha) * emp + alpha * mu * jnp.eye(p, dtype=x.dtype)
    return out * (m * m)


def _validate(method, shrinkage):
    check_option("method", method, _METHODS)
    if shrinkage is not None:
        if method != "ledoit_wolf":
            raise ValueError(
                f"shrinkage={shrinkage!r} is only used with method='ledoit_wolf', "
                f"got method={method!r}."
            )
        check_real_scalar("shrinkage", shrinkage)
        check_range("shrinkage", shrinkage, 0.0, 1.0)


def _check_samples(name, n_chan, n_times, per=""):
    if n_chan == 0:
        raise ValueError(f"{name} has 0 channels.")
    if n_times < 2:
        raise ValueError(
            f"{name} has {n_times} time sample(s){per}: a covariance needs at least "
            "2 (the mean is removed; 1 sample gives an all-zero covariance, 0 a NaN one)."
        )


def compute_covariance(
    data: Real[ArrayLike, "chan time"] | NestedSequence,
    method: str = "ledoit_wolf",
    shrinkage: RealScalar | None = None,
) -> NoiseCov:
    """Noise covariance of continuous sensor data.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times), V
        Sensor noise samples.
    method : {"ledoit_wolf", "empirical", "diagonal"}
        ``"empirical"``: ``(1/N) Σ (x − x̄)(x − x̄)ᵀ`` (scikit-learn's
        ``empirical_covariance``); ``"ledoit_wolf"``: ``(1 − α) C + α μ I`` with
        ``μ = tr(C)/n`` and the Ledoit–Wolf (2004) optimal ``α`` when
        ``shrinkage`` is None (scikit-learn's ``ledoit_wolf``), else
        ``α = shrinkage``; ``"diagonal"``: the diagonal of the empirical one.
    shrinkage : float in [0, 1] or None
        Fixed shrinkage for ``"ledoit_wolf"``.

    Returns
    -------
    cov : NoiseCov
        ``data`` (n_chan, n_chan) in V², ``nfree = n_times`` (an integer array).
    """
    _validate(method, shrinkage)
    check_array("data", data)
    check_finite("data", data)
    data = jnp.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be 2-D (n_chan, n_times), got shape {data.shape}.")
    _check_samples("data", data.shape[0], data.shape[1])
    x = data.T
    x = x - jnp.mean(x, axis=0, keepdims=True)
    alpha = jnp.asarray(0.0 if shrinkage is None else shrinkage, dtype=x.dtype)
    c = _cov_kernel(x, alpha, method, shrinkage is not None)
    return NoiseCov(c, nfree=int(data.shape[1]))


def compute_covariance_epochs(
    epochs: Real[ArrayLike, "epoch chan time"] | NestedSequence,
    method: str = "ledoit_wolf",
    shrinkage: RealScalar | None = None,
) -> NoiseCov:
    """Noise covariance pooled over epochs.

    Each epoch's per-channel mean is removed, the samples of all epochs are
    pooled, and the estimator of :func:`compute_covariance` is applied to the
    pooled (already centred) samples with divisor the total number of samples
    ``n_epochs * n_times`` (scikit-learn with ``assume_centered=True``).

    Parameters
    ----------
    epochs : Array, shape (n_epochs, n_chan, n_times), V
    method, shrinkage
        As :func:`compute_covariance`.

    Returns
    -------
    cov : NoiseCov
        ``nfree = n_epochs * n_times`` (an integer array).
    """
    _validate(method, shrinkage)
    check_array("epochs", epochs)
    check_finite("epochs", epochs)
    epochs = jnp.asarray(epochs)
    if epochs.ndim != 3:
        raise ValueError(
            f"epochs must be 3-D (n_epochs, n_chan, n_times), got shape {epochs.shape}."
        )
    if epochs.shape[0] == 0:
        raise ValueError("epochs has 0 epochs: a covariance needs at least one.")
    _check_samples("epochs", epochs.shape[1], epochs.shape[2], " per epoch")
    x = epochs - jnp.mean(epochs, axis=2, keepdims=True)
    x = jnp.transpose(x, (0, 2, 1)).reshape(-1, epochs.shape[1])
    alpha = jnp.asarray(0.0 if shrinkage is None else shrinkage, dtype=x.dtype)
    c = _cov_kernel(x, alpha, method, shrinkage is not None)
    return NoiseCov(c, nfree=int(x.shape[0]))


def check_covariance_values(
    name: str,
    c: Real[ArrayLike, "chan chan"],
    proj: str | None,
    rank: int,
    dtype: DTypeLike,
    *,
    need_rank: bool = True,
    rank_fix: str = "make_inverse_operator",
) -> None:
    """Eager checks of a concrete covariance (NumPy, float64).

    Shared by every function that whitens with (or inverts) a covariance
    (``make_inverse_operator``, ``make_lcmv``). Refuses, with a ``ValueError``
    naming ``name``: an all-zero matrix;
    a non-symmetric one (beyond ``max(1e-6, 64 eps) · max|C|``, ``eps`` of the
    less precise of its dtype and the operator's: never symmetrised silently);
    a clearly negative eigenvalue (below ``−max(1e-6, 10 n eps) · |λ|max``);
    a numerical rank (eigenvalues above ``n eps · λmax``, NumPy's
    ``matrix_rank`` rule, after the average-reference projection when it is
    used; ``λmax`` of the unprojected matrix) below the whitener ``rank``
    (only with ``need_rank``; ``rank_fix`` names the function whose
    ``rank=`` fixes it). Skipped for traced values.
    """
    if not is_concrete(c):
        return
    eps = max(
        np.finfo(np.dtype(d)).eps
        for d in (c.dtype, dtype, np.float64)
        if np.issubdtype(np.dtype(d), np.floating)
    )
    a = np.array(c, dtype=np.float64)  # a copy: the input is never touched
    n = a.shape[0]
    scale = float(np.max(np.abs(a)))
    if scale == 0.0:
        raise ValueError(
            f"{name} is all zero (e.g. estimated from a single sample or from "
            "constant data): it cannot be whitened."
        )
    asym = np.abs(a - a.T)
    tol_sym = max(1e-6, 64 * eps)
    if asym.max() > tol_sym * scale:
        i, j = np.unravel_index(np.argmax(asym), a.shape)
        raise ValueError(
            f"{name} is not symmetric: |C[{i}, {j}] - C[{j}, {i}]| = "
            f"{asym.max():.3g} > {tol_sym:.2g} * max|C| = {tol_sym * scale:.3g}. It is "
            "not symmetrised silently: pass (C + C.T) / 2 if the asymmetry is rounding."
        )
    a = 0.5 * (a + a.T)
    w = np.linalg.eigvalsh(a)
    tol_neg = max(1e-6, 10 * n * eps)
    if w[0] < -tol_neg * np.max(np.abs(w)):
        raise ValueError(
            f"{name} is not positive semi-definite: its smallest eigenvalue is "
            f"{w[0]:.3g} (largest {w[-1]:.3g}); a covariance has no negative "
            "eigenvalues."
        )
    if not need_rank:
        return
    where = ""
    top = float(w[-1])  # the rank is relative to the unprojected covariance
    if proj == "average":
        q = average_reference_basis(n)
        w = np.linalg.eigvalsh(q.T @ a @ q)
        where = " after the average-reference projection"
    top = max(top, float(w[-1]), 0.0)
    num_rank = int(np.sum(w > n * eps * top)) if top > 0 else 0
    if num_rank == 0:
        raise ValueError(f"{name} has no variance left{where}: it cannot be whitened.")
    if num_rank < rank:
        raise ValueError(
            f"{name} has numerical rank {num_rank}{where} but the whitener "
            f"rank is {rank}: pass rank={num_rank} to {rank_fix} (or "
            "estimate the covariance from more samples, or with shrinkage: "
            "method='ledoit_wolf')."
        )


def whitener_rank(
    n_chan: int,
    reference: str | None,
    avg_ref_proj: bool | np.bool_ | None,
    rank: IntScalar | None,
) -> tuple[str | None, int]:
    """Eager: ``(proj, rank)`` of the whitener for ``n_chan`` channels.

    ``avg_ref_proj`` None means "with the average-reference projector when
    the forward is average referenced" (``reference`` ``"average"`` or
    ``"average_proj"``); the full rank is then ``n_chan − 1``. ``rank`` None gives the full rank; an
    integer must lie in [1, full rank]. ``ValueError`` / ``TypeError`` name
    the argument.
    """
    if avg_ref_proj is not None and not isinstance(avg_ref_proj, bool | np.bool_):
        raise TypeError(
            f"avg_ref_proj must be None, True or False, got {avg_ref_proj!r}."
        )
    if avg_ref_proj is None:
        avg_ref_proj = reference in ("average", "average_proj")
    proj = "average" if avg_ref_proj else None
    full = n_chan - 1 if proj else n_chan
    if full == 0:
        raise ValueError(
            "fwd has 1 channel: with the average-reference projector nothing is "
            "left to invert (an average-referenced inverse needs >= 2 channels)."
        )
    rank = as_int("rank", rank, allow_none=True)
    if rank is None:
        rank = full
    if not 1 <= rank <= full:
        raise ValueError(f"rank must be an integer in [1, {full}], got {rank!r}.")
    return proj, int(rank)
