"""EEG lead fields of current dipoles in a concentric multi-shell sphere.

``make_sphere_forward`` (fixed orientation) and ``make_sphere_forward_free``
(free orientation) compute the lead field of a source space inside a
``exg_jax.sphere.SphereModel`` and return a generic
``exg_jax.forward.ForwardOperator``, with MNE-Python's physics: the Berg–Scherg
equivalent-dipole approximation by default, or the exact multi-shell Legendre
series (``method="exact"``). The pure-JAX field kernels are in
``exg_jax._leadfield``.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Real

from . import _leadfield, _series
from ._typing import IntScalar, NestedSequence
from ._validate import (
    as_float_array,
    as_int,
    check_finite,
    check_option,
    check_shape,
    is_concrete,
)
from .forward import ForwardOperator
from .sphere import (
    BergSchergParams,
    SphereModel,
    _sphere_error_if,
    as_mu_lam,
    berg_scherg_params,
)

__all__ = [
    "BERG_SCHERG_CACHE_SIZE",
    "EL_SCALE_RANGE",
    "EXACT_TOL",
    "EXACT_TRACED_N_TERMS",
    "clear_berg_scherg_cache",
    "make_sphere_forward",
    "make_sphere_forward_free",
]

_METHODS = ("berg_scherg", "exact")
_REFERENCES = ("average", None)
#: Default number of series terms for ``method="exact"`` when the geometry is
#: traced (inside ``jit`` / ``vmap`` / ``grad``) and ``n_terms`` is not given.
EXACT_TRACED_N_TERMS = 1000
#: Relative truncation tolerance of the exact series (see ``_leadfield.exact_n_terms``).
EXACT_TOL = 1e-12
# Electrodes may sit on the innermost shell (a single-shell model) up to rounding.
_EL_TOL = 1e-6
#: Units check: the median electrode distance from the sphere centre over the
#: outer radius must lie in this range (electrodes in mm beside a sphere in m
#: give ~1000).
EL_SCALE_RANGE = (0.5, 2.0)


_TRACED_GEOMETRY_MSGS = (
    "make_sphere_forward: src_pos: a source lies at or outside the innermost shell.",
    "make_sphere_forward: electrodes: an electrode lies inside the innermost shell.",
    "make_sphere_forward: electrodes: the median electrode distance from the sphere "
    f"centre is outside [{EL_SCALE_RANGE[0]}, {EL_SCALE_RANGE[1]}] x the outer radius: "
    "electrodes and sphere must both be in metres (electrodes in mm? divide by 1000).",
    "make_sphere_forward: src_pos / electrodes contain NaN or Inf.",
    "make_sphere_forward: berg_scherg (mu, lam) must be finite with |mu| <= 1.",
)


def _inside_check(src_pos, electrodes, center, radii, mu=None, lam=None):
    """Kernel-side (traceable) geometry checks: one ``eqx.branched_error_if``.

    Under ``vmap`` equinox shows the message of the largest index in the
    batch, so valid elements get index -1 (never shown).
    """
    inner, outer = radii[0], radii[-1]
    d_src = jnp.sqrt(jnp.sum((src_pos - center) ** 2, axis=-1))
    d_el = jnp.sqrt(jnp.sum((electrodes - center) ** 2, axis=-1))
    ratio = jnp.median(d_el) / outer
    conds = [
        jnp.any(d_src >= inner),
        jnp.any(d_el < inner * (1.0 - _EL_TOL)),
        ~((ratio >= EL_SCALE_RANGE[0]) & (ratio <= EL_SCALE_RANGE[1])),
        ~(jnp.all(jnp.isfinite(d_src)) & jnp.all(jnp.isfinite(d_el))),
    ]
    if mu is not None:
        conds.append(
            ~(
                jnp.all(jnp.isfinite(mu))
                & jnp.all(jnp.isfinite(lam))
                & jnp.all(jnp.abs(mu) <= 1.0)
            )
        )
    index = jnp.asarray(-1)
    for k, c in enumerate(conds):
        index = jnp.maximum(index, jnp.where(c, k, -1))
    pred = jnp.any(jnp.stack(conds))
    return eqx.branched_error_if(
        (src_pos, electrodes), pred, index, _TRACED_GEOMETRY_MSGS
    )


def _field_to_gain(v, src_nn, fixed: bool, reference):
    """Field ``v`` (E, S, 3) -> gain (E, S) (fixed) or (E, 3 S) (free), V/(A·m).

    Contracts with ``src_nn`` (S, 3) for a fixed orientation, multiplies by
    1/(4 pi) and applies the average reference when asked.
    """
    if fixed:
        gain = jnp.sum(v * src_nn[None], axis=-1)
    else:
        gain = v.reshape(v.shape[0], -1)
    gain = gain * (0.25 / math.pi)
    if reference == "average":
        gain = _leadfield.average_reference(gain)
    return gain


@eqx.filter_jit
def _berg_scherg_gain(
    electrodes,
    src_pos,
    src_nn,
    center,
    radii,
    mu,
    lam,
    fixed,
    reference,
    check=True,
):
    """Berg–Scherg gain, (E, S) or (E, 3 S) in V/(A·m); ``mu``, ``lam`` of shape (F,).

    ``check=False`` only when the eager layer already validated concrete inputs.
    """
    if check:
        src_pos, electrodes = _inside_check(src_pos, electrodes, center, radii, mu, lam)
    # Rematerialised in the backward pass: recomputing the (E, F, S) closed form
    # is cheaper than XLA's fused reverse pass over its stored intermediates
    # (value+grad of the evidence through a refit: 35 ms -> 17 ms, bench/fit.py).
    v = jax.checkpoint(_leadfield.berg_scherg_field)(
        electrodes - center, src_pos - center, mu, lam
    )
    return _field_to_gain(v, src_nn, fixed, reference)


@eqx.filter_jit
def _exact_gain(
    electrodes, src_pos, src_nn, sphere, n_terms, fixed, reference, check=True
):
    """Exact-series gain with ``n_terms`` (static) terms, (E, S) or (E, 3 S) in V/(A·m)."""
    center, radii = sphere.center, sphere.radii
    if check:
        src_pos, electrodes = _inside_check(src_pos, electrodes, center, radii)
    # The sphere's own value checks ran eagerly, or (traced model) in _sphere_forward.
    fn = _series.series_coefficients(radii, sphere.conductivities, n_terms)
    fn = fn / sphere.conductivities[-1]
    v = _leadfield.series_field(electrodes - center, src_pos - center, fn)
    return _field_to_gain(v, src_nn, fixed, reference)


def _validate_geometry(electrodes, src_pos, src_nn, sphere, need_nn: bool, reference):
    """Eager checks (shapes, finiteness, unit normals, units, inside the shells).

    Value checks run only on concrete inputs; traced ones are checked in the
    kernels by ``_inside_check``.
    """
    if not isinstance(sphere, SphereModel):
        raise ValueError(
            f"sphere must be an exg_jax.sphere.SphereModel, got {type(sphere).__name__}."
        )
    if sphere.radii.ndim != 1:
        raise ValueError(
            f"sphere must describe one model (radii of shape (n_shells,)), got radii of shape "
            f"{sphere.radii.shape}; use jax.vmap over a batch of models."
        )
    check_shape("electrodes", electrodes, (None, 3))
    check_shape("src_pos", src_pos, (None, 3))
    if electrodes.shape[0] < 1:
        raise ValueError("electrodes must contain at least one electrode.")
    if src_pos.shape[0] < 1:
        raise ValueError("src_pos must contain at least one source.")
    if reference == "average" and electrodes.shape[0] < 2:
        raise ValueError(
            f"electrodes: the average reference needs at least 2 electrodes, got "
            f"{electrodes.shape[0]} (one average-referenced electrode has an all-zero "
            "gain); use reference=None for potentials against infinity."
        )
    check_finite("electrodes", electrodes)
    check_finite("src_pos", src_pos)
    if src_nn is None:
        if need_nn:
            raise ValueError("src_nn is required for a fixed-orientation forward.")
    else:
        check_shape("src_nn", src_nn, (src_pos.shape[0], 3))
        check_finite("src_nn", src_nn)
        if is_concrete(src_nn):
            norms = np.linalg.norm(np.asarray(src_nn, dtype=float), axis=1)
            bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
            if bad.size:
                raise ValueError(
                    f"src_nn must hold unit vectors; {bad.size} row(s) are not, at indices "
                    f"{bad[:20].tolist()}{' ...' if bad.size > 20 else ''} (norms "
                    f"{norms[bad[:5]].tolist()})."
                )
    if is_concrete(src_pos, electrodes, sphere.center, sphere.radii):
        c = np.asarray(sphere.center, dtype=float)
        r_in = float(np.asarray(sphere.radii)[0])
        r_out = float(np.asarray(sphere.radii)[-1])
        d_el = np.linalg.norm(np.asarray(electrodes, dtype=float) - c, axis=1)
        ratio = float(np.median(d_el)) / r_out
        lo, hi = EL_SCALE_RANGE
        if not lo <= ratio <= hi:
            raise ValueError(
                f"electrodes lie at a median distance of {np.median(d_el):.4g} from the "
                f"sphere centre, {ratio:.3g} x the outer radius {r_out} m; the rule is "
                f"{lo} <= median |electrodes - center| / r_outer <= {hi}. Electrodes and "
                "sphere must both be in metres (electrodes in mm? divide by 1000; in cm? "
                "by 100)."
            )
        d_src = np.linalg.norm(np.asarray(src_pos, dtype=float) - c, axis=1)
        bad = np.flatnonzero(d_src >= r_in)
        if bad.size:
            raise ValueError(
                f"src_pos: {bad.size} source(s) lie at or outside the innermost shell (radius {r_in} m "
                f"around {c.tolist()}): indices {bad[:50].tolist()}"
                f"{' ...' if bad.size > 50 else ''} (distances {d_src[bad[:5]].tolist()} m). "
                "MNE-Python would silently give them zero columns."
            )
        bad = np.flatnonzero(d_el < r_in * (1.0 - _EL_TOL))
        if bad.size:
            raise ValueError(
                f"electrodes: {bad.size} electrode(s) lie inside the innermost shell (radius {r_in} m): "
                f"indices {bad[:50].tolist()} (distances {d_el[bad[:5]].tolist()} m)."
            )


def _resolve_berg_scherg(sphere, berg_scherg, dtype):
    """``(mu, lam)`` of dtype ``dtype``: fitted (memoised when concrete) or checked."""
    if berg_scherg is None:
        if is_concrete(sphere.radii, sphere.conductivities):
            mu, lam = _berg_scherg_fit_cached(
                str(jnp.dtype(dtype)),
                tuple(np.asarray(sphere.radii).tolist()),
                tuple(np.asarray(sphere.conductivities).tolist()),
            )
        else:
            fit = berg_scherg_params(sphere)
            mu, lam = fit.mu, fit.lam
    else:
        # Only .mu and .lam: the other fields (residual, ...) do not enter the gain.
        mu, lam = as_mu_lam("berg_scherg", berg_scherg)
    return mu.astype(dtype), lam.astype(dtype)


#: Number of models whose default Berg–Scherg fit is memoised (see
#: ``_berg_scherg_fit_cached``).
BERG_SCHERG_CACHE_SIZE = 64


@functools.lru_cache(maxsize=BERG_SCHERG_CACHE_SIZE)
def _berg_scherg_fit_cached(dtype: str, radii: tuple, sigmas: tuple):
    """Memoised default Berg–Scherg fit of a concrete model: ``(mu, lam)``.

    What: ``berg_scherg_params`` of the model with these radii (m) and
    conductivities (S/m), in ``dtype``; keyed on ``(dtype, radii, sigmas)``
    as Python floats (the fit does not depend on the centre). Returns two
    JAX device arrays of shape ``(n_fit,)`` = ``(3,)``.

    Why: an eager ``make_sphere_forward(_free)`` without ``berg_scherg`` would
    otherwise rerun the fit on every call, as MNE-Python caches its fit in the
    sphere model. Measured (3-shell default, 21 electrodes x 162 fixed sources,
    float64, 2 CPU cores, medians of 20 calls): 1.6 ms a call with the
    memoised fit, 9.6 ms when it is refitted (the fit alone 6.6 ms).

    Size: at most ``BERG_SCHERG_CACHE_SIZE`` = 64 models (least recently used
    evicted); each entry holds two small device arrays (a few dozen bytes,
    on the default device: GPU memory on a GPU). Failed fits raise and are not
    cached. Traced models (``jit`` / ``vmap`` / ``grad``) never use it.
    Clear it with ``clear_berg_scherg_cache()``.
    """
    sph = SphereModel(
        jnp.asarray(radii, dtype), jnp.asarray(sigmas, dtype), jnp.zeros(3, dtype)
    )
    fit = berg_scherg_params(sph)
    return fit.mu, fit.lam


def clear_berg_scherg_cache() -> None:
    """Drop the memoised default Berg–Scherg fits (and the device arrays they hold).

    ``make_sphere_forward`` and ``make_sphere_forward_free`` memoise the fit
    of up to ``BERG_SCHERG_CACHE_SIZE`` concrete models; clearing is never
    needed for correctness (the fit is a pure function of the model), only to
    release memory or to time a cold call.
    """
    _berg_scherg_fit_cached.cache_clear()


def _exact_terms(electrodes, src_pos, sphere, n_terms):
    """Number of series terms (static): given, from the geometry, or the traced default."""
    if n_terms is not None:
        return as_int("n_terms", n_terms, minimum=1)
    if is_concrete(electrodes, src_pos, sphere.center):
        c = np.asarray(sphere.center, dtype=float)
        d_src = np.linalg.norm(np.asarray(src_pos, dtype=float) - c, axis=1)
        d_el = np.linalg.norm(np.asarray(electrodes, dtype=float) - c, axis=1)
        n = _leadfield.exact_n_terms(float(d_src.max() / d_el.min()), EXACT_TOL)
        # Round up to a multiple of 64: fewer distinct (static) sizes to compile.
        return -(-n // 64) * 64
    return EXACT_TRACED_N_TERMS


def _sphere_forward(
    electrodes, src_pos, src_nn, sphere, reference, method, berg_scherg, n_terms, fixed
):
    """Shared body of ``make_sphere_forward`` (``fixed=True``) and ``_free``."""
    check_option("reference", reference, _REFERENCES)
    check_option("method", method, _METHODS)
    electrodes = as_float_array("electrodes", electrodes)
    src_pos = as_float_array("src_pos", src_pos)
    if src_nn is not None:
        src_nn = as_float_array("src_nn", src_nn)
    _validate_geometry(electrodes, src_pos, src_nn, sphere, fixed, reference)
    leaves = [electrodes, src_pos, sphere.radii, sphere.conductivities, sphere.center]
    if src_nn is not None:
        leaves.append(src_nn)
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(dtype, jnp.float32)
    electrodes = electrodes.astype(dtype)
    src_pos = src_pos.astype(dtype)
    src_nn = None if src_nn is None else src_nn.astype(dtype)
    sph = jax.tree_util.tree_map(lambda a: jnp.asarray(a).astype(dtype), sphere)
    if not is_concrete(sph):
        # A traced model skipped SphereModel's eager value checks: run them here.
        radii, sigmas, center = _sphere_error_if(
            sph.radii, sph.conductivities, sph.center
        )
        sph = eqx.tree_at(
            lambda m: (m.radii, m.conductivities, m.center),
            sph,
            (radii, sigmas, center),
        )
    if method == "berg_scherg":
        if n_terms is not None:
            raise ValueError("n_terms applies to method='exact' only.")
        mu, lam = _resolve_berg_scherg(sph, berg_scherg, dtype)
        # The kernel re-checks the geometry (eqx.error_if) only when traced here.
        check = not is_concrete(src_pos, electrodes, sph.center, sph.radii, mu, lam)
        gain = _berg_scherg_gain(
            electrodes,
            src_pos,
            src_nn,
            sph.center,
            sph.radii,
            mu,
            lam,
            fixed,
            reference,
            check,
        )
    else:
        if berg_scherg is not None:
            raise ValueError(
                "berg_scherg parameters apply to method='berg_scherg' only."
            )
        n = _exact_terms(electrodes, src_pos, sph, n_terms)
        check = not is_concrete(src_pos, electrodes, sph.center, sph.radii)
        gain = _exact_gain(electrodes, src_pos, src_nn, sph, n, fixed, reference, check)
    return ForwardOperator(
        gain=gain,
        src_pos=src_pos,
        src_nn=src_nn,
        orientation="fixed" if fixed else "free",
        reference=reference,
        ch_pos=electrodes,
    )


_FitVector = Real[ArrayLike, " fit"] | NestedSequence
#: The ``berg_scherg`` argument: fitted parameters, or a pair ``(mu, lam)``.
BergSchergArg = BergSchergParams | tuple[_FitVector, _FitVector] | list[_FitVector]


def make_sphere_forward(
    electrodes: Real[ArrayLike, "elec 3"] | NestedSequence,
    src_pos: Real[ArrayLike, "src 3"] | NestedSequence,
    src_nn: Real[ArrayLike, "src 3"] | NestedSequence,
    sphere: SphereModel,
    *,
    reference: str | None = "average",
    method: str = "berg_scherg",
    berg_scherg: BergSchergArg | None = None,
    n_terms: IntScalar | None = None,
) -> ForwardOperator:
    """EEG lead field of fixed-orientation dipoles in a multi-shell sphere.

    Parameters
    ----------
    electrodes : Array, shape (n_elec, 3), m
        Electrode positions (head frame), used as given (see Notes). In metres,
        like the sphere: the median distance from ``sphere.center`` must lie
        within ``EL_SCALE_RANGE`` = [0.5, 2] times the outer radius.
        ``n_elec >= 2`` with ``reference="average"``, else ``>= 1``.
    src_pos : Array, shape (n_src, 3), m
        Dipole positions, strictly inside the innermost shell; ``n_src >= 1``.
    src_nn : Array, shape (n_src, 3)
        Unit dipole orientations.
    sphere : SphereModel
        The head model (radii, conductivities, centre).
    reference : {"average", None}
        ``"average"`` subtracts the electrode mean from every column; ``None``
        gives potentials against infinity.
    method : {"berg_scherg", "exact"}
        ``"berg_scherg"``: MNE-Python's equivalent-dipole approximation (default);
        ``"exact"``: the full multi-shell Legendre series.
    berg_scherg : BergSchergParams or tuple of Array, shape (n_fit,) each, optional
        Explicit Berg–Scherg parameters: the ``BergSchergParams`` returned by
        ``exg_jax.sphere.berg_scherg_params`` (only its ``mu`` and ``lam`` are
        used), or a pair ``(mu, lam)`` in MNE-Python's convention
        (``sphere["mu"]``, ``sphere["lambda"]``: ``lam`` in 1/(S/m), already
        divided by the scalp conductivity). Default: the fit of ``sphere``,
        memoised for concrete models (see ``clear_berg_scherg_cache``).
        Passing them avoids refitting under ``jit`` / in a loop over traced
        models (then the gain does not depend on the sphere's radii and
        conductivities, except through the checks).
    n_terms : int, optional
        Number of series terms for ``method="exact"`` (static). Default: the
        smallest number whose tail bound is below ``EXACT_TOL`` = 1e-12 relative
        (see Notes), rounded up to a multiple of 64, or ``EXACT_TRACED_N_TERMS`` = 1000 when the geometry is traced.

    Returns
    -------
    ForwardOperator
        ``orientation="fixed"``, gain of shape ``(n_elec, n_src)`` in V/(A·m).

    Raises
    ------
    TypeError
        An argument that is not a real numeric array (a string, None, bool or
        complex), or of dtype float16 / bfloat16 (use float32 or float64).
        Integer arrays are cast to JAX's default float dtype.
    ValueError
        Bad shapes, no electrode or no source, one electrode with
        ``reference="average"`` (its gain would be all zero), NaN/Inf,
        non-unit normals, unknown options, a source at or outside the
        innermost shell (the message lists the indices; MNE-Python silently
        gives such sources zero columns), an electrode inside it (electrodes
        on it, as for a single shell, are fine), electrodes in another unit
        than the sphere (median ``|electrodes - center| / r_outer`` outside
        [0.5, 2]: millimetres give ~1000).
    RuntimeError
        The default Berg–Scherg fit failed (see ``berg_scherg_params``'s
        ``throw``); use ``method="exact"`` or pass ``berg_scherg``.

    Under ``jit`` / ``vmap`` / ``grad`` (traced positions or model) the value
    checks (geometry, units, NaN, the model's radii and conductivities, an
    explicit ``berg_scherg``, the Berg–Scherg fit) are ``eqx.error_if`` in the
    compiled kernel: ``eqx.EquinoxRuntimeError`` when the program runs (inside
    a plain ``jax.jit`` it arrives wrapped in a ``jax.errors.JaxRuntimeError``).
    Measured cost of these checks (float64, 21 electrodes x 42 sources,
    jitted, 2 shared CPU cores, medians of 4 runs): XLA compile 0.96 -> 1.64 s
    and 180 -> 225 µs per call (geometry traced, ``berg_scherg`` given);
    0.90 -> 1.57 s and 790 -> 915 µs (model traced, ``method="exact"``,
    100 terms); within noise next to a traced Berg–Scherg fit (~9 ms a call).

    Notes
    -----
    Equivalent to ``mne.make_forward_solution(info, None, src, sphere,
    eeg=True, meg=False)`` with a discrete source space and a sphere model from
    ``mne.make_sphere_model``, followed by the average reference and
    ``mne.convert_forward_solution(..., force_fixed=True)`` along ``src_nn``.

    Positions are taken relative to ``sphere.center``. With ``b = |x| / R`` (``x``
    the dipole position, ``R`` the electrode's distance from the centre) and
    ``c`` the cosine of the angle between them, the multi-shell potential of a
    dipole ``q`` is::

        V = q . grad_x sum_{n>=1} f_n / (4 pi sigma_N R) (2n+1)/n b**n P_n(c)

    with ``f_n`` the exact series coefficients of the shells
    (``exg_jax.sphere.sphere_series_coefficients``, from the relative radii and
    conductivities; ``f_n = 1`` for a homogeneous sphere) and ``sigma_N`` the
    scalp conductivity. Berg–Scherg replaces ``f_n / sigma_N`` by
    ``sum_j lam_j mu_j**(n-1)``: dipoles at ``mu_j x`` with weights ``lam_j`` in a
    homogeneous sphere, each summed in closed form (Zhang 1995; for ``b < 1e-4``
    the first three series terms are used, which avoids cancellation and keeps
    the centre point finite). The exact series is summed with ``n_terms`` terms
    (Legendre recurrence); the default makes the tail bound
    ``(2N+3)(N+2) b**N / (6 (1-b))`` (relative to the first term) below 1e-12
    for the largest ``b`` of the problem.

    Berg–Scherg accuracy, measured against the exact series
    (``bench/forward_accuracy.py``: 642 electrodes on the scalp, average
    reference, relative L2 error of the scalp potential, worst of radial and
    tangential dipoles): 3-shell default 0.02 % at ``|x| = 0.1 r_inner``, 0.11 %
    at 0.5, 0.19 % at 0.9, 0.20 % at 0.99; MNE-Python's 4-shell default
    0.009 %, 0.06 %, 0.26 %, 0.69 % at the same fractions.

    The kernels are pure JAX: ``jit``-, ``vmap``- (e.g. over a batch of
    ``SphereModel``) and ``grad``-compatible (w.r.t. electrodes, sources,
    radii, conductivities and centre; for Berg–Scherg the radii and
    conductivities act through ``berg_scherg_params``' implicit gradient).
    The result follows the inputs' dtype.
    """
    if src_nn is None:
        raise ValueError("src_nn is required for a fixed-orientation forward.")
    return _sphere_forward(
        electrodes,
        src_pos,
        src_nn,
        sphere,
        reference,
        method,
        berg_scherg,
        n_terms,
        fixed=True,
    )


def make_sphere_forward_free(
    electrodes: Real[ArrayLike, "elec 3"] | NestedSequence,
    src_pos: Real[ArrayLike, "src 3"] | NestedSequence,
    sphere: SphereModel,
    *,
    src_nn: Real[ArrayLike, "src 3"] | NestedSequence | None = None,
    reference: str | None = "average",
    method: str = "berg_scherg",
    berg_scherg: BergSchergArg | None = None,
    n_terms: IntScalar | None = None,
) -> ForwardOperator:
    """EEG lead field of free-orientation dipoles in a multi-shell sphere.

    Parameters
    ----------
    electrodes : Array, shape (n_elec, 3), m
        Electrode positions (head frame), used as given, as MNE-Python does (not
        projected onto the scalp sphere; see ``make_sphere_forward``).
    src_pos : Array, shape (n_src, 3), m
        Dipole positions, strictly inside the innermost shell.
    sphere : SphereModel
        The head model.
    src_nn : Array, shape (n_src, 3), optional
        Unit source normals, kept in the result for surface-oriented (loose /
        fixed / ``pick_ori="normal"``) inverses; they do not change the gain.
    reference, method, berg_scherg, n_terms
        As in ``make_sphere_forward``.

    Returns
    -------
    ForwardOperator
        ``orientation="free"``, gain of shape ``(n_elec, 3 * n_src)`` in V/(A·m),
        columns ordered (s0x, s0y, s0z, s1x, ...) as in MNE-Python.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As ``make_sphere_forward`` (traced: ``eqx.error_if``).

    Notes
    -----
    Equivalent to ``mne.make_forward_solution(info, None, src, sphere,
    eeg=True, meg=False)`` (free orientation, discrete source space, sphere
    model from ``mne.make_sphere_model``) followed by the average reference.
    Physics and numerics: see ``make_sphere_forward``.
    """
    return _sphere_forward(
        electrodes,
        src_pos,
        src_nn,
        sphere,
        reference,
        method,
        berg_scherg,
        n_terms,
        fixed=False,
    )
