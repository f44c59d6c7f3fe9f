"""Inverse operators (``InverseOperator``) and their application (any method).

The construction follows MNE-Python's ``mne.minimum_norm.make_inverse_operator``
and ``apply_inverse`` (``nave = 1``); every stage is a pure function of arrays,
jit-compiled, and differentiable w.r.t. the forward gain, the noise
covariance, the depth exponent, ``loose`` and ``lambda2``.

``lambda2`` is the Tikhonov regularisation parameter λ² = 1 / SNR² (SNR of
the *amplitude*, MNE's convention: ``lambda2 = 1 / 3**2`` for SNR = 3).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree, Real

from . import _stream
from ._numerics import safe_norm, scale_of
from ._typing import IntScalar, NestedSequence, RealScalar
from ._validate import (
    Vertices,
    _mne_class,
    all_zero,
    as_ch_names,
    as_int,
    as_times,
    as_vertices,
    check_array,
    check_finite,
    check_lambda2,
    check_not_mne,
    check_option,
    check_positive_finite_scalar,
    check_range,
    check_real_scalar,
    check_sensor_data,
    check_type,
    is_concrete,
    lambda2_error_if,
)
from .covariance import (
    NoiseCov,
    check_covariance_values,
    cov_from_mne,
    whitener_rank,
)
from .eloreta import eLORETA
from .forward import ForwardOperator
from .kernel import ImagingKernel, apply_prepared
from .linalg import _whitener_kernel, eigh_sorted, svd_thin
from .methods import MNE, AbstractInverseMethod, dSPM, sLORETA
from .reductions import AbstractReduction
from .source_estimate import SourceEstimate

__all__ = [
    "InverseOperator",
    "SourceEstimate",
    "apply_inverse",
    "apply_inverse_epochs",
    "apply_inverse_raw",
    "as_method",
    "imaging_kernel",
    "make_inverse_operator",
]

#: MNE-Python's method strings, aliases of the method objects.
METHOD_ALIASES = {"MNE": MNE, "dSPM": dSPM, "sLORETA": sLORETA, "eLORETA": eLORETA}
PICK_ORIS = (None, "normal", "vector")


class InverseOperator(eqx.Module):
    """A (whitened, SVD-decomposed) minimum-norm inverse operator.

    Attributes mirror MNE-Python's inverse-operator dict:
    ``whitener`` (n_white, n_chan), ``eigen_fields`` (n_comp, n_white) = Uᵀ,
    ``sing`` (n_comp,), ``eigen_leads`` (n_src * n_orient, n_comp) = V,
    ``source_std`` (n_src * n_orient,) = √``source_cov`` (A·m; MNE stores the
    variance, available here as the property ``source_cov``; the standard
    deviation is stored so that float32 does not underflow when the noise
    is small), ``orient_prior`` (n_src * n_orient,) or None,
    ``depth_prior`` (n_src * n_orient,) or None, ``noise_cov``, ``src_pos``,
    ``src_nn``, static ``n_orient`` (1 or 3), ``source_ori`` ("fixed" | "free")
    and ``rank`` (number of non-zero whitener eigenvalues, static). MNE's
    ``eigen_leads_weighted`` flag has no counterpart: an operator is never
    modified by a method (eLORETA's weights live in the factors its method
    object computes, :meth:`exg_jax.eLORETA.factors`).

    Added here: ``orient_frame`` (n_src, 3, 3) or None. For a free inverse
    built from a forward with source normals, the rows of ``eigen_leads``,
    ``source_std``, ``orient_prior`` and ``depth_prior`` refer to each
    source's surface frame (t₁, t₂, n) — the rows of ``orient_frame[k]`` —
    as after MNE's ``convert_forward_solution(surf_ori=True)``; None means
    Cartesian (x, y, z). Kernels from :func:`_assemble_kernel` are always
    rotated back to Cartesian rows.

    ``whitener`` has ``rank`` rows (MNE's ``pca=True`` layout, no zero rows),
    so ``sing`` has ``rank`` entries, all used. The whitener includes the
    average-reference projection when it was built with one.

    Metadata (static, hashable; carried from the forward or from an MNE
    inverse operator to every source estimate): ``ch_names`` (tuple of str
    or None: the channels of the whitener's columns; with names,
    ``apply_inverse`` & co. accept MNE data objects and pick their channels
    by name), ``vertices`` (tuple of int arrays or None, MNE's layout),
    ``src_kind`` (``"surface"``, ``"volume"``, ``"discrete"``, ``"mixed"`` or
    None) and ``subject`` (str or None).

    The operator is for single trials (MNE's ``nave = 1``); the ``nave``
    argument of the ``apply_*`` functions scales it as MNE's
    ``prepare_inverse_operator`` does.
    """

    whitener: Float[Array, "white chan"]
    eigen_fields: Float[Array, "comp white"]
    sing: Float[Array, " comp"]
    eigen_leads: Float[Array, "src_orient comp"]
    source_std: Float[Array, " src_orient"]
    orient_prior: Float[Array, " src_orient"] | None
    depth_prior: Float[Array, " src_orient"] | None
    noise_cov: NoiseCov
    src_pos: Float[Array, "src 3"]
    src_nn: Float[Array, "src 3"] | None
    n_orient: int = eqx.field(static=True)
    source_ori: str = eqx.field(static=True)
    rank: int = eqx.field(static=True)
    orient_frame: Float[Array, "src 3 3"] | None = None
    ch_names: tuple[str, ...] | None = eqx.field(
        static=True, default=None, converter=as_ch_names
    )
    vertices: Vertices | None = eqx.field(
        static=True, default=None, converter=as_vertices
    )
    src_kind: str | None = eqx.field(static=True, default=None)
    subject: str | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.ch_names is not None and len(self.ch_names) != self.whitener.shape[-1]:
            raise ValueError(
                f"ch_names has {len(self.ch_names)} names but the whitener has "
                f"{self.whitener.shape[-1]} channels (columns)."
            )
        if self.vertices is not None and self.vertices.n_src != self.src_pos.shape[-2]:
            raise ValueError(
                f"vertices hold {self.vertices.n_src} sources but src_pos has "
                f"{self.src_pos.shape[-2]}."
            )

    @property
    def source_cov(self) -> Float[Array, " src_orient"]:
        """Source covariance prior (diagonal), A²·m² (MNE's ``source_cov``)."""
        return self.source_std * self.source_std

    @property
    def n_src(self) -> int:
        return int(self.src_pos.shape[-2])

    @property
    def n_chan(self) -> int:
        return int(self.whitener.shape[-1])


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _normal_frames(nn):
    """Orthonormal frames (rows t1, t2, n) around unit normals ``nn`` (n_src, 3)."""
    nn = nn / safe_norm(nn, -1)[:, None]
    # helper axis: the Cartesian axis least aligned with the normal
    eye = jnp.eye(3, dtype=nn.dtype)
    helper = eye[jnp.argmin(jnp.abs(nn), axis=1)]
    t1 = jnp.cross(nn, helper)
    t1 = t1 / safe_norm(t1, -1)[:, None]
    t2 = jnp.cross(nn, t1)
    return jnp.stack([t1, t2, nn], axis=1)


def _depth_weights(d, exp, limit=10.0):
    """MNE's depth prior from per-source gain norms ``d`` (limit_depth_chs=True)."""
    pos = d > 0
    dmin = jnp.min(jnp.where(pos, d, jnp.inf))
    d = jnp.where(pos, d, dmin)
    w = 1.0 / d
    ws = jnp.sort(w)
    above = ws > (limit**2) * ws[0]
    ind = jnp.argmax(above)
    lim = jnp.where(jnp.any(above), ws[ind], ws[-1])
    w = jnp.minimum(w / lim, 1.0)
    return w**exp


@partial(jax.jit, static_argnames=("mode", "use_depth", "proj", "rank", "use_frame"))
def _make_inverse_kernel(
    gain, src_nn, cov, depth_exp, loose, *, mode, use_depth, proj, rank, use_frame
):
    """Pure kernel of :func:`make_inverse_operator` (see there)."""
    n_chan = gain.shape[0]
    whitener, _ = _whitener_kernel(cov, proj, rank)
    dtype = gain.dtype
    frames = None
    # The depth prior only depends on ratios of the column norms: compute them
    # on the gain divided by a constant (no V/(A·m) squared in the dtype).
    gain_n = gain / scale_of(gain)
    if mode == "fixed":
        g = gain
        d = jnp.sum(gain_n * gain_n, axis=0)
        n_orient = 1
    else:
        n_src = gain.shape[1] // 3
        g3 = gain.reshape(n_chan, n_src, 3)
        g3_n = gain_n.reshape(n_chan, n_src, 3)
        # spectral depth norm: largest eigenvalue of G_kᵀ G_k (frame invariant)
        gram = jnp.einsum("cni,cnj->nij", g3_n, g3_n)
        d = eigh_sorted(gram)[0][:, 0]
        if mode == "fixed_from_free":
            g = jnp.einsum("cnj,nj->cn", g3, src_nn)
            n_orient = 1
        else:
            if use_frame:
                frames = _normal_frames(src_nn)
                g = jnp.einsum("cnj,nij->cni", g3, frames).reshape(n_chan, 3 * n_src)
            else:
                g = gain
            n_orient = 3
    if use_depth:
        depth_prior = _depth_weights(d, depth_exp)
        if n_orient == 3:
            depth_prior = jnp.repeat(depth_prior, 3)
        source_var = depth_prior
    else:
        depth_prior = None
        source_var = jnp.ones(g.shape[1], dtype=dtype)
    if n_orient == 3:
        orient_prior = jnp.tile(
            jnp.stack([loose, loose, jnp.ones_like(loose)]).astype(dtype),
            g.shape[1] // 3,
        )
        source_var = source_var * orient_prior
    else:
        orient_prior = None
    source_std = jnp.sqrt(source_var)
    gw = (whitener @ g) * source_std[None, :]
    # scale = √(rank / ‖gw‖²_F), scale-free: in SI units ‖gw‖²_F ≈ 1e20 and the
    # derivative of 1/‖gw‖² (≈ 1e-41) underflows in float32.
    scale = jnp.sqrt(jnp.asarray(rank, dtype)) / safe_norm(gw)
    gw = gw * scale
    source_std = source_std * scale
    u, s, vt = svd_thin(gw)
    return dict(
        whitener=whitener,
        eigen_fields=u.T,
        sing=s,
        eigen_leads=vt.T,
        source_std=source_std,
        orient_prior=orient_prior,
        depth_prior=depth_prior,
        orient_frame=frames,
    )


# --------------------------------------------------------------------------- #
# make_inverse_operator
# --------------------------------------------------------------------------- #
def make_inverse_operator(
    fwd: ForwardOperator,
    noise_cov: NoiseCov | Real[ArrayLike, "chan chan"] | NestedSequence,
    depth: RealScalar | None = 0.8,
    *,
    loose: RealScalar | None = None,
    fixed: bool | np.bool_ = False,
    rank: IntScalar | None = None,
    avg_ref_proj: bool | np.bool_ | None = None,
) -> InverseOperator:
    """Assemble a minimum-norm inverse operator.

    Parameters
    ----------
    fwd : ForwardOperator
        Lead field, V/(A·m): ``gain`` (n_chan, n_src * n_orient).
    noise_cov : NoiseCov or Array, shape (n_chan, n_chan), V², or mne.Covariance
        Sensor noise covariance. When both ``fwd`` and ``noise_cov`` carry
        ``ch_names``, the channels are matched by name: the operator uses the
        forward's channels that the covariance has, in the forward's order
        (as MNE-Python; the covariance's bad channels are left out). An
        ``mne.Covariance`` is converted with
        :func:`~exg_jax.covariance.cov_from_mne` (needs ``fwd.ch_names``).
    depth : float in [0, 1] or None
        Depth-weighting exponent (MNE's ``depth``); None or 0 disables it.
        MNE's defaults are used: ``limit=10`` (weights bounded to 10² times
        the smallest), all EEG channels, unwhitened gain, and for free
        orientation the spectral norm of each source's 3-column block.
    loose : float in [0, 1] or None
        Variance of the tangential components relative to the normal one.
        None: 0.0 (fixed) for a fixed forward; for a free one 0.2 when its
        sources are an MNE cortical surface (``fwd.src_kind == "surface"``),
        else 1.0 (MNE's ``loose="auto"``). ``loose < 1``
        needs source normals (``fwd.src_nn``); 0 gives a fixed-orientation
        inverse (normal component of a free forward, as MNE).
    fixed : bool
        True requests a fixed-orientation inverse (``loose`` must be None or 0).
    rank : int or None
        Whitener rank; None: ``n_chan − 1`` with the average-reference
        projector, else ``n_chan``.
    avg_ref_proj : bool or None
        Whiten with the EEG average-reference projector (MNE with
        ``set_eeg_reference(projection=True)``). None: True when
        ``fwd.reference`` is ``"average"`` or ``"average_proj"`` (the default
        of :func:`exg_jax.interop.forward_from_mne`, which keeps MNE's gain
        against infinity: the depth prior is then computed from the
        unreferenced gain, exactly as MNE does).

    Returns
    -------
    inv : InverseOperator
        With ``ch_names`` (the channels used), ``vertices``, ``src_kind``
        and ``subject`` from the forward.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.make_inverse_operator(info, fwd, cov,
    loose=loose, depth=depth, fixed=fixed)`` with an average-reference
    projector; with a forward from ``forward_from_mne(fwd, info=info)`` and
    the default arguments, to MNE's ``make_inverse_operator(info, fwd, cov)``
    with its defaults (``loose="auto"``: 0.2 on cortical surfaces, 1 for
    volume and discrete source spaces; ``depth=0.8``). Steps: whitener ``W`` of ``P C P`` (rank ``n − 1``); depth prior
    ``w_k = min(1/‖G_k‖² / w_lim, 1)^depth``; orientation prior
    ``(loose, loose, 1)`` in the surface frame; source variance
    ``R = depth · orient``; scaling so that ``‖W G R^½‖_F² = rank``; thin
    SVD ``W G R^½ = U S Vᵀ``.
    """
    check_type("fwd", fwd, ForwardOperator, "a ForwardOperator")
    if isinstance(noise_cov, NoiseCov):
        cov = noise_cov
    elif _mne_class(noise_cov) == "Covariance":
        if fwd.ch_names is None:
            raise TypeError(
                "noise_cov is an mne.Covariance but fwd has no channel names "
                "(fwd.ch_names is None), so they cannot be matched by name; convert "
                "it with exg_jax.cov_from_mne(cov, ch_names) (names in the forward's "
                "order), or pass NoiseCov(jnp.asarray(cov.data)) if its channels are "
                "the forward's, in the same order."
            )
        cov = cov_from_mne(noise_cov, fwd.ch_names)
    else:
        check_not_mne("noise_cov", noise_cov, "a NoiseCov or an array")
        check_array("noise_cov", noise_cov)
        cov = NoiseCov(jnp.asarray(noise_cov))
    fwd, cov = _match_channels(fwd, cov)
    n_chan = fwd.n_chan
    if n_chan == 0:
        raise ValueError("fwd has 0 channels (fwd.gain has shape (0, ...)).")
    if fwd.n_src == 0:
        raise ValueError("fwd has 0 sources (fwd.src_pos has shape (0, 3)).")
    if tuple(cov.data.shape) != (n_chan, n_chan):
        raise ValueError(
            f"noise_cov has shape {tuple(cov.data.shape)} but the forward has {n_chan} "
            f"channels: expected ({n_chan}, {n_chan})."
        )
    check_finite("noise_cov", cov.data)
    check_finite("fwd.gain", fwd.gain)
    if is_concrete(fwd.gain) and all_zero(fwd.gain):
        raise ValueError(
            "fwd.gain is all zero: no source is seen by the electrodes (e.g. a "
            "single electrode with the average reference, or sources outside "
            "the inner shell)."
        )
    if depth is not None:
        check_real_scalar("depth", depth)
        check_range("depth", depth, 0.0, 1.0)
        if is_concrete(depth) and float(depth) == 0.0:
            depth = None
    if not isinstance(fixed, bool | np.bool_):
        raise TypeError(f"fixed must be True or False, got {fixed!r}.")
    fixed = bool(fixed)
    if avg_ref_proj is not None and not isinstance(avg_ref_proj, bool | np.bool_):
        raise TypeError(
            f"avg_ref_proj must be None, True or False, got {avg_ref_proj!r}."
        )
    if loose is None:
        if fixed or fwd.orientation == "fixed":
            loose = 0.0
        else:  # MNE's loose="auto": 0.2 on cortical surfaces, else 1
            loose = 0.2 if fwd.src_kind == "surface" else 1.0
    check_real_scalar("loose", loose)
    check_range("loose", loose, 0.0, 1.0)
    loose_c = float(loose) if is_concrete(loose) else None
    if fixed and loose_c is not None and loose_c != 0.0:
        raise ValueError(
            f"With fixed=True, loose must be 0 or None, got loose={loose!r}."
        )
    if fwd.orientation == "fixed":
        if loose_c is not None and loose_c != 0.0:
            raise ValueError(
                f"A fixed-orientation forward only allows loose=0 (fixed inverse), got loose={loose!r}."
            )
        mode = "fixed"
    elif fixed or loose_c == 0.0:
        if fwd.src_nn is None:
            raise ValueError(
                "A fixed-orientation inverse needs source normals (fwd.src_nn is None)."
            )
        mode = "fixed_from_free"
    else:
        if fwd.src_nn is None and (loose_c is None or loose_c < 1.0):
            raise ValueError(
                f"loose={loose!r} < 1 needs source normals (fwd.src_nn is None)."
            )
        mode = "free"
    proj, rank = whitener_rank(n_chan, fwd.reference, avg_ref_proj, rank)
    dtype = jnp.result_type(fwd.gain)
    check_covariance_values("noise_cov", cov.data, proj, rank, dtype)
    gain = jnp.asarray(fwd.gain)
    src_nn = None if fwd.src_nn is None else jnp.asarray(fwd.src_nn, dtype=dtype)
    use_frame = mode == "free" and src_nn is not None
    out = _make_inverse_kernel(
        gain,
        src_nn,
        jnp.asarray(cov.data, dtype=dtype),
        jnp.asarray(0.0 if depth is None else depth, dtype=dtype),
        jnp.asarray(loose, dtype=dtype),
        mode=mode,
        use_depth=depth is not None,
        proj=proj,
        rank=int(rank),
        use_frame=use_frame,
    )
    n_orient = 3 if mode == "free" else 1
    return InverseOperator(
        noise_cov=cov,
        src_pos=fwd.src_pos,
        src_nn=src_nn,
        n_orient=n_orient,
        source_ori="free" if n_orient == 3 else "fixed",
        rank=int(rank),
        ch_names=fwd.ch_names if fwd.ch_names is not None else cov.ch_names,
        vertices=fwd.vertices,
        src_kind=fwd.src_kind,
        subject=fwd.subject,
        **out,
    )


def _match_channels(
    fwd: ForwardOperator, cov: NoiseCov
) -> tuple[ForwardOperator, NoiseCov]:
    """Eager: forward and covariance on their common channels, in the forward's order.

    Only when both carry ``ch_names``; else unchanged (their shapes are
    checked by the caller). Forward channels the covariance lacks (its bads)
    are left out, as MNE-Python's ``make_inverse_operator`` does; an
    average-referenced gain (``reference="average"``) is re-referenced to the
    channels kept.
    """
    if fwd.ch_names is None or cov.ch_names is None:
        return fwd, cov
    have = set(cov.ch_names)
    common = [n for n in fwd.ch_names if n in have]
    if not common:
        raise ValueError(
            "fwd and noise_cov have no channel in common (by name): "
            f"fwd {list(fwd.ch_names[:5])}..., noise_cov {list(cov.ch_names[:5])}..."
        )
    if len(common) < fwd.n_chan:
        keep = np.array([fwd.ch_names.index(n) for n in common])
        gain = fwd.gain[..., keep, :]
        if fwd.reference == "average":
            gain = gain - jnp.mean(gain, axis=-2, keepdims=True)
        fwd = ForwardOperator(
            gain=gain,
            src_pos=fwd.src_pos,
            src_nn=fwd.src_nn,
            orientation=fwd.orientation,
            reference=fwd.reference,
            ch_pos=None if fwd.ch_pos is None else fwd.ch_pos[..., keep, :],
            ch_names=tuple(common),
            vertices=fwd.vertices,
            src_kind=fwd.src_kind,
            subject=fwd.subject,
        )
    if tuple(common) != cov.ch_names:
        idx = np.array([cov.ch_names.index(n) for n in common])
        data = (
            cov.data[np.ix_(idx, idx)]
            if isinstance(cov.data, np.ndarray)
            else (jnp.asarray(cov.data)[idx][:, idx])
        )
        cov = NoiseCov(data, nfree=cov.nfree, ch_names=tuple(common))
    return fwd, cov


# --------------------------------------------------------------------------- #
# Methods and imaging kernels
# --------------------------------------------------------------------------- #
def as_method(method: str | AbstractInverseMethod) -> AbstractInverseMethod:
    """The method object for ``method`` (an object, or one of MNE's strings).

    ``"MNE"``, ``"dSPM"``, ``"sLORETA"``, ``"eLORETA"`` give ``MNE()``,
    ``dSPM()``, ``sLORETA()``, ``eLORETA()`` (default settings); any
    :class:`~exg_jax.methods.AbstractInverseMethod` is returned as is.
    """
    if isinstance(method, AbstractInverseMethod):
        return method
    if isinstance(method, str) and method in METHOD_ALIASES:
        return METHOD_ALIASES[method]()
    choices = ", ".join(repr(k) for k in METHOD_ALIASES)
    raise (ValueError if isinstance(method, str) else TypeError)(
        f"method must be an inverse method object (e.g. exg_jax.dSPM()) or one of "
        f"{choices}, got {method!r}."
    )


def _validate_operator(inv, method, pick_ori, lambda2):
    """Eager checks shared by every public function that builds a kernel."""
    check_type(
        "inv", inv, InverseOperator, "an InverseOperator (from make_inverse_operator)"
    )
    method = as_method(method)
    check_option("pick_ori", pick_ori, PICK_ORIS)
    check_lambda2(lambda2, inv.sing.dtype)
    if pick_ori in ("normal", "vector") and inv.n_orient != 3:
        raise ValueError(
            f"pick_ori={pick_ori!r} needs a free-orientation inverse operator; this one is fixed."
        )
    if pick_ori == "normal" and inv.orient_frame is None:
        raise ValueError(
            "pick_ori='normal' needs source normals: the forward had no src_nn."
        )
    return method


def _kernel_of(inv, lambda2, method, pick_ori) -> ImagingKernel:
    """Pure: the checked imaging kernel (λ² checked inside jit / vmap too)."""
    lambda2 = lambda2_error_if(lambda2)  # survives jit / vmap (≤ 0, NaN, Inf)
    return method.kernel(inv, lambda2, pick_ori)


@eqx.filter_jit
def _imaging_kernel_jit(inv, lambda2, method, pick_ori):
    return _kernel_of(inv, lambda2, method, pick_ori)


@eqx.debug.assert_max_traces(max_traces=None)  # counts traces (tests read it)
def _apply_traced(data, inv, lambda2, method, pick_ori, batch_size):
    k = _kernel_of(inv, lambda2, method, pick_ori)
    return apply_prepared(k, data, batch_size), k.status


_apply_jit = eqx.filter_jit(_apply_traced)


def _lambda2_array(lambda2, inv):
    return jnp.asarray(lambda2, dtype=jnp.result_type(inv.sing))


def compiled_method(method, *arrays):
    """``method.for_eager()`` when every input is concrete (see ``check``)."""
    return method.for_eager() if is_concrete(*arrays) else method


def imaging_kernel(
    inv: InverseOperator,
    lambda2: RealScalar = 1.0 / 9.0,
    method: str | AbstractInverseMethod = "dSPM",
    *,
    pick_ori: str | None = None,
    nave: RealScalar | None = None,
) -> ImagingKernel:
    """The imaging kernel of an inverse method: ``K``, noise normalisation, status.

    Parameters
    ----------
    inv : InverseOperator
    lambda2 : float or scalar Array
        Regularisation λ² = 1 / SNR² (amplitude SNR); > 0. Traced.
    method : AbstractInverseMethod or {"MNE", "dSPM", "sLORETA", "eLORETA"}
        A method object (``exg_jax.dSPM()``, ``exg_jax.eLORETA(eps=1e-8)``,
        ...) or MNE's string for its default settings.
    pick_ori : {None, "normal", "vector"}
        As :func:`apply_inverse`.
    nave : float > 0 or None
        Number of averaged trials of the data the kernel is for (None: 1),
        as :func:`apply_inverse`.

    Returns
    -------
    kernel : ImagingKernel
        ``kernel.kernel`` (n_src * n_orient, n_chan), A·m/V, whitener
        included, rows Cartesian (x, y, z) per free source (one row per
        source for a fixed operator or ``"normal"``); ``kernel.noise_norm``
        (n_src,) for dSPM / sLORETA (1/(A·m)), else None; ``kernel.status``
        (eLORETA's weight fit). ``apply_imaging_kernel(data, kernel)`` equals
        ``apply_inverse(data, inv, lambda2, method, pick_ori=pick_ori)``.

    Raises
    ------
    RuntimeError
        An iterative method that fails (eLORETA not converged) with
        ``throw=True``.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.inverse._assemble_kernel(inv, None,
    method, pick_ori)`` after ``prepare_inverse_operator(inv, nave, lambda2,
    method)``; MNE's kernel excludes the whitener and has surface-frame rows.
    """
    method = _validate_operator(inv, method, pick_ori, lambda2)
    inv = _with_nave(inv, nave)
    lam = _lambda2_array(lambda2, inv)
    inv = _bare(inv)
    k = _imaging_kernel_jit(inv, lam, compiled_method(method, inv, lam), pick_ori)
    method.check(k.status)
    return k


def _bare(inv: InverseOperator) -> InverseOperator:
    """``inv`` without its static metadata (names, vertices, subject).

    The compiled kernels do not depend on them: stripping them before a
    ``filter_jit`` lets operators of the same shapes share compiled code.
    """
    if (
        inv.ch_names is None
        and inv.vertices is None
        and inv.src_kind is None
        and inv.subject is None
        and inv.noise_cov.ch_names is None
    ):
        return inv
    cov = inv.noise_cov
    if cov.ch_names is not None:
        cov = NoiseCov(cov.data, nfree=cov.nfree)
    return dataclasses.replace(
        inv, noise_cov=cov, ch_names=None, vertices=None, src_kind=None, subject=None
    )


def _with_nave(inv: InverseOperator, nave) -> InverseOperator:
    """The operator for data averaged over ``nave`` trials (None or 1: ``inv``).

    As MNE-Python's ``prepare_inverse_operator(inv, nave, ...)``: the noise
    covariance is divided by ``nave`` (the whitener multiplied by √nave) and
    the source covariance too (``source_std`` divided by √nave). The MNE
    and eLORETA kernels are unchanged; dSPM and sLORETA grow by √nave.
    ``nave`` is checked here (a real scalar, finite and > 0; traced values
    by ``eqx.error_if``).
    """
    if nave is None:
        return inv
    dtype = jnp.result_type(inv.whitener)
    check_positive_finite_scalar("nave", nave, dtype)
    if is_concrete(nave):
        if float(nave) == 1.0:
            return inv
    else:
        nave = eqx.error_if(
            jnp.asarray(nave),
            ~(jnp.isfinite(nave) & (nave > 0)),
            "nave must be finite and > 0; a traced nave (under jit / vmap) was not.",
        )
    nv = jnp.asarray(nave, dtype)
    root = jnp.sqrt(nv)
    cov = NoiseCov(
        jnp.asarray(inv.noise_cov.data, dtype) / nv,
        nfree=inv.noise_cov.nfree,
        ch_names=inv.noise_cov.ch_names,
    )
    return eqx.tree_at(
        lambda i: (i.whitener, i.source_std, i.noise_cov),
        inv,
        (inv.whitener * root, inv.source_std / root, cov),
    )


def _op_dtype(data: np.ndarray, inv: InverseOperator) -> np.ndarray:
    """NumPy data of an MNE object (float64) in the operator's dtype (no copy if equal)."""
    return data.astype(np.dtype(jnp.result_type(inv.whitener)), copy=False)


def _stc(inv, sol, method, pick_ori, status, tmin=0.0, tstep=1.0) -> SourceEstimate:
    """A SourceEstimate with the operator's source identity and the time axis."""
    return SourceEstimate(
        sol,
        inv.src_pos,
        method=method.name,
        pick_ori=pick_ori,
        status=status,
        tmin=tmin,
        tstep=tstep,
        vertices=inv.vertices,
        src_kind=inv.src_kind,
        subject=inv.subject,
    )


def _apply(data, inv, lambda2, method, pick_ori, batch_size, tmin=0.0, tstep=1.0):
    lam = _lambda2_array(lambda2, inv)
    data = jnp.asarray(data)
    bare = _bare(inv)
    sol, status = _apply_jit(
        data, bare, lam, compiled_method(method, data, bare, lam), pick_ori, batch_size
    )
    method.check(status)
    return _stc(inv, sol, method, pick_ori, status, tmin, tstep)


def apply_inverse(
    data: Real[ArrayLike, "chan time"] | NestedSequence | Any,
    inv: InverseOperator,
    lambda2: RealScalar = 1.0 / 9.0,
    method: str | AbstractInverseMethod = "dSPM",
    *,
    pick_ori: str | None = None,
    nave: RealScalar | None = None,
    tmin: RealScalar | None = None,
    sfreq: RealScalar | None = None,
) -> SourceEstimate:
    """Apply an inverse operator to sensor data.

    Parameters
    ----------
    data : Array, shape (n_chan, n_times), V; or mne.Evoked
        Sensor data (the average-reference projection is part of the
        whitener, as MNE applies the projector). An ``mne.Evoked`` needs an
        operator with ``ch_names`` (from
        :func:`~exg_jax.interop.forward_from_mne` or
        :func:`~exg_jax.interop.inverse_from_mne`): its channels are picked by
        name (a channel the operator uses must be present and not marked
        bad), and its ``nave``, times and sampling rate are used.
    inv : InverseOperator
    lambda2 : float or scalar Array
        Regularisation λ² = 1 / SNR² (amplitude SNR); > 0. Traced: new values
        do not recompile, and it can be differentiated.
    method : AbstractInverseMethod or {"MNE", "dSPM", "sLORETA", "eLORETA"}
        A method object (``exg_jax.MNE()``, ``dSPM()``, ``sLORETA()``,
        ``eLORETA(eps=, max_iter=, force_equal=, throw=)``) or MNE's string
        for its default settings. If eLORETA's weight fit does not converge,
        a ``RuntimeError`` is raised (also under ``jit`` / ``vmap``), unless
        ``eLORETA(throw=False)``: then ``stc.status.converged`` is False.
    pick_ori : {None, "normal", "vector"}
        None: for a free inverse the norm √(x² + y² + z²) per source;
        "normal": the component along the source normal; "vector": the three
        Cartesian components.
    nave : float > 0 or None
        Number of trials averaged in ``data``: the noise covariance is divided
        by ``nave`` (dSPM and sLORETA grow by √nave; MNE and eLORETA do not
        change). None: ``evoked.nave`` for an ``mne.Evoked``, else 1. May be
        traced.
    tmin : float or None
        Time of the first sample of array ``data``, s (None: 0). An
        ``mne.Evoked`` brings its own (passing either is a ``ValueError``).
    sfreq : float > 0 or None
        Sampling rate of array ``data``, Hz: ``stc.tstep = 1 / sfreq``. None:
        times in samples (``tstep = 1``).

    Returns
    -------
    stc : SourceEstimate
        ``data`` (n_src, n_times) or (n_src, 3, n_times); ``tmin`` /
        ``tstep`` from an ``mne.Evoked`` or the arguments above;
        ``vertices``, ``src_kind``, ``subject`` from the operator.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.apply_inverse(evoked, inv, lambda2,
    method, pick_ori)`` (with ``evoked.nave``, or ``nave``).
    """
    method = _validate_operator(inv, method, pick_ori, lambda2)
    got = _stream.sensor_data_from_mne("data", data, inv.ch_names, ("Evoked",))
    tmin, tstep = as_times("data", tmin, sfreq, got)
    if got is not None:
        data = _op_dtype(got.data, inv)
        nave = got.nave if nave is None else nave
    check_sensor_data("data", data, inv.n_chan, (2,), "the inverse operator has")
    inv = _with_nave(inv, nave)
    return _apply(data, inv, lambda2, method, pick_ori, None, tmin, tstep)


def _stream_kernel(inv, lambda2, method, pick_ori, reduce):
    """The imaging kernel the streaming engine applies (and the reduction's view).

    ``inv`` is already scaled for ``nave`` (:func:`_with_nave`).
    """
    vector = (
        isinstance(reduce, AbstractReduction)
        and reduce.needs_vector
        and pick_ori is None
        and inv.n_orient == 3
    )
    return imaging_kernel(
        inv, lambda2, method, pick_ori="vector" if vector else pick_ori
    )


def _check_reduce(reduce):
    if reduce is not None and not callable(reduce):
        raise TypeError(
            "reduce must be None, an exg_jax reduction (LabelTimeCourses, SourcePSD, "
            f"BandPower, ...) or a jittable callable, got {type(reduce).__name__}."
        )


def _check_out(out, shape, name="out"):
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"{name} must be a writable NumPy array or np.memmap, got {type(out).__name__}."
        )
    if not out.flags.writeable:
        raise ValueError(
            f"{name} is read-only (open the memmap with mode='r+' or 'w+')."
        )
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have shape {tuple(shape)}, got {tuple(out.shape)}."
        )


def _stream_dtype(data, inv):
    dt = getattr(data, "dtype", None)
    if dt is None or not np.issubdtype(np.dtype(dt), np.floating):
        return np.dtype(jnp.result_type(inv.sing))
    return np.dtype(jnp.result_type(np.dtype(dt), inv.sing))


def _chunk_checker(name, n_chan, ndim, axis):
    """Per-chunk checks (shape, channels, NaN / Inf) run where the chunk is read."""
    done = [0]

    def check(c):
        if c.ndim != ndim:
            raise ValueError(
                f"{name}: a chunk has shape {c.shape}; expected {ndim} dimensions."
            )
        if c.shape[-2] != n_chan:
            raise ValueError(
                f"{name} has {c.shape[-2]} channels but the inverse operator has {n_chan}."
            )
        finite = (
            bool(jnp.all(jnp.isfinite(c)))
            if isinstance(c, jax.Array)
            else bool(np.all(np.isfinite(c)))
        )
        if not finite:
            where = "epochs" if axis == "epochs" else "samples"
            n = c.shape[0] if axis == "epochs" else c.shape[-1]
            raise ValueError(
                f"{name} contains NaN or Inf in {where} {done[0]} to {done[0] + n - 1} "
                "(nothing past them was processed)."
            )
        done[0] += c.shape[0] if axis == "epochs" else c.shape[-1]

    return check


def apply_inverse_epochs(
    epochs: Real[ArrayLike, "epoch chan time"] | NestedSequence | Iterable,
    inv: InverseOperator,
    lambda2: RealScalar = 1.0 / 9.0,
    method: str | AbstractInverseMethod = "dSPM",
    *,
    pick_ori: str | None = None,
    batch_size: IntScalar | None = None,
    reduce: Callable | None = None,
    out: np.ndarray | None = None,
    chunk_size: IntScalar | None = None,
    devices: Sequence[jax.Device] | str | None = None,
    progress: bool | None = None,
    nave: RealScalar | None = None,
    tmin: RealScalar | None = None,
    sfreq: RealScalar | None = None,
) -> SourceEstimate | PyTree:
    """Apply an inverse operator to a batch of epochs, in memory or streamed.

    Two paths, one result:

    * **On the device** (``epochs`` a JAX array, traced or not, and none of
      ``out``, ``chunk_size``, ``devices``): the kernel is assembled once and
      the epochs go through one compiled loop (``jax.lax.map``, ``batch_size``
      epochs per step). Differentiable; ``reduce`` is applied to the whole
      estimate inside the same program.
    * **Streamed** (``epochs`` a NumPy array, an ``np.memmap`` or an iterable
      of chunks, or any of ``out`` / ``chunk_size`` / ``devices`` given, or
      ``reduce`` with concrete data): ``chunk_size`` epochs at a time through
      one compiled step (the last chunk padded; no recompilation). The next
      chunk is read and transferred while the device computes the current
      one, so the device holds O(chunk), never O(n_epochs); only
      ``reduce``'s output (or the unreduced estimate, into ``out``) comes back
      to the host. Not differentiable (host data).

    Parameters
    ----------
    epochs : array, shape (n_epochs, n_chan, n_times), V; or an iterable of chunks; or mne.Epochs
        A JAX or NumPy array, an ``np.memmap`` (larger than memory is fine),
        or an iterable (a generator, a reader) of arrays of shape
        (n_i, n_chan, n_times) (or (n_chan, n_times) for one epoch). An
        ``mne.Epochs`` needs an operator with ``ch_names``: its channels are
        picked by name (``epochs.get_data(picks=...)``, a NumPy array that is
        then streamed like any other) and its times are kept.
    inv, lambda2, method, pick_ori
        As :func:`apply_inverse`.
    batch_size : int or None
        Device path: epochs per compiled step (None: one at a time).
    reduce : AbstractReduction or callable or None
        What to keep, computed on the device per chunk: a built-in
        (:class:`~exg_jax.LabelTimeCourses`, :class:`~exg_jax.SourcePSD`,
        :class:`~exg_jax.BandPower`) or any jittable function of a chunk's
        estimate (n_chunk, n_src[, 3], n_times) returning arrays whose leading
        axis is the chunk's epochs. None: the estimate itself.
    out : writable NumPy array or np.memmap, optional
        Destination of the unreduced estimate (n_epochs, n_src[, 3], n_times)
        or of an array-valued ``reduce``'s output; written chunk by chunk.
    chunk_size : int or None
        Epochs per streamed chunk (rounded up to a multiple of the number of
        devices). None: as many as keep a chunk's unreduced estimate near
        256 MB, at most the number of epochs (an array input smaller than that
        is one chunk, unpadded).
    devices : "all" or sequence of jax.Device, optional
        Shard each chunk's epochs over these devices (a 1-D mesh); the
        operator is replicated. Identical results to one device.
    progress : bool or None
        A progress bar (tqdm) over the streamed epochs; None: only when
        stderr is a terminal.
    nave : float > 0 or None
        Trials averaged in each epoch (None: 1, MNE's default for epochs), as
        :func:`apply_inverse`.

    Returns
    -------
    stc : SourceEstimate
        Without ``reduce``: ``data`` (n_epochs, n_src, n_times) or
        (n_epochs, n_src, 3, n_times); a device array on the device path, a
        NumPy array (or ``out``) when streamed. ``tmin`` / ``tstep`` from an
        ``mne.Epochs`` or from ``tmin`` / ``sfreq`` (as :func:`apply_inverse`;
        default 0 and 1, times in samples); :func:`exg_jax.interop.to_mne`
        gives one MNE source estimate per epoch.
    reduced : pytree of arrays
        With ``reduce``: its output, concatenated over the chunks (NumPy
        arrays when streamed, or ``out``).

    Raises
    ------
    ValueError
        Wrong shapes or channel count, NaN / Inf in the data (streamed: in
        the chunk where they are met, naming the epochs; what came before is
        kept in ``out``), ``reduce`` output without a leading epoch axis.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.apply_inverse_epochs(epochs, inv,
    lambda2, method, pick_ori=pick_ori, nave=nave)`` (MNE's
    ``return_generator=True`` plus the user's own loop for the reduction).
    """
    method = _validate_operator(inv, method, pick_ori, lambda2)
    batch_size = as_int("batch_size", batch_size, minimum=1, allow_none=True)
    chunk_size = as_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    _check_reduce(reduce)
    devs = _stream.as_devices(devices)
    got = _stream.sensor_data_from_mne("epochs", epochs, inv.ch_names, ("BaseEpochs",))
    tmin, tstep = as_times("epochs", tmin, sfreq, got)
    if got is not None:
        epochs = _op_dtype(got.data, inv)
    check_not_mne("epochs", epochs)  # an mne.Epochs is iterable, not a chunk source
    inv = _with_nave(inv, nave)
    host = _stream.is_streamable(epochs)
    traced = not is_concrete(inv, lambda2) or isinstance(epochs, jax.core.Tracer)
    if traced and host and not isinstance(epochs, np.ndarray):
        raise ValueError(
            "epochs is an iterable of chunks: it is streamed eagerly and cannot be "
            "used with a traced operator or lambda2 (inside jit / grad / vmap)."
        )
    streamed = not traced and (
        host
        or reduce is not None
        or out is not None
        or chunk_size is not None
        or devs is not None
    )
    if not streamed:
        if out is not None or chunk_size is not None or devs is not None:
            raise ValueError(
                "out, chunk_size and devices stream concrete data; they cannot be used "
                "on traced epochs (inside jit / grad / vmap)."
            )
        check_sensor_data(
            "epochs", epochs, inv.n_chan, (3,), "the inverse operator has"
        )
        if reduce is None:
            return _apply(
                epochs, inv, lambda2, method, pick_ori, batch_size, tmin, tstep
            )
        kern = _stream_kernel(inv, lambda2, method, pick_ori, reduce)
        return _apply_reduce_jit(jnp.asarray(epochs), kern, reduce, batch_size)
    if isinstance(epochs, np.ndarray | jax.Array):
        check_array("epochs", epochs)
        if epochs.ndim != 3:
            raise ValueError(
                f"epochs must have shape (n_epochs, n_chan, n_times), got {epochs.shape}."
            )
        if epochs.shape[1] != inv.n_chan:
            raise ValueError(
                f"epochs has {epochs.shape[1]} channels but the inverse operator has "
                f"{inv.n_chan}."
            )
        n_total = int(epochs.shape[0])
        n_times = int(epochs.shape[2])
    else:
        it = iter(epochs)
        first = next(it, None)
        if first is None:
            raise ValueError("epochs is an empty iterable.")
        check_array("epochs", first)
        first = np.asarray(first)
        n_times = int(first.shape[-1])
        epochs = itertools.chain([first], it)
        n_total = None
    kern = _stream_kernel(inv, lambda2, method, pick_ori, reduce)
    dtype = _stream_dtype(epochs, inv)
    n_dev = len(devs) if devs else 1
    if chunk_size is None:
        chunk_size = _stream.default_chunk(
            kern.kernel.shape[0], n_times, dtype.itemsize, n_dev, n_total
        )
    chunk_size = -(-chunk_size // n_dev) * n_dev
    if out is not None and reduce is None:
        rows = kern.n_src
        shape = (n_total, rows) + ((3,) if _is_vector(kern) else ()) + (n_times,)
        _check_out(out, shape if n_total is not None else None)
    else:
        _check_out(out, None)
    check = _chunk_checker("epochs", inv.n_chan, 3, "epochs")
    chunks = (_checked(c, check) for c in _stream.iter_epoch_chunks(epochs, chunk_size))
    res = _stream.stream(
        kern, chunks, axis="epochs", chunk_len=chunk_size, reduce=reduce, out=out,
        n_total=n_total, devices=devs, progress=_stream.use_progress(progress),
        dtype=dtype, desc="apply_inverse_epochs",
    )  # fmt: skip
    if reduce is not None:
        return res
    return _stc(inv, res, method, pick_ori, kern.status, tmin, tstep)


def _checked(c, check):
    if not isinstance(c, np.ndarray | jax.Array):
        c = np.asarray(c)
    check(c)
    return c


def _is_vector(k: ImagingKernel) -> bool:
    return k.n_orient == 3 and k.pick_ori == "vector"


@eqx.filter_jit
def _apply_reduce_jit(data, k, reduce, batch_size):
    return reduce(apply_prepared(k, data, batch_size))


def apply_inverse_raw(
    raw: Real[ArrayLike, "chan time"] | Iterable,
    inv: InverseOperator,
    lambda2: RealScalar = 1.0 / 9.0,
    method: str | AbstractInverseMethod = "dSPM",
    *,
    start: IntScalar | None = None,
    stop: IntScalar | None = None,
    pick_ori: str | None = None,
    buffer_size: IntScalar | None = None,
    reduce: Callable | None = None,
    out: np.ndarray | None = None,
    devices: Sequence[jax.Device] | str | None = None,
    progress: bool | None = None,
    nave: RealScalar | None = None,
    tmin: RealScalar | None = None,
    sfreq: RealScalar | None = None,
) -> SourceEstimate | PyTree:
    """Apply an inverse operator to continuous data, streamed in time chunks.

    Parameters
    ----------
    raw : array, shape (n_chan, n_samples), V; or an iterable of chunks; or mne.io.Raw
        A NumPy or JAX array or an ``np.memmap`` (larger than memory is
        fine), or an iterable of (n_chan, n_i) chunks (then ``start`` /
        ``stop`` do not apply). An ``mne.io.Raw`` needs an operator with
        ``ch_names``: the segment ``start:stop`` of its channels, picked by
        name, is read (``raw.get_data``, as MNE reads ``raw[sel, start:stop]``)
        and streamed as an array.
    inv, lambda2, method, pick_ori
        As :func:`apply_inverse`.
    start, stop : int or None
        First and one-past-last sample (0 and n_samples by default), as
        MNE's ``start`` / ``stop``.
    buffer_size : int or None
        Samples per chunk (MNE's ``buffer_size``; rounded up to a multiple of
        the number of devices). None: as many as keep a chunk's unreduced
        estimate near 256 MB. The result does not depend on it.
    reduce : AbstractReduction or callable or None
        A reduction that acts on each sample on its own (``time_local``,
        e.g. ``LabelTimeCourses(mode="mean_flip")``) or any jittable function
        of a chunk (n_src[, 3], n_i) whose output's last axis is time.
    out : writable NumPy array or np.memmap, optional
        Destination of the unreduced estimate (n_src[, 3], n_samples).
    devices, progress
        As :func:`apply_inverse_epochs` (the samples of a chunk are sharded).
    nave : float > 0 or None
        As :func:`apply_inverse` (None: 1, MNE's default for raw data).
    tmin : float or None
        Time of sample 0 of array ``raw``, s (None: 0).
    sfreq : float > 0 or None
        Sampling rate of array ``raw``, Hz (None: times in samples). An
        ``mne.io.Raw`` brings both (passing either is a ``ValueError``).

    Returns
    -------
    stc : SourceEstimate
        ``data`` (n_src, n_samples) or (n_src, 3, n_samples), NumPy (or
        ``out``). ``tmin`` is the time of ``start`` (from the first sample
        of an ``mne.io.Raw``, as MNE; for an array, ``tmin + start / sfreq``,
        or ``start`` in samples with ``tstep = 1`` without ``sfreq``).
    reduced : pytree of NumPy arrays
        With ``reduce``: its output, concatenated along time.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.apply_inverse_raw(raw, inv, lambda2,
    method, start=start, stop=stop, pick_ori=pick_ori,
    buffer_size=buffer_size, nave=nave)``. Every output sample is a
    linear function of its own input sample, so chunks give the same result
    as the whole record.
    """
    method = _validate_operator(inv, method, pick_ori, lambda2)
    buffer_size = as_int("buffer_size", buffer_size, minimum=1, allow_none=True)
    _check_reduce(reduce)
    if isinstance(reduce, AbstractReduction) and not reduce.time_local:
        raise ValueError(
            f"reduce={type(reduce).__name__}(...) does not act on each sample on its "
            "own (time_local is False), so continuous data cannot be reduced in time "
            "chunks; cut the data into epochs (apply_inverse_epochs) instead."
        )
    got = _stream.sensor_data_from_mne(
        "raw", raw, inv.ch_names, ("BaseRaw",), start=start, stop=stop
    )
    # the time of sample 0: an MNE Raw's is already that of its `start`
    tmin, tstep = as_times("raw", tmin, sfreq, got)
    if got is not None:
        raw = _op_dtype(got.data, inv)
        start = stop = None
    check_not_mne("raw", raw)
    inv = _with_nave(inv, nave)
    devs = _stream.as_devices(devices)
    n_dev = len(devs) if devs else 1
    kern = imaging_kernel(inv, lambda2, method, pick_ori=pick_ori)
    if isinstance(raw, np.ndarray | jax.Array) or not _stream.is_streamable(raw):
        check_array("raw", raw)
        if not isinstance(raw, np.ndarray | jax.Array):
            raw = np.asarray(raw)
        if raw.ndim != 2:
            raise ValueError(
                f"raw must have shape (n_chan, n_samples), got {tuple(raw.shape)}."
            )
        if raw.shape[0] != inv.n_chan:
            raise ValueError(
                f"raw has {raw.shape[0]} channels but the inverse operator has "
                f"{inv.n_chan}."
            )
        # NaN / Inf: checked chunk by chunk where each is read (a memmap is not
        # read twice).
        n = int(raw.shape[1])
        start = as_int("start", 0 if start is None else start, minimum=0)
        stop = as_int("stop", n if stop is None else stop, minimum=0)
        if start > n or stop > n or start >= stop:
            raise ValueError(
                f"start and stop must satisfy 0 <= start < stop <= n_samples = {n}, "
                f"got start={start}, stop={stop}."
            )
        n_total = stop - start
        tmin = tmin + start * tstep  # s, or samples without sfreq (tstep = 1)
        if not is_concrete(raw, inv, lambda2):  # traced: one program, no streaming
            if out is not None or devs is not None:
                raise ValueError(
                    "out and devices stream concrete data; they cannot be used with "
                    "traced raw, operator or lambda2 (inside jit / grad / vmap)."
                )
            check_finite("raw", raw)
            stc = _apply(
                raw[:, start:stop], inv, lambda2, method, pick_ori, None, tmin, tstep
            )
            if reduce is None:
                return stc
            return eqx.filter_jit(lambda d, r: r(d))(stc.data, reduce)
        if buffer_size is None:
            rows = kern.kernel.shape[0]
            buffer_size = max(1, _stream.CHUNK_BYTES // (rows * 8))
        buffer_size = min(buffer_size, n_total)
        buffer_size = -(-buffer_size // n_dev) * n_dev
        chunks = _stream.iter_time_chunks(raw, start, stop, buffer_size)
    else:
        if start is not None or stop is not None:
            raise ValueError(
                "start / stop apply to an array, not to an iterable of chunks."
            )
        if buffer_size is None:
            raise ValueError(
                "buffer_size is required with an iterable of chunks (the largest chunk)."
            )
        buffer_size = -(-buffer_size // n_dev) * n_dev
        chunks = iter(raw)
        n_total = None
    dtype = _stream_dtype(raw, inv)
    if out is not None and reduce is None:
        rows = kern.n_src
        shape = (rows,) + ((3,) if _is_vector(kern) else ()) + (n_total,)
        _check_out(out, shape if n_total is not None else None)
    else:
        _check_out(out, None)
    check = _chunk_checker("raw", inv.n_chan, 2, "time")
    chunks = (_checked(c, check) for c in chunks)
    res = _stream.stream(
        kern, chunks, axis="time", chunk_len=buffer_size, reduce=reduce, out=out,
        n_total=n_total, devices=devs, progress=_stream.use_progress(progress),
        dtype=dtype, desc="apply_inverse_raw",
    )  # fmt: skip
    if reduce is not None:
        return res
    return _stc(inv, res, method, pick_ori, kern.status, tmin, tstep)
