"""Resolution analysis: resolution matrix, point-spread / cross-talk functions, metrics.

The resolution matrix of a linear inverse operator ``K`` (sources x channels) and
a lead field ``G`` (channels x sources) is ``R = K G``. Its columns are the
point-spread functions (PSFs: how a unit source at one location is spread over
the estimate), its rows the cross-talk functions (CTFs: how every true source
leaks into the estimate at one location).

Everything here works on either a dense ``R`` (any array of shape
``(n_orient * n, n)``) or on a :class:`ResolutionOperator`, the factorisation
``R = K G`` of rank ``n_chan``. With the factorisation, PSFs, CTFs and every
metric are streamed in blocks of sources, so ``R`` is never materialised: an
ico-5 free-orientation problem (``R`` of shape 30726 x 10242, 2.5 GB in float64)
needs a few blocks of ``n_orient * n * block_size`` values at a time.

Units: distances are returned in the units of ``src_pos`` (metres for every
exg_jax object). MNE-Python reports the same quantities in centimetres
(it multiplies positions by 100).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Real

from ._numerics import safe_div, safe_norm, safe_sqrt, scale_of
from ._typing import IntScalar, NestedSequence, RealScalar
from ._validate import (
    as_int,
    check_array,
    check_finite,
    check_lambda2,
    check_not_mne,
    check_option,
    check_range,
    check_real_scalar,
    check_type,
    lambda2_error_if,
)
from .forward import ForwardOperator
from .inverse import InverseOperator, as_method, compiled_method
from .kernel import ImagingKernel
from .methods import AbstractInverseMethod

__all__ = [
    "ResolutionOperator",
    "make_resolution_operator",
    "make_resolution_matrix",
    "get_point_spread",
    "get_cross_talk",
    "peak_localisation_error",
    "spatial_spread",
    "relative_amplitude",
    "resolution_metrics",
    "METRICS",
]

METRICS = ("peak_err", "cog_err", "sd_ext", "maxrad_ext", "peak_amp", "sum_amp")
_FUNCTIONS = ("psf", "ctf")


class ResolutionOperator(eqx.Module):
    """The resolution matrix ``R = kernel @ gain``, kept factorised.

    Attributes
    ----------
    kernel : Array, shape (n_orient * n_src, n_chan)
        Inverse kernel (whitener, projector and noise normalisation included);
        rows ordered (s0x, s0y, s0z, s1x, ...) when ``n_orient == 3``.
    gain : Array, shape (n_chan, n_src), V/(A·m)
        Lead field the inverse is applied to (one column per source location:
        fixed orientation, or the free lead field projected on the normals).
    n_orient : int (static)
        Rows of ``R`` per source location (1 or 3).

    Notes
    -----
    ``R`` has rank at most ``n_chan``; storing ``K`` and ``G`` costs
    ``(n_orient + 1) * n_src * n_chan`` values instead of ``n_orient * n_src**2``.
    """

    kernel: Float[Array, "row chan"]
    gain: Float[Array, "chan src"]
    n_orient: int = eqx.field(static=True)

    def __check_init__(self):
        if self.kernel.ndim != 2 or self.gain.ndim != 2:
            raise ValueError(
                f"kernel and gain must be 2-D, got shapes {self.kernel.shape}, {self.gain.shape}."
            )
        if self.kernel.size == 0 or self.gain.size == 0:
            raise ValueError(
                f"kernel and gain must not be empty (0 sources or 0 channels), got "
                f"shapes {self.kernel.shape}, {self.gain.shape}."
            )
        if self.kernel.shape[1] != self.gain.shape[0]:
            raise ValueError(
                f"kernel has {self.kernel.shape[1]} channels but gain has {self.gain.shape[0]}."
            )
        if self.kernel.shape[0] != self.n_orient * self.gain.shape[1]:
            raise ValueError(
                f"kernel has {self.kernel.shape[0]} rows; with n_orient={self.n_orient} and "
                f"{self.gain.shape[1]} sources it needs {self.n_orient * self.gain.shape[1]}."
            )

    @property
    def n_src(self) -> int:
        return int(self.gain.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.kernel.shape[0]), int(self.gain.shape[1]))

    def dense(self) -> Float[Array, "row src"]:
        """Materialise ``R`` (shape ``(n_orient * n_src, n_src)``)."""
        return self.kernel @ self.gain


# ---------------------------------------------------------------------------
# Shapes and orientation handling
# ---------------------------------------------------------------------------


def _n_orient_of(R) -> int:
    """Rows per location of a dense ``(k n, n)`` matrix or an operator."""
    if isinstance(R, ResolutionOperator):
        return R.n_orient
    n_rows, n_cols = R.shape
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"R (the resolution matrix) is empty: shape {R.shape}.")
    if n_rows < n_cols or n_rows % n_cols:
        raise ValueError(
            f"The resolution matrix must have shape (n_orient * n, n); got {R.shape} "
            f"({n_rows} rows is not a positive multiple of {n_cols} columns)."
        )
    return n_rows // n_cols


def _check_matrix(R):
    if isinstance(R, ResolutionOperator):
        check_finite("kernel", R.kernel)
        check_finite("gain", R.gain)
        return R
    check_not_mne("R", R, "a resolution matrix (array) or a ResolutionOperator")
    check_array("R", R)
    R = jnp.asarray(R)
    if R.ndim != 2:
        raise ValueError(f"R (the resolution matrix) must be 2-D, got shape {R.shape}.")
    _n_orient_of(R)
    check_finite("R", R)
    return R


def _combine_orient(A, n_orient: int):
    """Euclidean norm over the orientation rows: ``(k n, b) -> (n, b)``."""
    if n_orient == 1:
        return A
    n = A.shape[0] // n_orient
    A3 = A.reshape(n, n_orient, A.shape[1])
    # scale-free (R of dSPM / sLORETA is ≈ 1e9 and more in SI units), with a
    # finite gradient at 0 and NaN propagated
    return safe_norm(A3, axis=1)


def _check_idx(idx, n: int):
    if isinstance(idx, bool | np.bool_ | str | bytes) or idx is None:
        raise TypeError(
            f"idx must be an integer or a 1-D array of integers, got {idx!r}."
        )
    arr = np.atleast_1d(np.asarray(idx))
    if arr.ndim == 1 and arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"idx must be an integer or a 1-D array of integers, got dtype {arr.dtype}."
        )
    if arr.ndim != 1:
        raise ValueError(
            f"idx must be an integer or a 1-D array of integers, got {idx!r}."
        )
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise ValueError(f"idx must lie in [0, {n}), got {idx!r}.")
    return jnp.asarray(arr % n if arr.size else arr.astype(np.int32))


# ---------------------------------------------------------------------------
# Building R = K G
# ---------------------------------------------------------------------------

_FWD_ORIS = ("normal", "free")


def _forward_columns(gain, src_nn, n_orient_fwd, fwd_ori):
    """Lead field used as the 'true sources': (n_chan, n) or (n_chan, 3 n)."""
    if n_orient_fwd == 1 or fwd_ori == "free":
        return gain
    n_chan = gain.shape[0]
    g3 = gain.reshape(n_chan, -1, 3)
    return jnp.einsum("cnk,nk->cn", g3, src_nn)


@eqx.filter_jit
def _operator_factors(inv, gain, src_nn, lambda2, method, n_orient_fwd, fwd_ori):
    lambda2 = lambda2_error_if(lambda2)  # survives jit / vmap (≤ 0, NaN, Inf)
    pick_ori = "vector" if inv.n_orient == 3 else None
    k = method.kernel(inv, lambda2, pick_ori)
    cols = _forward_columns(gain, src_nn, n_orient_fwd, fwd_ori)
    return k.rows_normalised(), cols, k.status


@eqx.filter_jit
def _kernel_factors(k, gain, src_nn, n_orient_fwd, fwd_ori):
    return k.rows_normalised(), _forward_columns(gain, src_nn, n_orient_fwd, fwd_ori)


def _build_factors(inv, fwd, lambda2, method, fwd_ori):
    check_type(
        "inv",
        inv,
        (InverseOperator, ImagingKernel),
        "an InverseOperator (from make_inverse_operator) or an ImagingKernel",
    )
    check_type("fwd", fwd, ForwardOperator, "a ForwardOperator")
    check_option("fwd_ori", fwd_ori, _FWD_ORIS)
    is_kernel = isinstance(inv, ImagingKernel)
    if not is_kernel:
        method = as_method(method)
    what = "kernel" if is_kernel else "inv"
    if fwd.n_chan != inv.n_chan:
        raise ValueError(
            f"fwd has {fwd.n_chan} channels but {what} has {inv.n_chan}; they must match."
        )
    if fwd.n_src != inv.n_src:
        raise ValueError(f"fwd has {fwd.n_src} sources but {what} has {inv.n_src}.")
    if fwd.n_orient == 3 and fwd_ori == "normal" and fwd.src_nn is None:
        raise ValueError(
            "fwd_ori='normal' needs source normals (fwd.src_nn is None); pass fwd_ori='free'."
        )
    own = inv.kernel if is_kernel else inv.eigen_leads
    dtype = jnp.result_type(own.dtype, fwd.gain.dtype)
    if not is_kernel:
        check_lambda2(lambda2, dtype)
    gain = jnp.asarray(fwd.gain, dtype)
    src_nn = None if fwd.src_nn is None else jnp.asarray(fwd.src_nn, dtype)
    if is_kernel:
        return _kernel_factors(inv, gain, src_nn, fwd.n_orient, fwd_ori)
    lam = jnp.asarray(lambda2, dtype)
    kern, cols, status = _operator_factors(
        inv,
        gain,
        src_nn,
        lam,
        compiled_method(method, inv, gain, lam),
        fwd.n_orient,
        fwd_ori,
    )
    method.check(status)
    return kern, cols


def make_resolution_operator(
    inv: InverseOperator | ImagingKernel,
    fwd: ForwardOperator,
    lambda2: RealScalar = 1.0 / 9.0,
    method: str | AbstractInverseMethod = "dSPM",
    *,
    fwd_ori: str = "normal",
) -> ResolutionOperator:
    """The resolution matrix ``R = K G`` of an inverse method, kept factorised.

    Parameters
    ----------
    inv : InverseOperator or ImagingKernel
        Inverse operator (fixed or free orientation), or any method's imaging
        kernel (``exg_jax.imaging_kernel(...)``, an LCMV's
        ``filters.imaging_kernel()``): then ``lambda2`` and ``method`` are
        not used.
    fwd : ForwardOperator
        Forward model whose sources are the "true" sources (same channels as
        ``inv``). A fixed forward is used as is. A free forward is reduced to
        one column per location along its normals ``fwd.src_nn``
        (``fwd_ori="normal"``), or kept with its 3 Cartesian columns
        (``fwd_ori="free"``).
    lambda2 : float
        Regularisation λ² = 1 / SNR² (SNR of the amplitude: 1/9 for SNR 3).
    method : AbstractInverseMethod or {"MNE", "dSPM", "sLORETA", "eLORETA"}
        A method object or MNE's string (see :func:`exg_jax.apply_inverse`).
        eLORETA's weights are fitted for this ``lambda2``; non-convergence
        raises a ``RuntimeError`` unless ``eLORETA(throw=False)`` (then a
        warning).
    fwd_ori : {"normal", "free"}
        How a free forward is used (ignored for a fixed one).

    Returns
    -------
    op : ResolutionOperator
        ``kernel``: the inverse kernel, (n_orient_inv * n, n_chan), rows
        Cartesian (x, y, z) per source for a free inverse, whitener and the
        noise normalisation included; ``gain``: (n_chan, n) or (n_chan, 3 n).
        ``op.dense()`` is MNE-Python's resolution matrix.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.make_inverse_resolution_matrix(fwd_mne,
    inv_mne, method, lambda2)`` with ``fwd_mne`` the fixed, surface-oriented
    forward (``convert_forward_solution(surf_ori=True, force_fixed=True)``):
    a free inverse then gives shape ``(3 n, n)``. MNE-Python with a free
    forward corresponds to ``fwd_ori="free"``, shape ``(3 n, 3 n)``. MNE-Python
    does not accept eLORETA there; here its kernel is built like the others.
    The normal lead field of source ``i`` is ``G[:, 3i:3i+3] @ nn_i``.
    """
    kern, gain = _build_factors(inv, fwd, lambda2, method, fwd_ori)
    n_rows, n_cols = kern.shape[0], gain.shape[1]
    if n_rows < n_cols or n_rows % n_cols:
        raise ValueError(
            f"R would have shape ({n_rows}, {n_cols}), not (n_orient * n, n): use "
            "make_resolution_matrix for a fixed inverse with fwd_ori='free'."
        )
    return ResolutionOperator(kernel=kern, gain=gain, n_orient=n_rows // n_cols)


def make_resolution_matrix(
    inv: InverseOperator | ImagingKernel,
    fwd: ForwardOperator,
    lambda2: RealScalar = 1.0 / 9.0,
    method: str | AbstractInverseMethod = "dSPM",
    *,
    fwd_ori: str = "normal",
) -> Float[Array, "row src"]:
    """The dense resolution matrix ``R = K G`` (see :func:`make_resolution_operator`).

    Returns
    -------
    R : Array, shape (n_orient_inv * n, n) (``fwd_ori="free"``: (n_orient_inv * n, 3 n))
        Columns are point-spread functions, rows cross-talk functions.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.make_inverse_resolution_matrix``; for
    large source spaces use :func:`make_resolution_operator`, which every
    function of this module accepts without materialising ``R``.
    """
    kern, gain = _build_factors(inv, fwd, lambda2, method, fwd_ori)
    return kern @ gain


# ---------------------------------------------------------------------------
# PSFs and CTFs
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_orient",))
def _psf_kernel(K, G, idx, *, n_orient):
    return _combine_orient(K @ G[:, idx], n_orient)


@functools.partial(jax.jit, static_argnames=("n_orient",))
def _psf_dense_kernel(R, idx, *, n_orient):
    return _combine_orient(R[:, idx], n_orient)


def _rows_of(idx, n_orient):
    return (idx[:, None] * n_orient + jnp.arange(n_orient)[None, :]).reshape(-1)


@functools.partial(jax.jit, static_argnames=("n_orient",))
def _ctf_kernel(K, G, idx, *, n_orient):
    return (K[_rows_of(idx, n_orient)] @ G).T


@functools.partial(jax.jit, static_argnames=("n_orient",))
def _ctf_dense_kernel(R, idx, *, n_orient):
    return R[_rows_of(idx, n_orient)].T


def get_point_spread(
    R: Real[ArrayLike, "row src"] | NestedSequence | ResolutionOperator,
    idx: IntScalar | Int[ArrayLike, " idx"] | NestedSequence,
) -> Real[Array, "src idx"]:
    """Point-spread functions (columns of the resolution matrix) of some sources.

    Parameters
    ----------
    R : Array, shape (n_orient * n, n), or ResolutionOperator
        Resolution matrix (dense or factorised).
    idx : int or Array of int, shape (n_idx,)
        Source locations whose PSFs are wanted.

    Returns
    -------
    psf : Array, shape (n, n_idx)
        One PSF per column. With ``n_orient > 1`` the components at each
        location are combined by their Euclidean norm.

    Notes
    -----
    Equivalent to the data of ``mne.minimum_norm.get_point_spread(resmat, src,
    idx, mode=None, norm=None)`` (one location per index). For a
    ``ResolutionOperator`` only ``G[:, idx]`` is multiplied by ``K``.
    """
    R = _check_matrix(R)
    n_orient = _n_orient_of(R)
    n = R.shape[1]
    idx = _check_idx(idx, n)
    if isinstance(R, ResolutionOperator):
        return _psf_kernel(R.kernel, R.gain, idx, n_orient=n_orient)
    return _psf_dense_kernel(R, idx, n_orient=n_orient)


def get_cross_talk(
    R: Real[ArrayLike, "row src"] | NestedSequence | ResolutionOperator,
    idx: IntScalar | Int[ArrayLike, " idx"] | NestedSequence,
) -> Real[Array, "src idx_orient"]:
    """Cross-talk functions (rows of the resolution matrix) of some sources.

    Parameters
    ----------
    R : Array, shape (n_orient * n, n), or ResolutionOperator
        Resolution matrix (dense or factorised).
    idx : int or Array of int, shape (n_idx,)
        Source locations whose CTFs are wanted.

    Returns
    -------
    ctf : Array, shape (n, n_orient * n_idx)
        One CTF per column: for each index, the rows of its ``n_orient``
        components in order (x, y, z), as MNE-Python returns them.

    Notes
    -----
    Equivalent to the data of ``mne.minimum_norm.get_cross_talk(resmat, src,
    idx, mode=None, norm=None)``. For a ``ResolutionOperator`` only the rows
    ``K[idx]`` are multiplied by ``G``.
    """
    R = _check_matrix(R)
    n_orient = _n_orient_of(R)
    n = R.shape[1]
    idx = _check_idx(idx, n)
    if isinstance(R, ResolutionOperator):
        return _ctf_kernel(R.kernel, R.gain, idx, n_orient=n_orient)
    return _ctf_dense_kernel(R, idx, n_orient=n_orient)


# ---------------------------------------------------------------------------
# Streaming per-function statistics
# ---------------------------------------------------------------------------


_NEEDS = {
    "imax": ("imax",),
    "amax": ("amax",),
    "asum": ("asum",),
    "peak_err": ("imax", "peak_err"),
    "cog_err": ("asum", "cog_err"),
    "sd_ext": ("sd_ext",),
    "maxrad_ext": ("amax", "above", "maxrad_ext"),
    "maxrad_ext_mne": ("amax", "above", "maxrad_ext_mne"),
    "n_above": ("amax", "above", "n_above"),
    "peak_amp": ("amax",),
    "sum_amp": ("asum",),
    "rel_amp": ("amax", "asum"),
}


def _column_stats(A, j, pos, threshold, wanted):
    """Statistics of the functions in the columns of ``A`` (n, b).

    ``j`` (b,) are the true source indices of the columns, ``pos`` (n, 3) the
    source positions (centred: the metrics are translation invariant and the
    expanded squared distances below lose less precision), ``wanted`` a
    static tuple of statistic names. Returns a dict of (b,) arrays.
    """
    need = {k for w in wanted for k in _NEEDS[w]}
    a = jnp.abs(A)
    pj = pos[j]
    nan = jnp.asarray(jnp.nan, dtype=a.dtype)
    out = {}
    if "imax" in need:
        imax = jnp.argmax(a, axis=0)
        out["imax"] = imax
        out["peak_err"] = safe_sqrt(jnp.sum((pj - pos[imax]) ** 2, axis=1))
    if "amax" in need:
        out["amax"] = jnp.max(a, axis=0)
    if "asum" in need:
        out["asum"] = jnp.sum(a, axis=0)
    if "cog_err" in need:
        cog = safe_div(a.T @ pos, out["asum"][:, None], nan)
        out["cog_err"] = safe_sqrt(jnp.sum((pj - cog) ** 2, axis=1))
    pp = jnp.sum(pos * pos, axis=1)
    if "sd_ext" in need:
        # sum_i |p_i - p_j|² a_ij² = pp·a² + |p_j|² Σa² - 2 p_j·(posᵀ a²): matmuls only.
        # on |A| / max |A| per column (the extent is scale-invariant; the
        # squares of unscaled dSPM values leave float32's range)
        an = a / scale_of(a, axis=0, keepdims=True)
        a2 = an * an
        s2 = jnp.sum(a2, axis=0)
        num = (
            pp @ a2
            + jnp.sum(pj * pj, axis=1) * s2
            - 2 * jnp.sum(pj * (a2.T @ pos), axis=1)
        )
        out["sd_ext"] = safe_sqrt(safe_div(jnp.maximum(num, 0), s2, nan))
    if "above" in need:
        above = a > threshold * out["amax"]
        if "maxrad_ext" in need:
            d2 = (
                (pos[:, 0:1] - pj[None, :, 0]) ** 2
                + (pos[:, 1:2] - pj[None, :, 1]) ** 2
                + (pos[:, 2:3] - pj[None, :, 2]) ** 2
            )
            out["maxrad_ext"] = safe_sqrt(jnp.max(jnp.where(above, d2, 0), axis=0))
        if "n_above" in need:
            out["n_above"] = jnp.sum(above, axis=0)
        if "maxrad_ext_mne" in need:
            # MNE-Python 1.13's ``maxrad_ext`` sums the squared offsets over the
            # suprathreshold sources per coordinate axis and takes the largest axis.
            axis_sums = jnp.stack(
                [
                    jnp.sum(
                        jnp.where(above, (pos[:, c : c + 1] - pj[None, :, c]) ** 2, 0),
                        axis=0,
                    )
                    for c in range(3)
                ]
            )
            out["maxrad_ext_mne"] = safe_sqrt(
                jnp.max(jnp.maximum(axis_sums, 0), axis=0)
            )
    return {k: out[k] for k in wanted if k in out}


def _block_getter(R, function, n_orient, b):
    """A function ``start -> (n, b)`` block of (orientation-combined) functions."""
    dense = not isinstance(R, ResolutionOperator)

    if function == "psf":

        def get(start):
            if dense:
                cols = jax.lax.dynamic_slice_in_dim(R, start, b, axis=1)
            else:
                cols = R.kernel @ jax.lax.dynamic_slice_in_dim(R.gain, start, b, axis=1)
            return _combine_orient(cols, n_orient)

    else:

        def get(start):
            if dense:
                rows = jax.lax.dynamic_slice_in_dim(
                    R, start * n_orient, b * n_orient, axis=0
                )
            else:
                k = jax.lax.dynamic_slice_in_dim(
                    R.kernel, start * n_orient, b * n_orient, axis=0
                )
                rows = k @ R.gain
            if n_orient > 1:
                rows = _combine_orient(rows, n_orient)
            return rows.T

    return get


@functools.partial(
    jax.jit, static_argnames=("function", "n_orient", "block_size", "wanted")
)
def _all_stats(R, pos, threshold, *, function, n_orient, block_size, wanted):
    n = R.shape[1]
    pos = pos - jnp.mean(pos, axis=0)
    keys = tuple(sorted({k for w in wanted for k in _NEEDS[w]} & set(_NEEDS)))
    base = tuple(k for k in keys if k not in ("peak_amp", "sum_amp", "rel_amp"))
    b = min(block_size, n)
    n_blocks = -(-n // b)
    # Blocks never run past the end: the last one is shifted back and overlaps
    # its neighbour (identical values are written twice).
    starts = jnp.minimum(jnp.arange(n_blocks) * b, n - b)
    get = _block_getter(R, function, n_orient, b)

    def one(start):
        j = start + jnp.arange(b)
        return _column_stats(get(start), j, pos, threshold, base)

    if n_blocks == 1:
        out = one(jnp.asarray(0))
    else:
        stats = jax.lax.map(one, starts)
        where = (starts[:, None] + jnp.arange(b)[None, :]).reshape(-1)
        out = {}
        for key, val in stats.items():
            flat = val.reshape(-1)
            out[key] = jnp.zeros((n,), flat.dtype).at[where].set(flat)
    nan = jnp.asarray(jnp.nan, dtype=pos.dtype)
    if "peak_amp" in wanted:
        out["peak_amp"] = safe_div(out["amax"], jnp.max(out["amax"]), nan)
    if "sum_amp" in wanted:
        out["sum_amp"] = safe_div(out["asum"], jnp.max(out["asum"]), nan)
    if "rel_amp" in wanted:
        out["rel_amp"] = safe_div(out["amax"], out["asum"], nan)
    return {k: out[k] for k in wanted}


def _stats(R, src_pos, function, threshold, block_size, wanted):
    check_option("function", function, _FUNCTIONS)
    R = _check_matrix(R)
    n_orient = _n_orient_of(R)
    n = R.shape[1]
    if src_pos is None:
        pos = jnp.zeros(
            (n, 3), dtype=(R.kernel if isinstance(R, ResolutionOperator) else R).dtype
        )
    else:
        check_array("src_pos", src_pos)
        pos = jnp.asarray(src_pos)
        if pos.shape != (n, 3):
            raise ValueError(f"src_pos must have shape ({n}, 3), got {pos.shape}.")
        check_finite("src_pos", pos)
    check_real_scalar("threshold", threshold)
    check_range("threshold", threshold, 0.0, 1.0)
    block_size = as_int("block_size", block_size, minimum=1)
    return _all_stats(
        R,
        pos,
        threshold,
        function=function,
        n_orient=n_orient,
        # Normalised so that equivalent calls share one compilation.
        block_size=min(block_size, n),
        wanted=tuple(sorted(set(wanted))),
    )


# ---------------------------------------------------------------------------
# Public metrics
# ---------------------------------------------------------------------------


def peak_localisation_error(
    R: Real[ArrayLike, "row src"] | NestedSequence | ResolutionOperator,
    function: str = "psf",
    *,
    block_size: IntScalar = 256,
) -> Int[Array, " src"]:
    """Index offset of each PSF's (or CTF's) peak from its own source.

    Parameters
    ----------
    R : Array, shape (n_orient * n, n), or ResolutionOperator
        Resolution matrix (dense or factorised; orientations are combined by
        their Euclidean norm per location).
    function : {"psf", "ctf"}
        Columns (point-spread) or rows (cross-talk) of ``R``.
    block_size : int
        Sources per streamed block.

    Returns
    -------
    offset : Array of int, shape (n,)
        ``argmax_i |f_j(i)| - j``: zero where the function of source ``j``
        peaks on ``j`` itself (ties: the first maximum, as ``numpy.argmax``).
    """
    st = _stats(R, None, function, 0.5, block_size, ("imax",))
    return st["imax"] - jnp.arange(st["imax"].shape[0])


def spatial_spread(
    R: Real[ArrayLike, "row src"] | NestedSequence | ResolutionOperator,
    function: str = "psf",
    *,
    threshold: RealScalar = 0.5,
    block_size: IntScalar = 256,
) -> Int[Array, " src"]:
    """Number of sources where each function exceeds ``threshold`` times its peak.

    Parameters
    ----------
    R : Array, shape (n_orient * n, n), or ResolutionOperator
    function : {"psf", "ctf"}
    threshold : float in [0, 1]
        Fraction of the peak absolute amplitude (strictly above counts).
    block_size : int

    Returns
    -------
    count : Array of int, shape (n,)
        1 for a perfectly focal function, ``n`` for a flat one.
    """
    return _stats(R, None, function, threshold, block_size, ("n_above",))["n_above"]


def relative_amplitude(
    R: Real[ArrayLike, "row src"] | NestedSequence | ResolutionOperator,
    function: str = "psf",
    *,
    block_size: IntScalar = 256,
) -> Float[Array, " src"]:
    """Peak absolute amplitude of each function divided by its total absolute amplitude.

    Parameters
    ----------
    R : Array, shape (n_orient * n, n), or ResolutionOperator
    function : {"psf", "ctf"}
    block_size : int

    Returns
    -------
    ratio : Array, shape (n,)
        ``max_i |f_j(i)| / sum_i |f_j(i)|`` in (0, 1]; 1 for a focal
        function, NaN for an identically zero one.
    """
    return _stats(R, None, function, 0.5, block_size, ("rel_amp",))["rel_amp"]


def resolution_metrics(
    R: Real[ArrayLike, "row src"] | NestedSequence | ResolutionOperator,
    src_pos: Real[ArrayLike, "src 3"] | NestedSequence,
    function: str = "psf",
    metric: str | Sequence[str] = "peak_err",
    *,
    threshold: RealScalar = 0.5,
    block_size: IntScalar = 256,
    mne_compat: bool | np.bool_ = False,
) -> Float[Array, " src"] | dict[str, Float[Array, " src"]]:
    """Spatial resolution metrics of point-spread or cross-talk functions.

    Parameters
    ----------
    R : Array, shape (n_orient * n, n), or ResolutionOperator
        Resolution matrix, dense or factorised (``R = K G``; then it is
        streamed in blocks and never materialised). With ``n_orient > 1``
        (a free inverse applied to a fixed-orientation forward) the
        components at each location are combined by their Euclidean norm
        first, for every metric.
    src_pos : Array, shape (n, 3)
        Source positions; distances come back in the same units (metres for
        exg_jax objects; MNE-Python reports centimetres).
    function : {"psf", "ctf"}
        Metrics of the columns (PSFs) or of the rows (CTFs).
    metric : str or sequence of str
        One or several of

        - ``"peak_err"``: distance between the source and the peak of its function;
        - ``"cog_err"``: distance between the source and the centre of gravity of
          the absolute function;
        - ``"sd_ext"``: spatial deviation, ``sqrt(sum_i d_ij² f_j(i)² / sum_i f_j(i)²)``
          (Molins et al. 2008, eq. 12);
        - ``"maxrad_ext"``: largest distance from the source to a location where
          ``|f_j| > threshold * max |f_j|``;
        - ``"peak_amp"``: peak absolute amplitude over the largest one across sources;
        - ``"sum_amp"``: summed absolute amplitude over the largest one across sources.
    threshold : float in [0, 1]
        Amplitude fraction for ``"maxrad_ext"``.
    block_size : int
        Sources per streamed block (memory ~ ``n_orient * n * block_size``
        values per block).
    mne_compat : bool
        If True, ``"maxrad_ext"`` reproduces MNE-Python 1.13's computation
        instead of the maximum radius (see Notes). Other metrics are unaffected.

    Returns
    -------
    values : Array, shape (n,), or dict of them when ``metric`` is a sequence

    Notes
    -----
    Equivalent to ``mne.minimum_norm.resolution_metrics`` (its private
    ``_localisation_error``, ``_spatial_extent`` and ``_relative_amplitude``)
    for any source locations, with distances in the units of ``src_pos``
    instead of centimetres. MNE-Python combines orientations only for the
    localisation errors; its extent and amplitude metrics index a non-square
    matrix inconsistently, so here the combined matrix is used throughout.
    A function that is identically zero gives NaN for ``cog_err`` and
    ``sd_ext`` (0/0, as in MNE-Python).

    ``maxrad_ext``: MNE-Python documents "maximum radius to 50% of max
    amplitude", which is what is returned here. Its code
    (``_spatial_extent``) indexes ``locations[np.where(...), :]``, which adds a
    leading axis, so its ``sum(..., 1)`` runs over the suprathreshold sources
    rather than the coordinates: it returns
    ``sqrt(max_c sum_{i: |f_j(i)| > t max|f_j|} (x_ic - x_jc)²)``. Pass
    ``mne_compat=True`` to get that quantity (for comparison with published
    MNE-Python numbers).

    All metrics are computed in one pass over blocks of ``block_size``
    functions (``jax.lax.map``); ``peak_amp`` and ``sum_amp`` are normalised
    after the pass.
    """
    if isinstance(metric, str):
        metrics = (metric,)
    else:
        try:
            metrics = tuple(metric)
        except TypeError:
            raise TypeError(
                f"metric must be a str or a sequence of str, got {metric!r}."
            ) from None
    for m in metrics:
        check_option("metric", m, METRICS)
    if not isinstance(mne_compat, bool | np.bool_):
        raise TypeError(f"mne_compat must be True or False, got {mne_compat!r}.")
    if src_pos is None:
        raise ValueError("src_pos is required (shape (n, 3)).")
    key = {"maxrad_ext": "maxrad_ext_mne"} if mne_compat else {}
    st = _stats(
        R, src_pos, function, threshold, block_size, [key.get(m, m) for m in metrics]
    )
    out = {m: st[key.get(m, m)] for m in metrics}
    return out[metric] if isinstance(metric, str) else out
