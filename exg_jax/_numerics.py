"""Guarded and scale-free elementwise numerics shared by the pipeline.

Two rules hold everywhere in exg_jax:

* **Guards use a double ``where`` and let NaN through.** A guarded division or
  square root replaces only an exact zero (whose derivative would be
  infinite) and tests ``x == 0`` / ``x != 0``, never ``x > 0``: a NaN fails
  every ordered comparison, and testing ``x > 0`` would silently map a NaN
  input to a zero output ("no activity"). NaN in gives NaN out.
* **Never square a physical quantity unscaled.** Quantities in SI units (V,
  A·m, V/(A·m), and the whitened gain ≈ 1e8) square to 1e±20 and beyond; in
  float32 (max ≈ 3e38, smallest normal ≈ 1e-38, and XLA on CPU flushes
  subnormals to zero) both the squares and the derivatives of their
  reciprocals (``trace⁻²`` ≈ 1e-41) leave the representable range. Norms are
  therefore computed as ``m · ‖x / m‖`` with ``m = max |x|`` held constant
  for differentiation (``stop_gradient``). Because ``m · ‖x / m‖ = ‖x‖`` for
  *every* constant ``m > 0``, the values and all derivatives are exact; only
  the rounding changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Real

__all__ = [
    "combine_xyz",
    "safe_div",
    "safe_norm",
    "safe_sqrt",
    "scale_of",
]


def safe_div(
    num: Real[ArrayLike, "*#shape"],
    den: Real[ArrayLike, "*#shape"],
    fill: Real[ArrayLike, "*#shape"] = 0,
) -> Float[Array, "*#shape"]:
    """``num / den``, ``fill`` where ``den == 0`` (finite gradient); NaN propagates."""
    zero = den == 0
    return jnp.where(zero, fill, num / jnp.where(zero, 1, den))


def safe_sqrt(sq: Real[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
    """``sqrt(sq)`` with a zero (not infinite) derivative at 0; NaN propagates."""
    zero = sq == 0
    return jnp.where(zero, 0, jnp.sqrt(jnp.where(zero, 1, sq)))


def scale_of(
    x: Real[ArrayLike, "..."],
    axis: int | tuple[int, ...] | None = None,
    keepdims: bool = False,
) -> Real[Array, "..."]:
    """``max |x|`` over ``axis`` (1 where it is 0), outside differentiation.

    A positive scale for :func:`safe_norm`-style rescaling. NaN propagates
    (``max`` of an array with a NaN is NaN), so a NaN input stays NaN.
    """
    m = jnp.max(jnp.abs(x), axis=axis, keepdims=keepdims)
    m = jnp.where(m == 0, 1, m)
    return jax.lax.stop_gradient(m)


def safe_norm(
    x: Real[ArrayLike, "..."],
    axis: int | tuple[int, ...] | None = None,
    keepdims: bool = False,
) -> Float[Array, "..."]:
    """Euclidean norm over ``axis``, scale-free, with a finite gradient at 0.

    Computed as ``m · sqrt(Σ (x/m)²)`` with ``m = max |x|`` (constant for
    differentiation): no square leaves the range of the dtype, and the
    value and every derivative equal those of ``sqrt(Σ x²)``. The gradient at
    ``x = 0`` is 0. NaN in gives NaN out.
    """
    m = scale_of(x, axis=axis, keepdims=True)
    y = x / m
    out = m * safe_sqrt(jnp.sum(y * y, axis=axis, keepdims=True))
    if keepdims:
        return out
    return jnp.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def combine_xyz(
    x: Real[ArrayLike, "*#shape"],
    y: Real[ArrayLike, "*#shape"],
    z: Real[ArrayLike, "*#shape"],
) -> Float[Array, "*#shape"]:
    """``√(x² + y² + z²)`` elementwise, scale-free, gradient finite at 0.

    Used to combine the three orientation components of a free source
    (A·m down to 1e-20 and below in float32 would underflow when squared).
    NaN in any component gives NaN.
    """
    m = jnp.maximum(jnp.maximum(jnp.abs(x), jnp.abs(y)), jnp.abs(z))
    m = jax.lax.stop_gradient(jnp.where(m == 0, 1, m))
    r = 1 / m
    x, y, z = x * r, y * r, z * r
    return m * safe_sqrt(x * x + y * y + z * z)
