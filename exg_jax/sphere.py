"""Spherical multi-shell head models (``SphereModel``) and their series / Berg–Scherg parameters.

OWNER: sphere helper. The class below is the agreed interface; the rest of the
module (``berg_scherg_params``, exact series coefficients,
``fit_sphere_to_headshape``) is filled in by the sphere helper.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validate import is_concrete


class SphereModel(eqx.Module):
    """Concentric spherical shells with piecewise-constant conductivity.

    Parameters
    ----------
    radii : array_like, shape (n_shells,), m
        Shell radii, innermost first, strictly increasing.
    conductivities : array_like, shape (n_shells,), S/m
        Conductivity of each shell (innermost = brain), all > 0.
    center : array_like, shape (3,), m
        Centre of the spheres in head coordinates.

    Notes
    -----
    ``SphereModel()`` is the 3-shell default: radii (0.067, 0.070, 0.075) m,
    conductivities (0.33, 0.0042, 0.33) S/m, centre (0, 0, 0.04) m.
    Value checks run only on concrete inputs, so a model can be built from
    traced parameters inside ``jax.grad`` / ``jax.vmap``.
    """

    radii: Float[Array, " shell"]
    conductivities: Float[Array, " shell"]
    center: Float[Array, "3"]

    def __init__(
        self,
        radii=(0.067, 0.070, 0.075),
        conductivities=(0.33, 0.0042, 0.33),
        center=(0.0, 0.0, 0.04),
    ):
        self.radii = jnp.asarray(radii)
        self.conductivities = jnp.asarray(conductivities)
        self.center = jnp.asarray(center)

    def __check_init__(self):
        r, s, c = self.radii, self.conductivities, self.center
        # Leading batch axes are allowed (a stacked batch of models for vmap).
        if r.ndim < 1 or r.shape[-1] < 1:
            raise ValueError(f"radii must be a 1-D array with >= 1 shell, got shape {r.shape}.")
        if s.shape != r.shape:
            raise ValueError(
                f"conductivities (shape {s.shape}) must match radii (shape {r.shape})."
            )
        if c.ndim < 1 or c.shape[-1] != 3:
            raise ValueError(f"center must have shape (3,), got {c.shape}.")
        if not is_concrete(r, s, c):
            return
        rn, sn, cn = np.asarray(r), np.asarray(s), np.asarray(c)
        if not np.all(np.isfinite(rn)):
            raise ValueError(f"radii must be finite, got {rn!r}.")
        if not np.all(np.isfinite(sn)):
            raise ValueError(f"conductivities must be finite, got {sn!r}.")
        if not np.all(np.isfinite(cn)):
            raise ValueError(f"center must be finite, got {cn!r}.")
        if np.any(rn <= 0):
            raise ValueError(f"radii must be > 0, got {rn!r}.")
        if np.any(np.diff(rn) <= 0):
            raise ValueError(f"radii must be strictly increasing (innermost first), got {rn!r}.")
        if np.any(sn <= 0):
            raise ValueError(f"conductivities must be > 0, got {sn!r}.")

    @property
    def n_shells(self) -> int:
        return int(self.radii.shape[-1])

    @classmethod
    def single_shell(cls, radius=0.09, conductivity=0.33, center=(0.0, 0.0, 0.04)):
        """Homogeneous sphere of ``radius`` (m) and ``conductivity`` (S/m)."""
        return cls(jnp.atleast_1d(jnp.asarray(radius)), jnp.atleast_1d(jnp.asarray(conductivity)), center)

    @classmethod
    def mne_default(cls, head_radius=0.09, center=(0.0, 0.0, 0.04)):
        """MNE-Python's 4-shell model: relative radii 0.90/0.92/0.97/1.0, σ 0.33/1.0/0.004/0.33 S/m."""
        rel = jnp.asarray([0.90, 0.92, 0.97, 1.0])
        return cls(rel * jnp.asarray(head_radius), jnp.asarray([0.33, 1.0, 0.004, 0.33]), center)
