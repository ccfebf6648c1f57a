"""Centered Kernel Alignment (Kornblith et al. 2019), batched.

``cka(X, Y)`` compares two representations of the same n samples (rows matched).
Leading batch axes are supported and broadcast, and each distinct representation's
centered Gram matrix is computed once: comparing 41 SNRs x 18 noises of noisy
activations against one clean activation per utterance builds the clean Grams once,
not 738 times.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_choice, check_finite, check_positive
from kernels import gram as _gram
from kernels import hsic as _hsic

KERNELS = ("linear", "rbf")


def _use_features(n: int, d1: int, d2: int) -> bool:
    """Feature-space linear CKA costs n(d1 d2 + d1^2 + d2^2); the Gram form n^2 (d1 + d2)."""
    return n * (d1 * d2 + d1 * d1 + d2 * d2) < n * n * (d1 + d2)


def _validate_pair(X, Y, fn, debiased, *, deep=True):
    X = as_float_array(X, "X", fn=fn, min_ndim=2, transient=True)
    Y = as_float_array(Y, "Y", fn=fn, min_ndim=2, transient=True)
    if X.shape[-2] != Y.shape[-2]:
        raise ValueError(
            f"The 'X' and 'Y' parameters of {fn} must have the same number of samples n on "
            f"axis -2 (rows are matched samples); got X {tuple(X.shape)} and Y {tuple(Y.shape)}."
        )
    try:
        batch = jnp.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
    except ValueError:
        raise ValueError(
            f"The leading batch axes of 'X' {tuple(X.shape[:-2])} and 'Y' {tuple(Y.shape[:-2])} "
            f"of {fn} do not broadcast."
        ) from None
    n = X.shape[-2]
    min_n = 4 if debiased else 2
    if n < min_n:
        why = "the debiased (unbiased HSIC) estimator needs n >= 4" if debiased else "CKA needs n >= 2"
        raise ValueError(f"{fn} got n = {n} samples; {why}.")
    for name, A in (("X", X), ("Y", Y)):
        if deep:
            check_representation(A, name, fn)
    dtype = jnp.result_type(X.dtype, Y.dtype)
    return X.astype(dtype), Y.astype(dtype), batch


@jax.jit
def _all_finite(A):
    return jnp.all(jnp.isfinite(A))


@jax.jit
def _item_summary(A):
    """One fused pass: per item (leading index) the non-finite count, the centred and
    the raw sum of squares."""
    bad = jnp.sum(~jnp.isfinite(A), axis=(-2, -1))
    Af = jnp.where(jnp.isfinite(A), A, 0)
    ss = jnp.sum(Af * Af, axis=(-2, -1))
    cs = jnp.sum((Af - jnp.mean(Af, axis=-2, keepdims=True)) ** 2, axis=(-2, -1))
    return bad, cs, ss


def check_representation(A, name, fn):
    """Raise if any (n, d) item of ``A`` (..., n, d) is non-finite or constant over rows."""
    bad, cs, ss = (np.asarray(v) for v in _item_summary(A))
    if bad.any():
        check_finite(A, name, fn=fn)  # slow path: locates the first bad value
    const = cs <= 1e-12 * np.maximum(ss, np.finfo(np.float32).tiny)
    if np.any(const):
        where = np.argwhere(np.atleast_1d(const))[0]
        at = f" at batch index {tuple(int(i) for i in where)}" if np.ndim(const) else ""
        raise ValueError(
            f"The '{name}' parameter of {fn} is a constant representation{at}: every sample "
            "(row) is identical, so its centered Gram matrix is zero and CKA is undefined (0/0)."
        )


@partial(jax.jit, static_argnames=("debiased",))
def _normed_linear_gram(A, *, debiased):
    """Unit-Frobenius-norm centered linear Gram of one (n, d) representation."""
    if debiased:
        G = _gram.center_gram_unbiased(A @ A.T)
    else:
        Ac = _gram.center_columns(A)
        G = Ac @ Ac.T  # = H A A^T H, cheaper and more accurate than centering the Gram
    return G / jnp.sqrt(jnp.sum(G * G))


@partial(jax.jit, static_argnames=("debiased",))
def _normed_rbf_gram(A, sigma, *, debiased):
    K = _gram.rbf_gram(A, sigma)
    G = _gram.center_gram_unbiased(K) if debiased else _gram.center_gram(K)
    return G / jnp.sqrt(jnp.sum(G * G))


def _vmapped(fn, nbatch):
    for _ in range(nbatch):
        fn = jax.vmap(fn)
    return fn


@partial(jax.jit, static_argnames=("debiased", "features"))
def _linear_cka_batched(X, Y, *, debiased, features):
    if features:
        bshape = jnp.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
        Xb = jnp.broadcast_to(X, bshape + X.shape[-2:])
        Yb = jnp.broadcast_to(Y, bshape + Y.shape[-2:])
        f = _vmapped(partial(_hsic.cka_linear_features, debiased=debiased), len(bshape))
        return f(Xb, Yb)
    if X.shape[:-2] == Y.shape[:-2] and X.ndim > 2:
        return _paired(X, Y, debiased=debiased)
    gx = _chunked_normed_grams(X, debiased=debiased)
    gy = _chunked_normed_grams(Y, debiased=debiased)
    return jnp.sum(gx * gy, axis=(-2, -1))


_GRAM_CHUNK = 250


def _paired(X, Y, *, debiased):
    """Independent (X_b, Y_b) pairs: one fused kernel (centre, two Grams, three sums)
    mapped over cache-sized chunks; only B scalars leave the loop."""
    bshape = X.shape[:-2]
    Xf = X.reshape((-1,) + X.shape[-2:])
    Yf = Y.reshape((-1,) + Y.shape[-2:])

    def one(xy):
        gx = _normed_linear_gram(xy[0], debiased=debiased)
        gy = _normed_linear_gram(xy[1], debiased=debiased)
        return jnp.sum(gx * gy)

    out = jax.lax.map(one, (Xf, Yf), batch_size=min(_GRAM_CHUNK, Xf.shape[0]))
    return out.reshape(bshape)


def _chunked_normed_grams(A, *, debiased):
    """Unit-norm centered Grams of every (n, d) item of A (..., n, d) -> (..., n, n).

    Each distinct item is done once (a broadcast partner is never expanded). XLA on CPU
    runs one huge batch of small matrix products poorly (~15 GFLOP/s); a sequential map
    over cache-sized chunks of a fused centre + Gram + normalise kernel keeps the
    working set in cache and is several times faster (bench/bench_cka.py).
    """
    bshape, (n, d) = A.shape[:-2], A.shape[-2:]
    if not bshape:
        return _normed_linear_gram(A, debiased=debiased)
    flat = A.reshape((-1, n, d))
    B = flat.shape[0]
    chunk = min(_GRAM_CHUNK, B)
    nchunk = -(-B // chunk)
    pad = nchunk * chunk - B
    if pad:  # pad with copies of the first item (finite), dropped below
        flat = jnp.concatenate([flat, jnp.broadcast_to(flat[:1], (pad, n, d))])
    g = jax.lax.map(jax.vmap(partial(_normed_linear_gram, debiased=debiased)), flat.reshape((nchunk, chunk, n, d)))
    return g.reshape((nchunk * chunk, n, n))[:B].reshape(bshape + (n, n))


@partial(jax.jit, static_argnames=("debiased",))
def _rbf_cka_batched(X, Y, sx, sy, *, debiased):
    gx = _vmapped(partial(_normed_rbf_gram, debiased=debiased), X.ndim - 2)(X, sx)
    gy = _vmapped(partial(_normed_rbf_gram, debiased=debiased), Y.ndim - 2)(Y, sy)
    return jnp.sum(gx * gy, axis=(-2, -1))


def _resolve_sigma(A, sigma, fn):
    """Per-representation bandwidths of shape A.shape[:-2]."""
    if sigma is None or sigma == "median":
        return _vmapped(_gram.rbf_sigma, A.ndim - 2)(A)
    if isinstance(sigma, tuple) and len(sigma) == 2 and sigma[0] in ("median", "kornblith"):
        scale = check_positive(sigma[1], "sigma[1] (median scale)", fn=fn)
        diag = sigma[0] == "kornblith"
        return _vmapped(lambda a: _gram.rbf_sigma(a, scale, include_diagonal=diag), A.ndim - 2)(A)
    s = np.asarray(sigma, dtype=float)
    if s.ndim == 0:
        check_positive(float(s), "sigma", fn=fn)
    elif not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"The 'sigma' parameter of {fn} must be > 0 and finite; got {sigma!r}.")
    return jnp.broadcast_to(jnp.asarray(s, dtype=A.dtype), A.shape[:-2])


def cka(X, Y, *, kernel="linear", sigma=None, debiased=False, mesh=None):
    """Centered Kernel Alignment between two representations of the same samples.

    Parameters
    ----------
    X : array of shape (..., n, d1)
    Y : array of shape (..., n, d2)
        Rows are matched samples. Leading batch axes broadcast against each other.
    kernel : {"linear", "rbf"}
        Linear: ``k(x, y) = x.y``. RBF: ``exp(-||x - y||^2 / (2 sigma^2))``.
    sigma : None, "median", ("median", scale), ("kornblith", threshold) or a number / array of shape (...)
        RBF bandwidth. ``None``/"median": the median heuristic of each representation
        (median over distinct pairs, see ``kernels.gram``); ``("median", s)`` scales it;
        ``("kornblith", t)`` is Kornblith et al.'s rule ``sigma^2 = t^2 * median`` over all
        n^2 squared distances, diagonal zeros included (their demo uses t = 0.5).
    debiased : bool
        Use the unbiased HSIC estimator of Song et al. (2012) (needs n >= 4). Its CKA
        can be negative; it is never clamped.
    mesh : None (one device), or a ``jax.sharding.Mesh``, "all" or N: the broadcast
        leading batch is split over the devices (``jaxprobe.distributed.sharded_cka``).

    Returns
    -------
    array of shape (...), broadcast leading shape; a scalar for 2-D inputs. Dtype
    follows the inputs (float32 by default; float64 when x64 is on and inputs are).

    Notes
    -----
    Linear CKA uses the feature-space formula ``||X^T Y||^2 / (||X^T X|| ||Y^T Y||)``
    when it is cheaper (roughly d < n), otherwise normalised centered Grams, computing
    each distinct representation's Gram once across broadcast axes.
    """
    fn = "cka"
    check_choice(kernel, "kernel", KERNELS, fn=fn)
    # A non-finite input value or a constant representation (0/0) makes its item's result
    # non-finite; only then are the inputs examined item by item, so the error names the
    # argument and the batch index at no cost to valid calls. Never a silent NaN.
    X, Y, _ = _validate_pair(X, Y, fn, debiased, deep=False)
    out = _cka_dispatch(X, Y, kernel=kernel, sigma=sigma, debiased=debiased, mesh=mesh, fn=fn)
    if not bool(_all_finite(out)):
        for name, A in (("X", X), ("Y", Y)):
            check_finite(A, name, fn=fn)
        for name, A in (("X", X), ("Y", Y)):
            check_representation(A, name, fn)
        raise FloatingPointError(
            f"{fn} produced a non-finite value from finite, non-constant inputs (overflow or a "
            "near-constant representation); rescale the inputs or use float64."
        )
    return out


def _cka_dispatch(X, Y, *, kernel, sigma, debiased, mesh, fn):
    if kernel == "linear":
        if sigma is not None:
            raise ValueError("The 'sigma' parameter of cka applies to kernel='rbf' only; got kernel='linear'.")
        n, d1, d2 = X.shape[-2], X.shape[-1], Y.shape[-1]
        features = _use_features(n, d1, d2)
        if mesh is not None:
            from jaxprobe.distributed import sharded_cka

            return sharded_cka(X, Y, 0.0, 0.0, mesh=mesh, kernel=kernel, debiased=debiased, features=features)
        return _linear_cka_batched(X, Y, debiased=debiased, features=features)
    sx = _resolve_sigma(X, sigma, fn)
    sy = _resolve_sigma(Y, sigma, fn)
    if mesh is not None:
        from jaxprobe.distributed import sharded_cka

        return sharded_cka(X, Y, sx, sy, mesh=mesh, kernel=kernel, debiased=debiased, features=False)
    return _rbf_cka_batched(X, Y, sx, sy, debiased=debiased)


def normed_grams(Xs, *, kernel="linear", sigma=None, debiased=False, name="Xs", fn="cka_matrix"):
    """Unit-norm centered Gram matrices of a list of (n, d_i) representations -> (L, n, n)."""
    if hasattr(Xs, "ndim") and getattr(Xs, "ndim", 0) == 3:
        Xs = list(Xs)
    if not isinstance(Xs, (list, tuple)) or len(Xs) == 0:
        raise TypeError(f"The '{name}' parameter of {fn} must be a non-empty sequence of (n, d) arrays or an (L, n, d) array.")
    out, n0 = [], None
    for i, A in enumerate(Xs):
        A = as_float_array(A, f"{name}[{i}]", fn=fn, min_ndim=2)
        if A.ndim != 2:
            raise ValueError(f"The '{name}[{i}]' parameter of {fn} must be 2-D (n, d); got shape {tuple(A.shape)}.")
        if n0 is None:
            n0 = A.shape[0]
        elif A.shape[0] != n0:
            raise ValueError(f"All representations given to {fn} must share n; '{name}[{i}]' has n = {A.shape[0]}, expected {n0}.")
        if n0 < (4 if debiased else 2):
            raise ValueError(f"{fn} got n = {n0} samples; the {'debiased' if debiased else 'biased'} estimator needs n >= {4 if debiased else 2}.")
        check_representation(A, f"{name}[{i}]", fn)
        if kernel == "linear":
            out.append(_normed_linear_gram(A, debiased=debiased))
        else:
            s = _resolve_sigma(A, sigma, fn)
            out.append(_normed_rbf_gram(A, s, debiased=debiased))
    return jnp.stack(out)


def cka_matrix(Xs, Ys=None, *, kernel="linear", sigma=None, debiased=False):
    """CKA for every pair of layers, e.g. noisy layers x clean layers, in one GEMM.

    Parameters
    ----------
    Xs : sequence of L1 arrays of shape (n, d_i), or an array (L1, n, d)
    Ys : sequence of L2 arrays of shape (n, e_j), or (L2, n, e); default ``Xs``
        All representations share the same n matched samples; widths may differ.
    kernel, sigma, debiased : as in :func:`cka`.

    Returns
    -------
    array of shape (L1, L2): entry (i, j) is ``cka(Xs[i], Ys[j])``.
    """
    fn = "cka_matrix"
    check_choice(kernel, "kernel", KERNELS, fn=fn)
    gx = normed_grams(Xs, kernel=kernel, sigma=sigma, debiased=debiased, name="Xs", fn=fn)
    gy = gx if Ys is None else normed_grams(Ys, kernel=kernel, sigma=sigma, debiased=debiased, name="Ys", fn=fn)
    if gx.shape[-1] != gy.shape[-1]:
        raise ValueError(f"'Xs' and 'Ys' of {fn} must share n; got {gx.shape[-1]} and {gy.shape[-1]}.")
    L1, n = gx.shape[0], gx.shape[-1]
    return gx.reshape(L1, n * n) @ gy.reshape(gy.shape[0], n * n).T
