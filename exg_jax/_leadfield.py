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


def _taylor_field(r, rn, x):
    """First three series terms of grad_x Phi for small |x| / R (conductivity 1).

    r : (E, 1, 3) electrode vectors, rn : (E, 1, 1) their norms, x : (..., S, 3).
    """
    rhat = r / rn
    xr = jnp.sum(x * rhat, axis=-1, keepdims=True)
    xx = jnp.sum(x * x, axis=-1, keepdims=True)
    t1 = 3.0 * rhat / rn**2
    t2 = 2.5 * (3.0 * xr * rhat - x) / rn**3
    t3 = (7.0 / 6.0) * (15.0 * xr**2 * rhat - 3.0 * xx * rhat - 6.0 * xr * x) / rn**4
    return t1 + t2 + t3


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
    """
    r = r_el[:, None, None, :]  # (E, 1, 1, 3)
    r2 = jnp.sum(r * r, axis=-1, keepdims=True)
    rn = jnp.sqrt(r2)
    x = mu[:, None, None] * r_src[None]  # (F, S, 3)
    x = x[None]  # (1, F, S, 3)
    x2 = jnp.sum(x * x, axis=-1, keepdims=True)
    small = x2 < (_SMALL_B**2) * r2  # (E, F, S, 1)
    # Double-where: give the closed form a harmless position where it is not used.
    x_safe = jnp.where(small, 0.5 * r, x)
    x2_safe = jnp.sum(x_safe * x_safe, axis=-1, keepdims=True)
    d = r - x_safe
    a2 = jnp.sum(d * d, axis=-1, keepdims=True)
    a = jnp.sqrt(a2)
    rx = jnp.sum(r * x_safe, axis=-1, keepdims=True)
    big_f = a * (rn * a + r2 - rx)
    c1 = 2.0 * (rx - x2_safe) / (a * a2) + 1.0 / a - 1.0 / rn
    c2 = 2.0 / (a * a2) + (a + rn) / (rn * big_f)
    closed = (c1 - c2 * rx) / x2_safe * x_safe + c2 * r
    small_val = _taylor_field(r, rn, jnp.where(small, x, 0.0))
    v = jnp.where(small, small_val, closed)  # (E, F, S, 3)
    return jnp.einsum("efsk,f->esk", v, lam)


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
