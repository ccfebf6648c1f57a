"""What every study runner shares: a stage logger, atomic JSON writes, the persistent XLA cache."""
from __future__ import annotations

import json
import math
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


def auto_workers(cpus: int | None = None, load: float | None = None) -> int:
    """How many one-thread workers to run: the CPU cores this process may use that the
    1-minute load average leaves idle (a partly idle core counts), plus one to share, at most
    the cores; 1 once the load fills every core. One-thread workers never spin-wait on each
    other, so sharing a core only time-slices it. The guard for a shared machine: on 2 cores,
    2 below load 2, 1 at load 2 or more (at load 14, 1)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this platform
            load = float(cpus)
    if load >= cpus:
        return 1
    return max(1, min(int(cpus), math.ceil(cpus - load) + 1))


XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def guard_xla_threads(workers: int) -> bool:
    """On a machine the load leaves no second idle core for (``workers`` == 1 of several
    cores), run XLA's CPU programs on one thread: its thread pool waits on threads the other
    jobs hold (a 2000 x 2000 matmul took 1.24x as long at load 6 on 2 cores as on one
    thread). Applies only before JAX starts its CPU backend and when ``XLA_FLAGS`` does not
    set the threads already; returns whether it applied."""
    from jax._src import xla_bridge

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    flags = os.environ.get("XLA_FLAGS", "")
    if workers > 1 or cpus < 2 or "multi_thread_eigen" in flags or "intra_op_parallelism" in flags:
        return False
    if xla_bridge.backends_are_initialized():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()
    return True


#: Every compiled program goes to the persistent cache, however fast it compiled: a warm re-run
#: of the demo then compiles nothing (at 0.5 s, ~300 small programs compiled afresh every run).
COMPILE_CACHE_MIN_SECS = 0.0


def enable_compilation_cache() -> None:
    """Persist XLA compilations so re-runs skip the compile cost (in $JAXPROBE_XLA_CACHE, else
    $JAXPROBE_CACHE/xla, else ~/.cache/jaxprobe/xla)."""
    import jax

    cache = Path(os.environ.get("JAXPROBE_XLA_CACHE")
                 or Path(os.environ.get("JAXPROBE_CACHE", Path.home() / ".cache" / "jaxprobe")) / "xla")
    try:
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECS)
    except Exception:  # pragma: no cover - older jax without these options
        pass


# ----------------------------------------------------------------------------- one writer, whole stages

def locks_output_folder(study: str):
    """Decorate a study's ``run(config, out_dir, ...)`` so that it holds the one-writer lock of
    ``out_dir`` while it runs: a second run on the same folder is refused at once with who
    holds it (``torch_bridge.locks.FolderBusyError``); a lock left by a killed run is
    reported and cleared."""
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def run(config, out_dir, *args, **kwargs):
            from torch_bridge.locks import folder_lock  # plain Python; no torch

            ensure_writable_dir(out_dir, "--out")  # the usual message when it cannot be written
            with folder_lock(out_dir, purpose=f"jaxprobe {study}", log=stage_logger(study)):
                return fn(config, out_dir, *args, **kwargs)

        return run

    return deco


def _digest(path: Path) -> dict:
    from torch_bridge.store import file_digest  # numpy + xxhash only

    size, digest = file_digest(path)
    return {"bytes": size, "xxh3_64": digest}


def _stage_path(out: Path, stage: str) -> Path:
    return Path(out) / "stages" / f"{stage}.json"


def stage_outputs_intact(out: Path, stage: str, key: str) -> tuple[bool, str]:
    """Whether stage ``stage`` of the run folder ``out`` finished with inputs and settings
    ``key`` and every output it recorded is still there, byte for byte. Returns (ok, why not)."""
    path = _stage_path(out, stage)
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return False, "not run yet (or killed before it finished)"
    except (OSError, ValueError):
        return False, f"{path} is unreadable"
    if rec.get("key") != key:
        return False, "its inputs or settings changed"
    for name, want in rec.get("files", {}).items():
        f = Path(out) / name
        if not f.is_file():
            return False, f"{f} is missing"
        if _digest(f) != want:
            return False, f"{f} changed since the stage wrote it"
    return True, ""


def invalidate_stage(out: Path, stage: str) -> None:
    """Forget that stage ``stage`` finished (call before rewriting any of its outputs)."""
    _stage_path(out, stage).unlink(missing_ok=True)


def write_stage_manifest(out: Path, stage: str, key: str, files: list[str]) -> Path:
    """Record that stage ``stage`` finished: its key and the size and checksum of each output
    (paths relative to ``out``). Written last and atomically, so a stage killed between two
    of its writes has no manifest and is recomputed as a whole."""
    path = _stage_path(out, stage)
    path.parent.mkdir(exist_ok=True)
    atomic_json(path, {"key": key, "files": {name: _digest(Path(out) / name) for name in files},
                       "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return path


def store_content_key(store_dir: Path) -> str:
    """The activation store's content key (a digest of every chunk's recorded checksums):
    results cached on a store are valid only while it is unchanged."""
    from torch_bridge.store import open_store  # numpy only; no torch

    return open_store(store_dir).content_key()
