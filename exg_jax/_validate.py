"""Private validation helpers for the eager (Python) layer of public functions.

Every public function validates its inputs here before calling a pure, jitted
kernel. The checks only run on concrete values: when a value is a JAX tracer
(inside ``jax.jit``, ``jax.grad`` or ``jax.vmap``) they are skipped, so that the
same code can be traced. Checks that must survive tracing use ``eqx.error_if``
inside the kernels instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(*xs: Any) -> bool:
    """True when none of ``xs`` (pytrees allowed) contains a JAX tracer."""
    for leaf in jax.tree_util.tree_leaves(xs):
        if isinstance(leaf, jax.core.Tracer):
            return False
    return True


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(
            f"Invalid value for the {name!r} parameter: {value!r}. "
            f"Allowed values are {', '.join(repr(a) for a in allowed)}."
        )
    return value


def check_finite(name: str, x: Any) -> None:
    """Raise ``ValueError`` if a concrete array contains NaN or Inf."""
    if not is_concrete(x):
        return
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.number):
        # Reduce where the data live: only a flag crosses to the host (a batch
        # of epochs on a GPU is not copied back just to be checked). Evaluated
        # now, even when called while a jit is being traced.
        with jax.ensure_compile_time_eval():
            ok = bool(jnp.all(jnp.isfinite(x)))
        if ok:
            return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        first = tuple(int(i) for i in bad[0]) if bad.size else ()
        raise ValueError(
            f"{name} contains {len(bad)} non-finite value(s) (NaN or Inf); "
            f"first at index {first}: {arr[first] if first else arr!r}."
        )


def check_shape(name: str, x: Any, shape: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (None = any)."""
    got = tuple(np.shape(x))
    ok = len(got) == len(shape) and all(
        s is None or s == g for s, g in zip(shape, got, strict=True)
    )
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {got}.")


def check_positive(name: str, x: Any, *, strict: bool = True) -> None:
    """Raise ``ValueError`` if a concrete value is not (strictly) positive."""
    if not is_concrete(x):
        return
    arr = np.asarray(x)
    bad = ~(arr > 0) if strict else ~(arr >= 0)
    if np.any(bad):
        vals = arr[bad] if arr.ndim else arr
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be {rel} 0, got {vals!r}.")


def check_range(name: str, x: Any, lo: float, hi: float) -> None:
    """Raise ``ValueError`` if a concrete scalar lies outside ``[lo, hi]``."""
    if not is_concrete(x):
        return
    v = np.asarray(x)
    if not np.all(np.isfinite(v)) or np.any(v < lo) or np.any(v > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {v!r}.")
