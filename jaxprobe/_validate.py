"""Shared input validators: every error says which argument, what was expected,
what arrived, and how to fix it. Used at the Python boundary of the public API,
once, before anything is traced."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def _where(fn: str | None) -> str:
    return f" of {fn}" if fn else ""


def _aligned_view(a: np.ndarray, align: int = 64) -> np.ndarray:
    """``a`` itself when C-contiguous and ``align``-byte aligned, else an aligned copy."""
    if a.flags.c_contiguous and a.ctypes.data % align == 0:
        return a
    buf = np.empty(a.nbytes + align, dtype=np.uint8)
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
