"""Shared input validators: every error says which argument, what was expected,
what arrived, and how to fix it. Used at the Python boundary of the public API,
once, before anything is traced.

``torch_bridge/data/record.py`` holds word-for-word copies of ``check_int``, ``check_real`` and
``check_choice``: torch_bridge does not import jaxprobe (the data flows one way, DESIGN.md), and
importing ``jaxprobe._validate`` would load every analysis and JAX through ``jaxprobe/__init__``.
``tests/test_layout.py`` checks that both word every error alike."""
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


def aligned_view(a: np.ndarray, align: int = ALIGN) -> np.ndarray:
    """``a`` itself when C-contiguous and ``align``-byte aligned, else an aligned copy
    in a reused staging buffer (see ``_staging_buffer``)."""
    if a.flags.c_contiguous and a.ctypes.data % align == 0:
        return a
    buf = _staging_buffer(a.nbytes) if align == ALIGN else np.empty(a.nbytes + align, dtype=np.uint8)
    off = (-buf.ctypes.data) % align
    out = buf[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


DTYPE_POLICY = """Dtype policy (every public entry of jaxprobe, applied by ``as_float_array``):
float32 and float64 arrays are kept (float64 stays float64 when ``jax_enable_x64`` is on;
with x64 off it is computed in float32, and values outside float32's range are an error,
never a silent inf or 0); narrow floats (float16, bfloat16) are upcast to float32;
bool, complex and non-numeric arrays are rejected; integer arrays are rejected for
representations (activations, point clouds) and converted to the float dtype for
coordinates and statistics (``linregress(snrs, values)``)."""


def _is_float(dt) -> bool:
    import jax.numpy as jnp

    try:
        return bool(jnp.issubdtype(dt, jnp.floating))
    except TypeError:
        return False


def as_float_array(x: Any, name: str, *, fn: str | None = None, min_ndim: int = 1, transient: bool = False,
                   integers: bool = True):
    """Return ``x`` as a floating jax-compatible array following ``DTYPE_POLICY``.

    float16/bfloat16 are upcast to float32; float64 is kept when x64 is on, else cast to
    float32 after checking that its values fit (ValueError otherwise); integer input is
    converted to the default float dtype when ``integers`` is True and rejected (TypeError)
    otherwise; bool, complex and non-numeric input are rejected (TypeError). Raises
    ValueError for too few dimensions. ``transient=True`` (for arrays used only during
    one call) hands a numpy array to the CPU device without a copy when it is 64-byte
    aligned (jax copies unaligned buffers slowly; an aligned numpy copy is several
    times faster).
    """
    import jax
    import jax.numpy as jnp

    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy message is informative
            raise TypeError(f"The '{name}' parameter{_where(fn)} must be an array; got {type(x).__name__}.") from exc
    dt = np.dtype(x.dtype) if not _is_float(x.dtype) else x.dtype
    is_float = _is_float(dt)
    if not is_float and (dt.kind not in "iu" or not integers):
        what = "floating-point numbers (float32 or float64)" if not integers else "real numbers (float or int)"
        hint = " Convert with .astype(np.float32) if the values really are measurements." if dt.kind in "iu" else ""
        raise TypeError(
            f"The '{name}' parameter{_where(fn)} must hold {what}; got dtype {dt}.{hint}"
        )
    if x.ndim < min_ndim:
        raise ValueError(
            f"The '{name}' parameter{_where(fn)} must have at least {min_ndim} dimensions; "
            f"got shape {tuple(x.shape)}. Reshape your data, e.g. x[:, None] for a single feature."
        )
    if not is_float:
        return jnp.asarray(x, dtype=jnp.result_type(float))
    if np.dtype(x.dtype).itemsize < 4:  # float16, bfloat16: too narrow for sums of squares
        return jnp.asarray(x, dtype=jnp.float32)
    want = np.dtype(jax.dtypes.canonicalize_dtype(x.dtype))  # float64 -> float32 unless x64 is on
    if want != x.dtype:
        a = np.asarray(x)
        amax = float(np.max(np.abs(a))) if a.size else 0.0
        f32 = np.finfo(np.float32)
        if np.isfinite(amax) and (amax > float(f32.max) or 0.0 < amax < float(f32.tiny)):
            raise ValueError(
                f"The '{name}' parameter{_where(fn)} holds float64 values up to {amax:.3g} in magnitude, outside "
                f"float32's range [{f32.tiny:.3g}, {f32.max:.3g}]; jax computes in float32 unless x64 is on. Call "
                "jax.config.update('jax_enable_x64', True) to keep float64, or rescale the values."
            )
        a = a.astype(want)
        if transient:
            return jax.device_put(aligned_view(a), may_alias=True)
        return jnp.asarray(a)
    if transient and isinstance(x, np.ndarray):
        return jax.device_put(aligned_view(x), may_alias=True)
    return jnp.asarray(x)


# ----------------------------------------------------------------------------- constant representations

CONSTANT_EPS_FACTOR = 64
CONSTANT_RULE = """A representation item A (n, d) is constant when its column-centred Gram matrix is no
larger than rounding noise:

    ||Ac Ac^T||_F <= (64 eps)^2 * (||Ac Ac^T||_F + n ||mean_rows(A)||^2),    Ac = A - mean_rows(A),

with eps the machine epsilon of the computing dtype (float32: 1.2e-7, so roughly a relative
spread of the rows below 8e-6; float64: 2.2e-16, below 1.4e-14). Zeros (a dead layer), ones and
ones plus float32 rounding noise are constant. The statistic is computed from the centred
Gram the CKA path builds anyway (for the feature-space formula ||Ac^T Ac||_F, equal), after
scaling A by a power of two where its Gram norm would leave the normal range (CKA is scale
invariant), so it needs no second pass over the data. Every CKA path raises the same error
(``check_not_constant``) naming the argument and the batch index."""


def constant_threshold(dtype) -> float:
    """The bound on ``||A_c||_F^2 / ||A||_F^2`` below which an item is constant (``CONSTANT_RULE``)."""
    return float((CONSTANT_EPS_FACTOR * np.finfo(np.dtype(dtype)).eps) ** 2)


def item_index(flat_index: tuple, batch: tuple, own: tuple) -> tuple:
    """The index into an argument of batch shape ``own`` of broadcast batch index ``flat_index``
    (``batch`` the broadcast shape): leading axes it lacks dropped, size-1 axes at 0."""
    k = len(batch) - len(own)
    return tuple(0 if own[i] == 1 else int(flat_index[k + i]) for i in range(len(own)))


def check_not_constant(ratio, name: str, *, fn: str | None, dtype, own_shape: tuple | None = None) -> None:
    """Raise the one constant-representation error if any item's ``ratio`` (centred over
    uncentred sum of squares, of shape batch) is at or below ``constant_threshold(dtype)``.

    ``own_shape``: the argument's own batch shape when ``ratio`` is broadcast to a larger
    batch (the index reported is then the argument's own)."""
    r = np.asarray(ratio, dtype=np.float64)
    tol = constant_threshold(dtype)
    bad = r <= tol  # NaN (a non-finite item) is not constant: the finite check reports it
    if not np.any(bad):
        return
    where = tuple(int(i) for i in np.argwhere(np.atleast_1d(bad))[0]) if r.ndim else ()
    if own_shape is not None and r.ndim:
        where = item_index(where, r.shape, tuple(own_shape))
    at = f" at batch index {where}" if where else ""
    spread = float(np.sqrt(max(float(r[bad].ravel()[0]), 0.0)))
    raise ValueError(
        f"The '{name}' parameter{_where(fn)} is a constant representation{at}: its rows differ by no "
        f"more than rounding noise (relative spread {spread:.2g} <= {np.sqrt(tol):.2g} = "
        f"{CONSTANT_EPS_FACTOR} x {np.dtype(dtype).name} eps), so its centred Gram matrix is zero and CKA is "
        "undefined (0/0). Drop the item (a dead layer or channel block), or pass float64 data with x64 on "
        "if the variation is real."
    )


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


def check_real(v: Any, name: str, *, fn: str | None = None, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float:
    """``v`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``); ValueError otherwise."""
    ok = not isinstance(v, (bool, np.bool_)) and isinstance(v, numbers.Real) and bool(np.isfinite(v))
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v <= high
    if not ok:
        lo = "-inf" if low is None else str(low)
        hi = "inf)" if high is None else f"{high}]"
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be a finite number in "
                         f"{'(' if low_open else '['}{lo}, {hi}. Got {v!r} instead.")
    return float(v)


def check_open_interval(v: Any, name: str, *, fn: str | None = None, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (low < float(v) < high):
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be a float in ({low}, {high}). Got {v!r} instead.")
    return float(v)


def check_choice(v: Any, name: str, choices, *, fn: str | None = None):
    """``v`` if it is one of ``choices`` (same type and value: ``True`` is not ``1``), else ValueError."""
    for c in choices:
        if v is c:
            return c
        if isinstance(c, str) and isinstance(v, str) and v == c:
            return c
        if (isinstance(c, numbers.Number) and not isinstance(c, bool) and isinstance(v, numbers.Number)
                and not isinstance(v, (bool, np.bool_)) and v == c):
            return c
    opts = ", ".join(repr(c) for c in choices)
    raise ValueError(f"The '{name}' parameter{_where(fn)} must be one of {opts}. Got {v!r} instead.")


def check_bool(v: Any, name: str, *, fn: str | None = None) -> bool:
    """``v`` as a bool; only True/False (and numpy bools) are accepted, never strings or ints."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise TypeError(f"The '{name}' parameter{_where(fn)} must be a bool (True or False). Got {v!r} "
                    f"({type(v).__name__}) instead.")


def check_key(key: Any, name: str = "key", *, fn: str | None = None):
    """A JAX PRNG key: a typed key (``jax.random.key(seed)``) or a raw uint32 key of shape (2,)."""
    import jax

    dt = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dt is not None and jax.dtypes.issubdtype(dt, jax.dtypes.prng_key) and shape == ():
        return key
    if dt is not None and np.dtype(dt) == np.uint32 and tuple(shape) == (2,) and isinstance(key, jax.Array):
        return key
    raise TypeError(f"The '{name}' parameter{_where(fn)} must be a JAX PRNG key, e.g. jax.random.key(0); "
                    f"got {key!r} ({type(key).__name__}) instead.")


def check_positive(v: Any, name: str, *, fn: str | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v <= 0:
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be a finite number > 0. Got {v!r} instead.")
    return float(v)
