"""Built-in standard 10-20 / 10-10 montages computed from spherical coordinates.

No download and no MNE needed: electrode positions are generated on an ideal
sphere from the rules of the 10-20 / 10-10 systems, so the demo and examples
run on a fresh machine.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from ._typing import Point3, RealScalar
from ._validate import as_point3, as_positive_scalar, check_option

__all__ = ["standard_montage", "MONTAGES"]

#: Names of the built-in montages.
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


def standard_montage(
    kind: str = "standard_1010",
    *,
    radius: RealScalar = 0.075,
    center: Point3 = (0.0, 0.0, 0.04),
) -> tuple[list[str], Float[np.ndarray, "elec 3"]]:
    """Electrode names and positions of an ideal-sphere 10-20 or 10-10 montage.

    Parameters
    ----------
    kind : {"standard_1020", "standard_1010"}
        ``"standard_1020"``: 21 electrodes (10-20 set with Fpz and Oz, modern
        T7/T8/P7/P8 names). ``"standard_1010"``: 69 electrodes of the 10-10
        system from the AF row to the PO row.
    radius : float, m
        Radius of the sphere the electrodes are placed on (the scalp); a
        finite number > 0 (NumPy scalars accepted).
    center : array_like, shape (3,), m
        Sphere centre in head coordinates (x right, y nose, z up).

    Returns
    -------
    names : list of str, length n_elec
    pos : ndarray, shape (n_elec, 3), m
        Electrode positions on the sphere.

    Raises
    ------
    TypeError
        ``kind`` not a string, ``radius`` not a real scalar, ``center`` not numeric.
    ValueError
        Unknown ``kind`` (the message lists the options), ``radius`` not finite
        or <= 0, ``center`` not 3 finite numbers.

    Notes
    -----
    Cz is the vertex; the 10 % ring (Fpz, Fp1/2, AF7/8, F7/8, FT7/8, T7/8, TP7/8,
    P7/8, PO7/8, O1/2, Oz) lies 72° from the vertex with azimuths in steps of
    18°. Every other electrode divides the circular arc from its row's ring
    electrode to its midline electrode into four equal angles, as the 10-10
    system divides the scalp arcs.

    Examples
    --------
    >>> names, pos = standard_montage("standard_1020")
    >>> len(names), pos.shape
    (21, (21, 3))
    """
    if not isinstance(kind, str):
        raise TypeError(
            f"kind must be a str, one of {', '.join(MONTAGES)}; got {type(kind).__name__}."
        )
    check_option("kind", kind, MONTAGES)
    radius = as_positive_scalar("radius", radius)
    center = as_point3("center", center)
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
