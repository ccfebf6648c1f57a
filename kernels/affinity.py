"""Gaussian affinities for diffusion maps, bandwidth (epsilon) rules, and a blocked
affinity product for clouds too large for a dense n x n matrix.

Conventions
-----------
* Rows are samples: ``X`` has shape ``(n, d)``. Functions act on one cloud; batch
  them with ``jax.vmap`` at the call site.
* Kernel: ``k(x, y) = exp(-||x - y||^2 / (2 epsilon))``, so ``epsilon`` plays the role
  of ``sigma^2`` in ``kernels.gram``. pydiffmap writes ``exp(-||x - y||^2 / (4 eps))``:
  its ``eps`` is ``epsilon / 2`` here.
* The diagonal is part of the kernel (self-affinity 1), as in Coifman & Lafon (2006).
* Rule "median": ``epsilon`` = median of the squared distances over the
  ``n (n - 1) / 2`` distinct pairs, the mean of the two middle values for an even
  count (the same value as ``kernels.gram.median_sq_distance``, found by bisection
  on the float bit patterns instead of a sort: exact, and about 6x faster on CPU).
* Rule "bgh" (Berry, Giannakis & Harlim 2015): sweep ``epsilon`` over a log2 grid,
  ``T(epsilon) = sum_ij k(x_i, x_j)`` (diagonal included), and pick the epsilon where
  ``d log T / d log epsilon`` is largest. The grid is relative to the median rule
  (``median * 2^j``, j = -20, -19.5, ..., 20), so the rule is scale-free; the chosen
  value is the geometric midpoint of the steepest grid interval. ``2 * max slope``
  estimates the intrinsic dimension.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxprobe_kernels.gram import sq_distances

BGH_LOG2_GRID = tuple(x / 2.0 for x in range(-40, 41))


@jax.jit
def gaussian_affinity(D2, epsilon):
    """Gaussian affinities ``exp(-D2 / (2 epsilon))``.

    Parameters
    ----------
    D2 : array of shape (n, m), squared distances.
    epsilon : scalar > 0

    Returns
    -------
    K : array of shape (n, m)
    """
    return jnp.exp(-D2 / (2.0 * epsilon))


def _triu_pairs(n):
    """Row and column of the ``n (n - 1) / 2`` pairs ``i < j``, in row-major order.

    Computed in the program from an iota (``np.triu_indices`` would embed two
    constant arrays of that length, which XLA then folds slowly). Row ``i`` starts at
    flat index ``i n - i (i + 1) / 2``; the row of flat index k comes from the integer
    square root of ``(2n - 1)^2 - 8k`` (float estimate, then exact integer fixes).
    int32 arithmetic: n <= 23170.
    """
    k = jnp.arange(n * (n - 1) // 2, dtype=jnp.int32)
    b = 2 * n - 1
    disc = b * b - 8 * k
    s = jnp.floor(jnp.sqrt(disc.astype(jnp.float32))).astype(jnp.int32)
    s = jnp.where(s * s > disc, s - 1, s)
    s = jnp.where((s + 1) * (s + 1) <= disc, s + 1, s)

    def start(i):
        return i * n - (i * (i + 1)) // 2

    i = jnp.clip((b - s) // 2, 0, n - 2)
    i = jnp.where(start(i) > k, i - 1, i)
    i = jnp.where(start(i + 1) <= k, i + 1, i)
    return i, k - start(i) + i + 1


def _row_blocks(n, n_blocks):
    """Static edges of ``n_blocks`` contiguous row blocks of sizes within one of each other."""
    return [round(i * n / n_blocks) for i in range(n_blocks + 1)]


def default_gram_blocks(n, d):
    """Row blocks for ``symmetric_sq_distances``: one per ~384 rows, at most 4, and
    1 (no blocking) when ``d < 1024``.

    Skipping the upper block triangle saves ``(m - 1) / (2 m)`` of the Gram flops for
    ``m`` blocks, but assembling the blocks costs passes over the (n, n) matrix: a
    gain when the GEMM dominates (24 x 738 x 2048: distances 0.295 -> 0.268 s CPU with
    2 blocks; 2000 x 2048: 0.096 -> 0.071 s), a loss when it does not (5000 x 256:
    0.128 -> 0.203 s). Much smaller GEMMs lose more to efficiency than they save.
    """
    if d < 1024:
        return 1
    return max(1, min(4, round(n / 384)))


@partial(jax.jit, static_argnames=("n_blocks",))
def symmetric_sq_distances(X, *, n_blocks=None):
    """Pairwise squared distances ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``, exactly symmetric.

    The same formula as ``kernels.gram.sq_distances`` (centered data, clipped at 0,
    exact zero diagonal), but the Gram matrix comes from the lower block triangle
    only: rows are cut into ``n_blocks`` blocks and block column ``j`` is one GEMM
    ``Xc[a_j:] @ Xc[a_j:b_j].T``; the upper blocks are its transposes. About
    ``(m + 1) / (2 m)`` of the full GEMM's flops, and ``D2 == D2.T`` bit for bit.

    Parameters
    ----------
    X : array of shape (n, d)
    n_blocks : int, static, or None for ``default_gram_blocks(n)``

    Returns
    -------
    D2 : array of shape (n, n)
    """
    n = X.shape[0]
    m = default_gram_blocks(n, X.shape[1]) if n_blocks is None else max(1, min(int(n_blocks), n))
    Xc = X - jnp.mean(X, axis=0, keepdims=True)
    sq = jnp.sum(Xc * Xc, axis=1)
    if m == 1:
        G = Xc @ Xc.T
        G = jnp.tril(G) + jnp.tril(G, -1).T  # exact symmetry, as with blocks
    else:
        e = _row_blocks(n, m)
        cols = [Xc[e[j]:] @ Xc[e[j]:e[j + 1]].T for j in range(m)]  # (n - a_j, b_j - a_j)
        low = [[cols[j][e[i] - e[j]:e[i + 1] - e[j]] for j in range(i + 1)] for i in range(m)]
        for i in range(m):  # a diagonal block is one GEMM, not necessarily symmetric bit for bit
            low[i][i] = jnp.tril(low[i][i]) + jnp.tril(low[i][i], -1).T
        rows = [
            jnp.concatenate([low[i][j] if j <= i else low[j][i].T for j in range(m)], axis=1)
            for i in range(m)
        ]
        G = jnp.concatenate(rows, axis=0)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * G, 0.0)
    return jnp.where(jnp.eye(n, dtype=bool), 0.0, d2)


MEDIAN_ROW = 128  # small inputs: the bisection counts over a (rows, 128) view, column sums first
MEDIAN_ROWS_MAX = 1 << 19  # above this many pairs a flat sum is faster


@jax.jit
def epsilon_median(D2):
    """Median rule: median squared distance over the distinct pairs ``i < j``.

    Exact order statistics without a sort: the upper triangle is gathered once
    (``n <= 23170``), then
    the lower middle value is found by bisection on the bit patterns of the
    (non-negative) values, whose integer order is their float order (one counting
    pass per bit, stopping when the bracket closes: about 26 passes for float32
    distances spanning a factor of ~50); the upper middle value is that one again or
    the next larger value. Up to ``MEDIAN_ROWS_MAX`` pairs (a cache-sized array) each
    count sums a ``(rows, 128)`` view down its columns first, which XLA's CPU code
    vectorises (0.16 -> 0.085 s for 24 clouds of 738 points); larger arrays are
    memory-bound and a flat sum is faster (n = 5000: 0.29 vs 0.46 s).

    Parameters
    ----------
    D2 : array of shape (n, n), squared distances (upper triangle is used), n >= 2.

    Returns
    -------
    scalar, the mean of the two middle values when ``n (n - 1) / 2`` is even.
    """
    n = D2.shape[0]
    wide = D2.dtype == jnp.float64
    itype = jnp.int64 if wide else jnp.int32
    iu, ju = _triu_pairs(n)
    bits = jax.lax.bitcast_convert_type(jnp.maximum(D2[iu, ju], 0.0), itype)
    count = n * (n - 1) // 2
    rank = (count - 1) // 2  # 0-based rank of the lower middle value
    big = jnp.iinfo(itype).max  # above every finite or inf bit pattern: padding never counts
    if count <= MEDIAN_ROWS_MAX:
        rows = jnp.pad(bits, (0, -count % MEDIAN_ROW), constant_values=big).reshape(-1, MEDIAN_ROW)

        def n_at_most(x):
            return jnp.sum(jnp.sum(rows <= x, axis=0, dtype=itype))
    else:
        rows = bits

        def n_at_most(x):
            return jnp.sum(rows <= x, dtype=itype)

    def halve(lohi):
        lo, hi = lohi
        # floor((lo + hi) / 2) without overflow: a NaN from non-finite data can be negative (its sign bit
        # set), and hi - lo then overflowed and the loop never closed (the caller names the non-finite
        # input after this returns)
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
        enough = n_at_most(mid) >= rank + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.while_loop(lambda lohi: lohi[0] < lohi[1], halve, (jnp.min(bits), jnp.max(bits)))
    lower = jax.lax.bitcast_convert_type(lo, D2.dtype)
    if count % 2:
        return lower
    repeats = n_at_most(lo) >= rank + 2
    nxt = jnp.where(repeats, lo, jnp.min(jnp.where(rows > lo, rows, big)))
    return 0.5 * (lower + jax.lax.bitcast_convert_type(nxt, D2.dtype))


@jax.jit
def bgh_curve(D2):
    """The BGH sweep: ``log T`` on the grid and the grid of epsilons.

    Parameters
    ----------
    D2 : array of shape (n, n), symmetric with zero diagonal.

    Returns
    -------
    epsilons : array of shape (G,), ``median * 2^BGH_LOG2_GRID``
    log_T : array of shape (G,), ``log sum_ij exp(-D2_ij / (2 epsilon))``
    """
    med = epsilon_median(D2)
    grid = jnp.asarray(BGH_LOG2_GRID, dtype=D2.dtype)
    eps = med * jnp.exp2(grid)
    # lax.map keeps one (n, n) temporary alive at a time (a vmap would hold G of them).
    log_t = jax.lax.map(lambda e: jax.nn.logsumexp(-D2 / (2.0 * e)), eps)
    return eps, log_t


@jax.jit
def epsilon_bgh(D2):
    """Berry-Giannakis-Harlim rule: epsilon at the steepest ``d log T / d log eps``.

    Parameters
    ----------
    D2 : array of shape (n, n), symmetric with zero diagonal.

    Returns
    -------
    epsilon : scalar, the geometric midpoint of the steepest grid interval.
    dimension : scalar, ``2 * max slope`` (the intrinsic dimension estimate).
    """
    eps, log_t = bgh_curve(D2)
    log_eps = jnp.log(eps)
    slope = jnp.diff(log_t) / jnp.diff(log_eps)
    j = jnp.argmax(slope)
    return jnp.exp(0.5 * (log_eps[j] + log_eps[j + 1])), 2.0 * slope[j]


@jax.jit
def dense_affinity(X, epsilon):
    """Dense Gaussian affinity matrix of one cloud.

    Parameters
    ----------
    X : array of shape (n, d)
    epsilon : scalar > 0

    Returns
    -------
    K : array of shape (n, n), symmetric, unit diagonal.
    """
    return gaussian_affinity(sq_distances(X), epsilon)


@jax.jit
def cross_affinity(Y, X, epsilon):
    """Gaussian affinities between new points and a cloud.

    Parameters
    ----------
    Y : array of shape (m, d)
    X : array of shape (n, d)
    epsilon : scalar > 0

    Returns
    -------
    K : array of shape (m, n), ``K_ij = exp(-||y_i - x_j||^2 / (2 epsilon))``.
    """
    mu = jnp.mean(X, axis=0, keepdims=True)
    Xc, Yc = X - mu, Y - mu
    d2 = jnp.sum(Yc * Yc, 1)[:, None] + jnp.sum(Xc * Xc, 1)[None, :] - 2.0 * (Yc @ Xc.T)
    return gaussian_affinity(jnp.maximum(d2, 0.0), epsilon)


@partial(jax.jit, static_argnames=("block_size",))
def affinity_matvec(X, V, epsilon, *, block_size=1024):
    """``K @ V`` for the Gaussian affinity matrix ``K`` of ``X``, never forming ``K``.

    ``K`` is built tile by tile (``block_size x block_size``), so the memory is
    ``O(n (d + m) + block_size^2)`` instead of ``O(n^2)``. The tile diagonal uses an
    exact zero distance, as the dense path does.

    Parameters
    ----------
    X : array of shape (n, d)
    V : array of shape (n, m)
    epsilon : scalar > 0
    block_size : int, static

    Returns
    -------
    array of shape (n, m)
    """
    n, m = V.shape
    b = min(block_size, n)
    nb = -(-n // b)
    pad = nb * b - n
    Xc = X - jnp.mean(X, axis=0, keepdims=True)
    sq = jnp.sum(Xc * Xc, axis=1)
    # Padded columns carry V = 0, so they add nothing; padded rows are cut at the end.
    Xp = jnp.pad(Xc, ((0, pad), (0, 0))).reshape(nb, b, -1)
    sqp = jnp.pad(sq, (0, pad)).reshape(nb, b)
    Vp = jnp.pad(V, ((0, pad), (0, 0))).reshape(nb, b, m)
    same = jnp.eye(b, dtype=bool)

    def row_block(i):
        xi, si = Xp[i], sqp[i]

        def col_block(acc, j):
            d2 = si[:, None] + sqp[j][None, :] - 2.0 * (xi @ Xp[j].T)
            d2 = jnp.where(same & (i == j), 0.0, jnp.maximum(d2, 0.0))
            return acc + gaussian_affinity(d2, epsilon) @ Vp[j], None

        acc, _ = jax.lax.scan(col_block, jnp.zeros((b, m), V.dtype), jnp.arange(nb))
        return acc

    out = jax.lax.map(row_block, jnp.arange(nb))
    return out.reshape(nb * b, m)[:n]
