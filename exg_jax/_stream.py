"""The streaming engine: host data in chunks through one compiled step.

Used by :func:`exg_jax.apply_inverse_epochs` (chunks of epochs) and
:func:`exg_jax.apply_inverse_raw` (chunks of time) for data that need not fit
on the device: NumPy arrays, ``np.memmap`` or an iterable of chunks.
MNE-Python's ``Evoked`` / ``Epochs`` / ``Raw`` enter here too
(:func:`sensor_data_from_mne`): their channels are picked by name, and the
resulting NumPy array goes the same way as any other array.

* One compiled step ``reduce(apply(kernel, chunk))`` for every chunk: the last
  chunk is padded with zeros to the common size (and its padding dropped on
  the host), so nothing recompiles.
* Transfers overlap compute: a background thread reads the next chunk from
  the host (a memmap read happens there) and starts its transfer
  (``jax.device_put`` is asynchronous) while the device computes the current
  one; the main thread copies the previous result back. At most three chunks
  live on the device, whatever the number of epochs. The chunk's buffer is
  donated to the step on accelerators (XLA reuses it).
* Several devices: each chunk is split over a 1-D mesh (``jax.sharding``),
  the kernel and the reduction's arrays replicated.
"""

from __future__ import annotations

import concurrent.futures
import math
import mmap
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._validate import _MNE_HINTS, _mne_class, as_ch_names, as_int
from .kernel import ImagingKernel, prepared_apply, prepared_apply_batch

#: Default budget (bytes) for the unreduced source estimate of one chunk.
CHUNK_BYTES = 1 << 28


def release_pages(view) -> None:
    """Drop the pages of a memmap view from this process's resident set.

    ``madvise(MADV_DONTNEED)`` on the view's pages once the engine has read
    (input) or written (``out``) them: the data stay in the file (and the
    page cache), but the process's RSS no longer grows with the file, so a
    streamed pass over a 10 GB memmap holds O(chunk) in memory. A no-op for
    anything that is not an ``np.memmap`` view, and where ``madvise`` is
    missing (non-POSIX).
    """
    mm = getattr(view, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not view.flags.c_contiguous:
        return
    try:
        base = np.frombuffer(mm, np.uint8)
        origin = base.__array_interface__["data"][0]
        del base
        start = view.__array_interface__["data"][0] - origin
        end = start + view.nbytes
        first = start - start % mmap.PAGESIZE
        if end > first:
            mm.madvise(mmap.MADV_DONTNEED, first, end - first)
    except (AttributeError, OSError, ValueError, TypeError, BufferError):
        pass  # pragma: no cover - an unusual mapping: keep the pages


def default_chunk(
    n_rows: int, n_times: int, itemsize: int, n_dev: int, n_total: int | None = None
) -> int:
    """Epochs per chunk so that the chunk's unreduced estimate is ~CHUNK_BYTES,
    and no more than the ``n_total`` epochs there are (when known): a small
    input is one chunk of its own size, not padded to the memory budget."""
    per_epoch = max(1, n_rows * n_times * itemsize)
    c = max(1, CHUNK_BYTES // per_epoch)
    if n_total is not None:
        c = max(1, min(c, n_total))
    return int(math.ceil(c / n_dev) * n_dev)


def as_devices(devices) -> list | None:
    """None (default device), "all" or a sequence of jax devices."""
    if devices is None:
        return None
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(
                f"devices must be None, 'all' or a sequence of jax devices, got {devices!r}."
            )
        return list(jax.devices())
    try:
        devs = list(devices)
    except TypeError:
        raise TypeError(
            f"devices must be None, 'all' or a sequence of jax devices, got {type(devices).__name__}."
        ) from None
    if not devs or not all(isinstance(d, jax.Device) for d in devs):
        raise TypeError(
            "devices must be a non-empty sequence of jax.Device objects (jax.devices())."
        )
    return devs


def use_progress(progress) -> bool:
    """None: a bar when stderr is a terminal; True / False: as given."""
    if progress is None:
        return bool(
            getattr(sys.stderr, "isatty", lambda: False)()
        ) and not os.environ.get("EXG_JAX_NO_PROGRESS")
    return bool(progress)


class _Bar:
    """tqdm when available and asked for, else nothing."""

    def __init__(self, enabled: bool, total: int | None, unit: str, desc: str):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                return
            self.bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True)

    def update(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _step(kr, x, axis: str):
    """Pure: ``reduce(apply(kernel, x))`` for one chunk ``x``."""
    k, red = kr
    sol = prepared_apply_batch(k)(x) if axis == "epochs" else prepared_apply(k)(x)
    return sol if red is None else red(sol)


# One compiled step per (kernel structure, reduction, chunk shape), reused for
# every chunk and every call. On accelerators the chunk's buffer is donated.
_step_jit = eqx.filter_jit(_step)
_step_jit_donate = eqx.filter_jit(_step, donate="all-except-first")


def stream(
    kernel: ImagingKernel,
    chunks: Iterator[np.ndarray],
    *,
    axis: str,
    chunk_len: int,
    reduce: Callable | None,
    out: Any,
    n_total: int | None,
    devices: list | None,
    progress: bool,
    dtype,
    desc: str,
):
    """Run ``reduce(apply(kernel, chunk))`` over host chunks; gather on the host.

    Parameters
    ----------
    kernel : ImagingKernel
    chunks : iterator of NumPy arrays
        ``axis="epochs"``: (n_i, n_chan, n_times), n_i ≤ chunk_len;
        ``axis="time"``: (n_chan, n_i).
    chunk_len : int
        Common (padded) chunk length; a multiple of the number of devices.
    reduce : callable or None
    out : writable array or None
        Destination of the results (only when its shape is known).
    n_total : int or None
        Total epochs / samples, if known (progress bar, ``out`` check).
    devices : list of jax devices or None
    dtype : the kernel's dtype (chunks are cast to it on the host).

    Returns
    -------
    The results concatenated along ``axis`` (a pytree of NumPy arrays), or
    ``out``.
    """
    cat_axis = 0 if axis == "epochs" else -1
    if devices is None:
        dev = next(iter(kernel.kernel.devices()))
        data_sharding = repl = jax.sharding.SingleDeviceSharding(dev)
        platform = dev.platform
    else:
        mesh = Mesh(np.asarray(devices), ("batch",))
        spec = (
            PartitionSpec("batch") if axis == "epochs" else PartitionSpec(None, "batch")
        )
        data_sharding = NamedSharding(mesh, spec)
        repl = NamedSharding(mesh, PartitionSpec())
        platform = devices[0].platform
    kr = (kernel, reduce)
    dyn, static = eqx.partition(kr, eqx.is_array)
    kr = eqx.combine(jax.device_put(dyn, repl), static)
    step_jit = _step_jit if platform == "cpu" else _step_jit_donate

    def pad(c):
        n = c.shape[0] if axis == "epochs" else c.shape[-1]
        if n == chunk_len:
            return n, c
        if n > chunk_len:
            raise ValueError(
                f"a chunk has {n} {axis}, more than chunk_size={chunk_len}."
            )
        if axis == "epochs":
            buf = np.zeros((chunk_len,) + c.shape[1:], dtype)
            buf[:n] = c
        else:
            buf = np.zeros(c.shape[:-1] + (chunk_len,), dtype)
            buf[..., :n] = c
        return n, buf

    def load():
        c = next(chunks, None)
        if c is None:
            return None
        if isinstance(c, jax.Array):  # already on a device: pad and cast there
            n = c.shape[0] if axis == "epochs" else c.shape[-1]
            widths = [(0, 0)] * c.ndim
            widths[0 if axis == "epochs" else -1] = (0, chunk_len - n)
            c = jnp.pad(c.astype(dtype), widths)
            return n, jax.device_put(c, data_sharding)
        src = c
        c = np.array(c, dtype=dtype, copy=True, order="C")
        release_pages(src)  # a memmap's pages: read once, then dropped
        n, c = pad(c)
        return n, jax.device_put(c, data_sharding)

    bar = _Bar(progress, n_total, "epoch" if axis == "epochs" else "sample", desc)
    results = []
    written = 0

    def emit(item):
        nonlocal written
        n, y = item
        y = jax.device_get(y)
        if axis == "epochs":
            y = jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], y)
        else:
            y = jax.tree_util.tree_map(lambda a: np.asarray(a)[..., :n], y)
        if out is not None:
            if axis == "epochs":
                out[written : written + n] = y
                release_pages(out[written : written + n])
            else:
                out[..., written : written + n] = y
        else:
            results.append(y)
        written += n
        bar.update(n)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(load)
        prev = None
        try:
            while True:
                item = fut.result()
                if item is None:
                    break
                fut = pool.submit(load)  # the next read + transfer overlaps this step
                n, x = item
                y = step_jit(kr, x, axis)
                if prev is not None:
                    emit(prev)
                prev = (n, y)
            if prev is not None:
                emit(prev)
        finally:
            bar.close()
    if out is not None:
        if n_total is not None and written != n_total:  # pragma: no cover - defensive
            raise RuntimeError(f"wrote {written} of {n_total} {axis}.")
        if hasattr(out, "flush"):
            out.flush()
        return out
    if not results:
        raise ValueError("the data have no epochs / samples (an empty iterable).")
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=cat_axis), *results)


def iter_epoch_chunks(data, chunk_len: int) -> Iterator[np.ndarray]:
    """Chunks (≤ chunk_len epochs) of a 3-D array, or of an iterable of chunks."""
    if isinstance(data, np.ndarray | jax.Array):
        for i in range(0, data.shape[0], chunk_len):
            yield data[i : i + chunk_len]
        return
    for c in data:
        if not isinstance(c, np.ndarray | jax.Array):
            c = np.asarray(c)
        if c.ndim == 2:
            c = c[None]
        for i in range(0, c.shape[0], chunk_len):
            yield c[i : i + chunk_len]


def iter_time_chunks(
    data, start: int, stop: int, chunk_len: int
) -> Iterator[np.ndarray]:
    for i in range(start, stop, chunk_len):
        yield data[:, i : min(i + chunk_len, stop)]


def is_streamable(data) -> bool:
    """Host data the engine can stream: a NumPy array or an iterable of chunks."""
    if isinstance(data, jax.Array):
        return False
    if isinstance(data, np.ndarray):
        return True
    return isinstance(data, Iterable) and not isinstance(
        data, list | tuple | str | bytes
    )


# --------------------------------------------------------------------------- #
# MNE-Python data objects as data sources
# --------------------------------------------------------------------------- #
class SensorData(NamedTuple):
    """Sensor data taken from an MNE-Python object (:func:`data_from_mne`).

    Attributes
    ----------
    data : ndarray, shape (n_chan, n_times) or (n_epochs, n_chan, n_times), V
        NumPy, the object's dtype (float64); rows in the order of ``ch_names``.
    ch_names : tuple of str
        The channels of ``data``'s rows.
    tmin : float, s
        Time of the first sample (``times[0]``; for a raw segment, the time
        of ``start`` from the first sample of the recording, as MNE).
    tstep : float, s
        ``1 / sfreq``.
    nave : float
        Number of averaged epochs: ``evoked.nave`` for an ``Evoked``, 1 for
        epochs and raw data (MNE's default for those).
    """

    data: np.ndarray
    ch_names: tuple[str, ...]
    tmin: float
    tstep: float
    nave: float


_DATA_KINDS = {
    "Evoked": "an mne.Evoked",
    "BaseEpochs": "mne.Epochs",
    "BaseRaw": "mne.Raw",
}


def _pick(name, obj, ch_names):
    """Row indices of ``ch_names`` in ``obj`` (by name), refusing missing / bad ones."""
    names = list(obj.ch_names)
    bads = set(obj.info["bads"])
    missing = [n for n in ch_names if n not in names]
    if missing:
        raise ValueError(
            f"{name}: {len(missing)} channel(s) of the operator are not in the data: "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}. Build the "
            "operator from the channels the data have (forward_from_mne(fwd, "
            "info=data.info))."
        )
    bad = [n for n in ch_names if n in bads]
    if bad:
        raise ValueError(
            f"{name}: channel(s) {bad} are marked bad in the data (info['bads']) but "
            "the operator uses them. Build the operator without them "
            "(forward_from_mne(fwd, info=data.info) leaves the data's bads out), or "
            "clear info['bads'] if they are good."
        )
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[n] for n in ch_names], dtype=np.int64)


def _default_names(obj):
    import mne

    picks = mne.pick_types(obj.info, meg=False, eeg=True, exclude="bads")
    if len(picks) == 0:
        raise ValueError("data_from_mne: the object has no good EEG channel.")
    return tuple(obj.ch_names[p] for p in picks)


def sensor_data_from_mne(
    name: str,
    obj: Any,
    ch_names: tuple[str, ...] | None,
    kinds: tuple[str, ...],
    *,
    start: Any = None,
    stop: Any = None,
    owner: str = "the inverse operator",
) -> SensorData | None:
    """``obj`` as :class:`SensorData` if it is one of the MNE ``kinds``, else None.

    ``kinds``: base-class names among ``"Evoked"``, ``"BaseEpochs"``,
    ``"BaseRaw"``. ``ch_names``: the operator's channels (rows picked by name,
    in this order); None raises a ``TypeError`` (the operator cannot be
    matched by name). ``start`` / ``stop``: samples of a raw recording
    (only that segment is read). Other MNE objects and non-MNE objects give
    None (the caller's own checks then apply).
    """
    cls = _mne_class(obj)
    if cls not in kinds:
        return None
    if ch_names is None:
        hint = _MNE_HINTS.get(cls, "")
        raise TypeError(
            f"{name} is an mne.{type(obj).__name__} (MNE-Python object) but "
            f"{owner} has no channel names (ch_names is None), so its channels "
            f"cannot be matched by name; {hint}."
        )
    sel = _pick(name, obj, ch_names)
    sfreq = float(obj.info["sfreq"])
    nave = 1.0
    if cls == "Evoked":
        data = np.asarray(obj.data)[sel]
        tmin = float(obj.times[0])
        nave = float(obj.nave)
    elif cls == "BaseEpochs":
        data = np.asarray(obj.get_data(picks=sel))
        tmin = float(obj.times[0])
    else:
        n = int(obj.n_times)
        start = as_int("start", 0 if start is None else start, minimum=0)
        stop = as_int("stop", n if stop is None else stop, minimum=0)
        if start > n or stop > n or start >= stop:
            raise ValueError(
                f"start and stop must satisfy 0 <= start < stop <= n_samples = {n}, "
                f"got start={start}, stop={stop}."
            )
        data = np.asarray(obj.get_data(picks=sel, start=start, stop=stop))
        tmin = float(obj.times[start])
    return SensorData(data, tuple(ch_names), tmin, 1.0 / sfreq, nave)


def data_from_mne(obj: Any, ch_names: Any = None) -> SensorData:
    """Sensor data of an ``mne.Evoked`` / ``mne.Epochs`` / ``mne.io.Raw``.

    Parameters
    ----------
    obj : mne.Evoked or mne.Epochs or mne.io.Raw
    ch_names : sequence of str, or an object with ``ch_names``, or None
        The channels wanted, in this order (e.g. a ForwardOperator or
        InverseOperator with names); each must be in ``obj`` and not marked
        bad. None: the good (not bad) EEG channels of ``obj``, in its order.

    Returns
    -------
    SensorData
        ``(data, ch_names, tmin, tstep, nave)``; ``data`` (n_chan, n_times)
        for Evoked and Raw (the whole recording), (n_epochs, n_chan, n_times)
        for Epochs, V. Projectors are not applied (the operator's whitener
        applies the average reference).

    Raises
    ------
    TypeError
        ``obj`` is not one of these MNE objects.
    ValueError
        A wanted channel is missing or marked bad; no good EEG channel.
    """
    cls = _mne_class(obj)
    if cls not in _DATA_KINDS:
        raise TypeError(
            "data_from_mne takes an mne.Evoked, mne.Epochs or mne.io.Raw, got "
            f"{type(obj).__module__}.{type(obj).__qualname__}."
        )
    if ch_names is None:
        names = _default_names(obj)
    else:
        if not isinstance(ch_names, str | bytes) and hasattr(ch_names, "ch_names"):
            ch_names = ch_names.ch_names
        names = as_ch_names(ch_names)
        if names is None:
            raise TypeError("ch_names: the object given has no channel names.")
    out = sensor_data_from_mne("obj", obj, names, tuple(_DATA_KINDS), owner="ch_names")
    assert out is not None
    return out
