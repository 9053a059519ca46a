"""JAX settings of a physiotwin process (the CLI, a trial's worker processes)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["setup_jax"]


def setup_jax(devices: int | None = None) -> None:
    """float64; ``devices`` CPU devices (default one per core; large cohorts are split over
    them), set before JAX starts its backend; and the persistent compilation cache
    (``PHYSIOTWIN_JAX_CACHE``, default ``~/.cache/physiotwin/jax``; empty disables it)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        jax.config.update("jax_num_cpu_devices", devices or os.cpu_count() or 1)
    except RuntimeError:
        pass  # the backend is already running (e.g. the CLI invoked from a Python session)
    cache = os.environ.get("PHYSIOTWIN_JAX_CACHE", str(Path.home() / ".cache" / "physiotwin" / "jax"))
    if cache:
        try:
            Path(cache).mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        except OSError:
            pass  # a cache is an optimisation only
