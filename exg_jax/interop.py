"""Conversions from MNE-Python objects to exg_jax ones.

``forward_from_mne`` turns an ``mne.Forward`` into a
:class:`~exg_jax.forward.ForwardOperator`; ``from_mne`` dispatches on the type
of an MNE object (only ``mne.Forward`` for now).

MNE-Python is an optional dependency (the ``test`` extra): it is imported
inside the functions, so that ``import exg_jax.interop`` works without it.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ._validate import check_option
from .forward import ForwardOperator

__all__ = ["forward_from_mne", "from_mne"]


def _import_mne():
    # Imported here, not at module level, on purpose: a module-level import
    # would make MNE-Python a hard dependency of exg_jax (it is optional).
    try:
        import mne
    except ImportError as err:  # pragma: no cover - mne is installed for the tests
        raise ImportError(
            "exg_jax.interop needs MNE-Python: pip install mne (or exg-jax[test])."
        ) from err
    return mne


# ``fwd`` / ``obj`` are annotated Any: the MNE-Python classes cannot be named
# without importing mne, which is optional; the functions check the type.
def forward_from_mne(fwd: Any, *, reference: str | None = "average") -> ForwardOperator:
    """Build a :class:`~exg_jax.forward.ForwardOperator` from an ``mne.Forward``.

    Parameters
    ----------
    fwd : mne.Forward
        A forward solution containing EEG channels (other channel types are
        dropped), free or fixed orientation, Cartesian or surface-oriented.
        Its gain is in V/(A·m), positions in m (head coordinates).
    reference : {"average", None}
        ``"average"``: subtract the electrode mean from every gain column
        (MNE's forwards are potentials against infinity; the average-reference
        projector is applied later, in the inverse); ``None``: keep MNE's gain
        as is.

    Returns
    -------
    ForwardOperator
        ``gain``, shape (n_eeg, n_src * n_orient), V/(A·m), float64, with
        Cartesian (x, y, z) columns per source for a free forward (a
        surface-oriented MNE forward is rotated back with its ``source_nn``
        frames); ``src_pos`` = ``fwd["source_rr"]``, shape (n_src, 3), m;
        ``src_nn``, shape (n_src, 3): for a fixed forward its ``source_nn``;
        for a free surface-oriented forward the normal row of each frame; for a
        free Cartesian forward on surface / discrete source spaces the source
        space's ``nn`` of the used vertices; else None. ``ch_pos``, shape
        (n_eeg, 3), m: the electrode positions from ``fwd["info"]``.

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    TypeError
        ``fwd`` is not an ``mne.Forward``.
    ValueError
        An unknown ``reference``, or no EEG channel in ``fwd``.
    """
    mne = _import_mne()
    check_option("reference", reference, ("average", None))
    if not isinstance(fwd, mne.Forward):
        raise TypeError(f"fwd must be an mne.Forward, got {type(fwd).__name__}.")
    info = fwd["info"]
    picks = mne.pick_types(info, meg=False, eeg=True, exclude=[])
    if len(picks) == 0:
        raise ValueError("The forward solution has no EEG channels.")
    gain = np.array(fwd["sol"]["data"][picks], dtype=np.float64)
    ch_pos = np.array([info["chs"][p]["loc"][:3] for p in picks], dtype=np.float64)
    src_pos = np.array(fwd["source_rr"], dtype=np.float64)
    n_src = src_pos.shape[0]
    fixed = mne.forward.is_fixed_orient(fwd)
    source_nn = np.array(fwd["source_nn"], dtype=np.float64)
    if fixed:
        orientation = "fixed"
        src_nn = source_nn.reshape(n_src, 3)
    else:
        orientation = "free"
        frames = source_nn.reshape(n_src, 3, 3)
        if fwd["surf_ori"]:
            g3 = gain.reshape(gain.shape[0], n_src, 3)
            gain = np.einsum("cni,nij->cnj", g3, frames).reshape(gain.shape)
            src_nn = frames[:, 2, :].copy()
        else:
            kinds = {s["type"] for s in fwd["src"]}
            if kinds <= {"surf", "discrete"}:
                src_nn = np.concatenate(
                    [s["nn"][s["vertno"]] for s in fwd["src"]], axis=0
                )
                src_nn = src_nn / np.linalg.norm(src_nn, axis=1, keepdims=True)
            else:
                src_nn = None
    if reference == "average":
        gain = gain - gain.mean(axis=0, keepdims=True)
    return ForwardOperator(
        gain=jnp.asarray(gain),
        src_pos=jnp.asarray(src_pos),
        src_nn=None if src_nn is None else jnp.asarray(src_nn),
        orientation=orientation,
        reference=reference,
        ch_pos=jnp.asarray(ch_pos),
    )


def from_mne(obj: Any, **kwargs: Any) -> ForwardOperator:
    """Convert an MNE-Python object to its exg_jax counterpart.

    Parameters
    ----------
    obj : mne.Forward
        The object to convert (only ``mne.Forward`` for now).
    **kwargs
        Passed to the converter (``forward_from_mne``: ``reference``).

    Returns
    -------
    ForwardOperator
        For an ``mne.Forward``: ``forward_from_mne(obj, **kwargs)``.

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    TypeError
        ``obj`` is of a type with no converter (the message names it).
    """
    mne = _import_mne()
    if isinstance(obj, mne.Forward):
        return forward_from_mne(obj, **kwargs)
    raise TypeError(
        f"from_mne cannot convert a {type(obj).__module__}.{type(obj).__qualname__}; "
        "supported: mne.Forward."
    )
