"""Hand-written C kernels for the CPU forward passes, compiled on first use and loaded with ctypes.

Why C: the MUSE level-1 blocks are a chain of small channels-last operations (1x1 convs with 16
input channels, depthwise 3x3 convs, bilinear sampling) whose cost in eager torch is the traffic
of writing and re-reading each multi-megabyte intermediate, not the arithmetic (issue 19). A
kernel that walks the map once, row by row, keeps each intermediate in the cache. The kernels
take raw float32 buffers (contiguous channels-last maps of one batch item) and have no torch,
Python or OpenMP dependency; ``build.py`` compiles ``muse_kernels.c`` with the system C compiler
(``$CC``, else ``cc``) into the cache (``$JAXPROBE_CACHE/native``, default
``~/.cache/jaxprobe/native``), once per source/compiler/flags, and loads it.

Everything here is optional: without a C compiler (or with ``JAXPROBE_NATIVE=0``) ``library()``
returns None and the callers keep their torch formulation, which gives the same values to
float rounding (tests/torch_bridge/test_native.py states the tolerances).
"""
from torch_bridge.native.build import (NativeUnavailable, build_library, library, load_library, native_enabled,
                                      pointer)

__all__ = ["NativeUnavailable", "build_library", "library", "load_library", "native_enabled", "pointer"]
