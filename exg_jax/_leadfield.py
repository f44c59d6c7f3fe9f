"""Private pure-JAX kernels for the EEG potential of current dipoles in concentric spheres.

Both kernels return ``v`` with shape ``(n_elec, n_src, 3)`` such that the
potential at electrode ``e`` of a dipole of moment ``q`` (A·m) at source ``s`` is
``q · v[e, s] / (4 pi)`` (V), positions being taken relative to the sphere centre.
Conductivity scaling is carried by the weights (``lam`` or ``fn / sigma_outer``).

Homogeneous-sphere building block (conductivity 1, electrode at radius ``R``)::

    Phi(x) = 1/R * sum_{n>=1} (2n+1)/n * (|x|/R)**n * P_n(xhat . rhat)
    V(q, x) = q . grad_x Phi(x)

(the surface value of the Neumann function; the ``n = 0`` term is constant in
``x`` and drops out of the dipole potential). The multi-shell potential weights
term ``n`` by the exact coefficient ``f_n`` (divided by the scalp conductivity);
Berg–Scherg replaces ``f_n`` by ``sum_j lam_j mu_j**(n-1)``, i.e. dipoles at
``mu_j x`` with weights ``lam_j`` in a homogeneous sphere, whose potential has the
closed form used in ``_berg_scherg_field`` (Zhang 1995, as in MNE-Python).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# Below this eccentricity |x| / R the closed form loses digits to cancellation;
# the first three series terms are used instead (truncation error ~ b**3).
_SMALL_B = 1e-4


def berg_scherg_field(r_el, r_src, mu, lam):
    """Sum over equivalent dipoles of the homogeneous-sphere closed form.

    Parameters
    ----------
    r_el : (E, 3) electrode positions relative to the centre (m).
    r_src : (S, 3) source positions relative to the centre (m).
    mu : (F,) position scalings; lam : (F,) weights (already divided by the
        scalp conductivity, MNE-Python's ``sphere["lambda"]``).

    Returns
    -------
    v : (E, S, 3)

    Notes
    -----
    For a dipole at ``x`` (= ``mu_j`` times the source position) and an
    electrode at ``r`` (``R = |r|``, ``a = |r - x|``), the closed form is
    ``v = A x + B r`` with::

        c1 = 2 (r.x - |x|^2) / a^3 + 1/a - 1/R
        B  = 2 / a^3 + (a + R) / (R a (R a + R^2 - r.x))
        A  = (c1 - B r.x) / |x|^2

    Everything is computed per component on (E, F, S) arrays (no length-3 axis)
    with one reciprocal square root and one division per element. For
    ``|x| < 1e-4 min R`` the closed form cancels; the first three series terms
    (error ~ (|x|/R)^3) are used instead::

        A = -2.5 / R^3 - 7 (r.x) / R^5
        B = 3 / R^3 + 7.5 (r.x) / R^5 + 7/6 (15 (r.x)^2 / R^2 - 3 |x|^2) / R^5
    """
    rx_, ry_, rz_ = (r_el[:, k][:, None, None] for k in range(3))  # (E, 1, 1)
    r2 = rx_ * rx_ + ry_ * ry_ + rz_ * rz_
    inv_rn = lax.rsqrt(r2)
    rn = r2 * inv_rn
    r_min = jnp.min(rn)
    x = mu[:, None, None] * r_src[None]  # (F, S, 3)
    x2 = jnp.sum(x * x, axis=-1)  # (F, S)
    small = x2 < (_SMALL_B * r_min) ** 2
    # Double-where: a harmless position (inside every electrode's sphere) where
    # the closed form is not used, so that neither branch produces inf / NaN.
    safe = jnp.zeros_like(x).at[..., 2].set(0.5 * r_min)
    xs = jnp.where(small[..., None], safe, x)
    xs2 = jnp.sum(xs * xs, axis=-1)
    inv_x2 = 1.0 / xs2
    xs_x, xs_y, xs_z = xs[..., 0], xs[..., 1], xs[..., 2]  # (F, S)
    rdot = rx_ * xs_x + ry_ * xs_y + rz_ * xs_z  # (E, F, S)
    a2 = r2 - 2.0 * rdot + xs2
    inv_a = lax.rsqrt(a2)
    a = a2 * inv_a
    inv_a3 = inv_a * inv_a * inv_a
    c1 = 2.0 * (rdot - xs2) * inv_a3 + inv_a - inv_rn
    coef_b = 2.0 * inv_a3 + (a + rn) * inv_rn * inv_a / (rn * a + r2 - rdot)
    coef_a = (c1 - coef_b * rdot) * inv_x2
    # Series branch on the true (small) positions; evaluated only when some
    # position is small (``lax.cond``; under ``vmap`` both run, as ``where``).

    def with_series(ops):
        ca, cb = ops
        xt = jnp.where(small[..., None], x, 0.0)
        xt2 = jnp.sum(xt * xt, axis=-1)
        rdt = rx_ * xt[..., 0] + ry_ * xt[..., 1] + rz_ * xt[..., 2]
        inv_r3 = inv_rn * inv_rn * inv_rn
        inv_r5 = inv_r3 * inv_rn * inv_rn
        ta = -2.5 * inv_r3 - 7.0 * rdt * inv_r5
        tb = (
            3.0 * inv_r3
            + 7.5 * rdt * inv_r5
            + (7.0 / 6.0) * (15.0 * rdt * rdt / r2 - 3.0 * xt2) * inv_r5
        )
        return jnp.where(small, ta, ca), jnp.where(small, tb, cb)

    coef_a, coef_b = lax.cond(
        jnp.any(small), with_series, lambda ops: ops, (coef_a, coef_b)
    )
    lam3 = lam[:, None]
    coef_a = lam3 * coef_a  # (E, F, S)
    coef_b = jnp.sum(lam3 * coef_b, axis=1)  # (E, S)
    # Interleaved (E, S, 3) output written in one fused pass.
    v = r_el[:, None, :] * coef_b[..., None]
    for f in range(x.shape[0]):
        v = v + coef_a[:, f, :, None] * x[f][None]
    return v


def series_field(r_el, r_src, fn):
    """Multi-shell Legendre series ``sum_n fn[n-1] * grad_x Phi_n``, ``n = 1 .. len(fn)``.

    With ``A = sum fn (2n+1) b**(n-1) P_n(c)`` and
    ``B = sum fn (2n+1)/n b**(n-1) P_n'(c)`` (``b = |x|/R``, ``c = xhat . rhat``)::

        v = [(A - c B) xhat + B rhat] / R**2

    Legendre values by the three-term recurrence, derivatives by
    ``P'_{n+1} = P'_{n-1} + (2n+1) P_n``; one ``lax.scan`` over ``n``.
    """
    r = r_el[:, None, :]  # (E, 1, 3)
    rn = jnp.sqrt(jnp.sum(r * r, axis=-1))  # (E, 1)
    rhat = r / rn[..., None]
    x = r_src[None]  # (1, S, 3)
    x2 = jnp.sum(x * x, axis=-1)  # (1, S)
    zero = x2 == 0
    xn = jnp.sqrt(jnp.where(zero, 1.0, x2))
    xn = jnp.where(zero, 0.0, xn)
    ez = jnp.zeros_like(x).at[..., 2].set(1.0)
    xhat = jnp.where(zero[..., None], ez, x / jnp.where(zero, 1.0, xn)[..., None])
    b = xn / rn  # (E, S)
    c = jnp.sum(xhat * rhat, axis=-1)  # (E, S)
    dtype = c.dtype
    n_terms = fn.shape[0]
    ns = jnp.arange(1, n_terms + 1, dtype=dtype)
    one = jnp.ones_like(c)

    def step(carry, inp):
        p_prev, p, dp_prev, dp, bp, acc_a, acc_b = carry
        n, f = inp
        two_n1 = 2.0 * n + 1.0
        acc_a = acc_a + f * two_n1 * bp * p
        acc_b = acc_b + f * (two_n1 / n) * bp * dp
        p_next = (two_n1 * c * p - n * p_prev) / (n + 1.0)
        dp_next = dp_prev + two_n1 * p
        return (p, p_next, dp, dp_next, bp * b, acc_a, acc_b), None

    init = (one, c, jnp.zeros_like(c), one, one, jnp.zeros_like(c), jnp.zeros_like(c))
    carry, _ = lax.scan(step, init, (ns, fn.astype(dtype)))
    acc_a, acc_b = carry[5], carry[6]
    r2 = rn**2
    return ((acc_a - c * acc_b) / r2)[..., None] * xhat + (acc_b / r2)[..., None] * rhat


def exact_n_terms(b_max: float, tol: float = 1e-12, cap: int = 20000) -> int:
    """Smallest ``N`` whose series tail is below ``tol`` relative to the first term.

    The coefficients ``f_n`` are bounded by ``f_1`` for the models of interest (they
    decrease towards a positive limit) and ``|P_n'| <= n (n + 1) / 2``, so the tail
    after ``N`` terms is bounded, relative to the ``n = 1`` term ``3 f_1 / R**2``, by
    ``(2N + 3)(N + 2) b**N / (6 (1 - b))``.
    """
    if not 0.0 <= b_max < 1.0:
        raise ValueError(
            f"the series diverges for eccentricity |x|/R = {b_max!r} >= 1."
        )
    if b_max == 0.0:
        return 3
    n = 3
    while n < cap:
        tail = (2 * n + 3) * (n + 2) * b_max**n / (6.0 * (1.0 - b_max))
        if tail < tol:
            return n
        n += max(1, n // 20)
    raise ValueError(
        f"eccentricity |x|/R = {b_max:.6f} needs more than {cap} series terms for "
        f"tolerance {tol}; pass n_terms explicitly."
    )


@jax.named_call
def average_reference(gain):
    """Subtract the electrode mean from every column."""
    return gain - jnp.mean(gain, axis=0, keepdims=True)
