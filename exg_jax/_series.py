"""Private kernels for the spherical head model.

* exact multi-shell series coefficients ``f_n`` (scaled two-term recursion
  over the shell interfaces, vectorised over ``n``);
* the Berg–Scherg equivalent-dipole fit (variable projection: ``lambda`` in
  closed form, ``mu`` by a grid search followed by Levenberg–Marquardt, with
  an implicit-function-theorem adjoint at the optimum);
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


def _design(mu, fn, w):
    """Weighted target ``y`` and design ``A`` after eliminating ``lambda_0``.

    The constraint ``sum(lambda) = f_1`` (the dipole term is reproduced
    exactly) removes ``lambda_0``; the remaining terms ``n = 2..N`` give
    ``y_n = w_{n-1} (f_n - f_1 mu_0^(n-1))`` and
    ``A_nj = w_{n-1} (mu_j^(n-1) - mu_0^(n-1))``, ``j >= 1``.
    """
    n_terms = fn.shape[0]
    p = jnp.arange(1, n_terms, dtype=fn.dtype)  # n - 1
    wt = w[:-1]
    pw = jnp.power(mu[:, None], p[None, :])  # (n_fit, n_terms - 1)
    y = wt * (fn[1:] - pw[0] * fn[0])
    a = wt[:, None] * (pw[1:] - pw[0][None, :]).T
    return y, a


def spd_solve(a, b):
    """Solve ``a x = b`` for a small symmetric positive-definite ``a`` by an
    unrolled Cholesky factorisation (static size: plain arithmetic, cheap to
    compile and differentiable to any order)."""
    k = a.shape[0]
    lo = [[None] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1):
            acc = a[i, j]
            for m in range(j):
                acc = acc - lo[i][m] * lo[j][m]
            if i == j:
                lo[i][i] = jnp.sqrt(acc)
            else:
                lo[i][j] = acc / lo[j][j]
    z = [None] * k
    for i in range(k):
        acc = b[i]
        for m in range(i):
            acc = acc - lo[i][m] * z[m]
        z[i] = acc / lo[i][i]
    x = [None] * k
    for i in reversed(range(k)):
        acc = z[i]
        for m in range(i + 1, k):
            acc = acc - lo[m][i] * x[m]
        x[i] = acc / lo[i][i]
    return jnp.stack(x) if k else b


def _project(y, a):
    """Least-squares coefficients and residual of ``y ~ a c`` (normal equations
    on unit-norm columns: tiny, fully differentiable to any order)."""
    if a.shape[1] == 0:
        return jnp.zeros((0,), y.dtype), y
    norms = jnp.sqrt(jnp.sum(a * a, axis=0))
    safe = jnp.where(norms > 0, norms, 1.0)
    an = a / safe
    cn = spd_solve(an.T @ an, an.T @ y)
    resid = y - an @ cn
    return cn / safe, resid


def linear_fit(mu, fn, w):
    """``lambda`` (not yet divided by the scalp conductivity), residual vector, ``y``."""
    y, a = _design(mu, fn, w)
    coef, resid = _project(y, a)
    lam = jnp.concatenate([jnp.atleast_1d(fn[0] - jnp.sum(coef)), coef])
    return lam, resid, y


# MNE-Python's feasible set for COBYLA: |mu| <= 1 - 2 * catol, catol = 1e-6.
MU_BOUND = 1.0 - 2e-6


def _resid(mu, fn, w):
    return linear_fit(mu, fn, w)[1]


def _loss(mu, fn, w):
    r = _resid(mu, fn, w)
    return 0.5 * jnp.sum(r * r)


def _grid_starts(n_fit: int) -> np.ndarray:
    """All strictly decreasing ``n_fit``-tuples of a fixed grid in (-1, 1)."""
    g = 2
    while g < 40 and math.comb(g + 1, n_fit) <= 400:
        g += 1
    # Denser near mu = 1, where the dominant equivalent dipole sits.
    grid = np.tanh(np.linspace(-1.5, 3.6, g))
    return np.array(list(itertools.combinations(grid[::-1], n_fit)))


def _active(mu, g, bound):
    """Components held at the bound |mu| = bound with the gradient pushing out."""
    at_hi = (mu >= bound) & (g <= 0)
    at_lo = (mu <= -bound) & (g >= 0)
    return at_hi | at_lo


def _newton_solve(mu0, fn, w, max_iter: int):
    """Damped (Levenberg-style) Newton iteration on the variable-projection
    cost with the exact Hessian, projected on ``|mu| <= MU_BOUND``.

    A step solves ``(H + damp * s I) d = -g`` on the free components
    (``s`` = largest |diag H|); it is kept only if the cost decreases
    (a failed Cholesky gives a non-finite cost and is rejected, raising the
    damping). Close to the minimum the damping vanishes and convergence is
    quadratic, so the optimum is accurate to rounding, as the implicit
    adjoint assumes.
    """
    dtype = fn.dtype
    eps = jnp.finfo(dtype).eps
    bound = jnp.asarray(MU_BOUND, dtype)
    tol = jnp.sqrt(eps) * 1e-3
    grad_fn = jax.grad(_loss)
    hess_fn = jax.jacfwd(grad_fn)
    eye = jnp.eye(mu0.shape[0], dtype=dtype)

    def cost(mu):
        c = _loss(mu, fn, w)
        return jnp.where(jnp.isfinite(c), c, jnp.inf)

    def cond(state):
        it, _, _, _, done = state
        return (it < max_iter) & (~done)

    def body(state):
        it, mu, c, damp, _ = state
        g = grad_fn(mu, fn, w)
        h = hess_fn(mu, fn, w)
        free = ~_active(mu, g, bound)
        ff = free[:, None] & free[None, :]
        scale = jnp.max(jnp.abs(jnp.diag(h))) + eps
        hd = jnp.where(ff, h + damp * scale * eye, eye)
        step = jnp.where(free, spd_solve(hd, -jnp.where(free, g, 0.0)), 0.0)
        trial = jnp.clip(mu + step, -bound, bound)
        ct = cost(trial)
        ct = jnp.where(jnp.all(jnp.isfinite(trial)), ct, jnp.inf)
        accept = ct <= c
        mu_new = jnp.where(accept, trial, mu)
        c_new = jnp.where(accept, ct, c)
        damp_new = jnp.where(accept, damp * 0.1, jnp.maximum(damp, 1e-8) * 10.0)
        small_step = accept & (jnp.max(jnp.abs(trial - mu)) < tol)
        done = small_step | (damp_new > 1e10) | (c_new == 0)
        return it + 1, mu_new, c_new, damp_new, done

    state0 = (
        jnp.asarray(0),
        mu0,
        cost(mu0),
        jnp.asarray(1e-3, dtype),
        jnp.asarray(False),
    )
    it, mu, c, _, done = lax.while_loop(cond, body, state0)
    return mu, c, it, done


def _solve_mu_impl(fn, w, n_fit: int, n_starts: int, max_iter: int):
    dtype = fn.dtype
    starts = jnp.asarray(_grid_starts(n_fit), dtype)
    costs = jax.vmap(lambda m: _loss(m, fn, w))(starts)
    costs = jnp.where(jnp.isfinite(costs), costs, jnp.inf)
    k = min(n_starts, starts.shape[0])
    _, idx = lax.top_k(-costs, k)
    mus, cs, its, dones = jax.vmap(lambda m: _newton_solve(m, fn, w, max_iter))(
        starts[idx]
    )
    best = jnp.argmin(cs)
    return mus[best], its[best], dones[best]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def solve_mu(fn, w, n_fit, n_starts, max_iter):
    """Optimal ``mu`` (unsorted), iterations, converged flag."""
    return _solve_mu_impl(fn, w, n_fit, n_starts, max_iter)


def _solve_mu_fwd(fn, w, n_fit, n_starts, max_iter):
    out = _solve_mu_impl(fn, w, n_fit, n_starts, max_iter)
    return out, (out[0], fn, w)


def _solve_mu_bwd(n_fit, n_starts, max_iter, res, cts):
    # Implicit function theorem on the free components F of the optimum
    # (grad_F L(mu*, p) = 0; components at the bound do not move):
    # d mu_F = -H_FF^{-1} d_p grad_F L  =>  p_bar = -(d_p grad L)^T v,
    # H_FF v_F = mu_bar_F, v_A = 0.
    mu, fn, w = res
    mu_bar = cts[0]
    dtype = mu.dtype
    grad_fn = jax.grad(_loss, argnums=0)
    g = grad_fn(mu, fn, w)
    free = ~_active(mu, g, jnp.asarray(MU_BOUND, dtype))
    h = jax.jacfwd(grad_fn, argnums=0)(mu, fn, w)
    ff = free[:, None] & free[None, :]
    h = jnp.where(ff, h, jnp.eye(mu.shape[0], dtype=dtype))
    v = spd_solve(h, jnp.where(free, mu_bar, 0.0))
    v = jnp.where(free, v, 0.0)
    _, vjp = jax.vjp(lambda f_, w_: grad_fn(mu, f_, w_), fn, w)
    fn_bar, w_bar = vjp(-v)
    return fn_bar, w_bar


solve_mu.defvjp(_solve_mu_fwd, _solve_mu_bwd)


def berg_scherg_fit(fn, w, n_fit: int, n_starts: int = 4, max_iter: int = 100):
    """``(mu, lambda, rv, n_iter, converged)``, ``mu`` sorted descending."""
    mu, n_iter, converged = solve_mu(fn, w, n_fit, n_starts, max_iter)
    order = jnp.argsort(-lax.stop_gradient(mu))
    mu = mu[order]
    lam, resid, y = linear_fit(mu, fn, w)
    rss = jnp.sum(resid * resid)
    yy = jnp.sum(y * y)
    rv = rss / jnp.where(yy > 0, yy, 1.0)
    return mu, lam, rv, n_iter, converged


# ---------------------------------------------------------------------------
# Sphere through points
# ---------------------------------------------------------------------------


def fit_sphere_points(points, n_iter: int = 30):
    """Algebraic least-squares sphere, refined by Gauss–Newton on the
    geometric distances ``| |p_i - c| - R |``. Returns ``(radius, center)``."""
    p = jnp.asarray(points)
    mean = jnp.mean(p, axis=0)
    q = p - mean
    scale = jnp.sqrt(jnp.mean(jnp.sum(q * q, axis=1)))
    q = q / scale
    # |q|^2 = 2 q.c + (R^2 - |c|^2)
    a = jnp.concatenate([2.0 * q, jnp.ones((q.shape[0], 1), q.dtype)], axis=1)
    b = jnp.sum(q * q, axis=1)
    sol = jnp.linalg.lstsq(a, b)[0]
    c = sol[:3]
    r = jnp.sqrt(jnp.maximum(sol[3] + jnp.sum(c * c), 0.0))

    def body(_, state):
        c, r = state
        d = q - c
        dist = jnp.sqrt(jnp.sum(d * d, axis=1))
        safe = jnp.where(dist > 0, dist, 1.0)
        res = dist - r
        jmat = jnp.concatenate([-d / safe[:, None], -jnp.ones_like(dist)[:, None]], 1)
        step = jnp.linalg.lstsq(jmat, -res)[0]
        return c + step[:3], r + step[3]

    c, r = lax.fori_loop(0, n_iter, body, (c, r))
    return jnp.abs(r) * scale, c * scale + mean
