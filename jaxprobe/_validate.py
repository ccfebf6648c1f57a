"""Shared input validators: every error says which argument, what was expected,
what arrived, and how to fix it. Used at the Python boundary of the public API,
once, before anything is traced."""
from __future__ import annotations

import numbers
import sys
import threading
from typing import Any

import numpy as np


def _where(fn: str | None) -> str:
    return f" of {fn}" if fn else ""


ALIGN = 64  # XLA:CPU hands a numpy buffer to the device without a copy only at this alignment
STAGING_MIN_BYTES = 1 << 20  # smaller copies are cheap: no pooling
STAGING_MAX_BYTES = 1 << 30  # larger ones are not kept after the call
STAGING_KEEP_BYTES = 2 << 30  # total size of the idle buffers kept
_staging: list[np.ndarray] = []  # uint8 buffers, most recently used last
_staging_lock = threading.Lock()


def _staging_buffer(nbytes: int) -> np.ndarray:
    """A uint8 buffer of at least ``nbytes + ALIGN`` bytes that nothing else uses.

    Copying a large array into fresh memory costs more in page faults than in the
    copy (145 MB: 0.07-0.25 s of kernel time, the upper end when transparent huge
    pages need compaction, against ~0.01 s for the copy itself), so buffers are kept
    and reused. A buffer is free when only this pool refers to it: every view of it,
    and every jax array aliasing such a view, holds a reference to it, so a buffer
    in use is never handed out twice.
    """
    want = nbytes + ALIGN
    if not STAGING_MIN_BYTES <= want <= STAGING_MAX_BYTES:
        return np.empty(want, dtype=np.uint8)
    with _staging_lock:
        idle = [i for i in range(len(_staging)) if _idle(i)]
        fits = [i for i in idle if want <= _staging[i].nbytes <= 2 * want]
        if fits:
            buf = _staging.pop(fits[-1])
        else:
            buf = np.empty(want, dtype=np.uint8)
            total = sum(_staging[i].nbytes for i in idle)
            drop = []
            for i in idle:  # oldest first
                if total + buf.nbytes <= STAGING_KEEP_BYTES:
                    break
                drop.append(i)
                total -= _staging[i].nbytes
            for i in reversed(drop):
                del _staging[i]
        _staging.append(buf)
        return buf


def _idle(i: int) -> bool:
    """True when only the pool refers to ``_staging[i]`` (the list slot and
    getrefcount's own argument: 2)."""
    return sys.getrefcount(_staging[i]) == 2


def _aligned_view(a: np.ndarray, align: int = ALIGN) -> np.ndarray:
    """``a`` itself when C-contiguous and ``align``-byte aligned, else an aligned copy
    in a reused staging buffer (see ``_staging_buffer``)."""
    if a.flags.c_contiguous and a.ctypes.data % align == 0:
        return a
    buf = _staging_buffer(a.nbytes) if align == ALIGN else np.empty(a.nbytes + align, dtype=np.uint8)
    off = (-buf.ctypes.data) % align
    out = buf[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def as_float_array(x: Any, name: str, *, fn: str | None = None, min_ndim: int = 1, transient: bool = False):
    """Return ``x`` as a floating jax-compatible array, keeping float64 when x64 is on.

    Integer/bool input is promoted to the default float dtype. Raises TypeError for
    non-numeric input and ValueError for too few dimensions. ``transient=True`` (for
    arrays used only during one call) hands a numpy array to the CPU device without
    a copy when it is 64-byte aligned (jax copies unaligned buffers slowly; an aligned
    numpy copy is several times faster).
    """
    import jax.numpy as jnp

    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy message is informative
            raise TypeError(f"The '{name}' parameter{_where(fn)} must be an array; got {type(x).__name__}.") from exc
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"The '{name}' parameter{_where(fn)} must hold real numbers; got dtype {x.dtype}."
        )
    if x.ndim < min_ndim:
        raise ValueError(
            f"The '{name}' parameter{_where(fn)} must have at least {min_ndim} dimensions; "
            f"got shape {tuple(x.shape)}. Reshape your data, e.g. x[:, None] for a single feature."
        )
    if x.dtype.kind != "f":
        x = jnp.asarray(x, dtype=jnp.result_type(float))
    elif transient and isinstance(x, np.ndarray):
        import jax

        want = np.dtype(jax.dtypes.canonicalize_dtype(x.dtype))  # float64 -> float32 unless x64 is on
        a = x if x.dtype == want else x.astype(want)
        x = jax.device_put(_aligned_view(a), may_alias=True)
    else:
        x = jnp.asarray(x)
    return x


def check_finite(x, name: str, *, fn: str | None = None) -> None:
    """Raise ValueError if ``x`` holds NaN or inf (checked eagerly, once)."""
    bad = ~np.isfinite(np.asarray(x))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"The '{name}' parameter{_where(fn)} must be finite; found {int(bad.sum())} non-finite "
            f"value(s), the first at index {idx}. Remove or impute them before calling."
        )


def check_int(v: Any, name: str, *, fn: str | None = None, low: int | None = None, high: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"The '{name}' parameter{_where(fn)} must be an int; got {v!r} ({type(v).__name__}).")
    v = int(v)
    lo = "-inf" if low is None else str(low)
    hi = "inf)" if high is None else f"{high}]"
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be an int in [{lo}, {hi}. Got {v} instead.")
    return v


def check_open_interval(v: Any, name: str, *, fn: str | None = None, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (low < float(v) < high):
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be a float in ({low}, {high}). Got {v!r} instead.")
    return float(v)


def check_choice(v: Any, name: str, choices, *, fn: str | None = None):
    if v not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be one of {opts}. Got {v!r} instead.")
    return v


def check_positive(v: Any, name: str, *, fn: str | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v <= 0:
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be a finite number > 0. Got {v!r} instead.")
    return float(v)
