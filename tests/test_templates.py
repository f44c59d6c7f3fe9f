"""Tests for the fsaverage template and the mesh helpers (exg_jax.templates)."""

import numpy as np
import pytest

from exg_jax.source_space import _ico_unit
from exg_jax.templates import (
    FSAVERAGE_SPHERE_PROPORTIONS,
    _closest_on_triangles,
    fsaverage_template,
    points_in_surface,
    surface_distance,
)

# --------------------------------------------------------------------------
# Closed meshes: analytic answers
# --------------------------------------------------------------------------


def _convex_inside(p, rr, tris):
    """Inside a convex polyhedron: below every face plane."""
    n = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
    off = np.einsum("tk,tk->t", n, rr[tris[:, 0]])
    return np.all(p @ n.T <= off, axis=1)


@pytest.mark.parametrize("method", ["ray", "winding"])
def test_points_in_icosphere_analytic(method):
    rr, tris = _ico_unit(3)
    rr = 0.07 * rr + [0.01, -0.02, 0.04]
    rng = np.random.default_rng(0)
    p = rng.uniform(-0.1, 0.12, (3000, 3))
    exact = _convex_inside(p, rr, tris)
    assert 200 < exact.sum() < 2800
    np.testing.assert_array_equal(points_in_surface(p, rr, tris, method=method), exact)
    # Either winding is accepted.
    np.testing.assert_array_equal(
        points_in_surface(p, rr, tris[:, ::-1], method=method), exact
    )


@pytest.mark.parametrize("method", ["ray", "winding"])
def test_points_in_nonconvex_surface(method):
    # A star-shaped, non-convex closed mesh: r(u) = 1 + 0.35 cos(3 phi) sin^2(theta).
    u, tris = _ico_unit(4)
    phi = np.arctan2(u[:, 1], u[:, 0])
    r = lambda phi, z: 1 + 0.35 * np.cos(3 * phi) * (1 - z**2)  # noqa: E731
    rr = u * r(phi, u[:, 2])[:, None]
    rng = np.random.default_rng(1)
    p = rng.uniform(-1.4, 1.4, (1500, 3))
    d = np.linalg.norm(p, axis=1)
    pu = p / d[:, None]
    rp = r(np.arctan2(pu[:, 1], pu[:, 0]), pu[:, 2])
    clear = np.abs(d - rp) > 0.05  # away from the facets' deviation from r(u)
    got = points_in_surface(p[clear], rr, tris, method=method)
    np.testing.assert_array_equal(got, d[clear] < rp[clear])


def test_surface_distance_exhaustive():
    rr, tris = _ico_unit(2)
    rr = rr * [0.08, 0.09, 0.07]
    rng = np.random.default_rng(2)
    p = rng.uniform(-0.12, 0.12, (200, 3))
    d, q = surface_distance(p, rr, tris)
    np.testing.assert_allclose(np.linalg.norm(p - q, axis=1), d, atol=1e-15)
    # Against every triangle (exact point-triangle distances) ...
    a, b, c = (rr[tris[:, k]][None] for k in range(3))
    _, d2 = _closest_on_triangles(p[:, None, :], a, b, c)
    np.testing.assert_allclose(d, np.sqrt(d2.min(axis=1)), rtol=1e-12)
    # ... and never farther than points sampled on every triangle.
    s, t = np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 9))
    keep = s + t <= 1
    s, t = s[keep], t[keep]
    x = (a + s[:, None, None] * (b - a) + t[:, None, None] * (c - a)).reshape(-1, 3)
    sampled = np.sqrt(np.min(np.sum((p[:, None] - x[None]) ** 2, axis=2), axis=1))
    assert np.all(d <= sampled + 1e-15) and np.all(sampled - d < 0.01)


def test_closest_point_on_a_triangle():
    a, b, c = np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    pts = np.array(
        [
            [0.2, 0.3, 0.5],
            [0.2, 0.3, -2.0],
            [-1.0, -1.0, 0.0],
            [2.0, 0.5, 1.0],
            [1.0, 1.0, 0],
        ]
    )
    want = np.array([[0.2, 0.3, 0], [0.2, 0.3, 0], [0, 0, 0], [1, 0, 0], [0.5, 0.5, 0]])
    q, d2 = _closest_on_triangles(pts, a, b, c)
    np.testing.assert_allclose(q, want, atol=1e-15)
    np.testing.assert_allclose(d2, np.sum((pts - want) ** 2, axis=1), atol=1e-15)


def test_mesh_bad_input():
    rr, tris = _ico_unit(1)
    with pytest.raises(ValueError, match="points"):
        points_in_surface(np.zeros((4, 2)), rr, tris)
    with pytest.raises(ValueError, match="tris"):
        points_in_surface(np.zeros((4, 3)), rr, tris + 100)
    with pytest.raises(TypeError, match="tris"):
        points_in_surface(np.zeros((4, 3)), rr, tris.astype(float))
    with pytest.raises(ValueError, match="rr"):
        surface_distance(np.zeros((4, 3)), rr * np.nan, tris)
    with pytest.raises(ValueError, match="method"):
        points_in_surface(np.zeros((4, 3)), rr, tris, method="parity")


# --------------------------------------------------------------------------
# fsaverage
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tpl():
    pytest.importorskip("mne")
    return fsaverage_template("fsaverage_1010", spacing=0.01)


def test_template_sphere_fit(tpl):
    fit = tpl.sphere_fit
    radii = np.asarray(tpl.sphere.radii)
    np.testing.assert_allclose(
        radii, np.array(FSAVERAGE_SPHERE_PROPORTIONS[0]) * fit.radius
    )
    np.testing.assert_allclose(np.asarray(tpl.sphere.center), fit.center)
    assert fit.converged
    # Measured on fsaverage: R 96.4 mm, centre (-1.2, 11.7, 42.3) mm, median
    # |residual| 4.8 mm, max 14 mm (the head is no sphere).
    assert 0.09 < fit.radius < 0.10
    assert np.linalg.norm(fit.center - [-0.0012, 0.0117, 0.0423]) < 2e-3
    assert np.median(np.abs(fit.residuals)) < 0.006
    assert np.max(np.abs(fit.residuals)) < 0.02
    # The electrodes of fsaverage_1010 sit on (0-6 mm outside) this scalp mesh.
    d, _ = surface_distance(tpl.electrodes, tpl.scalp_rr, tpl.scalp_tris)
    assert len(tpl.ch_names) == tpl.electrodes.shape[0] == 70
    assert np.max(d) < 0.008 and np.median(d) < 0.003


def test_template_sources_inside(tpl):
    src = np.asarray(tpl.src_pos)
    center = np.asarray(tpl.sphere.center)
    r_inner = float(tpl.sphere.radii[0])
    assert src.shape[0] > 500 and tpl.n_dropped >= 0
    # Every source inside the innermost shell (by mindist) and inside the inner skull
    # (both point-in-surface methods agree), at least mindist from it.
    assert np.all(np.linalg.norm(src - center, axis=1) < r_inner - 0.005)
    assert np.all(points_in_surface(src, tpl.inner_skull_rr, tpl.inner_skull_tris))
    # Ray and winding number agree on the grid points next to the inner skull
    # (a 6-neighbour on the other side; the winding number costs n x 20480
    # solid angles).
    box = np.arange(-0.1, 0.101, 0.01)
    n = len(box)
    grid = np.stack(np.meshgrid(box, box, box, indexing="ij"), -1).reshape(-1, 3)
    grid = grid + center
    ray = points_in_surface(grid, tpl.inner_skull_rr, tpl.inner_skull_tris)
    cube = ray.reshape(n, n, n)
    edge = np.zeros_like(cube)
    for ax in range(3):
        flip = np.diff(cube, axis=ax)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= flip
        edge[tuple(hi)] |= flip
    near = np.flatnonzero(edge.ravel())[::5]
    wind = points_in_surface(
        grid[near], tpl.inner_skull_rr, tpl.inner_skull_tris, method="winding"
    )
    assert 150 < len(near) < 600 and 0 < ray[near].sum() < len(near)
    np.testing.assert_array_equal(ray[near], wind)
    d, _ = surface_distance(src, tpl.inner_skull_rr, tpl.inner_skull_tris)
    assert np.all(d >= 0.005)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(tpl.src_nn), axis=1), 1.0)
    # On the grid of the requested spacing about the centre.
    k = (src - center) / 0.01
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)


def test_template_options():
    pytest.importorskip("mne")
    t = fsaverage_template("biosemi32", spacing=0.02, project="sphere")
    c = np.asarray(t.sphere.center)
    np.testing.assert_allclose(
        np.linalg.norm(t.electrodes - c, axis=1), t.sphere_fit.radius, rtol=1e-12
    )
    t = fsaverage_template("biosemi32", spacing=0.02, project="scalp")
    d, _ = surface_distance(t.electrodes, t.scalp_rr, t.scalp_tris)
    assert np.max(d) < 1e-9
    t = fsaverage_template(
        "standard_1020",
        spacing=0.02,
        relative_radii=(0.90, 0.92, 0.97, 1.0),
        conductivities=(0.33, 1.0, 0.004, 0.33),
    )
    assert t.sphere.n_shells == 4 and len(t.ch_names) == 21
    with pytest.raises(ValueError, match="relative_radii"):
        fsaverage_template(spacing=0.02, relative_radii=(0.9, 0.95))
    with pytest.raises(ValueError, match="conductivities"):
        fsaverage_template(spacing=0.02, relative_radii=(0.9, 1.0))
    with pytest.raises(ValueError, match="montage.*fsaverage_1010"):
        fsaverage_template("no_such_montage")
    with pytest.raises(ValueError, match="project"):
        fsaverage_template(project="skull")
    with pytest.raises(ValueError, match="spacing"):
        fsaverage_template(spacing=-0.01)
