"""LCMV beamformer (exg_jax.beamformer): MNE-Python parity, JAX properties, bad input.

Oracle: ``mne.beamformer.make_lcmv`` / ``apply_lcmv`` / ``apply_lcmv_epochs`` /
``apply_lcmv_cov`` / ``make_lcmv_resolution_matrix`` (float64) on MNE's own
objects: an MNE sphere forward (biosemi32, 162 discrete sources with normals,
the default 4-shell model), an info with the EEG average-reference projector,
MNE ``Covariance`` objects. Our forward is the same gain, average referenced.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import mne
import numpy as np
import pytest
from _oracle import mne_sphere_forward

import exg_jax as ex
from exg_jax.beamformer import (
    LcmvFilters,
    apply_lcmv,
    apply_lcmv_cov,
    apply_lcmv_epochs,
    make_lcmv,
    make_lcmv_resolution_matrix,
)
from exg_jax.covariance import NoiseCov

# max |ours - MNE| / max |MNE|, float64 (OpenBLAS, 2-core x86): measured
# <= 7.3e-13 (apply, epochs, resolution) for pick_ori None / "normal" /
# "vector" and max-power without weight normalisation; <= 1.7e-12 for
# max-power with it (3.2e-12 for its orientation); <= 3.5e-12 with
# reduce_rank; apply_lcmv_cov <= 3.7e-13.
TOL = 1e-11
REG = 0.05
PICK_ORIS = (None, "normal", "max-power", "vector")
WEIGHT_NORMS = (None, "unit-noise-gain", "nai")
GRID = [
    (pick, wn, depth)
    for pick in PICK_ORIS
    for wn in WEIGHT_NORMS
    for depth in (None, 0.8)
]
# options beyond the grid
EXTRA = {
    # the rotation-invariant normalisation, MNE's default (None and "vector"
    # share one compilation)
    "invariant_none": dict(pick_ori=None, weight_norm="unit-noise-gain-invariant"),
    "invariant_vector": dict(
        pick_ori="vector", weight_norm="unit-noise-gain-invariant", depth=0.8
    ),
    # identity noise covariance (MNE's ad hoc 1 V²) and the diagonal inversion
    # with per-column depth weights
    "single_no_noise_cov": dict(
        pick_ori="vector", weight_norm=None, depth=0.8, inversion="single", noise=False
    ),
    # without normals the max-power sign follows +z, as MNE's Cartesian forward
    "reduce_rank_no_nn": dict(
        pick_ori="max-power", weight_norm="nai", reduce_rank=True, no_nn=True
    ),
    "fixed_fwd": dict(pick_ori=None, weight_norm=None, depth=0.8, fixed=True),
}


def _rel(got, ref):
    got = np.asarray(got)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _ours(fwd, n_chan, *, fixed=False, no_nn=False, reference="average"):
    """Our ForwardOperator with the gain of an MNE forward (average referenced)."""
    gain = np.array(fwd["sol"]["data"], dtype=np.float64)
    if reference == "average":
        gain = gain - gain.mean(axis=0, keepdims=True)
    if fixed:
        nn = np.asarray(fwd["source_nn"])
        orientation = "fixed"
    else:
        assert not fwd["surf_ori"]
        nn = np.concatenate([s["nn"][s["vertno"]] for s in fwd["src"]])
        orientation = "free"
    nn = nn / np.linalg.norm(nn, axis=1, keepdims=True)
    assert gain.shape[0] == n_chan
    return ex.ForwardOperator(
        gain=jnp.asarray(gain),
        src_pos=jnp.asarray(fwd["source_rr"]),
        src_nn=None if no_nn else jnp.asarray(nn),
        orientation=orientation,
        reference=reference,
    )


@pytest.fixture(scope="module")
def problem():
    info, _, fwd = mne_sphere_forward("biosemi32", 2)
    n = len(info.ch_names)
    n_src = fwd["nsource"]
    fwd_surf = mne.convert_forward_solution(fwd, surf_ori=True)
    # MNE stores a converted fixed gain in float32: rebuild it in float64
    fwd_fixed = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True)
    fwd_fixed["sol"]["data"] = np.einsum(
        "cnk,nk->cn",
        fwd["sol"]["data"].reshape(n, n_src, 3),
        fwd_fixed["source_nn"],
    )
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((n, n))
    n_t = 2000
    noise = mix @ rng.standard_normal((n, n_t)) * 1e-6
    noise_cov = noise @ noise.T / n_t
    amp = np.zeros((3 * n_src, n_t))
    for k in (10, 80, 140):  # three active dipoles, 30 nA·m
        amp[3 * k : 3 * k + 3] = rng.standard_normal((3, n_t)) * 3e-8
    sig = fwd["sol"]["data"] @ amp + mix @ rng.standard_normal((n, n_t)) * 1e-6
    data_cov = sig @ sig.T / n_t
    data = rng.standard_normal((n, 12)) * 1e-6
    epochs = rng.standard_normal((3, n, 12)) * 1e-6
    ev = mne.EvokedArray(data, info, nave=1)
    ev.set_eeg_reference(projection=True)
    ep = mne.EpochsArray(epochs, info, verbose=False)
    ep.set_eeg_reference(projection=True)
    projs = ev.info["projs"]
    return dict(
        info=ev.info,
        ev=ev,
        ep=ep,
        fwd=fwd,
        fwd_surf=fwd_surf,
        fwd_fixed=fwd_fixed,
        F=_ours(fwd, n),
        F_no_nn=_ours(fwd, n, no_nn=True),
        F_fixed=_ours(fwd_fixed, n, fixed=True),
        # the "true sources" of MNE's resolution matrix: potentials against
        # infinity (MNE's pick_ori=None matrix depends on the reference)
        F_inf=_ours(fwd, n, reference=None),
        F_fixed_inf=_ours(fwd_fixed, n, fixed=True, reference=None),
        data=data,
        epochs=epochs,
        data_cov=data_cov,
        noise_cov=noise_cov,
        mne_data_cov=mne.Covariance(data_cov, info.ch_names, [], projs, n_t),
        mne_noise_cov=mne.Covariance(noise_cov, info.ch_names, [], projs, n_t),
    )


class _Cache:
    """Filters (MNE's and ours) per configuration, built once per module."""

    def __init__(self, problem):
        self.p = problem
        self.store = {}

    def get(self, pick_ori=None, weight_norm=None, depth=None, **kw):
        key = (pick_ori, weight_norm, depth, tuple(sorted(kw.items())))
        if key not in self.store:
            self.store[key] = self._build(pick_ori, weight_norm, depth, **kw)
        return self.store[key]

    def _build(
        self,
        pick_ori,
        weight_norm,
        depth,
        *,
        noise=True,
        inversion="matrix",
        reduce_rank=False,
        fixed=False,
        no_nn=False,
    ):
        p = self.p
        if fixed:
            mfwd, ofwd = p["fwd_fixed"], p["F_fixed"]
        elif pick_ori == "normal" or (pick_ori == "max-power" and not no_nn):
            # MNE needs a surface-oriented forward for "normal" and aligns the
            # max-power sign with its normals; ours is the Cartesian gain
            mfwd, ofwd = p["fwd_surf"], p["F"]
        else:
            mfwd, ofwd = p["fwd"], (p["F_no_nn"] if no_nn else p["F"])
        kw = dict(
            pick_ori=pick_ori,
            weight_norm=weight_norm,
            depth=depth,
            inversion=inversion,
            reduce_rank=reduce_rank,
        )
        f_mne = mne.beamformer.make_lcmv(
            p["info"],
            mfwd,
            p["mne_data_cov"],
            reg=REG,
            noise_cov=p["mne_noise_cov"] if noise else None,
            **kw,
        )
        f_ours = make_lcmv(
            ofwd,
            NoiseCov(jnp.asarray(p["data_cov"])),
            NoiseCov(jnp.asarray(p["noise_cov"])) if noise else None,
            reg=REG,
            **kw,
        )
        return f_mne, f_ours


@pytest.fixture(scope="module")
def cache(problem):
    return _Cache(problem)


def _mne_resolution(problem, f_mne, fwd_ori):
    mfwd = problem["fwd_fixed"] if fwd_ori == "normal" else problem["fwd"]
    r = mne.beamformer.make_lcmv_resolution_matrix(f_mne, mfwd, problem["info"])
    return r.reshape(-1, r.shape[-1])


def _check_all(problem, f_mne, f_ours, fwd_ori=("normal", "free")):
    """Relative errors of apply / epochs / resolution (asserted by the callers)."""
    ref = mne.beamformer.apply_lcmv(problem["ev"], f_mne).data
    got = apply_lcmv(problem["data"], f_ours).data
    out = dict(apply=_rel(got, ref))
    ref_e = np.stack(
        [s.data for s in mne.beamformer.apply_lcmv_epochs(problem["ep"], f_mne)]
    )
    got_e = apply_lcmv_epochs(problem["epochs"], f_ours, batch_size=2).data
    out["epochs"] = _rel(got_e, ref_e)
    fwds = dict(normal=problem["F_fixed_inf"], free=problem["F_inf"])
    for ori in fwd_ori:
        ref_r = _mne_resolution(problem, f_mne, ori)
        got_r = make_lcmv_resolution_matrix(f_ours, fwds[ori], fwd_ori=ori)
        out[f"resolution_{ori}"] = _rel(got_r, ref_r)
    return out


# --------------------------------------------------------------------------- #
# MNE parity
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("pick_ori", "weight_norm", "depth"), GRID)
def test_matches_mne(problem, cache, pick_ori, weight_norm, depth):
    f_mne, f_ours = cache.get(pick_ori, weight_norm, depth)
    errs = _check_all(problem, f_mne, f_ours)
    assert max(errs.values()) <= TOL, errs
    if pick_ori == "max-power":
        # MNE's orientation is in the surface frame: rotate ours into it
        frames = problem["fwd_surf"]["source_nn"].reshape(-1, 3, 3)
        ori = np.einsum("nij,nj->ni", frames, np.asarray(f_ours.max_power_ori))
        assert _rel(ori, f_mne["max_power_ori"]) <= TOL


@pytest.mark.parametrize("case", sorted(EXTRA))
def test_matches_mne_options(problem, cache, case):
    kw = dict(EXTRA[case])
    f_mne, f_ours = cache.get(**kw)
    ori = ("normal",) if kw.get("fixed") else ("normal", "free")
    errs = _check_all(problem, f_mne, f_ours, ori)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize(
    "kw",
    [
        dict(pick_ori=None, weight_norm="unit-noise-gain"),
        dict(pick_ori="max-power", weight_norm=None),
    ],
)
def test_apply_lcmv_cov_matches_mne(problem, cache, kw):
    f_mne, f_ours = cache.get(**kw)
    ref = mne.beamformer.apply_lcmv_cov(problem["mne_data_cov"], f_mne).data
    got = apply_lcmv_cov(jnp.asarray(problem["data_cov"]), f_ours).data
    assert _rel(got, ref) <= TOL


def test_resolution_reference(problem, cache):
    """Linear filters annihilate constants: R does not depend on the reference."""
    _, f = cache.get("vector", "nai", None)
    a = make_lcmv_resolution_matrix(f, problem["F"], fwd_ori="free")
    b = make_lcmv_resolution_matrix(f, problem["F_inf"], fwd_ori="free")
    assert _rel(a, np.asarray(b)) <= 1e-12
    assert a.shape == (3 * 162, 3 * 162)


def test_imaging_kernel_is_the_seam(problem, cache):
    """The filters' ImagingKernel applied by the generic path gives apply_lcmv."""
    _, f = cache.get(None, "unit-noise-gain", None)
    k = f.imaging_kernel()
    assert isinstance(k, ex.ImagingKernel) and k.method == "LCMV"
    a = ex.apply_imaging_kernel(problem["data"], k)
    b = apply_lcmv(problem["data"], f)
    np.testing.assert_allclose(np.asarray(a.data), np.asarray(b.data), rtol=1e-14)
    assert b.method == "LCMV" and b.pick_ori is None


# --------------------------------------------------------------------------- #
# JAX properties (small synthetic problem in SI units)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def small():
    """8 electrodes, 4 free sources; gain ≈ 10 V/(A·m), covariances ≈ 1e-12 V²."""
    rng = np.random.default_rng(1)
    n, n_src = 8, 4
    gain = rng.standard_normal((n, 3 * n_src)) * 10.0
    gain -= gain.mean(0)
    nn = rng.standard_normal((n_src, 3))
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    mix = rng.standard_normal((n, n))
    noise_cov = mix @ mix.T * 1e-12
    a = rng.standard_normal((3 * n_src, 3 * n_src)) * 3e-8
    data_cov = gain @ (a @ a.T) @ gain.T + 2 * noise_cov
    return dict(
        gain=gain,
        src_pos=rng.standard_normal((n_src, 3)) * 0.05,
        nn=nn,
        data_cov=data_cov,
        noise_cov=noise_cov,
        data=rng.standard_normal((n, 5)) * 1e-6,
        epochs=rng.standard_normal((5, n, 5)) * 1e-6,
    )


def _fwd(s, gain=None, dtype=jnp.float64):
    return ex.ForwardOperator(
        gain=jnp.asarray(s["gain"] if gain is None else gain, dtype),
        src_pos=jnp.asarray(s["src_pos"], dtype),
        src_nn=jnp.asarray(s["nn"], dtype),
        orientation="free",
        reference="average",
    )


def _loss(kw):
    def f(gain, data_cov, noise_cov, s):
        filt = make_lcmv(_fwd(s, gain, gain.dtype), data_cov, noise_cov, **kw)
        out = apply_lcmv(jnp.asarray(s["data"], gain.dtype), filt).data
        return jnp.sum(out * out) / out.size

    return f


LOSS_CASES = [
    dict(pick_ori=None, weight_norm="unit-noise-gain", depth=0.8),
    dict(pick_ori="max-power", weight_norm=None, depth=0.8),
]
_GRADS = {}


def _grad_fn(i, s):
    """jit(grad) of the loss of ``LOSS_CASES[i]`` w.r.t. (gain, data_cov, noise_cov)."""
    if i not in _GRADS:
        loss = _loss(LOSS_CASES[i])
        _GRADS[i] = jax.jit(
            jax.grad(lambda g, c, n: loss(g, c, n, s), argnums=(0, 1, 2))
        )
    return _GRADS[i]


def test_jit_equals_eager(small):
    kw = LOSS_CASES[0]
    fwd = _fwd(small)
    data_cov = jnp.asarray(small["data_cov"])
    noise_cov = jnp.asarray(small["noise_cov"])

    @eqx.filter_jit
    def run(fwd, data_cov, noise_cov, reg, x):
        return apply_lcmv(x, make_lcmv(fwd, data_cov, noise_cov, reg=reg, **kw)).data

    x = jnp.asarray(small["data"])
    for reg in (0.05, 0.1):  # a traced reg: one compilation
        eager = make_lcmv(fwd, data_cov, noise_cov, reg=reg, **kw)
        np.testing.assert_allclose(
            np.asarray(run(fwd, data_cov, noise_cov, jnp.asarray(reg), x)),
            np.asarray(apply_lcmv(x, eager).data),
            rtol=1e-12,
        )


def test_epochs_equal_loop(small):
    f = make_lcmv(_fwd(small), small["data_cov"], small["noise_cov"], pick_ori="vector")
    loop = np.stack([np.asarray(apply_lcmv(e, f).data) for e in small["epochs"]])
    for bs in (None, 2):
        got = apply_lcmv_epochs(small["epochs"], f, batch_size=bs).data
        np.testing.assert_allclose(np.asarray(got), loop, rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", [0, 1], ids=["none_ung", "maxpower_none"])
def test_grad_matches_finite_differences(small, case):
    """d loss / d (gain, data_cov, noise_cov) vs central FD along random directions."""
    loss = _loss(LOSS_CASES[case])
    args = [jnp.asarray(small[k]) for k in ("gain", "data_cov", "noise_cov")]
    grads = _grad_fn(case, small)(*args)
    rng = np.random.default_rng(2)
    for i, g in enumerate(grads):
        assert np.all(np.isfinite(np.asarray(g)))
        v = rng.standard_normal(args[i].shape)
        if i > 0:
            v = v + v.T  # covariances stay symmetric
        v *= float(jnp.max(jnp.abs(args[i]))) / np.max(np.abs(v))
        h = 1e-6  # FD error O(h²): 2e-5 / 2e-7 / 2e-9 at h = 1e-4 / 1e-5 / 1e-6
        plus = [a + h * v if j == i else a for j, a in enumerate(args)]
        minus = [a - h * v if j == i else a for j, a in enumerate(args)]
        fd = (float(loss(*plus, small)) - float(loss(*minus, small))) / (2 * h)
        an = float(jnp.sum(g * v))
        assert abs(an - fd) <= 2e-8 * abs(fd), (i, an, fd)  # measured <= 3.2e-9


@pytest.mark.parametrize("case", [0, 1], ids=["none_ung", "maxpower_none"])
def test_float32_matches_float64(small, case):
    """Values and gradients in float32 vs float64, SI units (gain ≈ 10 V/(A·m), C ≈ 1e-12 V²)."""
    kw = LOSS_CASES[case]
    out = {}
    for dt in (jnp.float32, jnp.float64):
        f = make_lcmv(
            _fwd(small, dtype=dt),
            jnp.asarray(small["data_cov"], dt),
            jnp.asarray(small["noise_cov"], dt),
            **kw,
        )
        assert f.weights.dtype == dt
        out[dt] = np.asarray(apply_lcmv(jnp.asarray(small["data"], dt), f).data)
        assert out[dt].dtype == dt
    rel = np.linalg.norm(out[jnp.float32] - out[jnp.float64]) / np.linalg.norm(
        out[jnp.float64]
    )
    assert rel <= 1e-5  # measured 8.6e-7
    # gradients, float32 vs float64
    g = {}
    for dt in (jnp.float32, jnp.float64):
        args = [jnp.asarray(small[k], dt) for k in ("gain", "data_cov", "noise_cov")]
        g[dt] = [np.asarray(x, np.float64) for x in _grad_fn(case, small)(*args)]
    for g32, g64 in zip(g[jnp.float32], g[jnp.float64], strict=True):
        assert np.all(np.isfinite(g32))
        # measured <= 4.7e-6 (test_float32.py allows 1e-2 for the other stages)
        assert np.linalg.norm(g32 - g64) / np.linalg.norm(g64) <= 1e-4


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def bad(small):
    fwd = _fwd(small)
    f = make_lcmv(fwd, small["data_cov"], small["noise_cov"])
    return dict(fwd=fwd, f=f, C=small["data_cov"], N=small["noise_cov"], s=small)


def test_bad_make_lcmv(bad):
    fwd, C, N = bad["fwd"], bad["C"], bad["N"]
    with pytest.raises(TypeError, match="fwd"):
        make_lcmv(np.zeros((8, 12)), C, N)
    with pytest.raises(TypeError, match="data_cov"):
        make_lcmv(fwd, "cov", N)
    with pytest.raises(TypeError, match="noise_cov"):
        make_lcmv(fwd, C, [[1, 2], "a"])
    with pytest.raises(ValueError, match="data_cov"):
        make_lcmv(fwd, C[:5, :5], N)
    with pytest.raises(ValueError, match="noise_cov"):
        make_lcmv(fwd, C, np.eye(9))
    c_nan = C.copy()
    c_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="data_cov"):
        make_lcmv(fwd, c_nan, N)
    with pytest.raises(ValueError, match="noise_cov"):
        make_lcmv(fwd, C, N * np.inf)
    with pytest.raises(ValueError, match="data_cov.*symmetric"):
        make_lcmv(fwd, C + np.triu(C, 1), N)
    with pytest.raises(ValueError, match="data_cov.*positive semi-definite"):
        make_lcmv(fwd, -C, N)
    with pytest.raises(ValueError, match="data_cov.*all zero"):
        make_lcmv(fwd, np.zeros_like(C), N)
    with pytest.raises(ValueError, match="noise_cov.*rank"):
        v = np.ones((8, 1)) * np.arange(8)[:, None] * 1e-6
        make_lcmv(fwd, C, v @ v.T)
    for reg in (-0.1, np.nan, np.inf):
        with pytest.raises(ValueError, match="reg"):
            make_lcmv(fwd, C, N, reg=reg)
    with pytest.raises(TypeError, match="reg"):
        make_lcmv(fwd, C, N, reg="0.05")
    with pytest.raises(ValueError, match="depth"):
        make_lcmv(fwd, C, N, depth=-1.0)
    with pytest.raises(TypeError, match="depth"):
        make_lcmv(fwd, C, N, depth="0.8")
    with pytest.raises(ValueError, match="pick_ori"):
        make_lcmv(fwd, C, N, pick_ori="tangential")
    with pytest.raises(ValueError, match="weight_norm"):
        make_lcmv(fwd, C, N, weight_norm="unit-gain")
    with pytest.raises(ValueError, match="inversion"):
        make_lcmv(fwd, C, N, inversion="pinv")
    with pytest.raises(TypeError, match="reduce_rank"):
        make_lcmv(fwd, C, N, reduce_rank=1)
    with pytest.raises(ValueError, match="reduce_rank"):
        make_lcmv(fwd, C, N, reduce_rank=True, inversion="single")
    with pytest.raises(ValueError, match="vector.*single"):
        make_lcmv(
            fwd,
            C,
            N,
            pick_ori="vector",
            inversion="single",
            weight_norm="unit-noise-gain-invariant",
        )
    with pytest.raises(ValueError, match="rank"):
        make_lcmv(fwd, C, N, rank=8)
    with pytest.raises(TypeError, match="rank"):
        make_lcmv(fwd, C, N, rank=3.0)
    no_nn = ex.ForwardOperator(
        gain=fwd.gain,
        src_pos=fwd.src_pos,
        src_nn=None,
        orientation="free",
        reference="average",
    )
    with pytest.raises(ValueError, match="pick_ori='normal'.*src_nn"):
        make_lcmv(no_nn, C, N, pick_ori="normal")
    fixed = ex.ForwardOperator(
        gain=fwd.gain[:, 2::3],
        src_pos=fwd.src_pos,
        src_nn=fwd.src_nn,
        orientation="fixed",
        reference="average",
    )
    with pytest.raises(ValueError, match="pick_ori.*free-orientation"):
        make_lcmv(fixed, C, N, pick_ori="max-power")
    with pytest.raises(TypeError, match="noise_cov.*NoiseCov"):
        make_lcmv(fwd, C, mne.Covariance(N, [str(i) for i in range(8)], [], [], 10))


def test_singular_source_needs_reduce_rank(bad):
    s = bad["s"]
    gain = s["gain"].copy()
    gain[:, 2] = gain[:, 0] + gain[:, 1]  # source 0: rank-2 lead field
    fwd = _fwd(s, gain)
    with pytest.raises(ValueError, match="fwd.gain.*singular.*reduce_rank"):
        make_lcmv(fwd, bad["C"], bad["N"])
    f = make_lcmv(fwd, bad["C"], bad["N"], reduce_rank=True)
    assert np.all(np.isfinite(np.asarray(f.weights)))


def test_bad_apply(bad):
    f, s = bad["f"], bad["s"]
    with pytest.raises(TypeError, match="filters"):
        apply_lcmv(s["data"], "filters")
    with pytest.raises(TypeError, match="filters"):
        apply_lcmv(s["data"], f.imaging_kernel())
    with pytest.raises(ValueError, match="data.*channels"):
        apply_lcmv(s["data"][:5], f)
    with pytest.raises(ValueError, match="data.*shape"):
        apply_lcmv(s["epochs"], f)
    bad_data = s["data"].copy()
    bad_data[0, 0] = np.nan
    with pytest.raises(ValueError, match="data"):
        apply_lcmv(bad_data, f)
    with pytest.raises(TypeError, match="data"):
        apply_lcmv("data", f)
    with pytest.raises(ValueError, match="epochs.*shape"):
        apply_lcmv_epochs(s["data"], f)
    with pytest.raises(ValueError, match="epochs.*channels"):
        apply_lcmv_epochs(s["epochs"][:, :5], f)
    with pytest.raises(ValueError, match="batch_size"):
        apply_lcmv_epochs(s["epochs"], f, batch_size=0)
    with pytest.raises(ValueError, match="data_cov"):
        apply_lcmv_cov(bad["C"][:5, :5], f)
    with pytest.raises(TypeError, match="fwd"):
        make_lcmv_resolution_matrix(f, "fwd")
    with pytest.raises(ValueError, match="fwd_ori"):
        make_lcmv_resolution_matrix(f, bad["fwd"], fwd_ori="tangential")
    small_fwd = ex.ForwardOperator(
        gain=bad["fwd"].gain[:, :6],
        src_pos=bad["fwd"].src_pos[:2],
        src_nn=bad["fwd"].src_nn[:2],
        orientation="free",
        reference="average",
    )
    with pytest.raises(ValueError, match="fwd has 2 sources"):
        make_lcmv_resolution_matrix(f, small_fwd)
    with pytest.raises(ValueError, match="n_orient"):
        LcmvFilters(f.weights, f.src_pos, None, n_orient=2)
