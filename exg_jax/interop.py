"""MNE-Python objects in and out.

In (each returns exg_jax objects; :func:`from_mne` dispatches on the type):

- ``mne.Forward`` → :class:`~exg_jax.ForwardOperator` (:func:`forward_from_mne`),
- ``mne.Covariance`` → :class:`~exg_jax.NoiseCov` (:func:`cov_from_mne`),
- ``mne.minimum_norm.InverseOperator`` → :class:`~exg_jax.InverseOperator`
  (:func:`inverse_from_mne`),
- ``mne.Info`` / ``mne.channels.DigMontage`` → electrode names and positions
  (:func:`montage_from_mne`),
- ``mne.Evoked`` / ``mne.Epochs`` / ``mne.io.Raw`` → sensor data with its
  channel names, times and ``nave`` (:func:`data_from_mne`). The ``apply_*``
  functions also take these objects directly.

Out: :func:`to_mne` turns a :class:`~exg_jax.SourceEstimate` into MNE's
``SourceEstimate`` / ``VectorSourceEstimate`` / ``VolSourceEstimate`` /
``VolVectorSourceEstimate`` / ``MixedSourceEstimate`` (a list of them for a
batch of epochs).

With the default arguments, ``forward_from_mne`` → ``make_inverse_operator``
→ ``apply_inverse`` reproduces MNE-Python's ``make_inverse_operator`` →
``apply_inverse`` (MNE keeps the gain against infinity and applies the
average-reference projector in the whitener; so does exg_jax).

MNE-Python is an optional dependency (the ``test`` extra): it is imported
inside the functions, so that ``import exg_jax.interop`` works without it.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import DTypeLike

from ._stream import SensorData, data_from_mne
from ._validate import Vertices, _mne_class, check_option, check_type
from .covariance import NoiseCov, cov_from_mne
from .forward import ForwardOperator
from .inverse import InverseOperator
from .source_estimate import SourceEstimate

__all__ = [
    "SensorData",
    "cov_from_mne",
    "data_from_mne",
    "forward_from_mne",
    "from_mne",
    "inverse_from_mne",
    "montage_from_mne",
    "to_mne",
]


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


def _float_dtype(dtype: DTypeLike | None, default: np.dtype, what: str) -> np.dtype:
    """The float dtype to store ``what`` in (``dtype`` or ``default``).

    float32 / float64 only. Without ``jax_enable_x64`` JAX holds float32
    only: a float64 request then gives float32, with a warning (never
    silently).
    """
    dt = np.dtype(default if dtype is None else dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}.")
    if dt == np.float64 and jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
        warnings.warn(
            f"{what} is float64 but jax_enable_x64 is off, so JAX stores it as "
            "float32 (results then differ from MNE-Python at float32 precision, "
            "~1e-6). Enable it with jax.config.update('jax_enable_x64', True) "
            "before creating arrays.",
            UserWarning,
            stacklevel=3,
        )
        dt = np.dtype(np.float32)
    return dt


def _as_info(mne, obj: Any, name: str):
    """An ``mne.Info`` from an Info or any object with ``.info``."""
    if isinstance(obj, mne.Info):
        return obj
    info = getattr(obj, "info", None)
    if isinstance(info, mne.Info):
        return info
    raise TypeError(
        f"{name} must be an mne.Info or an MNE object with .info (Evoked, Epochs, "
        f"Raw), got {type(obj).__name__}."
    )


def _src_identity(src) -> tuple[Vertices, str, str | None]:
    """(vertices, kind, subject) of an ``mne.SourceSpaces``."""
    vertices = Vertices([s["vertno"] for s in src])
    subject = getattr(src, "_subject", None)
    return vertices, str(src.kind), None if subject is None else str(subject)


# ``fwd`` / ``obj`` are annotated Any: the MNE-Python classes cannot be named
# without importing mne, which is optional; the functions check the type.
def forward_from_mne(
    fwd: Any,
    *,
    reference: str | None = "average_proj",
    info: Any = None,
    dtype: DTypeLike | None = None,
) -> ForwardOperator:
    """Build a :class:`~exg_jax.forward.ForwardOperator` from an ``mne.Forward``.

    Parameters
    ----------
    fwd : mne.Forward
        A forward solution containing EEG channels (other channel types are
        dropped), free or fixed orientation, Cartesian or surface-oriented.
        Its gain is in V/(A·m), positions in m (head coordinates).
    reference : {"average_proj", "average", None}
        ``"average_proj"`` (default, MNE-Python's convention): MNE's gain as
        is (potentials against infinity) and the average-reference projector
        applied by the inverse (``make_inverse_operator`` / ``make_lcmv``
        whiten with it by default). This reproduces MNE's inverse, whose depth
        prior is computed from the unreferenced gain. ``"average"``: subtract
        the electrode mean from every gain column (the depth prior then sees
        the referenced gain: dSPM differs from MNE by ~1e-3). None: MNE's gain
        as is, no projector by default.
    info : mne.Info or mne.Evoked / mne.Epochs / mne.io.Raw, optional
        The measurement the operator is for, as ``info`` in MNE's
        ``make_inverse_operator(info, fwd, cov)``: only its channels that are
        not marked bad (``info["bads"]``) are kept, in its order. None: the
        forward's EEG channels, in the order of its rows, without
        ``fwd["info"]["bads"]``.
    dtype : {None, float32, float64}
        dtype of the arrays. None: the dtype of MNE's gain (float64 for a
        computed forward; **float32 for one converted with
        ``convert_forward_solution(..., force_fixed=True)``**, which MNE
        stores in float32: pass ``dtype=np.float64`` to compute in float64,
        as MNE does from those float32 values). Without ``jax_enable_x64``
        JAX holds float32 only: a float64 gain is then stored in float32,
        with a ``UserWarning``.

    Returns
    -------
    ForwardOperator
        ``gain``, shape (n_eeg, n_src * n_orient), V/(A·m), with Cartesian
        (x, y, z) columns per source for a free forward (a surface-oriented
        MNE forward is rotated back with its ``source_nn`` frames);
        ``src_pos`` = ``fwd["source_rr"]``, shape (n_src, 3), m; ``src_nn``,
        shape (n_src, 3): for a fixed forward its ``source_nn``; for a free
        surface-oriented forward the normal row of each frame; for a free
        Cartesian forward on surface / discrete source spaces the normals MNE
        uses for loose / fixed inverses (``convert_forward_solution(fwd,
        surf_ori=True, use_cps=True)``: cortical-patch normals on surfaces,
        the source space's ``nn`` on discrete spaces); else None. ``ch_pos``, shape
        (n_eeg, 3), m: the electrode positions from ``fwd["info"]``.
        ``ch_names``: the channels kept. ``vertices`` (``s["vertno"]`` per
        source space), ``src_kind`` (``fwd["src"].kind``) and ``subject``:
        the source identity, carried to the source estimates.

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    TypeError
        ``fwd`` is not an ``mne.Forward``; ``info`` is not an Info (or has
        none); ``dtype`` is not float32 / float64.
    ValueError
        An unknown ``reference``; no good EEG channel left.

    Notes
    -----
    ``forward_from_mne(fwd, info=info)`` followed by ``make_inverse_operator``
    with its defaults is equivalent to MNE's ``make_inverse_operator(info,
    fwd, cov, loose=1, depth=0.8)`` (1e-12 relative, measured in
    ``tests/test_interop.py``).
    """
    mne = _import_mne()
    check_option("reference", reference, ("average_proj", "average", None))
    if not isinstance(fwd, mne.Forward):
        raise TypeError(f"fwd must be an mne.Forward, got {type(fwd).__name__}.")
    finfo = fwd["info"]
    rows = {n: i for i, n in enumerate(fwd["sol"]["row_names"])}
    eeg = {
        finfo["ch_names"][p]
        for p in mne.pick_types(finfo, meg=False, eeg=True, exclude=[])
    }
    bads = set(finfo["bads"])
    if info is not None:
        info = _as_info(mne, info, "info")
        bads |= set(info["bads"])
        order = info["ch_names"]
    else:
        order = fwd["sol"]["row_names"]
    names = [n for n in order if n in eeg and n in rows and n not in bads]
    if not names:
        raise ValueError(
            "The forward solution has no good EEG channel"
            + (" in info." if info is not None else ".")
        )
    sol = np.asarray(fwd["sol"]["data"])
    dt = _float_dtype(dtype, sol.dtype, "The forward's gain")
    gain = sol[[rows[n] for n in names]].astype(np.float64)
    locs = {ch["ch_name"]: ch["loc"][:3] for ch in finfo["chs"]}
    ch_pos = np.array([locs[n] for n in names], dtype=np.float64)
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
                # the normals MNE itself uses for loose / fixed inverses
                # (cortical-patch normals on surfaces, use_cps=True)
                conv = mne.convert_forward_solution(
                    fwd, surf_ori=True, use_cps=True, copy=True, verbose=False
                )
                src_nn = np.array(conv["source_nn"], dtype=np.float64)
                src_nn = src_nn.reshape(n_src, 3, 3)[:, 2, :]
                src_nn = src_nn / np.linalg.norm(src_nn, axis=1, keepdims=True)
            else:
                src_nn = None
    if reference == "average":
        gain = gain - gain.mean(axis=0, keepdims=True)
    vertices, kind, subject = _src_identity(fwd["src"])
    if vertices.n_src != n_src:  # pragma: no cover - an inconsistent mne.Forward
        vertices, kind = None, None
    return ForwardOperator(
        gain=jnp.asarray(gain.astype(dt)),
        src_pos=jnp.asarray(src_pos.astype(dt)),
        src_nn=None if src_nn is None else jnp.asarray(src_nn.astype(dt)),
        orientation=orientation,
        reference=reference,
        ch_pos=jnp.asarray(ch_pos.astype(dt)),
        ch_names=tuple(names),
        vertices=vertices,
        src_kind=kind,
        subject=subject,
    )


def montage_from_mne(
    obj: Any, *, exclude_bads: bool = True
) -> tuple[list[str], np.ndarray]:
    """Electrode names and positions of an ``mne.Info`` or ``mne.channels.DigMontage``.

    Parameters
    ----------
    obj : mne.Info, mne.channels.DigMontage, or an MNE object with ``.info``
        For a montage, the positions are those ``info.set_montage(montage)``
        gives (head coordinates, through the montage's fiducials).
    exclude_bads : bool
        Leave out the channels of ``info["bads"]`` (an Info only).

    Returns
    -------
    names : list of str, length n_eeg
        The EEG channels, in the Info's (montage's) order.
    pos : ndarray, shape (n_eeg, 3), float64, m
        Electrode positions in head coordinates, as MNE's forward uses them.
        Same layout as :func:`exg_jax.standard_montage`.

    Raises
    ------
    TypeError
        ``obj`` is none of these.
    ValueError
        No EEG channel, or channels without a position (NaN / all-zero
        location), named in the message.
    """
    mne = _import_mne()
    if not isinstance(exclude_bads, bool | np.bool_):
        raise TypeError(f"exclude_bads must be True or False, got {exclude_bads!r}.")
    if isinstance(obj, mne.channels.DigMontage):
        ch = [n for n in obj.ch_names]
        if not ch:
            raise ValueError("The montage has no channel.")
        info = mne.create_info(ch, 1000.0, "eeg")
        info.set_montage(obj)
    else:
        info = _as_info(mne, obj, "obj")
    picks = mne.pick_types(
        info, meg=False, eeg=True, exclude="bads" if exclude_bads else []
    )
    if len(picks) == 0:
        raise ValueError("No EEG channel (good EEG channel) in obj.")
    names = [info["ch_names"][p] for p in picks]
    pos = np.array([info["chs"][p]["loc"][:3] for p in picks], dtype=np.float64)
    bad = [
        n
        for n, p in zip(names, pos, strict=True)
        if not np.all(np.isfinite(p)) or not np.any(p)
    ]
    if bad:
        raise ValueError(
            f"{len(bad)} channel(s) have no position: {bad[:10]}; set a montage "
            "(info.set_montage) first."
        )
    return names, pos


def inverse_from_mne(inv: Any) -> InverseOperator:
    """Convert an ``mne.minimum_norm.InverseOperator`` to an exg_jax ``InverseOperator``.

    The operator of an existing MNE pipeline (made by
    ``mne.minimum_norm.make_inverse_operator`` or read with
    ``read_inverse_operator``) then runs through exg_jax: every method
    (``"MNE"``, ``"dSPM"``, ``"sLORETA"``, ``"eLORETA"`` or a method object),
    fixed / loose / free orientation, ``pick_ori`` None / ``"normal"`` /
    ``"vector"``, batches of epochs, streaming, gradients w.r.t. λ².

    Parameters
    ----------
    inv : mne.minimum_norm.InverseOperator

    Returns
    -------
    InverseOperator
        float64 (float32 with a ``UserWarning`` when ``jax_enable_x64`` is
        off). ``whitener`` = MNE's whitener (its non-zero rows) times its
        projector (all of ``inv["projs"]``, the average reference included),
        shape (rank, n_chan); ``eigen_fields``, ``sing``, ``eigen_leads``:
        MNE's SVD restricted to the ``rank`` non-zero components;
        ``source_std`` = √``source_cov``; ``orient_prior``, ``depth_prior``,
        ``noise_cov`` (with ``ch_names``, ``nfree``) as MNE's;
        ``orient_frame`` = MNE's ``source_nn`` frames for a free operator;
        ``ch_names``, ``vertices``, ``src_kind``, ``subject`` from the
        operator. An operator with ``nave != 1`` is rescaled to ``nave = 1``
        (the ``apply_*`` functions take ``nave``).

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    TypeError
        ``inv`` is not an MNE inverse operator.
    ValueError
        An operator whose singular values beyond the whitener's rank are not
        negligible (not one made by MNE's ``make_inverse_operator``).

    Notes
    -----
    The whitener is computed by MNE itself
    (``prepare_inverse_operator(inv, nave=1, lambda2, "MNE")``), so that its
    projectors and rank are MNE's. For a free operator on cortical surfaces
    whose frames are Cartesian (MNE's ``loose=1`` with a Cartesian forward),
    the frames are replaced by MNE's surface frames (what MNE's
    ``pick_ori="normal"`` uses); the other outputs do not depend on the
    frames.
    """
    mne = _import_mne()
    from mne.io.constants import FIFF

    if not isinstance(inv, mne.minimum_norm.InverseOperator):
        raise TypeError(
            "inv must be an mne.minimum_norm.InverseOperator, got "
            f"{type(inv).__name__}."
        )
    prep = mne.minimum_norm.prepare_inverse_operator(
        inv, nave=1, lambda2=1.0, method="MNE", copy="non-src", verbose=False
    )
    dt = _float_dtype(None, np.float64, "An MNE inverse operator")
    ch_names = tuple(prep["noise_cov"]["names"])
    eig = np.asarray(prep["noise_cov"]["eig"])
    nz = eig > 0
    rank = int(np.sum(nz))
    white = np.asarray(prep["whitener"], dtype=np.float64)
    if white.shape[0] == len(eig):
        white = white[nz]
    proj = np.asarray(prep["proj"], dtype=np.float64)
    whitener = white @ proj if proj.ndim == 2 and proj.size else white
    sing_all = np.asarray(prep["sing"], dtype=np.float64)
    if sing_all.size < rank or (
        sing_all.size > rank and np.max(sing_all[rank:]) > 1e-6 * sing_all[0]
    ):
        raise ValueError(
            f"The operator's whitener has rank {rank} but its singular values are "
            f"{sing_all.size}, the extra ones not negligible "
            f"(max {np.max(sing_all[rank:]) if sing_all.size > rank else 0:.3g}); "
            "it does not look like one made by mne.minimum_norm.make_inverse_operator."
        )
    ef = np.asarray(prep["eigen_fields"]["data"], dtype=np.float64)
    if ef.shape[1] == len(eig):
        ef = ef[:, nz]
    eigen_fields = ef[:rank]
    sing = sing_all[:rank]
    source_cov = np.asarray(prep["source_cov"]["data"], dtype=np.float64)
    leads = np.asarray(prep["eigen_leads"]["data"], dtype=np.float64)[:, :rank]
    if prep["eigen_leads_weighted"]:
        leads = leads / np.sqrt(source_cov)[:, None]
    n_src = int(prep["nsource"])
    free = prep["source_ori"] == FIFF.FIFFV_MNE_FREE_ORI
    n_orient = 3 if free else 1
    src = prep["src"]
    src_pos = np.concatenate([s["rr"][s["vertno"]] for s in src], axis=0)
    source_nn = np.asarray(prep["source_nn"], dtype=np.float64)
    frames = None
    if free:
        frames = source_nn.reshape(n_src, 3, 3).copy()
        identity = np.allclose(frames, np.eye(3)[None], atol=1e-6)
        if identity and all(s["type"] == "surf" for s in src):
            # MNE's pick_ori="normal" uses the surface frames here.
            from mne.source_space._source_space import _get_src_nn
            from mne.surface import _normal_orth

            frames = np.concatenate(
                [_normal_orth(_get_src_nn(s, True, s["vertno"])) for s in src], axis=0
            )
            l3 = leads.reshape(n_src, 3, -1)
            leads = np.einsum("nij,njk->nik", frames, l3).reshape(leads.shape)
        src_nn = frames[:, 2, :].copy()
    else:
        src_nn = source_nn.reshape(n_src, 3)

    def prior(key):
        p = prep[key]
        return None if p is None else jnp.asarray(np.asarray(p["data"]).astype(dt))

    cov = prep["noise_cov"]
    cdata = np.asarray(cov["data"], dtype=np.float64)
    if cdata.ndim == 1:
        cdata = np.diag(cdata)
    noise_cov = NoiseCov(
        jnp.asarray(cdata.astype(dt)), nfree=int(cov["nfree"]), ch_names=ch_names
    )
    vertices, kind, subject = _src_identity(src)
    return InverseOperator(
        whitener=jnp.asarray(whitener.astype(dt)),
        eigen_fields=jnp.asarray(eigen_fields.astype(dt)),
        sing=jnp.asarray(sing.astype(dt)),
        eigen_leads=jnp.asarray(leads.astype(dt)),
        source_std=jnp.asarray(np.sqrt(source_cov).astype(dt)),
        orient_prior=prior("orient_prior") if free else None,
        depth_prior=prior("depth_prior"),
        noise_cov=noise_cov,
        src_pos=jnp.asarray(src_pos.astype(dt)),
        src_nn=jnp.asarray(src_nn.astype(dt)),
        n_orient=n_orient,
        source_ori="free" if free else "fixed",
        rank=rank,
        orient_frame=None if frames is None else jnp.asarray(frames.astype(dt)),
        ch_names=ch_names,
        vertices=vertices,
        src_kind=kind,
        subject=subject,
    )


def to_mne(stc: SourceEstimate, src: Any = None, subject: str | None = None) -> Any:
    """Convert an exg_jax :class:`~exg_jax.SourceEstimate` to MNE-Python's class.

    Parameters
    ----------
    stc : SourceEstimate
        Any exg_jax estimate; ``stc.data`` (n_src, n_times) or, for
        ``pick_ori="vector"``, (n_src, 3, n_times), with optional leading
        batch axes (epochs).
    src : mne.SourceSpaces or None
        Source spaces to take the vertices, kind and subject from (their
        total number of sources must be ``n_src``). None: those ``stc``
        carries (from the forward / inverse operator); without them the
        sources are ``vertices = [arange(n_src)]`` of a volume.
    subject : str or None
        The subject; None: from ``src`` or ``stc.subject``.

    Returns
    -------
    mne.SourceEstimate or mne.VectorSourceEstimate or mne.VolSourceEstimate or mne.VolVectorSourceEstimate or mne.MixedSourceEstimate or mne.MixedVectorSourceEstimate, or a list of them
        By the source-space kind: ``"surface"`` → ``SourceEstimate``;
        ``"volume"`` / ``"discrete"`` / unknown → ``VolSourceEstimate``;
        ``"mixed"`` → ``MixedSourceEstimate`` (their vector variants for
        ``pick_ori="vector"``), as MNE's own ``apply_inverse`` returns.
        ``data`` as a float64 NumPy array (vector components Cartesian, as
        MNE's), ``tmin`` / ``tstep`` from ``stc``. With one batch axis, a
        list (one per epoch, as MNE's ``apply_inverse_epochs``); with more,
        nested lists.

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    TypeError
        ``stc`` is not a SourceEstimate; ``src`` not an ``mne.SourceSpaces``.
    ValueError
        ``src`` has another number of sources; data of too few dimensions.
    """
    mne = _import_mne()
    check_type("stc", stc, SourceEstimate, "an exg_jax SourceEstimate")
    vertices, kind, subj = stc.source_vertices, stc.src_kind, stc.subject
    if src is not None:
        if not isinstance(src, mne.SourceSpaces):
            raise TypeError(
                f"src must be an mne.SourceSpaces, got {type(src).__name__}."
            )
        vertices, kind, subj = _src_identity(src)
        if vertices.n_src != stc.n_src:
            raise ValueError(
                f"src has {vertices.n_src} sources but stc has {stc.n_src}."
            )
    if subject is not None:
        if not isinstance(subject, str):
            raise TypeError(f"subject must be a str or None, got {subject!r}.")
        subj = subject
    vector = stc.pick_ori == "vector"
    if kind == "surface":
        klass = mne.VectorSourceEstimate if vector else mne.SourceEstimate
    elif kind == "mixed":
        klass = mne.MixedVectorSourceEstimate if vector else mne.MixedSourceEstimate
    else:
        klass = mne.VolVectorSourceEstimate if vector else mne.VolSourceEstimate
    data = np.asarray(stc.data, dtype=np.float64)
    core = 3 if vector else 2
    if data.ndim < core:
        raise ValueError(
            f"stc.data has shape {data.shape}; expected (..., n_src"
            f"{', 3' if vector else ''}, n_times)."
        )
    verts = [np.array(v) for v in vertices]

    def convert(d):
        if d.ndim > core:
            return [convert(x) for x in d]
        return klass(
            np.array(d), vertices=[v.copy() for v in verts], tmin=stc.tmin,
            tstep=stc.tstep, subject=subj,
        )  # fmt: skip

    return convert(data)


def from_mne(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """Convert an MNE-Python object to its exg_jax counterpart.

    Parameters
    ----------
    obj : MNE-Python object
        ``mne.Forward`` → :func:`forward_from_mne`; ``mne.Covariance`` →
        :func:`cov_from_mne`; ``mne.minimum_norm.InverseOperator`` →
        :func:`inverse_from_mne`; ``mne.Info`` or
        ``mne.channels.DigMontage`` → :func:`montage_from_mne`;
        ``mne.Evoked`` / ``mne.Epochs`` / ``mne.io.Raw`` →
        :func:`data_from_mne`.
    *args, **kwargs
        Passed to the converter.

    Returns
    -------
    ForwardOperator or NoiseCov or InverseOperator or (names, positions) or SensorData

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    TypeError
        ``obj`` is of a type with no converter (the message names it).
    """
    mne = _import_mne()
    if isinstance(obj, mne.Forward):
        return forward_from_mne(obj, *args, **kwargs)
    if isinstance(obj, mne.Covariance):
        return cov_from_mne(obj, *args, **kwargs)
    if isinstance(obj, mne.minimum_norm.InverseOperator):
        return inverse_from_mne(obj, *args, **kwargs)
    if isinstance(obj, mne.Info | mne.channels.DigMontage):
        return montage_from_mne(obj, *args, **kwargs)
    if _mne_class(obj) in ("Evoked", "BaseEpochs", "BaseRaw"):
        return data_from_mne(obj, *args, **kwargs)
    raise TypeError(
        f"from_mne cannot convert a {type(obj).__module__}.{type(obj).__qualname__}; "
        "supported: mne.Forward, mne.Covariance, mne.minimum_norm.InverseOperator, "
        "mne.Info, mne.channels.DigMontage, mne.Evoked, mne.Epochs, mne.io.Raw."
    )
