"""EEG forward operators: ``ForwardOperator`` and spherical-head lead fields.

OWNER: forward helper (``make_sphere_forward``, ``make_sphere_forward_free``).
The ``ForwardOperator`` class is the agreed interface shared by all stages;
``ForwardOperator.from_mne`` delegates to ``exg_jax._mne_interop`` (owned by the
inverse helper).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._validate import check_option


class ForwardOperator(eqx.Module):
    """An EEG lead field with its source space.

    Attributes
    ----------
    gain : Array, shape (n_chan, n_src * n_orient), V/(A·m)
        Lead field. For ``orientation="free"`` the columns are ordered
        (s0x, s0y, s0z, s1x, ...), as in MNE-Python.
    src_pos : Array, shape (n_src, 3), m
        Source positions (head coordinates).
    src_nn : Array, shape (n_src, 3) or None
        Unit source normals (required for fixed orientation; optional for free,
        where they enable loose / fixed / ``pick_ori="normal"`` inverses).
    orientation : {"fixed", "free"}
        Static: fixes the gain's shape.
    reference : {"average", None}
        ``"average"``: the electrode mean was subtracted from every column;
        ``None``: potentials against infinity.
    ch_pos : Array, shape (n_chan, 3), m, or None
        Electrode positions, when known.
    """

    gain: Float[Array, "chan src_orient"]
    src_pos: Float[Array, "src 3"]
    src_nn: Float[Array, "src 3"] | None
    orientation: str = eqx.field(static=True)
    reference: str | None = eqx.field(static=True)
    ch_pos: Float[Array, "chan 3"] | None = None

    def __check_init__(self):
        check_option("orientation", self.orientation, ("fixed", "free"))
        check_option("reference", self.reference, ("average", None))
        n_orient = 3 if self.orientation == "free" else 1
        if self.gain.ndim < 2:
            raise ValueError(f"gain must be 2-D (chan, src * orient), got shape {self.gain.shape}.")
        if self.src_pos.shape[-1] != 3:
            raise ValueError(f"src_pos must have shape (n_src, 3), got {self.src_pos.shape}.")
        if self.gain.shape[-1] != n_orient * self.src_pos.shape[-2]:
            raise ValueError(
                f"gain has {self.gain.shape[-1]} columns but {self.src_pos.shape[-2]} sources "
                f"with orientation={self.orientation!r} need {n_orient * self.src_pos.shape[-2]}."
            )
        if self.orientation == "fixed" and self.src_nn is None:
            raise ValueError("A fixed-orientation ForwardOperator needs src_nn.")
        if self.src_nn is not None and self.src_nn.shape != self.src_pos.shape:
            raise ValueError(
                f"src_nn shape {self.src_nn.shape} must equal src_pos shape {self.src_pos.shape}."
            )

    @property
    def n_orient(self) -> int:
        return 3 if self.orientation == "free" else 1

    @property
    def n_src(self) -> int:
        return int(self.src_pos.shape[-2])

    @property
    def n_chan(self) -> int:
        return int(self.gain.shape[-2])

    @classmethod
    def from_mne(cls, fwd, *, reference="average"):
        """Build from an ``mne.Forward`` (EEG channels). See ``exg_jax._mne_interop``."""
        from ._mne_interop import forward_from_mne

        return forward_from_mne(fwd, reference=reference)


def _as_float(x):
    return jnp.asarray(x)
