"""The LCMV beamformer (``make_lcmv``, ``apply_lcmv``): an inverse method in one module.

A linearly constrained minimum-variance (LCMV) beamformer (Van Veen et al.
1997) builds, for every source, the spatial filter that passes the source's
lead field with unit gain and minimises the variance of its output for the
measured data covariance. The filters follow MNE-Python's
``mne.beamformer.make_lcmv`` (``_prepare_beamformer_input`` and
``_compute_beamformer``): whitening by the noise covariance (with the EEG
average-reference projector), diagonal loading relative to the trace, the
``"normal"`` / ``"max-power"`` / ``"vector"`` orientations and the
unit-noise-gain / NAI weight normalisations.

The result, :class:`LcmvFilters`, is turned into an
:class:`~exg_jax.ImagingKernel` (:meth:`LcmvFilters.imaging_kernel`), which is
what :func:`~exg_jax.apply_imaging_kernel` and the resolution functions take:
nothing in :mod:`exg_jax.inverse` knows about beamformers.

Like the rest of the library, every stage is a pure, jit-compiled function of
arrays, differentiable w.r.t. the forward gain, both covariances, ``reg`` and
``depth``, and it computes in the caller's dtype (float32 works in SI units:
the whitened gain and the whitened covariance are divided by constants before
they are multiplied or inverted).
"""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from ._numerics import combine_xyz, safe_div, safe_norm, scale_of
from ._typing import IntScalar, NestedSequence, RealScalar
from ._validate import (
    all_zero,
    as_int,
    check_array,
    check_finite,
    check_not_mne,
    check_option,
    check_real_scalar,
    check_sensor_data,
    check_type,
    is_concrete,
)
from .covariance import NoiseCov, check_covariance_values, whitener_rank
from .forward import ForwardOperator
from .kernel import ImagingKernel, apply_prepared_jit
from .linalg import (
    _whitener_kernel,
    eigh_sorted,
    inv_sqrtm_sym,
    sqrtm_sym,
    svd_thin,
)
from .resolution import make_resolution_matrix
from .source_estimate import SourceEstimate

__all__ = [
    "LcmvFilters",
    "apply_lcmv",
    "apply_lcmv_cov",
    "apply_lcmv_epochs",
    "make_lcmv",
    "make_lcmv_resolution_matrix",
]

PICK_ORIS = (None, "normal", "max-power", "vector")
WEIGHT_NORMS = (None, "unit-noise-gain", "nai", "unit-noise-gain-invariant")
INVERSIONS = ("matrix", "single")
#: MNE refuses a source whose whitened 3-column lead field has a singular-value
#: ratio s_min / s_max below this (unless ``reduce_rank=True``).
SINGULAR_RATIO = 1e-6


class LcmvFilters(eqx.Module):
    """LCMV spatial filters (MNE-Python's ``Beamformer``), whitener folded in.

    Attributes
    ----------
    weights : Array, shape (n_src * n_orient, n_chan)
        Spatial filters: ``weights @ data`` (data in V, unprojected: the
        average-reference projector and the noise whitener are part of the
        weights) is the source estimate before the orientation combination.
        Units: A·m/V for ``weight_norm=None`` (times the depth weight
        ``d_k^(depth/2)`` when ``depth`` was given, as MNE); 1/V (output in
        units of the noise std) for the weight-normalised filters. For
        ``n_orient = 3`` the rows are Cartesian (x, y, z) per source.
    src_pos : Array, shape (n_src, 3), m
    max_power_ori : Array, shape (n_src, 3), or None
        Unit orientation of maximal power (Cartesian), for
        ``pick_ori="max-power"``; None otherwise.
    n_orient : int (static)
        Rows per source: 3 for a free forward with ``pick_ori`` None or
        ``"vector"``, else 1.
    pick_ori : {None, "normal", "max-power", "vector"} (static)
    weight_norm : {None, "unit-noise-gain", "nai", "unit-noise-gain-invariant"} (static)
    rank : int (static)
        Rank of the whitener and of the data-covariance inverse.
    """

    weights: Float[Array, "row chan"]
    src_pos: Float[Array, "src 3"]
    max_power_ori: Float[Array, "src 3"] | None
    n_orient: int = eqx.field(static=True)
    pick_ori: str | None = eqx.field(static=True, default=None)
    weight_norm: str | None = eqx.field(static=True, default="unit-noise-gain")
    rank: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        if self.n_orient not in (1, 3):
            raise ValueError(f"n_orient must be 1 or 3, got {self.n_orient!r}.")
        check_option("pick_ori", self.pick_ori, PICK_ORIS)
        check_option("weight_norm", self.weight_norm, WEIGHT_NORMS)
        if self.weights.ndim != 2:
            raise ValueError(
                f"weights must be 2-D (n_src * n_orient, n_chan), got shape "
                f"{self.weights.shape}."
            )
        n_src = self.src_pos.shape[-2]
        if self.weights.shape[0] != self.n_orient * n_src:
            raise ValueError(
                f"weights has {self.weights.shape[0]} rows but {n_src} sources with "
                f"n_orient={self.n_orient} need {self.n_orient * n_src}."
            )

    @property
    def n_src(self) -> int:
        return int(self.src_pos.shape[-2])

    @property
    def n_chan(self) -> int:
        return int(self.weights.shape[-1])

    def imaging_kernel(self) -> ImagingKernel:
        """The filters as an :class:`~exg_jax.ImagingKernel` (method ``"LCMV"``).

        ``pick_ori=None`` with 3 rows per source gives the norm
        ``√(x² + y² + z²)`` per source (MNE's ``combine_xyz``), ``"vector"``
        the three components; one row per source is reported as is.
        """
        return ImagingKernel(
            kernel=self.weights,
            noise_norm=None,
            src_pos=self.src_pos,
            n_orient=self.n_orient,
            pick_ori=self.pick_ori,
            method="LCMV",
        )


# --------------------------------------------------------------------------- #
# Small batched linear algebra (3 x 3 blocks, the data-covariance inverse)
# --------------------------------------------------------------------------- #
def _sym(a):
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _kept(w):
    """Eigenvalues (ascending, batched) above ``10 ε`` times the largest."""
    tol = 10 * jnp.finfo(w.dtype).eps
    largest = jnp.maximum(w[..., -1:], jnp.finfo(w.dtype).tiny)
    return w > tol * largest


def _recip_kept(w, keep):
    return jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)


@jax.custom_jvp
def _pinvh(a):
    """Pseudo-inverse of symmetric PSD matrices (…, n, n), batched.

    Eigenvalues at or below ``10 ε`` times the largest are dropped. The
    derivative uses the Daleckii–Krein divided differences of ``1/w``
    (``−1/(wᵢ wⱼ)`` for two kept eigenvalues: exact for repeated ones, which a
    loaded covariance has many of; the plain quotient for a kept and a
    dropped one; 0 for two dropped ones).
    """
    w, v = jnp.linalg.eigh(a)
    fw = _recip_kept(w, _kept(w))
    return (v * fw[..., None, :]) @ jnp.swapaxes(v, -1, -2)


@_pinvh.defjvp
def _pinvh_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    w, v = jnp.linalg.eigh(a)
    keep = _kept(w)
    fw = _recip_kept(w, keep)
    ki, kj = keep[..., :, None], keep[..., None, :]
    fi, fj = fw[..., :, None], fw[..., None, :]
    dw = w[..., :, None] - w[..., None, :]
    mixed = (ki != kj) & (dw != 0)
    quot = (fi - fj) / jnp.where(mixed, dw, 1.0)
    g = jnp.where(ki & kj, -fi * fj, jnp.where(mixed, quot, 0.0))
    vt = jnp.swapaxes(v, -1, -2)
    out = (v * fw[..., None, :]) @ vt
    return out, v @ (g * (vt @ _sym(da) @ v)) @ vt


def _block_inv(x, reduce_rank, inversion):
    """Pseudo-inverse of each (n_o, n_o) block of ``x`` (n_src, n_o, n_o).

    MNE's ``_sym_inv_sm``: a 1 x 1 block is inverted (a zero block, whose
    numerator is zero too, gives 0); ``"single"`` inverts the diagonal only; ``"matrix"`` is the symmetric pseudo-inverse,
    without the smallest eigenvalue when ``reduce_rank``.
    """
    n_o = x.shape[-1]
    if n_o == 1:
        return safe_div(jnp.ones_like(x), x)
    if inversion == "single":
        d = jnp.diagonal(x, axis1=-2, axis2=-1)
        return jnp.eye(n_o, dtype=x.dtype) * safe_div(jnp.ones_like(d), d)[..., None, :]
    if reduce_rank:
        w, v = eigh_sorted(x)
        w, v = w[..., :-1], v[..., :, :-1]
        tol = 10 * jnp.finfo(x.dtype).eps * jnp.abs(w[..., :1])
        inv_w = jnp.where(w > tol, 1.0 / jnp.where(w > tol, w, 1.0), 0.0)
        return (v * inv_w[..., None, :]) @ jnp.swapaxes(v, -1, -2)
    return _pinvh(x)


def _reduce_block_rank(gk):
    """Drop the smallest singular value of each (n_white, 3) block (MNE's reduce_rank)."""

    def one(g):
        u, s, vt = svd_thin(g)
        return (u[:, :-1] * s[:-1]) @ vt[:-1]

    return jax.vmap(one)(gk)


def _top_eigvec(s):
    """Unit eigenvector of the largest eigenvalue of symmetric (…, 3, 3) blocks."""
    return eigh_sorted(s)[1][..., :, 0]


# --------------------------------------------------------------------------- #
# Pure kernel
# --------------------------------------------------------------------------- #
class _Whitened(eqx.Module):
    """The whitened problem shared by every LCMV variant (see :func:`_whiten`)."""

    white: Array  # (r, n_chan) whitener, 1/V
    gs: Array  # (r, n_cols) whitened gain / g
    g: Array  # () scale of the whitened gain (constant for differentiation)
    cinv: Array  # (r, r) pseudo-inverse of the loaded whitened data cov / cs
    cw: Array  # (r, r) whitened data covariance / cs
    cs: Array  # () scale of the whitened data covariance (constant)
    loading: Array  # () diagonal loading, in units of cs


@partial(jax.jit, static_argnames=("proj", "rank"))
def _whiten(gain, data_cov, noise_cov, reg, *, proj, rank):
    """Whiten the gain and the data covariance; load and invert the latter.

    The part of :func:`make_lcmv` that does not depend on the orientation,
    the weight normalisation or the inversion (compiled once per problem).
    MNE's ``_prepare_beamformer_input`` and the start of
    ``_compute_beamformer``.
    """
    n_chan = gain.shape[0]
    dtype = gain.dtype
    if noise_cov is None:
        # MNE's make_ad_hoc_cov(info, std=1.0): 1 V² per channel
        noise_cov = jnp.eye(n_chan, dtype=dtype)
    white, _ = _whitener_kernel(noise_cov, proj, rank)  # (r, n_chan), 1/V

    # Whitened gain divided by g = max |W G| (a constant for differentiation):
    # in SI units W G is ≈ 1e8 and its Gram matrix ≈ 1e16.
    gw = white @ gain
    g = scale_of(gw)

    # Whitened data covariance, divided by its largest diagonal entry (the
    # unit-gain filter does not depend on the scale of C).
    cw = white @ data_cov @ white.T
    cw = 0.5 * (cw + cw.T)
    cs = scale_of(jnp.diagonal(cw))
    cw = cw / cs
    loading = reg * jnp.trace(cw) / n_chan  # relative to MNE's n_chan x n_chan trace
    cinv = _pinvh(cw + loading * jnp.eye(rank, dtype=dtype))
    return _Whitened(white, gw / g, g, cinv, cw, cs, loading)


@partial(
    jax.jit,
    static_argnames=(
        "n_orient_fwd",
        "pick_ori",
        "weight_norm",
        "reduce_rank",
        "inversion",
    ),
)
def _filter_kernel(
    wh, src_nn, depth, *, n_orient_fwd, pick_ori, weight_norm, reduce_rank, inversion
):
    """The filters from the whitened problem (see :func:`_lcmv_kernel`)."""
    rank = wh.gs.shape[0]
    n_src = wh.gs.shape[1] // n_orient_fwd
    dtype = wh.gs.dtype
    g, cinv, cw, cs, loading = wh.g, wh.cinv, wh.cw, wh.cs, wh.loading
    gs = wh.gs.reshape(rank, n_src, n_orient_fwd)

    # Depth weighting (MNE's "depth_sparse": whitened gain, no limit,
    # Frobenius norm over the 3 columns of a source, or per column for the
    # single inversion), prior (1/‖W G_k‖²)^depth; depth = 0 is none. The
    # weighted gain is gs · d_s^(−depth/2) · c with c = g^(1 − depth)
    # (d = g² d_s): no (V/(A·m))² in the dtype.
    if n_orient_fwd == 3 and inversion == "matrix":
        d = jnp.sum(gs * gs, axis=(0, 2))[:, None]
    elif n_orient_fwd == 3 and pick_ori == "normal":
        # MNE picks the normal column of a surface-oriented forward: its own
        # norm is its depth (the tangential columns are dropped)
        gn = jnp.einsum("rnk,nk->rn", gs, src_nn)
        d = jnp.broadcast_to(jnp.sum(gn * gn, axis=0)[:, None], (n_src, 3))
    else:
        d = jnp.sum(gs * gs, axis=0)
    pos = d != 0
    d = jnp.where(pos, d, jnp.min(jnp.where(pos, d, jnp.inf)))
    gs = gs * jnp.power(d, -0.5 * depth)[None]  # exactly 1 for depth = 0
    c = jnp.power(g, 1.0 - depth)

    gk = jnp.transpose(gs, (1, 0, 2))  # (n_src, r, n_o)
    ratio = None
    if n_orient_fwd == 3:
        sv = jnp.linalg.svd(jax.lax.stop_gradient(gk), compute_uv=False)
        ratio = jnp.min(safe_div(sv[:, -1], sv[:, 0]))
        if reduce_rank:
            gk = _reduce_block_rank(gk)

    # Orientation
    max_power_ori = None
    if pick_ori == "max-power":
        cg = jnp.einsum("ij,njk->nik", cinv, gk)  # C⁻¹ G_k
        a = _sym(jnp.einsum("nik,nil->nkl", gk, cg))  # G_kᵀ C⁻¹ G_k
        if weight_norm is None:
            # maximal power of the unit-gain filter: top eigenvector of A⁺
            v = _top_eigvec(_block_inv(a, reduce_rank, inversion))
        else:
            # Sekihara & Nagarajan (2008), eq. 4.47: top eigenvector of B⁺ A
            # (B = G_kᵀ C⁻² G_k), from the symmetric X A X with X = (B⁺)^½
            b = _sym(jnp.einsum("nik,nil->nkl", cg, cg))
            x = sqrtm_sym(_block_inv(b, reduce_rank, inversion))
            v = jnp.einsum("nij,nj->ni", x, _top_eigvec(_sym(x @ a @ x)))
        v = v / safe_norm(v, axis=-1, keepdims=True)
        ref = (
            jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0], dtype), (n_src, 3))
            if src_nn is None
            else src_nn
        )
        sign = jnp.sign(jnp.sum(v * ref, axis=-1, keepdims=True))
        v = v * jnp.where(sign == 0, 1.0, sign)
        max_power_ori = v
        gk = jnp.einsum("nrk,nk->nr", gk, v)[..., None]
    elif pick_ori == "normal":
        gk = jnp.einsum("nrk,nk->nr", gk, src_nn)[..., None]
    n_o = gk.shape[-1]

    # Unit-gain filter  W_k = (G_kᵀ C⁻¹ G_k)⁻¹ G_kᵀ C⁻¹  (whitened space)
    numer = jnp.einsum("nrk,rs->nks", gk, cinv)  # (n_src, n_o, r)
    denom = _sym(numer @ gk)
    w = _block_inv(denom, reduce_rank, inversion) @ numer

    if weight_norm is None:
        w = w / c
    elif weight_norm == "unit-noise-gain-invariant":
        # (G_kᵀ C⁻² G_k)^(-½) G_kᵀ C⁻¹: rotation invariant
        w = inv_sqrtm_sym(_sym(numer @ jnp.swapaxes(numer, -1, -2))) @ numer
    else:
        nrm = safe_norm(w, axis=-1, keepdims=True)
        w = safe_div(w, nrm)
    if weight_norm == "nai":
        # noise level: the smallest eigenvalue of the whitened data
        # covariance inside its rank, at least the loading factor
        noise = jnp.maximum(eigh_sorted(cw)[0][-1], loading) * cs
        w = w / jnp.sqrt(noise)

    weights = w.reshape(n_src * n_o, rank) @ wh.white
    return weights, max_power_ori, ratio


def _lcmv_kernel(
    gain,
    src_nn,
    data_cov,
    noise_cov,
    reg,
    depth,
    *,
    proj,
    rank,
    n_orient_fwd,
    pick_ori,
    weight_norm,
    reduce_rank,
    inversion,
):
    """Pure kernel of :func:`make_lcmv` (see there for the formulas).

    Returns ``(weights, max_power_ori, ratio)``: the filters with the
    whitener folded in (n_src * n_orient, n_chan), the max-power orientations
    (n_src, 3) or None, and the smallest singular-value ratio s_min / s_max
    of the whitened per-source lead fields (for the eager singularity check;
    None for a fixed forward). Two compiled stages: :func:`_whiten` (shared
    by every variant of a problem) and :func:`_filter_kernel`.
    """
    wh = _whiten(gain, data_cov, noise_cov, reg, proj=proj, rank=rank)
    return _filter_kernel(
        wh,
        src_nn,
        depth,
        n_orient_fwd=n_orient_fwd,
        pick_ori=pick_ori,
        weight_norm=weight_norm,
        reduce_rank=reduce_rank,
        inversion=inversion,
    )


# --------------------------------------------------------------------------- #
# Eager validation
# --------------------------------------------------------------------------- #
def _as_cov(name, c, n_chan):
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
            f"{name} has shape {shape} but the forward has {n_chan} channels: "
            f"expected ({n_chan}, {n_chan})."
        )
    check_finite(name, data)
    return jnp.asarray(data)


def _check_filters(filters):
    check_type(
        "filters", filters, LcmvFilters, "an LcmvFilters (from exg_jax.make_lcmv)"
    )


def make_lcmv(
    fwd: ForwardOperator,
    data_cov: NoiseCov | Real[ArrayLike, "chan chan"] | NestedSequence,
    noise_cov: NoiseCov | Real[ArrayLike, "chan chan"] | NestedSequence | None = None,
    *,
    reg: RealScalar = 0.05,
    pick_ori: str | None = None,
    weight_norm: str | None = "unit-noise-gain",
    depth: RealScalar | None = None,
    rank: IntScalar | None = None,
    reduce_rank: bool = False,
    inversion: str = "matrix",
    avg_ref_proj: bool | None = None,
) -> LcmvFilters:
    """Compute LCMV beamformer spatial filters.

    Parameters
    ----------
    fwd : ForwardOperator
        Lead field ``gain`` (n_chan, n_src * n_orient), V/(A·m), free or
        fixed orientation.
    data_cov : NoiseCov or Array, shape (n_chan, n_chan), V²
        Covariance of the data the filters are for (signal plus noise).
    noise_cov : NoiseCov or Array, shape (n_chan, n_chan), V², or None
        Noise covariance used to whiten the gain and ``data_cov``. None: the
        identity (1 V² per channel, MNE's ``make_ad_hoc_cov(info, std=1.0)``):
        unit-noise-gain outputs are then in units of 1 V of noise.
    reg : float >= 0
        Diagonal loading of the whitened data covariance, relative to its
        trace: ``C + reg · tr(C) / n_chan · I`` (MNE's ``reg``). Traced values
        are accepted (differentiable, no recompilation).
    pick_ori : {None, "normal", "max-power", "vector"}
        Free forward only. None: vector filters, output the norm
        ``√(x² + y² + z²)`` per source; ``"vector"``: the three Cartesian
        components; ``"normal"``: scalar filters along ``fwd.src_nn``;
        ``"max-power"``: scalar filters along the orientation of maximal
        output power, its sign chosen so that it points along ``fwd.src_nn``
        (or +z when the forward has no normals).
    weight_norm : {"unit-noise-gain", "nai", "unit-noise-gain-invariant", None}
        None: the unit-gain filter (output in A·m); ``"unit-noise-gain"``:
        each filter row divided by its norm in the whitened space (Sekihara,
        output in units of the noise std); ``"nai"``: in addition divided by
        the square root of the noise level (neural activity index);
        ``"unit-noise-gain-invariant"``: the rotation-invariant version
        ``(Nᵀ N)^(-½)`` of the normalisation (MNE's default; the default here is
        ``"unit-noise-gain"``).
    depth : float >= 0 or None
        Depth-weighting exponent; None or 0: none. MNE's sparse / beamformer
        prior: ``(1 / ‖W G_k‖_F²)^depth`` from the whitened gain, without a
        limit. It only changes the output for ``weight_norm=None`` (and the
        per-column weights of ``inversion="single"``).
    rank : int or None
        Rank of the whitener and of the data-covariance inverse; None:
        ``n_chan − 1`` with the average-reference projector, else ``n_chan``.
    reduce_rank : bool
        Drop the smallest singular value of each source's whitened 3-column
        lead field (and of the 3 x 3 denominators), for rank-deficient lead
        fields. Not with ``inversion="single"``.
    inversion : {"matrix", "single"}
        Invert each source's 3 x 3 denominator as a matrix, or its diagonal
        only (each orientation separately).
    avg_ref_proj : bool or None
        Whiten with the EEG average-reference projector; None: when
        ``fwd.reference == "average"`` (MNE always needs it for EEG).

    Returns
    -------
    filters : LcmvFilters
        ``weights`` (n_src * n_orient, n_chan), whitener included.

    Raises
    ------
    TypeError
        ``fwd`` not a ForwardOperator; a covariance not a NoiseCov / real
        array; ``reg`` / ``depth`` not real scalars; ``reduce_rank`` not a bool.
    ValueError
        Unknown ``pick_ori`` / ``weight_norm`` / ``inversion``; shapes that do
        not match ``fwd``'s channels; NaN / Inf; ``reg`` or ``depth`` negative;
        a covariance that is not symmetric PSD, or a noise covariance below
        the whitener rank; ``pick_ori`` other than None with a fixed forward;
        ``pick_ori="normal"`` without ``fwd.src_nn``; ``reduce_rank`` with
        ``inversion="single"``; ``"vector"`` with ``"single"`` and
        ``"unit-noise-gain-invariant"``; a source whose whitened lead field is
        singular (s_min / s_max < 1e-6) without ``reduce_rank`` (eager only).

    Notes
    -----
    Equivalent to ``mne.beamformer.make_lcmv(info, fwd, data_cov, reg,
    noise_cov, pick_ori=pick_ori, weight_norm=weight_norm, depth=depth,
    reduce_rank=reduce_rank, inversion=inversion)`` with an EEG
    average-reference projector in ``info`` and ``rank="info"`` (``n − 1``),
    for a Cartesian MNE forward (for ``"normal"``: the surface-oriented one,
    which MNE requires; for ``"max-power"`` MNE aligns the sign with the
    normal of a surface-oriented forward, as here with ``fwd.src_nn``).
    MNE's filters act on whitened data; here the whitener is folded into the
    weights.

    With ``W`` the whitener (rank ``r``) of the noise covariance, ``G_k`` the
    whitened (and depth-weighted) lead field of source ``k`` and
    ``C = W C_data Wᵀ + λ I``, ``λ = reg · tr(W C_data Wᵀ) / n_chan``
    (pseudo-inverse on the rank-``r`` whitened space)::

        unit gain:        F_k = (G_kᵀ C⁻¹ G_k)⁻¹ G_kᵀ C⁻¹
        unit-noise-gain:  F_k ← diag(F_k F_kᵀ)^(-½) F_k
        invariant:        F_k = (G_kᵀ C⁻² G_k)^(-½) G_kᵀ C⁻¹
        NAI:              F_k ← F_k / √max(σ_min(W C_data Wᵀ), λ)
        max-power:        η_k = top eigenvector of (G_kᵀ C⁻² G_k)⁺ (G_kᵀ C⁻¹ G_k)
                          (of (G_kᵀ C⁻¹ G_k)⁺ for weight_norm=None),
                          G_k ← G_k η_k
        normal:           G_k ← G_k n_k

    and the returned weights are ``F W``.
    """
    check_type("fwd", fwd, ForwardOperator, "a ForwardOperator")
    check_option("pick_ori", pick_ori, PICK_ORIS)
    check_option("weight_norm", weight_norm, WEIGHT_NORMS)
    check_option("inversion", inversion, INVERSIONS)
    check_type("reduce_rank", reduce_rank, bool, "a bool")
    if avg_ref_proj is not None:
        check_type("avg_ref_proj", avg_ref_proj, bool, "a bool or None")
    n_chan = fwd.n_chan
    data = _as_cov("data_cov", data_cov, n_chan)
    noise = None if noise_cov is None else _as_cov("noise_cov", noise_cov, n_chan)
    check_finite("fwd.gain", fwd.gain)
    if is_concrete(fwd.gain) and all_zero(fwd.gain):
        raise ValueError("fwd.gain is all zero: no source is seen by the electrodes.")
    check_real_scalar("reg", reg)
    if is_concrete(reg) and not (np.isfinite(float(reg)) and float(reg) >= 0):
        raise ValueError(f"reg must be finite and >= 0, got {reg!r}.")
    if depth is not None:
        check_real_scalar("depth", depth)
        if is_concrete(depth):
            if not (np.isfinite(float(depth)) and float(depth) >= 0):
                raise ValueError(
                    f"depth must be finite and >= 0 or None, got {depth!r}."
                )
            if float(depth) == 0.0:
                depth = None  # as MNE: 0 is no depth weighting
    if fwd.n_orient == 1 and pick_ori is not None:
        raise ValueError(
            f"pick_ori={pick_ori!r} needs a free-orientation forward; fwd is fixed "
            "(use pick_ori=None)."
        )
    if pick_ori == "normal" and fwd.src_nn is None:
        raise ValueError("pick_ori='normal' needs source normals: fwd.src_nn is None.")
    if reduce_rank and inversion == "single":
        raise ValueError(
            "reduce_rank=True cannot be used with inversion='single' (use "
            "inversion='matrix')."
        )
    if (
        fwd.n_orient == 3
        and inversion == "single"
        and pick_ori == "vector"
        and weight_norm == "unit-noise-gain-invariant"
    ):
        raise ValueError(
            "pick_ori='vector' with inversion='single' cannot use "
            "weight_norm='unit-noise-gain-invariant'."
        )
    proj, rank = whitener_rank(n_chan, fwd.reference, avg_ref_proj, rank)
    dtype = jnp.result_type(fwd.gain)
    check_covariance_values("data_cov", data, proj, rank, dtype, need_rank=False)
    if noise is not None:
        check_covariance_values(
            "noise_cov", noise, proj, rank, dtype, rank_fix="make_lcmv"
        )
    src_nn = None
    if fwd.n_orient == 3 and fwd.src_nn is not None:
        src_nn = jnp.asarray(fwd.src_nn, dtype)
        src_nn = src_nn / safe_norm(src_nn, axis=-1, keepdims=True)
    weights, mpo, ratio = _lcmv_kernel(
        jnp.asarray(fwd.gain),
        src_nn,
        data.astype(dtype),
        None if noise is None else noise.astype(dtype),
        jnp.asarray(reg, dtype),
        jnp.asarray(0.0 if depth is None else depth, dtype),
        proj=proj,
        rank=int(rank),
        n_orient_fwd=fwd.n_orient,
        # None and "vector" are the same filters (one compilation)
        pick_ori=None if pick_ori == "vector" else pick_ori,
        weight_norm=weight_norm,
        reduce_rank=reduce_rank,
        inversion=inversion,
    )
    if ratio is not None and not reduce_rank and is_concrete(ratio):
        if float(ratio) < SINGULAR_RATIO:
            raise ValueError(
                "fwd.gain: the whitened lead field of a source is singular "
                f"(s_min / s_max = {float(ratio):.2g} < {SINGULAR_RATIO:g}); pass "
                "reduce_rank=True."
            )
    n_orient = 3 if fwd.n_orient == 3 and pick_ori in (None, "vector") else 1
    return LcmvFilters(
        weights=weights,
        src_pos=jnp.asarray(fwd.src_pos),
        max_power_ori=mpo,
        n_orient=n_orient,
        pick_ori=pick_ori,
        weight_norm=weight_norm,
        rank=int(rank),
    )


# --------------------------------------------------------------------------- #
# Application
# --------------------------------------------------------------------------- #
def _validate_data(name, data, filters, ndim):
    _check_filters(filters)
    check_sensor_data(name, data, filters.n_chan, (ndim,), "the filters have")


def _estimate(sol, filters):
    return SourceEstimate(
        sol, filters.src_pos, method="LCMV", pick_ori=filters.pick_ori
    )


def apply_lcmv(
    data: Real[ArrayLike, "chan time"] | NestedSequence, filters: LcmvFilters
) -> SourceEstimate:
    """Apply LCMV filters to evoked data.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times), V
        Sensor data (the average-reference projection is part of the
        filters).
    filters : LcmvFilters
        From :func:`make_lcmv`.

    Returns
    -------
    stc : SourceEstimate
        ``data`` (n_src, n_times), or (n_src, 3, n_times) for
        ``pick_ori="vector"``; A·m for ``weight_norm=None``, else in units
        of the noise std. ``method="LCMV"``.

    Notes
    -----
    Equivalent to ``mne.beamformer.apply_lcmv(evoked, filters)``.
    """
    _validate_data("data", data, filters, 2)
    sol = apply_prepared_jit(jnp.asarray(data), filters.imaging_kernel(), None)
    return _estimate(sol, filters)


def apply_lcmv_epochs(
    epochs: Real[ArrayLike, "epoch chan time"] | NestedSequence,
    filters: LcmvFilters,
    batch_size: IntScalar | None = None,
) -> SourceEstimate:
    """Apply LCMV filters to a batch of epochs (a compiled loop, ``jax.lax.map``).

    Parameters
    ----------
    epochs : Array, shape (n_epochs, n_chan, n_times), V
    filters : LcmvFilters
    batch_size : int or None
        Epochs per compiled step; None: one at a time.

    Returns
    -------
    stc : SourceEstimate
        ``data`` (n_epochs, n_src, n_times) or (n_epochs, n_src, 3, n_times).

    Notes
    -----
    Equivalent to ``mne.beamformer.apply_lcmv_epochs(epochs, filters)``
    (stacked).
    """
    _validate_data("epochs", epochs, filters, 3)
    batch_size = as_int("batch_size", batch_size, minimum=1, allow_none=True)
    sol = apply_prepared_jit(jnp.asarray(epochs), filters.imaging_kernel(), batch_size)
    return _estimate(sol, filters)


@partial(jax.jit, static_argnames=("n_orient",))
def _power_kernel(weights, cov, n_orient):
    # tr(F_k C F_kᵀ) per source, with F and C divided by constants (A²·m²
    # underflows float32 for small data).
    a = scale_of(weights)
    b = scale_of(cov)
    f = weights / a
    p = jnp.sum((f @ (cov / b)) * f, axis=1)
    p = p.reshape(-1, n_orient).sum(axis=1)
    return (p * (a * a * b))[:, None]


def apply_lcmv_cov(
    data_cov: NoiseCov | Real[ArrayLike, "chan chan"] | NestedSequence,
    filters: LcmvFilters,
) -> SourceEstimate:
    """Source power of a data covariance through LCMV filters.

    Parameters
    ----------
    data_cov : NoiseCov or Array, shape (n_chan, n_chan), V²
    filters : LcmvFilters

    Returns
    -------
    stc : SourceEstimate
        ``data`` (n_src, 1): ``tr(F_k C F_kᵀ)`` per source (A²·m² for
        ``weight_norm=None``, else in units of the noise variance).

    Notes
    -----
    Equivalent to ``mne.beamformer.apply_lcmv_cov(data_cov, filters)``.
    """
    _check_filters(filters)
    cov = _as_cov("data_cov", data_cov, filters.n_chan)
    dtype = jnp.result_type(filters.weights)
    p = _power_kernel(filters.weights, cov.astype(dtype), filters.n_orient)
    return SourceEstimate(p, filters.src_pos, method="LCMV", pick_ori=None)


# --------------------------------------------------------------------------- #
# Resolution matrix
# --------------------------------------------------------------------------- #
@jax.jit
def _row_norm_kernel(k: ImagingKernel) -> ImagingKernel:
    """MNE's ``pick_ori=None`` resolution kernel: each channel's 3 rows → their norm."""
    k3 = k.kernel.reshape(-1, 3, k.kernel.shape[-1])
    rows = combine_xyz(k3[:, 0], k3[:, 1], k3[:, 2])
    return ImagingKernel(rows, None, k.src_pos, n_orient=1, method=k.method)


def make_lcmv_resolution_matrix(
    filters: LcmvFilters, fwd: ForwardOperator, *, fwd_ori: str = "normal"
) -> Float[Array, "row src"]:
    """Resolution matrix ``R = F G`` of LCMV filters.

    Parameters
    ----------
    filters : LcmvFilters
    fwd : ForwardOperator
        The "true" sources (same channels and sources as the filters). A
        fixed forward is used as is; a free one is projected on its normals
        (``fwd_ori="normal"``, needs ``fwd.src_nn``) or kept with its three
        Cartesian columns (``fwd_ori="free"``), as in
        :func:`exg_jax.make_resolution_matrix`.
    fwd_ori : {"normal", "free"}

    Returns
    -------
    R : Array, shape (n_rows, n) or (n_rows, 3 n)
        ``n_rows`` is ``n_src`` for scalar filters and for ``pick_ori=None``
        (rows: the per-channel norm ``√(x² + y² + z²)`` of each source's
        three filter rows, as MNE), ``3 n_src`` for ``"vector"`` (rows
        Cartesian per source).

    Notes
    -----
    Equivalent to ``mne.beamformer.make_lcmv_resolution_matrix(filters,
    fwd_mne, info)``, with ``fwd_mne`` the fixed surface-oriented forward
    for ``fwd_ori="normal"`` and the free Cartesian one for
    ``fwd_ori="free"`` (MNE's vector result (n_src, 3, ·) is reshaped to
    (3 n_src, ·)).

    For ``pick_ori=None`` MNE combines each source's three filter rows
    *before* the product, ``R = |F| G`` with ``|F|_kc = ‖F_{k·, c}‖`` (the
    filters applied to an identity "evoked"). That matrix is not the norm of
    the vector resolution matrix and, unlike every linear case, depends on
    the reference of ``G`` (``|F|`` does not annihilate constants): MNE's
    forward is against infinity, so pass a forward with ``reference=None``
    to reproduce it.
    """
    _check_filters(filters)
    k = filters.imaging_kernel()
    if filters.n_orient == 3 and filters.pick_ori is None:
        # MNE applies the filters to an identity "evoked": for pick_ori=None
        # each channel's 3 rows are combined to √(x² + y² + z²)
        k = _row_norm_kernel(k)
    return make_resolution_matrix(k, fwd, fwd_ori=fwd_ori)
