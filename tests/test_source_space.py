"""Tests for exg_jax.source_space: icosahedral and grid source spaces."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from exg_jax.source_space import grid_source_space, ico_n_vertices, ico_source_space


@pytest.mark.parametrize(
    "n, expected", [(0, 12), (1, 42), (2, 162), (3, 642), (4, 2562), (5, 10242)]
)
def test_ico_n_vertices(n, expected):
    assert ico_n_vertices(n) == expected
    assert ico_n_vertices(n) == 10 * 4**n + 2


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_ico_vertex_set_matches_mne(n):
    from mne.surface import _get_ico_surface

    ref = _get_ico_surface(n)["rr"].astype(float)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    pos, nn = ico_source_space(n, 1.0, (0.0, 0.0, 0.0))
    pos = np.asarray(pos)
    assert pos.shape == (ico_n_vertices(n), 3) == ref.shape
    dist, idx = cKDTree(ref).query(pos)
    # MNE stores its icosahedra in float32 rounded to ~4 decimals at level 0.
    assert dist.max() < 2e-4
    # Bijection: every MNE vertex is matched exactly once.
    assert len(np.unique(idx)) == len(ref)


@settings(max_examples=10)
@given(
    n=st.integers(0, 3),
    radius=st.floats(0.01, 0.2),
    center=st.tuples(*[st.floats(-0.1, 0.1)] * 3),
)
def test_ico_geometry(n, radius, center):
    pos, nn = ico_source_space(n, radius, center)
    pos, nn = np.asarray(pos), np.asarray(nn)
    c = np.asarray(center)
    np.testing.assert_allclose(np.linalg.norm(nn, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(pos, c + radius * nn, atol=1e-12)
    # All vertices distinct.
    d, _ = cKDTree(pos).query(pos, k=2)
    assert d[:, 1].min() > 1e-3 * radius


@settings(max_examples=10)
@given(spacing=st.floats(0.004, 0.03), radius=st.floats(0.031, 0.08))
def test_grid_geometry(spacing, radius):
    center = np.array([0.001, -0.002, 0.04])
    pos, nn = grid_source_space(spacing, radius, center)
    pos, nn = np.asarray(pos), np.asarray(nn)
    off = pos - center
    dist = np.linalg.norm(off, axis=1)
    assert np.all(dist < radius)
    np.testing.assert_allclose(np.linalg.norm(nn, axis=1), 1.0, atol=1e-12)
    # Grid points are integer multiples of the spacing from the centre.
    k = off / spacing
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    # Every lattice point strictly inside the sphere is present (brute-force count).
    m = int(np.floor(radius / spacing))
    g = np.arange(-m, m + 1) * spacing
    xx, yy, zz = np.meshgrid(g, g, g, indexing="ij")
    assert len(pos) == int(np.sum(np.sqrt(xx**2 + yy**2 + zz**2) < radius))
    # Radial normals; the centre point gets +z.
    at_c = dist == 0
    assert at_c.sum() == 1
    np.testing.assert_array_equal(nn[at_c][0], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(nn[~at_c], off[~at_c] / dist[~at_c, None], atol=1e-12)


def test_grid_excludes_boundary():
    pos, _ = grid_source_space(0.01, 0.02, (0.0, 0.0, 0.0))
    dist = np.linalg.norm(np.asarray(pos), axis=1)
    assert not np.any(np.isclose(dist, 0.02))
    assert np.all(dist < 0.02)


@pytest.mark.parametrize(
    "bad, exc",
    [
        (-1, ValueError),
        (8, ValueError),
        (1.5, TypeError),
        ("2", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_ico_bad_level(bad, exc):
    with pytest.raises(exc, match="n must"):
        ico_source_space(bad, 0.06, (0, 0, 0))


@pytest.mark.parametrize("bad", [0.0, -0.01, np.nan, np.inf, (0.1, 0.1)])
def test_bad_radius(bad):
    with pytest.raises(ValueError, match="radius"):
        ico_source_space(1, bad, (0, 0, 0))
    with pytest.raises(ValueError, match="radius"):
        grid_source_space(0.01, bad, (0, 0, 0))


@pytest.mark.parametrize("bad", [0.0, -0.01, np.nan, 0.06, 0.1])
def test_grid_bad_spacing(bad):
    with pytest.raises(ValueError, match="spacing"):
        grid_source_space(bad, 0.06, (0, 0, 0))


@pytest.mark.parametrize("bad", [(0, 0), (0, 0, np.nan), (0, 0, 0, 0)])
def test_bad_center(bad):
    with pytest.raises(ValueError, match="center"):
        ico_source_space(1, 0.06, bad)
    with pytest.raises(ValueError, match="center"):
        grid_source_space(0.01, 0.06, bad)
