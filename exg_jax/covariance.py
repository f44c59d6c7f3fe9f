"""Noise covariance estimation (``NoiseCov``).

OWNER: inverse helper. The ``NoiseCov`` class is the agreed interface.
"""

from __future__ import annotations

import equinox as eqx
from jaxtyping import Array, Float


class NoiseCov(eqx.Module):
    """A sensor noise covariance.

    Attributes
    ----------
    data : Array, shape (n_chan, n_chan), V²
        Symmetric positive semi-definite covariance matrix.
    nfree : int
        Number of samples (degrees of freedom) it was estimated from.
    """

    data: Float[Array, "chan chan"]
    nfree: int = eqx.field(static=True, default=1)
