"""Dense linear algebra with gradients that stay finite on degenerate spectra.

JAX's own derivative rules for ``svd`` and ``eigh`` divide by differences of
(squared) singular values / eigenvalues, and by the singular values
themselves, so a repeated or zero one gives ``inf`` or ``NaN`` gradients even
when the loss does not depend on the ill-defined part of the decomposition.
The functions here carry custom JVPs in which those divisions are guarded:
pairs of (numerically) equal values and (numerically) zero singular values
contribute nothing, which is the exact derivative of every quantity that is
invariant to the choice of basis inside a degenerate subspace (matrix
functions, projectors, the minimum-norm kernels built from them).

The average-reference problem is handled without any degenerate
decomposition at all: :func:`average_reference_basis` gives a fixed,
data-independent orthonormal basis ``Q`` (``n × (n-1)``) of the sum-zero
subspace, the covariance is reduced to ``Qᵀ C Q`` (full rank ``n - 1``) and the
whitener is ``(Qᵀ C Q)^(-1/2) Qᵀ``; no zero eigenvalue is ever differentiated.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real
from numpy.typing import DTypeLike

from ._typing import IntScalar, RealScalar

__all__ = [
    "average_reference_basis",
    "compute_whitener",
    "eigh_sorted",
    "inv_sqrtm_sym",
    "sqrtm_sym",
    "svd_thin",
]


def _rel_tol(dtype) -> float:
    return float(jnp.finfo(dtype).eps) * 10.0


def _recip_above(x, tol):
    """``1/x`` where ``|x| > tol``, else 0: a pseudo-inverse cut-off.

    Not :func:`exg_jax._numerics.safe_div`, which replaces only an exact zero:
    here everything up to ``tol`` in magnitude is cut (the guarded
    denominators of the SVD / eigh derivatives, where a near-tie or a
    near-zero singular value must contribute nothing, not ``1/tiny``).
    Double ``where`` (finite gradients); NaN propagates.
    """
    cut = jnp.abs(x) <= tol
    return jnp.where(cut, 0.0, 1.0 / jnp.where(cut, 1.0, x))


# --------------------------------------------------------------------------- #
# SVD
# --------------------------------------------------------------------------- #
@jax.custom_jvp
def _svd_wide(a):
    """Thin SVD of a wide matrix (m <= n), through a QR of its transpose.

    ``aᵀ = Q T`` (thin QR, Q: (n, m)), ``T = U₂ S V₂ᵀ`` (m x m), so ``a = V₂ S
    (Q U₂)ᵀ``. Same factors as ``svd(a, full_matrices=False)`` up to signs
    (both backward stable); about 2x faster on CPU for a (63, 7686) whitened
    gain (22 vs 45 ms).
    """
    m, n = a.shape
    if n <= m:
        u, s, vt = jnp.linalg.svd(a, full_matrices=False)
        return u, s, vt
    q, t = jnp.linalg.qr(a.T)
    u2, s, v2t = jnp.linalg.svd(t, full_matrices=False)
    return v2t.T, s, (q @ u2).T


@_svd_wide.defjvp
def _svd_wide_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vt = _svd_wide(a)
    v = vt.T
    s2 = s * s
    tol = _rel_tol(a.dtype) * jnp.maximum(s2[0], jnp.finfo(a.dtype).tiny)
    f = _recip_above(s2[None, :] - s2[:, None], tol)  # F_ij = 1 / (s_j^2 - s_i^2)
    f = f * (1.0 - jnp.eye(s.shape[0], dtype=a.dtype))
    dp = u.T @ da @ v
    ds = jnp.diagonal(dp)
    s_mat = s[None, :]
    du = u @ (f * (dp * s_mat + s[:, None] * dp.T))
    s_inv = _recip_above(s, jnp.sqrt(tol))
    dv = v @ (f * (s[:, None] * dp + dp.T * s_mat))
    dv = dv + (da.T @ u - v @ (v.T @ (da.T @ u))) * s_inv[None, :]
    return (u, s, vt), (du, ds, dv.T)


def svd_thin(
    a: Float[ArrayLike, "m n"],
) -> tuple[Float[Array, "m k"], Float[Array, " k"], Float[Array, "k n"]]:
    """Thin SVD ``a = u @ diag(s) @ vt`` with degenerate-safe derivatives.

    Parameters
    ----------
    a : Array, shape (m, n)
        Real matrix.

    Returns
    -------
    u : Array, shape (m, k)
    s : Array, shape (k,)
        Singular values, descending, ``k = min(m, n)``.
    vt : Array, shape (k, n)

    Notes
    -----
    Equivalent to ``numpy.linalg.svd(a, full_matrices=False)``. The JVP is the
    standard one (Townsend 2016) with ``F_ij = 1 / (s_j² − s_i²)`` and ``1/s_i``
    replaced by 0 where the denominator is below ``10 ε s_max²`` (resp.
    ``√(10 ε) s_max``): derivatives of basis-invariant functions of the
    decomposition are exact and finite for repeated or zero singular values.
    """
    if a.shape[0] <= a.shape[1]:
        return _svd_wide(a)
    u, s, vt = _svd_wide(a.T)
    return vt.T, s, u.T


# --------------------------------------------------------------------------- #
# Symmetric eigendecomposition
# --------------------------------------------------------------------------- #
@jax.custom_jvp
def _eigh_desc(a):
    w, v = jnp.linalg.eigh(a)
    return w[::-1], v[:, ::-1]


@_eigh_desc.defjvp
def _eigh_desc_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    w, v = _eigh_desc(a)
    da = 0.5 * (da + da.T)
    dp = v.T @ da @ v
    scale = jnp.maximum(jnp.max(jnp.abs(w)), jnp.finfo(a.dtype).tiny)
    f = _recip_above(w[None, :] - w[:, None], _rel_tol(a.dtype) * scale)
    f = f * (1.0 - jnp.eye(w.shape[0], dtype=a.dtype))
    return (w, v), (jnp.diagonal(dp), v @ (f * dp))


def eigh_sorted(
    a: Float[ArrayLike, "*batch n n"],
) -> tuple[Float[Array, "*batch n"], Float[Array, "*batch n n"]]:
    """Eigendecomposition of symmetric matrices, eigenvalues in DESCENDING order.

    Parameters
    ----------
    a : Array, shape (..., n, n)
        Symmetric matrices (leading axes are batch axes).

    Returns
    -------
    w : Array, shape (..., n)
        Eigenvalues, largest first.
    v : Array, shape (..., n, n)
        Eigenvectors in the columns, ``a = v @ diag(w) @ vᵀ``.

    Notes
    -----
    The eigenvector derivative ``V (F ∘ Vᵀ dA V)``, ``F_ij = 1/(w_j − w_i)``, is
    guarded: (numerically) equal eigenvalue pairs contribute zero, so the
    derivative is always finite. It is exact for simple eigenvalues and for
    sums over a degenerate cluster; for matrix functions ``V f(w) Vᵀ`` with
    possibly repeated eigenvalues use :func:`sqrtm_sym` / :func:`inv_sqrtm_sym`
    (Daleckii–Krein divided differences, exact there too).
    """
    return jnp.vectorize(_eigh_desc, signature="(n,n)->(n),(n,n)")(a)


# --------------------------------------------------------------------------- #
# Matrix functions of symmetric PSD matrices (Daleckii-Krein derivative)
# --------------------------------------------------------------------------- #
def _kept_roots(w, rcond):
    """Which eigenvalues are kept (``> rcond · largest``) and their square roots.

    ``w``: eigenvalues, ascending (``eigh``), batched over leading axes. The
    roots of dropped eigenvalues are 1 (placeholders, never used).
    """
    if rcond is None:
        rcond = _rel_tol(w.dtype)
    largest = jnp.maximum(w[..., -1:], jnp.finfo(w.dtype).tiny)
    keep = w > rcond * largest
    return keep, jnp.sqrt(jnp.where(keep, w, 1.0))


def _sqrt_of_roots(keep, root):
    return jnp.where(keep, root, 0.0)


def _inv_sqrt_of_roots(keep, root):
    return jnp.where(keep, 1.0 / root, 0.0)


def _sqrt_dd(ri, rj):
    """(√a − √b) / (a − b) = 1 / (√a + √b), from the roots ``ri``, ``rj``."""
    return 1.0 / (ri + rj)


def _inv_sqrt_dd(ri, rj):
    """(1/√a − 1/√b) / (a − b) = −1 / (√a √b (√a + √b))."""
    return -1.0 / (ri * rj * (ri + rj))


def _make_sym_fn(fn, dd):
    """``A ↦ V f(w) Vᵀ`` for f = √ or 1/√, batched, with a Daleckii–Krein JVP.

    The divided differences ``(f(wᵢ) − f(wⱼ)) / (wᵢ − wⱼ)`` are evaluated in
    the cancellation-free closed forms ``dd`` of the square roots, so they are
    accurate for equal or nearly equal eigenvalues without any tie tolerance
    (in float32 the eigenvalues of a multiple of I come out ≈ 1e-6 apart,
    and a plain difference quotient of them is noise). A dropped eigenvalue
    (``≤ rcond ·`` the largest) has f = 0; a pair of one kept and one dropped
    eigenvalue takes the plain quotient (no cancellation there), a pair of
    two dropped ones contributes nothing.
    """

    @partial(jax.custom_jvp, nondiff_argnums=(1,))
    def mat_fn(a, rcond):
        w, v = jnp.linalg.eigh(a)
        fw = fn(*_kept_roots(w, rcond))
        return (v * fw[..., None, :]) @ jnp.swapaxes(v, -1, -2)

    @mat_fn.defjvp
    def mat_fn_jvp(rcond, primals, tangents):
        (a,), (da,) = primals, tangents
        w, v = jnp.linalg.eigh(a)
        keep, root = _kept_roots(w, rcond)
        fw = fn(keep, root)
        ki, kj = keep[..., :, None], keep[..., None, :]
        dw = w[..., :, None] - w[..., None, :]
        mixed = (ki != kj) & (dw != 0)
        quot = (fw[..., :, None] - fw[..., None, :]) / jnp.where(mixed, dw, 1.0)
        g = jnp.where(
            ki & kj,
            dd(root[..., :, None], root[..., None, :]),
            jnp.where(mixed, quot, 0.0),
        )
        vt = jnp.swapaxes(v, -1, -2)
        da = 0.5 * (da + jnp.swapaxes(da, -1, -2))
        out = (v * fw[..., None, :]) @ vt
        return out, v @ (g * (vt @ da @ v)) @ vt

    return mat_fn


_sqrtm = _make_sym_fn(_sqrt_of_roots, _sqrt_dd)
_inv_sqrtm = _make_sym_fn(_inv_sqrt_of_roots, _inv_sqrt_dd)


def sqrtm_sym(
    a: Float[ArrayLike, "*batch n n"], rcond: RealScalar | None = None
) -> Float[Array, "*batch n n"]:
    """Symmetric square root of symmetric PSD matrices (batched over leading axes).

    Parameters
    ----------
    a : Array, shape (..., n, n)
        Symmetric positive semi-definite matrices.
    rcond : float or None
        Eigenvalues of a matrix at or below ``rcond`` times its largest one
        are treated as zero. None: ``10 ε`` of the dtype.

    Notes
    -----
    Equivalent to ``scipy.linalg.sqrtm`` on PSD input, and to MNE-Python's
    ``mne.utils.sqrtm_sym(a, rcond)``. The derivative uses the Daleckii–Krein
    divided differences in cancellation-free form, exact and finite for
    repeated eigenvalues.
    """
    return _sqrtm(a, None if rcond is None else float(rcond))


def inv_sqrtm_sym(
    a: Float[ArrayLike, "*batch n n"], rcond: RealScalar | None = None
) -> Float[Array, "*batch n n"]:
    """Symmetric pseudo-inverse square root ``A^(-1/2)`` (batched over leading axes).

    Eigenvalues at or below ``rcond`` times the largest (None: ``10 ε``) are
    dropped (pseudo-inverse). Equivalent to MNE-Python's
    ``mne.utils.sqrtm_sym(a, rcond, inv=True)``. Derivative as
    :func:`sqrtm_sym`.
    """
    return _inv_sqrtm(a, None if rcond is None else float(rcond))


# --------------------------------------------------------------------------- #
# Whitening
# --------------------------------------------------------------------------- #
def average_reference_basis(
    n: IntScalar, dtype: DTypeLike = np.float64
) -> Float[np.ndarray, "n n-1"]:
    """Orthonormal basis of the sum-zero subspace of R^n (Helmert contrasts).

    Returns
    -------
    q : ndarray, shape (n, n - 1)
        ``qᵀ q = I``, ``qᵀ 1 = 0`` and ``q qᵀ = I − 1 1ᵀ / n`` (the EEG
        average-reference projector). Data-independent, so never differentiated.
    """
    q = np.zeros((n, n - 1), dtype=np.float64)
    for k in range(1, n):
        q[:k, k - 1] = 1.0
        q[k, k - 1] = -float(k)
        q[:, k - 1] /= np.sqrt(k * (k + 1.0))
    return q.astype(dtype)


@partial(jax.jit, static_argnames=("proj", "rank"))
def _whitener_kernel(cov, proj, rank):
    n = cov.shape[-1]
    if proj == "average":
        q = jnp.asarray(average_reference_basis(n, np.dtype(cov.dtype)))
        c = q.T @ cov @ q
    else:
        q = None
        c = cov
    c = 0.5 * (c + c.T)
    # Decompose C / s (s = max |diag C|, a constant for differentiation): in
    # V² the eigenvalues are 1e-12 down to 1e-32 and the derivative of C^-1/2
    # (∝ w^-3/2) leaves float32's range. W = (C/s)^-1/2 / √s exactly.
    s = jax.lax.stop_gradient(jnp.max(jnp.abs(jnp.diagonal(c))))
    s = jnp.where(s == 0, 1, s)
    c = c / s
    w, v = eigh_sorted(c)
    if rank == c.shape[0]:
        # symmetric C^-1/2: exact derivative even for repeated eigenvalues
        white = inv_sqrtm_sym(c)
    else:
        w, v = w[:rank], v[:, :rank]
        pos = w > 0
        inv_sd = jnp.where(pos, 1.0 / jnp.sqrt(jnp.where(pos, w, 1.0)), 0.0)
        white = inv_sd[:, None] * v.T
    white = white / jnp.sqrt(s)
    if q is not None:
        white = white @ q.T
    return white, w * s


def compute_whitener(
    cov: Real[ArrayLike, "n n"],
    *,
    proj: str | None = "average",
    rank: IntScalar | None = None,
) -> tuple[Float[Array, "r n"], Float[Array, " r"]]:
    """Rank-aware whitener of a sensor noise covariance.

    Parameters
    ----------
    cov : Array, shape (n_chan, n_chan), V²
        Symmetric PSD noise covariance.
    proj : {"average", None}
        ``"average"``: the EEG average-reference projector ``P = I − 11ᵀ/n`` is
        applied (``P C P``, as MNE-Python does with an average-reference
        projection); the whitener then has ``n − 1`` rows and annihilates the
        constant vector. ``None``: no projection.
    rank : int or None
        Number of eigen-directions to keep (largest first). ``None``: all of
        the projected space (``n − 1`` with the average projector, else ``n``).

    Returns
    -------
    whitener : Array, shape (rank, n_chan), 1/V
        ``Wᵀ W`` is the pseudo-inverse of ``P C P`` restricted to the kept
        directions; ``W C Wᵀ = I``.
    eig : Array, shape (rank,), V²
        The kept eigenvalues of ``P C P``, descending.

    Notes
    -----
    Equivalent (up to a rotation of the whitened space, which leaves every
    inverse solution unchanged) to ``mne.cov.compute_whitener(..., pca=True)``.
    With the projector, ``C`` is reduced to ``Qᵀ C Q`` on a fixed orthonormal
    basis ``Q`` of the sum-zero subspace (:func:`average_reference_basis`), so
    the decomposition is full rank and its derivative is finite.
    """
    n = cov.shape[-1]
    full = n - 1 if proj == "average" else n
    if rank is None:
        rank = full
    if not 1 <= int(rank) <= full:
        raise ValueError(f"rank must lie in [1, {full}], got {rank!r}.")
    return _whitener_kernel(jnp.asarray(cov), proj, int(rank))
