"""Out-of-core Gram matrices and CKA over an activation store larger than memory.

Samples are store items (the rows chosen by ``rows``: plan positions), features the
flattened pooled activation of each item (e.g. a (C, F) matrix gives C * F features).
Nothing holds the whole (N, d) data matrix; chunks are read memory-mapped from the store
(``torch_bridge.store``, plain numpy) and dropped after use.

Two accumulations
-----------------
* Gram form, over **feature** chunks (:func:`store_gram`)::

      K = Xc Xc^T = sum_f Xc[:, f] Xc[:, f]^T

  Each slab ``X[:, f]`` (N, chunk) holds every row, so its column means are exact and the
  slab is centred on its own; memory O(N^2 + N * chunk).
* Feature form, over **sample** chunks (:func:`streaming_cka` with method="features")::

      Xc^T Yc = sum_r (X_r - s_x)^T (Y_r - s_y) - N (m_x - s_x)(m_y - s_y)^T

  with ``s`` the first chunk's column mean (a shift that keeps the sums small, so the
  final mean correction does not cancel), and the same for ``Xc^T Xc``, ``Yc^T Yc``;
  memory O(d1 d2 + d1^2 + d2^2 + chunk * (d1 + d2)). One pass over the rows.

Precision: each chunk's product runs on the device in the data's dtype (float32 by
default, the fast path on CPUs and GPUs); the running sums over chunks, the means and
shifts, and the final CKA ratios are float64 on the host (numpy). So float32 round-off
enters once per chunk product (``chunk`` terms), never through a sum over all N or d.
"""
from __future__ import annotations

import os
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import check_bool, check_choice, check_int, check_not_constant

__all__ = ["store_gram", "streaming_cka", "cka_from_centered_grams"]

METHODS = ("auto", "gram", "features")
_SLAB_BYTES = 16 << 20  # default size of one slab / row batch (host copy + device copy)


def _open(store, fn):
    if isinstance(store, (str, os.PathLike)):
        from torch_bridge.store import open_store  # numpy only; no torch

        return open_store(store)
    if not all(hasattr(store, a) for a in ("chunk", "chunk_size", "index", "layer_shape")):
        raise TypeError(f"The 'store' parameter of {fn} must be an activation store (torch_bridge.store.open_store) or its path; got {type(store).__name__}.")
    return store


def _rows(store, rows, name, fn):
    if rows is None:
        return np.asarray(store.index(complete_only=True).item, np.int64)
    r = np.asarray(rows)
    if r.ndim != 1 or r.dtype.kind not in "iu" or r.size == 0:
        raise ValueError(f"The '{name}' parameter of {fn} must be a non-empty 1-D array of plan positions (ints); got shape {r.shape}, dtype {r.dtype}.")
    if r.min() < 0 or r.max() >= store.n_items:
        raise ValueError(f"The '{name}' parameter of {fn} must hold plan positions in [0, {store.n_items}); got values in [{r.min()}, {r.max()}].")
    missing = set(np.unique(r // store.chunk_size).tolist()) - set(store.done_chunks())
    if missing:
        raise RuntimeError(f"{fn}: rows in uncommitted chunks {sorted(missing)[:5]} of store {store.path}; finish the dump first.")
    return r.astype(np.int64)


def _gather(store, layer, rows, f0, f1):
    """Rows ``rows`` of ``layer``, flattened features [f0, f1), as a new (N, f1 - f0) array."""
    d = int(np.prod(store.layer_shape(layer)))
    first = store.chunk(int(rows[0] // store.chunk_size), layer)
    out = np.empty((rows.size, f1 - f0), first.dtype)
    del first
    chunk_of = rows // store.chunk_size
    for k in np.unique(chunk_of):
        sel = np.nonzero(chunk_of == k)[0]
        a = store.chunk(int(k), layer)  # memory-mapped; only the touched pages are read
        out[sel] = a.reshape(a.shape[0], d)[rows[sel] - k * store.chunk_size, f0:f1]
        del a
    return out


@jax.jit
def _slab_gram(S):
    return S @ S.T


@jax.jit
def _cross(A, B):
    return A.T @ B


def _check_finite_block(a, layer, fn):
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: layer {layer!r} holds non-finite values in the store; CKA is undefined.")


def store_gram(store, layer, *, rows=None, chunk=None, center=True):
    """Centred linear Gram matrix of store items, accumulated over feature chunks.

    Parameters
    ----------
    store : ActivationStore or path
    layer : str, a layer of the store
    rows : optional int array of shape (N,), plan positions (default: every item, in
        plan order; the store must be complete)
    chunk : int, features per slab (default: a slab of about 16 MB). Peak memory is
        about two slabs (host and device copy) plus three (N, N) float64 arrays.
    center : bool, centre the features (``Xc = X - mean over rows``); False gives ``X X^T``

    Returns
    -------
    numpy float64 array of shape (N, N): ``K = Xc Xc^T`` with ``Xc`` (N, d) the flattened,
    centred activations of the rows. Each slab's product is computed in the store's dtype
    on the default device; the sum over slabs is float64.
    """
    fn = "store_gram"
    center = check_bool(center, "center", fn=fn)
    return _store_gram(store, layer, rows, chunk, center, fn)[0]


def _store_gram(store, layer, rows, chunk, center, fn):
    """``store_gram``'s K, the uncentred part ``N ||mean||^2`` of the sum of squares (for the
    constant statistic) and the store dtype."""
    store = _open(store, fn)
    rows = _rows(store, rows, "rows", fn)
    d = int(np.prod(store.layer_shape(layer)))
    N = rows.size
    if chunk is None:
        chunk = max(1, min(d, _SLAB_BYTES // (4 * N)))
    chunk = check_int(chunk, "chunk", fn=fn, low=1)
    K = np.zeros((N, N), np.float64)
    mean_ss, dtype = 0.0, np.float32
    for f0 in range(0, d, chunk):
        S = _gather(store, layer, rows, f0, min(d, f0 + chunk))
        _check_finite_block(S, layer, fn)
        dtype = S.dtype
        if center:
            m = S.mean(axis=0, dtype=np.float64)
            mean_ss += N * float(m @ m)
            S -= m.astype(S.dtype)  # in place: no float64 slab
        K += np.asarray(_slab_gram(jnp.asarray(S)), np.float64)
        del S
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{fn}: the Gram products of layer {layer!r} overflowed {np.dtype(dtype).name} (activations "
                         "too large for the store dtype); rescale the activations before dumping them.")
    return K, mean_ss, dtype


def _check_constant(K, mean_ss, dtype, layer, fn, name):
    """The constant rule of every CKA path (``jaxprobe._validate.CONSTANT_RULE``) on a
    float64 centred Gram of store items."""
    gn = float(np.sqrt(np.sum(K * K)))
    r = gn / (gn + mean_ss) if gn + mean_ss > 0 else 0.0
    check_not_constant(np.float64(r), name, fn=f"{fn} (layer {layer!r})", dtype=dtype)


def _u_center(K):
    """Unbiased centring U(K) (float64, numpy) of ``kernels.gram.center_gram_unbiased``."""
    n = K.shape[0]
    Kt = K.copy()
    np.fill_diagonal(Kt, 0.0)
    col = Kt.sum(axis=0)
    U = Kt - col[None, :] / (n - 2) - col[:, None] / (n - 2) + Kt.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(U, 0.0)
    return U


def cka_from_centered_grams(Kx, Ky, *, debiased=False) -> float:
    """CKA of two centred Grams (N, N) (e.g. from :func:`store_gram`), in float64."""
    Kx, Ky = np.asarray(Kx, np.float64), np.asarray(Ky, np.float64)
    if debiased:  # the unbiased HSIC is invariant to shifting the features
        Kx, Ky = _u_center(Kx), _u_center(Ky)
    den = np.sqrt(np.sum(Kx * Kx) * np.sum(Ky * Ky))
    if not den > 0:
        raise ValueError("The 'Kx' or 'Ky' parameter of cka_from_centered_grams is zero: a representation is constant "
                         "over the rows, so CKA is undefined (0/0).")
    return float(np.sum(Kx * Ky) / den)


def _feature_cka(store, layer_x, layer_y, rows, rows_y, chunk, fn):
    dx = int(np.prod(store.layer_shape(layer_x)))
    dy = int(np.prod(store.layer_shape(layer_y)))
    N = rows.size
    sums = np.zeros((dx, dy)), np.zeros((dx, dx)), np.zeros((dy, dy))  # float64
    tot_x, tot_y = np.zeros(dx), np.zeros(dy)
    shift = None
    for r0 in range(0, N, chunk):
        X = _gather(store, layer_x, rows[r0:r0 + chunk], 0, dx)
        Y = _gather(store, layer_y, rows_y[r0:r0 + chunk], 0, dy)
        _check_finite_block(X, layer_x, fn)
        _check_finite_block(Y, layer_y, fn)
        dtype = X.dtype
        if shift is None:
            shift = X.mean(axis=0, dtype=np.float64), Y.mean(axis=0, dtype=np.float64)
        Xs = (X - shift[0]).astype(X.dtype)
        Ys = (Y - shift[1]).astype(Y.dtype)
        tot_x += Xs.sum(axis=0, dtype=np.float64)
        tot_y += Ys.sum(axis=0, dtype=np.float64)
        jx, jy = jnp.asarray(Xs), jnp.asarray(Ys)
        for acc, (a, b) in zip(sums, ((jx, jy), (jx, jx), (jy, jy))):
            acc += np.asarray(_cross(a, b), np.float64)
        del X, Y, Xs, Ys, jx, jy
    mx, my = tot_x / N, tot_y / N
    cxy = sums[0] - N * np.outer(mx, my)
    cxx = sums[1] - N * np.outer(mx, mx)
    cyy = sums[2] - N * np.outer(my, my)
    for layer, acc in ((layer_x, sums[1]), (layer_y, sums[2])):
        if not np.all(np.isfinite(acc)):
            raise ValueError(f"{fn}: the products of layer {layer!r} overflowed {np.dtype(dtype).name} (activations too "
                             "large for the store dtype); rescale the activations before dumping them.")
    # ||Xc^T Xc||_F = ||Xc Xc^T||_F: the same constant statistic as the Gram paths
    _check_constant(cxx, N * float((shift[0] + mx) @ (shift[0] + mx)), dtype, layer_x, fn, "layer_x")
    _check_constant(cyy, N * float((shift[1] + my) @ (shift[1] + my)), dtype, layer_y, fn, "layer_y")
    den = np.sqrt(np.sum(cxx * cxx) * np.sum(cyy * cyy))
    return float(np.sum(cxy * cxy) / den)


def streaming_cka(store, layer_x, layer_y=None, *, rows=None, rows_y=None, method="auto",
                  debiased=False, chunk=None) -> float:
    """Linear CKA between two layers over store items, without loading either layer.

    Parameters
    ----------
    store : ActivationStore or path
    layer_x, layer_y : layer names (``layer_y`` defaults to ``layer_x``, e.g. with
        ``rows_y`` = the clean items matching the noisy ``rows``)
    rows, rows_y : optional int arrays of shape (N,), plan positions; row i of X is
        matched with row i of Y. Default: every item, and ``rows_y = rows``.
    method : "auto", "gram" or "features"
        "gram": two :func:`store_gram` calls (feature chunks, memory O(N^2));
        "features": one pass over sample chunks accumulating ``Xc^T Yc``, ``Xc^T Xc``,
        ``Yc^T Yc`` (memory O((d1 + d2)^2)); "auto" picks the cheaper in flops
        (features when N (d1 d2 + d1^2 + d2^2) < N^2 (d1 + d2)).
    debiased : bool, the unbiased HSIC estimator (gram method only; needs N >= 4).
    chunk : int, features per slab (gram) or rows per batch (features).

    Returns
    -------
    float, CKA computed in float64 from float64-accumulated sums.

    Raises
    ------
    ValueError naming 'layer_x' / 'layer_y' for a constant layer, by the rule of every CKA path
    (``jaxprobe._validate.CONSTANT_RULE``: the accumulated centred Gram or covariance against
    the means, no extra pass), or when the store dtype's products overflow.
    """
    fn = "streaming_cka"
    check_choice(method, "method", METHODS, fn=fn)
    debiased = check_bool(debiased, "debiased", fn=fn)
    store = _open(store, fn)
    layer_y = layer_x if layer_y is None else layer_y
    rows = _rows(store, rows, "rows", fn)
    rows_y = rows if rows_y is None else _rows(store, rows_y, "rows_y", fn)
    if rows_y.size != rows.size:
        raise ValueError(f"The 'rows' and 'rows_y' parameters of {fn} must have the same length (matched samples); got {rows.size} and {rows_y.size}.")
    N = rows.size
    if N < (4 if debiased else 2):
        raise ValueError(f"{fn} got N = {N} rows; {'the debiased estimator needs N >= 4' if debiased else 'CKA needs N >= 2'}.")
    dx = int(np.prod(store.layer_shape(layer_x)))
    dy = int(np.prod(store.layer_shape(layer_y)))
    if method == "auto":
        method = "features" if (dx * dy + dx * dx + dy * dy) < N * (dx + dy) and not debiased else "gram"
    if method == "features":
        if debiased:
            raise ValueError(f"The 'debiased' option of {fn} needs method='gram' (or 'auto').")
        if chunk is None:
            chunk = max(1, _SLAB_BYTES // (4 * (dx + dy)))
        chunk = check_int(chunk, "chunk", fn=fn, low=1)
        return _feature_cka(store, layer_x, layer_y, rows, rows_y, chunk, fn)
    Kx, mx, dtx = _store_gram(store, layer_x, rows, chunk, True, fn)
    _check_constant(Kx, mx, dtx, layer_x, fn, "layer_x")
    Ky, my, dty = _store_gram(store, layer_y, rows_y, chunk, True, fn)
    _check_constant(Ky, my, dty, layer_y, fn, "layer_y")
    return cka_from_centered_grams(Kx, Ky, debiased=debiased)
