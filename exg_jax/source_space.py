"""Source spaces on and inside a sphere: icosahedral surfaces and regular grids.

These constructors fix array shapes, so they are plain NumPy (not traceable) and
return ``jax.numpy`` arrays in float64 when x64 is enabled, float32 otherwise.
"""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._typing import IntScalar, Point3, RealScalar
from ._validate import as_int, as_point3, as_positive_scalar

__all__ = ["ico_n_vertices", "ico_source_space", "grid_source_space"]


def ico_n_vertices(n: IntScalar) -> int:
    """Number of vertices of the icosahedron subdivided ``n`` times.

    Parameters
    ----------
    n : int
        Subdivision level, ``>= 0``.

    Returns
    -------
    int
        ``10 * 4**n + 2`` (0 -> 12, 1 -> 42, 2 -> 162, 3 -> 642, 4 -> 2562,
        5 -> 10242).
    """
    n = _check_level(n)
    return 10 * 4**n + 2


def _check_level(n) -> int:
    """Python int in [0, 7]: ``TypeError`` for a non-integer (NumPy integers are
    accepted), ``ValueError`` out of range."""
    n = as_int("n", n)
    if n < 0 or n > 7:
        raise ValueError(
            f"n must lie in [0, 7] (0 -> 12 ... 7 -> 163842 vertices), got {n}."
        )
    return n


def _check_radius_center(radius, center):
    return as_positive_scalar("radius", radius), as_point3("center", center)


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """Unit icosahedron with a vertex at +z (the orientation MNE-Python uses).

    The 12 vertices are the poles (0, 0, ±1) and two rings at z = ±1/√5 whose
    azimuths are 0°, 72°, ... (upper ring) and 36°, 108°, ... (lower ring). The 20
    faces are the vertex triples that are pairwise at the edge length, ordered
    counter-clockwise seen from outside.
    """
    z = 1.0 / math.sqrt(5.0)
    rho = 2.0 / math.sqrt(5.0)
    verts = [(0.0, 0.0, 1.0)]
    for k in range(5):
        phi = 2.0 * math.pi * k / 5.0
        verts.append((rho * math.cos(phi), rho * math.sin(phi), z))
    for k in range(5):
        phi = 2.0 * math.pi * (k + 0.5) / 5.0
        verts.append((rho * math.cos(phi), rho * math.sin(phi), -z))
    verts.append((0.0, 0.0, -1.0))
    rr = np.array(verts)
    d = np.linalg.norm(rr[:, None] - rr[None], axis=-1)
    edge = np.min(d[d > 1e-9])
    adj = np.abs(d - edge) < 1e-9
    tris = []
    for i, j, k in itertools.combinations(range(12), 3):
        if adj[i, j] and adj[j, k] and adj[i, k]:
            a, b, c = rr[i], rr[j], rr[k]
            if np.dot(np.cross(b - a, c - a), a + b + c) < 0:
                j, k = k, j
            tris.append((i, j, k))
    tris = np.array(tris, dtype=np.int64)
    assert tris.shape == (20, 3)
    return rr, tris


def _subdivide(rr: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split every triangle in four; new vertices are edge midpoints pushed onto the unit sphere."""
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    edges = np.sort(edges, axis=1)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    mid = rr[uniq[:, 0]] + rr[uniq[:, 1]]
    mid /= np.linalg.norm(mid, axis=1, keepdims=True)
    n_old, n_tri = len(rr), len(tris)
    m01 = n_old + inv[:n_tri]
    m12 = n_old + inv[n_tri : 2 * n_tri]
    m20 = n_old + inv[2 * n_tri :]
    t0, t1, t2 = tris.T
    new_tris = np.concatenate(
        [
            np.stack([t0, m01, m20], axis=1),
            np.stack([m01, t1, m12], axis=1),
            np.stack([m20, m12, t2], axis=1),
            np.stack([m01, m12, m20], axis=1),
        ]
    )
    return np.concatenate([rr, mid]), new_tris


def _ico_unit(n: int) -> tuple[np.ndarray, np.ndarray]:
    rr, tris = _icosahedron()
    for _ in range(n):
        rr, tris = _subdivide(rr, tris)
    return rr, tris


def ico_source_space(
    n: IntScalar,
    radius: RealScalar = 0.06,
    center: Point3 = (0.0, 0.0, 0.04),
) -> tuple[Float[Array, "src 3"], Float[Array, "src 3"]]:
    """Vertices of a subdivided icosahedron on a sphere, with outward normals.

    Parameters
    ----------
    n : int
        Subdivision level in ``[0, 7]``; the result has ``10 * 4**n + 2``
        vertices.
    radius : float, m
        Radius of the sphere the vertices are placed on (> 0).
    center : array_like, shape (3,), m
        Centre of the sphere.

    Returns
    -------
    pos : Array, shape (N, 3), m
        Vertex positions ``center + radius * u``.
    nn : Array, shape (N, 3)
        Outward unit normals ``u``.

    Notes
    -----
    The level-0 icosahedron has a vertex at +z and one at ``(2/√5, 0, 1/√5)``,
    as MNE-Python's stored icosahedra (``mne/data/icos.fif.gz``); each level
    splits every triangle in four and pushes the edge midpoints onto the unit
    sphere. The vertex *set* equals MNE-Python's ``ico-n`` surface (tested for
    n = 0 ... 4); the vertex *order* is: the previous level's vertices first,
    then the new midpoints in lexicographic order of their edge's vertex pair.
    """
    n = _check_level(n)
    radius, center = _check_radius_center(radius, center)
    u, _ = _ico_unit(n)
    pos = center + radius * u
    return jnp.asarray(pos), jnp.asarray(u)


def grid_source_space(
    spacing: RealScalar,
    radius: RealScalar = 0.06,
    center: Point3 = (0.0, 0.0, 0.04),
) -> tuple[Float[Array, "src 3"], Float[Array, "src 3"]]:
    """Regular cubic grid of points strictly inside a sphere, with radial normals.

    Parameters
    ----------
    spacing : float, m
        Grid step (> 0, and < ``radius`` so at least the centre lies inside).
    radius : float, m
        Radius of the sphere (> 0). Points with ``|p - center| < radius`` are kept
        (strictly inside; a point exactly at ``radius`` is excluded).
    center : array_like, shape (3,), m
        Centre of the sphere; the grid contains it (``center + spacing * (i, j, k)``).

    Returns
    -------
    pos : Array, shape (N, 3), m
        Grid points, ordered by x, then y, then z index (z fastest).
    nn : Array, shape (N, 3)
        Radial unit normals ``(p - center) / |p - center|``. Convention: the centre
        point itself, where the radial direction is undefined, gets ``+z``
        ``(0, 0, 1)``.
    """
    spacing = as_positive_scalar("spacing", spacing)
    radius, center = _check_radius_center(radius, center)
    if spacing >= radius:
        raise ValueError(
            f"spacing ({spacing}) must be smaller than radius ({radius}) so that the "
            "grid has more than the centre point."
        )
    m = int(np.floor(radius / spacing))
    if (2 * m + 1) ** 3 > 50_000_000:
        raise ValueError(
            f"spacing {spacing} is too fine for radius {radius}: "
            f"{(2 * m + 1) ** 3} candidate grid points."
        )
    k = np.arange(-m, m + 1, dtype=float)
    ijk = np.stack(np.meshgrid(k, k, k, indexing="ij"), axis=-1).reshape(-1, 3)
    off = ijk * spacing
    dist = np.linalg.norm(off, axis=1)
    keep = dist < radius
    off, dist = off[keep], dist[keep]
    nn = np.zeros_like(off)
    nz = dist > 0
    nn[nz] = off[nz] / dist[nz, None]
    nn[~nz] = (0.0, 0.0, 1.0)
    return jnp.asarray(center + off), jnp.asarray(nn)
