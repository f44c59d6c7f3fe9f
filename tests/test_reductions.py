"""Tests for exg_jax.reductions: LabelTimeCourses (vs MNE-Python) and parcellate."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exg_jax import ico_source_space
from exg_jax.reductions import AbstractReduction, LabelTimeCourses, parcellate

MODES = ("mean", "mean_flip", "pca_flip", "max")


# --------------------------------------------------------------------------- #
# Fixtures and NumPy references of MNE-Python's formulas
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def geom():
    """ico-2 sources, random normals (so that flips differ), 10 regions.

    Source 5 is in no region, source 7 is a region of its own (region 10).
    """
    pos, _ = ico_source_space(2, radius=0.06)
    pos = np.asarray(pos)
    rng = np.random.default_rng(0)
    nn = rng.standard_normal(pos.shape)
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    lab = parcellate(pos, 10)
    lab[5] = -1
    lab[7] = 10
    return pos, nn, lab


def _sol(n_src, n_times, *, batch=(), seed=1):
    """Low-rank sources plus noise (a clear first principal component), A·m."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n_times)
    basis = np.stack([np.sin(2 * np.pi * 3 * t), np.cos(2 * np.pi * 7 * t + 0.3)])
    amp = rng.standard_normal(batch + (n_src, 2)) * np.array([3.0, 1.0])
    noise = 0.3 * rng.standard_normal(batch + (n_src, n_times))
    return 1e-9 * (amp @ basis + noise)


def _ref_flip(nn):
    """mne.label_sign_flip, written out."""
    _, _, vh = np.linalg.svd(nn, full_matrices=False)
    dots = nn @ vh[0]
    if np.mean(dots) < 0:
        dots *= -1
    return np.sign(dots)


def _ref(sol, lab, nn, mode):
    """mne.extract_label_time_course's formulas (mne/source_estimate.py)."""
    out = []
    for k in range(lab.max() + 1):
        sel = lab == k
        x = sol[sel]
        f = _ref_flip(nn[sel])
        if mode == "mean":
            out.append(x.mean(0))
        elif mode == "mean_flip":
            out.append((f[:, None] * x).mean(0))
        elif mode == "max":
            out.append(np.abs(x).max(0))
        else:
            u, s, vh = np.linalg.svd(x, full_matrices=False)
            out.append(
                np.sign(u[:, 0] @ f) * np.linalg.norm(s) / np.sqrt(len(x)) * vh[0]
            )
    return np.array(out)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------- #
# Against the reference and MNE-Python
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n_times", [40, 6])  # Gram X Xᵀ / Xᵀ X (largest region ~20)
def test_matches_reference(geom, mode, n_times):
    _, nn, lab = geom
    sol = _sol(len(lab), n_times)
    red = LabelTimeCourses(lab, mode, src_nn=nn)
    got = red(jnp.asarray(sol))
    assert got.shape == (11, n_times) and got.dtype == jnp.float64
    assert _rel(got, _ref(sol, lab, nn, mode)) <= 1e-10


def test_flips_are_nontrivial(geom):
    """The random normals give both signs, so mean_flip differs from mean."""
    _, nn, lab = geom
    flip = LabelTimeCourses(lab, "mean_flip", src_nn=nn).flip
    assert np.any(flip[lab >= 0] < 0) and np.any(flip[lab >= 0] > 0)
    assert flip[5] == 0 and flip[7] == 1


def _mne_setup(nn, lab, sol):
    import mne

    n = len(lab)

    def surf(nv, normals):
        return dict(
            type="surf",
            id=101,
            coord_frame=5,
            vertno=np.arange(nv),
            nuse=nv,
            np=nv,
            inuse=np.ones(nv, int),
            nn=normals,
            rr=np.zeros((nv, 3)),
            subject_his_id="s",
        )

    src = mne.SourceSpaces([surf(n, nn), surf(0, np.zeros((0, 3)))])
    labels = [
        mne.Label(vertices=np.flatnonzero(lab == k), hemi="lh", subject="s")
        for k in range(lab.max() + 1)
    ]
    stc = mne.SourceEstimate(sol, [np.arange(n), np.arange(0)], 0.0, 1e-3, subject="s")
    return src, labels, stc


def test_matches_mne(geom):
    import mne

    _, nn, lab = geom
    sol = _sol(len(lab), 30)
    src, labels, stc = _mne_setup(nn, lab, sol)
    for mode in MODES:
        red = LabelTimeCourses(lab, mode, src_nn=nn)
        want = mne.extract_label_time_course(stc, labels, src, mode=mode, verbose=False)
        assert _rel(red(jnp.asarray(sol)), want) <= 1e-10, mode
    flip = LabelTimeCourses(lab, "pca_flip", src_nn=nn).flip
    for k, label in enumerate(labels):
        np.testing.assert_array_equal(flip[lab == k], mne.label_sign_flip(label, src))


# --------------------------------------------------------------------------- #
# Transformations: jit, vmap, batch axes, float32
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode", MODES)
def test_jit_vmap_batch(geom, mode):
    _, nn, lab = geom
    sol = jnp.asarray(_sol(len(lab), 12, batch=(3,)))
    red = LabelTimeCourses(lab, mode, src_nn=nn)
    loop = jnp.stack([red(s) for s in sol])
    # Leading batch axes, vmap, jit closing over the reduction, and the
    # engine's style (the reduction as an argument of a filter_jit).
    np.testing.assert_allclose(red(sol), loop, rtol=1e-12, atol=0)
    np.testing.assert_allclose(jax.vmap(red)(sol), loop, rtol=1e-12, atol=0)
    np.testing.assert_allclose(jax.jit(lambda x: red(x))(sol), loop, rtol=1e-12, atol=0)
    got = eqx.filter_jit(lambda r, x: r(x))(red, sol[None])
    np.testing.assert_allclose(got[0], loop, rtol=1e-12, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_float32(geom, mode):
    _, nn, lab = geom
    sol = _sol(len(lab), 40)
    red = LabelTimeCourses(lab, mode, src_nn=nn)
    got = red(jnp.asarray(sol, jnp.float32))
    assert got.dtype == jnp.float32
    assert _rel(got, _ref(sol, lab, nn, mode)) <= 1e-5


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #
def test_rank_one_regions(geom):
    """sol = a_i s(t) per region: mean_flip = mean(f·a) s, pca_flip = sign(a·f)‖a‖/√n s."""
    _, nn, lab = geom
    rng = np.random.default_rng(3)
    a = rng.standard_normal(len(lab))
    s = np.sin(np.linspace(0, 5, 25))
    sol = jnp.asarray(np.outer(a, s))
    flip = LabelTimeCourses(lab, "mean_flip", src_nn=nn).flip
    mf = LabelTimeCourses(lab, "mean_flip", src_nn=nn)(sol)
    pf = LabelTimeCourses(lab, "pca_flip", src_nn=nn)(sol)
    for k in range(11):
        sel = lab == k
        fa = flip[sel] * a[sel]
        np.testing.assert_allclose(mf[k], fa.mean() * s, rtol=1e-12, atol=1e-14)
        want = np.sign(fa.sum()) * np.linalg.norm(a[sel]) / np.sqrt(sel.sum()) * s
        np.testing.assert_allclose(pf[k], want, rtol=1e-10, atol=1e-12)
    # A constant time course per region: mean_flip = c · mean(flip).
    c = rng.standard_normal(11)
    const = jnp.asarray(np.where(lab >= 0, c[lab], 7.0)[:, None] * np.ones((1, 4)))
    want = np.array([c[k] * flip[lab == k].mean() for k in range(11)])
    np.testing.assert_allclose(
        mf_c := LabelTimeCourses(lab, "mean_flip", src_nn=nn)(const),
        np.repeat(want[:, None], 4, 1),
        rtol=1e-12,
        atol=1e-15,
    )
    assert mf_c.shape == (11, 4)


def test_pca_flip_sign_and_scale(geom):
    _, nn, lab = geom
    sol = jnp.asarray(_sol(len(lab), 20))
    red = LabelTimeCourses(lab, "pca_flip", src_nn=nn)
    y = red(sol)
    np.testing.assert_allclose(red(-sol), -y, rtol=1e-10, atol=0)
    np.testing.assert_allclose(red(1e6 * sol), 1e6 * y, rtol=1e-10, atol=0)
    # ‖y‖ is the RMS norm of the region's time courses.
    for k in (0, 10):
        sel = lab == k
        rms = np.linalg.norm(np.asarray(sol)[sel]) / np.sqrt(sel.sum())
        np.testing.assert_allclose(np.linalg.norm(y[k]), rms, rtol=1e-12)


def test_single_source_region_and_zeros(geom):
    _, nn, lab = geom
    sol = jnp.asarray(_sol(len(lab), 9))
    for mode in ("mean", "mean_flip", "pca_flip"):
        y = LabelTimeCourses(lab, mode, src_nn=nn)(sol)
        np.testing.assert_allclose(y[10], sol[7], rtol=1e-12, atol=0)
    for mode in MODES:
        z = LabelTimeCourses(lab, mode, src_nn=nn)(jnp.zeros((len(lab), 5)))
        assert np.all(np.asarray(z) == 0)


def test_attributes(geom):
    _, nn, lab = geom
    for mode in MODES:
        red = LabelTimeCourses(lab, mode, src_nn=nn)
        assert isinstance(red, AbstractReduction)
        assert red.time_local is (mode != "pca_flip")
        assert red.needs_vector is False
        assert red.n_labels == 11 and red.n_src == len(lab)
    assert LabelTimeCourses(lab, "mean").flip is None  # no normals needed
    assert LabelTimeCourses(lab, "max", n_labels=11).sizes.sum() == len(lab) - 1


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def test_bad_input(geom):
    _, nn, lab = geom
    with pytest.raises(ValueError, match="labels"):
        LabelTimeCourses(lab[None], "mean")
    with pytest.raises(TypeError, match="labels"):
        LabelTimeCourses(lab.astype(float), "mean")
    with pytest.raises(ValueError, match="labels.*empty"):
        LabelTimeCourses(lab, "mean", n_labels=12)
    with pytest.raises(ValueError, match="labels.*empty"):
        LabelTimeCourses(np.where(lab == 3, -1, lab), "mean")
    with pytest.raises(ValueError, match="labels"):
        LabelTimeCourses(lab, "mean", n_labels=5)
    with pytest.raises(ValueError, match="labels"):
        LabelTimeCourses(-np.ones(4, int), "mean")
    for mode in ("mean_flip", "pca_flip"):
        with pytest.raises(ValueError, match="src_nn"):
            LabelTimeCourses(lab, mode)
    with pytest.raises(ValueError, match="src_nn"):
        LabelTimeCourses(lab, "mean_flip", src_nn=nn[:-1])
    with pytest.raises(ValueError, match="mode"):
        LabelTimeCourses(lab, "median", src_nn=nn)
    red = LabelTimeCourses(lab, "mean")
    with pytest.raises(ValueError, match="sol"):
        red(jnp.zeros((len(lab) + 1, 3)))
    with pytest.raises(ValueError, match="sol"):
        red(jnp.zeros(len(lab)))


# --------------------------------------------------------------------------- #
# parcellate
# --------------------------------------------------------------------------- #
def test_parcellate(geom):
    pos = geom[0]
    n = len(pos)
    lab = parcellate(pos, 10, seed=3)
    assert lab.shape == (n,) and lab[0] == 0
    assert np.all(np.bincount(lab, minlength=10) > 0) and lab.max() == 9
    np.testing.assert_array_equal(lab, parcellate(pos, 10, seed=3))
    # Regions are numbered by their first source.
    _, first = np.unique(lab, return_index=True)
    assert np.all(np.diff(first) > 0)
    # Compact: each source is nearer its own centroid than most others'.
    cen = np.array([pos[lab == k].mean(0) for k in range(10)])
    d = np.linalg.norm(pos[:, None] - cen[None], axis=-1)
    assert np.mean(np.argmin(d, 1) == lab) > 0.95
    np.testing.assert_array_equal(parcellate(pos, 1), np.zeros(n, int))
    np.testing.assert_array_equal(parcellate(pos, n), np.arange(n))
    # Duplicated positions: still one source per region.
    dup = np.concatenate([pos[:4], pos[:4]])
    assert np.all(np.bincount(parcellate(dup, 8), minlength=8) == 1)
    assert np.all(np.bincount(parcellate(dup, 6), minlength=6) > 0)


def test_parcellate_bad_input(geom):
    pos = geom[0]
    for k in (0, len(pos) + 1):
        with pytest.raises(ValueError, match="n_labels"):
            parcellate(pos, k)
    with pytest.raises(TypeError, match="n_labels"):
        parcellate(pos, 2.5)
    with pytest.raises(ValueError, match="src_pos"):
        parcellate(pos[:, :2], 3)
    with pytest.raises(ValueError, match="n_iter"):
        parcellate(pos, 3, n_iter=-1)
