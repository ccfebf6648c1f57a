"""A native CPU kernel for per-item linear CKA, called from jitted programs as an XLA FFI
custom call.

Why: the per-utterance CKA of a sweep is hundreds of thousands of tiny (16 x 128) Gram
products. XLA's CPU code runs them as a batched small GEMM at ~25-36 GFLOP/s useful
(bench/bench_seprobe.py), well below what the CPU does on the same arithmetic, and it reads
each item two or three times (Gram, centring, estimators). ``cka_items.c`` does the whole
item in one pass from L1 (centring, a symmetric register-tiled Gram, both estimators,
the reference's inner product and the constant statistic), so a sweep streams its
activations once at memory speed. ``ffi.cc`` binds it to XLA's FFI and splits the items
over threads; ``build.py`` compiles both with the system compilers on first use into
``$JAXPROBE_CACHE/native`` and registers the target.

``upper_median`` (same library, C++) is the diffusion maps' median rule: the median squared
distance over the distinct pairs of a cloud, by one radix pass and a selection, where the XLA
program (``kernels.affinity.epsilon_median``) bisects with ~26 counting passes; both return the
same exact order statistics, bit for bit.

Everything here is optional: on other platforms (GPU, TPU), without compilers, for
non-float32 items, sharded inputs, or with ``JAXPROBE_NATIVE=0`` the XLA program of
``jaxprobe._cka_items`` runs instead; both give the same values to float32 rounding
(tests/jaxprobe/test_native_cka.py states the tolerances).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.native.build import (ENV_SWITCH, ENV_THREADS, TARGET, TARGET_GRAMS, TARGET_MEDIAN, NativeUnavailable,
                                   build_library, library, load_library, native_enabled, native_threads)

__all__ = ["ENV_SWITCH", "ENV_THREADS", "FAST_SAMPLES", "NativeUnavailable", "build_library", "cka_items", "covers", "library",
           "load_library", "median_usable", "native_enabled", "native_threads", "unit_grams", "upper_median", "usable"]


# Item shapes the kernel's register-tiled paths handle (n samples, d features); other shapes
# take its float64 path, correct but slower than the XLA program (0.47-0.77x at n = 32, 48
# before those got their own paths), so they are left to XLA.
FAST_SAMPLES = (16, 32, 48, 64)
FAST_MAX_FEATURES = 1024


def covers(n: int, d: int) -> bool:
    """Whether (n samples, d features) items run on the kernel's fast path."""
    return n in FAST_SAMPLES and 1 <= d <= FAST_MAX_FEATURES


def usable(X, *, scaled: bool, n: int, d: int) -> bool:
    """Whether per-item CKA of ``X``'s (n samples, d features) items (after orientation and
    padding) runs on the native kernel: float32 items on one CPU device (a numpy array: JAX's
    default device is a CPU), unscaled, a shape the fast path covers, the library available."""
    if scaled or not covers(n, d):
        return False
    return _float32_on_cpu(X) and library() is not None


def median_usable(X) -> bool:
    """Whether ``upper_median`` serves the median rule of ``X``'s clouds: float32 on one CPU
    device (a numpy array: JAX's default device is a CPU), the library available."""
    return _float32_on_cpu(X) and library() is not None


def _float32_on_cpu(X) -> bool:
    if np.dtype(X.dtype) != np.float32:
        return False
    if isinstance(X, jax.Array):
        devices = X.sharding.device_set if hasattr(X, "sharding") else set()
        return len(devices) == 1 and next(iter(devices)).platform == "cpu"
    return jax.default_backend() == "cpu"


def upper_median(D2):
    """The median of each (n, n) matrix's values above the diagonal (``i < j``), n >= 2, on the
    native library (call inside a jitted function; needs ``library()``): what
    ``kernels.affinity.epsilon_median`` computes, bit for bit (the order statistics of the bit
    patterns of ``max(D2, 0)``; the mean of the two middle values for an even pair count).

    Parameters
    ----------
    D2 : float32 array (..., n, n)

    Returns
    -------
    array of shape (...), float32.
    """
    library(required=True)
    if D2.ndim < 2 or D2.shape[-1] != D2.shape[-2] or D2.shape[-1] < 2:
        raise ValueError(f"upper_median needs square (..., n, n) matrices with n >= 2; got shape {tuple(D2.shape)}.")
    if np.dtype(D2.dtype) != np.float32:  # a silent cast would give another median than epsilon_median's
        raise TypeError(f"upper_median needs float32 distances; got {np.dtype(D2.dtype)} (use epsilon_median).")
    return jax.ffi.ffi_call(TARGET_MEDIAN, jax.ShapeDtypeStruct(D2.shape[:-2], jnp.float32),
                            vmap_method="sequential")(D2)


def cka_items(X, refs, n_valid, *, debiased_flags, trans, threads=None):
    """Per-item CKA on the native kernel (call inside a jitted function; needs ``library()``).

    Parameters
    ----------
    X : float32 array (..., U, a, b): the items; samples are the a rows (``trans`` False) or the
        b columns (``trans`` True).
    refs : float32 array (E, R, n, n): the references' unit Grams per estimator (zero outside the
        leading ``n_valid`` block); item k of the flattened (..., U) items meets reference k % R
        (R = U: one per utterance; R = the item count: one per item, ``unit_grams`` of partners).
    n_valid : int32 scalar (traced) or None: the real samples of every item (the rest zero padding).
    debiased_flags : tuple of E bools; threads : worker threads (default ``native_threads()``).

    Returns
    -------
    out : (E, ..., U) CKA values; r : (..., U) constant statistics (-1: a Gram norm outside
    float32's normal range, the caller redoes those calls scaled).
    """
    library(required=True)  # built and registered (a no-op after the first call)
    n = X.shape[-1] if trans else X.shape[-2]
    nv = jnp.asarray(n if n_valid is None else n_valid, jnp.int32)
    lead = X.shape[:-2]
    count = int(np.prod(lead))
    out, r = jax.ffi.ffi_call(
        TARGET,
        (jax.ShapeDtypeStruct((len(debiased_flags), count), jnp.float32), jax.ShapeDtypeStruct((count,), jnp.float32)),
        vmap_method="sequential",
    )(X, refs.astype(jnp.float32), nv, **_attrs(debiased_flags, trans, threads))
    return out.reshape((len(debiased_flags),) + lead), r.reshape(lead)


def _attrs(debiased_flags, trans, threads):
    return dict(trans=np.int64(bool(trans)), debiased=np.asarray([int(bool(f)) for f in debiased_flags], np.int64),
                threads=np.int64(native_threads() if threads is None else threads))


def unit_grams(X, n_valid, *, debiased_flags, trans, threads=None):
    """Each item's unit estimator Grams on the native kernel (inside a jitted function): the
    matrices ``cka_items`` takes the inner product with, bit for bit.

    Returns
    -------
    grams : (E, ..., n, n); r : (...) constant statistics (-1 as in ``cka_items``).
    """
    library(required=True)
    n = X.shape[-1] if trans else X.shape[-2]
    nv = jnp.asarray(n if n_valid is None else n_valid, jnp.int32)
    lead = X.shape[:-2]
    count = int(np.prod(lead))
    E = len(debiased_flags)
    grams, r = jax.ffi.ffi_call(
        TARGET_GRAMS,
        (jax.ShapeDtypeStruct((E, count, n, n), jnp.float32), jax.ShapeDtypeStruct((count,), jnp.float32)),
        vmap_method="sequential",
    )(X, nv, **_attrs(debiased_flags, trans, threads))
    return grams.reshape((E,) + lead + (n, n)), r.reshape(lead)
