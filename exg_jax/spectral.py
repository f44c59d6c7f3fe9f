"""Source power spectra and band power per epoch, as device-side reductions.

:class:`SourcePSD` and :class:`BandPower` are :class:`~exg_jax.reductions.AbstractReduction`
objects: pass one as ``reduce=`` to the streaming engine
(:func:`exg_jax.apply_inverse_epochs`) and only the spectra (n_epochs,
n_src, n_freqs) or band powers (n_epochs, n_src, n_bands) come back from
the device, never the unreduced source time courses. They are also plain
jittable callables on any source estimate array.

The tapers (DPSS) or the Welch window are computed once, in NumPy, when the
object is built (which is why it needs ``n_times``); the call is pure JAX:
``jax.jit``, ``jax.vmap`` and (except ``adaptive=True``) ``jax.grad`` work.
Each series is divided by its ``max |x|`` before any square and the power
multiplied back by that scale squared (the scale is a constant for
differentiation), so float32 spectra of A·m-sized currents (1e-9 to 1e-12)
keep their precision, and relative band power is computed without ever
forming the absolute power.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from . import _spectral
from ._numerics import safe_div, safe_norm, scale_of
from ._typing import IntScalar, RealScalar
from ._validate import as_int, check_option, check_real_scalar
from .reductions import AbstractReduction

__all__ = ["BandPower", "SourcePSD"]


def _as_float(name: str, x: Any, *, allow_inf: bool = False) -> float:
    """A real scalar as a Python float; ``ValueError`` for NaN (and Inf unless allowed)."""
    check_real_scalar(name, x)
    v = float(np.asarray(x))
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {v!r}.")
    return v


def _as_bool(name: str, x: Any) -> bool:
    if not isinstance(x, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {type(x).__name__} {x!r}.")
    return bool(x)


class SourcePSD(AbstractReduction):
    """Power spectral density of each source, per epoch (multitaper or Welch).

    Parameters
    ----------
    sfreq : float
        Sampling frequency (Hz), > 0.
    n_times : int
        Samples per epoch (>= 2); the tapers / window are built for it and a
        ``sol`` with another length is refused.
    fmin, fmax : float
        Frequency range kept (Hz, both ends included, as MNE-Python):
        the bins ``fmin <= f <= fmax`` of the FFT grid; it must contain at
        least one bin.
    bandwidth : float | str | None
        Multitaper: the full bandwidth (Hz) of the DPSS tapers; the
        normalised half bandwidth ``NW = bandwidth · n_times / (2 sfreq)``
        must be >= 0.5 (one taper) and < n_times / 2, and ``int(2 NW)``
        tapers are computed. None: ``NW = 4``. A window name (``"hann"``,
        ``"hamming"``, ``"boxcar"``): that single periodic window instead of
        tapers (as MNE).
    adaptive : bool
        Multitaper: MNE's iterative adaptive taper weights (Thomson) instead
        of the fixed ``√λ_k``. Needs >= 3 tapers (else a warning and fixed
        weights, as MNE); not reverse-mode differentiable (a
        ``lax.while_loop``).
    low_bias : bool
        Multitaper: keep only the tapers with concentration ratio > 0.9.
    method : {"multitaper", "welch"}
        Estimator.
    normalization : {"length", "full"} | None
        ``"full"``: a density, divided by ``sfreq``: (A·m)²/Hz for source
        currents (MNE, eLORETA), 1/Hz for the dimensionless dSPM / sLORETA.
        ``"length"``: not divided by ``sfreq`` (``sfreq`` times the
        density: (A·m)² per cycle/sample). None (default): each method's
        MNE-Python default — ``"length"`` for multitaper (what
        ``compute_source_psd_epochs`` and ``psd_array_multitaper`` return),
        ``"full"`` for Welch (``psd_array_welch``).
    remove_dc : bool
        Remove the mean of each epoch (multitaper) or segment (Welch)
        before the transform (MNE's default).
    max_iter : int
        Adaptive weights: maximum iterations (MNE's source PSD uses 250).
    n_fft : int | None
        Welch: FFT length; None: ``min(256, n_times)`` (the default of
        ``psd_array_welch``, capped at the epoch).
    n_per_seg : int | None
        Welch: segment length (<= n_fft; zero-padded to n_fft); None:
        ``n_fft``.
    n_overlap : int
        Welch: samples shared by consecutive segments (< n_per_seg).
    window : str | array
        Welch: ``"hann"`` (default), ``"hamming"`` (MNE's default),
        ``"boxcar"`` (periodic, as ``scipy.signal.get_window``), or an array
        of length ``n_per_seg``.
    average : {"mean", "median"}
        Welch: how the segments' periodograms are combined (median:
        bias-corrected, as SciPy / MNE).
    combine : {"sum", "mne"}
        How the three components of a free source (4-D ``sol``) are
        combined. ``"sum"`` (default): ``Σ_c S_c(f)``, the PSD of the
        current vector (its power, independent of the basis). ``"mne"``:
        ``√(Σ_c S_c(f)²)``, what ``compute_source_psd_epochs`` returns
        (MNE's ``combine_xyz(psd, square=False)`` is the Euclidean norm of
        the three *power* spectra, not their sum), computed in the
        operator's source frame (``orient_frame``). Not additive and
        basis-dependent: use it for parity with MNE-Python.
    orient_frame : array, shape (n_src, 3, 3) | None
        The frames whose rows are source k's axes, e.g. the (t₁, t₂, n)
        surface frames of a free / loose operator. Given, the Cartesian
        components are rotated into them before the spectra (where it
        matters: ``combine="mne"`` or ``adaptive=True``; a no-op for the
        fixed-weight ``"sum"``). None: the components as given. For MNE
        parity pass MNE's own frames,
        ``inv_mne["source_nn"].reshape(-1, 3, 3)``: its tangential axes come
        from an eigendecomposition with a repeated eigenvalue
        (``mne.surface._normal_orth``) and differ from exg_jax's
        ``inv.orient_frame`` by a rotation about the normal, which changes
        the ``"mne"`` combination (not the ``"sum"``).

    Attributes
    ----------
    freqs : ndarray, shape (n_freqs,), Hz
        The frequencies of the output's last axis.
    tapers : ndarray, shape (n_tapers, n_times) or (1, n_per_seg)
        The DPSS tapers (multitaper) or the Welch window.
    eigvals : ndarray, shape (n_tapers,)
        The tapers' concentration ratios (ones for a window).

    Notes
    -----
    Called on ``sol`` of shape (n_chunk, n_src, n_times) (fixed or normal
    orientations) or (n_chunk, n_src, 3, n_times) (free orientations: the
    three noise-normalised Cartesian components, ``pick_ori="vector"``), it
    returns (n_chunk, n_src, n_freqs): for 4-D input the three components'
    PSDs combined (``combine``). Any other number of dimensions: the PSD of
    every series along the last axis.

    Multitaper (``x`` one series, mean removed; ``w_k`` the DPSS tapers,
    unit L2 norm over ``n_times + 1`` periodic points, ``λ_k`` their
    concentration ratios)::

        X_k(f) = Σ_t x_t w_k[t] e^{-2πi f t / n_times}
        S(f)   = c_f · Σ_k λ_k |X_k(f)|² / Σ_k λ_k   (/ sfreq if "full")

    with ``c_f = 1`` at DC and (even ``n_times``) Nyquist, 2 elsewhere
    (one-sided); ``f`` on ``rfftfreq(n_times, 1 / sfreq)``. Welch
    (``w`` the window, ``m`` segments of ``n_per_seg`` samples, each mean
    removed)::

        S(f) = c_f · mean_j |rfft(w · x_j, n_fft)(f)|² / (sfreq · Σ w²)

    With ``method="multitaper"`` and the default ``normalization``,
    equivalent to ``mne.minimum_norm.compute_source_psd_epochs(epochs,
    inv, lambda2, method, fmin=fmin, fmax=fmax, pick_ori=pick_ori,
    bandwidth=bandwidth, adaptive=adaptive, low_bias=low_bias, nave=1)``
    (stacked ``.data``): for ``pick_ori="normal"`` (or a fixed operator)
    applied to that estimate; for ``pick_ori=None`` with a free / loose
    operator, ``SourcePSD(..., combine="mne",
    orient_frame=inv_mne["source_nn"].reshape(-1, 3, 3))`` applied to
    ``apply_inverse_epochs(..., pick_ori="vector")`` (MNE scales
    the PSD of the unnormalised kernel by ``noise_norm²``: the same thing,
    as the three components of a source share one noise normalisation).
    On arrays it equals ``mne.time_frequency.psd_array_multitaper(x, sfreq,
    fmin, fmax, bandwidth, adaptive, low_bias, normalization)`` (with
    ``max_iter=250``), and the Welch spectrum equals
    ``mne.time_frequency.psd_array_welch(x, sfreq, fmin, fmax, n_fft,
    n_overlap, n_per_seg, window=window, average=average)``.
    """

    needs_vector: ClassVar[bool] = True
    time_local: ClassVar[bool] = False

    tapers: np.ndarray
    eigvals: np.ndarray
    orient_frame: np.ndarray | None
    sfreq: float = eqx.field(static=True)
    n_times: int = eqx.field(static=True)
    fmin: float = eqx.field(static=True)
    fmax: float = eqx.field(static=True)
    method: str = eqx.field(static=True)
    bandwidth: float | str | None = eqx.field(static=True)
    adaptive: bool = eqx.field(static=True)
    low_bias: bool = eqx.field(static=True)
    normalization: str = eqx.field(static=True)
    remove_dc: bool = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    n_fft: int = eqx.field(static=True)
    n_overlap: int = eqx.field(static=True)
    average: str = eqx.field(static=True)
    combine: str = eqx.field(static=True)
    _start: int = eqx.field(static=True)
    _stop: int = eqx.field(static=True)

    def __init__(
        self,
        sfreq: RealScalar,
        n_times: IntScalar,
        *,
        fmin: RealScalar = 0.0,
        fmax: RealScalar = math.inf,
        bandwidth: RealScalar | str | None = 4.0,
        adaptive: bool = False,
        low_bias: bool = True,
        method: str = "multitaper",
        normalization: str | None = None,
        remove_dc: bool = True,
        max_iter: IntScalar = 250,
        n_fft: IntScalar | None = None,
        n_per_seg: IntScalar | None = None,
        n_overlap: IntScalar = 0,
        window: str | Real[ArrayLike, " seg"] = "hann",
        average: str = "mean",
        combine: str = "sum",
        orient_frame: Real[ArrayLike, "src 3 3"] | None = None,
    ):
        sfreq = _as_float("sfreq", sfreq, allow_inf=False)
        if sfreq <= 0:
            raise ValueError(f"sfreq must be > 0 (Hz), got {sfreq!r}.")
        n_times = as_int("n_times", n_times, minimum=2)
        fmin = _as_float("fmin", fmin, allow_inf=True)
        fmax = _as_float("fmax", fmax, allow_inf=True)
        if fmin > fmax:
            raise ValueError(f"fmin={fmin} must not exceed fmax={fmax} (Hz).")
        if fmin > sfreq / 2:
            raise ValueError(
                f"fmin={fmin} Hz is above the Nyquist frequency sfreq / 2 = "
                f"{sfreq / 2} Hz."
            )
        method = check_option("method", method, ("multitaper", "welch"))
        if normalization is None:
            normalization = "length" if method == "multitaper" else "full"
        normalization = check_option("normalization", normalization, ("length", "full"))
        adaptive = _as_bool("adaptive", adaptive)
        low_bias = _as_bool("low_bias", low_bias)
        remove_dc = _as_bool("remove_dc", remove_dc)
        max_iter = as_int("max_iter", max_iter, minimum=1)
        average = check_option("average", average, ("mean", "median"))
        combine = check_option("combine", combine, ("sum", "mne"))
        if orient_frame is not None:
            frame = np.asarray(orient_frame)
            if not np.issubdtype(frame.dtype, np.number) or np.iscomplexobj(frame):
                raise TypeError(
                    f"orient_frame must be a real array, got dtype {frame.dtype}."
                )
            if frame.ndim != 3 or frame.shape[1:] != (3, 3):
                raise ValueError(
                    "orient_frame must have shape (n_src, 3, 3) (the rows of "
                    f"frame[k]: source k's axes), got {frame.shape}."
                )
            if not np.all(np.isfinite(frame)):
                raise ValueError("orient_frame contains NaN or Inf.")
            orient_frame = frame.astype(np.float64)

        if method == "multitaper":
            if isinstance(bandwidth, str):
                check_option("bandwidth", bandwidth, ("hann", "hamming", "boxcar"))
            elif bandwidth is not None:
                bandwidth = _as_float("bandwidth", bandwidth)
                if bandwidth <= 0:
                    raise ValueError(f"bandwidth must be > 0 (Hz), got {bandwidth}.")
            tapers, eigvals, adaptive = _spectral.mt_params(
                n_times, sfreq, bandwidth, low_bias, adaptive
            )
            n_fft = n_times
            n_overlap = 0
            freqs = np.fft.rfftfreq(n_times, 1.0 / sfreq)
        else:
            n_fft = as_int("n_fft", n_fft, minimum=1, allow_none=True)
            n_per_seg = as_int("n_per_seg", n_per_seg, minimum=1, allow_none=True)
            n_overlap = as_int("n_overlap", n_overlap, minimum=0)
            if isinstance(window, str):
                check_option("window", window, ("hann", "hamming", "boxcar"))
            else:
                win = np.asarray(window)
                if win.ndim != 1 or not np.issubdtype(win.dtype, np.number):
                    raise TypeError(
                        "window must be 'hann', 'hamming', 'boxcar' or a 1-D "
                        f"real array, got {type(window).__name__}."
                    )
                if n_per_seg is None:
                    n_per_seg = win.shape[0]
            if n_fft is None:
                n_fft = max(min(256, n_times), n_per_seg or 0)
            n_fft, n_per_seg, n_overlap = _spectral.welch_params(
                n_times, n_fft, n_per_seg, n_overlap
            )
            if isinstance(window, str):
                win = _spectral.get_window(window, n_per_seg)
            else:
                win = np.asarray(window, np.float64)
                if win.shape[0] != n_per_seg or not np.all(np.isfinite(win)):
                    raise ValueError(
                        f"window must be {n_per_seg} finite values (n_per_seg), "
                        f"got shape {win.shape}."
                    )
                if not np.any(win):
                    raise ValueError("window must not be all zeros.")
            tapers, eigvals = win[None], np.ones(1)
            adaptive = False
            freqs = np.arange(n_fft // 2 + 1, dtype=float) * (sfreq / n_fft)
        try:
            start, stop = _spectral.frequency_slice(freqs, fmin, fmax)
        except ValueError as err:
            raise ValueError(f"fmin / fmax: {err}") from None

        self.tapers = np.asarray(tapers, np.float64)
        self.eigvals = np.asarray(eigvals, np.float64)
        self.sfreq = sfreq
        self.n_times = n_times
        self.fmin = fmin
        self.fmax = fmax
        self.method = method
        self.bandwidth = bandwidth if method == "multitaper" else None
        self.adaptive = adaptive
        self.low_bias = low_bias
        self.normalization = normalization
        self.remove_dc = remove_dc
        self.max_iter = max_iter
        self.n_fft = n_fft
        self.n_overlap = n_overlap
        self.average = average
        self.combine = combine
        self.orient_frame = orient_frame
        self._start = start
        self._stop = stop

    @property
    def freqs(self) -> np.ndarray:
        """Frequencies (Hz) of the output's last axis, shape (n_freqs,)."""
        if self.method == "multitaper":
            full = np.fft.rfftfreq(self.n_times, 1.0 / self.sfreq)
        else:
            full = np.arange(self.n_fft // 2 + 1, dtype=float) * (
                self.sfreq / self.n_fft
            )
        return full[self._start : self._stop]

    @property
    def n_freqs(self) -> int:
        """Number of frequencies in the output."""
        return self._stop - self._start

    def _check_sol(self, sol: Any) -> Array:
        if not hasattr(sol, "shape") or not hasattr(sol, "dtype"):
            sol = np.asarray(sol)
        dtype = np.dtype(sol.dtype)
        if dtype == np.bool_ or not (
            np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
        ):
            raise TypeError(f"sol must be a real array, got dtype {dtype}.")
        if len(sol.shape) == 0 or sol.shape[-1] != self.n_times:
            raise ValueError(
                f"sol must have n_times={self.n_times} samples on its last axis "
                f"(the length this {type(self).__name__} was built for), got shape "
                f"{tuple(sol.shape)}."
            )
        sol = jnp.asarray(sol)
        if not jnp.issubdtype(sol.dtype, jnp.floating):
            sol = sol.astype(jnp.result_type(float))
        return sol

    def _series_psd(
        self, y: Float[Array, "*batch time"]
    ) -> Float[Array, "*batch freq"]:
        """PSD of unit-scale series along the last axis."""
        scale = 1.0 / self.sfreq if self.normalization == "full" else 1.0
        if self.method == "welch":
            return _spectral.welch_psd(
                y,
                self.tapers[0],
                self.n_fft,
                self.n_overlap,
                self._start,
                self._stop,
                remove_dc=self.remove_dc,
                scale=scale,
                average=self.average,
            )
        if self.adaptive:
            return _spectral.adaptive_psd(
                y,
                self.tapers,
                self.eigvals,
                self._start,
                self._stop,
                remove_dc=self.remove_dc,
                scale=scale,
                max_iter=self.max_iter,
            )
        return _spectral.multitaper_psd(
            y,
            self.tapers,
            self.eigvals,
            self._start,
            self._stop,
            remove_dc=self.remove_dc,
            scale=scale,
        )

    def unit_psd(
        self, sol: Real[ArrayLike, "..."]
    ) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """The PSD as ``(p, m)`` with ``PSD = p · m²``, ``m`` the series' ``max |x|``.

        ``p`` has the output's shape, ``m`` the same with a last axis of 1;
        ``p`` is the PSD of ``sol / m`` (no square of a physical quantity).
        """
        sol = self._check_sol(sol)
        if sol.ndim == 4:
            if sol.shape[-2] != 3:
                raise ValueError(
                    "a 4-D sol must be (n_chunk, n_src, 3, n_times) (three "
                    f"components per source), got shape {tuple(sol.shape)}."
                )
            if self._uses_frame and self.orient_frame.shape[0] != sol.shape[-3]:
                raise ValueError(
                    f"sol has {sol.shape[-3]} sources but orient_frame has "
                    f"{self.orient_frame.shape[0]}."
                )
        return _unit_psd_jit(self, sol)

    @property
    def _uses_frame(self) -> bool:
        # the frame matters only where the result depends on the basis
        return self.orient_frame is not None and (
            self.combine == "mne" or self.adaptive
        )

    def _unit_psd(
        self, sol: Float[Array, "..."]
    ) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        if sol.ndim != 4:
            m = scale_of(sol, axis=-1, keepdims=True)
            return self._series_psd(sol / m), m
        if self._uses_frame:
            frame = jnp.asarray(self.orient_frame, sol.dtype)
            sol = jnp.einsum("scj,...sjt->...sct", frame, sol)
        m = scale_of(sol, axis=(-2, -1), keepdims=True)
        p = self._series_psd(sol / m)
        p = jnp.sum(p, axis=-2) if self.combine == "sum" else safe_norm(p, axis=-2)
        return p, m[..., 0, :]

    def __call__(self, sol: Real[ArrayLike, "..."]) -> Float[Array, "..."]:
        """PSD of one chunk's source estimate.

        Parameters
        ----------
        sol : Array, shape (n_chunk, n_src, n_times) or (n_chunk, n_src, 3, n_times)
            Source estimate: A·m (MNE, eLORETA) or dimensionless (dSPM,
            sLORETA). 4-D: the three Cartesian components of each source.

        Returns
        -------
        psd : Array, shape (n_chunk, n_src, n_freqs)
            (A·m)²/Hz or 1/Hz with ``normalization="full"`` (times ``sfreq``
            with ``"length"``, the multitaper default); summed over the
            three components for 4-D input.
        """
        p, m = self.unit_psd(sol)
        return (p * m) * m


# One compiled program per (static configuration, input shape / dtype); inlined
# when called inside another trace (the streaming engine's step).
_unit_psd_jit = eqx.filter_jit(SourcePSD._unit_psd)


def _as_bands(
    bands: Any, sfreq: float
) -> tuple[tuple[str, ...], tuple[tuple[float, float], ...]]:
    """Names and (fmin, fmax) pairs of ``bands`` (dict or sequence of pairs)."""
    if isinstance(bands, Mapping):
        items = list(bands.items())
        for name, _ in items:
            if not isinstance(name, str):
                raise TypeError(
                    f"bands: names must be strings, got {type(name).__name__} {name!r}."
                )
    elif isinstance(bands, Sequence) and not isinstance(bands, str | bytes):
        items = [(None, pair) for pair in bands]
    else:
        raise TypeError(
            "bands must be a dict name -> (fmin, fmax) or a sequence of (fmin, fmax) "
            f"pairs, got {type(bands).__name__}."
        )
    if not items:
        raise ValueError("bands must contain at least one band.")
    names, pairs = [], []
    for name, pair in items:
        label = f"bands[{name!r}]" if name is not None else "bands"
        if (
            isinstance(pair, str | bytes)
            or not isinstance(pair, Sequence | np.ndarray)
            or len(pair) != 2
        ):
            raise TypeError(f"{label} must be a pair (fmin, fmax) in Hz, got {pair!r}.")
        lo = _as_float(f"{label} fmin", pair[0])
        hi = _as_float(f"{label} fmax", pair[1])
        if not 0 <= lo < hi <= sfreq / 2:
            raise ValueError(
                f"{label} = ({lo}, {hi}) Hz must satisfy 0 <= fmin < fmax <= "
                f"sfreq / 2 = {sfreq / 2} Hz."
            )
        names.append(name if name is not None else f"{lo:g}-{hi:g}")
        pairs.append((lo, hi))
    if len(set(names)) != len(names):
        raise ValueError(f"bands: duplicate band names {names}.")
    return tuple(names), tuple(pairs)


class BandPower(AbstractReduction):
    """Mean PSD of each source in frequency bands, per epoch.

    Parameters
    ----------
    sfreq : float
        Sampling frequency (Hz).
    n_times : int
        Samples per epoch.
    bands : dict of str to (float, float), or sequence of (float, float)
        Bands ``[fmin, fmax)`` in Hz, ``0 <= fmin < fmax <= sfreq / 2``;
        each must contain at least one frequency bin of the PSD. Names of a
        sequence's bands: ``"{fmin:g}-{fmax:g}"``.
    relative : bool
        Divide the PSD by its sum over all its frequencies (the PSD's
        ``fmin``..``fmax``, by default 0 to sfreq / 2) before averaging
        over the band.
    **psd_kwargs
        The options of :class:`SourcePSD` (``fmin``, ``fmax``,
        ``bandwidth``, ``method``, ``normalization``, ...).

    Attributes
    ----------
    band_names : tuple of str
        Names of the output's last axis.
    bands : tuple of (float, float)
        The bands (Hz).
    psd : SourcePSD
        The spectral estimator.
    freqs : ndarray
        The PSD's frequencies (Hz).

    Notes
    -----
    With ``S(f)`` the PSD of :class:`SourcePSD` (for free orientations the
    sum over the three components) and ``F_b`` the bins with
    ``fmin_b <= f < fmax_b``::

        P_b = mean_{f ∈ F_b} S(f)                       (relative=False)
        P_b = mean_{f ∈ F_b} S(f) / Σ_{all f} S(f)      (relative=True)

    the band's *mean* PSD, as MNE-Python's band-power examples compute it
    (``psds[..., (freqs >= fmin) & (freqs < fmax)].mean(-1)``, after
    ``psds /= psds.sum(-1, keepdims=True)`` for relative power). Units: those
    of the PSD; relative power is dimensionless and is computed from the
    unit-scale spectrum (finite even where the absolute power under- or
    overflows the dtype).
    """

    needs_vector: ClassVar[bool] = True
    time_local: ClassVar[bool] = False

    psd: SourcePSD
    relative: bool = eqx.field(static=True)
    bands: tuple[tuple[float, float], ...] = eqx.field(static=True)
    band_names: tuple[str, ...] = eqx.field(static=True)
    _slices: tuple[tuple[int, int], ...] = eqx.field(static=True)

    def __init__(
        self,
        sfreq: RealScalar,
        n_times: IntScalar,
        bands: Mapping[str, Any] | Sequence[Any],
        *,
        relative: bool = False,
        **psd_kwargs: Any,
    ):
        psd = SourcePSD(sfreq, n_times, **psd_kwargs)
        names, pairs = _as_bands(bands, psd.sfreq)
        freqs = psd.freqs
        slices = []
        for name, (lo, hi) in zip(names, pairs, strict=True):
            idx = np.flatnonzero((freqs >= lo) & (freqs < hi))
            if idx.size == 0:
                raise ValueError(
                    f"bands[{name!r}] = ({lo}, {hi}) Hz contains no frequency bin of "
                    f"the PSD (bins {freqs[0]:g} to {freqs[-1]:g} Hz, step "
                    f"{(freqs[1] - freqs[0]) if freqs.size > 1 else 0:g} Hz): widen "
                    "the band or lengthen the epochs."
                )
            slices.append((int(idx[0]), int(idx[-1]) + 1))
        self.psd = psd
        self.relative = _as_bool("relative", relative)
        self.bands = pairs
        self.band_names = names
        self._slices = tuple(slices)

    @property
    def freqs(self) -> np.ndarray:
        """The PSD's frequencies (Hz)."""
        return self.psd.freqs

    def __call__(self, sol: Real[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Band power of one chunk's source estimate.

        Parameters
        ----------
        sol : Array, shape (n_chunk, n_src, n_times) or (n_chunk, n_src, 3, n_times)
            As :meth:`SourcePSD.__call__`.

        Returns
        -------
        power : Array, shape (n_chunk, n_src, n_bands)
            Mean PSD per band (units of the PSD), or dimensionless with
            ``relative=True``.
        """
        p, m = self.psd.unit_psd(sol)
        if self.relative:
            p = safe_div(p, jnp.sum(p, axis=-1, keepdims=True))
        else:
            p = (p * m) * m
        return jnp.stack([jnp.mean(p[..., a:b], axis=-1) for a, b in self._slices], -1)
