"""Source estimates (``SourceEstimate``), the output of every inverse method."""

from __future__ import annotations

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from .status import SolverStatus

__all__ = ["SourceEstimate"]


class SourceEstimate(eqx.Module):
    """Source time courses.

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
    """

    data: Float[Array, "..."] | Float[np.ndarray, "..."]
    src_pos: Float[Array, "src 3"]
    method: str = eqx.field(static=True)
    pick_ori: str | None = eqx.field(static=True, default=None)
    status: SolverStatus | None = None
