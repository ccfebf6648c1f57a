"""Process-level settings that make the torch forward passes faster on CPU (opt-in).

``retain_freed_memory()`` tells glibc's allocator to keep freed memory for reuse instead of
returning it to the kernel. A MUSE forward pass allocates and frees hundreds of multi-megabyte
temporaries; with glibc's defaults the top of the heap is trimmed after each free, so each
new temporary is page-faulted in again (zero-filled by the kernel). Keeping the memory takes
a MUSE window from ~20,000 minor page faults to none and its CPU time down by 1.08x on this
project's CPU (bench/bench_retain.py: fresh processes, alternating, bit-identical outputs).
It changes no result. It is process-wide, so it is a call the application makes (every
``jaxprobe`` command and the demo's side process call it first; the benches that time it),
never a side effect of importing a model. Library users who run forward passes in their own
process can call it themselves.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(top_pad_mb: int = 64, trim_threshold_mb: int = 1024) -> bool:
    """Keep freed heap memory for reuse (glibc only).

    Parameters
    ----------
    top_pad_mb : int
        Extra memory requested from the kernel whenever the heap grows, in MiB.
    trim_threshold_mb : int
        Free memory at the top of the heap is returned to the kernel only beyond this, in MiB.

    Returns
    -------
    bool
        True if glibc accepted the settings; False where the C library is not glibc (nothing
        is changed then).
    """
    for name, value in (("top_pad_mb", top_pad_mb), ("trim_threshold_mb", trim_threshold_mb)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1 << 20:
            raise ValueError(f"The '{name}' parameter of retain_freed_memory must be an int in [0, 1048576] MiB; got {value!r}.")
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mb = 1 << 20
    # Allocations up to 32 MiB (glibc's ceiling for this setting) come from the heap, not from
    # fresh mmaps, so they are reused too.
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * mb)
    ok &= mallopt(_M_TRIM_THRESHOLD, trim_threshold_mb * mb)
    ok &= mallopt(_M_TOP_PAD, top_pad_mb * mb)
    return bool(ok)
