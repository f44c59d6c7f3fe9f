"""Private numerics of the spectral reductions: DPSS tapers, multitaper and Welch PSDs.

Two layers:

* **Construction (NumPy, eager).** :func:`dpss_windows` (the discrete prolate
  spheroidal sequences, without SciPy), :func:`mt_params` (MNE-Python's
  ``_compute_mt_params``), :func:`get_window` (periodic Hann / Hamming /
  boxcar), :func:`welch_params` (MNE-Python's ``_check_nfft``) and the
  frequency grids.
* **Device (JAX, jittable).** :func:`multitaper_psd`, :func:`adaptive_psd`
  and :func:`welch_psd` map series ``(..., n_times)`` to one-sided spectra
  ``(..., n_freqs)``. They take *unit-scale* input: the callers divide each
  series by its ``max |x|`` (a constant for differentiation, see
  :func:`exg_jax._numerics.scale_of`) and multiply the power back by that
  scale squared, so that nothing is squared unscaled.

No SciPy and no MNE-Python here: both are test-only oracles.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._numerics import safe_div

__all__ = [
    "adaptive_psd",
    "dpss_windows",
    "frequency_slice",
    "get_window",
    "mt_params",
    "multitaper_psd",
    "welch_params",
    "welch_psd",
]

_EPS = np.finfo(np.float64).eps
_TINY = np.finfo(np.float64).tiny


# --------------------------------------------------------------------------- #
# DPSS (NumPy): the symmetric tridiagonal eigenproblem, O(n) memory
# --------------------------------------------------------------------------- #
def _guard(q: np.ndarray, pivmin: float) -> np.ndarray:
    """A pivot smaller than ``pivmin`` in magnitude becomes ``-pivmin`` (LAPACK)."""
    return np.where(np.abs(q) < pivmin, -pivmin, q)


def _sturm_count(d, e2, x, pivmin):
    """Number of eigenvalues of the tridiagonal ``(d, e)`` below each ``x``."""
    q = _guard(d[0] - x, pivmin)
    count = (q < 0).astype(np.int64)
    for i in range(1, d.size):
        q = _guard(d[i] - x - e2[i - 1] / q, pivmin)
        count += q < 0
    return count


def _top_eigvals(d, e, k, pivmin, n_points=31):
    """The ``k`` largest eigenvalues (ascending) by multisection on Sturm counts.

    Every step evaluates ``n_points`` points inside each eigenvalue's bracket
    (vectorised), shrinking it by ``n_points + 1``; it stops at the rounding
    level, ``2 ε max(|lo|, |hi|) + pivmin``.
    """
    n = d.size
    r = np.zeros(n)
    r[:-1] += np.abs(e)
    r[1:] += np.abs(e)
    lo0, hi0 = np.min(d - r), np.max(d + r)  # Gershgorin
    pad = 2 * _EPS * max(abs(lo0), abs(hi0)) + pivmin
    lo = np.full(k, lo0 - pad)
    hi = np.full(k, hi0 + pad)
    target = np.arange(n - k, n)  # ascending indices of the wanted eigenvalues
    t = np.arange(1, n_points + 1) / (n_points + 1)
    rows = np.arange(k)
    for _ in range(64):
        width = hi - lo
        if np.all(width <= 2 * _EPS * np.maximum(np.abs(lo), np.abs(hi)) + pivmin):
            break
        xs = lo[:, None] + width[:, None] * t
        # eigenvalue ``target`` lies above every x with count(x) <= target
        n_below = np.sum(_sturm_count(d, e * e, xs, pivmin) <= target[:, None], 1)
        lo = np.where(n_below > 0, xs[rows, np.maximum(n_below - 1, 0)], lo)
        hi = np.where(
            n_below < n_points, xs[rows, np.minimum(n_below, n_points - 1)], hi
        )
    return 0.5 * (lo + hi)


def _eigvecs_twisted(d, e, lam, pivmin):
    """Unit eigenvectors ``(k, n)`` of the tridiagonal for accurate eigenvalues ``lam``.

    The twisted factorisation (Dhillon & Parlett): top-down and bottom-up
    LDLᵀ pivots of ``T - λI``, twisted at the index ``r`` where
    ``|γ_r| = |D⁺_r + D⁻_r - (d_r - λ)|`` is smallest; then ``z_r = 1`` and
    ``z_i = -e_i z_{i+1} / D⁺_i`` (i < r), ``z_i = -e_{i-1} z_{i-1} / D⁻_i``
    (i > r), which solves ``(T - λI) z = γ_r e_r`` exactly.
    """
    n = d.size
    a = d[None, :] - lam[:, None]
    e2 = e * e
    dp = np.empty_like(a)
    dm = np.empty_like(a)
    dp[:, 0] = _guard(a[:, 0], pivmin)
    for i in range(1, n):
        dp[:, i] = _guard(a[:, i] - e2[i - 1] / dp[:, i - 1], pivmin)
    dm[:, n - 1] = _guard(a[:, n - 1], pivmin)
    for i in range(n - 2, -1, -1):
        dm[:, i] = _guard(a[:, i] - e2[i] / dm[:, i + 1], pivmin)
    twist = np.argmin(np.abs(dp + dm - a), axis=1)
    z = np.zeros_like(a)
    for j, r in enumerate(twist):
        z[j, r] = 1.0
        if r > 0:
            z[j, :r] = np.cumprod((-e[:r] / dp[j, :r])[::-1])[::-1]
        if r < n - 1:
            z[j, r + 1 :] = np.cumprod(-e[r:] / dm[j, r + 1 :])
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def dpss_windows(
    n_times: int,
    half_nbw: float,
    n_tapers: int,
    low_bias: bool = True,
    *,
    sym: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Discrete prolate spheroidal sequences, as MNE-Python's ``dpss_windows``.

    Parameters
    ----------
    n_times : int
        Length of the sequences.
    half_nbw : float
        Standardised half bandwidth ``NW`` (``bandwidth · n_times / (2 sfreq)``).
    n_tapers : int
        Number of sequences computed (orders 0 … n_tapers - 1) before the
        ``low_bias`` selection.
    low_bias : bool
        Keep only the tapers whose concentration ratio is > 0.9 (all of them
        below: the most concentrated one, with a warning, as MNE does).
    sym : bool
        True: symmetric windows (MNE's default); False: periodic (DFT-even)
        windows, i.e. ``n_times + 1`` points with the last dropped, as
        MNE-Python's multitaper PSD uses.

    Returns
    -------
    tapers : ndarray, shape (n_kept, n_times)
        Unit L2 norm over the ``n_times`` (sym) or ``n_times + 1`` (periodic)
        points; even orders have a positive sum, odd orders start with a
        positive lobe (Percival & Walden's convention, as SciPy).
    ratios : ndarray, shape (n_kept,)
        Spectral concentration ratios λ_k in [0, 1].

    Notes
    -----
    Equivalent to ``mne.time_frequency.multitaper.dpss_windows(n_times,
    half_nbw, n_tapers, sym=sym, low_bias=low_bias)`` (itself
    ``scipy.signal.windows.dpss(..., norm=2, return_ratios=True)``),
    computed without SciPy: the tapers are the eigenvectors of the top
    ``n_tapers`` eigenvalues of the tridiagonal matrix of Percival & Walden
    (1993), ``d_t = ((N - 1 - 2t) / 2)² cos(2πW)``, ``e_t = t (N - t) / 2``,
    ``W = NW / N`` (bisection on Sturm counts, then the twisted
    factorisation: O(n · n_tapers) memory and no dense eigensolver); the
    ratios come from the tapers' autocorrelation ``r_xx`` as
    ``λ_k = Σ_m r_xx[m] · c_m`` with ``c_0 = 2W``, ``c_m = 4W sinc(2Wm)``.
    Agrees with SciPy's LAPACK ``stebz`` / ``stein`` tapers to ~5e-13 for
    n <= 1500 and ~1e-11 at n = 10⁴ (the eigenvector conditioning,
    ε‖T‖ / gap); Python loops over n: about 0.3 s per 1000 samples.
    """
    m = int(n_times)
    n_tapers = int(n_tapers)
    if m <= 1:  # MNE's special case
        tapers, ratios = np.ones((1, 1)), np.ones(1)
    else:
        if not 0 < n_tapers <= m:
            raise ValueError(f"n_tapers must be in [1, n_times={m}], got {n_tapers}.")
        if not 0 < half_nbw < m / 2:
            raise ValueError(
                f"half_nbw must be in (0, n_times / 2 = {m / 2}), got {half_nbw}."
            )
        n = m if sym else m + 1
        w_half = float(half_nbw) / n
        t = np.arange(n, dtype=np.float64)
        d = ((n - 1 - 2 * t) / 2.0) ** 2 * np.cos(2 * np.pi * w_half)
        e = t[1:] * (n - t[1:]) / 2.0
        pivmin = _TINY * max(1.0, float(np.max(e * e)))
        lam = _top_eigvals(d, e, n_tapers, pivmin)[::-1]
        tapers = _eigvecs_twisted(d, e, lam, pivmin)
        # sign convention (Percival & Walden p. 379, as SciPy)
        for i in range(0, n_tapers, 2):
            if tapers[i].sum() < 0:
                tapers[i] *= -1
        thresh = max(1e-7, 1.0 / n)
        for i in range(1, n_tapers, 2):
            above = tapers[i][tapers[i] ** 2 > thresh]
            if above.size and above[0] < 0:
                tapers[i] *= -1
        # concentration ratios from the autocorrelation (Percival & Walden p. 390)
        n_fft = 1 << (2 * n - 2).bit_length()
        spec = np.fft.rfft(tapers, n_fft, axis=-1)
        rxx = np.fft.irfft(spec * spec.conj(), n=n_fft, axis=-1)[:, :n]
        c = 4 * w_half * np.sinc(2 * w_half * t)
        c[0] = 2 * w_half
        ratios = rxx @ c
        if not sym:
            tapers = tapers[:, :-1]
    if low_bias:
        keep = ratios > 0.9
        if not keep.any():
            warnings.warn(
                "Could not properly use low_bias, keeping lowest-bias taper",
                RuntimeWarning,
                stacklevel=2,
            )
            keep = np.zeros(ratios.shape, bool)
            keep[np.argmax(ratios)] = True
        tapers, ratios = tapers[keep], ratios[keep]
    return np.ascontiguousarray(tapers), np.ascontiguousarray(ratios)


def get_window(name: str, n: int) -> np.ndarray:
    """Periodic (DFT-even) window, as ``scipy.signal.get_window(name, n)``."""
    k = np.arange(n, dtype=np.float64)
    if name == "hann":
        return 0.5 - 0.5 * np.cos(2 * np.pi * k / n)
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(2 * np.pi * k / n)
    if name == "boxcar":
        return np.ones(n)
    raise ValueError(
        f"Invalid window {name!r}: use 'hann', 'hamming', 'boxcar' or an array."
    )


def mt_params(
    n_times: int, sfreq: float, bandwidth, low_bias: bool, adaptive: bool
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Tapers, eigenvalues and the adaptive flag, as MNE's ``_compute_mt_params``.

    ``bandwidth`` (Hz) gives ``NW = bandwidth · n_times / (2 sfreq)`` and
    ``int(2 NW)`` DPSS before the ``low_bias`` selection; None: ``NW = 4``;
    a window name (str): that single periodic window, eigenvalue 1.
    """
    if isinstance(bandwidth, str):
        return get_window(bandwidth, n_times)[None], np.ones(1), False
    half_nbw = 4.0 if bandwidth is None else float(bandwidth) * n_times / (2.0 * sfreq)
    if half_nbw < 0.5:
        raise ValueError(
            f"bandwidth={bandwidth} Hz yields a normalized half-bandwidth of "
            f"{half_nbw} < 0.5 (not even one taper), use a value of at least "
            f"{sfreq / n_times} Hz (sfreq / n_times)."
        )
    if half_nbw >= n_times / 2:
        raise ValueError(
            f"bandwidth={bandwidth} Hz yields a normalized half-bandwidth of "
            f"{half_nbw} >= n_times / 2 = {n_times / 2}; use a value below "
            f"{sfreq} Hz (sfreq)."
        )
    tapers, eigvals = dpss_windows(
        n_times, half_nbw, int(2 * half_nbw), sym=False, low_bias=low_bias
    )
    if adaptive and len(eigvals) < 3:
        warnings.warn(
            "Not adaptively combining the spectral estimators due to a low number "
            f"of tapers ({len(eigvals)} < 3).",
            RuntimeWarning,
            stacklevel=3,
        )
        adaptive = False
    return tapers, eigvals, adaptive


def welch_params(
    n_times: int, n_fft: int, n_per_seg: int | None, n_overlap: int
) -> tuple[int, int, int]:
    """``(n_fft, n_per_seg, n_overlap)`` checked as MNE's ``_check_nfft``."""
    if n_per_seg is None and n_fft > n_times:
        raise ValueError(
            f"n_fft={n_fft} must not exceed n_times={n_times} when n_per_seg is None "
            "(for zero-padding set n_per_seg to the segment length)."
        )
    n_per_seg = n_fft if n_per_seg is None or n_per_seg > n_fft else n_per_seg
    n_per_seg = min(n_per_seg, n_times)
    if n_overlap >= n_per_seg:
        raise ValueError(
            f"n_overlap={n_overlap} must be smaller than n_per_seg (or n_fft) "
            f"= {n_per_seg}."
        )
    return n_fft, n_per_seg, n_overlap


def frequency_slice(freqs: np.ndarray, fmin: float, fmax: float) -> tuple[int, int]:
    """``[start, stop)`` of the bins with ``fmin <= f <= fmax`` (``freqs`` ascending)."""
    idx = np.flatnonzero((freqs >= fmin) & (freqs <= fmax))
    if idx.size == 0:
        raise ValueError(
            f"No frequency bin between fmin={fmin} and fmax={fmax} Hz (bins: "
            f"{freqs[0]:g} to {freqs[-1]:g} Hz in steps of "
            f"{freqs[1] - freqs[0] if freqs.size > 1 else 0:g} Hz)."
        )
    return int(idx[0]), int(idx[-1]) + 1


def _one_sided(n_fft: int, start: int, stop: int) -> np.ndarray:
    """One-sided factor per bin: 1 at DC and (even ``n_fft``) Nyquist, 2 elsewhere."""
    k = np.arange(start, stop)
    return np.where((k == 0) | ((n_fft % 2 == 0) & (k == n_fft // 2)), 1.0, 2.0)


# --------------------------------------------------------------------------- #
# Device kernels (unit-scale input)
# --------------------------------------------------------------------------- #
def _taper_power(x, tapers, n_fft, start, stop):
    """``|rfft(x · taper_k)|²`` over bins ``[start, stop)``, (..., n_tapers, n_sel)."""
    spec = jnp.fft.rfft(x[..., None, :] * tapers, n=n_fft, axis=-1)[..., start:stop]
    return spec.real * spec.real + spec.imag * spec.imag


def multitaper_psd(
    x: Float[Array, "*batch time"],
    tapers: Float[Array, "taper time"],
    weights2: Float[Array, " taper"],
    start: int,
    stop: int,
    *,
    remove_dc: bool = True,
    scale: float = 1.0,
) -> Float[Array, "*batch freq"]:
    """Multitaper PSD with fixed weights: ``2 Σ_k w_k² |X_k(f)|² / Σ_k w_k²``.

    MNE's ``_mt_spectra`` + ``_psd_from_mt``: the series' mean removed
    (``remove_dc``), ``X_k = rfft(x · taper_k)`` (no zero padding), DC and
    (even n) Nyquist not doubled (MNE divides them by √2 before squaring),
    times ``scale`` (1: MNE's ``normalization="length"``; ``1 / sfreq``:
    ``"full"``). ``weights2`` are ``w_k²`` (MNE: the eigenvalues). The
    tapers are applied one at a time (``lax.scan``): memory ~ the input's.
    """
    n_fft = x.shape[-1]
    if remove_dc:
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    tapers = jnp.asarray(tapers, x.dtype)
    weights2 = jnp.asarray(weights2, x.dtype)

    def step(acc, tw):
        taper, w2 = tw
        spec = jnp.fft.rfft(x * taper, axis=-1)[..., start:stop]
        return acc + w2 * (spec.real * spec.real + spec.imag * spec.imag), None

    acc0 = jnp.zeros((*x.shape[:-1], stop - start), x.dtype)
    acc, _ = jax.lax.scan(step, acc0, (tapers, weights2))
    fac = _one_sided(n_fft, start, stop) * scale
    return acc * jnp.asarray(fac, x.dtype) / jnp.sum(weights2)


def adaptive_psd(
    x: Float[Array, "*batch time"],
    tapers: Float[Array, "taper time"],
    eigvals: Float[Array, " taper"],
    start: int,
    stop: int,
    *,
    remove_dc: bool = True,
    scale: float = 1.0,
    max_iter: int = 250,
) -> Float[Array, "*batch freq"]:
    """Multitaper PSD with MNE's adaptive weights (``_psd_from_mt_adaptive``).

    Per series: ``σ² = trapz(S_fixed, dx=π/n_f) / 2π`` over all ``n_f``
    bins (``S_fixed`` the fixed-weight PSD), start from the first two
    tapers, then alternate ``d_k = √λ_k S / (λ_k S + (1 - λ_k) σ²)`` and
    ``S = 2 Σ d_k² |X_k|² / Σ d_k²`` on the selected bins, each series
    stopping (frozen) once ``max_f mean_k (Δd_k)² < 1e-10``, at most
    ``max_iter`` times. A ``lax.while_loop``: jit / vmap, forward-mode
    differentiation only. A zero series gives 0 (MNE: NaN).
    """
    n_fft = x.shape[-1]
    n_all = n_fft // 2 + 1
    if remove_dc:
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    dt = x.dtype
    tapers = jnp.asarray(tapers, dt)
    lam = jnp.asarray(eigvals, dt)[:, None]
    rt = jnp.sqrt(lam)
    # |x_mt|² of MNE (DC and even Nyquist divided by 2)
    power = _taper_power(x, tapers, n_fft, 0, n_all)
    power = power * jnp.asarray(_one_sided(n_fft, 0, n_all) / 2, dt)

    def from_mt(p, w2):  # MNE's _psd_from_mt, w2 = |weights|²
        return safe_div(2 * jnp.sum(w2 * p, axis=-2), jnp.sum(w2, axis=-2))

    s_fixed = from_mt(power, lam)
    trapz = jnp.sum(s_fixed, -1) - 0.5 * (s_fixed[..., 0] + s_fixed[..., -1])
    var = (trapz * (math.pi / n_all) / (2 * math.pi))[..., None, None]
    p = power[..., start:stop]
    s0 = from_mt(p[..., :2, :], lam[:2])
    d0 = jnp.zeros_like(p)
    done0 = jnp.zeros(x.shape[:-1], bool)

    def cond(state):
        n, _, _, done = state
        return (n < max_iter) & ~jnp.all(done)

    def body(state):
        n, s, d_prev, done = state
        d = rt * safe_div(s[..., None, :], lam * s[..., None, :] + (1 - lam) * var)
        conv = jnp.max(jnp.mean((d_prev - d) ** 2, axis=-2), axis=-1) < 1e-10
        stop_now = done | conv
        s_new = jnp.where(stop_now[..., None], s, from_mt(p, d * d))
        d_new = jnp.where(done[..., None, None], d_prev, d)
        return n + 1, s_new, d_new, stop_now

    _, s, _, _ = jax.lax.while_loop(cond, body, (0, s0, d0, done0))
    return s * scale


def welch_psd(
    x: Float[Array, "*batch time"],
    window: Float[Array, " seg"],
    n_fft: int,
    n_overlap: int,
    start: int,
    stop: int,
    *,
    remove_dc: bool = True,
    scale: float = 1.0,
    average: str = "mean",
) -> Float[Array, "*batch freq"]:
    """Welch PSD: mean (or bias-corrected median) of the segments' periodograms.

    ``scipy.signal.spectrogram(x, fs, window, nperseg=len(window),
    noverlap=n_overlap, nfft=n_fft, detrend="constant" if remove_dc else
    False, mode="psd")`` averaged over segments, as MNE's
    ``psd_array_welch``: segment ``j`` starts at ``j (n_per_seg -
    n_overlap)``, ``1 + (n_times - n_per_seg) // step`` segments (a tail
    shorter than a segment is dropped); each periodogram is
    ``c_f |rfft(w · (x_seg - mean), n_fft)|² · scale / Σ w²`` with ``c_f``
    = 2 except at DC and (even ``n_fft``) Nyquist, and ``scale = 1 / sfreq``
    for a density.
    """
    n_times = x.shape[-1]
    n_per_seg = window.shape[-1]
    step = max(n_per_seg - n_overlap, 1)
    n_seg = 1 + (n_times - n_per_seg) // step
    idx = np.arange(n_seg)[:, None] * step + np.arange(n_per_seg)
    seg = x[..., idx]  # (..., n_seg, n_per_seg)
    if remove_dc:
        seg = seg - jnp.mean(seg, axis=-1, keepdims=True)
    win = jnp.asarray(window, x.dtype)
    spec = jnp.fft.rfft(seg * win, n=n_fft, axis=-1)[..., start:stop]
    power = spec.real * spec.real + spec.imag * spec.imag
    if average == "median":
        out = jnp.median(power, axis=-2) / _median_bias(n_seg)
    else:
        out = jnp.mean(power, axis=-2)
    fac = jnp.asarray(_one_sided(n_fft, start, stop) * scale, x.dtype)
    return out * fac / jnp.sum(win * win)


def _median_bias(n: int) -> float:
    """SciPy's / MNE's bias of the median of ``n`` χ²₂ periodograms."""
    ii_2 = 2 * np.arange(1.0, (n - 1) // 2 + 1)
    return float(1 + np.sum(1.0 / (ii_2 + 1) - 1.0 / ii_2))
