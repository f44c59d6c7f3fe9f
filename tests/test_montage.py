"""Tests for the built-in ideal-sphere montages."""

import numpy as np
import pytest

from exg_jax.montage import MONTAGES, standard_montage


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
    with pytest.raises(ValueError, match="kind"):
        standard_montage("biosemi64")
    with pytest.raises(ValueError, match="radius"):
        standard_montage(radius=-1.0)
    with pytest.raises(ValueError, match="center"):
        standard_montage(center=(0, np.nan, 0))
