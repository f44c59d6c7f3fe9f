"""MNE-Python objects in and out (exg_jax.interop): parity with MNE's own results.

One small problem built by MNE (biosemi32, ico-2 discrete source space with
normals, MNE's sphere forward), with the EEG average-reference projector, a
bad channel in the data and the data's channels in another order than the
forward's. Every path — Forward / Covariance / Evoked / Epochs / Raw /
InverseOperator in, ``to_mne`` out — is compared with MNE-Python's own result
with the default arguments (float64).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import mne
import numpy as np
import pytest
from _oracle import mne_sphere_forward

import exg_jax as ex
from exg_jax.interop import (
    cov_from_mne,
    data_from_mne,
    forward_from_mne,
    from_mne,
    inverse_from_mne,
    montage_from_mne,
    to_mne,
)

LAMBDA2 = 1.0 / 9.0
METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
# max |ours - MNE| / max |MNE| (float64). Measured on this machine (OpenBLAS, 2
# cores); the tolerances are ~10x the worst value measured:
# - our own operator from MNE's Forward + Covariance (default arguments):
#   MNE 1.2e-13, dSPM 1.7e-13, sLORETA 1.5e-13, eLORETA 4.4e-13 (epochs, raw:
#   2.2e-13): float64 rounding of an SVD computed another way;
# - MNE's InverseOperator applied by exg_jax: <= 1.3e-14 for every method,
#   fixed / loose / free and pick_ori (eLORETA 4e-15 – 1.3e-14, others <= 1e-15).
TOL = 5e-12
TOL_INV = 1e-13


def _rel(got, ref):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def P():
    mne.set_log_level("ERROR")
    info, _, fwd = mne_sphere_forward("biosemi32", 2)
    n = len(info.ch_names)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((n, n)) @ rng.standard_normal((n, 400)) * 1e-6
    cov = mne.Covariance(noise @ noise.T / 400, info.ch_names, [], [], 400)
    info = info.copy()
    info["bads"] = [info.ch_names[5]]  # "FC5": in the forward, bad in the data
    evoked = mne.EvokedArray(
        rng.standard_normal((n, 12)) * 1e-6, info, tmin=-0.004, nave=4
    )
    evoked.set_eeg_reference(projection=True)
    # the data's channels in another order than the forward's
    shuffled = list(rng.permutation(info.ch_names))
    ev_s = evoked.copy().reorder_channels(shuffled)
    epochs = mne.EpochsArray(
        rng.standard_normal((3, n, 12)) * 1e-6, info, tmin=-0.002, verbose=False
    )
    epochs.set_eeg_reference(projection=True)
    epochs.reorder_channels(shuffled)
    raw = mne.io.RawArray(rng.standard_normal((n, 200)) * 1e-6, info, verbose=False)
    raw.set_eeg_reference(projection=True)
    # MNE's pipeline, default arguments (loose="auto" = 1 for a discrete space)
    inv_m = mne.minimum_norm.make_inverse_operator(evoked.info, fwd, cov)
    # ours, default arguments
    fwd_x = forward_from_mne(fwd, info=evoked.info)
    inv_x = ex.make_inverse_operator(fwd_x, cov_from_mne(cov, fwd_x))
    return dict(
        info=info, fwd=fwd, cov=cov, evoked=evoked, ev_s=ev_s, epochs=epochs,
        raw=raw, inv_m=inv_m, fwd_x=fwd_x, inv_x=inv_x,
    )  # fmt: skip


# --------------------------------------------------------------------------- #
# MNE in: Forward + Covariance + Evoked, default arguments
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_evoked_default_path_matches_mne(P, method):
    """forward_from_mne → make_inverse_operator → apply_inverse(evoked) vs MNE.

    Shuffled channels, a bad channel, nave = 4, tmin < 0, default arguments on
    both sides. Measured: MNE 1.2e-13, dSPM 1.7e-13, sLORETA 1.5e-13, eLORETA
    4.4e-13.
    """
    ref = mne.minimum_norm.apply_inverse(P["ev_s"], P["inv_m"], LAMBDA2, method)
    stc = ex.apply_inverse(P["ev_s"], P["inv_x"], LAMBDA2, method)
    assert _rel(stc.data, ref.data) <= TOL
    np.testing.assert_allclose(stc.times, ref.times, rtol=0, atol=1e-15)
    assert stc.tmin == ref.tmin and stc.tstep == ref.tstep
    back = to_mne(stc)
    assert type(back) is type(ref)
    assert stc.vertices == ref.vertices and stc.vertices == back.vertices
    assert back.subject == ref.subject


def test_forward_cov_and_channels(P):
    fwd, fwd_x, inv_x = P["fwd"], P["fwd_x"], P["inv_x"]
    bad = P["info"]["bads"][0]
    assert fwd_x.reference == "average_proj" and fwd_x.gain.dtype == jnp.float64
    assert bad not in fwd_x.ch_names and len(fwd_x.ch_names) == 31
    assert inv_x.ch_names == fwd_x.ch_names == tuple(P["inv_m"]["noise_cov"].ch_names)
    assert inv_x.rank == 30  # average-reference projector: n - 1
    assert inv_x.vertices == [s["vertno"] for s in fwd["src"]]
    rows = [fwd["sol"]["row_names"].index(c) for c in fwd_x.ch_names]
    np.testing.assert_array_equal(fwd_x.gain, fwd["sol"]["data"][rows])
    # mne.Covariance straight into make_inverse_operator: the same operator
    inv2 = ex.make_inverse_operator(fwd_x, P["cov"])
    np.testing.assert_array_equal(inv2.whitener, inv_x.whitener)
    # the covariance: order matched, bads dropped, nfree kept
    cov = P["cov"].copy()
    cov["bads"] = [bad]
    nc = cov_from_mne(cov, list(reversed(P["info"].ch_names)))
    assert nc.ch_names[0] == P["info"].ch_names[-1] and bad not in nc.ch_names
    assert int(nc.nfree) == 400 and nc.data.shape == (31, 31)
    i, j = (P["cov"].ch_names.index(c) for c in nc.ch_names[:2])
    assert nc.data[0, 1] == P["cov"].data[i, j]
    # a forward with every channel and a covariance with a bad one: the operator
    # leaves it out (as MNE), and reorders the covariance to the forward's order
    fwd_all = forward_from_mne(fwd)
    assert fwd_all.n_chan == 32
    inv3 = ex.make_inverse_operator(fwd_all, nc)
    assert inv3.ch_names == inv_x.ch_names
    a = ex.apply_inverse(P["ev_s"], inv3, LAMBDA2, "dSPM").data
    b = mne.minimum_norm.apply_inverse(P["ev_s"], P["inv_m"], LAMBDA2, "dSPM").data
    assert _rel(a, b) <= TOL  # measured 1.7e-13


def test_old_default_reference_average_differs(P):
    """reference="average" (the old default) moves the depth prior: 5.5e-3 from MNE."""
    fwd_a = forward_from_mne(P["fwd"], info=P["evoked"].info, reference="average")
    inv_a = ex.make_inverse_operator(fwd_a, P["cov"])
    ref = mne.minimum_norm.apply_inverse(P["ev_s"], P["inv_m"], LAMBDA2, "dSPM").data
    err = _rel(ex.apply_inverse(P["ev_s"], inv_a, LAMBDA2, "dSPM").data, ref)
    assert 1e-5 < err < 1e-1


def test_nave_scaling(P):
    """nave scales the noise covariance as MNE's prepare_inverse_operator."""
    ev = P["evoked"]
    data = ev.data[[ev.ch_names.index(c) for c in P["inv_x"].ch_names]]
    for method, factor in (("dSPM", 2.0), ("MNE", 1.0)):
        one = ex.apply_inverse(data, P["inv_x"], LAMBDA2, method).data
        four = ex.apply_inverse(data, P["inv_x"], LAMBDA2, method, nave=4).data
        ev = ex.apply_inverse(P["evoked"], P["inv_x"], LAMBDA2, method).data
        np.testing.assert_allclose(four, factor * np.asarray(one), rtol=1e-13)
        np.testing.assert_allclose(ev, four, rtol=0, atol=0)
    ev1 = P["evoked"].copy()
    ev1.nave = 1
    ref = mne.minimum_norm.apply_inverse(ev1, P["inv_m"], LAMBDA2, "dSPM").data
    got = ex.apply_inverse(P["evoked"], P["inv_x"], LAMBDA2, "dSPM", nave=1).data
    assert _rel(got, ref) <= TOL  # measured 1.7e-13
    with pytest.raises(ValueError, match="nave"):
        ex.apply_inverse(data, P["inv_x"], LAMBDA2, "dSPM", nave=0)


def test_estimate_snr_of_evoked_matches_mne(P):
    """estimate_snr(evoked, inv): channels by name, evoked.nave (4) used.
    Measured: snr 3.5e-14 relative, snr_est identical (8 of 12 samples > 0)."""
    snr_ref, est_ref = mne.minimum_norm.estimate_snr(P["ev_s"], P["inv_m"])
    snr, est, status = ex.estimate_snr(P["ev_s"], P["inv_x"])
    assert bool(status.converged) and np.count_nonzero(est_ref) == 8
    np.testing.assert_allclose(snr, snr_ref, rtol=1e-13)
    np.testing.assert_allclose(est, est_ref, rtol=1e-13, atol=0)
    # the same as the array with nave given; nave= overrides evoked.nave
    arr = P["ev_s"].get_data(picks=list(P["inv_x"].ch_names))
    snr_a, _, _ = ex.estimate_snr(arr, P["inv_x"], 4)
    np.testing.assert_array_equal(snr_a, snr)
    snr_1, _, _ = ex.estimate_snr(P["ev_s"], P["inv_x"], 1)
    np.testing.assert_allclose(np.asarray(snr), 2 * np.asarray(snr_1), rtol=1e-12)
    # a float32 operator (the users' default dtype): the Evoked's float64 data
    # follow it; measured 1.3e-7 (snr) and 3.9e-8 (snr_est, max 0.37) from float64
    inv32 = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, P["inv_x"]
    )
    snr32, est32, st32 = ex.estimate_snr(P["ev_s"], inv32)
    assert snr32.dtype == est32.dtype == jnp.float32 and bool(st32.converged)
    np.testing.assert_allclose(snr32, snr, rtol=1e-5)
    np.testing.assert_allclose(est32, est, rtol=0, atol=1e-5 * float(np.max(est)))


# --------------------------------------------------------------------------- #
# Epochs and Raw
# --------------------------------------------------------------------------- #
def test_epochs_match_mne(P):
    """Measured 2.2e-13 (streamed path); tmin, tstep and one MNE stc per epoch."""
    ref = mne.minimum_norm.apply_inverse_epochs(
        P["epochs"], P["inv_m"], LAMBDA2, "dSPM"
    )
    stc = ex.apply_inverse_epochs(P["epochs"], P["inv_x"], LAMBDA2, "dSPM")
    assert isinstance(stc.data, np.ndarray)  # the streamed (host) path
    assert _rel(stc.data, np.stack([s.data for s in ref])) <= TOL
    back = to_mne(stc)
    assert isinstance(back, list) and len(back) == 3
    for k, (b, r) in enumerate(zip(back, ref, strict=True)):
        assert type(b) is type(r)
        np.testing.assert_array_equal(b.times, r.times)
        np.testing.assert_array_equal(b.data, stc.data[k])
    # the same epochs as an array: tmin and sfreq give MNE's times
    arr = P["epochs"].get_data(picks=list(P["inv_x"].ch_names))
    sfreq = P["epochs"].info["sfreq"]
    stc_a = ex.apply_inverse_epochs(
        arr, P["inv_x"], LAMBDA2, "dSPM", tmin=P["epochs"].tmin, sfreq=sfreq
    )
    np.testing.assert_allclose(stc_a.times, ref[0].times, rtol=0, atol=1e-12)
    assert _rel(stc_a.data, stc.data) <= TOL
    with pytest.raises(ValueError, match="tmin and sfreq are for array epochs"):
        ex.apply_inverse_epochs(P["epochs"], P["inv_x"], LAMBDA2, sfreq=sfreq)


def test_raw_start_stop_matches_mne(P):
    """Measured 2.2e-13 (start=30, stop=170, buffer_size=50)."""
    kw = dict(start=30, stop=170, buffer_size=50)
    ref = mne.minimum_norm.apply_inverse_raw(
        P["raw"], P["inv_m"], LAMBDA2, "sLORETA", **kw
    )
    stc = ex.apply_inverse_raw(P["raw"], P["inv_x"], LAMBDA2, "sLORETA", **kw)
    assert _rel(stc.data, ref.data) <= TOL
    assert stc.tmin == ref.tmin and stc.tstep == ref.tstep
    np.testing.assert_array_equal(to_mne(stc).times, ref.times)
    # the same recording as an array: tmin (time of sample 0) and sfreq give
    # MNE's times for the start / stop window
    raw = P["raw"]
    arr = raw.get_data(picks=list(P["inv_x"].ch_names))
    stc_a = ex.apply_inverse_raw(
        arr, P["inv_x"], LAMBDA2, "sLORETA", tmin=raw.first_time,
        sfreq=raw.info["sfreq"], **kw,
    )  # fmt: skip
    np.testing.assert_allclose(stc_a.times, ref.times, rtol=0, atol=1e-12)
    assert _rel(stc_a.data, ref.data) <= TOL
    with pytest.raises(ValueError, match="tmin and sfreq are for array raw"):
        ex.apply_inverse_raw(raw, P["inv_x"], LAMBDA2, tmin=0.0)
    with pytest.raises(ValueError, match="tmin and sfreq are for array data"):
        ex.apply_inverse(P["ev_s"], P["inv_x"], LAMBDA2, tmin=0.0)


# --------------------------------------------------------------------------- #
# An MNE InverseOperator through exg_jax
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def mne_ops(P):
    fwd_surf = mne.convert_forward_solution(P["fwd"], surf_ori=True)
    info = P["evoked"].info
    return {
        "free": P["inv_m"],
        "loose0.2": mne.minimum_norm.make_inverse_operator(info, fwd_surf, P["cov"], loose=0.2),
        "fixed": mne.minimum_norm.make_inverse_operator(info, fwd_surf, P["cov"], fixed=True),
    }  # fmt: skip


INV_GRID = [("free", m, None) for m in METHODS] + [
    ("loose0.2", "dSPM", "normal"),
    ("loose0.2", "sLORETA", "vector"),
    ("loose0.2", "eLORETA", None),
    ("fixed", "dSPM", None),
]


@pytest.mark.parametrize(("case", "method", "pick_ori"), INV_GRID)
def test_mne_inverse_operator_through_exg_jax(P, mne_ops, case, method, pick_ori):
    """inverse_from_mne(inv): MNE's own operator applied by exg_jax.

    Measured: 4.5e-16 – 9.5e-16 except eLORETA (free 7.7e-15, loose 4.3e-15);
    the full grid (4 methods x fixed / loose / free x pick_ori) measured
    <= 1.3e-14 (free eLORETA, vector).
    """
    inv_m = mne_ops[case]
    inv = inverse_from_mne(inv_m)
    ref = mne.minimum_norm.apply_inverse(
        P["ev_s"], inv_m, LAMBDA2, method, pick_ori=pick_ori
    )
    stc = ex.apply_inverse(P["ev_s"], inv, LAMBDA2, method, pick_ori=pick_ori)
    assert _rel(stc.data, ref.data) <= TOL_INV
    back = to_mne(stc)
    assert type(back) is type(ref)
    np.testing.assert_array_equal(back.times, ref.times)


def test_inverse_from_mne_fields(P, mne_ops):
    inv = inverse_from_mne(P["inv_m"])
    ours = P["inv_x"]
    assert inv.rank == ours.rank == 30 and inv.n_orient == 3
    np.testing.assert_allclose(inv.sing, ours.sing, rtol=1e-12)
    np.testing.assert_allclose(inv.source_std, ours.source_std, rtol=1e-12)
    np.testing.assert_allclose(inv.depth_prior, ours.depth_prior, rtol=1e-12)
    # the whitener annihilates constants (the average-reference projector)
    assert (
        np.abs(np.asarray(inv.whitener).sum(1)).max()
        < 1e-6 * np.abs(inv.whitener).max()
    )
    fixed = inverse_from_mne(mne_ops["fixed"])
    assert fixed.n_orient == 1 and fixed.orient_frame is None
    assert from_mne(P["inv_m"]).rank == 30
    with pytest.raises(TypeError, match="InverseOperator"):
        inverse_from_mne(ours)


# --------------------------------------------------------------------------- #
# MNE out
# --------------------------------------------------------------------------- #
def test_to_mne_round_trip(P):
    inv = P["inv_x"]
    stc = ex.apply_inverse(P["ev_s"], inv, LAMBDA2, "sLORETA", pick_ori="vector")
    v = to_mne(stc)
    assert isinstance(v, mne.VolVectorSourceEstimate)
    np.testing.assert_array_equal(v.data, np.asarray(stc.data))
    np.testing.assert_array_equal(v.times, stc.times)
    assert stc.vertices == v.vertices
    # MNE's own functions accept it
    mag = v.magnitude()
    norm = ex.apply_inverse(P["ev_s"], inv, LAMBDA2, "sLORETA")
    np.testing.assert_allclose(mag.data, np.asarray(norm.data), rtol=1e-12)
    cropped = mag.copy().crop(0.0, 0.004)
    assert cropped.data.shape[1] == 5 and abs(cropped.tmin) < 1e-12
    vert, t = mag.get_peak()
    assert vert in stc.vertices[0]
    # vertices, subject, src from an MNE source space
    src = P["fwd"]["src"]
    s2 = to_mne(norm, src=src, subject="sphere")
    assert s2.subject == "sphere" and np.array_equal(s2.vertices[0], src[0]["vertno"])
    # a sphere (non-MNE) source space: vertices 0 … n_src - 1 of a volume
    bare = ex.SourceEstimate(np.ones((4, 3)), jnp.zeros((4, 3)), method="x", tstep=0.5)
    b = to_mne(bare)
    assert isinstance(b, mne.VolSourceEstimate)
    np.testing.assert_array_equal(b.vertices[0], np.arange(4))
    np.testing.assert_array_equal(b.times, [0.0, 0.5, 1.0])
    small = src.copy()
    small[0]["vertno"] = small[0]["vertno"][:2]
    with pytest.raises(ValueError, match="sources"):
        to_mne(norm, src=small)
    with pytest.raises(TypeError, match="SourceEstimate"):
        to_mne(v)


def test_metadata_is_static_and_survives_jit(P):
    inv = P["inv_x"]
    ev = P["evoked"]
    data = jnp.asarray(ev.data[[ev.ch_names.index(c) for c in inv.ch_names]])
    f = jax.jit(lambda d: ex.apply_inverse(d, inv, LAMBDA2, "MNE"))
    stc = f(data)
    assert stc.vertices == inv.vertices and stc.src_kind == "discrete"
    assert hash(inv.vertices) == hash(ex.forward_from_mne(P["fwd"]).vertices)


# --------------------------------------------------------------------------- #
# Montage, data, dispatch, bad input
# --------------------------------------------------------------------------- #
def test_montage_data_and_dispatch(P):
    names, pos = montage_from_mne(P["info"])
    assert len(names) == 31 and P["info"]["bads"][0] not in names
    np.testing.assert_array_equal(pos[0], P["info"]["chs"][0]["loc"][:3])
    mont = mne.channels.make_standard_montage("biosemi32")
    n2, p2 = from_mne(mont)
    assert n2 == mont.ch_names
    np.testing.assert_allclose(p2, [c["loc"][:3] for c in P["info"]["chs"]], atol=1e-12)
    sd = data_from_mne(P["ev_s"], P["fwd_x"])
    assert sd.ch_names == P["fwd_x"].ch_names and sd.nave == 4 and sd.tmin == -0.004
    np.testing.assert_array_equal(
        sd.data[0], P["evoked"].get_data(picks=[sd.ch_names[0]])[0]
    )
    assert isinstance(from_mne(P["fwd"]), ex.ForwardOperator)
    assert isinstance(from_mne(P["cov"]), ex.NoiseCov)
    with pytest.raises(
        TypeError, match=r"from_mne cannot convert a mne\..*Annotations"
    ):
        from_mne(mne.Annotations([], [], []))


def test_bad_input(P):
    fwd_all = forward_from_mne(P["fwd"])  # keeps the channel that is bad in the data
    inv_all = ex.make_inverse_operator(fwd_all, P["cov"])
    with pytest.raises(ValueError, match="marked bad"):
        ex.apply_inverse(P["ev_s"], inv_all, LAMBDA2)
    dropped = P["ev_s"].copy().drop_channels(["Fp1"])
    with pytest.raises(ValueError, match=r"not in the data: \['Fp1'\]"):
        ex.apply_inverse(dropped, P["inv_x"], LAMBDA2)
    # an operator without channel names cannot take MNE data objects
    bare = ex.InverseOperator(**{
        f: getattr(P["inv_x"], f) for f in (
            "whitener", "eigen_fields", "sing", "eigen_leads", "source_std",
            "orient_prior", "depth_prior", "noise_cov", "src_pos", "src_nn",
            "n_orient", "source_ori", "rank", "orient_frame",
        )
    })  # fmt: skip
    with pytest.raises(
        TypeError, match=r"data is an mne\.EvokedArray.*no channel names"
    ):
        ex.apply_inverse(P["ev_s"], bare, LAMBDA2)
    with pytest.raises(TypeError, match=r"epochs is an mne\.EpochsArray.*get_data"):
        ex.apply_inverse_epochs(P["epochs"], bare, LAMBDA2)
    with pytest.raises(
        TypeError, match=r"data is an mne\.EpochsArray.*apply_inverse_epochs"
    ):
        ex.apply_inverse(P["epochs"], P["inv_x"], LAMBDA2)
    with pytest.raises(ValueError, match="start and stop"):
        ex.apply_inverse_raw(P["raw"], P["inv_x"], start=150, stop=100)
    with pytest.raises(TypeError, match="fwd must be an mne.Forward"):
        forward_from_mne(P["cov"])
    with pytest.raises(ValueError, match="reference"):
        forward_from_mne(P["fwd"], reference="Cz")
    with pytest.raises(TypeError, match="cov must be an mne.Covariance"):
        cov_from_mne(np.eye(3))
    with pytest.raises(ValueError, match="ch_names has 2 names"):
        ex.ForwardOperator(
            P["fwd_x"].gain,
            P["fwd_x"].src_pos,
            P["fwd_x"].src_nn,
            "free",
            None,
            ch_names=["a", "b"],
        )


# --------------------------------------------------------------------------- #
# float32: the MNE gain's dtype is kept
# --------------------------------------------------------------------------- #
def test_float32_forward_kept(P):
    fwd32 = P["fwd"].copy()
    fwd32["sol"]["data"] = fwd32["sol"]["data"].astype(np.float32)
    f32 = forward_from_mne(fwd32, info=P["evoked"].info)
    assert f32.gain.dtype == jnp.float32 and f32.src_pos.dtype == jnp.float32
    assert forward_from_mne(fwd32, dtype=np.float64).gain.dtype == jnp.float64
    inv32 = ex.make_inverse_operator(f32, P["cov"])
    assert inv32.whitener.dtype == jnp.float32
    got = ex.apply_inverse(P["ev_s"], inv32, LAMBDA2, "dSPM")
    assert got.data.dtype == jnp.float32
    ref = ex.apply_inverse(P["ev_s"], P["inv_x"], LAMBDA2, "dSPM").data
    assert _rel(got.data, ref) <= 3e-5  # measured 3.3e-6
