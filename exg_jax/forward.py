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

from ._validate import (
    SRC_KINDS,
    Vertices,
    as_ch_names,
    as_vertices,
    check_option,
)

__all__ = ["ForwardOperator"]

_ORIENTATIONS = ("fixed", "free")
_REFERENCES = ("average", "average_proj", None)


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
    reference : {"average", "average_proj", None}
        Static. ``"average"``: the electrode mean was subtracted from every
        column; ``"average_proj"``: potentials against infinity, and the
        data are average referenced by a projector that the inverse applies
        (MNE-Python's convention, the default of
        :func:`~exg_jax.interop.forward_from_mne`: the depth prior then sees
        the unreferenced gain, as in MNE); ``None``: potentials against
        infinity, no projector by default. Both average references need
        ``n_chan >= 2``. ``make_inverse_operator`` / ``make_lcmv`` whiten
        with the average-reference projector by default for ``"average"``
        and ``"average_proj"``.
    ch_pos : Array, shape (n_chan, 3), m, or None
        Electrode positions (head coordinates), when known.
    ch_names : tuple of str or None
        Static. Channel names of the gain's rows, when known (a list is
        converted). With names, MNE data objects and covariances are matched
        to the rows by name.
    vertices : tuple of int arrays or None
        Static. Source identity in MNE-Python's layout (one array of vertex
        numbers per source space, total ``n_src``), carried to the inverse
        operator and the source estimates; None for sources numbered
        ``0 … n_src − 1`` (sphere grids).
    src_kind : {"surface", "volume", "discrete", "mixed"} or None
        Static. Kind of the MNE source space the sources came from.
    subject : str or None
        Static. MRI subject of the MNE source space.

    Raises
    ------
    ValueError
        On construction: an unknown ``orientation`` / ``reference``, a gain that
        is not 2-D or has no row, no source, an average reference with one
        channel, a column count other than ``n_orient * n_src``, a fixed
        operator without ``src_nn``, ``src_nn`` not shaped like ``src_pos``,
        ``ch_names`` of another length than the gain's rows (or with
        duplicates), ``vertices`` of another total than ``n_src``.
    TypeError
        A float16 / bfloat16 gain; ``ch_names`` not a sequence of str.
    """

    gain: Float[Array, "chan src_orient"]
    src_pos: Float[Array, "src 3"]
    src_nn: Float[Array, "src 3"] | None
    orientation: str = eqx.field(static=True)
    reference: str | None = eqx.field(static=True)
    ch_pos: Float[Array, "chan 3"] | None = None
    ch_names: tuple[str, ...] | None = eqx.field(
        static=True, default=None, converter=as_ch_names
    )
    vertices: Vertices | None = eqx.field(
        static=True, default=None, converter=as_vertices
    )
    src_kind: str | None = eqx.field(static=True, default=None)
    subject: str | None = eqx.field(static=True, default=None)

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
        if self.reference in ("average", "average_proj") and self.gain.shape[-2] < 2:
            raise ValueError(
                f"reference={self.reference!r} needs at least 2 channels (the gain of 1 "
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
        if self.ch_names is not None and len(self.ch_names) != self.gain.shape[-2]:
            raise ValueError(
                f"ch_names has {len(self.ch_names)} names but the gain has "
                f"{self.gain.shape[-2]} channels (rows)."
            )
        if self.vertices is not None and self.vertices.n_src != self.src_pos.shape[-2]:
            raise ValueError(
                f"vertices hold {self.vertices.n_src} sources but src_pos has "
                f"{self.src_pos.shape[-2]}."
            )
        if self.src_kind is not None:
            check_option("src_kind", self.src_kind, SRC_KINDS)
        if self.subject is not None and not isinstance(self.subject, str):
            raise TypeError(f"subject must be a str or None, got {self.subject!r}.")

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
