"""Source estimates (``SourceEstimate``), the output of every inverse method.

A ``SourceEstimate`` carries the source time courses together with what MNE-
Python's source estimates carry: the time axis (``tmin``, ``tstep``) and the
identity of the sources (``vertices``, ``src_kind``, ``subject``), so that
:func:`exg_jax.interop.to_mne` can hand it back to MNE.
"""

from __future__ import annotations

import math
import numbers

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from ._validate import SRC_KINDS, Vertices, as_vertices, check_option
from .status import SolverStatus

__all__ = ["SourceEstimate"]


def _as_seconds(x: float | np.floating | int) -> float:
    """A real number (s) as a Python float (hashable static field); others unchanged."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_):
        return float(x)
    if isinstance(x, np.ndarray) and x.shape == () and x.dtype.kind in "fiu":
        return float(x)
    return x


class SourceEstimate(eqx.Module):
    """Source time courses, with their time axis and source identity.

    Attributes
    ----------
    data : Array, shape (..., n_src, n_times) or (..., n_src, 3, n_times) for ``pick_ori="vector"``
        Leading axes are batch axes (epochs). A JAX array, or a NumPy array
        (or the caller's ``out``) when the data were streamed from the host. Units: A·m for ``"MNE"``,
        ``"eLORETA"`` and an LCMV without weight normalisation;
        dimensionless (noise-normalised) for ``"dSPM"``, ``"sLORETA"`` and a
        weight-normalised LCMV. Vector components are Cartesian (x, y, z).
    src_pos : Array, shape (n_src, 3), m
    method : str (static)
        Name of the method that made it (``"dSPM"``, ``"LCMV"``, ...).
    pick_ori : str or None (static)
    status : SolverStatus or None
        Status of the iterative part of the method (eLORETA's weight fit);
        None for closed-form methods.
    tmin : float (static), s
        Time of the first sample (MNE's ``stc.tmin``); 0 when unknown.
    tstep : float (static), s
        Sampling interval (``1 / sfreq``; MNE's ``stc.tstep``); 1 when the
        sampling rate is unknown (plain arrays): the times then count samples.
    vertices : tuple of int arrays or None (static)
        Source identity in MNE-Python's layout: one array of vertex numbers
        per source space (``(lh, rh)`` for a cortical surface), carried from
        an MNE forward or inverse operator. None: the sources are numbered
        ``0 … n_src − 1`` in one space (sphere grids); see
        :attr:`source_vertices`.
    src_kind : {"surface", "volume", "discrete", "mixed"} or None (static)
        Kind of the MNE source space (``SourceSpaces.kind``); None for a
        source space that did not come from MNE (exported as a volume).
    subject : str or None (static)
        The MRI subject of the MNE source space, when known.

    Notes
    -----
    The metadata fields are static and hashable (the vertex arrays are held
    in a :class:`~exg_jax._validate.Vertices` tuple with a precomputed hash):
    they are never traced, so a ``SourceEstimate`` returned from ``jax.jit``
    or ``jax.vmap`` keeps them unchanged. :func:`exg_jax.interop.to_mne`
    converts it to the matching MNE-Python class.
    """

    data: Float[Array, "..."] | Float[np.ndarray, "..."]
    src_pos: Float[Array, "src 3"]
    method: str = eqx.field(static=True)
    pick_ori: str | None = eqx.field(static=True, default=None)
    status: SolverStatus | None = None
    tmin: float = eqx.field(static=True, default=0.0, converter=_as_seconds)
    tstep: float = eqx.field(static=True, default=1.0, converter=_as_seconds)
    vertices: Vertices | None = eqx.field(
        static=True, default=None, converter=as_vertices
    )
    src_kind: str | None = eqx.field(static=True, default=None)
    subject: str | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        for name in ("tmin", "tstep"):
            v = getattr(self, name)
            if not isinstance(v, float) or not math.isfinite(v):
                raise TypeError(
                    f"SourceEstimate {name} must be a finite real number (s), got {v!r}."
                )
        if not self.tstep > 0:
            raise ValueError(f"SourceEstimate tstep must be > 0 (s), got {self.tstep}.")
        if self.src_kind is not None:
            check_option("src_kind", self.src_kind, SRC_KINDS)
        if self.subject is not None and not isinstance(self.subject, str):
            raise TypeError(
                f"SourceEstimate subject must be a str or None, got {self.subject!r}."
            )
        n_src = self.src_pos.shape[-2] if np.ndim(self.src_pos) >= 2 else None
        if self.vertices is not None and n_src is not None:
            if self.vertices.n_src != n_src:
                raise ValueError(
                    f"vertices hold {self.vertices.n_src} sources but src_pos has {n_src}."
                )

    @property
    def n_src(self) -> int:
        """Number of sources, ``src_pos.shape[-2]``."""
        return int(self.src_pos.shape[-2])

    @property
    def n_times(self) -> int:
        """Number of time samples, ``data.shape[-1]``."""
        return int(np.shape(self.data)[-1])

    @property
    def times(self) -> Float[np.ndarray, " time"]:
        """Sample times, ``tmin + tstep * arange(n_times)`` (s), float64 NumPy."""
        return self.tmin + self.tstep * np.arange(self.n_times, dtype=np.float64)

    @property
    def source_vertices(self) -> Vertices:
        """``vertices``, or ``(arange(n_src),)`` when they are None."""
        if self.vertices is not None:
            return self.vertices
        return Vertices([np.arange(self.n_src)])
