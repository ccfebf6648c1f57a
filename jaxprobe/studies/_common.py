"""What every study runner shares: a stage logger, atomic JSON writes, the persistent XLA cache."""
from __future__ import annotations

import json
import os
import tempfile
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


def ensure_writable_dir(path, what: str = "--out") -> Path:
    """Create ``path`` (and parents) and prove a file can be written in it, before any work;
    :class:`jaxprobe.errors.OutputPathError` naming ``what`` otherwise."""
    from jaxprobe.errors import OutputPathError

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputPathError(f"The output folder {what} = {str(p)!r} cannot be written: "
                              f"{exc.strerror or exc}. Choose a folder you can create and write to.") from None
    return p


def check_embedded_noises(names, size: str, key: str) -> None:
    """Noise types named in a config exist in the embedded corpus of that size (known from its
    spec, so this runs before the corpus is built or read); ConfigError naming ``key`` otherwise."""
    from jaxprobe.errors import ConfigError
    from torch_bridge.corpus.build import SIZES  # the spec only: no torch, no audio

    have = SIZES[size].noise_types
    unknown = [n for n in names if n not in have]
    if unknown:
        raise ConfigError(f"Configuration key '{key}' must name noise types of the embedded corpus "
                          f"({size}): {sorted(have)}; got {list(names)!r} ({unknown} unknown).")


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
