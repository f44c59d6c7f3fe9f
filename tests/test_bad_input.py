"""Bad input ends in a clear error naming the argument (issue 9, section 3).

Classes covered here (the sphere / forward / montage / CLI classes live in
their own file): 3.2 covariance, 3.4 checks that survive ``jit`` / ``vmap``
(λ², ``nave``, eLORETA convergence), 3.5 degenerate sizes, 3.7 argument types,
3.8 MNE-Python objects passed where arrays are expected, and non-mutation of
NumPy inputs. Every case asserts the exception type and that the message names
the argument.

Under tracing the error comes from ``eqx.error_if``; its Python type depends
on the transform and on JAX's dispatch path (``EquinoxRuntimeError`` under
``eqx.filter_jit``, ``JaxRuntimeError`` — or ``ValueError`` once the
executable is cached — under ``jax.jit``), so those cases accept ``TRACED``
and match a phrase only the traced check prints.
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import mne  # test extra (the MNE-object checks need it; never skipped)
import numpy as np
import pytest

import exg_jax as ex
from exg_jax.covariance import NoiseCov
from exg_jax.eloreta import eLORETA, eloreta_weights
from exg_jax.forward import ForwardOperator
from exg_jax.resolution import METRICS

LAM = 1.0 / 9.0
N_CHAN = 8
TRACED = (RuntimeError, ValueError)  # see the module docstring
TRACED_LAMBDA2 = "traced lambda2"
NOT_CONVERGED = r"did not converge.*max_iter=2.*throw=False"
BAD_ELORETA = eLORETA(eps=1e-12, max_iter=2)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda x: (
            x.astype(dtype)
            if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)
            else x
        ),
        tree,
    )


@pytest.fixture(scope="module")
def P():
    """8 electrodes, 42 fixed sources (ico-1), a synthetic average-referenced gain.

    No head model: the checks under test do not depend on the physics, and a
    fixed-orientation operator keeps the compilations cheap.
    """
    rng = np.random.default_rng(0)
    src_pos, src_nn = ex.ico_source_space(1)
    gain = rng.standard_normal((N_CHAN, src_pos.shape[0])) * 1e-7  # V/(A·m)
    gain -= gain.mean(0)
    fwd = ForwardOperator(jnp.asarray(gain), src_pos, src_nn, "fixed", "average")
    noise = rng.standard_normal((N_CHAN, 400)) * 1e-6
    noise -= noise.mean(0)  # average reference: covariance of rank n - 1
    cov = ex.compute_covariance(jnp.asarray(noise))
    inv = ex.make_inverse_operator(fwd, cov)
    return dict(
        fwd=fwd,
        cov=cov,
        cov_np=np.asarray(cov.data),
        inv=inv,
        inv32=_cast(inv, jnp.float32),  # only its dtype matters here
        data=rng.standard_normal((N_CHAN, 6)) * 1e-6,
        epochs=rng.standard_normal((3, N_CHAN, 6)) * 1e-6,
        R=np.asarray(ex.make_resolution_matrix(inv, fwd, LAM, "MNE")),
        src_pos=np.asarray(src_pos),
        gain_white=np.asarray(inv.whitener @ fwd.gain),
        noise=noise,
    )


@pytest.fixture(scope="module")
def M():
    """MNE-Python objects (only their type matters to exg_jax)."""
    info = mne.create_info([f"E{i}" for i in range(N_CHAN)], 100.0, "eeg")
    rng = np.random.default_rng(1)
    return dict(
        cov=mne.Covariance(np.eye(N_CHAN) * 1e-12, info.ch_names, [], [], 100),
        evoked=mne.EvokedArray(rng.standard_normal((N_CHAN, 6)) * 1e-6, info),
        epochs=mne.EpochsArray(
            rng.standard_normal((3, N_CHAN, 6)) * 1e-6, info, verbose=False
        ),
        raw=mne.io.RawArray(
            rng.standard_normal((N_CHAN, 6)) * 1e-6, info, verbose=False
        ),
        forward=mne.Forward(),
        inverse=mne.minimum_norm.InverseOperator(),
    )


# --------------------------------------------------------------------------- #
# 3.2 Covariance
# --------------------------------------------------------------------------- #
COV_DATA_CASES = {
    "0 samples": (ex.compute_covariance, (N_CHAN, 0), "data has 0 time sample"),
    "1 sample": (ex.compute_covariance, (N_CHAN, 1), "data has 1 time sample"),
    "0 channels": (ex.compute_covariance, (0, 10), "data has 0 channels"),
    "1-D": (ex.compute_covariance, (10,), "data must be 2-D"),
    "0 epochs": (ex.compute_covariance_epochs, (0, N_CHAN, 10), "epochs has 0 epochs"),
    "1 sample/epoch": (
        ex.compute_covariance_epochs,
        (4, N_CHAN, 1),
        "epochs has 1 time sample",
    ),
    "0 samples/epoch": (
        ex.compute_covariance_epochs,
        (4, N_CHAN, 0),
        "epochs has 0 time sample",
    ),
    "epochs 0 channels": (
        ex.compute_covariance_epochs,
        (4, 0, 10),
        "epochs has 0 channels",
    ),
}


@pytest.mark.parametrize("case", COV_DATA_CASES, ids=list(COV_DATA_CASES))
def test_cov_sample_counts(case):
    fn, shape, msg = COV_DATA_CASES[case]
    x = np.random.default_rng(0).standard_normal(shape)
    with pytest.raises(ValueError, match=msg):
        fn(x)


@pytest.mark.parametrize(
    "shrinkage, exc",
    [("0.1", TypeError), (True, TypeError), (1.5, ValueError), (np.nan, ValueError)],
    ids=["str", "bool", "above-1", "nan"],
)
def test_cov_shrinkage(P, shrinkage, exc):
    with pytest.raises(exc, match="shrinkage"):
        ex.compute_covariance(P["noise"], "ledoit_wolf", shrinkage)


def _bad_cov(P, kind):
    c = np.array(P["cov_np"])
    n = c.shape[0]
    scale = np.abs(c).max()
    if kind == "non-symmetric":
        c[0, 1] += 1e-3 * scale
    elif kind == "non-symmetric-float32":
        c = c.astype(np.float32)
        c[2, 5] += 1e-4 * scale
    elif kind == "negative eigenvalue":
        v = np.linalg.eigh(c)[1][:, -1]
        c = c - 1.5 * np.linalg.eigvalsh(c)[-1] * np.outer(v, v)
    elif kind == "rank 5":
        a = np.random.default_rng(2).standard_normal((n, 5)) * 1e-6
        c = a @ a.T
    elif kind == "all zero":
        c = np.zeros_like(c)
    elif kind == "constant (nothing after the average reference)":
        c = np.full_like(c, scale)
    return c


COV_CASES = {
    "non-symmetric": r"noise_cov is not symmetric",
    "non-symmetric-float32": r"noise_cov is not symmetric",
    "negative eigenvalue": r"noise_cov is not positive semi-definite",
    "rank 5": r"noise_cov has numerical rank 5 .* pass rank=5",
    "all zero": r"noise_cov is all zero",
    "constant (nothing after the average reference)": r"noise_cov has no variance",
}


@pytest.mark.parametrize("wrap", [np.asarray, lambda c: NoiseCov(jnp.asarray(c))])
@pytest.mark.parametrize("kind", COV_CASES, ids=list(COV_CASES))
def test_cov_matrix_rejected(P, kind, wrap):
    c = _bad_cov(P, kind)
    fwd = P["fwd"] if c.dtype == np.float64 else _cast(P["fwd"], jnp.float32)
    with pytest.raises(ValueError, match=COV_CASES[kind]):
        ex.make_inverse_operator(fwd, wrap(c))


def test_cov_rank_deficient_accepted_with_rank(P):
    c = _bad_cov(P, "rank 5")
    inv = ex.make_inverse_operator(P["fwd"], c, rank=5)
    assert inv.rank == 5 and bool(jnp.all(jnp.isfinite(inv.sing)))


def test_cov_float32_rounding_asymmetry_accepted(P):
    # x.T @ x in float32 may differ from its transpose by an ulp: not an error
    c = P["cov_np"].astype(np.float32)
    c[0, 1] = np.nextafter(c[0, 1], np.float32(np.inf))
    inv = ex.make_inverse_operator(_cast(P["fwd"], jnp.float32), c)
    assert bool(jnp.all(jnp.isfinite(inv.sing)))


# --------------------------------------------------------------------------- #
# 3.4 Checks that survive tracing
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def jitted(P):
    """One compiled function per (entry point, method): λ² is traced."""
    inv, data, epochs = P["inv"], P["data"], P["epochs"]
    out = {}
    for m in ("MNE", "dSPM", "sLORETA", "eLORETA"):
        out[m] = jax.jit(lambda lam, m=m: ex.apply_inverse(data, inv, lam, m).data)
    out["epochs"] = jax.jit(
        lambda lam: ex.apply_inverse_epochs(epochs, inv, lam, "sLORETA").data
    )
    out["resolution"] = jax.jit(
        lambda lam: ex.make_resolution_matrix(P["inv"], P["fwd"], lam, "dSPM")
    )
    out["eloreta_weights"] = jax.jit(
        lambda lam: eloreta_weights(P["gain_white"], lam, n_orient=1)[0]
    )
    out["eloreta_kernel"] = jax.jit(
        lambda lam: ex.imaging_kernel(inv, lam, eLORETA()).kernel
    )
    return out


TRACED_LAMBDA2_CASES = [
    (entry, value)
    for entry in ("MNE", "dSPM", "sLORETA", "eLORETA", "epochs", "resolution")
    for value in (0.0, -0.5, np.nan)
] + [(e, v) for e in ("eloreta_weights", "eloreta_kernel") for v in (0.0, np.inf)]


@pytest.mark.parametrize("entry, value", TRACED_LAMBDA2_CASES)
def test_traced_lambda2_jit(jitted, entry, value):
    with pytest.raises(TRACED, match=TRACED_LAMBDA2):
        jax.block_until_ready(jitted[entry](value))


@pytest.mark.parametrize("entry", ["MNE", "sLORETA", "epochs", "resolution"])
def test_traced_lambda2_vmap(jitted, entry):
    with pytest.raises(TRACED, match=TRACED_LAMBDA2):
        jax.block_until_ready(jax.vmap(jitted[entry])(jnp.array([LAM, -0.5])))


def test_traced_lambda2_grad(P):
    def loss(lam):
        return jnp.sum(ex.apply_inverse(P["data"], P["inv"], lam, "sLORETA").data)

    with pytest.raises(TRACED, match=TRACED_LAMBDA2):
        jax.block_until_ready(jax.grad(loss)(0.0))
    assert np.isfinite(float(jax.grad(loss)(LAM)))  # a valid λ² is unaffected


def test_traced_valid_lambda2_unchanged(P, jitted):
    for m in ("MNE", "dSPM", "sLORETA"):
        eager = ex.apply_inverse(P["data"], P["inv"], LAM, m).data
        got, want = np.asarray(jitted[m](LAM)), np.asarray(eager)
        # jit and eager differ only by rounding (fused operations): measured
        # ≤ 1.3e-12 relative at the smallest entries, 8e-17 absolute
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("nave", [0.0, -2.0, np.nan])
def test_traced_nave(P, nave):
    f = jax.jit(lambda n: ex.estimate_snr(P["data"], P["inv"], n)[0])
    with pytest.raises(TRACED, match="traced nave"):
        jax.block_until_ready(f(nave))


# eLORETA non-convergence: throw=True (default) raises, eagerly and traced.
def _elo_apply(P, opts):
    return ex.apply_inverse(P["data"], P["inv"], LAM, opts)


ELORETA_EAGER = {
    "apply_inverse": lambda P, o: _elo_apply(P, o),
    "apply_inverse_epochs": lambda P, o: ex.apply_inverse_epochs(
        P["epochs"], P["inv"], LAM, o
    ),
    "imaging_kernel": lambda P, o: ex.imaging_kernel(P["inv"], LAM, o),
    "eloreta_weights": lambda P, o: eloreta_weights(
        P["gain_white"], LAM, n_orient=1, method=o
    ),
    "make_resolution_matrix": lambda P, o: ex.make_resolution_matrix(
        P["inv"], P["fwd"], LAM, o
    ),
}


@pytest.mark.parametrize("entry", ELORETA_EAGER)
def test_eloreta_not_converged_eager(P, entry):
    with pytest.raises(RuntimeError, match=NOT_CONVERGED):
        ELORETA_EAGER[entry](P, BAD_ELORETA)


@pytest.mark.parametrize("transform", ["jit", "vmap"])
def test_eloreta_not_converged_traced(P, transform):
    def f(lam):
        return ex.apply_inverse(P["data"], P["inv"], lam, BAD_ELORETA).data

    g = jax.jit(f) if transform == "jit" else jax.vmap(f)
    lam = LAM if transform == "jit" else jnp.array([LAM, 2 * LAM])
    with pytest.raises(
        TRACED, match=r"did not converge within its maximum number.*throw=False"
    ):
        jax.block_until_ready(g(lam))


def test_eloreta_throw_false_returns_status(P):
    opts = eLORETA(eps=1e-12, max_iter=2, throw=False)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        stc = _elo_apply(P, opts)
    assert not bool(stc.status.converged) and int(stc.status.iterations) == 2
    f = jax.jit(lambda d: ex.apply_inverse(d, P["inv"], LAM, opts).status)
    assert not bool(f(P["data"]).converged)  # traced: no error, the status says it


# --------------------------------------------------------------------------- #
# 3.5 Degenerate sizes
# --------------------------------------------------------------------------- #
def _fwd_with(P, gain, n_src=None):
    """``P["fwd"]`` with another gain (and ``n_src`` sources), built by
    ``eqx.tree_at``: that bypasses ``ForwardOperator``'s own checks (as JAX
    transformations do), so ``make_inverse_operator``'s are exercised."""
    n_src = P["fwd"].n_src if n_src is None else n_src
    nn = jnp.tile(jnp.array([[0.0, 0.0, 1.0]]), (n_src, 1))
    return eqx.tree_at(
        lambda f: (f.gain, f.src_pos, f.src_nn),
        P["fwd"],
        (jnp.asarray(gain), jnp.zeros((n_src, 3)), nn),
    )


def test_zero_sources(P):
    fwd = _fwd_with(P, np.zeros((N_CHAN, 0)), 0)
    with pytest.raises(ValueError, match="fwd has 0 sources"):
        ex.make_inverse_operator(fwd, P["cov"])


def test_zero_channels(P):
    fwd = _fwd_with(P, np.zeros((0, P["fwd"].n_src)))
    with pytest.raises(ValueError, match="fwd has 0 channels"):
        ex.make_inverse_operator(fwd, np.zeros((0, 0)))


def test_one_channel_average_reference(P):
    g = np.random.default_rng(0).standard_normal((1, P["fwd"].n_src))
    with pytest.raises(ValueError, match="fwd has 1 channel"):
        ex.make_inverse_operator(_fwd_with(P, g), np.eye(1))


def test_all_zero_gain(P):
    fwd = _fwd_with(P, np.zeros((N_CHAN, P["fwd"].n_src)))
    with pytest.raises(ValueError, match="fwd.gain is all zero"):
        ex.make_inverse_operator(fwd, P["cov"])


EMPTY_R = {
    "get_point_spread": lambda R: ex.get_point_spread(R, 0),
    "get_cross_talk": lambda R: ex.get_cross_talk(R, 0),
    "peak_localisation_error": ex.peak_localisation_error,
    "spatial_spread": ex.spatial_spread,
    "relative_amplitude": ex.relative_amplitude,
    "resolution_metrics": lambda R: ex.resolution_metrics(R, np.zeros((0, 3))),
}


@pytest.mark.parametrize("fn", EMPTY_R)
@pytest.mark.parametrize("shape", [(0, 0), (3, 0)], ids=["0x0", "3x0"])
def test_empty_resolution_matrix(fn, shape):
    with pytest.raises(ValueError, match=r"R \(the resolution matrix\) is empty"):
        EMPTY_R[fn](np.zeros(shape))


def test_empty_resolution_operator():
    with pytest.raises(ValueError, match="empty"):
        ex.ResolutionOperator(
            kernel=jnp.zeros((0, 4)), gain=jnp.zeros((4, 0)), n_orient=1
        )


@pytest.mark.parametrize(
    "shape", [(N_CHAN, 0), (0, 6)], ids=["0 sources", "0 channels"]
)
def test_eloreta_weights_empty_gain(shape):
    with pytest.raises(ValueError, match="gain is empty"):
        eloreta_weights(np.zeros(shape), LAM, n_orient=1)


@pytest.mark.parametrize(
    "fn",
    [
        lambda P, d: ex.apply_inverse(d, P["inv"], LAM),
        lambda P, d: ex.estimate_snr(d, P["inv"]),
    ],
    ids=["apply_inverse", "estimate_snr"],
)
def test_zero_channel_data(P, fn):
    with pytest.raises(ValueError, match="data has 0 channels"):
        fn(P, np.zeros((0, 6)))


# --------------------------------------------------------------------------- #
# 3.7 Argument types
# --------------------------------------------------------------------------- #
LAMBDA2_BAD = {
    "array (2,)": (np.array([0.1, 0.2]), ValueError, "lambda2 must be a scalar"),
    "list": ([0.1], ValueError, "lambda2 must be a scalar"),
    "string": ("0.1", TypeError, "lambda2 must be a real number"),
    "bool": (True, TypeError, "lambda2 must be a real number"),
    "complex": (0.1 + 0j, TypeError, "lambda2 must be a real number"),
    "None": (None, TypeError, "lambda2 must be a real number"),
    "zero": (0.0, ValueError, "lambda2 must be finite and > 0"),
    "negative": (-1.0, ValueError, "lambda2 must be finite and > 0"),
    "nan": (np.nan, ValueError, "lambda2 must be finite and > 0"),
    "inf": (np.inf, ValueError, "lambda2 must be finite and > 0"),
}
LAMBDA2_ENTRIES = {
    "apply_inverse": lambda P, lam: ex.apply_inverse(P["data"], P["inv"], lam),
    "apply_inverse_epochs": lambda P, lam: ex.apply_inverse_epochs(
        P["epochs"], P["inv"], lam
    ),
    "make_resolution_matrix": lambda P, lam: ex.make_resolution_matrix(
        P["inv"], P["fwd"], lam
    ),
    "imaging_kernel eLORETA": lambda P, lam: ex.imaging_kernel(
        P["inv"], lam, eLORETA()
    ),
    "eloreta_weights": lambda P, lam: eloreta_weights(P["gain_white"], lam, n_orient=1),
}


@pytest.mark.parametrize("bad", LAMBDA2_BAD, ids=list(LAMBDA2_BAD))
def test_lambda2_bad_apply_inverse(P, bad):
    value, exc, msg = LAMBDA2_BAD[bad]
    with pytest.raises(exc, match=msg):
        ex.apply_inverse(P["data"], P["inv"], value)


@pytest.mark.parametrize("entry", LAMBDA2_ENTRIES)
@pytest.mark.parametrize("bad", ["array (2,)", "string", "zero"])
def test_lambda2_bad_every_entry(P, entry, bad):
    value, exc, msg = LAMBDA2_BAD[bad]
    with pytest.raises(exc, match=msg):
        LAMBDA2_ENTRIES[entry](P, value)


@pytest.mark.parametrize("value", [1e39, 1e-50], ids=["overflows", "underflows"])
def test_lambda2_not_finite_in_float32(P, value):
    with pytest.raises(ValueError, match=r"lambda2=.* float32"):
        ex.apply_inverse(P["data"].astype(np.float32), P["inv32"], value)


def test_lambda2_traced_wrong_shape(P):
    f = jax.jit(lambda lam: ex.apply_inverse(P["data"], P["inv"], lam).data)
    with pytest.raises(ValueError, match=r"lambda2 must be a scalar.*\(2,\)"):
        f(jnp.array([0.1, 0.2]))


@pytest.mark.parametrize(
    "lam",
    [np.float32(LAM), np.float64(LAM), jnp.asarray(LAM), np.array(LAM), 1],
    ids=["np.float32", "np.float64", "jax 0-d", "numpy 0-d", "int"],
)
def test_lambda2_scalar_types_accepted(P, lam):
    stc = ex.apply_inverse(P["data"], P["inv"], lam)
    assert bool(jnp.all(jnp.isfinite(stc.data)))


BATCH_BAD = {
    "auto": ("auto", TypeError),
    "bool": (True, TypeError),
    "float": (2.5, TypeError),
    "zero": (0, ValueError),
    "negative": (np.int64(-1), ValueError),
}


@pytest.mark.parametrize("bad", BATCH_BAD, ids=list(BATCH_BAD))
def test_batch_size_bad(P, bad):
    value, exc = BATCH_BAD[bad]
    with pytest.raises(exc, match="batch_size"):
        ex.apply_inverse_epochs(P["epochs"], P["inv"], LAM, batch_size=value)


@pytest.mark.parametrize("bs", [np.int64(2), np.int32(3)], ids=["int64", "int32"])
def test_batch_size_numpy_int_accepted(P, bs):
    ref = ex.apply_inverse_epochs(P["epochs"], P["inv"], LAM).data
    got = ex.apply_inverse_epochs(P["epochs"], P["inv"], LAM, batch_size=bs).data
    np.testing.assert_allclose(got, ref, rtol=1e-12)


ELO_OPT_BAD = {
    "eps=inf": (dict(eps=np.inf), ValueError, "eps"),
    "eps=nan": (dict(eps=np.nan), ValueError, "eps"),
    "eps=0": (dict(eps=0.0), ValueError, "eps"),
    "eps<0": (dict(eps=-1e-6), ValueError, "eps"),
    "eps=str": (dict(eps="1e-6"), TypeError, "eps"),
    "eps=bool": (dict(eps=True), TypeError, "eps"),
    "max_iter=bool": (dict(max_iter=True), TypeError, "max_iter"),
    "max_iter=float": (dict(max_iter=20.0), TypeError, "max_iter"),
    "max_iter=0": (dict(max_iter=0), ValueError, "max_iter"),
    "max_iter=str": (dict(max_iter="20"), TypeError, "max_iter"),
    "force_equal=str": (dict(force_equal="yes"), TypeError, "force_equal"),
    "throw=int": (dict(throw=1), TypeError, "throw"),
}


@pytest.mark.parametrize("bad", ELO_OPT_BAD, ids=list(ELO_OPT_BAD))
def test_eloreta_options_bad(bad):
    kw, exc, name = ELO_OPT_BAD[bad]
    with pytest.raises(exc, match=name):
        eLORETA(**kw)


def test_eloreta_options_numpy_scalars_accepted():
    opts = eLORETA(eps=np.float32(1e-6), max_iter=np.int64(50))
    assert type(opts.eps) is float and type(opts.max_iter) is int
    # equal and equally hashed: NumPy scalars share the Python values' compilation
    same = eLORETA(eps=float(np.float32(1e-6)), max_iter=50)
    assert opts == same and hash(opts) == hash(same)


BLOCK_BAD = {
    "auto": ("auto", TypeError),
    "bool": (True, TypeError),
    "float": (2.5, TypeError),
    "zero": (0, ValueError),
}


@pytest.mark.parametrize("bad", BLOCK_BAD, ids=list(BLOCK_BAD))
def test_block_size_bad(P, bad):
    value, exc = BLOCK_BAD[bad]
    with pytest.raises(exc, match="block_size"):
        ex.resolution_metrics(P["R"], P["src_pos"], block_size=value)


def test_block_size_numpy_int_accepted(P):
    ref = ex.resolution_metrics(P["R"], P["src_pos"], block_size=8)
    got = ex.resolution_metrics(P["R"], P["src_pos"], block_size=np.int64(8))
    np.testing.assert_array_equal(got, ref)


NAVE_BAD = {
    "inf": (np.inf, ValueError),
    "zero": (0, ValueError),
    "negative": (-3, ValueError),
    "nan": (np.nan, ValueError),
    "float32 overflow": (1e39, ValueError),
    "string": ("10", TypeError),
    "bool": (True, TypeError),
}


@pytest.mark.parametrize("bad", NAVE_BAD, ids=list(NAVE_BAD))
def test_nave_bad(P, bad):
    value, exc = NAVE_BAD[bad]
    inv, data = P["inv"], P["data"]
    if bad == "float32 overflow":
        inv, data = P["inv32"], data.astype(np.float32)
    with pytest.raises(exc, match="nave"):
        ex.estimate_snr(data, inv, value)


def test_nave_numpy_int_accepted(P):
    a = ex.estimate_snr(P["data"], P["inv"], np.int64(4))[0]
    b = ex.estimate_snr(P["data"], P["inv"], 4)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("inv", ["inv.fif", Path("inv.fif")], ids=["str", "Path"])
def test_estimate_snr_path(P, inv):
    with pytest.raises(
        TypeError, match="inv must be an InverseOperator.*make_inverse_operator"
    ):
        ex.estimate_snr(P["data"], inv)


WRONG_INV = {
    "apply_inverse": lambda P, x: ex.apply_inverse(P["data"], x, LAM),
    "apply_inverse_epochs": lambda P, x: ex.apply_inverse_epochs(P["epochs"], x, LAM),
    "estimate_snr": lambda P, x: ex.estimate_snr(P["data"], x),
    "make_resolution_matrix": lambda P, x: ex.make_resolution_matrix(x, P["fwd"], LAM),
    "imaging_kernel eLORETA": lambda P, x: ex.imaging_kernel(x, LAM, eLORETA()),
}


@pytest.mark.parametrize("entry", WRONG_INV)
def test_inv_wrong_type(P, entry):
    with pytest.raises(TypeError, match="inv must be an InverseOperator"):
        WRONG_INV[entry](P, {"sing": 1})


@pytest.mark.parametrize(
    "fn",
    [
        lambda P: ex.make_inverse_operator(P["fwd"].gain, P["cov"]),
        lambda P: ex.make_resolution_matrix(P["inv"], P["fwd"].gain, LAM),
    ],
    ids=["make_inverse_operator", "make_resolution_matrix"],
)
def test_fwd_wrong_type(P, fn):
    with pytest.raises(TypeError, match="fwd must be a ForwardOperator"):
        fn(P)


OTHER_TYPES = {
    "noise_cov str": (
        lambda P: ex.make_inverse_operator(P["fwd"], "cov.fif"),
        "noise_cov",
    ),
    "noise_cov dict": (lambda P: ex.make_inverse_operator(P["fwd"], {}), "noise_cov"),
    "rank float": (
        lambda P: ex.make_inverse_operator(P["fwd"], P["cov"], rank=5.0),
        "rank",
    ),
    "rank bool": (
        lambda P: ex.make_inverse_operator(P["fwd"], P["cov"], rank=True),
        "rank",
    ),
    "fixed str": (
        lambda P: ex.make_inverse_operator(P["fwd"], P["cov"], fixed="yes"),
        "fixed",
    ),
    "depth str": (
        lambda P: ex.make_inverse_operator(P["fwd"], P["cov"], depth="0.8"),
        "depth",
    ),
    "loose str": (
        lambda P: ex.make_inverse_operator(P["fwd"], P["cov"], loose="0.2"),
        "loose",
    ),
    "avg_ref_proj str": (
        lambda P: ex.make_inverse_operator(P["fwd"], P["cov"], avg_ref_proj="yes"),
        "avg_ref_proj",
    ),
    "eloreta method dict": (
        lambda P: ex.apply_inverse(P["data"], P["inv"], LAM, method={}),
        "method",
    ),
    "data str": (lambda P: ex.apply_inverse("data.fif", P["inv"], LAM), "data"),
    "data complex": (
        lambda P: ex.apply_inverse(P["data"] + 0j, P["inv"], LAM),
        "data",
    ),
    "epochs bool": (
        lambda P: ex.apply_inverse_epochs(P["epochs"] > 0, P["inv"], LAM),
        "epochs",
    ),
    "cov data str": (lambda P: ex.compute_covariance("raw.fif"), "data"),
    "threshold str": (
        lambda P: ex.spatial_spread(P["R"], threshold="0.5"),
        "threshold",
    ),
    "idx float": (lambda P: ex.get_point_spread(P["R"], 2.5), "idx"),
    "idx bool": (lambda P: ex.get_cross_talk(P["R"], True), "idx"),
    "metric int": (
        lambda P: ex.resolution_metrics(P["R"], P["src_pos"], metric=5),
        "metric",
    ),
    "mne_compat str": (
        lambda P: ex.resolution_metrics(P["R"], P["src_pos"], mne_compat="no"),
        "mne_compat",
    ),
    "R str": (lambda P: ex.peak_localisation_error("R.npy"), "R"),
    "n_orient bool": (
        lambda P: eloreta_weights(P["gain_white"], LAM, n_orient=True),
        "n_orient",
    ),
    "eloreta_weights method dict": (
        lambda P: eloreta_weights(P["gain_white"], LAM, n_orient=1, method={}),
        "method",
    ),
    "snr throw str": (
        lambda P: ex.estimate_snr(P["data"], P["inv"], throw="yes"),
        "throw",
    ),
}


@pytest.mark.parametrize("case", OTHER_TYPES, ids=list(OTHER_TYPES))
def test_argument_types(P, case):
    fn, name = OTHER_TYPES[case]
    with pytest.raises(TypeError, match=name):
        fn(P)


# --------------------------------------------------------------------------- #
# 3.8 MNE-Python objects where arrays are expected
# --------------------------------------------------------------------------- #
MNE_CASES = {
    "Covariance -> make_inverse_operator": (
        lambda P, M: ex.make_inverse_operator(P["fwd"], M["cov"]),
        r"noise_cov is an mne\.Covariance.*NoiseCov\(jnp\.asarray\(cov\.data\)\)",
    ),
    "Covariance -> NoiseCov": (
        lambda P, M: NoiseCov(M["cov"]),
        r"NoiseCov data is an mne\.Covariance.*\.data",
    ),
    "Evoked -> apply_inverse": (
        lambda P, M: ex.apply_inverse(M["evoked"], P["inv"], LAM),
        r"data is an mne\.EvokedArray.*\.data array",
    ),
    "Epochs -> apply_inverse_epochs": (
        lambda P, M: ex.apply_inverse_epochs(M["epochs"], P["inv"], LAM),
        r"epochs is an mne\.EpochsArray.*get_data\(\)",
    ),
    "Epochs -> apply_inverse": (
        lambda P, M: ex.apply_inverse(M["epochs"], P["inv"], LAM),
        r"data is an mne\.EpochsArray.*apply_inverse_epochs",
    ),
    "Raw -> apply_inverse": (
        lambda P, M: ex.apply_inverse(M["raw"], P["inv"], LAM),
        r"data is an mne\.RawArray.*raw\.get_data\(\)",
    ),
    "Raw -> compute_covariance": (
        lambda P, M: ex.compute_covariance(M["raw"]),
        r"data is an mne\.RawArray.*raw\.get_data\(\)",
    ),
    "Epochs -> compute_covariance_epochs": (
        lambda P, M: ex.compute_covariance_epochs(M["epochs"]),
        r"epochs is an mne\.EpochsArray.*get_data\(\)",
    ),
    "Evoked -> estimate_snr": (
        lambda P, M: ex.estimate_snr(M["evoked"], P["inv"]),
        r"data is an mne\.EvokedArray",
    ),
    "Forward -> make_inverse_operator": (
        lambda P, M: ex.make_inverse_operator(M["forward"], P["cov"]),
        r"fwd is an mne\.Forward.*interop\.forward_from_mne",
    ),
    "Forward -> make_resolution_matrix": (
        lambda P, M: ex.make_resolution_matrix(P["inv"], M["forward"], LAM),
        r"fwd is an mne\.Forward.*interop\.forward_from_mne",
    ),
    "InverseOperator -> apply_inverse": (
        lambda P, M: ex.apply_inverse(P["data"], M["inverse"], LAM),
        r"inv is an mne\.InverseOperator.*make_inverse_operator",
    ),
    "InverseOperator -> estimate_snr": (
        lambda P, M: ex.estimate_snr(P["data"], M["inverse"]),
        r"inv is an mne\.InverseOperator.*make_inverse_operator",
    ),
    "InverseOperator -> imaging_kernel eLORETA": (
        lambda P, M: ex.imaging_kernel(M["inverse"], LAM, eLORETA()),
        r"inv is an mne\.InverseOperator.*make_inverse_operator",
    ),
    "InverseOperator -> make_resolution_matrix": (
        lambda P, M: ex.make_resolution_matrix(M["inverse"], P["fwd"], LAM),
        r"inv is an mne\.InverseOperator",
    ),
    "Covariance -> lambda2": (
        lambda P, M: ex.apply_inverse(P["data"], P["inv"], M["cov"]),
        r"lambda2 is an mne\.Covariance",
    ),
}


@pytest.mark.parametrize("case", MNE_CASES, ids=list(MNE_CASES))
def test_mne_objects(P, M, case):
    fn, msg = MNE_CASES[case]
    with pytest.raises(TypeError, match=msg):
        fn(P, M)


# --------------------------------------------------------------------------- #
# NumPy inputs are never mutated
# --------------------------------------------------------------------------- #
def _frozen(x):
    x = np.array(x)  # a private copy, then read-only: any in-place write raises
    x.setflags(write=False)
    return x


@pytest.fixture(scope="module")
def A(P):
    """Read-only NumPy copies of every array input."""
    out = {
        k: _frozen(P[k])
        for k in ("data", "epochs", "noise", "cov_np", "gain_white", "R", "src_pos")
    }
    out["noise_ep"] = _frozen(P["noise"].reshape(N_CHAN, 4, 100).transpose(1, 0, 2))
    out["gain"] = _frozen(P["fwd"].gain)
    out["fwd_np"] = eqx.tree_at(lambda f: f.gain, P["fwd"], out["gain"])
    out["inv"] = P["inv"]
    return out


NON_MUTATION = {
    "compute_covariance": lambda A: ex.compute_covariance(A["noise"]),
    "compute_covariance_epochs": lambda A: ex.compute_covariance_epochs(
        A["noise_ep"], "empirical"
    ),
    "make_inverse_operator": lambda A: ex.make_inverse_operator(
        A["fwd_np"], A["cov_np"]
    ),
    "apply_inverse": lambda A: ex.apply_inverse(A["data"], A["inv"], LAM, "sLORETA"),
    "apply_inverse_epochs": lambda A: ex.apply_inverse_epochs(
        A["epochs"], A["inv"], LAM
    ),
    "estimate_snr": lambda A: ex.estimate_snr(A["data"], A["inv"], 3),
    "eloreta_weights": lambda A: eloreta_weights(A["gain_white"], LAM, n_orient=1),
    "make_resolution_matrix": lambda A: ex.make_resolution_matrix(
        A["inv"], A["fwd_np"], LAM, "MNE"
    ),
    "resolution_metrics": lambda A: ex.resolution_metrics(
        A["R"], A["src_pos"], metric=list(METRICS)
    ),
    "get_point_spread": lambda A: ex.get_point_spread(A["R"], np.array([0, 1])),
    "get_cross_talk": lambda A: ex.get_cross_talk(A["R"], np.array([0, 1])),
    "peak_localisation_error": lambda A: ex.peak_localisation_error(A["R"]),
    "spatial_spread": lambda A: ex.spatial_spread(A["R"]),
    "relative_amplitude": lambda A: ex.relative_amplitude(A["R"]),
}


@pytest.mark.parametrize("entry", NON_MUTATION)
def test_numpy_inputs_not_mutated(A, entry):
    arrays = {k: v for k, v in A.items() if isinstance(v, np.ndarray)}
    before = {k: v.copy() for k, v in arrays.items()}
    NON_MUTATION[entry](A)  # read-only inputs: an in-place write would raise
    for k, v in arrays.items():
        assert not v.flags.writeable
        np.testing.assert_array_equal(v, before[k], err_msg=k)


# --------------------------------------------------------------------------- #
# 3.1 NaN in → NaN out (never a map of zeros), also under jit
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def F():
    """A small free-orientation problem (pick_ori=None combines √(x²+y²+z²))."""
    rng = np.random.default_rng(1)
    src_pos, src_nn = ex.ico_source_space(0)
    gain = rng.standard_normal((N_CHAN, 3 * src_pos.shape[0])) * 1e2
    gain -= gain.mean(0)
    fwd = ForwardOperator(jnp.asarray(gain), src_pos, src_nn, "free", "average")
    noise = rng.standard_normal((N_CHAN, 400)) * 1e-6
    cov = ex.compute_covariance(jnp.asarray(noise - noise.mean(0)))
    return dict(
        fwd=fwd,
        inv=ex.make_inverse_operator(fwd, cov, loose=0.2),
        data=rng.standard_normal((N_CHAN, 5)) * 1e-6,
    )


@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA", "eLORETA"])
@pytest.mark.parametrize("pick_ori", [None, "normal", "vector"])
def test_nan_data_under_jit_gives_nan(F, method, pick_ori):
    data = np.array(F["data"])
    data[2, 1] = np.nan
    opts = eLORETA(throw=False) if method == "eLORETA" else method
    out = jax.jit(
        lambda d: ex.apply_inverse(d, F["inv"], LAM, opts, pick_ori=pick_ori).data
    )(jnp.asarray(data))
    assert np.all(np.isnan(np.asarray(out)[..., 1]))


@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA", "eLORETA"])
def test_nan_operator_gives_nan_not_zero(F, method):
    """An operator built from a NaN covariance under jit (no eager check there)."""
    cov = jnp.full((N_CHAN, N_CHAN), jnp.nan)

    @jax.jit
    def run(c, d):
        inv = ex.make_inverse_operator(F["fwd"], c, loose=0.2)
        opts = eLORETA(throw=False) if method == "eLORETA" else method
        return ex.apply_inverse(d, inv, LAM, opts).data

    out = np.asarray(run(cov, jnp.asarray(F["data"])))
    assert np.all(np.isnan(out))


def test_nan_operator_snr_is_nan(F):
    inv = eqx.tree_at(lambda i: i.whitener, F["inv"], F["inv"].whitener * jnp.nan)
    snr, snr_est, _ = jax.jit(ex.estimate_snr)(jnp.asarray(F["data"]), inv)
    assert np.all(np.isnan(np.asarray(snr))) and np.all(np.isnan(np.asarray(snr_est)))


# --------------------------------------------------------------------------- #
# 3.3 Scale: nothing overflows or underflows into zeros
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA", "eLORETA"])
@pytest.mark.parametrize(
    ("dtype", "cov_scale", "data_scale"),
    [
        (jnp.float64, 1e-300, 1e-150),  # covariance 1e-300 · I
        (jnp.float32, 1e-32, 1e-16),  # data at 1e-16 V
        (jnp.float32, 1e20, 1e10),
    ],
    ids=["f64-cov1e-300", "f32-data1e-16", "f32-data1e10"],
)
def test_extreme_scales_give_the_scaled_answer(F, method, dtype, cov_scale, data_scale):
    fwd = _cast(F["fwd"], dtype)
    opts = eLORETA(throw=False) if method == "eLORETA" else method
    ref_inv = ex.make_inverse_operator(F["fwd"], jnp.eye(N_CHAN) * 1e-12, loose=0.2)
    ref = np.asarray(ex.apply_inverse(jnp.asarray(F["data"]), ref_inv, LAM, opts).data)
    inv = ex.make_inverse_operator(
        fwd, jnp.eye(N_CHAN, dtype=dtype) * cov_scale, loose=0.2
    )
    c = data_scale / 1e-6
    got = ex.apply_inverse(jnp.asarray(F["data"] * c, dtype), inv, LAM, opts)
    got = np.asarray(got.data, np.float64)
    if method in ("MNE", "eLORETA"):
        ref = ref * c
    assert np.all(np.isfinite(got)) and np.all(got != 0)
    tol = 1e-4 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(got, ref, rtol=tol, atol=0)


@pytest.mark.parametrize("scale", [1e-10, 1e-16])
def test_ledoit_wolf_float32_small_scale(scale):
    """The shrinkage is scale-invariant; at 1e-10 V its fourth powers underflowed."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 50)) @ np.diag(np.linspace(1, 2, 50))
    ref = np.asarray(ex.compute_covariance(jnp.asarray(x)).data)
    got = np.asarray(ex.compute_covariance(jnp.asarray(x * scale, jnp.float32)).data)
    np.testing.assert_allclose(
        got / scale**2, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max()
    )
