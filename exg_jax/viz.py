"""Figures for EEG source localisation with matplotlib (the ``plot`` extra).

Every function draws one figure a researcher expects from a sphere-model
analysis and returns the :class:`matplotlib.figure.Figure`:

- :func:`plot_topomap`: interpolated scalp map of sensor values (spherical
  splines) with head outline, nose, ears, sensors and a colour bar;
- :func:`plot_source_projections`: a source map as three orthogonal
  maximum-intensity projections (top, front, side) with head outline, left /
  right and front marked, colour bar, true and estimated peaks;
- :func:`plot_psf_ctf`: point-spread / cross-talk functions of one source
  from a resolution matrix, drawn as source projections;
- :func:`plot_resolution_metrics`: one resolution metric (e.g. the peak
  localisation error) over all sources for several methods: maps and
  distributions with median and 95th percentile;
- :func:`plot_lambda2_curve`: regularisation criteria over λ².

Coordinates are head coordinates in metres: +x right, +y front (nose), +z up.
matplotlib is imported only when a function is called (``pip install
"exg-jax[plot]"``). New figures are created with ``matplotlib.pyplot.figure``
(so notebooks show them); nothing calls ``pyplot.show``: save the figure with
``fig.savefig(...)`` and close it with ``plt.close(fig)`` when drawing many.
Inputs are NumPy or JAX arrays (converted with ``numpy.asarray``); they are
checked eagerly (``ValueError`` / ``TypeError`` naming the argument).
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import ArrayLike, Real

from ._typing import IntScalar, NestedSequence, Point3, RealScalar
from ._validate import (
    as_int,
    as_point3,
    check_array,
    check_finite,
    check_option,
    check_type,
)
from .resolution import ResolutionOperator, get_cross_talk, get_point_spread
from .sphere import SphereModel

__all__ = [
    "plot_topomap",
    "plot_source_projections",
    "plot_psf_ctf",
    "plot_resolution_metrics",
    "plot_lambda2_curve",
]

_INSTALL = 'pip install "exg-jax[plot]"'
_PREFIXES = {
    -15: "f",
    -12: "p",
    -9: "n",
    -6: "µ",
    -3: "m",
    0: "",
    3: "k",
    6: "M",
    9: "G",
}
# name -> (horizontal axis, vertical axis, title); indices into (x, y, z)
_VIEWS = {
    "top": (0, 1, "top (x–y)"),
    "front": (0, 2, "front (x–z)"),
    "side": (1, 2, "side (y–z)"),
}
_AXIS = ("x", "y", "z")
_TRUE_STYLE = dict(marker="o", ms=12, mfc="none", mec="#00e5ff", mew=2.2, ls="none")
_EST_STYLE = dict(marker="x", ms=11, color="#39ff14", mew=2.6, ls="none")
_LAMBDA2_LABEL = "λ² (= 1/SNR²)"
_GIDS = {"L": "left", "R": "right", "back": "back", "front": "front"}


# ---------------------------------------------------------------------------
# matplotlib access
# ---------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            f"exg_jax.viz needs matplotlib, the 'plot' extra: {_INSTALL}"
        ) from err
    return plt


def _stroke(width=4.0):
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=width, foreground="black")]


def _root(fig):
    """The top-level Figure of a Figure / SubFigure."""
    from matplotlib.figure import Figure

    seen = 0
    while not isinstance(fig, Figure) and seen < 10:
        fig = fig.figure
        seen += 1
    return fig


def _check_ax(ax):
    if ax is None:
        return None
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(
            f"ax must be a matplotlib Axes or None, got {type(ax).__name__}."
        )
    return ax


def _check_fig(fig):
    if fig is None:
        return None
    from matplotlib.figure import FigureBase

    if not isinstance(fig, FigureBase):
        raise TypeError(
            f"fig must be a matplotlib Figure or SubFigure or None, got {type(fig).__name__}."
        )
    return fig


# ---------------------------------------------------------------------------
# Input checks (eager, NumPy)
# ---------------------------------------------------------------------------


def _real(name, x, ndim=None) -> np.ndarray:
    check_array(name, x)
    arr = np.asarray(x, dtype=float)
    if ndim is not None and arr.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}.")
    check_finite(name, arr)
    return arr


def _points(name, x, n=None) -> np.ndarray:
    arr = _real(name, x)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3) (m), got {arr.shape}.")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n}, 3) (m), got {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    return arr


def _positive(name, x, allow_none=True):
    if x is None and allow_none:
        return None
    if isinstance(x, bool | np.bool_) or not isinstance(
        x, numbers.Real | np.ndarray | np.generic
    ):
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(
                f"{name} must be a positive number, got {type(x).__name__}."
            )
    check_array(name, x)
    v = np.asarray(x, dtype=float)
    if v.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}.")
    v = float(v)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {v!r}.")
    return v


def _text(name, x, allow_none=True):
    if x is None and allow_none:
        return None
    if not isinstance(x, str):
        raise TypeError(f"{name} must be a str, got {type(x).__name__}.")
    return x


def _geometry(center, sphere, head_radius, pos):
    """(centre (3,), head radius) in m from the arguments or the positions."""
    if sphere is not None:
        check_type("sphere", sphere, SphereModel, "a SphereModel")
        if center is not None:
            raise ValueError("pass center or sphere, not both.")
        c = np.asarray(sphere.center, dtype=float)
        radii = np.asarray(sphere.radii, dtype=float)
        if c.shape != (3,) or radii.ndim != 1:
            raise ValueError(
                f"sphere must be a single model (center shape (3,)), got a batch "
                f"with center shape {c.shape}."
            )
        r = float(radii[-1]) if head_radius is None else head_radius
    else:
        c = pos.mean(axis=0) if center is None else center
        r = head_radius
        if r is None:
            r = 1.25 * float(np.max(np.linalg.norm(pos - c, axis=1)))
            if r == 0:
                r = 0.1
    return c, r


def _fit_sphere_center(pos):
    """Least-squares sphere centre of ``pos`` (n, 3); the origin when ill-posed."""
    if pos.shape[0] < 4:
        return np.zeros(3)
    A = np.column_stack([2 * pos, np.ones(len(pos))])
    b = np.sum(pos * pos, axis=1)
    sv = np.linalg.svd(A, compute_uv=False)
    if sv[-1] <= 1e-8 * sv[0]:
        return np.zeros(3)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    c = sol[:3]
    r2 = sol[3] + c @ c
    spread = np.max(np.linalg.norm(pos - pos.mean(0), axis=1))
    if not (r2 > 0 and np.sqrt(r2) < 10 * spread):
        return np.zeros(3)
    return c


def _display_scale(vmax, units, scale):
    """(factor, shown units): ``scale`` given -> as is; else an SI prefix."""
    if scale is not None:
        return scale, units
    if not units or not np.isfinite(vmax) or vmax <= 0:
        return 1.0, units
    e = int(np.clip(np.floor(np.log10(vmax) / 3) * 3, -15, 9))
    return 10.0 ** (-e), _PREFIXES[e] + units


def _label(quantity, units):
    return f"{quantity} ({units})" if units else quantity


# ---------------------------------------------------------------------------
# Head drawings
# ---------------------------------------------------------------------------


def _draw_head(ax, cx, cy, r, *, nose=None, ears=False, lw=1.8, color="k"):
    """Circle of radius ``r`` at (cx, cy); a nose pointing ``nose`` ("up" or
    "right"); ears on the left and right of the circle."""
    from matplotlib.patches import Circle

    head = Circle((cx, cy), r, fill=False, lw=lw, color=color, zorder=4, gid="head")
    ax.add_patch(head)
    if nose is not None:
        w, h = 0.1, 0.13
        t = np.array([-w, 0.0, w])
        base = np.sqrt(1 - w**2)
        along = np.array([base, 1 + h, base])
        if nose == "up":
            nx, ny = cx + r * t, cy + r * along
        else:
            nx, ny = cx + r * along, cy + r * t
        ax.plot(
            nx, ny, color=color, lw=lw, zorder=4, gid="nose", solid_joinstyle="miter"
        )
    if ears:
        t = np.linspace(0, np.pi, 30)
        ex = 1 + 0.07 * np.sin(t)
        ey = 0.16 * np.cos(t) - 0.02
        for side in (-1, 1):
            ax.plot(
                cx + side * r * ex, cy + r * ey, color=color, lw=lw, zorder=4, gid="ear"
            )
    return head


# ---------------------------------------------------------------------------
# Topomap
# ---------------------------------------------------------------------------


def _legendre_sum(x, coef):
    """sum_n coef[n] P_n(x) for x of any shape (three-term recurrence)."""
    p_prev, p = np.ones_like(x), x.copy()
    out = coef[0] * p_prev + coef[1] * p
    for n in range(1, len(coef) - 1):
        p_prev, p = p, ((2 * n + 1) * x * p - n * p_prev) / (n + 1)
        out = out + coef[n + 1] * p
    return out


@functools.lru_cache(maxsize=4)
def _spline_table(order=4, n_terms=60, size=20001):
    """The spherical-spline kernel ``g(x) = 1/(4π) Σ_n (2n+1) / (n(n+1))^order
    P_n(x)`` tabulated on ``size`` points of [-1, 1] (linear interpolation of
    the table is accurate to ~1e-9 relative: g is smooth for order 4)."""
    n = np.arange(n_terms + 1, dtype=float)
    coef = np.zeros(n_terms + 1)
    coef[1:] = (2 * n[1:] + 1) / (n[1:] * (n[1:] + 1)) ** order / (4 * np.pi)
    x = np.linspace(-1.0, 1.0, size)
    return x, _legendre_sum(x, coef)


def _spline_kernel(cosines, order=4):
    x, g = _spline_table(order)
    return np.interp(np.clip(cosines, -1, 1), x, g)


def _spherical_spline(dirs, values, targets, *, order=4, reg=1e-7):
    """Spherical-spline interpolation (Perrin et al. 1989) of ``values`` at unit
    vectors ``dirs`` (n, 3), evaluated at unit vectors ``targets`` (m, 3)."""
    G = _spline_kernel(dirs @ dirs.T, order)
    n = len(dirs)
    A = np.zeros((n + 1, n + 1))
    A[:n, :n] = G + reg * np.trace(G) / n * np.eye(n)
    A[:n, n] = A[n, :n] = 1.0
    sol = np.linalg.solve(A, np.append(values, 0.0))
    return _spline_kernel(targets @ dirs.T, order) @ sol[:n] + sol[n]


def _azimuthal(dirs, head_angle):
    """Azimuthal equidistant projection about +z; the head circle has radius 1
    at polar angle ``head_angle`` (rad)."""
    theta = np.arccos(np.clip(dirs[:, 2], -1, 1))
    phi = np.arctan2(dirs[:, 1], dirs[:, 0])
    rho = theta / head_angle
    return np.column_stack([rho * np.cos(phi), rho * np.sin(phi)])


def plot_topomap(
    values: Real[ArrayLike, " chan"] | NestedSequence,
    ch_pos: Real[ArrayLike, "chan 3"] | NestedSequence,
    *,
    center: Point3 | None = None,
    ch_names: Sequence[str] | None = None,
    units: str = "V",
    scale: RealScalar | None = None,
    title: str | None = None,
    ax: Any = None,
    cmap: Any = "RdBu_r",
    show_names: bool = False,
    sphere: SphereModel | None = None,
    head_angle: str | RealScalar = "auto",
    extrapolate: bool = False,
    vmax: RealScalar | None = None,
    contours: IntScalar = 6,
    label: str = "potential",
    resolution: IntScalar = 128,
):
    """Scalp map of one value per electrode, interpolated over the head.

    Parameters
    ----------
    values : array, shape (n_chan,), ``units`` (V by default)
        One value per electrode (e.g. the potential at one time).
    ch_pos : array, shape (n_chan, 3), m
        Electrode positions in head coordinates (+x right, +y nose, +z up).
    center : array_like, shape (3,), m, optional
        Centre of the projection. Default: ``sphere.center`` when ``sphere``
        is given, else the least-squares sphere through ``ch_pos`` (the
        origin when fewer than 4 electrodes or a degenerate fit).
    ch_names : sequence of str, length n_chan, optional
        Electrode names (written next to the dots when ``show_names``).
    units : str
        Units of ``values``. With ``scale=None`` the values are shown with an
        SI prefix chosen from their largest magnitude (V → µV for EEG).
    scale : float, optional
        Multiply the values by ``scale`` and show ``units`` unchanged (e.g.
        ``units="µV", scale=1e6``).
    title : str, optional
        Axes title.
    ax : matplotlib Axes, optional
        Axes to draw in (a colour bar is added beside it); default: a new figure.
    cmap : str or Colormap
        Diverging colour map; the colour limits are symmetric about 0.
    show_names : bool
        Write ``ch_names`` next to the electrodes.
    sphere : SphereModel, optional
        Head model whose centre is the projection centre.
    head_angle : "auto" or float (degrees)
        Polar angle from the vertex (about ``center``) drawn as the head
        circle, where nose and ears are attached. ``"auto"``: the mean polar
        angle of the 10 % ring electrodes Fpz, T7 (T3), Oz, T8 (T4) when
        ``ch_names`` has any of them, else of the outermost electrode: the
        ring lies on the head circle, as in EEGLAB and MNE-Python. 90 puts the
        sphere's equator there instead.
    extrapolate : bool
        Interpolate out to the head circle even where it lies beyond the
        outermost electrode (spherical splines extrapolate poorly); by
        default the map stops just outside the outermost electrode.
    vmax : float, optional
        Colour limit in the units of ``values`` (default ``max |values|``).
    contours : int
        Number of contour lines (0: none).
    label : str
        Quantity named on the colour bar (e.g. "potential").
    resolution : int
        Pixels across the interpolated image.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn in.

    Notes
    -----
    Drawn: the field interpolated by spherical splines (Perrin et al. 1989,
    order 4) on the unit sphere about ``center``, shown in the azimuthal
    equidistant projection about the vertex (+z) with the nose (+y) up and
    the right ear (+x) on the right, masked just outside the outermost
    electrode and outside the head circle; contour lines; the
    head outline (gid ``"head"``), nose (``"nose"``), ears (``"ear"``);
    black sensor dots (``"sensors"``); a colour bar labelled with the units.
    """
    plt = _pyplot()
    ax = _check_ax(ax)
    pos = _points("ch_pos", ch_pos)
    n = pos.shape[0]
    vals = _real("values", values, ndim=1)
    if vals.shape != (n,):
        raise ValueError(
            f"values must have shape ({n},) (one per row of ch_pos), got {vals.shape}."
        )
    if n < 3:
        raise ValueError(f"ch_pos needs at least 3 electrodes for a map, got {n}.")
    if ch_names is not None:
        if isinstance(ch_names, str | bytes | Mapping) or not hasattr(
            ch_names, "__iter__"
        ):
            raise TypeError(
                f"ch_names must be a sequence of str, got {type(ch_names).__name__}."
            )
        ch_names = list(ch_names)
        if len(ch_names) != n:
            raise ValueError(f"ch_names has {len(ch_names)} names for {n} electrodes.")
        for nm in ch_names:
            _text("ch_names[i]", nm, allow_none=False)
    if not isinstance(show_names, bool | np.bool_):
        raise TypeError(f"show_names must be True or False, got {show_names!r}.")
    if show_names and ch_names is None:
        raise ValueError("show_names=True needs ch_names.")
    _text("units", units, allow_none=False)
    _text("title", title)
    _text("label", label, allow_none=False)
    scale = _positive("scale", scale)
    vmax = _positive("vmax", vmax)
    if isinstance(head_angle, str):
        check_option("head_angle", head_angle, ("auto",))
    else:
        head_angle = _positive("head_angle", head_angle, allow_none=False)
        if head_angle > 180:
            raise ValueError(
                f"head_angle must be in (0, 180] degrees, got {head_angle}."
            )
    if not isinstance(extrapolate, bool | np.bool_):
        raise TypeError(f"extrapolate must be True or False, got {extrapolate!r}.")
    contours = as_int("contours", contours, minimum=0)
    resolution = as_int("resolution", resolution, minimum=16)
    if sphere is not None:
        c, _ = _geometry(
            None if center is None else as_point3("center", center), sphere, 1.0, pos
        )
    elif center is not None:
        c = as_point3("center", center)
    else:
        c = _fit_sphere_center(pos)

    rel = pos - c
    norm = np.linalg.norm(rel, axis=1)
    if np.any(norm <= 1e-9 * max(1.0, float(norm.max()))):
        raise ValueError("ch_pos has an electrode at the projection centre (center).")
    dirs = rel / norm[:, None]
    cosd = dirs @ dirs.T
    np.fill_diagonal(cosd, -1)
    if np.any(cosd > 1 - 1e-12):
        i, j = np.argwhere(cosd > 1 - 1e-12)[0]
        raise ValueError(
            f"ch_pos has electrodes {i} and {j} in the same direction from the centre."
        )
    polar = np.arccos(np.clip(dirs[:, 2], -1, 1))
    if head_angle == "auto":
        ring = [
            i
            for i, nm in enumerate(ch_names or ())
            if nm.lower() in ("fpz", "oz", "t7", "t8", "t3", "t4")
        ]
        angle = float(np.mean(polar[ring])) if ring else float(polar.max())
        if angle <= 0:
            raise ValueError("ch_pos: every electrode lies at the vertex of center.")
    else:
        angle = np.deg2rad(head_angle)
    xy = _azimuthal(dirs, angle)
    rho_max = float(np.max(np.hypot(xy[:, 0], xy[:, 1])))
    r_img = max(1.0, rho_max * 1.03) if extrapolate else rho_max * 1.03
    if rho_max <= 1.0 + 1e-9:
        r_img = min(r_img, 1.0)

    # interpolation grid over the square around the disc of radius r_img (the
    # image is clipped to the disc, which keeps its edge smooth), mapped back
    # to the sphere
    lin = np.linspace(-r_img, r_img, resolution)
    gx, gy = np.meshgrid(lin, lin)
    theta = np.minimum(np.hypot(gx, gy).ravel() * angle, np.pi)
    phi = np.arctan2(gy, gx).ravel()
    targets = np.column_stack(
        [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]
    )
    grid = _spherical_spline(dirs, vals, targets).reshape(gx.shape)

    lim = float(np.max(np.abs(vals))) if vmax is None else vmax
    factor, shown = _display_scale(lim, units, scale)
    lim = lim * factor if lim > 0 else 1.0

    if ax is None:
        fig = plt.figure(figsize=(5.2, 4.4), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    from matplotlib.patches import Circle

    im = ax.imshow(
        grid * factor,
        origin="lower",
        extent=(-r_img, r_img, -r_img, r_img),
        cmap=cmap,
        vmin=-lim,
        vmax=lim,
        interpolation="bilinear",
        zorder=1,
    )
    clip = Circle((0, 0), r_img, transform=ax.transData)
    im.set_clip_path(clip)
    im.set_gid("field")
    if contours:
        levels = np.linspace(-lim, lim, contours + 2)[1:-1]
        cs = ax.contour(
            lin,
            lin,
            grid * factor,
            levels=levels,
            colors="k",
            linewidths=0.6,
            alpha=0.5,
            zorder=2,
        )
        cs.set_clip_path(clip)
    _draw_head(ax, 0.0, 0.0, 1.0, nose="up", ears=True)
    ax.scatter(xy[:, 0], xy[:, 1], s=10, c="k", zorder=5, gid="sensors", linewidths=0)
    if show_names:
        for (x, y), nm in zip(xy, ch_names, strict=True):
            ax.text(x, y + 0.035, nm, fontsize=6, ha="center", va="bottom", zorder=6)
    ax.set_aspect("equal")
    pad = 0.18
    r_ax = max(r_img, 1.0)
    ax.set_xlim(-r_ax - pad, r_ax + pad)
    ax.set_ylim(-r_ax - pad / 2, r_ax + pad)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label=_label(label, shown))
    return _root(fig)


# ---------------------------------------------------------------------------
# Source maps as maximum-intensity projections
# ---------------------------------------------------------------------------


def _spacing(pos):
    """Median nearest-neighbour distance of ``pos`` (n, 3) (a sample of 2000)."""
    n = len(pos)
    if n < 2:
        return 0.0
    rng = np.random.default_rng(0)
    sample = pos if n <= 2000 else pos[rng.choice(n, 2000, replace=False)]
    best = np.full(len(sample), np.inf)
    for start in range(0, n, 1024):
        block = pos[start : start + 1024]
        d2 = np.sum((sample[:, None, :] - block[None, :, :]) ** 2, axis=-1)
        d2[d2 <= 0] = np.inf
        best = np.minimum(best, d2.min(axis=1))
    best = best[np.isfinite(best)]
    return float(np.sqrt(np.median(best))) if best.size else 0.0


def _mip_image(pa, pb, vals, extent, px, radius):
    """Maximum of ``vals`` over discs of ``radius`` at (pa, pb) on a pixel grid."""
    x0, x1, y0, y1 = extent
    nx = int(np.ceil((x1 - x0) / px))
    ny = int(np.ceil((y1 - y0) / px))
    k = int(np.ceil(radius / px))
    di, dj = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
    keep = (di**2 + dj**2) * px**2 <= radius**2
    di, dj = di[keep], dj[keep]
    ci = np.floor((pb - y0) / px).astype(int)
    cj = np.floor((pa - x0) / px).astype(int)
    ii = (ci[:, None] + di[None, :]).ravel()
    jj = (cj[:, None] + dj[None, :]).ravel()
    vv = np.repeat(vals, len(di))
    ok = (ii >= 0) & (ii < ny) & (jj >= 0) & (jj < nx)
    img = np.full(ny * nx, -np.inf)
    np.maximum.at(img, ii[ok] * nx + jj[ok], vv[ok])
    img[~np.isfinite(img)] = np.nan
    return img.reshape(ny, nx), (x0, x0 + nx * px, y0, y0 + ny * px)


def _source_values(values, n):
    vals = _real("values", values)
    if vals.ndim == 2 and vals.shape == (n, 3):
        return np.linalg.norm(vals, axis=1)
    if vals.shape != (n,):
        raise ValueError(
            f"values must have shape ({n},) or ({n}, 3) (one per source of src_pos), "
            f"got {vals.shape}."
        )
    return np.abs(vals)


def _check_views(views):
    if isinstance(views, str):
        views = (views,)
    try:
        views = tuple(views)
    except TypeError:
        raise TypeError(
            f"views must be a sequence of view names, got {views!r}."
        ) from None
    if not views:
        raise ValueError("views must name at least one view.")
    for v in views:
        check_option("views", v, tuple(_VIEWS))
    return views


def _draw_projection(ax, view, pos, vals, c, r, spacing, *, cmap, vmin, vmax, marks):
    """One maximum-intensity projection of ``vals`` into ``ax``; returns the image."""
    a, b, name = _VIEWS[view]
    mm = 1e3
    half = 1.22 * r * mm
    extent = (c[a] * mm - half, c[a] * mm + half, c[b] * mm - half, c[b] * mm + half)
    sp = spacing if spacing > 0 else r / 10
    px = max(sp * mm / 10, 2 * half / 600)
    order = np.argsort(vals, kind="stable")
    img, ext = _mip_image(
        pos[order, a] * mm, pos[order, b] * mm, vals[order], extent, px, 0.75 * sp * mm
    )
    im = ax.imshow(
        img,
        origin="lower",
        extent=ext,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        zorder=1,
    )
    _draw_head(
        ax,
        c[a] * mm,
        c[b] * mm,
        r * mm,
        nose=None if view == "front" else ("up" if view == "top" else "right"),
        ears=view in ("top", "front"),
    )
    if marks:
        xl, xr = c[a] * mm - 1.18 * r * mm, c[a] * mm + 1.18 * r * mm
        yt = c[b] * mm + 1.18 * r * mm
        if view in ("top", "front"):
            left, right, kw = "L", "R", dict(fontsize=12, fontweight="bold")
        else:
            left, right, kw = "back", "front", dict(fontsize=9)
        kw.update(va="top", zorder=6)
        ax.text(xl, yt, left, ha="left", gid=_GIDS[left], **kw)
        ax.text(xr, yt, right, ha="right", gid=_GIDS[right], **kw)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel(f"{_AXIS[a]} (mm)", labelpad=1)
    ax.set_ylabel(f"{_AXIS[b]} (mm)", labelpad=1)
    ax.tick_params(labelsize=8)
    return im


def _peak_positions(name, x):
    if x is None:
        return None
    arr = _real(name, x)
    if arr.shape == (3,):
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (3,) or (k, 3) (m), got {arr.shape}.")
    return arr


def plot_source_projections(
    values: Real[ArrayLike, " src"] | Real[ArrayLike, "src 3"] | NestedSequence,
    src_pos: Real[ArrayLike, "src 3"] | NestedSequence,
    *,
    center: Point3 | None = None,
    head_radius: RealScalar | None = None,
    true_pos: Real[ArrayLike, "*k 3"] | NestedSequence | None = None,
    est_pos: str | Real[ArrayLike, "3"] | NestedSequence | None = "peak",
    units: str = "A·m",
    title: str | None = None,
    cmap: Any = "hot",
    fig: Any = None,
    sphere: SphereModel | None = None,
    scale: RealScalar | None = None,
    vmax: RealScalar | None = None,
    label: str = "|amplitude|",
    true_label: str = "true source",
    est_label: str = "estimated peak",
    views: Sequence[str] = ("top", "front", "side"),
):
    """A source map as three orthogonal maximum-intensity projections.

    Parameters
    ----------
    values : array, shape (n_src,) or (n_src, 3), ``units`` (A·m by default)
        One value per source (its magnitude is drawn), or one vector per
        source (its Euclidean norm is drawn).
    src_pos : array, shape (n_src, 3), m
        Source positions in head coordinates (+x right, +y nose, +z up),
        scattered (a shell, a grid, any set).
    center : array_like, shape (3,), m, optional
        Centre of the head outline. Default: ``sphere.center`` when
        ``sphere`` is given, else the mean of ``src_pos``.
    head_radius : float, m, optional
        Radius of the head outline. Default: the outermost radius of
        ``sphere``, else 1.25 times the largest source distance from the centre.
    true_pos : array, shape (3,) or (k, 3), m, optional
        True source position(s), drawn as cyan rings in every view.
    est_pos : "peak", array of shape (3,) (m), or None
        Estimated source position, drawn as a green cross: ``"peak"`` is the
        position of the largest ``|values|``; None draws none. With
        ``true_pos`` the legend gives its distance to the nearest true source.
    units : str
        Units of ``values`` ("" for dimensionless values such as dSPM's). With
        ``scale=None`` an SI prefix is chosen from the largest value (A·m →
        nA·m).
    title : str, optional
        Figure title.
    cmap : str or Colormap
        Sequential colour map, from 0 to ``vmax``.
    fig : matplotlib Figure or SubFigure, optional
        Figure to draw in (it should be empty); default: a new figure.
    sphere : SphereModel, optional
        Head model: its centre and outer radius give the outline.
    scale : float, optional
        Multiply the values by ``scale`` and show ``units`` unchanged.
    vmax : float, optional
        Upper colour limit in the units of ``values`` (default: the largest).
    label : str
        Quantity named on the colour bar.
    true_label, est_label : str
        Legend entries of the true and estimated positions.
    views : sequence of {"top", "front", "side"}
        The projections drawn, in this order.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The (top-level) figure drawn in.

    Notes
    -----
    Drawn, per view, the maximum of ``|values|`` along the viewing axis
    (each source is a disc of 0.75 times the median source spacing): top
    (x–y, seen from above, nose up), front (x–z, seen from behind, the
    subject's right on the right) and side (y–z, seen from the right, nose
    on the right), with axes in mm (head coordinates); the head circle
    (gid ``"head"``), nose (``"nose"``) on the top and side views, ears on
    the top and front views, "L" / "R" on the top and front views and
    "front" / "back" on the side view; one colour bar for all views labelled
    with the units; the true and estimated positions with a legend.
    """
    plt = _pyplot()
    fig = _check_fig(fig)
    pos = _points("src_pos", src_pos)
    n = pos.shape[0]
    vals = _source_values(values, n)
    center = None if center is None else as_point3("center", center)
    head_radius = _positive("head_radius", head_radius)
    c, r = _geometry(center, sphere, head_radius, pos)
    true = _peak_positions("true_pos", true_pos)
    if isinstance(est_pos, str):
        check_option("est_pos", est_pos, ("peak",))
        est = pos[int(np.argmax(vals))][None, :]
        if not np.any(vals > 0):
            warnings.warn("values are all zero: no peak to mark.", stacklevel=2)
            est = None
    else:
        est = _peak_positions("est_pos", est_pos)
        if est is not None and est.shape[0] != 1:
            raise ValueError(f"est_pos must have shape (3,), got {est.shape}.")
    for nm, s in (
        ("units", units),
        ("label", label),
        ("true_label", true_label),
        ("est_label", est_label),
    ):
        _text(nm, s, allow_none=False)
    _text("title", title)
    scale = _positive("scale", scale)
    vmax = _positive("vmax", vmax)
    views = _check_views(views)

    top = float(np.max(vals)) if vmax is None else vmax
    factor, shown = _display_scale(top, units, scale)
    top = top * factor if top > 0 else 1.0

    if fig is None:
        fig = plt.figure(figsize=(3.6 * len(views) + 1.4, 4.4), layout="constrained")
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    spacing = _spacing(pos)
    handles = []
    for ax, view in zip(axes, views, strict=True):
        im = _draw_projection(
            ax,
            view,
            pos,
            vals * factor,
            c,
            r,
            spacing,
            cmap=cmap,
            vmin=0.0,
            vmax=top,
            marks=True,
        )
        ax.set_title(_VIEWS[view][2], fontsize=10)
        a, b, _ = _VIEWS[view]
        handles = []
        if true is not None:
            (h,) = ax.plot(
                true[:, a] * 1e3, true[:, b] * 1e3, zorder=7, gid="true_pos",
                label=true_label, path_effects=_stroke(4.4), **_TRUE_STYLE,
            )  # fmt: skip
            handles.append(h)
        if est is not None:
            lab = est_label
            if true is not None:
                err = float(np.min(np.linalg.norm(true - est[0], axis=1))) * 1e3
                lab = f"{est_label} ({err:.1f} mm from {true_label})"
            (h,) = ax.plot(
                est[:, a] * 1e3, est[:, b] * 1e3, zorder=8, gid="est_pos",
                label=lab, path_effects=_stroke(5.0), **_EST_STYLE,
            )  # fmt: skip
            handles.append(h)
    fig.colorbar(im, ax=list(axes), shrink=0.85, label=_label(label, shown), pad=0.02)
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=len(handles),
            frameon=False,
            fontsize=9,
        )
    if title is not None:
        fig.suptitle(title)
    return _root(fig)


# ---------------------------------------------------------------------------
# PSF / CTF
# ---------------------------------------------------------------------------


def _function_values(R, idx, kind, n_orient):
    """|PSF| or |CTF| of source ``idx`` (orientations combined): shape (n,)."""
    if isinstance(R, ResolutionOperator):
        n_or, n = R.n_orient, R.n_src
        if n_orient is not None and n_orient != n_or:
            raise ValueError(f"n_orient={n_orient} but R.n_orient is {n_or}.")
        if not -n <= idx < n:
            raise ValueError(f"idx must lie in [0, {n}), got {idx}.")
        if kind == "psf":
            return np.asarray(get_point_spread(R, idx))[:, 0], n
        ctf = np.asarray(get_cross_talk(R, idx))
        return np.linalg.norm(ctf, axis=1), n
    A = _real("R", R, ndim=2)
    rows, n = A.shape
    if n == 0 or rows == 0 or rows % n or rows < n:
        raise ValueError(f"R must have shape (n_orient * n_src, n_src), got {A.shape}.")
    if n_orient is not None and rows != n_orient * n:
        raise ValueError(
            f"R has shape {A.shape}, not (n_orient * n_src, n_src) with n_orient={n_orient}."
        )
    k = rows // n
    if not -n <= idx < n:
        raise ValueError(f"idx must lie in [0, {n}), got {idx}.")
    idx %= n
    if kind == "psf":
        return np.linalg.norm(A[:, idx].reshape(n, k), axis=1), n
    return np.linalg.norm(A[idx * k : (idx + 1) * k].T, axis=1), n


def plot_psf_ctf(
    R: Real[ArrayLike, "row src"] | NestedSequence | ResolutionOperator,
    src_pos: Real[ArrayLike, "src 3"] | NestedSequence,
    idx: IntScalar,
    *,
    kind: str = "psf",
    n_orient: IntScalar | None = None,
    true_pos: Real[ArrayLike, "*k 3"] | NestedSequence | None = None,
    title: str | None = None,
    center: Point3 | None = None,
    head_radius: RealScalar | None = None,
    sphere: SphereModel | None = None,
    normalize: bool = True,
    cmap: Any = "hot",
    fig: Any = None,
    views: Sequence[str] = ("top", "front", "side"),
):
    """Point-spread and / or cross-talk function of one source, as projections.

    Parameters
    ----------
    R : array, shape (n_orient * n_src, n_src), or ResolutionOperator
        Resolution matrix (e.g. :func:`exg_jax.make_resolution_matrix`) or its
        factorised form (:func:`exg_jax.make_resolution_operator`; only the
        one column / rows needed are computed).
    src_pos : array, shape (n_src, 3), m
        Source positions.
    idx : int
        The source whose PSF (column ``idx``) or CTF (rows of ``idx``) is drawn.
    kind : {"psf", "ctf", "both"}
        Which function; ``"both"`` draws the PSF above the CTF.
    n_orient : int, optional
        Rows of ``R`` per source; inferred from the shape when None (a given
        value is checked against it). Orientations are combined by their
        Euclidean norm at each location.
    true_pos : array, shape (3,) or (k, 3), m, optional
        Position(s) marked as the source; default ``src_pos[idx]``.
    title : str, optional
        Figure title (default: none for one function; the function names are
        the panel titles).
    center, head_radius, sphere
        Head outline, as in :func:`plot_source_projections`.
    normalize : bool
        Draw ``|f| / max |f|`` (dimensionless, in [0, 1]); else ``|f|`` in
        the units of ``R`` (dimensionless for MNE, normalised for dSPM /
        sLORETA / eLORETA).
    cmap : str or Colormap
        Sequential colour map.
    fig : matplotlib Figure or SubFigure, optional
        Figure to draw in; default: a new one.
    views : sequence of {"top", "front", "side"}
        Projections drawn per function.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Notes
    -----
    Drawn with :func:`plot_source_projections`: per function, the
    maximum-intensity projections of its magnitude, the source ``idx`` (cyan
    ring) and the function's peak (green cross), with the peak localisation
    error in the legend, and a colour bar. ``kind="both"`` uses two
    sub-figures (PSF above CTF), each with its own title, colour bar and legend.
    """
    plt = _pyplot()
    fig = _check_fig(fig)
    check_option("kind", kind, ("psf", "ctf", "both"))
    idx = as_int("idx", idx)
    n_orient = as_int("n_orient", n_orient, minimum=1, allow_none=True)
    if not isinstance(normalize, bool | np.bool_):
        raise TypeError(f"normalize must be True or False, got {normalize!r}.")
    _text("title", title)
    kinds = ("psf", "ctf") if kind == "both" else (kind,)
    maps = {}
    for k in kinds:
        maps[k], n = _function_values(R, idx, k, n_orient)
    pos = _points("src_pos", src_pos, n)
    idx %= n
    true = pos[idx] if true_pos is None else true_pos
    if fig is None:
        nv = len(_check_views(views))
        fig = plt.figure(
            figsize=(3.6 * nv + 1.4, 4.4 * len(kinds) + (0.4 if title else 0.0)),
            layout="constrained",
        )
    subs = (
        fig.subfigures(len(kinds), 1, squeeze=False)[:, 0] if len(kinds) > 1 else [fig]
    )
    names = {
        "psf": ("PSF", "source", "PSF peak"),
        "ctf": ("CTF", "target source", "CTF peak"),
    }
    for sub, k in zip(subs, kinds, strict=True):
        v = maps[k]
        short, tl, el = names[k]
        top = float(np.max(v))
        if normalize and top > 0:
            v = v / top
        plot_source_projections(
            v,
            pos,
            center=center,
            head_radius=head_radius,
            sphere=sphere,
            true_pos=true,
            units="",
            label=f"|{short}| / max" if normalize else f"|{short}|",
            title=f"{short} of source {idx}",
            cmap=cmap,
            fig=sub,
            true_label=tl,
            est_label=el,
            views=views,
        )
    if title is not None:
        fig.suptitle(title, fontsize=13)
    return _root(fig)


# ---------------------------------------------------------------------------
# Resolution metrics per method
# ---------------------------------------------------------------------------


def _check_metrics(metrics, n):
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"metrics must be a mapping {{method name: array (n_src,)}}, got "
            f"{type(metrics).__name__}."
        )
    if not metrics:
        raise ValueError("metrics is empty: pass {method name: array (n_src,)}.")
    out = {}
    for key, val in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metrics keys must be str (method names), got {key!r}.")
        arr = _real(f"metrics[{key!r}]", val)
        if arr.shape != (n,):
            raise ValueError(
                f"metrics[{key!r}] must have shape ({n},) (one per source), got {arr.shape}."
            )
        out[key] = arr
    return out


def plot_resolution_metrics(
    metrics: Mapping[str, Real[ArrayLike, " src"]],
    src_pos: Real[ArrayLike, "src 3"] | NestedSequence,
    *,
    name: str = "localisation error",
    units: str = "mm",
    scale: RealScalar | None = 1e3,
    center: Point3 | None = None,
    fig: Any = None,
    head_radius: RealScalar | None = None,
    sphere: SphereModel | None = None,
    views: Sequence[str] = ("top", "side"),
    cmap: Any = "viridis",
    vmax: RealScalar | None = None,
    title: str | None = None,
):
    """One resolution metric over all sources, for several methods: maps and distributions.

    Parameters
    ----------
    metrics : mapping {str: array of shape (n_src,)}
        One metric per method, e.g. ``{"dSPM": peak_err, ...}`` from
        :func:`exg_jax.resolution_metrics` (distances in m).
    src_pos : array, shape (n_src, 3), m
        Source positions.
    name : str
        What the metric is (axis and colour-bar label).
    units : str
        Units shown; the values are multiplied by ``scale`` first (m → mm
        by default). With ``scale=None`` an SI prefix is chosen instead
        (then ``units`` is the base unit, e.g. "m").
    scale : float or None
        Factor from the metric's units to ``units``.
    center, head_radius, sphere
        Head outline, as in :func:`plot_source_projections`.
    fig : matplotlib Figure or SubFigure, optional
        Figure to draw in; default: a new one.
    views : sequence of {"top", "front", "side"}
        Projections drawn per method (one row each).
    cmap : str or Colormap
        Sequential colour map of the maps.
    vmax : float, optional
        Upper colour limit in the units shown (default: the largest value).
    title : str, optional
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Notes
    -----
    Drawn: a grid of maps, one column per method (titled with its name) and
    one row per view, each the maximum of the metric along the viewing axis
    (for an error: the worst source along that line), with head outlines
    and one shared colour bar; beside them one panel of distributions: a box
    per method (quartiles, median line, whiskers from the 5th to the 95th
    percentile, the 95th percentile as a red triangle) over the jittered
    values of all sources; the legend gives each method's median and 95th
    percentile.
    """
    plt = _pyplot()
    fig = _check_fig(fig)
    pos = _points("src_pos", src_pos)
    n = pos.shape[0]
    mets = _check_metrics(metrics, n)
    for nm, s in (("name", name), ("units", units)):
        _text(nm, s, allow_none=False)
    _text("title", title)
    scale = _positive("scale", scale)
    vmax = _positive("vmax", vmax)
    center = None if center is None else as_point3("center", center)
    head_radius = _positive("head_radius", head_radius)
    c, r = _geometry(center, sphere, head_radius, pos)
    views = _check_views(views)

    allv = np.concatenate(list(mets.values()))
    factor, shown = _display_scale(float(np.max(np.abs(allv))), units, scale)
    shown_vals = {k: v * factor for k, v in mets.items()}
    lo = min(0.0, float(np.min(allv)) * factor)
    hi = float(np.max(allv)) * factor if vmax is None else vmax
    if hi <= lo:
        hi = lo + 1.0

    m = len(mets)
    if fig is None:
        fig = plt.figure(
            figsize=(2.6 * m + 4.6, 2.7 * len(views) + 1.1), layout="constrained"
        )
    left, right = fig.subfigures(1, 2, width_ratios=[m, 1.9])
    grid = left.subplots(len(views), m, squeeze=False)
    spacing = _spacing(pos)
    for j, (meth, v) in enumerate(shown_vals.items()):
        for i, view in enumerate(views):
            ax = grid[i, j]
            im = _draw_projection(
                ax,
                view,
                pos,
                v,
                c,
                r,
                spacing,
                cmap=cmap,
                vmin=lo,
                vmax=hi,
                marks=j == 0,
            )
            if i == 0:
                ax.set_title(meth, fontsize=11, fontweight="bold")
            if j > 0:
                ax.set_ylabel("")
        grid[0, j].set_gid(f"map:{meth}")
    for i, view in enumerate(views):
        grid[i, 0].set_ylabel(
            f"{_VIEWS[view][2]}\n{grid[i, 0].get_ylabel()}", fontsize=9
        )
    left.colorbar(
        im,
        ax=list(grid.ravel()),
        location="bottom",
        shrink=0.6,
        aspect=30,
        label=_label(f"{name}, maximum along the viewing axis", shown),
    )

    ax = right.subplots()
    ax.set_gid("distributions")
    rng = np.random.default_rng(0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    data = list(shown_vals.values())
    bp = ax.boxplot(
        data,
        whis=(5, 95),
        showfliers=False,
        widths=0.55,
        patch_artist=True,
        medianprops=dict(color="k", lw=2),
    )
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    for j, (meth, v) in enumerate(shown_vals.items()):
        col = colors[j % len(colors)]
        bp["boxes"][j].set(facecolor=col, alpha=0.35, edgecolor=col)
        jitter = (rng.random(len(v)) - 0.5) * 0.35
        ax.scatter(
            j + 1 + jitter, v, s=5, color=col, alpha=0.45, linewidths=0, zorder=3
        )
        med, p95 = np.median(v), np.percentile(v, 95)
        ax.plot(
            [j + 1],
            [p95],
            marker="v",
            color="tab:red",
            ms=8,
            zorder=5,
            mec="k",
            mew=0.6,
        )
        handles.append(
            Patch(
                facecolor=col,
                alpha=0.6,
                label=f"{meth}: median {med:.3g}, 95th pct {p95:.3g}"
                + (f" {shown}" if shown else ""),
            )
        )
    handles.append(Line2D([], [], color="k", lw=2, label="median"))
    handles.append(
        Line2D(
            [],
            [],
            color="tab:red",
            marker="v",
            ls="none",
            mec="k",
            mew=0.6,
            label="95th percentile",
        )
    )
    ax.set_xticks(np.arange(1, m + 1), list(shown_vals), rotation=30 if m > 4 else 0)
    ax.set_ylabel(_label(name, shown))
    ax.set_title("distribution over sources", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        fontsize=8,
        frameon=False,
    )
    if title is not None:
        fig.suptitle(title, fontsize=13)
    return _root(fig)


# ---------------------------------------------------------------------------
# λ² criteria
# ---------------------------------------------------------------------------


def plot_lambda2_curve(
    lambda2: Real[ArrayLike, " n"] | NestedSequence,
    curves: Real[ArrayLike, " n"]
    | NestedSequence
    | Mapping[str, Real[ArrayLike, " n"]],
    *,
    selected: RealScalar | Mapping[str, RealScalar] | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    ax: Any = None,
    normalize: bool = False,
    yscale: str = "linear",
    snr_axis: bool = True,
):
    """Regularisation criteria over λ², with the selected values marked.

    Parameters
    ----------
    lambda2 : array, shape (n,)
        λ² values (> 0), e.g. ``jnp.logspace(-4, 2, 200)``.
    curves : array of shape (n,), or mapping {str: array of shape (n,)}
        Criterion values over ``lambda2`` (e.g. :func:`exg_jax.gcv`,
        :func:`exg_jax.log_evidence` in nats, ``l_curve(...).curvature``),
        one curve or several by name.
    selected : float or mapping {str: float}, optional
        Chosen λ² (e.g. ``select_lambda2(...).lambda2``): one vertical line,
        or one per name (in that curve's colour when the name is a key of
        ``curves``), each with its λ² and SNR in the legend and a dot where
        it meets its curve.
    ylabel : str, optional
        y-axis label (default: the curve's name for one named curve, else
        "criterion").
    title : str, optional
        Axes title.
    ax : matplotlib Axes, optional
        Axes to draw in; default: a new figure.
    normalize : bool
        Rescale each curve to [0, 1] (min to max), to compare criteria of
        different units on one axis.
    yscale : {"linear", "log", "symlog"}
        y-axis scale.
    snr_axis : bool
        Add a top axis with the SNR = 1/√λ² of each λ².

    Returns
    -------
    fig : matplotlib.figure.Figure

    Notes
    -----
    Drawn: each curve against λ² on a log x axis labelled "λ² (= 1/SNR²)",
    the selected values as dashed vertical lines, a legend naming curves
    and selections, and (``snr_axis``) the SNR on the top axis.
    """
    plt = _pyplot()
    ax = _check_ax(ax)
    lam = _real("lambda2", lambda2, ndim=1)
    n = lam.shape[0]
    if n < 2:
        raise ValueError(f"lambda2 needs at least 2 values, got {n}.")
    if np.any(lam <= 0):
        raise ValueError("lambda2 must be > 0 (λ² = 1/SNR²).")
    if isinstance(curves, Mapping):
        if not curves:
            raise ValueError("curves is empty.")
        named = True
        cur = {}
        for k, v in curves.items():
            if not isinstance(k, str):
                raise TypeError(f"curves keys must be str, got {k!r}.")
            cur[k] = _real(f"curves[{k!r}]", v)
    else:
        named = False
        cur = {"criterion": _real("curves", curves)}
    for k, v in cur.items():
        if v.shape != (n,):
            what = f"curves[{k!r}]" if named else "curves"
            raise ValueError(
                f"{what} must have shape ({n},) like lambda2, got {v.shape}."
            )
    if selected is None:
        sel = {}
    elif isinstance(selected, Mapping):
        sel = {}
        for k, v in selected.items():
            if not isinstance(k, str):
                raise TypeError(f"selected keys must be str, got {k!r}.")
            sel[k] = _positive(f"selected[{k!r}]", v, allow_none=False)
    else:
        sel = {None: _positive("selected", selected, allow_none=False)}
    _text("ylabel", ylabel)
    _text("title", title)
    if not isinstance(normalize, bool | np.bool_):
        raise TypeError(f"normalize must be True or False, got {normalize!r}.")
    if not isinstance(snr_axis, bool | np.bool_):
        raise TypeError(f"snr_axis must be True or False, got {snr_axis!r}.")
    check_option("yscale", yscale, ("linear", "log", "symlog"))
    if normalize:
        for k, v in cur.items():
            span = np.ptp(v)
            cur[k] = (v - v.min()) / span if span > 0 else np.zeros_like(v)
    if yscale == "log" and any(np.any(v <= 0) for v in cur.values()):
        raise ValueError("yscale='log' needs curves > 0.")

    if ax is None:
        fig = plt.figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    order = np.argsort(lam)
    colors = {}
    for k, v in cur.items():
        (line,) = ax.plot(lam, v, lw=1.8, label=k if named else None)
        colors[k] = line.get_color()
    extra = iter(["k", "tab:gray", "tab:brown", "tab:pink", "tab:olive"])
    for k, s in sel.items():
        col = colors.get(k) if k is not None else None
        if col is None:
            col = next(extra, "k")
        what = "selected" if k is None else f"{k}: selected"
        ax.axvline(
            s,
            color=col,
            ls="--",
            lw=1.3,
            label=f"{what} λ² = {s:.3g} (SNR {1 / np.sqrt(s):.3g})",
            gid="selected",
        )
        curve = (
            cur.get(k)
            if k is not None
            else (next(iter(cur.values())) if len(cur) == 1 else None)
        )
        if curve is not None and lam.min() <= s <= lam.max():
            y = np.interp(np.log(s), np.log(lam[order]), curve[order])
            ax.plot([s], [y], "o", color=col, mec="k", ms=6, zorder=5)
    ax.set_xscale("log")
    ax.set_yscale(yscale)
    ax.set_xlabel(_LAMBDA2_LABEL)
    if ylabel is None:
        ylabel = next(iter(cur)) if named and len(cur) == 1 else "criterion"
        if normalize:
            ylabel += " (scaled to [0, 1])"
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if snr_axis:
        sec = ax.secondary_xaxis(
            "top",
            functions=(
                lambda x: 1 / np.sqrt(np.maximum(x, 1e-300)),
                lambda s: 1 / np.maximum(s, 1e-150) ** 2,
            ),
        )
        sec.set_xlabel("SNR (= 1/√λ²)")
        sec.set_gid("snr_axis")
    if title is not None:
        ax.set_title(title)
    if named or sel:
        ax.legend(fontsize=8)
    return _root(fig)
