r"""Bootstrap as linear algebra: every resampled HSIC from one GEMM per chunk.

Derivation
----------
A bootstrap replicate draws indices ``idx`` (length m) with replacement; write it as
a count vector ``c`` (``c_i`` = how often sample i was drawn, ``m = sum(c)``). The
resampled Gram is ``K_r = K[idx][:, idx]``. Every sum over pairs of resampled
positions ``(a, b)`` becomes a count-weighted sum over original pairs ``(i, j)``:
``sum_ab f(K_r[a, b]) = sum_ij c_i c_j f(K_ij)``; duplicates of the same sample sit at
off-diagonal positions and are counted through ``c_i^2``. With ``H`` the centering
matrix of size m and any symmetric ``A, B`` (n, n):

    tr(A_r H B_r H) = c^T (A∘B) c - (2/m) sum_i c_i (Ac)_i (Bc)_i + (c^T A c)(c^T B c) / m^2

(expand ``H = I - 11^T/m``: ``1^T A_r B_r 1 = sum_a (A_r 1)_a (B_r 1)_a`` and
``(A_r 1)_a = (A c)_{idx_a}``). So ``HSIC_b = tr(A_r H B_r H) / (m - 1)^2``.

The unbiased estimator zeroes the diagonal *positions* a = b of the resampled Grams
(not the duplicated off-diagonal copies), so with ``dA_i = A_ii``:

    tr(A~_r B~_r)   = c^T (A∘B) c - sum_i c_i A_ii B_ii
    1^T A~_r 1      = c^T A c     - sum_i c_i A_ii
    1^T A~_r B~_r 1 = sum_i c_i ((Ac)_i - A_ii) ((Bc)_i - B_ii)

and Song et al.'s formula applies with m in place of n.

For CKA we need (K, L), (K, K) and (L, L): the five products ``C K``, ``C L``,
``C (K∘L)``, ``C (K∘K)``, ``C (L∘L)`` for a batch of count rows ``C`` (B, n) are one GEMM
``C @ [K | L | K∘L | K∘K | L∘L]`` of shape (B, n) x (n, 5n); everything else is O(B n).
No resampled (n, n) Gram is ever formed. B is processed in chunks to bound memory at
O(chunk * 5n). The same holds for leave-one-out (jackknife) rows ``c = 1 - e_i``.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _terms_biased(c, m, AB, Ac, Bc, cAc, cBc):
    t = jnp.sum(c * AB, axis=-1) - 2.0 / m * jnp.sum(c * Ac * Bc, axis=-1) + cAc * cBc / m**2
    return t / (m - 1) ** 2


def _terms_unbiased(c, m, AB, Ac, Bc, cAc, cBc, dA, dB):
    t1 = jnp.sum(c * AB, axis=-1) - c @ (dA * dB)
    sa = cAc - c @ dA
    sb = cBc - c @ dB
    t3 = jnp.sum(c * (Ac - dA) * (Bc - dB), axis=-1)
    return (t1 + sa * sb / ((m - 1) * (m - 2)) - 2.0 * t3 / (m - 2)) / (m * (m - 3))


@partial(jax.jit, static_argnames=("debiased", "chunk"))
def bootstrap_hsic_terms(K, L, C, *, debiased=False, chunk=256):
    """HSIC(K,L), HSIC(K,K), HSIC(L,L) for every count row of ``C``, by GEMMs.

    Parameters
    ----------
    K, L : arrays of shape (n, n), symmetric Gram matrices.
    C : array of shape (B, n), non-negative counts per sample for each replicate
        (a row need not sum to n: leave-one-out rows sum to n - 1).
    debiased : bool, static. Unbiased (Song et al. 2012) instead of biased HSIC.
    chunk : int, static. Replicates per GEMM; memory is O(chunk * 5n).

    Returns
    -------
    kl, kk, ll : arrays of shape (B,)
        The CKA of replicate b is ``kl[b] / sqrt(kk[b] * ll[b])``.
    """
    n = K.shape[0]
    dtype = jnp.result_type(K.dtype, L.dtype)
    K, L = K.astype(dtype), L.astype(dtype)
    C = C.astype(dtype)
    M = jnp.concatenate([K, L, K * L, K * K, L * L], axis=1)  # (n, 5n)
    dK, dL = jnp.diagonal(K), jnp.diagonal(L)
    B = C.shape[0]
    nchunk = -(-B // chunk)
    pad = nchunk * chunk - B
    Cp = jnp.pad(C, ((0, pad), (0, 0))).reshape(nchunk, chunk, n)

    def one_chunk(c):
        G = c @ M  # (chunk, 5n): the GEMM
        Kc, Lc, KL, KK, LL = (G[:, i * n:(i + 1) * n] for i in range(5))
        m = jnp.sum(c, axis=-1)
        cKc = jnp.sum(c * Kc, axis=-1)
        cLc = jnp.sum(c * Lc, axis=-1)
        if debiased:
            kl = _terms_unbiased(c, m, KL, Kc, Lc, cKc, cLc, dK, dL)
            kk = _terms_unbiased(c, m, KK, Kc, Kc, cKc, cKc, dK, dK)
            ll = _terms_unbiased(c, m, LL, Lc, Lc, cLc, cLc, dL, dL)
        else:
            kl = _terms_biased(c, m, KL, Kc, Lc, cKc, cLc)
            kk = _terms_biased(c, m, KK, Kc, Kc, cKc, cKc)
            ll = _terms_biased(c, m, LL, Lc, Lc, cLc, cLc)
        return jnp.stack([kl, kk, ll])

    out = jax.lax.map(one_chunk, Cp)  # (nchunk, 3, chunk)
    out = jnp.moveaxis(out, 1, 0).reshape(3, nchunk * chunk)[:, :B]
    return out[0], out[1], out[2]


@jax.jit
def bootstrap_weighted_means(values, C):
    """Count-weighted means of per-item values for each replicate: ``C v / sum(C)``.

    Parameters
    ----------
    values : array of shape (n, k), k statistics per item.
    C : array of shape (B, n), counts.

    Returns
    -------
    array of shape (B, k)
    """
    C = C.astype(values.dtype)
    return (C @ values) / jnp.sum(C, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- count matrices
# Row b of every count matrix is drawn from fold_in(key, b) alone, so any subset of replicate
# ids (e.g. one device's share) gives the same rows as the full matrix.
#
# These programs are integer arithmetic (the threefry hash, integer draws, scatter-adds) plus,
# in hier_counts, one float product per draw (uniform * size, floored): no optimisation level
# can change a bit of them (tests/kernels/test_resample.py checks the rows against a
# default-level compile). LLVM's default level spends ~1-2 s of CPU
# compiling each (the unrolled hash rounds) for a program that runs in under a millisecond;
# level 1 compiles 2-3x faster and runs as fast (bench/bench_demo.py, "CKA bootstrap"). Compiler
# options apply to an outermost jit only: ``*_top`` are these programs called on their own (the
# bootstrap designs); inside another program (the sharded replicates) the plain ones are inlined.
INTEGER_PROGRAM = {"xla_backend_optimization_level": 1}

@partial(jax.jit, static_argnames=("n",))
def iid_counts(key, ids, n):
    """(len(ids), n) int32 counts: row b draws n of n items with replacement from ``fold_in(key, b)``."""
    def one(b):
        idx = jax.random.randint(jax.random.fold_in(key, b), (n,), 0, n)
        return jnp.zeros(n, jnp.int32).at[idx].add(1)

    return jax.vmap(one)(ids)


@partial(jax.jit, static_argnames=("n_groups",))
def cluster_counts(key, ids, labels, n_groups):
    """(len(ids), n) int32 counts: row b draws n_groups of the groups with replacement; an item counts as
    often as its group (``labels`` (n,) in [0, n_groups))."""
    def one(b):
        gidx = jax.random.randint(jax.random.fold_in(key, b), (n_groups,), 0, n_groups)
        gc = jnp.zeros(n_groups, jnp.int32).at[gidx].add(1)
        return gc[labels]

    return jax.vmap(one)(ids)


@partial(jax.jit, static_argnames=("n",))
def hier_counts(key, ids, members, sizes, n):
    """(len(ids), n) int32 counts of the two-stage bootstrap: groups with replacement, then inside each
    drawn group as many of its items with replacement (``members`` (G, width) item ids padded, ``sizes`` (G,))."""
    n_groups, width = members.shape

    def one(b):
        k1, k2 = jax.random.split(jax.random.fold_in(key, b))
        gidx = jax.random.randint(k1, (n_groups,), 0, n_groups)  # drawn groups
        size = sizes[gidx]  # rows to draw inside each drawn group
        u = jax.random.uniform(k2, (n_groups, width))
        pos = jnp.minimum(jnp.floor(u * size[:, None]).astype(jnp.int32), size[:, None] - 1)
        rows = members[gidx[:, None], pos]
        valid = jnp.arange(width)[None, :] < size[:, None]
        return jnp.zeros(n, jnp.int32).at[rows.reshape(-1)].add(valid.reshape(-1).astype(jnp.int32))

    return jax.vmap(one)(ids)


def _top(fn, static):
    return jax.jit(fn.__wrapped__, static_argnames=static, compiler_options=INTEGER_PROGRAM)


iid_counts_top = _top(iid_counts, ("n",))
cluster_counts_top = _top(cluster_counts, ("n_groups",))
hier_counts_top = _top(hier_counts, ("n",))
