"""What every study runner shares: a stage logger, atomic JSON writes, the persistent XLA cache."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def stage_logger(study: str) -> Callable[[str], None]:
    """``log(msg)`` printing ``[study HH:MM:SS] msg`` (flushed, so progress shows under pipes)."""

    def log(msg: str) -> None:
        print(f"[{study} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    return log


def json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to a temporary name next to ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=json_default))
    os.replace(tmp, path)


def enable_compilation_cache() -> None:
    """Persist XLA compilations so re-runs skip the compile cost."""
    import jax

    cache = Path(os.environ.get("JAXPROBE_CACHE", Path.home() / ".cache" / "jaxprobe")) / "xla"
    try:
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # pragma: no cover - older jax without these options
        pass
