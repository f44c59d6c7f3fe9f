"""Source PSD and band power reductions: MNE-Python / SciPy parity, JAX properties, bad input."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import mne
import numpy as np
import pytest
import scipy.signal
from _oracle import mne_sphere_forward
from mne.time_frequency import psd_array_multitaper, psd_array_welch
from mne.time_frequency.multitaper import dpss_windows as mne_dpss

from exg_jax._spectral import dpss_windows
from exg_jax.covariance import NoiseCov
from exg_jax.interop import forward_from_mne
from exg_jax.inverse import apply_inverse_epochs, make_inverse_operator
from exg_jax.spectral import BandPower, SourcePSD

LAMBDA2 = 1.0 / 9.0
N_TIMES = 64  # sfreq 1000 Hz (the oracle's info): 15.6 Hz bins
# Tolerances, max |ours - ref| / max |ref| (DPSS: max abs), >= 100x the worst
# value measured (OpenBLAS, x86-64):
TOL_DPSS = 1e-10  # measured <= 5.1e-13 (tapers, n <= 1501), <= 1.6e-15 (ratios)
TOL_MNE = 1e-8  # source PSD vs compute_source_psd_epochs, measured <= 3.7e-13
TOL_ARRAY = 1e-10  # array PSDs vs psd_array_multitaper / welch, measured <= 4e-14
TOL_F32 = 1e-4  # float32 vs float64, measured <= 2.4e-7


def _rel(got, ref):
    ref = np.asarray(ref)
    return float(np.max(np.abs(np.asarray(got) - ref)) / np.max(np.abs(ref)))


# --------------------------------------------------------------------------- #
# DPSS
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("n", "half_nbw", "low_bias", "sym"),
    [
        (2, 0.6, False, True),
        (7, 1.0, False, True),
        (64, 1.28, True, False),
        (100, 2.0, True, True),
        (101, 3.5, False, False),
        (256, 4.0, True, False),
        (500, 0.6, True, False),
        (1000, 8.0, False, False),
        (1501, 25.0, True, True),
    ],
)
def test_dpss_matches_mne(n, half_nbw, low_bias, sym):
    k = int(2 * half_nbw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # low_bias keeping one taper
        got, got_r = dpss_windows(n, half_nbw, k, low_bias=low_bias, sym=sym)
        ref, ref_r = mne_dpss(n, half_nbw, k, low_bias=low_bias, sym=sym)
    assert got.shape == ref.shape and got_r.shape == ref_r.shape
    assert np.max(np.abs(got - ref)) <= TOL_DPSS
    assert np.max(np.abs(got_r - ref_r)) <= TOL_DPSS


def test_dpss_low_bias_fallback_warns():
    with pytest.warns(RuntimeWarning, match="low_bias"):
        tapers, ratios = dpss_windows(500, 0.6, 1, low_bias=True)
    assert tapers.shape == (1, 500) and ratios.shape == (1,) and ratios[0] < 0.9


# --------------------------------------------------------------------------- #
# Array PSDs vs MNE-Python / SciPy
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("n_times", "kw"),
    [
        (100, dict()),
        (101, dict(fmin=5.0, fmax=40.0)),
        (100, dict(bandwidth=10.0, normalization="full")),
        (101, dict(bandwidth=10.0, adaptive=True)),
        (100, dict(bandwidth=20.0, adaptive=True, low_bias=False, fmin=10.0)),
        (101, dict(bandwidth="hann")),
        (100, dict(bandwidth=None)),
    ],
)
def test_multitaper_matches_mne(n_times, kw):
    x = np.random.default_rng(1).standard_normal((3, 4, n_times))
    red = SourcePSD(200.0, n_times, **kw)
    mkw = dict(kw)
    mkw.setdefault("bandwidth", 4.0)
    ref, freqs = psd_array_multitaper(x, 200.0, max_iter=250, verbose=False, **mkw)
    np.testing.assert_array_equal(red.freqs, freqs)
    assert _rel(red(x), ref) <= TOL_ARRAY


@pytest.mark.parametrize(
    "kw",
    [
        dict(n_fft=64),
        dict(n_fft=64, n_overlap=32, window="hamming"),
        dict(n_fft=65, n_per_seg=50, n_overlap=10, fmin=3.0, fmax=50.0),
        dict(n_fft=32, n_overlap=8, average="median"),
        dict(n_fft=100, window="boxcar"),
    ],
)
def test_welch_matches_mne(kw):
    x = np.random.default_rng(2).standard_normal((3, 4, 100))
    red = SourcePSD(200.0, 100, method="welch", **kw)
    mkw = dict(kw)
    mkw.setdefault("window", "hann")
    ref, freqs = psd_array_welch(x, 200.0, verbose=False, **mkw)
    np.testing.assert_array_equal(red.freqs, freqs)
    assert _rel(red(x), ref) <= TOL_ARRAY


def test_welch_matches_scipy():
    x = np.random.default_rng(3).standard_normal((5, 300))
    red = SourcePSD(250.0, 300, method="welch", n_fft=128, n_overlap=64)
    f, ref = scipy.signal.welch(
        x, 250.0, window="hann", nperseg=128, noverlap=64, detrend="constant"
    )
    np.testing.assert_allclose(red.freqs, f, rtol=1e-15)
    assert _rel(red(x), ref) <= TOL_ARRAY


# --------------------------------------------------------------------------- #
# Source PSD vs mne.minimum_norm.compute_source_psd_epochs
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def problem():
    """biosemi32, ico-1 source space with normals, loose 0.2 operators (as test_inverse)."""
    info, _, fwd = mne_sphere_forward("biosemi32", 1)
    fwd_surf = mne.convert_forward_solution(fwd, surf_ori=True)
    rng = np.random.default_rng(0)
    n = len(info.ch_names)
    mix = rng.standard_normal((n, n))
    noise = mix @ rng.standard_normal((n, 2000)) * 1e-6
    cov = noise @ noise.T / noise.shape[1]
    mne_cov = mne.Covariance(cov, info.ch_names, [], [], noise.shape[1])
    data = rng.standard_normal((3, n, N_TIMES)) * 1e-6
    epochs = mne.EpochsArray(data, info, verbose=False)
    epochs.set_eeg_reference(projection=True)
    kw = dict(loose=0.2, depth=0.8)
    inv_m = mne.minimum_norm.make_inverse_operator(epochs.info, fwd_surf, mne_cov, **kw)
    inv_o = make_inverse_operator(
        forward_from_mne(fwd_surf, reference=None),
        NoiseCov(jnp.asarray(cov)),
        avg_ref_proj=True,
        **kw,
    )
    return dict(sfreq=info["sfreq"], data=data, epochs=epochs, inv_m=inv_m, inv_o=inv_o)


def _mne_psd(problem, method, pick_ori, **kw):
    stcs = mne.minimum_norm.compute_source_psd_epochs(
        problem["epochs"],
        problem["inv_m"],
        LAMBDA2,
        method,
        pick_ori=pick_ori,
        nave=1,
        verbose=False,
        **kw,
    )
    return np.stack([s.data for s in stcs]), stcs[0].times


def _mne_frames(problem):
    # MNE's tangential axes come from an eigh of a degenerate matrix
    # (mne.surface._normal_orth): exg_jax's own frames (inv.orient_frame)
    # differ from them by a rotation in the tangent plane.
    return problem["inv_m"]["source_nn"].reshape(-1, 3, 3)


@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA"])
@pytest.mark.parametrize("pick_ori", [None, "normal"])
def test_source_psd_matches_mne(problem, method, pick_ori):
    fmin, fmax, bw = 20.0, 400.0, 40.0  # 2 tapers
    ref, freqs = _mne_psd(problem, method, pick_ori, fmin=fmin, fmax=fmax, bandwidth=bw)
    if pick_ori is None:
        est = apply_inverse_epochs(
            problem["data"], problem["inv_o"], LAMBDA2, method, pick_ori="vector"
        ).data
        assert est.shape[-2:] == (3, N_TIMES)
        red = SourcePSD(
            problem["sfreq"],
            N_TIMES,
            fmin=fmin,
            fmax=fmax,
            bandwidth=bw,
            combine="mne",
            orient_frame=_mne_frames(problem),
        )
    else:
        est = apply_inverse_epochs(
            problem["data"], problem["inv_o"], LAMBDA2, method, pick_ori="normal"
        ).data
        red = SourcePSD(problem["sfreq"], N_TIMES, fmin=fmin, fmax=fmax, bandwidth=bw)
    got = red(est)
    np.testing.assert_array_equal(red.freqs, freqs)
    assert got.shape == ref.shape
    assert _rel(got, ref) <= TOL_MNE


@pytest.mark.parametrize(
    ("method", "pick_ori"), [("dSPM", None), ("sLORETA", "normal")]
)
def test_source_psd_adaptive_matches_mne(problem, method, pick_ori):
    bw = 100.0  # 5 tapers after low_bias
    ref, _ = _mne_psd(problem, method, pick_ori, bandwidth=bw, adaptive=True)
    est = apply_inverse_epochs(
        problem["data"],
        problem["inv_o"],
        LAMBDA2,
        method,
        pick_ori="vector" if pick_ori is None else "normal",
    ).data
    red = SourcePSD(
        problem["sfreq"],
        N_TIMES,
        fmax=200.0,
        bandwidth=bw,
        adaptive=True,
        combine="mne",
        orient_frame=_mne_frames(problem) if pick_ori is None else None,
    )
    assert red.adaptive and red.tapers.shape[0] == 5
    assert _rel(red(est), ref) <= TOL_MNE


def test_source_psd_sum_is_the_vector_power(problem):
    """combine="sum": Σ_c S_c of MNE's own vector estimate, in any frame."""
    vec_m = np.stack(
        [
            s.data
            for s in mne.minimum_norm.apply_inverse_epochs(
                problem["epochs"],
                problem["inv_m"],
                LAMBDA2,
                "dSPM",
                pick_ori="vector",
                nave=1,
            )
        ]
    )
    ref = psd_array_multitaper(vec_m, problem["sfreq"], bandwidth=40.0, verbose=False)[
        0
    ].sum(-2)
    est = apply_inverse_epochs(
        problem["data"], problem["inv_o"], LAMBDA2, "dSPM", pick_ori="vector"
    ).data
    red = SourcePSD(problem["sfreq"], N_TIMES, bandwidth=40.0)
    assert _rel(red(est), ref) <= TOL_MNE
    framed = SourcePSD(
        problem["sfreq"],
        N_TIMES,
        bandwidth=40.0,
        orient_frame=problem["inv_o"].orient_frame,
    )
    assert _rel(framed(est), ref) <= TOL_MNE


def test_streaming_engine_reduces_on_device(problem):
    """apply_inverse_epochs(reduce=...): chunks (last one padded) == direct."""
    red = BandPower(
        problem["sfreq"], N_TIMES, {"a": (0, 100), "b": (100, 300)}, bandwidth=40.0
    )
    got = apply_inverse_epochs(
        problem["data"], problem["inv_o"], LAMBDA2, "dSPM", reduce=red, chunk_size=2
    )
    est = apply_inverse_epochs(
        jnp.asarray(problem["data"]),
        problem["inv_o"],
        LAMBDA2,
        "dSPM",
        pick_ori="vector",
    ).data
    assert np.shape(got) == (3, problem["inv_o"].n_src, 2)
    assert _rel(got, red(est)) <= 1e-12


# --------------------------------------------------------------------------- #
# Band power
# --------------------------------------------------------------------------- #
BANDS = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}


@pytest.mark.parametrize("method", ["multitaper", "welch"])
def test_band_power_is_band_mean(method):
    sfreq, n = 100.0, 200
    x = np.random.default_rng(4).standard_normal((2, 3, 3, n))
    kw = dict(n_fft=100) if method == "welch" else dict(bandwidth=2.0)
    psd = SourcePSD(sfreq, n, method=method, **kw)
    s = np.asarray(psd(x))
    f = psd.freqs
    for relative in (False, True):
        bp = BandPower(sfreq, n, BANDS, relative=relative, method=method, **kw)
        assert bp.band_names == ("theta", "alpha", "beta")
        s_ref = s / s.sum(-1, keepdims=True) if relative else s
        ref = np.stack(
            [s_ref[..., (f >= lo) & (f < hi)].mean(-1) for lo, hi in BANDS.values()],
            -1,
        )
        got = bp(x)
        assert got.shape == (2, 3, 3)
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12)


def test_band_power_sequence_names():
    bp = BandPower(100.0, 200, [(1, 4), (4, 8.5)])
    assert bp.band_names == ("1-4", "4-8.5")
    assert bp.bands == ((1.0, 4.0), (4.0, 8.5))


# --------------------------------------------------------------------------- #
# JAX properties
# --------------------------------------------------------------------------- #
def _reductions():
    return [
        SourcePSD(100.0, 64, bandwidth=8.0),
        SourcePSD(100.0, 64, bandwidth=20.0, adaptive=True, combine="mne"),
        SourcePSD(100.0, 64, method="welch", n_fft=32, n_overlap=16),
        BandPower(100.0, 64, BANDS, relative=True, bandwidth=8.0),
    ]


@pytest.mark.parametrize("i", range(4))
def test_jit_vmap_equal_eager(i):
    red = _reductions()[i]
    x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 2, 5, 3, 64)))
    eager = jnp.stack([red(xi) for xi in x])
    np.testing.assert_allclose(jax.vmap(red)(x), eager, rtol=1e-12)
    if i == 0:
        # the module as a traced argument (its NumPy tapers become tracers)
        np.testing.assert_allclose(
            eqx.filter_jit(lambda r, y: r(y))(red, x[0]), eager[0], rtol=1e-12
        )
        # 3-D input: one series per row, vmapping the leading axis changes nothing
        x3 = x[0, :, :, 0]
        np.testing.assert_allclose(jax.vmap(red)(x3), red(x3), rtol=1e-12)


def test_grad_matches_finite_difference():
    red = BandPower(100.0, 64, BANDS, bandwidth=8.0)
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((2, 5, 3, 64)) * 1e-9)
    v = jnp.asarray(rng.standard_normal(x.shape) * 1e-9)

    def f(y):
        return jnp.sum(red(y) * jnp.arange(1.0, 4.0))

    g = jax.grad(f)(x)
    h = 1e-3
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=1e-8)


@pytest.mark.parametrize("i", range(4))
@pytest.mark.parametrize("scale", [1.0, 1e-9, 1e-12])
def test_float32_matches_float64(i, scale):
    red = _reductions()[i]
    x = np.random.default_rng(7).standard_normal((2, 5, 3, 64)) * scale
    ref = np.asarray(red(jnp.asarray(x)))
    got = red(jnp.asarray(x, jnp.float32))
    assert got.dtype == jnp.float32
    assert _rel(got, ref) <= TOL_F32


def test_relative_band_power_float32_tiny_currents():
    """1e-22 A·m in float32: x² flushes to zero, relative power stays exact."""
    red = BandPower(100.0, 64, BANDS, relative=True, bandwidth=8.0)
    x = np.random.default_rng(8).standard_normal((2, 5, 64))
    ref = np.asarray(red(jnp.asarray(x)))
    x32 = jnp.asarray(x * 1e-22, jnp.float32)
    assert float(jnp.max(x32 * x32)) == 0.0  # naive squaring underflows
    assert _rel(red(x32), ref) <= TOL_F32


def test_zero_series_and_padding_give_zero():
    for red in _reductions():
        out = red(jnp.zeros((2, 5, 3, 64)))
        assert np.all(np.asarray(out) == 0)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (dict(sfreq=0.0), ValueError, "sfreq"),
        (dict(sfreq=-1.0), ValueError, "sfreq"),
        (dict(sfreq=np.nan), ValueError, "sfreq"),
        (dict(sfreq="1000"), TypeError, "sfreq"),
        (dict(n_times=1), ValueError, "n_times"),
        (dict(n_times=64.0), TypeError, "n_times"),
        (dict(fmin=50.0, fmax=10.0), ValueError, "fmin"),
        (dict(fmin=600.0), ValueError, "fmin"),
        (dict(fmin=1.0, fmax=2.0), ValueError, "No frequency bin"),
        (dict(method="fft"), ValueError, "method"),
        (dict(bandwidth=5.0), ValueError, "bandwidth"),
        (dict(bandwidth=1000.0), ValueError, "bandwidth"),
        (dict(bandwidth=-4.0), ValueError, "bandwidth"),
        (dict(bandwidth="kaiser"), ValueError, "bandwidth"),
        (dict(normalization="density"), ValueError, "normalization"),
        (dict(adaptive=1), TypeError, "adaptive"),
        (dict(combine="mean"), ValueError, "combine"),
        (dict(orient_frame=np.zeros((4, 3))), ValueError, "orient_frame"),
        (dict(method="welch", n_fft=128), ValueError, "n_fft"),
        (dict(method="welch", n_fft=32, n_overlap=32), ValueError, "n_overlap"),
        (dict(method="welch", window="kaiser"), ValueError, "window"),
        (
            dict(method="welch", n_fft=32, n_per_seg=8, window=np.ones(5)),
            ValueError,
            "window",
        ),
        (dict(method="welch", average="max"), ValueError, "average"),
    ],
)
def test_source_psd_bad_input(kw, exc, match):
    args = dict(sfreq=1000.0, n_times=64, bandwidth=40.0)
    args.update(kw)
    with pytest.raises(exc, match=match):
        SourcePSD(args.pop("sfreq"), args.pop("n_times"), **args)


def test_source_psd_bad_sol():
    red = SourcePSD(
        1000.0, 64, bandwidth=40.0, combine="mne", orient_frame=np.eye(3)[None]
    )
    with pytest.raises(ValueError, match="sol must have n_times=64"):
        red(jnp.zeros((2, 3, 65)))
    with pytest.raises(ValueError, match="sol must have n_times=64"):
        jax.jit(lambda y: red(y))(jnp.zeros((2, 3, 65)))
    with pytest.raises(ValueError, match="three components"):
        red(jnp.zeros((2, 3, 2, 64)))
    with pytest.raises(ValueError, match="orient_frame"):
        red(jnp.zeros((2, 5, 3, 64)))
    with pytest.raises(TypeError, match="sol must be a real array"):
        red(jnp.zeros((2, 1, 3, 64), jnp.complex64))


@pytest.mark.parametrize(
    ("bands", "exc", "match"),
    [
        ({"x": (40.0, 60.0)}, ValueError, "sfreq / 2"),
        ({"x": (-1.0, 4.0)}, ValueError, "fmin < fmax"),
        ({"x": (8.0, 4.0)}, ValueError, "fmin < fmax"),
        ({"x": (1.0, 1.2)}, ValueError, "no frequency bin"),
        ({}, ValueError, "at least one band"),
        ("alpha", TypeError, "bands"),
        ({"x": (1.0, 2.0, 3.0)}, TypeError, "pair"),
        ({1: (1.0, 4.0)}, TypeError, "names"),
        ([(1.0, 4.0), (1.0, 4.0)], ValueError, "duplicate"),
    ],
)
def test_band_power_bad_bands(bands, exc, match):
    with pytest.raises(exc, match=match):
        BandPower(100.0, 64, bands, bandwidth=8.0)


def test_band_power_bad_options():
    with pytest.raises(TypeError, match="relative"):
        BandPower(100.0, 64, BANDS, relative="yes", bandwidth=8.0)
    with pytest.raises(ValueError, match="no frequency bin"):
        BandPower(100.0, 64, BANDS, bandwidth=8.0, fmin=20.0)
