"""The generic EEG forward operator, ``ForwardOperator``.

A ``ForwardOperator`` is the lead field of a source space, whatever head model
produced it. Builders live beside it: ``exg_jax.sphere_forward``
(concentric-sphere models: ``make_sphere_forward``, ``make_sphere_forward_free``)
and ``exg_jax.interop.forward_from_mne`` (an ``mne.Forward``); a BEM or
realistic-head builder would be one more module importing this one.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._validate import check_option

__all__ = ["ForwardOperator"]

_ORIENTATIONS = ("fixed", "free")
_REFERENCES = ("average", None)


class ForwardOperator(eqx.Module):
    """An EEG lead field with its source space.

    Attributes
    ----------
    gain : Array, shape (n_chan, n_src * n_orient), V/(A·m)
        Lead field: the potential at each electrode of a unit current dipole
        (1 A·m) along each source's orientation(s). For ``orientation="free"``
        the columns are ordered (s0x, s0y, s0z, s1x, ...), as in MNE-Python.
        float32 or float64.
    src_pos : Array, shape (n_src, 3), m
        Source positions (head coordinates); ``n_src >= 1``.
    src_nn : Array, shape (n_src, 3), or None
        Unit source normals (required for fixed orientation; optional for free,
        where they enable loose / fixed / ``pick_ori="normal"`` inverses).
    orientation : {"fixed", "free"}
        Static: fixes the gain's shape (``n_orient`` = 1 or 3).
    reference : {"average", None}
        Static. ``"average"``: the electrode mean was subtracted from every
        column (needs ``n_chan >= 2``); ``None``: potentials against infinity.
    ch_pos : Array, shape (n_chan, 3), m, or None
        Electrode positions (head coordinates), when known.

    Raises
    ------
    ValueError
        On construction: an unknown ``orientation`` / ``reference``, a gain that
        is not 2-D or has no row, no source, ``reference="average"`` with one
        channel, a column count other than ``n_orient * n_src``, a fixed
        operator without ``src_nn``, or ``src_nn`` not shaped like ``src_pos``.
    TypeError
        A float16 / bfloat16 gain.
    """

    gain: Float[Array, "chan src_orient"]
    src_pos: Float[Array, "src 3"]
    src_nn: Float[Array, "src 3"] | None
    orientation: str = eqx.field(static=True)
    reference: str | None = eqx.field(static=True)
    ch_pos: Float[Array, "chan 3"] | None = None

    def __check_init__(self):
        check_option("orientation", self.orientation, _ORIENTATIONS)
        check_option("reference", self.reference, _REFERENCES)
        n_orient = self.n_orient
        if self.gain.ndim < 2:
            raise ValueError(
                f"gain must be 2-D (chan, src * orient), got shape {self.gain.shape}."
            )
        if jnp.dtype(self.gain.dtype).name in ("float16", "bfloat16"):
            raise TypeError(
                f"gain has dtype {jnp.dtype(self.gain.dtype).name}; use float32 or float64."
            )
        if self.gain.shape[-2] < 1:
            raise ValueError("gain must have at least one channel (row), got 0.")
        if self.src_pos.ndim < 2 or self.src_pos.shape[-2] < 1:
            raise ValueError(
                f"src_pos must hold at least one source, got shape {self.src_pos.shape}."
            )
        if self.reference == "average" and self.gain.shape[-2] < 2:
            raise ValueError(
                "reference='average' needs at least 2 channels (the gain of 1 "
                "average-referenced channel is all zero); use reference=None."
            )
        if self.src_pos.shape[-1] != 3:
            raise ValueError(
                f"src_pos must have shape (n_src, 3), got {self.src_pos.shape}."
            )
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
        """Orientations per source: 3 for ``"free"``, 1 for ``"fixed"``."""
        return 3 if self.orientation == "free" else 1

    @property
    def n_src(self) -> int:
        """Number of sources, ``src_pos.shape[-2]``."""
        return int(self.src_pos.shape[-2])

    @property
    def n_chan(self) -> int:
        """Number of channels (electrodes), ``gain.shape[-2]``."""
        return int(self.gain.shape[-2])
