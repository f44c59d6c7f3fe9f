"""exg_jax.viz: every figure draws what its docstring says, headless (Agg)."""

import io
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

import exg_jax as ex  # noqa: E402
from exg_jax import viz  # noqa: E402
from exg_jax.resolution import ResolutionOperator  # noqa: E402

CENTER = np.array([0.0, 0.0, 0.04])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def montage():
    names, pos = ex.standard_montage("standard_1010", radius=0.075, center=CENTER)
    return names, np.asarray(pos)


@pytest.fixture(scope="module")
def sources():
    pos, _ = ex.ico_source_space(2, radius=0.06, center=CENTER)  # 162 sources
    return np.asarray(pos)


def _render(fig):
    """Draw the figure (layout, legends, clip paths run at draw time)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"


def _gids(fig, gid):
    return fig.findobj(lambda a: a.get_gid() == gid)


def _colorbars(fig):
    return [
        im.colorbar
        for im in fig.findobj(AxesImage)
        if getattr(im, "colorbar", None) is not None
    ]


def _cbar_label(cb):
    return cb.ax.get_ylabel() + cb.ax.get_xlabel()


def _texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def _dipole_field(pos, center=CENTER):
    u = (pos - center) / np.linalg.norm(pos - center, axis=1, keepdims=True)
    return 3e-6 * u[:, 0] - 2e-6 * u[:, 1] + 1e-6 * (u[:, 2] ** 2 - 0.5)  # V


# ---------------------------------------------------------------------------
# topomap
# ---------------------------------------------------------------------------


def test_topomap_draws_head_sensors_and_colorbar(montage):
    names, pos = montage
    vals = _dipole_field(pos)
    fig = viz.plot_topomap(vals, pos, ch_names=names, title="N100", show_names=True)
    assert len(fig.axes) == 2  # map + colour bar
    ax = fig.axes[0]
    assert ax.get_title() == "N100"
    (cb,) = _colorbars(fig)
    assert "µV" in _cbar_label(cb) and "potential" in _cbar_label(cb)
    lo, hi = cb.mappable.get_clim()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(vals).max() * 1e6)
    assert len(_gids(fig, "head")) == 1 and len(_gids(fig, "nose")) == 1
    assert len(_gids(fig, "ear")) == 2
    (dots,) = _gids(fig, "sensors")
    xy = dots.get_offsets()
    assert xy.shape == (len(names), 2)
    # nose (+y) up, right ear (+x) right; the 10 % ring on the head circle
    np.testing.assert_allclose(xy[names.index("Fpz")], [0, 1], atol=1e-9)
    np.testing.assert_allclose(xy[names.index("T8")], [1, 0], atol=1e-9)
    np.testing.assert_allclose(xy[names.index("Cz")], [0, 0], atol=1e-9)
    assert {"Cz", "Oz", "T7"} <= set(_texts(fig))
    # the field is clipped to the head circle (the ring electrodes lie on it)
    (im,) = _gids(fig, "field")
    assert np.all(np.isfinite(im.get_array()))
    clip = im.get_clip_path().get_fully_transformed_path().vertices
    radius = np.hypot(*ax.transData.inverted().transform(clip).T)
    assert radius.min() == pytest.approx(1.0)  # (Bézier control points lie outside)


def test_topomap_scale_ax_and_center(montage):
    names, pos = montage
    vals = _dipole_field(pos)
    fig0, ax = plt.subplots()
    fig = viz.plot_topomap(
        vals,
        pos,
        units="µV",
        scale=1e6,
        ax=ax,
        contours=0,
        sphere=ex.SphereModel(),
        head_angle=90,
    )
    assert fig is fig0 and len(fig.axes) == 2
    # head circle at the sphere's equator: the ring (72° from Cz) at 0.8
    fpz = _gids(fig, "sensors")[0].get_offsets()[names.index("Fpz")]
    np.testing.assert_allclose(fpz, [0, 72 / 90], atol=1e-9)
    assert _cbar_label(_colorbars(fig)[0]) == "potential (µV)"
    # default centre: least-squares sphere through the electrodes
    np.testing.assert_allclose(viz._fit_sphere_center(pos), CENTER, atol=1e-12)


def test_spherical_spline_interpolates(montage):
    _, pos = montage
    u = (pos - CENTER) / np.linalg.norm(pos - CENTER, axis=1, keepdims=True)
    vals = _dipole_field(pos)
    np.testing.assert_allclose(viz._spherical_spline(u, vals, u), vals, atol=1e-9)
    # a smooth field between the electrodes is reproduced to a few per cent
    rng = np.random.default_rng(0)
    t = rng.standard_normal((50, 3))
    t[:, 2] = np.abs(t[:, 2]) + 1.0
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    t = t[t[:, 2] > np.cos(np.deg2rad(60))]
    got = viz._spherical_spline(u, vals, t)
    want = _dipole_field(CENTER + t)
    assert np.max(np.abs(got - want)) < 0.03 * np.max(np.abs(vals))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(values=np.zeros(5)), ValueError, "values"),
        (dict(values=np.full(69, np.nan)), ValueError, "values"),
        (dict(values="x"), TypeError, "values"),
        (dict(ch_pos=np.zeros((69, 2))), ValueError, "ch_pos"),
        (dict(ch_names=["a"] * 3), ValueError, "ch_names"),
        (dict(show_names=True), ValueError, "ch_names"),
        (dict(scale=-1.0), ValueError, "scale"),
        (dict(ax="axes"), TypeError, "ax"),
        (dict(center=(0, 0)), ValueError, "center"),
        (dict(head_angle=0.0), ValueError, "head_angle"),
    ],
)
def test_topomap_bad_input(montage, kwargs, exc, match):
    _, pos = montage
    args = dict(values=_dipole_field(pos), ch_pos=pos) | kwargs
    with pytest.raises(exc, match=match):
        viz.plot_topomap(args.pop("values"), args.pop("ch_pos"), **args)


def test_topomap_duplicate_electrodes(montage):
    _, pos = montage
    pos = pos.copy()
    pos[1] = pos[0]
    with pytest.raises(ValueError, match="ch_pos"):
        viz.plot_topomap(_dipole_field(pos), pos)


def test_missing_matplotlib_names_the_extra(montage, monkeypatch):
    _, pos = montage
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "exg-jax\[plot\]"'):
        viz.plot_topomap(_dipole_field(pos), pos)


# ---------------------------------------------------------------------------
# source projections
# ---------------------------------------------------------------------------


def _blob(pos, at, width=0.015, amp=5e-9):
    return amp * np.exp(-np.sum((pos - at) ** 2, axis=1) / (2 * width**2))


def test_source_projections_three_views(sources):
    true = sources[17] + np.array([0.002, 0.0, 0.0])
    vals = _blob(sources, sources[17])
    fig = viz.plot_source_projections(
        vals, sources, true_pos=true, sphere=ex.SphereModel(), title="dSPM"
    )
    cbs = _colorbars(fig)
    assert len(cbs) == 1 and "nA·m" in _cbar_label(cbs[0])
    assert len(fig.axes) == 4
    titles = [a.get_title() for a in fig.axes[:3]]
    assert titles == ["top (x–y)", "front (x–z)", "side (y–z)"]
    assert fig.get_suptitle() == "dSPM"
    assert len(_gids(fig, "head")) == 3
    assert len(_gids(fig, "nose")) == 2  # top and side
    assert len(_gids(fig, "ear")) == 4  # top and front
    assert len(_gids(fig, "left")) == len(_gids(fig, "right")) == 2
    assert len(_gids(fig, "front")) == 1
    trues, ests = _gids(fig, "true_pos"), _gids(fig, "est_pos")
    assert len(trues) == len(ests) == 3
    # the top view's markers sit at (x, y) in mm
    np.testing.assert_allclose(ests[0].get_xydata()[0], sources[17, :2] * 1e3)
    np.testing.assert_allclose(trues[0].get_xydata()[0], true[:2] * 1e3)
    (leg,) = fig.legends
    labels = [t.get_text() for t in leg.get_texts()]
    assert labels == ["true source", "estimated peak (2.0 mm from true source)"]
    # the projections are maxima: their largest pixel is the largest value
    img = fig.axes[0].get_images()[0].get_array()
    assert np.nanmax(img) == pytest.approx(vals.max() * 1e9)
    _render(fig)


def test_source_projections_vector_values_and_options(sources):
    vec = np.zeros((len(sources), 3))
    vec[5] = [3.0, 4.0, 0.0]
    fig = viz.plot_source_projections(
        vec, sources, units="", est_pos=None, views=("top",), label="dSPM"
    )
    assert len(fig.axes) == 2 and not fig.legends
    cb = _colorbars(fig)[0]
    assert _cbar_label(cb) == "dSPM" and cb.mappable.get_clim() == (0.0, 5.0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(values=np.ones(3)), ValueError, "values"),
        (dict(values=np.ones((162, 2))), ValueError, "values"),
        (dict(src_pos=np.ones((162, 2))), ValueError, "src_pos"),
        (dict(true_pos=np.ones(2)), ValueError, "true_pos"),
        (dict(est_pos="max"), ValueError, "est_pos"),
        (dict(head_radius=0.0), ValueError, "head_radius"),
        (dict(center=(0, 0, 0), sphere=ex.SphereModel()), ValueError, "center"),
        (dict(views=("bottom",)), ValueError, "views"),
        (dict(fig="figure"), TypeError, "fig"),
        (dict(sphere="sphere"), TypeError, "sphere"),
    ],
)
def test_source_projections_bad_input(sources, kwargs, exc, match):
    args = dict(values=np.ones(len(sources)), src_pos=sources) | kwargs
    with pytest.raises(exc, match=match):
        viz.plot_source_projections(args.pop("values"), args.pop("src_pos"), **args)


# ---------------------------------------------------------------------------
# PSF / CTF
# ---------------------------------------------------------------------------


def _smooth_R(pos, shift=(0.0, 0.01, 0.0), width=0.02):
    """A synthetic resolution matrix whose PSFs peak 1 cm in front of their source."""
    d2 = np.sum((pos[:, None, :] - pos[None, :, :] - np.asarray(shift)) ** 2, axis=-1)
    return np.exp(-d2 / (2 * width**2))


def test_psf_ctf_both(sources):
    R = _smooth_R(sources)
    fig = viz.plot_psf_ctf(R, sources, 40, kind="both", title="MNE, λ² = 1/9")
    assert len(fig.subfigs) == 2 and len(fig.axes) == 8  # 2 x (3 views + colour bar)
    assert [s.get_suptitle() for s in fig.subfigs] == [
        "PSF of source 40",
        "CTF of source 40",
    ]
    assert fig.get_suptitle() == "MNE, λ² = 1/9"
    cbs = _colorbars(fig)
    assert len(cbs) == 2 and {_cbar_label(c) for c in cbs} == {
        "|PSF| / max",
        "|CTF| / max",
    }
    labels = [t.get_text() for s in fig.subfigs for t in s.legends[0].get_texts()]
    assert labels[0] == "source" and labels[1].startswith("PSF peak (")
    assert labels[2] == "target source" and labels[3].startswith("CTF peak (")
    # the PSF's peak is the source ~1 cm in front of source 40
    psf_est = _gids(fig.subfigs[0], "est_pos")[0].get_xydata()[0] / 1e3
    np.testing.assert_allclose(psf_est, sources[np.argmax(R[:, 40]), :2], atol=1e-12)


def test_psf_ctf_free_orientation_and_operator(sources):
    rng = np.random.default_rng(1)
    n, c = len(sources), 12
    K = rng.standard_normal((3 * n, c))
    G = rng.standard_normal((c, n))
    op = ResolutionOperator(kernel=K, gain=G, n_orient=3)
    for kind in ("psf", "ctf"):
        dense, _ = viz._function_values(K @ G, 7, kind, None)
        fac, _ = viz._function_values(op, 7, kind, 3)
        np.testing.assert_allclose(fac, dense, rtol=1e-10)
    fig = viz.plot_psf_ctf(op, sources, 7, kind="ctf", views=("top", "side"))
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "top (x–y)"
    with pytest.raises(ValueError, match="n_orient"):
        viz.plot_psf_ctf(K @ G, sources, 7, n_orient=1)
    with pytest.raises(ValueError, match="idx"):
        viz.plot_psf_ctf(K @ G, sources, n)
    with pytest.raises(ValueError, match="kind"):
        viz.plot_psf_ctf(K @ G, sources, 0, kind="psd")
    with pytest.raises(ValueError, match="src_pos"):
        viz.plot_psf_ctf(K @ G, sources[:10], 0)
    with pytest.raises(ValueError, match="R"):
        viz.plot_psf_ctf(np.ones((5, 3)), sources, 0)


# ---------------------------------------------------------------------------
# resolution metrics
# ---------------------------------------------------------------------------


def test_resolution_metrics_maps_and_distributions(sources):
    rng = np.random.default_rng(2)
    n = len(sources)
    metrics = {
        "MNE": 0.02 * rng.random(n),
        "dSPM": 0.01 * rng.random(n),
        "sLORETA": np.zeros(n),
    }
    fig = viz.plot_resolution_metrics(metrics, sources, sphere=ex.SphereModel())
    assert len(fig.axes) == 3 * 2 + 1 + 1  # maps, colour bar, distributions
    maps = [a for a in fig.axes if (a.get_gid() or "").startswith("map:")]
    assert [a.get_title() for a in maps] == ["MNE", "dSPM", "sLORETA"]
    (cb,) = _colorbars(fig)
    assert "localisation error" in _cbar_label(cb) and "(mm)" in _cbar_label(cb)
    (dist,) = [a for a in fig.axes if a.get_gid() == "distributions"]
    assert [t.get_text() for t in dist.get_xticklabels()] == list(metrics)
    assert dist.get_ylabel() == "localisation error (mm)"
    labels = [t.get_text() for t in dist.get_legend().get_texts()]
    med = np.median(metrics["MNE"]) * 1e3
    p95 = np.percentile(metrics["MNE"], 95) * 1e3
    assert labels[0] == f"MNE: median {med:.3g}, 95th pct {p95:.3g} mm"
    assert labels[2] == "sLORETA: median 0, 95th pct 0 mm"
    assert labels[-2:] == ["median", "95th percentile"]
    assert len(_gids(fig, "head")) == 6


@pytest.mark.parametrize(
    "metrics, exc, match",
    [
        ([1, 2], TypeError, "metrics"),
        ({}, ValueError, "metrics"),
        ({"MNE": np.zeros(3)}, ValueError, "metrics"),
        ({"MNE": np.full(162, np.nan)}, ValueError, "metrics"),
        ({1: np.zeros(162)}, TypeError, "metrics"),
    ],
)
def test_resolution_metrics_bad_input(sources, metrics, exc, match):
    with pytest.raises(exc, match=match):
        viz.plot_resolution_metrics(metrics, sources)


# ---------------------------------------------------------------------------
# λ² curves
# ---------------------------------------------------------------------------


def test_lambda2_curves():
    lam = np.logspace(-4, 2, 60)
    gcv = (np.log10(lam) + 1.0) ** 2 + 1.0
    ev = -((np.log10(lam) + 2.0) ** 2)
    fig = viz.plot_lambda2_curve(
        lam,
        {"GCV": gcv, "evidence": ev},
        selected={"GCV": 0.1, "evidence": 0.01},
        normalize=True,
        title="λ² criteria",
    )
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "λ² (= 1/SNR²)"
    assert ax.get_title() == "λ² criteria"
    assert "scaled" in ax.get_ylabel()
    assert len(_gids(fig, "selected")) == 2
    assert len(_gids(fig, "snr_axis")) == 1
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["GCV", "evidence"]
    assert "GCV: selected λ² = 0.1 (SNR 3.16)" in labels
    # one curve, one selection
    _render(fig)
    fig = viz.plot_lambda2_curve(lam, gcv, selected=0.1, ylabel="GCV", snr_axis=False)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_ylabel() == "GCV"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "selected λ² = 0.1 (SNR 3.16)"
    ]


@pytest.mark.parametrize(
    "lam, curves, kwargs, exc, match",
    [
        (np.array([0.0, 1.0]), np.ones(2), {}, ValueError, "lambda2"),
        (np.ones(3), np.ones(2), {}, ValueError, "curves"),
        (np.ones(2), {"a": np.array([1.0, np.inf])}, {}, ValueError, "curves"),
        (np.ones(2), np.ones(2), dict(selected=-1.0), ValueError, "selected"),
        (np.ones(2), np.ones(2), dict(selected="gcv"), TypeError, "selected"),
        (np.ones(2), np.ones(2), dict(yscale="loglog"), ValueError, "yscale"),
        (np.ones(2), np.ones(2), dict(ax=1), TypeError, "ax"),
    ],
)
def test_lambda2_curve_bad_input(lam, curves, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        viz.plot_lambda2_curve(lam, curves, **kwargs)
