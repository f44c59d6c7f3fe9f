"""Conversions from MNE-Python objects. MNE is imported inside functions only."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def forward_from_mne(fwd, reference="average"):
    """Build a :class:`~exg_jax.forward.ForwardOperator` from an ``mne.Forward``.

    Parameters
    ----------
    fwd : mne.Forward
        A forward solution containing EEG channels (other channel types are
        dropped), free or fixed orientation, Cartesian or surface-oriented.
    reference : {"average", None}
        ``"average"``: subtract the electrode mean from every gain column
        (MNE's forwards are potentials against infinity; the average-reference
        projector is applied later, in the inverse); ``None``: keep MNE's gain
        as is.

    Returns
    -------
    fwd : ForwardOperator
        ``gain`` in V/(A·m) with Cartesian (x, y, z) columns per source for a
        free forward (a surface-oriented MNE forward is rotated back with its
        ``source_nn`` frames), ``src_pos`` = ``fwd["source_rr"]`` (m, head
        coordinates), ``src_nn``: for a fixed forward its ``source_nn``; for a
        free surface-oriented forward the normal row of each frame; for a
        free Cartesian forward on surface / discrete source spaces the
        source space's ``nn`` of the used vertices; else None. ``ch_pos``:
        the electrode positions from ``fwd["info"]``.
    """
    import mne

    from .forward import ForwardOperator

    if reference not in ("average", None):
        raise ValueError(f"reference must be 'average' or None, got {reference!r}.")
    if not isinstance(fwd, mne.Forward):
        raise ValueError(f"fwd must be an mne.Forward, got {type(fwd).__name__}.")
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
