"""Compile ``muse_kernels.c`` once into the cache and load it (see the package docstring)."""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("muse_kernels.c")
# -O3 and the host's vector units; no -ffast-math: the kernels fix their own summation order and
# rounding (float64 where the values must match torch's float64 paths).
# (No -Werror here: a newer compiler's new warning must not switch the kernels off for a user;
# tests/torch_bridge/test_native.py compiles with -Werror to keep the source warning-free.)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c11", "-fno-math-errno", "-Wall")
ENV_SWITCH = "JAXPROBE_NATIVE"

_F32P = ctypes.POINTER(ctypes.c_float)
# name -> argument types; pointers are float32 buffers (None passes NULL), then int sizes. The
# fused kernels return 0, or -1 for sizes they do not handle (deform_dw3x3 returns nothing).
_SIGNATURES = {
    "deform_dw3x3": [_F32P, _F32P, _F32P, _F32P] + [ctypes.c_int] * 3,
    "gated_ffn": [_F32P] * 5 + [ctypes.c_int] * 4,
    "ffn_block": [_F32P] * 6 + [ctypes.c_int] * 4,
    "gelu_array": [_F32P, _F32P, ctypes.c_int],
    "deform_embed": [_F32P] * 6 + [ctypes.c_int] * 3,
    "layer_norm_cl": [_F32P, _F32P, _F32P, ctypes.c_int, ctypes.c_int],
    "dense_step": [_F32P, ctypes.c_int] + [_F32P] * 5 + [_F32P, ctypes.c_int] + [ctypes.c_int] * 4,
    "taylor_attention_d16": [_F32P] * 14 + [ctypes.c_int] * 3,
    "norm_prelu_cl": [_F32P, ctypes.c_int] + [_F32P] * 3 + [ctypes.c_int, _F32P] + [ctypes.c_int] * 3,
    "copy_pixels": [_F32P] + [ctypes.c_int] * 4 + [_F32P, ctypes.c_int],
}


def pointer(t) -> ctypes.POINTER(ctypes.c_float):
    """A float32 pointer to the storage of ``t`` (a contiguous float32 CPU tensor; not checked
    here: the callers check dtype, device and layout, since a wrong layout reads wrong values)."""
    return ctypes.cast(t.data_ptr(), _F32P)


class NativeUnavailable(RuntimeError):
    """The C kernels were asked for explicitly but could not be built or loaded."""


def native_enabled() -> bool:
    """False when ``$JAXPROBE_NATIVE`` is ``0``/``false``/``off`` (the torch formulations are used)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def _cache_root() -> Path:
    base = os.environ.get("JAXPROBE_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "jaxprobe") / "native"


def _compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc)


def _cpu_features() -> str:
    """The host CPU's feature flags (``-march=native`` code must not run on another CPU from a
    shared cache folder)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _key(cc: str) -> str:
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h = hashlib.sha256(SOURCE.read_bytes())
    for part in (" ".join(FLAGS), version, _cpu_features()):
        h.update(part.encode())
    return h.hexdigest()[:16]


def build_library(cache: Path | None = None) -> Path:
    """Compile ``muse_kernels.c`` into ``cache`` (default ``$JAXPROBE_CACHE/native``) unless the
    library for this source, compiler, flags and CPU is already there; returns its path.

    Raises
    ------
    NativeUnavailable
        No C compiler (``$CC`` or ``cc``), or the compilation failed (its messages included).
    """
    cc = _compiler()
    if cc is None:
        raise NativeUnavailable(
            f"no C compiler found (${{CC}}={os.environ.get('CC', 'cc')!r} is not on PATH); MUSE runs its torch "
            "formulation, ~1.4x slower per window (install gcc to enable the C kernels).")
    target = (cache if cache is not None else _cache_root()) / f"muse_kernels-{_key(cc)}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private temporary name, then rename: concurrent first uses (the demo's
    # workers) each build and the last rename wins; a reader never sees a partial file.
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        try:
            proc = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                                  timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            raise NativeUnavailable(f"running {cc} failed: {err}") from err
        if proc.returncode != 0:
            raise NativeUnavailable(f"compiling {SOURCE.name} with {cc} failed:\n{proc.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_library(path: Path) -> ctypes.CDLL:
    """Load a built kernel library and declare its functions' argument and result types."""
    lib = ctypes.CDLL(str(path))
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = None if name in ("deform_dw3x3", "gelu_array", "dense_step", "copy_pixels") else ctypes.c_int
    return lib


_LIB: ctypes.CDLL | None = None
_TRIED = False
_LOCK = threading.Lock()


def library(*, required: bool = False) -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None when unavailable.

    Parameters
    ----------
    required : bool
        Raise ``NativeUnavailable`` instead of returning None (tests, benches).
    """
    if not native_enabled():
        if required:
            raise NativeUnavailable(f"the C kernels are switched off (${ENV_SWITCH}={os.environ[ENV_SWITCH]!r}).")
        return None
    if _LIB is not None or (_TRIED and not required):
        return _LIB
    with _LOCK:  # one build per process even when worker threads start together
        if _LIB is not None:
            return _LIB
        return _load(required)


def _load(required: bool) -> ctypes.CDLL | None:
    global _LIB, _TRIED
    _TRIED = True
    try:
        _LIB = load_library(build_library())
    except (NativeUnavailable, OSError) as err:
        if required:
            raise NativeUnavailable(str(err)) from err
        log.warning("C kernels unavailable, MUSE uses its torch formulation: %s", err)
        return None
    return _LIB
