"""Inverse operators (``InverseOperator``), source estimates and MNE / dSPM / sLORETA.

OWNER: inverse helper. The two classes below are the agreed interface used by
``eloreta.py``, ``resolution.py`` and ``snr.py``; field names mirror
MNE-Python's inverse-operator dict. The inverse helper may add fields but must
not rename these.
"""

from __future__ import annotations

import equinox as eqx
from jaxtyping import Array, Float

from .covariance import NoiseCov


class InverseOperator(eqx.Module):
    """A (whitened, SVD-decomposed) minimum-norm inverse operator.

    Attributes mirror MNE-Python's inverse-operator dict:
    ``whitener`` (n_white, n_chan), ``eigen_fields`` (n_comp, n_white) = Uᵀ,
    ``sing`` (n_comp,), ``eigen_leads`` (n_src * n_orient, n_comp) = V,
    ``source_cov`` (n_src * n_orient,), ``orient_prior`` (n_src * n_orient,) or None,
    ``depth_prior`` (n_src * n_orient,) or None, ``noise_cov``, ``src_pos``,
    ``src_nn``, static ``n_orient`` (1 or 3), ``source_ori`` ("fixed" | "free"),
    ``rank`` (number of non-zero whitener eigenvalues, static) and
    ``eigen_leads_weighted`` (static bool, True after eLORETA).
    """

    whitener: Float[Array, "white chan"]
    eigen_fields: Float[Array, "comp white"]
    sing: Float[Array, " comp"]
    eigen_leads: Float[Array, "src_orient comp"]
    source_cov: Float[Array, " src_orient"]
    orient_prior: Float[Array, " src_orient"] | None
    depth_prior: Float[Array, " src_orient"] | None
    noise_cov: NoiseCov
    src_pos: Float[Array, "src 3"]
    src_nn: Float[Array, "src 3"] | None
    n_orient: int = eqx.field(static=True)
    source_ori: str = eqx.field(static=True)
    rank: int = eqx.field(static=True)
    eigen_leads_weighted: bool = eqx.field(static=True, default=False)


class SourceEstimate(eqx.Module):
    """Source time courses.

    Attributes
    ----------
    data : Array, shape (..., n_src, n_times) or (..., n_src, 3, n_times) for ``pick_ori="vector"``
        Leading axes are batch axes (epochs).
    src_pos : Array, shape (n_src, 3), m
    method : str (static)
    pick_ori : str or None (static)
    status : pytree or None
        Solver status for iterative methods (eLORETA: an ``EloretaStatus`` with
        iterations, final relative change and a converged flag); None otherwise.
    """

    data: Array
    src_pos: Float[Array, "src 3"]
    method: str = eqx.field(static=True)
    pick_ori: str | None = eqx.field(static=True, default=None)
    status: object = None
