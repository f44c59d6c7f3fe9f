"""Degenerate-safe linear algebra: NumPy/SciPy parity, jit/vmap, gradients vs FD."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from exg_jax.linalg import (
    average_reference_basis,
    compute_whitener,
    eigh_sorted,
    inv_sqrtm_sym,
    sqrtm_sym,
    svd_thin,
)


def _spd(rng, n, k=None):
    a = rng.standard_normal((n, k or 2 * n))
    return a @ a.T / a.shape[1]


def test_svd_matches_numpy_and_grad_matches_jax():
    rng = np.random.default_rng(0)
    for shape in ((5, 9), (9, 5)):
        a = rng.standard_normal(shape)
        u, s, vt = svd_thin(jnp.asarray(a))
        np.testing.assert_allclose(s, np.linalg.svd(a, compute_uv=False), rtol=1e-12)
        np.testing.assert_allclose((u * s) @ vt, a, atol=1e-12)
        w = rng.standard_normal(shape)

        def loss(x, svd, w=w):
            u, s, vt = svd(x)
            return jnp.sum(((u * s**0.5) @ vt) * w) + jnp.sum(s**3)

        g_ours = jax.grad(loss)(jnp.asarray(a), svd_thin)
        g_jax = jax.grad(loss)(
            jnp.asarray(a), lambda x: jnp.linalg.svd(x, full_matrices=False)
        )
        # measured 2.4e-14 relative, 1.4e-15 of max |g|
        np.testing.assert_allclose(g_ours, g_jax, rtol=1e-12, atol=1e-13)


def test_svd_gradient_finite_with_zero_singular_value():
    rng = np.random.default_rng(1)
    q = average_reference_basis(6)
    a = (np.eye(6) - 1 / 6) @ rng.standard_normal((6, 10))  # rank 5, sum-zero columns

    def loss(x):
        u, s, vt = svd_thin(x)
        # pseudo-inverse-like, basis invariant
        inv_s = jnp.where(s > 1e-8, 1.0 / jnp.where(s > 1e-8, s, 1.0), 0.0)
        return jnp.sum((vt.T * inv_s) @ (u.T @ jnp.ones((6, 1))) ** 2) + jnp.sum(s**2)

    g = jax.grad(loss)(jnp.asarray(a))
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.allclose(q.T @ q, np.eye(5)) and np.allclose(q.sum(axis=0), 0)


def test_eigh_sorted_descending_and_batched():
    rng = np.random.default_rng(2)
    mats = np.stack([_spd(rng, 4) for _ in range(3)])
    w, v = eigh_sorted(jnp.asarray(mats))
    for m, wi, vi in zip(mats, np.asarray(w), np.asarray(v), strict=True):
        np.testing.assert_allclose(wi, np.linalg.eigvalsh(m)[::-1], rtol=1e-12)
        np.testing.assert_allclose((vi * wi) @ vi.T, m, atol=1e-12)
    wj, _ = jax.jit(jax.vmap(eigh_sorted))(jnp.asarray(mats))
    np.testing.assert_allclose(wj, w, rtol=1e-12)


def test_eigh_gradient_finite_on_repeated_eigenvalues():
    a = jnp.diag(jnp.array([2.0, 2.0, 1.0]))
    ww = np.arange(9.0).reshape(3, 3)

    def loss(x):
        w, v = eigh_sorted(x)
        # the sum over a degenerate pair is basis invariant: its derivative is the block projector
        return w[0] + w[1] + jnp.sum(v[:, 2] ** 2 * ww[2])

    g = np.asarray(jax.grad(loss)(a))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(np.diag(g)[:2], [1.0, 1.0], atol=1e-12)


def test_eigh_reconstruction_grad_matches_fd():
    rng = np.random.default_rng(7)
    m = _spd(rng, 4)
    d = rng.standard_normal((4, 4))
    d = d + d.T
    ww = rng.standard_normal((4, 4))

    def loss(t):
        w, v = eigh_sorted(jnp.asarray(m) + t * jnp.asarray(d))
        return jnp.sum((v * jnp.sqrt(w)) @ v.T * ww) + jnp.sum(w**2)

    g = float(jax.grad(loss)(0.0))
    h = 1e-6
    fd = (float(loss(h)) - float(loss(-h))) / (2 * h)
    assert abs(g - fd) <= 1e-8 * abs(fd)  # measured 5.3e-10 (central FD)


@settings(max_examples=10)
@given(st.integers(0, 10_000))
def test_sqrtm_properties(seed):
    rng = np.random.default_rng(seed)
    mats = np.stack([_spd(rng, 3) for _ in range(4)])
    s = np.asarray(sqrtm_sym(jnp.asarray(mats)))
    si = np.asarray(inv_sqrtm_sym(jnp.asarray(mats)))
    for m, a, b in zip(mats, s, si, strict=True):
        # measured 5.2e-14 relative, 6.5e-16 of max |a|
        np.testing.assert_allclose(
            a, np.real(scipy.linalg.sqrtm(m)), rtol=1e-11, atol=1e-13
        )
        np.testing.assert_allclose(a @ b, np.eye(3), atol=1e-8)


def test_sqrtm_grad_matches_fd_and_finite_when_degenerate():
    rng = np.random.default_rng(4)
    m = _spd(rng, 3)
    dm = rng.standard_normal((3, 3))
    dm = dm + dm.T
    w = rng.standard_normal((3, 3))
    for fn in (sqrtm_sym, inv_sqrtm_sym):

        def loss(t, fn=fn):
            return jnp.sum(fn(jnp.asarray(m) + t * jnp.asarray(dm)) * w)

        g = float(jax.grad(loss)(0.0))
        h = 1e-6
        fd = (float(loss(h)) - float(loss(-h))) / (2 * h)
        assert abs(g - fd) <= 1e-8 * abs(fd)  # measured 4.2e-10 (central FD)
        ge = jax.grad(lambda x, fn=fn: jnp.sum(fn(x) * w))(jnp.eye(3) * 2.0)
        assert np.all(np.isfinite(np.asarray(ge)))
        # d sqrt(X)/dX at X = 2I along E is E / (2 sqrt 2); d X^-1/2 is -E / (2 * 2^1.5)
        scale = 1 / (2 * np.sqrt(2)) if fn is sqrtm_sym else -1 / (2 * 2**1.5)
        np.testing.assert_allclose(ge, scale * 0.5 * (w + w.T), atol=1e-12)


def test_whitener_average_reference_rank_and_gradient():
    rng = np.random.default_rng(5)
    n = 8
    x = rng.standard_normal((n, 300))
    x -= x.mean(axis=0)  # average-referenced: rank n - 1
    c = x @ x.T / 300
    w, eig = compute_whitener(jnp.asarray(c))
    w = np.asarray(w)
    assert w.shape == (n - 1, n)
    np.testing.assert_allclose(w @ c @ w.T, np.eye(n - 1), atol=1e-10)
    np.testing.assert_allclose(w @ np.ones(n), 0, atol=1e-12)
    p = np.eye(n) - 1 / n
    # measured 5.4e-14 relative, 1.6e-15 of max
    np.testing.assert_allclose(
        w.T @ w, np.linalg.pinv(p @ c @ p), rtol=1e-11, atol=1e-12
    )
    np.testing.assert_allclose(
        np.sort(np.asarray(eig)), np.sort(np.linalg.eigvalsh(c))[1:], rtol=1e-10
    )
    # jit == eager, and a finite gradient through the rank n-1 whitener
    wj, _ = jax.jit(compute_whitener)(jnp.asarray(c))
    np.testing.assert_allclose(wj, w, atol=1e-12)
    d = rng.standard_normal((n, n))
    d = d + d.T

    def loss(t):
        ww, _ = compute_whitener(jnp.asarray(c) + t * jnp.asarray(d))
        return jnp.sum((ww.T @ ww) ** 2)

    g = float(jax.grad(loss)(0.0))
    h = 1e-7
    fd = (float(loss(h)) - float(loss(-h))) / (2 * h)
    assert np.isfinite(g) and abs(g - fd) <= 1e-5 * abs(fd)


def test_sqrtm_rcond_matches_mne_and_batched_degenerate_derivative():
    """``rcond``: eigenvalues at or below rcond · largest are zero (MNE's ``sqrtm_sym``,
    as eLORETA uses it); batched 3 x 3 blocks with repeated eigenvalues have finite
    derivatives equal to central differences."""
    from mne.utils import sqrtm_sym as mne_sqrtm_sym

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    m = np.stack(
        [
            q @ np.diag([2.0, 2.0, 0.5]) @ q.T,  # repeated eigenvalue
            np.eye(3) * 1.5,  # a multiple of I
            q @ np.diag([1.0, 1e-9, 0.0]) @ q.T,  # two eigenvalues below the cut
        ]
    )
    for inv, fn in ((False, sqrtm_sym), (True, inv_sqrtm_sym)):
        ref = mne_sqrtm_sym(m, rcond=1e-7, inv=inv)[0]
        got = np.asarray(fn(jnp.asarray(m), 1e-7))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    # the default cut (10 ε) keeps the 1e-9 eigenvalue
    s = np.asarray(sqrtm_sym(jnp.asarray(m[2])))
    np.testing.assert_allclose(np.linalg.eigvalsh(s)[1], np.sqrt(1e-9), rtol=1e-6)

    dm = rng.standard_normal((3, 3, 3))
    dm = jnp.asarray(dm + np.swapaxes(dm, 1, 2))
    h = 1e-6
    for fn in (sqrtm_sym, inv_sqrtm_sym):

        @jax.jit
        def check(m, dm, fn=fn):
            f = lambda a: fn(a, 1e-7)  # noqa: E731
            _, jvp = jax.jvp(f, (m,), (dm,))
            fd = (f(m + h * dm) - f(m - h * dm)) / (2 * h)
            g = jax.grad(lambda a: jnp.sum(f(a) ** 2))(m)
            return jvp, fd, g

        jvp, fd, g = check(jnp.asarray(m), dm)
        # full-rank blocks: the JVP is the derivative (measured 1e-9 relative)
        np.testing.assert_allclose(
            np.asarray(jvp[:2]), np.asarray(fd[:2]), rtol=1e-6, atol=1e-8
        )
        assert np.isfinite(np.asarray(jvp)).all() and np.isfinite(np.asarray(g)).all()
