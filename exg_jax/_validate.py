"""Private validation helpers for the eager (Python) layer of public functions.

Every public function validates its inputs here before calling a pure, jitted
kernel. The checks only run on concrete values: when a value is a JAX tracer
(inside ``jax.jit``, ``jax.grad`` or ``jax.vmap``) they are skipped, so that the
same code can be traced. Checks that must survive tracing use ``eqx.error_if``
inside the kernels instead.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable
from typing import Any

import equinox as eqx
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


# --------------------------------------------------------------------------- #
# Argument types (issue 9, classes 3.7 and 3.8)
# --------------------------------------------------------------------------- #
# What to pass instead of an MNE-Python object, by (base) class name. The
# library never imports mne: objects are recognised by their module.
_MNE_HINTS = {
    "Covariance": "convert it with exg_jax.cov_from_mne(cov, fwd) (channels "
    "matched by name, bads dropped), or pass NoiseCov(jnp.asarray(cov.data)) or "
    "its .data array (V², channels in the forward's order)",
    "Evoked": "apply_inverse takes it directly with an operator that knows its "
    "channel names (from forward_from_mne / inverse_from_mne); else pass its .data "
    "array (n_chan, n_times) in V, channels in the operator's order",
    "BaseEpochs": "apply_inverse_epochs takes it directly with an operator that "
    "knows its channel names; else pass epochs.get_data() (n_epochs, n_chan, "
    "n_times) in V (apply_inverse_epochs / compute_covariance_epochs)",
    "BaseRaw": "apply_inverse_raw takes it directly with an operator that knows "
    "its channel names; else pass raw.get_data() (n_chan, n_times) in V",
    "Forward": "convert it with exg_jax.interop.forward_from_mne(fwd)",
    "InverseOperator": "convert it with exg_jax.interop.inverse_from_mne(inv), or "
    "build one with exg_jax.make_inverse_operator",
    "SourceSpaces": "pass the source positions (and normals) as arrays",
    "Info": "for electrode names and positions use "
    "exg_jax.interop.montage_from_mne(info); an mne.Info carries no data",
    "DigMontage": "for electrode names and positions use "
    "exg_jax.interop.montage_from_mne(montage)",
    "_BaseSourceEstimate": "pass stc.data (an exg_jax SourceEstimate comes back "
    "to MNE with exg_jax.interop.to_mne)",
}


def _mne_class(x: Any) -> str | None:
    """Name of the known MNE-Python base class of ``x`` ("" if none), else None."""
    mod = type(x).__module__ or ""
    if not (mod == "mne" or mod.startswith("mne.")):
        return None
    for klass in type(x).__mro__:
        if klass.__name__ in _MNE_HINTS:
            return klass.__name__
    return ""


def check_not_mne(name: str, x: Any, expected: str = "an array") -> None:
    """Raise ``TypeError`` (saying what to pass) if ``x`` is an MNE-Python object."""
    cls = _mne_class(x)
    if cls is None:
        return
    hint = _MNE_HINTS.get(cls, f"pass {expected}")
    raise TypeError(
        f"{name} is an mne.{type(x).__name__} (MNE-Python object), not "
        f"{expected}; {hint}."
    )


def check_type(name: str, x: Any, cls: type | tuple[type, ...], expected: str) -> None:
    """Raise ``TypeError`` unless ``isinstance(x, cls)`` (MNE objects get a hint)."""
    if isinstance(x, cls):
        return
    check_not_mne(name, x, expected)
    raise TypeError(f"{name} must be {expected}, got {type(x).__name__}.")


def check_array(name: str, x: Any) -> None:
    """Raise ``TypeError`` unless ``x`` is a real numeric array (or array-like).

    Accepts NumPy / JAX arrays (tracers included), NumPy scalars, Python
    numbers and nested sequences of them. Rejects MNE-Python objects (with a
    hint), strings, None, mappings and bool / complex / object dtypes.
    """
    check_not_mne(name, x)
    if x is None or isinstance(x, str | bytes | dict):
        raise TypeError(f"{name} must be a NumPy or JAX array, got {type(x).__name__}.")
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(x).dtype
        except Exception as err:  # ragged lists and other objects
            raise TypeError(
                f"{name} must be a NumPy or JAX array, got {type(x).__name__}."
            ) from err
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
    ):
        raise TypeError(f"{name} must have a real numeric dtype, got {dtype}.")


def as_int(
    name: str, x: Any, *, minimum: int | None = None, allow_none: bool = False
) -> int | None:
    """``x`` as a Python int (NumPy integers accepted; bool and floats refused).

    ``TypeError`` for a non-integer, ``ValueError`` below ``minimum``.
    """
    if x is None and allow_none:
        return None
    if isinstance(x, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got the bool {x!r}.")
    try:
        v = operator.index(x)
    except TypeError:
        what = " or None" if allow_none else ""
        raise TypeError(
            f"{name} must be an integer{what}, got {type(x).__name__} {x!r}."
        ) from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v}.")
    return v


def check_real_scalar(name: str, x: Any) -> None:
    """``TypeError`` unless ``x`` is a real scalar (number or 0-d array, tracers too).

    bool, str and complex are refused; an array of shape ≠ () is a
    ``ValueError``.
    """
    check_not_mne(name, x, "a real scalar")
    if isinstance(x, bool | np.bool_):
        raise TypeError(f"{name} must be a real number, got the bool {x!r}.")
    if isinstance(x, numbers.Real):
        return
    if isinstance(x, str | bytes) or not hasattr(x, "shape") or not hasattr(x, "dtype"):
        if isinstance(x, list | tuple):
            raise ValueError(
                f"{name} must be a scalar (shape ()), got a {type(x).__name__} "
                f"of shape {np.shape(x)}."
            )
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}.")
    dtype = np.dtype(x.dtype)
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real number, got dtype {dtype}.")
    if tuple(x.shape) != ():
        raise ValueError(
            f"{name} must be a scalar (shape ()), got shape {tuple(x.shape)}."
        )


def check_positive_finite_scalar(
    name: str, x: Any, dtype: Any = None, *, what: str = ""
) -> None:
    """Real scalar, finite and > 0 (when concrete) — also once cast to ``dtype``.

    The cast catches a value that is finite in float64 but overflows (or
    underflows to 0) in the dtype it is used in, e.g. λ² = 1e39 with a
    float32 operator.
    """
    check_real_scalar(name, x)
    if not is_concrete(x):
        return
    v = np.asarray(x)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0{what}, got {v.item()!r}.")
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.floating):
        dt = np.dtype(dtype)
        with np.errstate(over="ignore", under="ignore"):
            cast = v.astype(dt)
        if not (np.isfinite(cast) and cast > 0):
            fi = np.finfo(dt)
            raise ValueError(
                f"{name}={v.item()!r} is not a finite positive number in {dt} (the "
                f"operator's dtype): it must lie in [{fi.tiny:.3g}, {fi.max:.3g}]{what}."
            )


def check_lambda2(lambda2: Any, dtype: Any = None) -> None:
    """Validate λ² (a real scalar, finite and > 0, representable in ``dtype``).

    Traced values only get the type/shape checks; their value is checked by
    ``lambda2_error_if`` inside the compiled kernels.
    """
    check_positive_finite_scalar(
        "lambda2", lambda2, dtype, what=" (λ² = 1 / SNR², e.g. 1/9 for SNR 3)"
    )


_LAMBDA2_TRACED_MSG = (
    "lambda2 must be finite and > 0 (λ² = 1 / SNR²); a traced lambda2 "
    "(under jit / vmap / grad) was <= 0, NaN or Inf."
)


def lambda2_error_if(lambda2):
    """``eqx.error_if`` on λ² (≤ 0, NaN, Inf): the check that survives tracing.

    Returns ``lambda2``; use the returned value so the check is not dropped.
    """
    lambda2 = jnp.asarray(lambda2)
    bad = ~(jnp.isfinite(lambda2) & (lambda2 > 0))
    return eqx.error_if(lambda2, bad, _LAMBDA2_TRACED_MSG)


def all_zero(x: Any) -> bool:
    """True when a concrete array is identically zero (reduced where it lives)."""
    with jax.ensure_compile_time_eval():
        return not bool(jnp.any(jnp.asarray(x) != 0))


def as_float_array(name: str, x: Any):
    """``x`` as a JAX float array, for geometry and model parameters (issue 9, 3.6 / 3.7).

    ``TypeError`` (naming ``name``) for strings, None, MNE-Python objects, bool /
    complex / object dtypes, and for float16 / bfloat16 (too few digits for
    head geometry: use float32 or float64). Integer input is cast explicitly
    to JAX's default float dtype (float64 with x64 enabled, else float32);
    float32 / float64 are kept as they are. Tracers are accepted.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is not None and np.dtype(dtype).name in ("float16", "bfloat16"):
        raise TypeError(
            f"{name} has dtype {np.dtype(dtype).name}, which is too imprecise for EEG geometry; "
            "use float32 or float64."
        )
    check_array(name, x)
    arr = jnp.asarray(x)
    if jnp.issubdtype(arr.dtype, jnp.integer):
        arr = arr.astype(jnp.result_type(float))
    return arr


def as_positive_scalar(name: str, x: Any) -> float:
    """Finite real scalar > 0 as a Python float: ``TypeError`` for a non-number
    (str, bool, None), ``ValueError`` for shape != (), NaN, Inf or <= 0."""
    check_real_scalar(name, x)
    v = float(np.asarray(x))
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite scalar > 0 (m), got {x!r}.")
    return v


def as_point3(name: str, x: Any) -> np.ndarray:
    """Three finite numbers as a float ndarray: ``TypeError`` for a string, None
    or non-numbers, ``ValueError`` for another shape or NaN / Inf."""
    if isinstance(x, str | bytes) or x is None:
        raise TypeError(f"{name} must be 3 numbers, got {type(x).__name__}.")
    try:
        arr = np.array(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be 3 numbers, got {x!r}.") from err
    check_shape(name, arr, (3,))
    check_finite(name, arr)
    return arr


_DATA_SHAPES = {2: "(n_chan, n_times)", 3: "(n_epochs, n_chan, n_times)"}


def check_sensor_data(
    name: str, data: Any, n_chan: int, ndims: tuple[int, ...], owner: str
) -> None:
    """Sensor data of ``n_chan`` channels with ``ndim`` in ``ndims`` (2 and / or 3).

    ``TypeError`` / ``ValueError`` naming ``name``: not a real array, wrong
    number of dimensions, a channel count other than ``n_chan`` (``owner``,
    e.g. "the inverse operator has", says whose), NaN or Inf.
    """
    check_array(name, data)
    shape = tuple(np.shape(data))
    if len(shape) not in ndims:
        what = " or ".join(_DATA_SHAPES[d] for d in ndims)
        raise ValueError(f"{name} must have shape {what}, got {shape}.")
    if shape[-2] != n_chan:
        raise ValueError(f"{name} has {shape[-2]} channels but {owner} {n_chan}.")
    check_finite(name, data)


# --------------------------------------------------------------------------- #
# Channel names and source identity (static metadata of the operators)
# --------------------------------------------------------------------------- #
def as_ch_names(x: Any) -> tuple[str, ...] | None:
    """Channel names as a tuple of ``str`` (None kept): a static, hashable field.

    ``TypeError`` for a single string or non-string entries, ``ValueError`` for
    duplicates.
    """
    if x is None:
        return None
    if isinstance(x, str | bytes):
        raise TypeError(
            f"ch_names must be a sequence of channel names, got the string {x!r}."
        )
    try:
        names = tuple(x)
    except TypeError:
        raise TypeError(
            f"ch_names must be a sequence of str, got {type(x).__name__}."
        ) from None
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"ch_names must hold str, got {type(n).__name__} {n!r}.")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"ch_names has duplicates: {dup}.")
    return names


class Vertices(tuple):
    """Source vertex numbers per source space: a hashable tuple of int arrays.

    The layout of MNE-Python's ``stc.vertices`` (one array per source space,
    e.g. ``(lh, rh)`` for a cortical surface; for a volume or a sphere grid
    one array). The arrays are read-only copies (``int64``) and the hash is
    computed once from their contents, so the tuple can be a static field of
    an Equinox module: it is never traced, and a jit cache lookup hashes it
    in O(1). Two ``Vertices`` are equal when their arrays are (a list or
    tuple of arrays, e.g. MNE's ``stc.vertices``, compares equal too).
    """

    def __new__(cls, arrays: Iterable[Any] = ()) -> Vertices:
        arrs = []
        for a in arrays:
            a = np.array(a, dtype=np.int64).reshape(-1)
            a.setflags(write=False)
            arrs.append(a)
        self = super().__new__(cls, arrs)
        self._hash = hash((len(arrs),) + tuple(a.tobytes() for a in arrs))
        return self

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, tuple | list) or len(other) != len(self):
            return False
        return all(
            np.array_equal(a, np.asarray(b)) for a, b in zip(self, other, strict=True)
        )

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        sizes = ", ".join(str(len(a)) for a in self)
        return f"Vertices(n_per_space=({sizes}))"

    @property
    def n_src(self) -> int:
        """Total number of sources (over all source spaces)."""
        return int(sum(len(a) for a in self))


def as_vertices(x: Any) -> Vertices | None:
    """``x`` (a sequence of integer arrays, or one array) as :class:`Vertices`.

    None is kept. One 1-D array is one source space. ``TypeError`` for
    non-integer entries.
    """
    if x is None or isinstance(x, Vertices):
        return x
    if isinstance(x, np.ndarray | jax.Array) and np.ndim(x) == 1:
        x = [x]
    if isinstance(x, str | bytes | dict):
        raise TypeError(
            f"vertices must be a sequence of integer arrays, got {type(x).__name__}."
        )
    try:
        parts = [np.asarray(a) for a in x]
    except TypeError:
        raise TypeError(
            f"vertices must be a sequence of integer arrays, got {type(x).__name__}."
        ) from None
    for a in parts:
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"vertices must hold integers, got dtype {a.dtype}.")
    return Vertices(parts)


#: The kinds of source spaces (MNE-Python's ``SourceSpaces.kind``).
SRC_KINDS = ("surface", "volume", "discrete", "mixed")


def as_times(name: str, tmin: Any, sfreq: Any, got: Any = None) -> tuple[float, float]:
    """``(tmin, tstep)`` of the estimate: from an MNE object (``got``), else
    from ``tmin`` (s, default 0) and ``sfreq`` (Hz; default: times in samples,
    ``tstep = 1``). Both are metadata: concrete numbers, checked eagerly."""
    if got is not None:
        if tmin is not None or sfreq is not None:
            raise ValueError(
                f"tmin and sfreq are for array {name}: an MNE object brings its own "
                f"times (tmin={got.tmin!r} s, sfreq={1.0 / got.tstep!r} Hz)."
            )
        return got.tmin, got.tstep
    t0 = 0.0 if tmin is None else _concrete_float("tmin", tmin)
    if not np.isfinite(t0):
        raise ValueError(f"tmin must be finite (s), got {tmin!r}.")
    if sfreq is None:
        return t0, 1.0
    f = _concrete_float("sfreq", sfreq)
    if not (np.isfinite(f) and f > 0):
        raise ValueError(f"sfreq must be finite and > 0 (Hz), got {sfreq!r}.")
    return t0, 1.0 / f


def _concrete_float(name: str, value: Any) -> float:
    """A real scalar as a Python float; a traced value is a ``TypeError``."""
    check_real_scalar(name, value)
    if not is_concrete(value):
        raise TypeError(
            f"{name} must be a concrete number (it is the estimate's metadata), "
            "got a traced value."
        )
    return float(np.asarray(value))
