"""What to keep of a source estimate: reductions computed on the device.

A batch user rarely keeps the unreduced source estimate of every epoch
(10⁴ epochs × 10242 sources × 500 samples is 205 GB in float32); they keep
region time courses, band power or a per-epoch feature. A reduction is an
object with a fixed interface (:class:`AbstractReduction`): a pure, jittable
function of one chunk's source estimate, applied by the streaming engine
(:func:`exg_jax.apply_inverse_epochs`, :func:`exg_jax.apply_inverse_raw`)
on the device, so that only its output comes back to the host.

Any jittable callable works as ``reduce=`` too; the classes here are the
built-ins.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PyTree, Real

from ._typing import IntScalar, NestedSequence
from ._validate import (
    as_float_array,
    as_int,
    check_array,
    check_finite,
    check_option,
    check_shape,
    is_concrete,
)

__all__ = ["AbstractReduction", "LabelTimeCourses", "parcellate"]


class AbstractReduction(eqx.Module):
    """A reduction of source estimates, applied chunk by chunk on the device.

    Subclasses implement :meth:`__call__`. The engine calls it on

    * epochs: ``sol`` of shape (n_chunk, n_src, n_times), or
      (n_chunk, n_src, 3, n_times) when :attr:`needs_vector` is True and the
      operator has free orientations; the output's leading axis must be the
      chunk's epoch axis (the engine concatenates the chunks' outputs along
      it and drops the padding of the last chunk);
    * continuous data: ``sol`` of shape (n_src, n_chunk_times) or
      (n_src, 3, n_chunk_times); the output's last axis must be time
      (concatenated along it). Only reductions with :attr:`time_local`
      True (each sample reduced on its own) are allowed there.

    Class attributes
    ----------------
    needs_vector : bool
        True: with a free-orientation operator and ``pick_ori=None`` the
        reduction receives the three noise-normalised Cartesian components
        (``pick_ori="vector"``) and combines them itself (e.g. a PSD sums
        the components' spectra, as MNE-Python does); False: it receives the
        estimate for the requested ``pick_ori``.
    time_local : bool
        True when output sample ``t`` depends on input sample ``t`` only
        (region means), so that continuous data can be reduced in time
        chunks. A subclass may make it a property of the instance (read it
        from the instance, not the class) when it depends on its settings.
    """

    needs_vector: ClassVar[bool] = False
    time_local: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, sol: Float[Array, "..."]) -> PyTree[Array]:
        """Reduce one chunk's source estimate (see the class docstring)."""


# --------------------------------------------------------------------------- #
# Region (label) time courses
# --------------------------------------------------------------------------- #
_LABEL_MODES = ("mean", "mean_flip", "pca_flip", "max")
_HI = jax.lax.Precision.HIGHEST


def _concrete_array(name: str, x: Any) -> np.ndarray:
    """``x`` as a concrete NumPy array (``TypeError`` for tracers and non-arrays)."""
    check_array(name, x)
    if not is_concrete(x):
        raise TypeError(
            f"{name} must be a concrete array (it is used eagerly, at construction); "
            "got a JAX tracer: build the reduction outside jax.jit / jax.vmap."
        )
    return np.asarray(x)


def _label_sign_flip(nn: np.ndarray) -> np.ndarray:
    """MNE-Python's ``label_sign_flip`` for the normals ``nn`` (n_vert, 3) of one label."""
    _, _, vh = np.linalg.svd(nn, full_matrices=False)
    dots = nn @ vh[0]
    if np.mean(dots) < 0:
        dots *= -1
    return np.sign(dots)


class LabelTimeCourses(AbstractReduction):
    """Region (label) time courses, as MNE-Python's ``extract_label_time_course``.

    Built eagerly from concrete inputs; calling it is a pure, jittable,
    vmappable function of the source estimate.

    Parameters
    ----------
    labels : array_like of int, shape (n_src,)
        The region of each source, in ``0 ... n_labels - 1``; a negative
        value puts the source in no region (it is ignored). Sources in a
        region are taken in source order (as MNE-Python does, whose label
        vertices are sorted).
    mode : {"mean_flip", "mean", "pca_flip", "max"}
        How a region's sources are combined (see Notes).
    src_nn : array_like, shape (n_src, 3), optional
        Source normals (unit vectors, e.g. the second output of
        :func:`exg_jax.ico_source_space`). Required for ``"mean_flip"`` and
        ``"pca_flip"``, ignored otherwise.
    n_labels : int, optional
        Number of regions; default ``max(labels) + 1``. Every region must
        contain at least one source.

    Attributes
    ----------
    labels : ndarray of int, shape (n_src,)
    mode : str (static)
    n_labels, n_src : int (static)
    sizes : ndarray of int, shape (n_labels,)
        Number of sources in each region.
    flip : ndarray, shape (n_src,) or None
        MNE-Python's sign flip of each source (±1, 0 for a normal orthogonal
        to the region's dominant direction and for sources in no region);
        None for ``"mean"`` and ``"max"``.
    weights : ndarray, shape (n_labels, n_src) or None
        ``"mean"`` / ``"mean_flip"``: the output is ``weights @ sol``.
    index, mask : ndarray, shape (n_labels, max_size) or None
        ``"pca_flip"`` / ``"max"``: the sources of each region, padded to the
        largest region (with the region's first source; ``mask`` is 0 there).

    Notes
    -----
    Equivalent to ``mne.extract_label_time_course(stc, labels, src,
    mode=mode)`` for a fixed-orientation (surface) source estimate, with
    ``labels[l]`` the sources ``i`` with ``labels[i] == l``. For a region with
    sources ``i = 1 ... n`` whose time courses form the rows of
    ``X`` (n, n_times) and normals ``n_i``:

    * ``"mean"``: ``y(t) = (1/n) Σ_i X_i(t)``.
    * ``"mean_flip"``: ``y(t) = (1/n) Σ_i f_i X_i(t)``, with the sign flip
      of ``mne.label_sign_flip``: ``v`` the first right singular vector of
      the normals ``N`` (n, 3), ``d = N v``, ``d ← -d`` if ``mean(d) < 0``,
      ``f = sign(d)``.
    * ``"pca_flip"``: with the SVD ``X = U S Vᵀ``,
      ``y = sign(U[:, 0] · f) · (‖S‖₂ / √n) · V[:, 0]``; ``‖S‖₂ / √n`` is the
      root-mean-square norm of the region's time courses,
      ``‖X‖_F / √n``. The result does not depend on the SVD's sign
      convention. Computed from the top eigenvector of the smaller Gram
      matrix (``X Xᵀ`` or ``Xᵀ X``, of ``X / max|X|``), batched over regions.
      Not time-local: the output at ``t`` depends on the whole window.
    * ``"max"``: ``y(t) = max_i |X_i(t)|`` (MNE-Python's ``"max"``: the
      maximum *absolute* value, unsigned).

    ``"mean"``, ``"mean_flip"`` are one matrix product (with
    ``weights``, of size n_labels × n_src). The output has the units of the
    estimate (A·m, or dimensionless for noise-normalised methods).
    """

    labels: Int[np.ndarray, " src"]
    sizes: Int[np.ndarray, " label"]
    flip: Float[np.ndarray, " src"] | None
    weights: Float[np.ndarray, "label src"] | None
    index: Int[np.ndarray, "label size"] | None
    mask: Float[np.ndarray, "label size"] | None
    mode: str = eqx.field(static=True)
    n_labels: int = eqx.field(static=True)
    n_src: int = eqx.field(static=True)

    def __init__(
        self,
        labels: Int[ArrayLike, " src"] | NestedSequence,
        mode: str = "mean_flip",
        src_nn: Real[ArrayLike, "src 3"] | NestedSequence | None = None,
        n_labels: IntScalar | None = None,
    ):
        check_option("mode", mode, _LABEL_MODES)
        lab = _concrete_array("labels", labels)
        if not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"labels must be an integer array, got dtype {lab.dtype}.")
        if lab.ndim != 1 or lab.size == 0:
            raise ValueError(
                f"labels must have shape (n_src,) with n_src >= 1, got {lab.shape}."
            )
        lab = lab.astype(np.int64)
        n_src = lab.size
        n_max = int(lab.max()) + 1
        nl = as_int("n_labels", n_labels, minimum=1, allow_none=True)
        if nl is None:
            if n_max < 1:
                raise ValueError(
                    "labels puts no source in a region (all values are negative)."
                )
            nl = n_max
        elif n_max > nl:
            raise ValueError(
                f"labels must lie in [0, n_labels - 1] = [0, {nl - 1}] (or be "
                f"negative: no region), got {n_max - 1}."
            )
        lab = np.where(lab < 0, -1, lab)
        sizes = np.bincount(lab[lab >= 0], minlength=nl)
        empty = np.flatnonzero(sizes == 0)
        if empty.size:
            raise ValueError(
                f"labels leaves {empty.size} of the {nl} regions empty (no source): "
                f"{empty[:10].tolist()}{' ...' if empty.size > 10 else ''}."
            )

        flip = None
        if mode in ("mean_flip", "pca_flip"):
            if src_nn is None:
                raise ValueError(
                    f"src_nn (the source normals, shape (n_src, 3)) is required "
                    f"for mode={mode!r}."
                )
            nn = _concrete_array("src_nn", src_nn).astype(np.float64)
            check_shape("src_nn", nn, (n_src, 3))
            check_finite("src_nn", nn)
            flip = np.zeros(n_src)
            for k in range(nl):
                sel = np.flatnonzero(lab == k)
                flip[sel] = _label_sign_flip(nn[sel])

        weights = index = mask = None
        if mode in ("mean", "mean_flip"):
            f = np.ones(n_src) if flip is None else flip
            weights = np.zeros((nl, n_src))
            inside = np.flatnonzero(lab >= 0)
            weights[lab[inside], inside] = f[inside] / sizes[lab[inside]]
        else:
            m = int(sizes.max())
            order = np.argsort(lab, kind="stable")
            order = order[lab[order] >= 0]  # sources grouped by region, in order
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            pos = np.arange(m)
            valid = pos[None, :] < sizes[:, None]
            where = np.where(valid, starts[:, None] + pos[None, :], starts[:, None])
            index = order[where]
            mask = valid.astype(np.float64)

        self.labels = lab
        self.sizes = sizes.astype(np.int64)
        self.flip = flip
        self.weights = weights
        self.index = index
        self.mask = mask
        self.mode = mode
        self.n_labels = nl
        self.n_src = n_src

    @property
    def time_local(self) -> bool:  # type: ignore[override]
        """True except for ``"pca_flip"`` (a whole-window SVD)."""
        return self.mode != "pca_flip"

    def __call__(
        self, sol: Real[Array, "*batch src time"]
    ) -> Float[Array, "*batch label time"]:
        """Region time courses of ``sol``.

        Parameters
        ----------
        sol : Array, shape (..., n_src, n_times)
            Source estimate (any leading batch axes), e.g. A·m. Its float
            dtype is kept (integers are cast to the default float dtype).

        Returns
        -------
        Array, shape (..., n_labels, n_times)
            Region time courses, in the units of ``sol``.
        """
        sol = as_float_array("sol", sol)
        if sol.ndim < 2 or sol.shape[-2] != self.n_src:
            raise ValueError(
                f"sol must have shape (..., n_src={self.n_src}, n_times), "
                f"got {tuple(sol.shape)}."
            )
        dt = sol.dtype
        if self.mode in ("mean", "mean_flip"):
            w = jnp.asarray(self.weights, dt)
            return jnp.matmul(w, sol, precision=_HI)
        if self.mode == "max":
            x = jnp.take(sol, jnp.asarray(self.index), axis=-2)  # (..., L, m, T)
            return jnp.max(jnp.abs(x), axis=-2)
        return _pca_flip(
            sol,
            jnp.asarray(self.index),
            jnp.asarray(self.mask, dt),
            jnp.asarray(self.flip, dt),
            jnp.asarray(self.sizes, dt),
        )


@jax.jit
def _pca_flip(sol, index, mask, flip, sizes):
    """MNE-Python's ``_pca_flip`` for all regions at once (padded), pure.

    sol : (..., n_src, T); index, mask : (L, m) (mask 0 on padding);
    flip : (n_src,); sizes : (L,) region sizes. Returns (..., L, T). Jitted
    so that an eager call compiles once, not op by op.
    """
    x = jnp.take(sol, index, axis=-2) * mask[:, :, None]  # (..., L, m, T)
    flip = jnp.take(flip, index) * mask
    amax = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
    nonzero = amax > 0
    xs = x / jnp.where(nonzero, amax, 1)  # scale-free: no float32 underflow
    fro = jnp.sqrt(jnp.sum(xs * xs, axis=(-2, -1)))  # ‖X‖_F / max|X|
    scale = fro * amax[..., 0, 0] / jnp.sqrt(sizes)
    m, t = x.shape[-2], x.shape[-1]
    if m <= t:
        g = jnp.einsum("...it,...jt->...ij", xs, xs, precision=_HI)
        u0 = jnp.linalg.eigh(g)[1][..., :, -1]  # (..., L, m)
        v = jnp.einsum("...i,...it->...t", u0, xs, precision=_HI)
        nv = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
        v = v / jnp.where(nv > 0, nv, 1)
        proj = jnp.sum(u0 * flip, axis=-1)
    else:
        g = jnp.einsum("...it,...is->...ts", xs, xs, precision=_HI)
        v = jnp.linalg.eigh(g)[1][..., :, -1]  # (..., L, T)
        u = jnp.einsum("...it,...t->...i", xs, v, precision=_HI)
        proj = jnp.sum(u * flip, axis=-1)
    out = (jnp.sign(proj) * scale)[..., None] * v
    return jnp.where(nonzero[..., 0], out, 0)


# --------------------------------------------------------------------------- #
# Parcellation
# --------------------------------------------------------------------------- #
def parcellate(
    src_pos: Real[ArrayLike, "src 3"] | NestedSequence,
    n_labels: IntScalar,
    *,
    seed: IntScalar = 0,
    n_iter: IntScalar = 50,
) -> Int[np.ndarray, " src"]:
    """Split sources into ``n_labels`` compact regions (k-means on positions).

    Parameters
    ----------
    src_pos : array_like, shape (n_src, 3), m
        Source positions.
    n_labels : int
        Number of regions, in ``[1, n_src]``.
    seed : int
        Seed of the initialisation (the first centre is a source drawn with
        ``numpy.random.default_rng(seed)``; the others are chosen by
        farthest-point sampling). The result is deterministic given the seed.
    n_iter : int
        Maximum number of Lloyd iterations (>= 0); stops earlier when the
        assignment no longer changes.

    Returns
    -------
    labels : ndarray of int64, shape (n_src,)
        Region of each source, in ``0 ... n_labels - 1``; every region holds
        at least one source. Regions are numbered in order of their first
        source (source 0 is in region 0). Use with
        :class:`LabelTimeCourses`.

    Notes
    -----
    Lloyd's k-means (squared Euclidean distance) in float64 NumPy. A region
    left empty by an assignment step takes the source farthest from its
    centre among the regions with two sources or more, so every region is
    non-empty, also with duplicated positions.
    """
    pos = _concrete_array("src_pos", src_pos).astype(np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
        raise ValueError(f"src_pos must have shape (n_src, 3), got {pos.shape}.")
    check_finite("src_pos", pos)
    n_src = pos.shape[0]
    k = as_int("n_labels", n_labels)
    if not 1 <= k <= n_src:
        raise ValueError(f"n_labels must lie in [1, n_src={n_src}], got {k}.")
    seed = as_int("seed", seed)
    n_iter = as_int("n_iter", n_iter, minimum=0)

    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n_src))]
    d2 = np.sum((pos - pos[chosen[0]]) ** 2, axis=1)
    for _ in range(1, k):
        d2[chosen] = -1.0  # never pick a source twice (duplicated positions)
        nxt = int(np.argmax(d2))
        chosen.append(nxt)
        d2 = np.minimum(d2, np.sum((pos - pos[nxt]) ** 2, axis=1))
    centers = pos[chosen].copy()

    def assign(centers):
        dist = (
            np.sum(pos**2, axis=1)[:, None]
            - 2 * pos @ centers.T
            + np.sum(centers**2, axis=1)[None, :]
        )
        lab = np.argmin(dist, axis=1)
        counts = np.bincount(lab, minlength=k)
        for e in np.flatnonzero(counts == 0):  # re-seed empty regions
            own = np.sum((pos - centers[lab]) ** 2, axis=1)
            own[counts[lab] < 2] = -1.0
            p = int(np.argmax(own))
            counts[lab[p]] -= 1
            lab[p] = e
            counts[e] = 1
            centers[e] = pos[p]
        return lab

    lab = assign(centers)
    for _ in range(n_iter):
        sums = np.zeros((k, 3))
        np.add.at(sums, lab, pos)
        centers = sums / np.bincount(lab, minlength=k)[:, None]
        new = assign(centers)
        if np.array_equal(new, lab):
            break
        lab = new
    # Number the regions by their first source: stable, independent of the init.
    _, first = np.unique(lab, return_index=True)
    rank = np.empty(k, np.int64)
    rank[np.argsort(first)] = np.arange(k)
    return rank[lab]
