"""λ² selection (exg_jax.regularization): brute force, derivatives, selection, bad input.

The criteria are checked against dense brute-force computations that do not
use the operator's SVD: the MNE solution from ``apply_inverse`` and the
residual / penalty / hat-matrix trace formed from the whitener and the gain,
and the evidence as a dense Gaussian log density on the whitened channels.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exg_jax as ex
from exg_jax import regularization as reg
from exg_jax.status import RESULTS

LAMS = (1e-3, 1.0 / 9.0, 1.0, 30.0)
# The default 3-shell model's Berg–Scherg parameters (rounded), passed to skip
# the fit (~6 s); any lead field serves these tests.
BERG_SCHERG = (
    (0.99723608, 0.84162472, 0.55716498),
    (0.17328429, 0.64212932, 1.47002156),
)


# --------------------------------------------------------------------------- #
# Problems: one sphere forward (21 electrodes, ico-1, free, against infinity)
# and three operators built from it.
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def base():
    sphere = ex.SphereModel()
    _, elec = ex.standard_montage("standard_1020", radius=0.075, center=sphere.center)
    src_pos, src_nn = ex.ico_source_space(1, radius=0.055, center=sphere.center)
    fwd = ex.make_sphere_forward_free(
        jnp.asarray(elec),
        src_pos,
        sphere,
        src_nn=src_nn,
        reference=None,
        berg_scherg=BERG_SCHERG,
    )
    n = fwd.n_chan
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((n, n))
    cov = (mix @ mix.T / n + 0.1 * np.eye(n)) * 1e-12  # V²
    return dict(
        gain=np.asarray(fwd.gain),  # (21, 126), V/(A·m), against infinity
        src_pos=np.asarray(src_pos),
        src_nn=np.asarray(src_nn),
        cov=cov,
        rng=rng,
    )


def _fwd(b, case, gain=None):
    gain = b["gain"] if gain is None else gain
    if case == "fixed":  # ico-0 (the first 12 ico-1 vertices), normal components
        g3 = jnp.asarray(gain).reshape(gain.shape[0], -1, 3)[:, :12]
        nn = jnp.asarray(b["src_nn"][:12])
        g = jnp.einsum("cnj,nj->cn", g3, nn)
        g = g - jnp.mean(g, axis=0)
        return ex.ForwardOperator(
            g, jnp.asarray(b["src_pos"][:12]), nn, "fixed", "average"
        )
    if case == "full":  # no reference, no normals: Cartesian, full rank
        return ex.ForwardOperator(
            jnp.asarray(gain), jnp.asarray(b["src_pos"]), None, "free", None
        )
    g = jnp.asarray(gain)
    return ex.ForwardOperator(
        g - jnp.mean(g, axis=0),
        jnp.asarray(b["src_pos"]),
        jnp.asarray(b["src_nn"]),
        "free",
        "average",
    )


CASE_KW = {
    "loose": dict(depth=0.8, loose=0.2),  # average reference: rank n − 1, k = r
    "fixed": dict(depth=0.8),  # 12 sources: k = 12 < r = 20 (P_rest > 0)
    "full": dict(depth=0.8, loose=1.0),  # no projector: r = n = 21
}


@pytest.fixture(scope="module")
def ops(base):
    out = {}
    for case, kw in CASE_KW.items():
        fwd = _fwd(base, case)
        out[case] = (fwd, ex.make_inverse_operator(fwd, base["cov"], **kw))
    return out


@pytest.fixture(scope="module")
def data(base):
    rng = np.random.default_rng(1)
    n = base["gain"].shape[0]
    chol = np.linalg.cholesky(base["cov"])
    amp = rng.standard_normal((base["gain"].shape[1], 1)) * 2e-9
    wave = np.sin(np.linspace(0, 6, 30))[None, :]
    evoked = base["gain"] @ (amp * wave) + chol @ rng.standard_normal((n, 30))
    epochs = np.stack(
        [base["gain"] @ (amp * wave * (k + 1)) for k in range(3)]
    ) + np.einsum("cd,edt->ect", chol, rng.standard_normal((3, n, 30)))
    return dict(evoked=evoked, epochs=epochs)


# --------------------------------------------------------------------------- #
# Dense brute force (numpy, no SVD of the operator)
# --------------------------------------------------------------------------- #
def _gain_in_frame(fwd, inv):
    """The gain with columns in the operator's source frame (n_chan, n_src·n_orient)."""
    g = np.asarray(fwd.gain)
    if inv.n_orient == 3 and inv.orient_frame is not None:
        g3 = g.reshape(g.shape[0], -1, 3)
        g = np.einsum("cnj,nij->cni", g3, np.asarray(inv.orient_frame)).reshape(
            g.shape[0], -1
        )
    return g


def _brute(fwd, inv, y, lam):
    """(‖res‖², ‖x‖², df, N) of the MNE fit, from apply_inverse and dense algebra."""
    W = np.asarray(inv.whitener)
    G = np.asarray(fwd.gain)
    pick = "vector" if inv.n_orient == 3 else None
    if y.ndim == 3:
        x = np.asarray(ex.apply_inverse_epochs(y, inv, lam, "MNE", pick_ori=pick).data)
        ys, xs = list(y), list(x)
    else:
        x = np.asarray(ex.apply_inverse(y, inv, lam, "MNE", pick_ori=pick).data)
        ys, xs = [y], [x]
    res = pen = 0.0
    for yk, xk in zip(ys, xs, strict=True):
        if inv.n_orient == 3:
            xc = xk.reshape(-1, xk.shape[-1])  # Cartesian rows (x, y, z) per source
            if inv.orient_frame is not None:
                xf = np.einsum("nij,njt->nit", np.asarray(inv.orient_frame), xk)
                xf = xf.reshape(-1, xk.shape[-1])
            else:
                xf = xc
        else:
            xc = xf = xk
        r = W @ yk - W @ G @ xc
        res += np.sum(r * r)
        pen += np.sum(xf * xf / np.asarray(inv.source_cov)[:, None])
    eye = np.eye(G.shape[0])
    K = np.asarray(ex.apply_inverse(eye, inv, lam, "MNE", pick_ori=pick).data)
    df = np.trace(G @ K.reshape(-1, G.shape[0]))
    n_samples = sum(yk.shape[-1] for yk in ys)
    return res, pen, df, n_samples


def _dense_evidence(fwd, inv, y, lam, noise_scale=None):
    """log N(W y; 0, σ² (A Aᵀ/λ² + I)) summed over samples, densely."""
    W = np.asarray(inv.whitener)
    A = W @ _gain_in_frame(fwd, inv) * np.asarray(inv.source_std)[None, :]
    z = W @ np.concatenate(list(y), axis=-1) if y.ndim == 3 else W @ y
    r, n = z.shape
    M = A @ A.T / lam + np.eye(r)
    fit = np.trace(np.linalg.solve(M, z @ z.T))
    logdet = np.linalg.slogdet(M)[1]
    s2 = fit / (n * r) if noise_scale is None else noise_scale
    return -0.5 * (fit / s2 + n * logdet + n * r * np.log(2 * np.pi * s2))


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b) / np.abs(b)))


# --------------------------------------------------------------------------- #
# 1. Brute force
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("case", "kind"),
    [("loose", "evoked"), ("loose", "epochs"), ("fixed", "evoked"), ("full", "evoked")],
)
def test_criteria_match_brute_force(ops, data, case, kind):
    fwd, inv = ops[case]
    y = data[kind]
    stats = reg.data_stats(y)
    lams = np.asarray(LAMS)
    ev = np.asarray(reg.log_evidence(stats, inv, lams))
    ev1 = np.asarray(reg.log_evidence(y, inv, lams, noise_scale=1.0))
    g = np.asarray(reg.gcv(stats, inv, lams))
    d = np.asarray(reg.discrepancy(y, inv, lams, tau=0.5))
    lc = reg.l_curve(stats, inv, lams)
    df = np.asarray(reg.hat_matrix_trace(inv, lams))
    r = inv.rank
    worst = 0.0
    for i, lam in enumerate(LAMS):
        res, pen, df_b, n = _brute(fwd, inv, y, lam)
        checks = [
            (np.exp(2 * lc.rho[i]), res),
            (np.exp(2 * lc.eta[i]), pen),
            (df[i], df_b),
            (g[i], (res / (n * r)) / (1 - df_b / r) ** 2),
            (d[i] + 0.5, res / (n * r)),
            (ev[i], _dense_evidence(fwd, inv, y, lam)),
            (ev1[i], _dense_evidence(fwd, inv, y, lam, 1.0)),
        ]
        for got, ref in checks:
            worst = max(worst, _rel(got, ref))
    assert worst <= 1e-10, worst


def test_power_outside_the_eigen_fields(ops, data):
    """The fixed 12-source operator: k < r, so P_rest > 0 enters every criterion."""
    fwd, inv = ops["fixed"]
    assert inv.sing.shape[0] == 12 < inv.rank == 20
    w = reg.whitened_stats(reg.data_stats(data["evoked"]), inv)
    z = np.asarray(inv.whitener) @ data["evoked"]
    np.testing.assert_allclose(w.total, np.sum(z * z), rtol=1e-12)
    assert float(w.rest) > 0.05 * float(w.total)
    # the residual tends to P_rest as λ² → 0 (not to 0)
    rho = reg.l_curve(data["evoked"], inv, 1e-12).rho
    np.testing.assert_allclose(np.exp(2 * rho), w.rest, rtol=1e-8)


# --------------------------------------------------------------------------- #
# 2. L-curve curvature vs an independent closed form (derivatives in λ²)
# --------------------------------------------------------------------------- #
def _kappa_numpy(q, s2, rest, lam):
    res = np.sum(q * lam**2 / (s2 + lam) ** 2) + rest
    res1 = np.sum(q * 2 * lam * s2 / (s2 + lam) ** 3)
    res2 = np.sum(q * 2 * s2 * (s2 - 2 * lam) / (s2 + lam) ** 4)
    pen = np.sum(q * s2 / (s2 + lam) ** 2)
    pen1 = -2 * np.sum(q * s2 / (s2 + lam) ** 3)
    pen2 = 6 * np.sum(q * s2 / (s2 + lam) ** 4)
    r1, e1 = res1 / (2 * res), pen1 / (2 * pen)
    r2 = (res2 * res - res1**2) / (2 * res**2)
    e2 = (pen2 * pen - pen1**2) / (2 * pen**2)
    return (r1 * e2 - r2 * e1) / (r1**2 + e1**2) ** 1.5


@pytest.mark.parametrize("case", ["loose", "fixed"])
def test_l_curve_curvature_closed_form(ops, data, case):
    fwd, inv = ops[case]
    y = data["evoked"]
    W = np.asarray(inv.whitener)
    A = W @ _gain_in_frame(fwd, inv) * np.asarray(inv.source_std)[None, :]
    u, s, _ = np.linalg.svd(A, full_matrices=False)
    z = W @ y
    q = np.sum((u.T @ z) ** 2, axis=1)
    rest = max(np.sum(z * z) - np.sum(q), 0.0)
    lams = np.logspace(-5, 2.5, 16)
    got = np.asarray(reg.l_curve(y, inv, lams).curvature)
    ref = np.array([_kappa_numpy(q, s**2, rest, lam) for lam in lams])
    err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    assert err <= 1e-8, err


# --------------------------------------------------------------------------- #
# 3. Hat-matrix trace of every minimum-norm method
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["MNE", "dSPM", "sLORETA", "eLORETA"])
def test_hat_matrix_trace_methods(ops, method):
    fwd, inv = ops["loose"]
    G = np.asarray(fwd.gain)
    lams = (0.05, 1.0 / 9.0)
    df = np.asarray(reg.hat_matrix_trace(inv, jnp.asarray(lams), method))
    for i, lam in enumerate(lams):
        K = np.asarray(ex.imaging_kernel(inv, lam, method).kernel)  # Cartesian rows
        ref = np.trace(G @ K)
        assert abs(df[i] - ref) / ref <= 1e-10, (method, df[i], ref)
    if method == "eLORETA":  # eLORETA's factors depend on λ²: not the MNE trace
        mne_df = np.asarray(reg.hat_matrix_trace(inv, jnp.asarray(lams)))
        assert np.all(np.abs(df - mne_df) > 1e-3)


# --------------------------------------------------------------------------- #
# 4. A sweep of 1000 λ² in one compiled call; 8. jit == eager, vmap == loop
# --------------------------------------------------------------------------- #
def test_sweep_one_compile_equals_loop(ops, data):
    _, inv = ops["loose"]
    stats = reg.data_stats(data["evoked"])
    lams = jnp.logspace(-6, 3, 1000)
    count = lambda: eqx.debug.get_num_traces(reg._evaluate_traced)  # noqa: E731
    before = count()
    sweep = reg.gcv(stats, inv, lams)
    sweep2 = reg.gcv(stats, inv, lams * 1.5)  # new values: no new trace
    assert count() - before <= 1
    assert sweep.shape == (1000,) and sweep2.shape == (1000,)
    grid = reg.gcv(stats, inv, lams.reshape(10, 100))  # any shape
    np.testing.assert_array_equal(grid.reshape(-1), sweep)
    before = count()
    loop = np.array([float(reg.gcv(stats, inv, lam)) for lam in lams])
    assert count() - before <= 1  # one trace for the scalar shape, at most
    np.testing.assert_allclose(sweep, loop, rtol=1e-13)


def test_jit_and_vmap_equal_eager(ops, data):
    _, inv = ops["loose"]
    stats = reg.data_stats(data["evoked"])
    lams = jnp.asarray(LAMS)

    def all_criteria(stats, inv, lam):
        return jnp.stack(
            [
                reg.log_evidence(stats, inv, lam),
                reg.gcv(stats, inv, lam),
                reg.discrepancy(stats, inv, lam),
                reg.l_curve(stats, inv, lam).curvature,
                reg.hat_matrix_trace(inv, lam),
            ]
        )

    eager = all_criteria(stats, inv, lams)
    jitted = eqx.filter_jit(all_criteria)(stats, inv, lams)
    np.testing.assert_allclose(jitted, eager, rtol=1e-13)
    vmapped = jax.vmap(lambda lam: reg.gcv(stats, inv, lam))(lams)
    loop = [float(reg.gcv(stats, inv, lam)) for lam in LAMS]
    np.testing.assert_allclose(vmapped, loop, rtol=1e-13)
    np.testing.assert_allclose(eager[1], loop, rtol=1e-13)
    sel = reg.select_lambda2(stats, inv, "discrepancy")
    sel_j = eqx.filter_jit(lambda s, i: reg.select_lambda2(s, i, "discrepancy"))(
        stats, inv
    )
    np.testing.assert_allclose(sel_j.lambda2, sel.lambda2, rtol=1e-12)
    assert bool(sel_j.status.converged)


# --------------------------------------------------------------------------- #
# 5. Gradients (λ² and the gain, through make_inverse_operator) vs finite
#    differences; float32 vs float64
# --------------------------------------------------------------------------- #
def _criteria_fn(base, y):
    """Every criterion as a vector, a function of (gain, λ²); average reference."""

    def fn(gain, lam):
        dt = gain.dtype
        fwd = ex.ForwardOperator(
            gain - jnp.mean(gain, axis=0),
            jnp.asarray(base["src_pos"], dt),
            jnp.asarray(base["src_nn"], dt),
            "free",
            "average",
        )
        inv = ex.make_inverse_operator(
            fwd, jnp.asarray(base["cov"], dt), depth=None, loose=0.2
        )
        stats = reg.data_stats(jnp.asarray(y, dt))
        lc = reg.l_curve(stats, inv, lam)
        return jnp.stack(
            [
                reg.log_evidence(stats, inv, lam),
                reg.log_evidence(stats, inv, lam, noise_scale=1.0),
                reg.gcv(stats, inv, lam),
                reg.discrepancy(stats, inv, lam),
                lc.rho,
                lc.eta,
                lc.curvature,
                reg.hat_matrix_trace(inv, lam),
            ]
        )

    return fn


JVP_SEED = 5


def _direction(base):
    rng = np.random.default_rng(JVP_SEED)
    return rng.standard_normal(base["gain"].shape) * np.abs(base["gain"]).max()


@pytest.fixture(scope="module")
def jac(base, data):
    """Value and Jacobians (reverse mode) of every criterion, float64 and float32;
    in float64 also the jvps (forward mode) along a gain direction and along λ²,
    in the same compiled call. ``derivs`` (float64) serves the central
    differences too: only its value at the shifted points is used."""
    fn = _criteria_fn(base, data["evoked"])

    def value_aux(gain, lam):
        v = fn(gain, lam)
        return v, v

    jrev = jax.jacrev(value_aux, argnums=(0, 1), has_aux=True)

    @eqx.filter_jit
    def derivs(gain, lam, v):
        (jg, jl), val = jrev(gain, lam)
        # both jvps in one batched forward-mode pass: (v, 0) and (0, 1)
        tg = jnp.stack([v, jnp.zeros_like(v)])
        tl = jnp.stack([jnp.zeros_like(lam), jnp.ones_like(lam)])
        jv = jax.vmap(lambda a, b: jax.jvp(fn, (gain, lam), (a, b))[1])(tg, tl)
        return val, jg, jl, jv[0], jv[1]

    out = {}
    v = jnp.asarray(_direction(base))
    out[jnp.float64] = derivs(jnp.asarray(base["gain"]), jnp.asarray(0.2), v)
    jf = eqx.filter_jit(jrev)
    (jg, jl), val = jf(
        jnp.asarray(base["gain"], jnp.float32), jnp.asarray(0.2, jnp.float32)
    )
    out[jnp.float32] = (val, jg, jl)
    return derivs, out


def test_gradients_match_finite_differences(base, jac):
    derivs, out = jac
    val, jg, jl, jv_g, jv_l = (np.asarray(a) for a in out[jnp.float64])
    gain = jnp.asarray(base["gain"])
    lam = 0.2
    v = _direction(base)
    h = 1e-5

    def vfn(g, x):  # the criteria, from the same compiled call
        return np.asarray(derivs(g, jnp.asarray(x), jnp.asarray(v))[0])

    fd_g = (vfn(gain + h * v, lam) - vfn(gain - h * v, lam)) / (2 * h)
    ad_g = np.einsum("kij,ij->k", jg, v)
    hl = 1e-5 * lam
    fd_l = (vfn(gain, lam + hl) - vfn(gain, lam - hl)) / (2 * hl)
    # relative per criterion; the scale floor is the criterion's own size
    scale_g = np.maximum(np.abs(fd_g), 1e-3 * np.abs(val))
    scale_l = np.maximum(np.abs(fd_l), 1e-3 * np.abs(val) / lam)
    err_g = np.abs(ad_g - fd_g) / scale_g
    err_l = np.abs(jl - fd_l) / scale_l
    assert np.all(np.abs(fd_g) > 0) and np.all(np.abs(fd_l) > 0)
    assert np.max(err_g) <= 1e-6, err_g
    assert np.max(err_l) <= 1e-6, err_l
    # forward mode (jvp) equals reverse mode (jacrev) for every criterion
    assert np.max(np.abs(jv_g - ad_g) / scale_g) <= 1e-9
    assert np.max(np.abs(jv_l - jl) / scale_l) <= 1e-9


def test_float32_matches_float64(jac):
    _, out = jac
    v64, g64, l64 = out[jnp.float64][:3]
    v32, g32, l32 = out[jnp.float32]
    assert v32.dtype == g32.dtype == l32.dtype == jnp.float32
    for k in range(v64.shape[0]):
        assert abs(float(v32[k]) - float(v64[k])) <= 1e-2 * abs(float(v64[k])), k
        ga, gb = np.asarray(g32[k], np.float64), np.asarray(g64[k])
        assert np.linalg.norm(ga - gb) <= 1e-2 * np.linalg.norm(gb), k
        assert abs(float(l32[k]) - float(l64[k])) <= 1e-2 * abs(float(l64[k])), k


# --------------------------------------------------------------------------- #
# 6. select_lambda2
# --------------------------------------------------------------------------- #
LAMBDA2_TRUE = 1.0 / 9.0


@pytest.fixture(scope="module")
def simulated(base, ops):
    """T = 2000 samples from the model: x ~ N(0, R/λ²), noise ~ N(0, C)."""
    fwd, inv = ops["loose"]
    rng = np.random.default_rng(11)
    T = 2000
    G = _gain_in_frame(fwd, inv)
    x = rng.standard_normal((G.shape[1], T)) * (
        np.asarray(inv.source_std)[:, None] / np.sqrt(LAMBDA2_TRUE)
    )
    noise = np.linalg.cholesky(base["cov"]) @ rng.standard_normal((G.shape[0], T))
    return reg.data_stats(G @ x + noise)


@pytest.fixture(scope="module")
def selections(ops, simulated):
    _, inv = ops["loose"]
    rules = {
        "evidence": "evidence",
        "evidence_sigma1": reg.Evidence(noise_scale=1.0),
        "gcv": reg.GCV(),
        "lcurve": "lcurve",
        "discrepancy": reg.Discrepancy(tau=1.0),
        "snr": "snr",
    }
    return {k: reg.select_lambda2(simulated, inv, r) for k, r in rules.items()}


@pytest.mark.parametrize("rule", ["evidence", "evidence_sigma1", "snr"])
def test_select_recovers_lambda2(selections, rule):
    sel = selections[rule]
    assert bool(sel.status.converged)
    assert abs(float(sel.lambda2) / LAMBDA2_TRUE - 1) < 0.1, float(sel.lambda2)


@pytest.mark.parametrize(
    "rule", ["evidence", "evidence_sigma1", "gcv", "lcurve", "discrepancy"]
)
def test_select_is_stationary(ops, simulated, selections, rule):
    _, inv = ops["loose"]
    sel = selections[rule]
    lam = float(sel.lambda2)
    assert bool(sel.status.converged) and int(sel.status.stats["at_bound"]) == 0
    assert 1e-6 < lam < 1e3 and np.isfinite(float(sel.value))
    ts = np.linspace(np.log(1e-6), np.log(1e3), 200)
    i = np.searchsorted(ts, np.log(lam))
    delta = 1e-4  # in log λ²
    around = jnp.asarray(
        [np.exp(ts[i - 1]), lam * np.exp(-delta), lam * np.exp(delta), np.exp(ts[i])]
    )
    f = np.asarray(
        {
            "evidence": lambda: reg.log_evidence(simulated, inv, around),
            "evidence_sigma1": lambda: reg.log_evidence(
                simulated, inv, around, noise_scale=1.0
            ),
            "gcv": lambda: -reg.gcv(simulated, inv, around),
            "lcurve": lambda: reg.l_curve(simulated, inv, around).curvature,
            "discrepancy": lambda: reg.discrepancy(simulated, inv, around),
        }[rule]()
    )
    f_star = float(sel.value) * (-1 if rule == "gcv" else 1)
    if rule == "discrepancy":  # the root, bracketed by the grid
        assert abs(f_star) < 1e-12
        assert f[0] < 0 < f[3]
        return
    # better than the neighbouring grid values, and stationary: the central
    # difference of the criterion in log λ² vanishes (to O(delta²))
    assert f_star >= f[0] and f_star >= f[3]
    dfdt = (f[2] - f[1]) / (2 * delta)
    assert abs(dfdt) <= 1e-6 * max(abs(f_star), 1.0), dfdt


def test_select_implicit_gradient(ops, simulated):
    """dλ*/d(data) by the implicit-function theorem vs finite differences."""
    _, inv = ops["loose"]
    rng = np.random.default_rng(2)
    a = rng.standard_normal(simulated.scatter.shape)
    direction = (a @ a.T) * float(jnp.max(simulated.scatter)) / 40

    def lam_of(h, rule):
        s = reg.DataStats(simulated.scatter + h * direction, simulated.n_samples)
        return reg.select_lambda2(s, inv, rule).lambda2

    for rule in ("evidence", "discrepancy"):
        g = jax.grad(lambda h, r=rule: lam_of(h, r))(0.0)
        eps = 1e-4
        fd = (lam_of(eps, rule) - lam_of(-eps, rule)) / (2 * eps)
        assert abs(float(g) - float(fd)) <= 1e-6 * abs(float(fd)), (rule, g, fd)


@pytest.fixture(scope="module")
def pure_noise(base, ops):
    """The expected statistics of pure noise: scatter = N · C (whitened: N · I)."""
    return reg.DataStats(jnp.asarray(2000 * base["cov"]), jnp.asarray(2000.0))


@pytest.mark.parametrize(
    "rule", ["evidence", reg.Evidence(noise_scale=1.0), "gcv", "discrepancy", "snr"]
)
def test_pure_noise_is_at_bound(ops, pure_noise, rule):
    _, inv = ops["loose"]
    with pytest.raises(RuntimeError, match="upper bound"):
        reg.select_lambda2(pure_noise, inv, rule)
    with pytest.warns(RuntimeWarning, match="upper bound"):
        sel = reg.select_lambda2(pure_noise, inv, rule, throw=False)
    assert sel.status.result == RESULTS.at_bound and not bool(sel.status.converged)
    assert float(sel.lambda2) == pytest.approx(1e3, rel=1e-12)
    assert int(sel.status.stats["at_bound"]) == 1
    assert int(sel.status.iterations) == 0  # nothing refined at a bound


def test_pure_noise_traced(ops, pure_noise):
    _, inv = ops["loose"]
    f = eqx.filter_jit(
        lambda s, throw: reg.select_lambda2(s, inv, "discrepancy", throw=throw)
    )
    with pytest.raises(eqx.EquinoxRuntimeError, match="bound of the search range"):
        jax.block_until_ready(f(pure_noise, True))
    assert f(pure_noise, False).status.result == RESULTS.at_bound


def test_nan_operator_is_nonfinite(ops, simulated):
    _, inv = ops["loose"]
    bad = eqx.tree_at(lambda i: i.sing, inv, inv.sing.at[0].set(jnp.nan))
    with pytest.raises(RuntimeError, match="not finite"):
        reg.select_lambda2(simulated, bad, "gcv")
    with pytest.warns(RuntimeWarning):
        sel = reg.select_lambda2(simulated, bad, "gcv", throw=False)
    assert sel.status.result == RESULTS.nonfinite and np.isnan(float(sel.lambda2))


@settings(max_examples=5)
@given(log_scale=st.floats(-4.0, 4.0), rule=st.sampled_from(["evidence", "gcv"]))
def test_scale_invariance(ops, simulated, log_scale, rule):
    """Profiled evidence and GCV do not depend on the data's scale."""
    _, inv = ops["loose"]
    c2 = 10.0 ** (2 * log_scale)
    scaled = reg.DataStats(simulated.scatter * c2, simulated.n_samples)
    a = reg.select_lambda2(simulated, inv, rule).lambda2
    b = reg.select_lambda2(scaled, inv, rule).lambda2
    assert abs(float(b) / float(a) - 1) <= 1e-8


# --------------------------------------------------------------------------- #
# 7. Bad input
# --------------------------------------------------------------------------- #
def _bad_calls(inv, y):
    n = y.shape[0]
    return [
        (TypeError, "inv", lambda: reg.gcv(y, "inv.fif", 0.1)),
        (TypeError, "data", lambda: reg.gcv("data", inv, 0.1)),
        (TypeError, "data", lambda: reg.data_stats(None)),
        (ValueError, "data", lambda: reg.data_stats(np.ones(5))),
        (ValueError, "data", lambda: reg.gcv(np.ones((n - 1, 5)), inv, 0.1)),
        (ValueError, "data", lambda: reg.gcv(np.ones((2, 2, n, 5)), inv, 0.1)),
        (ValueError, "data", lambda: reg.gcv(np.full((n, 5), np.nan), inv, 0.1)),
        (ValueError, "data", lambda: reg.log_evidence(np.ones((n, 0)), inv, 0.1)),
        (
            ValueError,
            "data.scatter",
            lambda: reg.gcv(reg.DataStats(jnp.ones((3, 3)), jnp.asarray(1.0)), inv, 1),
        ),
        (
            ValueError,
            "data.n_samples",
            lambda: reg.gcv(reg.DataStats(jnp.eye(n), jnp.asarray(0.0)), inv, 1.0),
        ),
        (ValueError, "lambda2", lambda: reg.gcv(y, inv, 0.0)),
        (ValueError, "lambda2", lambda: reg.l_curve(y, inv, [0.1, -1.0])),
        (ValueError, "lambda2", lambda: reg.discrepancy(y, inv, np.nan)),
        (TypeError, "lambda2", lambda: reg.gcv(y, inv, "0.1")),
        (ValueError, "noise_scale", lambda: reg.log_evidence(y, inv, 1, noise_scale=0)),
        (ValueError, "noise_scale", lambda: reg.Evidence(noise_scale=-1.0)),
        (ValueError, "tau", lambda: reg.discrepancy(y, inv, 1.0, tau=-1)),
        (ValueError, "tau", lambda: reg.Discrepancy(tau=np.inf)),
        (ValueError, "rule", lambda: reg.select_lambda2(y, inv, "aic")),
        (TypeError, "rule", lambda: reg.select_lambda2(y, inv, ex.MNE())),
        (ValueError, "bounds", lambda: reg.select_lambda2(y, inv, bounds=(1.0, 0.1))),
        (ValueError, "bounds", lambda: reg.select_lambda2(y, inv, bounds=(0.0, 1.0))),
        (ValueError, "bounds", lambda: reg.select_lambda2(y, inv, bounds=(1, 2, 3))),
        (TypeError, "bounds", lambda: reg.select_lambda2(y, inv, bounds=1.0)),
        (ValueError, "n_grid", lambda: reg.select_lambda2(y, inv, n_grid=2)),
        (TypeError, "n_grid", lambda: reg.select_lambda2(y, inv, n_grid=3.5)),
        (TypeError, "throw", lambda: reg.select_lambda2(y, inv, throw="no")),
        (TypeError, "method", lambda: reg.hat_matrix_trace(inv, 0.1, ex.LcmvFilters)),
        (ValueError, "method", lambda: reg.hat_matrix_trace(inv, 0.1, "LCMV")),
        (ValueError, "lambda2", lambda: reg.hat_matrix_trace(inv, -0.1)),
    ]


def test_bad_input_names_the_argument(ops, data):
    _, inv = ops["loose"]
    y = data["evoked"]
    for err, name, call in _bad_calls(inv, y):
        with pytest.raises(err, match=name.replace(".", r"\.")):
            call()


def test_traced_bad_lambda2(ops, data):
    _, inv = ops["loose"]
    f = eqx.filter_jit(lambda lam: reg.gcv(data["evoked"], inv, lam))
    with pytest.raises(eqx.EquinoxRuntimeError, match="lambda2"):
        jax.block_until_ready(f(jnp.asarray([0.1, -1.0])))


def test_hat_matrix_trace_rejects_non_minimum_norm(ops):
    """A method object that is not a minimum-norm method is a TypeError."""

    class Other(ex.AbstractInverseMethod):
        name: ClassVar[str] = "other"

        def kernel(self, inv, lambda2, pick_ori):  # pragma: no cover
            raise AssertionError

    _, inv = ops["loose"]
    with pytest.raises(TypeError, match="minimum-norm"):
        reg.hat_matrix_trace(inv, 0.1, Other())
