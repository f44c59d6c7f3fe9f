"""Drive exg_jax's public API under jaxtyping's import hook (beartype).

Run by ``tests/test_types.py`` in a fresh interpreter, once per dtype::

    python tests/_typecheck_api.py float32|float64

``jaxtyping.install_import_hook(["exg_jax"], "beartype.beartype")`` is
installed *before* exg_jax is imported, so every annotated function, method
and dataclass ``__init__`` of the package checks its arguments and its return
value (axes named alike must agree within a call). The public API is then
called with valid inputs on a tiny problem (8 electrodes, ico-1 sources):
eagerly, and under ``jax.jit`` / ``jax.grad`` (tracers must satisfy the
annotations too). A ``jaxtyping.TypeCheckError`` exits non-zero; the lines
``CANARY OK: ...`` (stdout) show that deliberately ill-typed calls are caught.

The bad-input tests (``tests/test_bad_input*.py``) run without the hook: they
expect the library's own ``ValueError`` / ``TypeError`` naming the argument,
which the annotations would pre-empt. Progress and timings go to stderr.
"""

import sys
import time

DTYPE = sys.argv[1] if len(sys.argv) > 1 else "float64"
if DTYPE not in ("float32", "float64"):
    raise SystemExit(f"usage: {sys.argv[0]} float32|float64")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", DTYPE == "float64")
# Compile time dominates this script; the checks do not depend on XLA's passes.
jax.config.update("jax_disable_most_optimizations", True)

import jaxtyping  # noqa: E402

with jaxtyping.install_import_hook(["exg_jax"], "beartype.beartype"):
    import exg_jax as ex  # noqa: E402
    from exg_jax import linalg  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

DT = jnp.dtype(DTYPE)
rng = np.random.default_rng(0)
_T0 = [time.perf_counter()]


def arr(x):
    return jnp.asarray(np.asarray(x), DT)


def lap(what):
    t = time.perf_counter()
    print(f"{what}: {t - _T0[0]:.1f} s", file=sys.stderr, flush=True)
    _T0[0] = t


def expect_typecheck_error(what, fn):
    """The hook is active: a deliberately ill-typed call must be caught by it."""
    try:
        fn()
    except jaxtyping.TypeCheckError:
        print(f"CANARY OK: {what}", flush=True)
        return
    except Exception as err:  # the library's own check came first: no hook
        msg = f"CANARY FAILED: {what} raised {type(err).__name__}: {err}"
        raise SystemExit(msg) from err
    raise SystemExit(f"CANARY FAILED: {what} raised nothing")


# --------------------------------------------------------------------------- #
# The hook checks: an argument's shape, axes shared by two arguments, and the
# fields of an Equinox module
# --------------------------------------------------------------------------- #
expect_typecheck_error(
    "compute_covariance(3-D data)",
    lambda: ex.compute_covariance(np.zeros((2, 3, 4), DT)),
)
expect_typecheck_error(
    "make_sphere_forward(src_nn with another number of sources than src_pos)",
    lambda: ex.make_sphere_forward(
        np.ones((4, 3)), np.zeros((5, 3)), np.ones((6, 3)), ex.SphereModel()
    ),
)
expect_typecheck_error(
    "SourceEstimate(integer data)",
    lambda: ex.SourceEstimate(jnp.zeros((2, 3), jnp.int32), arr(np.zeros((2, 3))), "x"),
)

lap("start")
# --------------------------------------------------------------------------- #
# Head model, geometry, source spaces
# --------------------------------------------------------------------------- #
sphere = ex.SphereModel()
sphere = ex.SphereModel(
    arr([0.067, 0.070, 0.075]), arr([0.33, 0.0042, 0.33]), arr([0.0, 0.0, 0.04])
)
ex.SphereModel([0.07, 0.075], np.array([0.33, 0.33]), (0, 0, 0.04))
ex.SphereModel(jnp.stack([sphere.radii] * 2), jnp.stack([sphere.conductivities] * 2))
ex.SphereModel.single_shell(0.09)
ex.SphereModel.mne_default(np.float32(0.1))
assert ex.SphereModel().n_shells == 3
fn = ex.sphere_series_coefficients(sphere, 50)
assert fn.shape == (50,) and fn.dtype == DT
bs = ex.berg_scherg_params(sphere)  # the fit make_sphere_forward memoises
assert bs.mu.dtype == DT and bs.mu.shape == (3,)
ex.berg_scherg_params(ex.SphereModel.single_shell(0.09), n_fit=2, throw=np.True_)

names, el_np = ex.standard_montage("standard_1020", radius=0.075, center=(0, 0, 0.04))
ex.standard_montage(radius=np.float32(0.08), center=np.zeros(3))
assert len(names) == 21
pick = [0, 3, 5, 7, 9, 11, 15, 19]
el = arr(el_np[pick])
radius, center = ex.fit_sphere_to_headshape(el)
ex.fit_sphere_to_headshape(el_np.tolist())
assert radius.shape == () and center.shape == (3,)

assert ex.ico_n_vertices(1) == 42 and ex.ico_n_vertices(np.int64(0)) == 12
pos, nn = ex.ico_source_space(1, radius=0.05, center=(0.0, 0.0, 0.04))
ex.ico_source_space(np.int32(0), radius=np.float64(0.05), center=np.zeros(3))
ex.grid_source_space(0.02, radius=0.05, center=[0.0, 0.0, 0.04])
ex.grid_source_space(np.float32(0.03), 0.05)
pos, nn = arr(pos), arr(nn)

lap("head")
# --------------------------------------------------------------------------- #
# Forward models
# --------------------------------------------------------------------------- #
fwd = ex.make_sphere_forward(el, pos, nn, sphere)
assert fwd.gain.dtype == DT and fwd.gain.shape == (8, 42)
ex.make_sphere_forward(el, pos, nn, sphere, berg_scherg=bs)
ex.make_sphere_forward(el, pos, nn, sphere, berg_scherg=(bs.mu, bs.lam))
ex.make_sphere_forward(el_np[pick], np.asarray(pos), np.asarray(nn), sphere)
ex.make_sphere_forward(el, pos, nn, sphere, method="exact", n_terms=64)
fwd_free = ex.make_sphere_forward_free(el, pos, sphere, src_nn=nn)
ex.make_sphere_forward_free(el, pos, sphere, berg_scherg=[bs.mu, bs.lam])
assert fwd_free.gain.shape == (8, 126)
ex.ForwardOperator(fwd.gain, fwd.src_pos, fwd.src_nn, "fixed", "average", ch_pos=el)
ex.ForwardOperator(fwd_free.gain, pos, None, "free", None)
assert (fwd.n_orient, fwd.n_src, fwd.n_chan) == (1, 42, 8)

lap("forward")
# --------------------------------------------------------------------------- #
# Covariances
# --------------------------------------------------------------------------- #
noise = arr(1e-6 * rng.standard_normal((8, 200)))
noise_ep = arr(1e-6 * rng.standard_normal((4, 8, 50)))
for method in ("empirical", "ledoit_wolf", "diagonal"):
    ex.compute_covariance(noise, method)
    ex.compute_covariance_epochs(noise_ep, method=method)
ex.compute_covariance(np.asarray(noise), "ledoit_wolf", shrinkage=0.1)
ex.compute_covariance_epochs(noise_ep, "ledoit_wolf", np.float32(0.2))
cov = ex.compute_covariance(noise)
assert cov.data.dtype == DT and cov.nfree.shape == ()
ex.NoiseCov(cov.data)
ex.NoiseCov(cov.data, nfree=10)
ex.NoiseCov(cov.data, np.int64(10))

lap("covariance")
# --------------------------------------------------------------------------- #
# Inverse operators, methods, imaging kernels
# --------------------------------------------------------------------------- #
inv_free = ex.make_inverse_operator(fwd_free, cov)
inv_loose = ex.make_inverse_operator(fwd_free, cov, depth=0.8, loose=0.2, rank=6)
inv_fixed = ex.make_inverse_operator(fwd_free, cov.data, fixed=True)
inv_fix2 = ex.make_inverse_operator(fwd, np.asarray(cov.data), depth=None)
ex.make_inverse_operator(
    fwd_free, cov, depth=np.float32(0.5), loose=1, avg_ref_proj=np.True_
)
assert inv_free.sing.dtype == DT and inv_free.source_cov.shape == (126,)
assert (inv_free.n_src, inv_free.n_chan) == (42, 8)

data = arr(1e-6 * rng.standard_normal((8, 5)))
epochs = arr(1e-6 * rng.standard_normal((2, 8, 5)))
methods = ("MNE", "dSPM", "sLORETA", ex.eLORETA(max_iter=200))
for method in methods:  # compiled: tracers inside the kernels
    ex.as_method(method)
    stc = ex.apply_inverse(data, inv_loose, 1 / 9, method)
    assert stc.data.dtype == DT and stc.data.shape == (42, 5)
ex.apply_inverse_epochs(epochs, inv_loose, 1 / 9, "dSPM", pick_ori="vector")
# The method x pick_ori grid op by op: the same annotations are checked (with
# concrete arrays) without 12 compilations. Each (method, pick_ori) once, each
# method through both entry points (evoked for None / "normal", epochs for
# "vector"; they share the kernels below the thin layer).
with jax.disable_jit():
    for method in methods:
        for pick_ori in (None, "normal", "vector"):
            if pick_ori == "vector":
                stc = ex.apply_inverse_epochs(
                    epochs, inv_loose, 1 / 9, method, pick_ori=pick_ori
                )
                assert stc.data.shape == (2, 42, 3, 5)
            else:
                stc = ex.apply_inverse(
                    data, inv_loose, 1 / 9, method, pick_ori=pick_ori
                )
            assert stc.data.dtype == DT
ex.apply_inverse(np.asarray(data), inv_fixed, np.float32(0.2), ex.dSPM())
ex.apply_inverse(data.tolist(), inv_fix2, 1, ex.MNE())
ex.apply_inverse_epochs(epochs, inv_fix2, jnp.asarray(0.2, DT), batch_size=np.int64(2))
for method, pick_ori in (("dSPM", None), (ex.sLORETA(), "vector")):
    k = ex.imaging_kernel(inv_loose, 1 / 9, method, pick_ori=pick_ori)
    ex.apply_imaging_kernel(data, k)
    ex.apply_imaging_kernel(epochs, k, batch_size=1)
    assert k.rows_normalised().shape == (126, 8) and (k.n_src, k.n_chan) == (42, 8)
ex.eLORETA(eps=np.float64(1e-6), max_iter=np.int64(200), force_equal=True, throw=False)
w, st = ex.eloreta_weights(
    inv_free.whitener @ fwd_free.gain,
    jnp.asarray(0.1, DT),
    n_orient=3,
    source_std=jnp.ones(126, DT),
    n_nzero=7,
    method=ex.eLORETA(max_iter=200),
)
assert w.shape == (42, 3, 3) and bool(st.converged)

a = cov.data / jnp.max(cov.data)
w8, v8 = linalg.eigh_sorted(a)
assert w8.shape == (8,) and v8.shape == (8, 8)
u, sv, vt = linalg.svd_thin(fwd.gain)
assert u.shape == (8, 8) and sv.shape == (8,) and vt.shape == (8, 42)
linalg.sqrtm_sym(jnp.stack([a, a]))
linalg.inv_sqrtm_sym(a, 1e-7)
white, eig = linalg.compute_whitener(cov.data, proj="average", rank=6)
assert white.shape == (6, 8) and eig.shape == (6,)
linalg.compute_whitener(cov.data, proj=None)
assert linalg.average_reference_basis(8).shape == (8, 7)

lap("inverse")

# Streaming, reductions, spectra, source power (issue 12)
ep_np = np.asarray(epochs)
src_pos_np, src_nn_np = np.asarray(fwd_free.src_pos), np.asarray(fwd_free.src_nn)
labels = ex.parcellate(src_pos_np, 3, seed=0)
red = ex.LabelTimeCourses(labels, mode="mean_flip", src_nn=src_nn_np)
tc = ex.apply_inverse_epochs(ep_np, inv_loose, 1 / 9, "dSPM", reduce=red, chunk_size=1)
assert tc.shape == (2, 3, 5)
ex.apply_inverse_epochs(iter([ep_np]), inv_loose, 1 / 9, "MNE", chunk_size=2)
ex.apply_inverse_raw(np.asarray(data), inv_loose, 1 / 9, "sLORETA", start=1, stop=4)
ex.apply_inverse(data, inv_fix2, 0.1, "MNE", tmin=-0.1, sfreq=np.float32(250))
ex.apply_inverse_epochs(ep_np, inv_fix2, 0.1, "MNE", tmin=np.float64(0), sfreq=250)
bp = ex.BandPower(100.0, 5, {"a": (0.0, 50.0)}, method="welch", n_fft=4)
ex.apply_inverse_epochs(ep_np, inv_loose, 1 / 9, "dSPM", reduce=bp, chunk_size=2)
ex.apply_inverse_cov(cov, inv_loose, 1 / 9, "dSPM")
lap("streaming")
# --------------------------------------------------------------------------- #
# Resolution
# --------------------------------------------------------------------------- #
R = ex.make_resolution_matrix(inv_loose, fwd_free, 1 / 9, "dSPM")
op = ex.make_resolution_operator(inv_loose, fwd_free, np.float32(1 / 9), ex.dSPM())
ex.make_resolution_matrix(inv_fix2, fwd, 0.1, "MNE", fwd_ori="free")
k = ex.imaging_kernel(inv_fixed, 1 / 9, "dSPM")
ex.make_resolution_matrix(k, fwd_free, fwd_ori="free")
opk = ex.make_resolution_operator(k, fwd)
assert op.dense().shape == op.shape == (126, 42) and op.n_src == 42
for RR in (R, op, opk, np.asarray(R)):
    ex.get_point_spread(RR, 3)
    ex.get_cross_talk(RR, [1, 2])
for RR in (R, op):
    ex.get_point_spread(RR, np.array([0, 5]))
    ex.get_cross_talk(RR, jnp.arange(3))
    ex.peak_localisation_error(RR)
    ex.spatial_spread(RR, "ctf", threshold=0.3, block_size=16)
    ex.relative_amplitude(RR, block_size=np.int64(8))
    ex.resolution_metrics(RR, pos, "psf", "sd_ext")
    ex.resolution_metrics(
        RR, np.asarray(pos), "ctf", ["peak_err", "maxrad_ext"], mne_compat=True
    )

lap("resolution")
# --------------------------------------------------------------------------- #
# SNR
# --------------------------------------------------------------------------- #
signal = fwd.gain @ arr(1e-8 * rng.standard_normal((42, 6))) + data[:, :1]
ex.estimate_snr(signal, inv_free)
ex.estimate_snr(np.asarray(signal), inv_fixed, nave=3, throw=False)

lap("snr")
# --------------------------------------------------------------------------- #
# LCMV
# --------------------------------------------------------------------------- #
sig = fwd_free.gain @ arr(1e-8 * rng.standard_normal((126, 300)))
data_cov = ex.compute_covariance(sig + arr(1e-6 * rng.standard_normal((8, 300))))
option_sets = (
    (fwd_free, dict(noise_cov=cov)),
    (fwd_free, dict(noise_cov=cov.data, pick_ori="max-power", weight_norm="nai")),
    (fwd_free, dict(pick_ori="vector", weight_norm=None, depth=0.8, rank=6)),
    (fwd, dict(noise_cov=cov, weight_norm="unit-noise-gain-invariant", reg=0.1)),
)
for f, kw in option_sets:
    filt = ex.make_lcmv(f, data_cov, **kw)
    ex.apply_lcmv(data, filt)
    ex.apply_lcmv_epochs(np.asarray(epochs), filt, batch_size=2)
    ex.apply_lcmv_cov(data_cov.data, filt)
    ex.make_lcmv_resolution_matrix(filt, f)
    filt.imaging_kernel()
    assert (filt.n_src, filt.n_chan) == (42, 8)
ex.make_lcmv_resolution_matrix(filt, fwd, fwd_ori="free")
ex.apply_lcmv_cov(data_cov, filt)
ex.make_lcmv(fwd_free, data_cov.data, cov, reg=np.float32(0.05), pick_ori="normal")

lap("lcmv")


# --------------------------------------------------------------------------- #
# Traced: jax.jit and jax.grad through the pipeline
# --------------------------------------------------------------------------- #
def loss(radii, sigmas, el, data, lambda2):
    sph = ex.SphereModel(radii, sigmas, jnp.asarray([0.0, 0.0, 0.04], DT))
    f = ex.make_sphere_forward_free(el, pos, sph, src_nn=nn, berg_scherg=bs)
    inv = ex.make_inverse_operator(f, cov, loose=0.3)
    stc = ex.apply_inverse(data, inv, lambda2, "sLORETA", pick_ori="normal")
    k = ex.imaging_kernel(inv, lambda2, "MNE")
    e = ex.apply_imaging_kernel(data, k)
    R = ex.make_resolution_operator(inv, f, lambda2, "dSPM")
    psf = ex.get_point_spread(R, [0, 1])
    return jnp.sum(stc.data) * 1e-2 + jnp.sum(e.data) * 1e6 + jnp.sum(psf) * 1e-9


args = (sphere.radii, sphere.conductivities, el, data, jnp.asarray(1 / 9, DT))
val, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)
assert all(g.dtype == DT for g in grads)
assert bool(jnp.isfinite(val)) and all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def lcmv_loss(gain, cdata, reg):
    f = ex.ForwardOperator(gain, pos, nn, "free", "average")
    filt = ex.make_lcmv(f, cdata, cov, reg=reg)
    return jnp.sum(ex.apply_lcmv(data, filt).data) + jnp.sum(
        ex.apply_lcmv_cov(cdata, filt).data
    )


jax.jit(jax.grad(lcmv_loss, argnums=(0, 1, 2)))(
    fwd_free.gain, data_cov.data, jnp.asarray(0.05, DT)
)


@jax.jit
def traced_misc(points, noise, data, lambda2):
    ex.fit_sphere_to_headshape(points)
    c = ex.compute_covariance(noise)
    ex.compute_covariance_epochs(noise.reshape(8, 4, 50).transpose(1, 0, 2))
    ex.sphere_series_coefficients(ex.SphereModel(), 20)
    ex.estimate_snr(data, inv_free)
    ex.eloreta_weights(inv_fix2.whitener @ fwd.gain, lambda2, n_orient=1)
    return c.data


traced_misc(el, noise, signal, jnp.asarray(0.1, DT))
lap("traced")
print(f"OK {DTYPE}")
