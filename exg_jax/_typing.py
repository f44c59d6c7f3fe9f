"""Aliases used in the public annotations (jaxtyping array types).

The annotations document what each public function takes and returns: array
shapes with named axes shared across arguments (``"chan"``, ``"src"``, ...)
and dtypes. They describe what the eager layer *accepts* — NumPy and JAX
arrays (tracers included), Python and NumPy scalars, nested lists — and never
replace its checks, which raise ``ValueError`` / ``TypeError`` naming the
argument. They are checked at test time only (``tests/test_types.py`` runs
the public API under ``jaxtyping.install_import_hook(["exg_jax"],
"beartype.beartype")``).
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxtyping import ArrayLike, Int, Real

__all__ = ["IntScalar", "NestedSequence", "Point3", "RealScalar"]

#: A real scalar: a Python or NumPy int / float, or a real array of shape ()
#: (NumPy or JAX, tracers included).
RealScalar = Real[ArrayLike, ""]

#: An integer: a Python or NumPy int, or an integer array of shape () (the
#: eager layer takes its value with ``operator.index``).
IntScalar = Int[ArrayLike, ""]

#: Nested Python lists / tuples of numbers, accepted wherever an array is
#: (converted with ``numpy.asarray``; the library checks their shape).
NestedSequence = Sequence

#: A point in head coordinates (m): three numbers.
Point3 = Real[ArrayLike, "3"] | NestedSequence
