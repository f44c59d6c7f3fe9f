"""Tests for the montages: built-in ideal-sphere ones, MNE-Python's, the robust sphere fit."""

import numpy as np
import pytest

from exg_jax.montage import (
    MONTAGES,
    available_montages,
    fit_sphere_robust,
    mne_montage_names,
    standard_montage,
)


@pytest.mark.parametrize("kind", MONTAGES)
def test_on_sphere_unique_and_symmetric(kind):
    center = np.array([0.01, -0.02, 0.04])
    names, pos = standard_montage(kind, radius=0.08, center=center)
    assert len(names) == len(set(names)) == pos.shape[0]
    np.testing.assert_allclose(np.linalg.norm(pos - center, axis=1), 0.08, rtol=1e-12)
    d = dict(zip(names, pos - center, strict=True))
    np.testing.assert_allclose(d["Cz"], [0, 0, 0.08], atol=1e-12)
    # Left/right mirror symmetry: odd numbers left (x < 0), even right, z on the midline.
    for n, p in d.items():
        suf = n.rstrip("0123456789")
        num = n[len(suf) :]
        if n.endswith("z"):
            assert abs(p[0]) < 1e-12, n
        elif num:
            mirror = suf + str(int(num) + 1 if int(num) % 2 else int(num) - 1)
            assert (p[0] < 0) == (int(num) % 2 == 1), n
            np.testing.assert_allclose(d[mirror], p * [-1, 1, 1], atol=1e-12)


def test_1020_subset_and_spacing():
    n20, p20 = standard_montage("standard_1020")
    n10, p10 = standard_montage("standard_1010")
    d10 = dict(zip(n10, p10, strict=True))
    assert len(n20) == 21 and len(n10) == 69
    for n, p in zip(n20, p20, strict=True):
        np.testing.assert_allclose(d10[n], p)
    c = np.array([0, 0, 0.04])
    u = (p10 - c) / np.linalg.norm(p10 - c, axis=1, keepdims=True)
    ang = np.degrees(np.arccos(np.clip(u @ u.T, -1, 1)))
    np.fill_diagonal(ang, np.inf)
    nearest = ang.min(1)
    # The 10-10 system spaces neighbours about 10 % of the 180° nasion–inion arc apart.
    assert np.all(nearest > 9.0) and np.all(nearest < 19.0), (
        nearest.min(),
        nearest.max(),
    )
    # Midline 10 % steps: Fz–Cz is 36° of arc (20 %).
    uz = dict(zip(n10, u, strict=True))
    assert np.degrees(np.arccos(uz["Fz"] @ uz["Cz"])) == pytest.approx(36.0)
    assert np.degrees(np.arccos(uz["T7"] @ uz["T8"])) == pytest.approx(144.0)


def test_bad_input():
    with pytest.raises(ValueError, match="kind.*standard_1020.*standard_1010"):
        standard_montage("no_such_montage")
    with pytest.raises(TypeError, match="kind"):
        standard_montage(1020)
    with pytest.raises(ValueError, match="project=False"):
        standard_montage("standard_1020", project=False)
    with pytest.raises(TypeError, match="project"):
        standard_montage("standard_1020", project="yes")
    with pytest.raises(ValueError, match="radius"):
        standard_montage(radius=-1.0)
    with pytest.raises(ValueError, match="center"):
        standard_montage(center=(0, np.nan, 0))


def test_builtin_defaults_unchanged():
    # radius / center default to 0.075 m and (0, 0, 0.04) m, as before.
    names, pos = standard_montage("standard_1010")
    names2, pos2 = standard_montage("standard_1010", radius=0.075, center=(0, 0, 0.04))
    assert names == names2
    np.testing.assert_array_equal(pos, pos2)
    np.testing.assert_allclose(np.linalg.norm(pos - [0, 0, 0.04], axis=1), 0.075)


# --------------------------------------------------------------------------
# MNE-Python's montages
# --------------------------------------------------------------------------


def test_every_mne_montage_loads_on_a_plausible_head():
    mne = pytest.importorskip("mne")
    names_all = mne_montage_names()
    builtin = mne.channels.get_builtin_montages()
    # Every MNE EEG montage is offered; fNIRS optode layouts are not.
    assert set(names_all) <= set(builtin)
    assert {"biosemi64", "easycap-M1", "fsaverage_1010", "GSN-HydroCel-129"} <= set(
        names_all
    )
    assert not any(n.startswith("artinis") for n in names_all)
    assert available_montages()[: len(MONTAGES)] == MONTAGES
    for name in names_all:
        ch, pos = standard_montage(name)
        assert len(ch) == len(set(ch)) == pos.shape[0] >= 16, name
        assert np.all(np.isfinite(pos)), name
        fit = fit_sphere_robust(pos)
        # mne-tools/mne-python#3516: an algebraic fit gave 97 m on standard_1005.
        assert 0.07 < fit.radius < 0.12, (name, fit.radius)
        assert np.linalg.norm(fit.center) < 0.06, (name, fit.center)
        d = np.linalg.norm(pos - fit.center, axis=1)
        assert np.all((d > 0.04) & (d < 0.15)), (name, d.min(), d.max())
        assert np.median(np.abs(fit.residuals)) < 0.01, name
        # Projected onto a given sphere: exactly on it, same names and order.
        ch2, pos2 = standard_montage(name, radius=0.08, center=(0.0, 0.01, 0.04))
        assert ch2 == ch
        np.testing.assert_allclose(
            np.linalg.norm(pos2 - [0.0, 0.01, 0.04], axis=1), 0.08, rtol=1e-12
        )


def test_mne_montage_matches_info_positions():
    mne = pytest.importorskip("mne")
    ch, pos = standard_montage("easycap-M1")
    info = mne.create_info(ch, 1000.0, "eeg")
    info.set_montage(mne.channels.make_standard_montage("easycap-M1"))
    ref = np.array([c["loc"][:3] for c in info["chs"]])
    np.testing.assert_allclose(pos, ref, atol=1e-15)


def test_mne_montage_options():
    pytest.importorskip("mne")
    ch, pos = standard_montage("biosemi32", project=False)
    assert len(ch) == 32
    ch_p, pos_p = standard_montage("biosemi32", project=True)
    fit = fit_sphere_robust(pos)
    np.testing.assert_allclose(
        np.linalg.norm(pos_p - fit.center, axis=1), fit.radius, rtol=1e-12
    )
    with pytest.raises(ValueError, match="radius / center"):
        standard_montage("biosemi32", radius=0.09, project=False)
    with pytest.raises(ValueError, match="colin27"):
        standard_montage("standard_1005")  # MNE >= 1.13 renamed it
    with pytest.raises(ValueError, match="biosemi64"):
        standard_montage("biosemi63")  # the message lists MNE's names


# --------------------------------------------------------------------------
# Robust sphere fit
# --------------------------------------------------------------------------


def _cap(n, radius, center, rng, min_z=-0.3):
    u = rng.standard_normal((n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    u = u[u[:, 2] > min_z]
    return center + radius * u


@pytest.mark.parametrize("loss", ["squares", "huber", "tukey"])
def test_fit_sphere_robust_exact_on_a_sphere(loss):
    rng = np.random.default_rng(1)
    center = np.array([0.003, -0.012, 0.041])
    pts = _cap(200, 0.0912, center, rng)
    fit = fit_sphere_robust(pts, loss=loss)
    assert fit.converged
    assert fit.radius == pytest.approx(0.0912, rel=1e-13)
    np.testing.assert_allclose(fit.center, center, atol=1e-14)
    np.testing.assert_allclose(fit.weights, 1.0, rtol=1e-12)
    assert np.max(np.abs(fit.residuals)) < 1e-15


def test_fit_sphere_robust_rejects_outliers():
    rng = np.random.default_rng(2)
    center = np.array([0.0, 0.01, 0.04])
    pts = _cap(300, 0.09, center, rng, min_z=0.0)
    pts = pts + 0.0005 * rng.standard_normal(pts.shape)  # 0.5 mm noise
    # 15 % gross outliers: a "face" 2-4 cm outside the sphere.
    out = _cap(60, 0.09, center, rng, min_z=0.0)
    out = center + (out - center) * rng.uniform(1.25, 1.45, (len(out), 1))
    allp = np.concatenate([pts, out])
    ls = fit_sphere_robust(allp, loss="squares")
    tk = fit_sphere_robust(allp, loss="tukey")
    hb = fit_sphere_robust(allp, loss="huber")
    assert abs(ls.radius - 0.09) > 2e-3  # plain least squares is pulled away
    assert abs(tk.radius - 0.09) < 2e-4 and np.linalg.norm(tk.center - center) < 3e-4
    assert abs(hb.radius - 0.09) < abs(ls.radius - 0.09)
    assert np.all(tk.weights[len(pts) :] == 0)


def test_fit_sphere_robust_bad_input():
    with pytest.raises(ValueError, match="points"):
        fit_sphere_robust(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="points"):
        fit_sphere_robust([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])  # coplanar
    with pytest.raises(ValueError, match="points"):
        fit_sphere_robust([[0, 0, np.nan], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(TypeError, match="points"):
        fit_sphere_robust("Cz")
    with pytest.raises(ValueError, match="loss"):
        fit_sphere_robust(np.eye(4, 3) + [0, 0, 0.1], loss="cauchy")
    with pytest.raises(ValueError, match="max_iter"):
        fit_sphere_robust(np.eye(4, 3) + [0, 0, 0.1], max_iter=0)
