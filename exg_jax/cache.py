"""Opt-in persistent compilation cache (JAX's), for faster first calls.

JAX compiles every program on its first call in a process: for exg_jax's
larger programs (the Berg–Scherg fit, eLORETA, a streamed batch step) that
is seconds. :func:`enable_compilation_cache` switches on JAX's persistent
cache, so that a second process (a notebook restart, the next run of a
script or of the CLI) loads the compiled programs from disk instead.

Importing exg_jax never switches it on: the cache writes to disk and changes
global JAX configuration, which is the caller's choice. Equivalent ways:
call :func:`enable_compilation_cache`, or set JAX's own
``JAX_COMPILATION_CACHE_DIR`` environment variable before starting Python.
The CLI (``exg-jax``) enables it unless ``--no-cache`` is given.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["default_cache_dir", "enable_compilation_cache"]


def default_cache_dir() -> Path:
    """``$EXG_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/exg_jax/jax`` (``~/.cache/...``)."""
    env = os.environ.get("EXG_JAX_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "exg_jax" / "jax"


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, min_compile_time_s: float = 0.5
) -> Path:
    """Switch on JAX's persistent compilation cache for this process.

    Parameters
    ----------
    path : str or PathLike, optional
        Cache directory (created if missing). Default:
        :func:`default_cache_dir`.
    min_compile_time_s : float
        Only programs that took at least this long to compile are stored
        (JAX's ``jax_persistent_cache_min_compile_time_secs``); ≥ 0.

    Returns
    -------
    path : pathlib.Path
        The directory in use.

    Notes
    -----
    Sets ``jax_compilation_cache_dir`` and
    ``jax_persistent_cache_min_compile_time_secs`` (global JAX
    configuration, for every library in the process). Entries are keyed on
    the compiled program, the JAX / jaxlib version and the device, so a stale
    entry is never used; the directory can be deleted at any time. Programs
    compiled before the call are not stored.
    """
    if isinstance(min_compile_time_s, bool) or not isinstance(
        min_compile_time_s, int | float
    ):
        raise TypeError(
            "min_compile_time_s must be a number of seconds, got "
            f"{type(min_compile_time_s).__name__}."
        )
    if not min_compile_time_s >= 0:
        raise ValueError(
            f"min_compile_time_s must be >= 0, got {min_compile_time_s!r}."
        )
    p = default_cache_dir() if path is None else Path(os.fspath(path)).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"path must be a directory, got the file {str(p)!r}.")
    p.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(p))
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s)
    )
    try:  # a cache initialised earlier in the process (without a directory) is reset
        from jax.experimental.compilation_cache import compilation_cache as _cc

        _cc.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - older / newer JAX
        pass
    return p
