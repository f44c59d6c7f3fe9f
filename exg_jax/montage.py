"""Electrode montages: built-in ideal-sphere 10-20 / 10-10, and MNE-Python's.

No download and no MNE needed for the built-in ones: electrode positions are
generated on an ideal sphere from the rules of the 10-20 / 10-10 systems, so
the demo and examples run on a fresh machine. With MNE-Python installed,
:func:`standard_montage` also takes the name of any of its EEG montages
(head coordinates, optionally projected onto a sphere). :func:`fit_sphere_robust`
fits a sphere to electrodes or a scalp mesh (NumPy, robust losses).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Float, Real

from ._typing import IntScalar, NestedSequence, Point3, RealScalar
from ._validate import as_int, as_point3, as_positive_scalar, check_option

__all__ = [
    "MONTAGES",
    "SphereFit",
    "available_montages",
    "fit_sphere_robust",
    "mne_montage_names",
    "standard_montage",
]

#: Names of the built-in (ideal-sphere, no MNE needed) montages.
MONTAGES = ("standard_1020", "standard_1010")

# Rows of the 10-10 system: (row prefix, lateral electrode name on the 10 %
# ring (left side), azimuth of that lateral electrode in degrees from the nose
# towards the left ear, polar angle of the midline electrode from the vertex in
# degrees (negative = posterior)).
_ROWS = (
    ("AF", "AF7", 36.0, 54.0),
    ("F", "F7", 54.0, 36.0),
    ("FC", "FT7", 72.0, 18.0),
    ("C", "T7", 90.0, 0.0),
    ("CP", "TP7", 108.0, -18.0),
    ("P", "P7", 126.0, -36.0),
    ("PO", "PO7", 144.0, -54.0),
)
_RING_POLAR = 72.0  # the 10 % ring: 10 % of the nasion–inion arc above it

_SET_1020 = (
    "Fp1", "Fpz", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4",
    "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "Oz", "O2",
)  # fmt: skip


def _unit(polar_deg: float, azimuth_left_deg: float) -> np.ndarray:
    """Unit vector; polar angle from +z, azimuth from +y (nose) towards -x (left)."""
    th, ph = np.deg2rad(polar_deg), np.deg2rad(azimuth_left_deg)
    return np.array([-np.sin(th) * np.sin(ph), np.sin(th) * np.cos(ph), np.cos(th)])


def _midline(polar: float) -> np.ndarray:
    # negative polar angle = posterior half of the midline
    return _unit(abs(polar), 0.0 if polar >= 0 else 180.0)


def _arc_points(a: np.ndarray, m: np.ndarray, n: int) -> list[np.ndarray]:
    """Points dividing the circle arc a -> m (on the circle through a, m and a's mirror) in n equal angles."""
    a_mirror = a * np.array([-1.0, 1.0, 1.0])
    normal = np.cross(a - m, a_mirror - m)
    nrm = np.linalg.norm(normal)
    if nrm < 1e-12:  # the three points are on a great circle through the vertex
        normal = np.cross(a, m)
        nrm = np.linalg.norm(normal)
    normal = normal / nrm
    c = normal * np.dot(normal, a)  # circle centre (plane ∩ sphere)
    u, v = a - c, m - c
    rad = np.linalg.norm(u)
    e1 = u / rad
    e2 = np.cross(normal, e1)
    if np.dot(e2, v) < 0:
        e2 = -e2
    total = np.arctan2(np.dot(v, e2), np.dot(v, e1))
    return [
        c + rad * (np.cos(t) * e1 + np.sin(t) * e2)
        for t in np.linspace(0, total, n + 1)
    ]


def _all_1010() -> dict[str, np.ndarray]:
    pos: dict[str, np.ndarray] = {}
    # Midline and the 10 % ring.
    for name, polar in (("Fpz", 72.0), ("AFz", 54.0), ("Fz", 36.0), ("FCz", 18.0),
                        ("Cz", 0.0), ("CPz", -18.0), ("Pz", -36.0), ("POz", -54.0),
                        ("Oz", -72.0)):  # fmt: skip
        pos[name] = _midline(polar)
    for name_l, name_r, az in (("Fp1", "Fp2", 18.0), ("O1", "O2", 162.0)):
        pos[name_l] = _unit(_RING_POLAR, az)
        pos[name_r] = _unit(_RING_POLAR, -az)
    right_lateral = {"AF7": "AF8", "F7": "F8", "FT7": "FT8", "T7": "T8", "TP7": "TP8",
                     "P7": "P8", "PO7": "PO8"}  # fmt: skip
    for prefix, lat, az, mid_polar in _ROWS:
        a = _unit(_RING_POLAR, az)
        pts = _arc_points(a, _midline(mid_polar), 4)  # lateral, 5, 3, 1, midline
        for k, p in zip((None, 5, 3, 1), pts[:4], strict=True):
            left = lat if k is None else f"{prefix}{k}"
            right = right_lateral[lat] if k is None else f"{prefix}{k + 1}"
            pos[left] = p
            pos[right] = p * np.array([-1.0, 1.0, 1.0])
    return pos


class SphereFit(NamedTuple):
    """A sphere fitted to points by :func:`fit_sphere_robust`.

    Attributes
    ----------
    radius : float, m
    center : ndarray, shape (3,), m
    residuals : ndarray, shape (n_points,), m
        Signed geometric residuals ``|p_i - center| - radius`` (positive
        outside the sphere).
    weights : ndarray, shape (n_points,)
        Final robust weights in [0, 1] (all 1 for ``loss="squares"``); a
        point with weight 0 was rejected as an outlier.
    scale : float, m
        Robust scale of the residuals (1.4826 × their median absolute
        deviation) at the last iteration.
    n_iter : int
        Gauss–Newton iterations run.
    converged : bool
        The last step moved the centre and radius by less than ``tol`` ×
        the point cloud's size.
    """

    radius: float
    center: np.ndarray
    residuals: np.ndarray
    weights: np.ndarray
    scale: float
    n_iter: int
    converged: bool


#: Losses of :func:`fit_sphere_robust` and their tuning constants (in units of
#: the robust scale; 95 % efficiency at Gaussian residuals).
_LOSSES = {"squares": None, "huber": 1.345, "tukey": 4.685}
# Smallest singular value of the centred points relative to the largest below
# which the points are called coplanar (as exg_jax.sphere.fit_sphere_to_headshape).
_DEGENERATE_TOL = 1e-6


def _robust_weights(r: np.ndarray, loss: str) -> tuple[np.ndarray, float]:
    k = _LOSSES[loss]
    mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    if k is None:
        return np.ones_like(r), mad
    # A floor on the scale: points exactly on a sphere have residuals at
    # rounding level; they all keep weight 1.
    scale = max(mad, 1e-9)
    u = np.abs(r) / scale
    if loss == "huber":
        w = np.minimum(1.0, k / np.maximum(u, 1e-300))
    else:  # Tukey's biweight
        w = np.where(u < k, (1.0 - (u / k) ** 2) ** 2, 0.0)
    return w, mad


def fit_sphere_robust(
    points: Real[ArrayLike, "point 3"] | NestedSequence,
    *,
    loss: str = "huber",
    max_iter: IntScalar = 100,
    tol: RealScalar = 1e-12,
) -> SphereFit:
    """Robust least-squares sphere through points (NumPy, float64).

    Parameters
    ----------
    points : array_like, shape (n_points, 3), m
        At least 4 finite points that are not coplanar. Not modified.
    loss : {"huber", "tukey", "squares"}
        Loss on the geometric residuals ``|p_i - c| - R`` divided by their
        robust scale (1.4826 × MAD): ``"huber"`` (k = 1.345, convex: every
        point keeps some weight), ``"tukey"`` (biweight, c = 4.685: points
        beyond 4.685 scales get weight 0) or ``"squares"`` (plain geometric
        least squares, as :func:`exg_jax.sphere.fit_sphere_to_headshape`).
    max_iter : int
        Most Gauss–Newton iterations (>= 1).
    tol : float
        Stop when a step changes the centre and radius by less than ``tol``
        times the RMS distance of the points from their mean.

    Returns
    -------
    SphereFit
        ``radius`` (m), ``center`` (m), ``residuals``, ``weights``,
        ``scale``, ``n_iter``, ``converged``.

    Raises
    ------
    TypeError
        ``points`` not numeric, ``loss`` not a string, ``max_iter`` not an
        integer.
    ValueError
        ``points`` not of shape (n, 3) with n >= 4, not finite, or coplanar;
        an unknown ``loss``; ``max_iter`` < 1; ``tol`` not finite and > 0.

    Notes
    -----
    The points are centred and scaled; the algebraic fit (``|p|² = 2 p·c + R²
    − |c|²``, linear in ``c`` and ``R² − |c|²``) gives the start; iteratively
    reweighted Gauss–Newton steps on the geometric residuals follow, with
    the robust scale re-estimated at every step. Points exactly on a sphere
    give that sphere to rounding with any loss. A mesh of a whole head
    (face, neck) or a cap of electrodes is not a sphere: the robust losses
    down-weight the points that do not fit the bulk (MNE-Python's
    ``fit_sphere_to_headshape``, an algebraic fit, once gave 97 m on
    ``standard_1005``; mne-tools/mne-python#3516).
    """
    if isinstance(points, str | bytes):
        raise TypeError(f"points must be an array of shape (n, 3), got {points!r}.")
    try:
        p = np.array(points, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"points must be numeric, shape (n, 3): {err}") from err
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (n_points, 3), got {p.shape}.")
    if p.shape[0] < 4:
        raise ValueError(f"points must contain at least 4 points, got {p.shape[0]}.")
    if not np.all(np.isfinite(p)):
        raise ValueError("points must be finite (found NaN or Inf).")
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a str, got {type(loss).__name__}.")
    check_option("loss", loss, tuple(_LOSSES))
    max_iter = as_int("max_iter", max_iter, minimum=1)
    tol = as_positive_scalar("tol", tol)
    mean = p.mean(axis=0)
    q = p - mean
    size = float(np.sqrt(np.mean(np.sum(q**2, axis=1))))
    sv = np.linalg.svd(q, compute_uv=False)
    if sv[0] == 0 or sv[2] <= _DEGENERATE_TOL * sv[0]:
        raise ValueError(
            "points are degenerate (coincident, collinear or coplanar; singular "
            f"values of the centred points {sv!r} m): no unique sphere."
        )
    q = q / size
    a = np.column_stack([2.0 * q, np.ones(len(q))])
    sol = np.linalg.lstsq(a, np.sum(q**2, axis=1), rcond=None)[0]
    c, rad = sol[:3], float(np.sqrt(max(sol[3] + sol[:3] @ sol[:3], 1e-30)))
    converged = False
    n_iter = 0
    w = np.ones(len(q))
    mad = 0.0
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        d = q - c
        dist = np.linalg.norm(d, axis=1)
        r = dist - rad
        w, mad = _robust_weights(r, loss)
        jac = np.column_stack(
            [-d / np.maximum(dist, 1e-300)[:, None], -np.ones(len(q))]
        )
        sw = np.sqrt(w)
        step = np.linalg.lstsq(jac * sw[:, None], -r * sw, rcond=None)[0]
        c = c + step[:3]
        rad = rad + float(step[3])
        if np.linalg.norm(step) < tol:
            converged = True
            break
    d = q - c
    r = np.linalg.norm(d, axis=1) - rad
    w, mad = _robust_weights(r, loss)
    return SphereFit(
        radius=rad * size,
        center=mean + c * size,
        residuals=r * size,
        weights=w,
        scale=mad * size,
        n_iter=n_iter,
        converged=converged,
    )


# ---------------------------------------------------------------------------
# MNE-Python's montages
# ---------------------------------------------------------------------------


def _import_mne():
    try:
        import mne
    except ImportError as err:  # pragma: no cover - exercised without MNE
        raise ImportError(
            "MNE-Python's montages need MNE-Python: `pip install mne` (or "
            "`pip install exg-jax[test]`). The built-in montages "
            f"{', '.join(MONTAGES)} need nothing."
        ) from err
    return mne


def mne_montage_names() -> tuple[str, ...]:
    """Names of MNE-Python's built-in EEG montages (``make_standard_montage``).

    Returns
    -------
    tuple of str
        ``mne.channels.get_builtin_montages()`` without the fNIRS optode
        layouts (their description mentions fNIRS, e.g. ``artinis-octamon``)
        and without ``"standard_1020"`` / ``"standard_1010"``, which always
        name this module's ideal-sphere montages (MNE ≥ 1.13 calls its own
        ``colin27_1020``; older versions list ``standard_1020``).

    Raises
    ------
    ImportError
        MNE-Python is not installed.
    """
    mne = _import_mne()
    out = []
    for name, desc in mne.channels.get_builtin_montages(descriptions=True):
        if "fnirs" in desc.lower() or name in MONTAGES:
            continue
        out.append(name)
    return tuple(out)


def available_montages() -> tuple[str, ...]:
    """Every name :func:`standard_montage` accepts here.

    Returns
    -------
    tuple of str
        The built-in ideal-sphere montages (``MONTAGES``), then MNE-Python's
        EEG montages (:func:`mne_montage_names`) when MNE is installed.
    """
    try:
        return MONTAGES + mne_montage_names()
    except ImportError:
        return MONTAGES


def _mne_positions(kind: str) -> tuple[list[str], np.ndarray]:
    """Channel names and head-coordinate positions (m) of an MNE montage."""
    mne = _import_mne()
    mont = mne.channels.make_standard_montage(kind)
    ch_pos = mont.get_positions()["ch_pos"]
    names = list(ch_pos)
    xyz = np.array([ch_pos[n] for n in names], dtype=float).reshape(-1, 3)
    native_head_t = mne.channels.compute_native_head_t(mont, on_missing="raise")
    pos = mne.transforms.apply_trans(native_head_t, xyz)
    keep = np.all(np.isfinite(pos), axis=1)
    if not np.any(keep):
        raise ValueError(f"MNE montage {kind!r} has no finite electrode position.")
    return [n for n, k in zip(names, keep, strict=True) if k], pos[keep]


def _unknown_kind(kind: str) -> ValueError:
    try:
        names = mne_montage_names()
        extra = f"; MNE-Python's: {', '.join(names)}"
    except ImportError:
        extra = " (install MNE-Python for its montages: `pip install mne`)"
    hint = ""
    if kind.startswith("standard_"):
        hint = " (MNE-Python >= 1.13 names its standard_* montages colin27_*)"
    return ValueError(
        f"Invalid value for the 'kind' parameter: {kind!r}{hint}. Allowed values "
        f"are the built-in {', '.join(MONTAGES)}{extra}."
    )


def standard_montage(
    kind: str = "standard_1010",
    *,
    radius: RealScalar | None = None,
    center: Point3 | None = None,
    project: bool | np.bool_ | None = None,
) -> tuple[list[str], Float[np.ndarray, "elec 3"]]:
    """Electrode names and positions of a standard montage.

    Parameters
    ----------
    kind : str
        ``"standard_1020"`` or ``"standard_1010"``: the built-in ideal-sphere
        montages (no MNE needed). ``"standard_1020"``: 21 electrodes (10-20 set
        with Fpz and Oz, modern T7/T8/P7/P8 names). ``"standard_1010"``: 69
        electrodes of the 10-10 system from the AF row to the PO row.
        Any other name: one of MNE-Python's EEG montages
        (:func:`mne_montage_names`, e.g. ``"biosemi64"``, ``"easycap-M1"``,
        ``"fsaverage_1010"``, ``"GSN-HydroCel-129"``), when MNE is installed.
        :func:`available_montages` lists them all.
    radius : float or None, m
        Radius of the sphere the electrodes are placed on (the scalp); a
        finite number > 0 (NumPy scalars accepted). Built-in montages: None
        means 0.075 m. MNE montages: giving it projects the electrodes (see
        ``project``); None there means the radius of the sphere fitted to the
        montage.
    center : array_like, shape (3,), m, or None
        Sphere centre in head coordinates (x right, y nose, z up). Built-in
        montages: None means (0, 0, 0.04) m. MNE montages: giving it projects
        the electrodes; None there means the fitted centre.
    project : bool or None
        MNE montages only. False: the positions as MNE-Python gives them, in
        head coordinates (MNE's native frame transformed by its fiducials,
        as ``info.set_montage`` does). True: every electrode moves along the
        ray from the centre of the sphere fitted to the montage
        (:func:`fit_sphere_robust`, Huber loss) onto the sphere of
        ``radius`` about ``center``. None (default): True when ``radius`` or
        ``center`` is given, else False. The built-in montages lie on their
        sphere by construction: ``project=False`` is an error there.

    Returns
    -------
    names : list of str, length n_elec
    pos : ndarray, shape (n_elec, 3), m
        Electrode positions in head coordinates.

    Raises
    ------
    TypeError
        ``kind`` not a string, ``radius`` not a real scalar, ``center`` not
        numeric, ``project`` not a bool or None.
    ValueError
        Unknown ``kind`` (the message lists the options available here;
        without MNE-Python, every name but the built-in ones, with a hint to
        install it),
        ``radius`` not finite or <= 0, ``center`` not 3 finite numbers,
        ``project=False`` with a built-in montage or together with
        ``radius`` / ``center``.

    Notes
    -----
    Built-in montages: Cz is the vertex; the 10 % ring (Fpz, Fp1/2, AF7/8,
    F7/8, FT7/8, T7/8, TP7/8, P7/8, PO7/8, O1/2, Oz) lies 72° from the vertex
    with azimuths in steps of 18°. Every other electrode divides the circular
    arc from its row's ring electrode to its midline electrode into four equal
    angles, as the 10-10 system divides the scalp arcs.

    MNE montages: equivalent to ``mne.channels.make_standard_montage(kind)``
    applied to an ``Info`` of EEG channels (its fiducials define the head
    frame); the fiducials themselves are not returned. Positions of the
    ``fsaverage_*`` montages lie on the fsaverage scalp
    (:func:`exg_jax.templates.fsaverage_template`), the ``biosemi*``,
    ``easycap-*`` and ``spherical_*`` ones on a sphere of radius 0.095 m.

    Examples
    --------
    >>> names, pos = standard_montage("standard_1020")
    >>> len(names), pos.shape
    (21, (21, 3))
    """
    if not isinstance(kind, str):
        raise TypeError(
            f"kind must be a str, one of {', '.join(MONTAGES)} or an MNE-Python "
            f"montage name; got {type(kind).__name__}."
        )
    if project is not None and not isinstance(project, bool | np.bool_):
        raise TypeError(
            f"project must be a bool or None, got {type(project).__name__}."
        )
    if radius is not None:
        radius = as_positive_scalar("radius", radius)
    if center is not None:
        center = as_point3("center", center)
    if kind in MONTAGES:
        if project is not None and not project:
            raise ValueError(
                f"project=False: the built-in montage {kind!r} is defined on a "
                "sphere (of radius and center); it has no other positions."
            )
        return _builtin(
            kind,
            0.075 if radius is None else radius,
            np.array([0.0, 0.0, 0.04]) if center is None else center,
        )
    try:
        known = mne_montage_names()
    except ImportError:
        known = ()
    if kind not in known:
        raise _unknown_kind(kind)
    names, pos = _mne_positions(kind)
    given = radius is not None or center is not None
    if project is None:
        project = given
    if not project:
        if given:
            raise ValueError(
                "radius / center only apply to projected positions: with "
                f"project=False the MNE montage {kind!r} is returned as MNE gives it."
            )
        return names, pos
    fit = fit_sphere_robust(pos)
    u = pos - fit.center
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    radius = fit.radius if radius is None else radius
    center = fit.center if center is None else center
    return names, center + radius * u


def _builtin(kind: str, radius: float, center: np.ndarray):
    allpos = _all_1010()
    if kind == "standard_1020":
        names = list(_SET_1020)
    else:
        order = ["Fp", "AF", "F", "FC", "FT", "C", "T", "CP", "TP", "P", "PO", "O"]

        def key(n: str):
            pre = n.rstrip("0123456789z")
            suf = n[len(pre) :]
            col = 0 if suf == "z" else (-int(suf) if int(suf) % 2 else int(suf))
            return (order.index(pre), col)

        names = sorted(allpos, key=key)
    pos = np.stack([center + radius * allpos[n] for n in names])
    return names, pos
