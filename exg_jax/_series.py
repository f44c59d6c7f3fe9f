"""Private kernels for the spherical head model.

* exact multi-shell series coefficients ``f_n`` (scaled two-term recursion
  over the shell interfaces, vectorised over ``n``);
* the Berg–Scherg equivalent-dipole fit (variable projection: ``lambda`` in
  closed form on a grid of ``mu``, then damped Newton on ``(mu, lambda)`` with
  the closed-form Hessian, or one damped Newton run from a warm start; a
  ``custom_jvp`` with the implicit-function-theorem tangent at the optimum,
  so forward, reverse and higher-order derivatives never unroll the loops);
* a least-squares sphere through a point cloud.

Everything here is pure JAX, follows the dtype of its inputs and is safe to
``jit`` / ``vmap`` / differentiate. Public wrappers and documentation live in
:mod:`exg_jax.sphere`.
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# ---------------------------------------------------------------------------
# Exact series coefficients
# ---------------------------------------------------------------------------


def series_coefficients(radii, sigmas, n_terms: int):
    """``f_n`` for ``n = 1 .. n_terms`` (see ``sphere_series_coefficients``).

    Transfer recursion over the interfaces, from the scalp inwards. At interface
    ``k`` (between shell ``k`` and ``k + 1``, radius ``r_k``) the pair
    ``(x, y)`` of coefficients of the decaying and growing parts of the
    ``n``-th potential harmonic is mapped by::

        x <- [(n + (n+1) c) q x + (n+1) (c - 1) y] / (2n + 1)
        y <- [n (c - 1) q x + (n + 1 + n c) y] / (2n + 1)

    with ``c = sigma_k / sigma_{k+1}`` and ``q = (r_k / r_{k+1}) ** (2n + 1)``.
    The decaying part is expressed at the radius of the current interface, so
    every factor stays bounded (``0 < q <= 1``): nothing overflows even in
    float32 for hundreds of terms. Starting from ``(x, y) = (n + 1, n)`` at the
    scalp, ``f_n = n / y`` after the innermost interface; one shell gives
    ``f_n = 1``.
    """
    radii = jnp.asarray(radii)
    sigmas = jnp.asarray(sigmas)
    dtype = jnp.result_type(radii, sigmas, jnp.float32)
    radii = radii.astype(dtype)
    sigmas = sigmas.astype(dtype)
    n = jnp.arange(1, n_terms + 1, dtype=dtype)
    two_n1 = 2.0 * n + 1.0
    x0 = n + 1.0
    y0 = n
    if radii.shape[-1] == 1:
        return jnp.ones_like(n)
    # Interfaces ordered from the outermost inwards.
    c = (sigmas[:-1] / sigmas[1:])[::-1]
    log_ratio = (jnp.log(radii[:-1]) - jnp.log(radii[1:]))[::-1]

    def step(carry, inp):
        x, y = carry
        ck, lr = inp
        q = jnp.exp(two_n1 * lr)
        c2 = ck - 1.0
        xq = q * x
        x_new = ((n + (n + 1.0) * ck) * xq + (n + 1.0) * c2 * y) / two_n1
        y_new = (n * c2 * xq + (n + 1.0 + n * ck) * y) / two_n1
        return (x_new, y_new), None

    (_, y), _ = lax.scan(step, (x0, y0), (c, log_ratio))
    return n / y


def berg_scherg_weights(inner_over_outer, n_terms: int, dtype):
    """MNE's weights ``w_k = sqrt((2k+1)(3k+1)/k) * f**(k-1)``, ``k = 1..n_terms``.

    ``f`` is the innermost over the outermost radius. Only ``w_1 .. w_{n_terms-1}``
    enter the fit (they weight the terms ``n = 2 .. n_terms``).
    """
    k = jnp.arange(1, n_terms + 1, dtype=dtype)
    return jnp.sqrt((2.0 * k + 1.0) * (3.0 * k + 1.0) / k) * jnp.power(
        inner_over_outer, k - 1.0
    )


# ---------------------------------------------------------------------------
# Berg–Scherg fit
# ---------------------------------------------------------------------------


def int_powers(x, n_max: int):
    """``x[..., None] ** k`` for ``k = 0 .. n_max`` by repeated squaring:
    elementwise products only (exact for negative ``x``, smooth derivatives,
    no ``log`` and no NaN at ``x = 0``)."""
    k = np.arange(n_max + 1)
    out = jnp.ones(x.shape + (n_max + 1,), x.dtype)
    sq = x[..., None]
    for b in range(max(int(n_max).bit_length(), 1)):
        bit = jnp.asarray(((k >> b) & 1).astype(bool))
        out = jnp.where(bit, out * sq, out)
        sq = sq * sq
    return out


def _design(mu, fn, w):
    """Weighted target ``y`` and design ``A`` after eliminating ``lambda_0``.

    The constraint ``sum(lambda) = f_1`` (the dipole term is reproduced
    exactly) removes ``lambda_0``; the remaining terms ``n = 2..N`` give
    ``y_n = w_{n-1} (f_n - f_1 mu_0^(n-1))`` and
    ``A_nj = w_{n-1} (mu_j^(n-1) - mu_0^(n-1))``, ``j >= 1``.
    """
    n_terms = fn.shape[0]
    wt = w[:-1]
    pw = int_powers(mu, n_terms - 1)[:, 1:]  # mu^(n-1), n = 2..N
    y = wt * (fn[1:] - pw[0] * fn[0])
    a = wt[:, None] * (pw[1:] - pw[0][None, :]).T
    return y, a


def spd_solve(a, b):
    """Solve ``a x = b`` for a small symmetric positive-definite ``a``
    (Cholesky; a matrix that is not positive definite gives non-finite ``x``)."""
    c = jax.scipy.linalg.cho_factor(a, lower=True)
    return jax.scipy.linalg.cho_solve(c, b)


def _project(y, a):
    """Least-squares coefficients and residual of ``y ~ a c`` by modified
    Gram–Schmidt, unrolled over the few (static) columns: plain vector
    arithmetic, so a large batch of grid points costs no per-matrix LAPACK
    calls. Used for the grid search and the starting ``lambda`` only."""
    k = a.shape[1]
    if k == 0:
        return jnp.zeros((0,), y.dtype), y
    q = []
    r = [[None] * k for _ in range(k)]
    for j in range(k):
        v = a[:, j]
        for i in range(j):
            r[i][j] = q[i] @ v
            v = v - r[i][j] * q[i]
        nrm = jnp.sqrt(v @ v)
        r[j][j] = nrm
        q.append(v / jnp.where(nrm > 0, nrm, 1.0))
    resid = y
    qty = []
    for j in range(k):
        qty.append(q[j] @ resid)
        resid = resid - qty[j] * q[j]
    c = [None] * k
    for j in reversed(range(k)):
        acc = qty[j]
        for i in range(j + 1, k):
            acc = acc - r[j][i] * c[i]
        c[j] = acc / r[j][j]
    return jnp.stack(c), resid


def linear_fit(mu, fn, w):
    """``lambda`` (not yet divided by the scalp conductivity), residual vector, ``y``."""
    y, a = _design(mu, fn, w)
    coef, resid = _project(y, a)
    lam = jnp.concatenate([jnp.atleast_1d(fn[0] - jnp.sum(coef)), coef])
    return lam, resid, y


# MNE-Python's feasible set for COBYLA: |mu| <= 1 - 2 * catol, catol = 1e-6.
MU_BOUND = 1.0 - 2e-6


def _grid_loss(mu, fn, w):
    """Variable-projection cost ``0.5 ||r||^2`` at fixed ``mu`` (grid stage)."""
    r = linear_fit(mu, fn, w)[1]
    return 0.5 * jnp.sum(r * r)


def _joint_resid(z, fn, w, n_fit: int):
    """Weighted residual of MNE's objective in the joint unknowns
    ``z = (mu_0 .. mu_{m-1}, lambda_1 .. lambda_{m-1})``, with
    ``lambda_0 = f_1 - sum(lambda_1..)`` so the dipole term is exact."""
    mu = z[:n_fit]
    lam_rest = z[n_fit:]
    lam = jnp.concatenate([jnp.atleast_1d(fn[0] - jnp.sum(lam_rest)), lam_rest])
    model = lam @ int_powers(mu, fn.shape[0] - 1)[:, 1:]  # n = 2..N
    return w[:-1] * (fn[1:] - model)


def _joint_loss(z, fn, w, n_fit: int):
    r = _joint_resid(z, fn, w, n_fit)
    return 0.5 * jnp.sum(r * r)


def _joint_derivs(z, fn, w, n_fit: int, hessian: bool = True):
    """Analytic residual, gradient and (optionally) exact Hessian of
    ``0.5 ||r||^2`` in ``z = (mu, lambda_1..)`` (closed form: the model is a
    sum of powers, so this is much lighter to compile than nested autodiff).

    With ``p = n - 1`` and ``omega = w_{n-1}``: ``dr/dmu_j = -omega lambda_j p mu_j^(p-1)``,
    ``dr/dlambda_j = -omega (mu_j^p - mu_0^p)`` (``j >= 1``); the non-zero second
    derivatives are ``d2r/dmu_j^2 = -omega lambda_j p (p-1) mu_j^(p-2)``,
    ``d2r/dmu_j dlambda_j = -omega p mu_j^(p-1)`` and
    ``d2r/dmu_0 dlambda_j = +omega p mu_0^(p-1)``.
    """
    n_terms = fn.shape[0]
    dtype = fn.dtype
    mu = z[:n_fit]
    lam_rest = z[n_fit:]
    lam = jnp.concatenate([jnp.atleast_1d(fn[0] - jnp.sum(lam_rest)), lam_rest])
    e = int_powers(mu, n_terms - 1)  # (m, N): mu^k, k = 0..N-1
    p = jnp.arange(1, n_terms, dtype=dtype)
    om = w[:-1]
    p0 = e[:, 1:]  # mu^p
    p1 = p * e[:, :-1]  # p mu^(p-1)
    r = om * (fn[1:] - lam @ p0)
    j_mu = -(om[:, None] * (lam[:, None] * p1).T)
    j_lam = -(om[:, None] * (p0[1:] - p0[0][None, :]).T)
    jac = jnp.concatenate([j_mu, j_lam], axis=1)
    g = jac.T @ r
    if not hessian:
        return r, g, None
    e2 = jnp.concatenate([jnp.zeros((n_fit, 1), dtype), e[:, :-2]], axis=1)
    p2 = p * (p - 1.0) * e2  # p (p-1) mu^(p-2)
    ro = r * om
    s_mumu = -jnp.diag((lam[:, None] * p2) @ ro)
    cross = -(p1 @ ro)  # (m,): sum_i r_i omega_i p mu_j^(p-1)
    s_mulam = jnp.zeros((n_fit, n_fit - 1), dtype)
    if n_fit > 1:
        s_mulam = s_mulam.at[0, :].set(-cross[0])
        s_mulam = s_mulam.at[jnp.arange(1, n_fit), jnp.arange(n_fit - 1)].set(cross[1:])
    top = jnp.concatenate([s_mumu, s_mulam], axis=1)
    bottom = jnp.concatenate(
        [s_mulam.T, jnp.zeros((n_fit - 1, n_fit - 1), dtype)], axis=1
    )
    h = jac.T @ jac + jnp.concatenate([top, bottom], axis=0)
    return r, g, h


def _grid_starts(n_fit: int) -> np.ndarray:
    """All strictly decreasing ``n_fit``-tuples of a fixed grid in (-1, 1)."""
    g = 2
    while g < 40 and math.comb(g + 1, n_fit) <= 400:
        g += 1
    # Denser near mu = 1, where the dominant equivalent dipole sits.
    grid = np.tanh(np.linspace(-1.5, 3.6, g))
    return np.array(list(itertools.combinations(grid[::-1], n_fit)))


def _free_mask(z, g, n_fit: int, bound):
    """False for ``mu`` components held at ``|mu| = bound`` with the gradient
    pushing outwards; ``lambda`` components are always free."""
    is_mu = jnp.arange(z.shape[0]) < n_fit
    at_hi = (z >= bound) & (g <= 0)
    at_lo = (z <= -bound) & (g >= 0)
    return ~(is_mu & (at_hi | at_lo))


# Why not optimistix (``optx.least_squares`` + ``LevenbergMarquardt`` /
# ``GaussNewton``, or ``optx.minimise`` + ``BFGS``), tried from the same 8
# starts (rtol = atol = 1e-14) on 19 models (3-shell default geometry with
# skull 0.001-0.33 S/m, MNE's 4-shell, a 2- and another 4-shell model):
# (1) No bound constraints, and ``|mu| <= MU_BOUND`` (MNE's feasible set;
# ``mu r0`` must stay inside the sphere) matters: LM left it from 7 of 8
# starts at skull 0.0069 S/m (best feasible cost 2x ours) and from all 8 for
# the homogeneous 3-shell model and a 4-shell one (no usable fit);
# GaussNewton left it from every start. A ``tanh`` reparametrisation sends
# ``u -> inf`` at the bound instead. Where the optimum is interior LM and
# BFGS reach our cost to 1e-13, with 2-10x more steps (up to max_steps).
# (2) The implicit derivative must drop the ``mu`` held at the bound
# (``_free_mask``); ``optx.ImplicitAdjoint`` assumes ``grad = 0`` in every
# unknown. (3) The exact Hessian (``_joint_derivs``) converges quadratically,
# to rounding, which that derivative relies on (tests/test_sphere.py: gradients
# within 2e-7 of finite differences); ``J^T J`` (LM) is linear at best on
# this non-zero-residual problem where two ``mu`` nearly coalesce.
def _newton_solve(z0, fn, w, n_fit: int, max_iter: int):
    """Damped (Levenberg-style) Newton iteration on MNE's objective with the
    exact Hessian, ``mu`` projected on ``|mu| <= MU_BOUND``.

    A step solves ``(H + damp * s I) d = -g`` on the free components
    (``s`` = largest |diag H|); it is kept only if the cost does not increase
    (a failed Cholesky gives a non-finite trial and is rejected, raising the
    damping). Near the minimum the damping vanishes and convergence is
    quadratic, so the optimum is accurate to rounding, as the implicit
    derivative (``_solve_jvp``) assumes.
    """
    dtype = fn.dtype
    eps = jnp.finfo(dtype).eps
    bound = jnp.asarray(MU_BOUND, dtype)
    tol = 1e3 * eps
    eye = jnp.eye(z0.shape[0], dtype=dtype)
    is_mu = jnp.arange(z0.shape[0]) < n_fit
    # Rounding scale of the gradient: |J| * |w f| (J ~ w * O(n) powers).
    p = jnp.arange(1, fn.shape[0], dtype=dtype)
    gscale = jnp.sqrt(jnp.sum((w[:-1] * p) ** 2)) * jnp.sqrt(
        jnp.sum((w[:-1] * fn[1:]) ** 2)
    )

    def evaluate(z):
        r, g, h = _joint_derivs(z, fn, w, n_fit)
        c = 0.5 * jnp.sum(r * r)
        ok = jnp.isfinite(c) & jnp.all(jnp.isfinite(z))
        return jnp.where(ok, c, jnp.inf), g, h

    def cond(state):
        it, _, _, _, _, _, done = state
        return (it < max_iter) & (~done)

    def body(state):
        it, z, c, g, h, damp, _ = state
        free = _free_mask(z, g, n_fit, bound)
        ff = free[:, None] & free[None, :]
        scale = jnp.max(jnp.abs(jnp.diag(h))) + eps
        hd = jnp.where(ff, h + damp * scale * eye, eye)
        step = jnp.where(free, spd_solve(hd, -jnp.where(free, g, 0.0)), 0.0)
        trial = jnp.where(is_mu, jnp.clip(z + step, -bound, bound), z + step)
        ct, gt, ht = evaluate(trial)
        # Near the optimum the decrease (~ g H^-1 g) falls below the cost's
        # rounding (the residual is a small difference of O(1) terms) long
        # before z has converged: there a step is kept when it does not raise
        # the cost beyond that rounding and it reduces the gradient.
        g_ok = jnp.sum(jnp.where(free, gt, 0.0) ** 2) < jnp.sum(
            jnp.where(free, g, 0.0) ** 2
        )
        accept = (ct < c) | ((ct <= c * (1.0 + jnp.sqrt(eps))) & g_ok)
        z_new = jnp.where(accept, trial, z)
        c_new = jnp.where(accept, ct, c)
        g_new = jnp.where(accept, gt, g)
        h_new = jnp.where(accept, ht, h)
        damp_new = jnp.where(accept, damp * 0.1, jnp.maximum(damp, 1e-8) * 10.0)
        # A small step only means convergence when it is (nearly) undamped.
        small_step = (
            accept
            & (damp <= 1e-6)
            & (jnp.max(jnp.abs(trial - z)) < tol * (1.0 + jnp.max(jnp.abs(z))))
        )
        g_tiny = jnp.max(jnp.abs(jnp.where(free, gt, 0.0))) <= 0.02 * eps * gscale
        done = small_step | (accept & g_tiny) | (damp_new > 1e10) | (c_new == 0)
        return it + 1, z_new, c_new, g_new, h_new, damp_new, done

    c0, g0, h0 = evaluate(z0)
    state0 = (
        jnp.asarray(0),
        z0,
        c0,
        g0,
        h0,
        jnp.asarray(1e-3, dtype),
        jnp.asarray(False),
    )
    it, z, c, g, _, _, _ = lax.while_loop(cond, body, state0)
    free = _free_mask(z, g, n_fit, bound)
    # Relative gradient at the returned point: largest free gradient component
    # over its rounding scale. Converged when at rounding level (<= eps).
    gmax = jnp.max(jnp.abs(jnp.where(free, g, 0.0)))
    change = gmax / jnp.where(gscale > 0, gscale, 1.0)
    converged = change <= eps
    return z, c, it, converged, change


def _cold_solve(fn, w, n_fit: int, n_starts: int, max_iter: int):
    """Grid stage, then damped Newton from ``n_starts`` grid points; the best
    start's ``(z, n_iter, converged, change)``."""
    dtype = fn.dtype
    starts_np = _grid_starts(n_fit)
    starts = jnp.asarray(starts_np, dtype)
    # Global stage: variable-projection cost on the grid (lambda in closed form).
    costs = jax.vmap(lambda m: _grid_loss(m, fn, w))(starts)
    costs = jnp.where(jnp.isfinite(costs), costs, jnp.inf)
    k = min(n_starts, starts.shape[0])
    # Half of the starts are the best grid points overall; the other half the
    # best among well-separated tuples (adjacent mu >= 0.1 apart). Without the
    # second half every start can fall into the basin where two mu coalesce
    # (seen for skull conductivities 0.016-0.02 S/m), far from the optimum.
    if n_fit > 1:
        spread = np.min(-np.diff(starts_np, axis=1), axis=1) >= 0.1
    else:
        spread = np.ones(len(starts_np), bool)
    k2 = min(k // 2, int(spread.sum()))
    _, idx1 = lax.top_k(-costs, k - k2)
    _, idx2 = lax.top_k(-jnp.where(jnp.asarray(spread), costs, jnp.inf), k2)
    idx = jnp.concatenate([idx1, idx2])
    mu0 = starts[idx]
    lam0 = jax.vmap(lambda m: linear_fit(m, fn, w)[0])(mu0)
    z0 = jnp.concatenate([mu0, lam0[:, 1:]], axis=1)
    # Local stage: damped Newton in (mu, lambda) from the best grid points.
    zs, cs, its, dones, changes = jax.vmap(
        lambda z: _newton_solve(z, fn, w, n_fit, max_iter)
    )(z0)
    best = jnp.argmin(cs)
    return zs[best], its[best], dones[best], changes[best]


def _solve_impl(fn, w, z_init, n_fit: int, n_starts: int, max_iter: int, tol: float):
    """Cold solve (``z_init`` None), or one Newton run from ``z_init`` kept
    when it is finite, its gradient converged and its series misfit is
    ``<= tol``; otherwise the cold solve (``lax.cond``)."""
    if z_init is None:
        return _cold_solve(fn, w, n_fit, n_starts, max_iter)
    bound = jnp.asarray(MU_BOUND, fn.dtype)
    is_mu = jnp.arange(z_init.shape[0]) < n_fit
    z0 = jnp.where(is_mu, jnp.clip(z_init, -bound, bound), z_init)
    z, c, n_iter, converged, change = _newton_solve(z0, fn, w, n_fit, max_iter)
    # Series misfit (the public status's): 2 c / ||w f||^2 over n = 2..N.
    den = jnp.sum((w[:-1] * fn[1:]) ** 2)
    misfit = 2.0 * c / jnp.where(den > 0, den, 1.0)
    # Stricter than the status's "converged or misfit <= tol": from far-off
    # starts the run can stop unconverged at misfit 2e-4..7e-4 (the cold fit:
    # ~1e-5), which must fall back. Converged runs are local optima; those
    # from a start where all mu coalesce reach misfit 1e-3..5e-2 (fall back)
    # but also 1e-4..5e-4 (kept: a warm start is only as good as init).
    # A run that lands where two mu coincide sits on a spurious stationary
    # point (the pair acts as one dipole, its lambda split is arbitrary):
    # seen from 0.0042 to 0.0141 S/m skull, misfit 2e-4 vs 1.5e-5 cold, a
    # forward 15 % off on noise-free dipole data. Such runs fall back.
    mu = z[:n_fit]
    gap = jnp.abs(mu[:, None] - mu[None, :]) + jnp.eye(n_fit, dtype=mu.dtype)
    apart = jnp.min(gap) > 1e-4
    ok = (
        jnp.isfinite(c) & jnp.all(jnp.isfinite(z)) & converged & (misfit <= tol) & apart
    )
    # lax.cond: the grid and the n_starts runs are only paid for on a miss
    # (under vmap with a batched ``ok`` both branches run, as a select).
    return lax.cond(
        ok,
        lambda: (z, n_iter, converged, change),
        lambda: _cold_solve(fn, w, n_fit, n_starts, max_iter),
    )


@partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def solve_joint(fn, w, z_init, n_fit, n_starts, max_iter, tol):
    """Optimal ``z = (mu, lambda_1..)`` (``mu`` unsorted), iterations,
    converged, relative gradient (only ``z`` carries a derivative; it does
    not depend on ``z_init``, the optional warm start)."""
    return _solve_impl(fn, w, z_init, n_fit, n_starts, max_iter, tol)


@solve_joint.defjvp
def _solve_jvp(n_fit, n_starts, max_iter, tol, primals, tangents):
    # Implicit function theorem on the free components F of the optimum
    # (grad_F L(z*, p) = 0; mu components held at the bound do not move):
    # dz_F = -H_FF^{-1} (d_p grad_F L)(p_dot), dz = 0 elsewhere. Linear in
    # p_dot through transposable ops (jvp of the closed-form gradient, a
    # Cholesky solve, selects), so reverse mode is JAX's linearise+transpose.
    # The primal comes from solve_joint itself: differentiating this rule
    # (hessian, jacfwd of grad) re-enters the rule and never the while
    # loops; H and the gradient are closed forms in (z*, fn, w).
    fn, w, z_init = primals
    fn_dot, w_dot, _ = tangents
    out = solve_joint(fn, w, z_init, n_fit, n_starts, max_iter, tol)
    z, n_iter, converged, change = out
    dtype = z.dtype
    _, g, h = _joint_derivs(z, fn, w, n_fit)
    free = _free_mask(z, g, n_fit, jnp.asarray(MU_BOUND, dtype))
    ff = free[:, None] & free[None, :]
    h = jnp.where(ff, h, jnp.eye(z.shape[0], dtype=dtype))
    _, g_dot = jax.jvp(
        lambda f_, w_: _joint_derivs(z, f_, w_, n_fit, False)[1],
        (fn, w),
        (fn_dot, w_dot),
    )
    z_dot = jnp.where(free, -spd_solve(h, jnp.where(free, g_dot, 0.0)), 0.0)
    # Integer / bool outputs take float0 tangents; change has a zero tangent.
    f0 = jax.dtypes.float0
    out_dot = (
        z_dot,
        np.zeros(np.shape(n_iter), f0),
        np.zeros(np.shape(converged), f0),
        jnp.zeros_like(change),
    )
    return out, out_dot


def berg_scherg_fit(
    fn,
    w,
    n_fit: int,
    n_starts: int = 8,
    max_iter: int = 100,
    z_init=None,
    tol: float = 1e-3,
):
    """``(mu, lambda, rv, n_iter, converged, change)``, ``mu`` sorted descending.

    ``rv`` is MNE-Python's relative residual: the weighted residual sum of
    squares over ``||y||^2``, ``y_n = w_{n-1} (f_n - f_1 mu_0^(n-1))`` with
    ``mu_0`` the largest ``mu``. ``n_iter``, ``converged`` and ``change`` are
    those of the retained start: ``change`` is the relative gradient at the
    returned optimum, ``max_F |g_F| / gscale`` over the free unknowns ``F``
    (``gscale = ||w p|| ||w f||``, ``p = n - 1``: the rounding scale of the
    gradient), and ``converged`` is ``change <= eps``. (The last step is not
    reported: the iteration may stop on a tiny undamped step or on a rejected
    one, which says less about the optimum than its gradient.)

    ``z_init`` (``(2 n_fit - 1,)``, the internal ``(mu, lambda_1..)``, or
    None): warm start, see ``_solve_impl``; ``tol``: the series misfit a warm
    run must reach to be kept (``BS_MISFIT_TOL``).
    """
    z, n_iter, converged, change = solve_joint(
        fn, w, z_init, n_fit, n_starts, max_iter, tol
    )
    change = lax.stop_gradient(change)
    mu = z[:n_fit]
    lam = jnp.concatenate([jnp.atleast_1d(fn[0] - jnp.sum(z[n_fit:])), z[n_fit:]])
    order = jnp.argsort(-lax.stop_gradient(mu))
    mu, lam = mu[order], lam[order]
    resid = _joint_resid(z, fn, w, n_fit)
    rss = jnp.sum(resid * resid)
    y = w[:-1] * (fn[1:] - int_powers(mu[0], fn.shape[0] - 1)[1:] * fn[0])
    yy = jnp.sum(y * y)
    rv = rss / jnp.where(yy > 0, yy, 1.0)
    return mu, lam, rv, n_iter, converged, change


# ---------------------------------------------------------------------------
# Sphere through points
# ---------------------------------------------------------------------------


def _wls(a, b, wt):
    """Weighted least squares by normal equations (4 unknowns; the points are
    centred and scaled first, and degenerate inputs are rejected upstream)."""
    aw = a * wt[:, None]
    return jnp.linalg.solve(aw.T @ a, aw.T @ b)


def fit_sphere_points(points, weights=None, n_iter: int = 12):
    """Algebraic least-squares sphere, refined by Gauss–Newton on the
    geometric distances ``| |p_i - c| - R |``. Returns ``(radius, center)``.

    ``weights`` (n,), >= 0, lets callers pad ``points`` to a fixed size with
    zero-weight rows (one compilation per size bucket).
    """
    p = jnp.asarray(points)
    if weights is None:
        weights = jnp.ones(p.shape[0], p.dtype)
    wt = jnp.asarray(weights, p.dtype)
    mean = jnp.sum(wt[:, None] * p, axis=0) / jnp.sum(wt)
    q = p - mean
    scale = jnp.sqrt(jnp.sum(wt * jnp.sum(q * q, axis=1)) / jnp.sum(wt))
    q = q / scale
    # |q|^2 = 2 q.c + (R^2 - |c|^2): linear in (c, R^2 - |c|^2).
    a = jnp.concatenate([2.0 * q, jnp.ones((q.shape[0], 1), q.dtype)], axis=1)
    b = jnp.sum(q * q, axis=1)
    sol = _wls(a, b, wt)
    c = sol[:3]
    r = jnp.sqrt(jnp.maximum(sol[3] + jnp.sum(c * c), 0.0))

    def body(_, state):
        c, r = state
        d = q - c
        dist = jnp.sqrt(jnp.sum(d * d, axis=1))
        safe = jnp.where(dist > 0, dist, 1.0)
        res = dist - r
        jmat = jnp.concatenate([-d / safe[:, None], -jnp.ones_like(dist)[:, None]], 1)
        step = _wls(jmat, -res, wt)
        return c + step[:3], r + step[3]

    c, r = lax.fori_loop(0, n_iter, body, (c, r))
    return jnp.abs(r) * scale, c * scale + mean
