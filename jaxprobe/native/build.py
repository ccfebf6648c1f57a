"""Compile the C kernel and its XLA FFI binding once into the cache, and register the target."""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
C_SOURCE = HERE / "cka_items.c"
CC_SOURCE = HERE / "ffi.cc"
# -O3 and the host's vector units; no -ffast-math: the kernel fixes its own summation order.
C_FLAGS = ("-O3", "-march=native", "-fPIC", "-std=c11", "-fno-math-errno", "-Wall")
CXX_FLAGS = ("-O3", "-march=native", "-fPIC", "-std=c++17", "-Wall")
ENV_SWITCH = "JAXPROBE_NATIVE"
ENV_THREADS = "JAXPROBE_NATIVE_THREADS"
TARGET = "jaxprobe_cka_items"
TARGET_GRAMS = "jaxprobe_unit_grams"
TARGET_MEDIAN = "jaxprobe_upper_median"


class NativeUnavailable(RuntimeError):
    """The native CPU kernels were asked for explicitly but could not be built or loaded."""


def native_enabled() -> bool:
    """False when ``$JAXPROBE_NATIVE`` is ``0``/``false``/``off``/``no`` (the XLA programs are used)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def native_threads() -> int:
    """Worker threads of one kernel call: ``$JAXPROBE_NATIVE_THREADS``, else the cores this
    process may run on (what XLA's own CPU thread pool uses)."""
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"${ENV_THREADS} must be a positive integer; got {env!r}.")
        return value
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cache_root() -> Path:
    base = os.environ.get("JAXPROBE_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "jaxprobe") / "native"


def _tool(var: str, default: str) -> str | None:
    return shutil.which(os.environ.get(var, default))


def _version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_flags() -> str:
    """The CPU's feature flags: ``-march=native`` code must not run on another CPU that shares the cache."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def ffi_include_dir() -> str:
    import jax.ffi

    return jax.ffi.include_dir()


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as err:
        raise NativeUnavailable(f"running {cmd[0]} failed: {err}") from err
    if proc.returncode != 0:
        raise NativeUnavailable(f"compiling {what} with {cmd[0]} failed:\n{proc.stderr.strip()}")


def build_library(cache: Path | None = None, *, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``cka_items.c`` (``$CC``, else ``cc``) and ``ffi.cc`` (``$CXX``, else ``c++``, against
    the installed jaxlib's FFI headers) into one shared library in ``cache`` (default
    ``$JAXPROBE_CACHE/native``) unless the library for these sources, compilers, flags, jaxlib
    and CPU is already there; returns its path. Compiles under a temporary name, then renames.

    Raises
    ------
    NativeUnavailable
        No C or C++ compiler, or a compilation failed (its messages included).
    """
    import jaxlib

    cc, cxx = _tool("CC", "cc"), _tool("CXX", "c++")
    if cc is None or cxx is None:
        missing = "C" if cc is None else "C++"
        raise NativeUnavailable(
            f"no {missing} compiler found (${{CC}}/${{CXX}} or cc/c++ on PATH); per-item CKA on the CPU runs as "
            "an XLA program instead, several times slower (install gcc and g++ to enable the native kernel).")
    h = hashlib.sha256(C_SOURCE.read_bytes() + CC_SOURCE.read_bytes())
    for part in (" ".join(C_FLAGS + CXX_FLAGS + extra_flags), _version(cc), _version(cxx), _cpu_flags(),
                 jaxlib.__version__):
        h.update(part.encode())
    target = (cache if cache is not None else _cache_root()) / f"jaxprobe_cka-{h.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=target.stem + ".", dir=target.parent) as tmp:
        obj_c, obj_cc, lib = (os.path.join(tmp, name) for name in ("cka_items.o", "ffi.o", "lib.so"))
        _run([cc, *C_FLAGS, *extra_flags, "-c", str(C_SOURCE), "-o", obj_c], C_SOURCE.name)
        _run([cxx, *CXX_FLAGS, *extra_flags, "-isystem", ffi_include_dir(), "-c", str(CC_SOURCE), "-o", obj_cc],
             CC_SOURCE.name)
        _run([cxx, "-shared", obj_cc, obj_c, "-o", lib, "-lpthread", "-lm"], "the shared library")
        os.replace(lib, target)  # concurrent first uses each build; the last rename wins, never a partial file
    return target


_LIB: ctypes.CDLL | None = None
_TRIED = False
_LOCK = threading.Lock()


def load_library(path: Path) -> ctypes.CDLL:
    """Load a built library (its C entry points ``cka_items_f32`` and ``unit_grams_f32`` get their
    ctypes signatures)."""
    lib = ctypes.CDLL(str(path))
    f32p, i64, i32, i32p = ctypes.POINTER(ctypes.c_float), ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
    lib.cka_items_f32.argtypes = [f32p, i64, i32, i32, i32, i32, f32p, i64, i32, i32p, f32p, f32p]
    lib.unit_grams_f32.argtypes = [f32p, i64, i32, i32, i32, i32, i32, i32p, f32p, f32p]
    lib.cka_items_f32.restype = lib.unit_grams_f32.restype = ctypes.c_int
    return lib


def library(*, required: bool = False) -> ctypes.CDLL | None:
    """The loaded library with its FFI target registered for the CPU, building it on first use;
    None when unavailable or switched off (``required=True`` raises ``NativeUnavailable`` instead)."""
    global _LIB, _TRIED
    if not native_enabled():
        if required:
            raise NativeUnavailable(f"the native kernels are switched off (${ENV_SWITCH}={os.environ[ENV_SWITCH]!r}).")
        return None
    if _LIB is not None or (_TRIED and not required):
        return _LIB
    with _LOCK:
        if _LIB is not None:
            return _LIB
        _TRIED = True
        try:
            import jax.ffi

            lib = load_library(build_library())
            jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.jaxprobe_cka_items), platform="cpu")
            jax.ffi.register_ffi_target(TARGET_GRAMS, jax.ffi.pycapsule(lib.jaxprobe_unit_grams), platform="cpu")
            jax.ffi.register_ffi_target(TARGET_MEDIAN, jax.ffi.pycapsule(lib.jaxprobe_upper_median), platform="cpu")
        except (NativeUnavailable, OSError) as err:
            if required:
                raise NativeUnavailable(str(err)) from err
            log.warning("native CPU kernel unavailable, per-item CKA runs as an XLA program: %s", err)
            return None
        _LIB = lib
    return _LIB
