"""Gram matrices, centering and RBF bandwidth rules.

Conventions
-----------
* Rows are samples: ``X`` has shape ``(n, d)``. Functions act on one example;
  batch them with ``jax.vmap`` at the call site.
* Gaussian (RBF) kernel: ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))``.
* Median heuristic: ``sigma = scale * sqrt(median_{i<j} ||x_i - x_j||^2)``. The
  diagonal (the n zero self-distances) is excluded and each unordered pair counts
  once, so the median is over ``n (n - 1) / 2`` values; for an even count it is
  the mean of the two middle values (numpy's definition). Kornblith et al.
  (2019, their ``gram_rbf``) instead take the median over all ``n^2`` entries,
  diagonal zeros included, and call ``scale`` the threshold;
  ``median_sq_distance(..., include_diagonal=True)`` gives that rule.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


@jax.jit
def linear_gram(X):
    """Linear Gram matrix.

    Parameters
    ----------
    X : array of shape (n, d)

    Returns
    -------
    K : array of shape (n, n), ``K = X X^T``.
    """
    return X @ X.T


@jax.jit
def sq_distances(X):
    """Pairwise squared Euclidean distances.

    Computed from the centered data as ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` (centering
    first limits cancellation), clipped at 0, with an exact zero diagonal.

    Parameters
    ----------
    X : array of shape (n, d)

    Returns
    -------
    D2 : array of shape (n, n)
    """
    Xc = X - jnp.mean(X, axis=0, keepdims=True)
    sq = jnp.sum(Xc * Xc, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (Xc @ Xc.T)
    d2 = jnp.maximum(d2, 0.0)
    return d2 * (1.0 - jnp.eye(X.shape[0], dtype=d2.dtype))


@partial(jax.jit, static_argnames=("include_diagonal",))
def median_sq_distance(D2, *, include_diagonal=False):
    """Median of squared distances.

    Parameters
    ----------
    D2 : array of shape (n, n), symmetric with zero diagonal.
    include_diagonal : bool, static
        False (default): median over the ``n (n - 1) / 2`` distinct pairs ``i < j``.
        True: median over all ``n^2`` entries including the zero diagonal
        (Kornblith et al. 2019).

    Returns
    -------
    scalar. Even counts give the mean of the two middle values.
    """
    n = D2.shape[0]
    if include_diagonal:
        vals = D2.reshape(-1)
    else:
        iu, ju = jnp.triu_indices(n, k=1)
        vals = D2[iu, ju]
    return jnp.median(vals)


@partial(jax.jit, static_argnames=("include_diagonal",))
def rbf_sigma(X, scale=1.0, *, include_diagonal=False):
    """Median-heuristic bandwidth ``sigma = scale * sqrt(median squared distance)``.

    Parameters
    ----------
    X : array of shape (n, d)
    scale : scalar multiplier (Kornblith's ``threshold``).

    Returns
    -------
    sigma : scalar
    """
    med = median_sq_distance(sq_distances(X), include_diagonal=include_diagonal)
    return scale * jnp.sqrt(med)


@jax.jit
def rbf_gram(X, sigma):
    """Gaussian Gram matrix ``exp(-||x_i - x_j||^2 / (2 sigma^2))``.

    Parameters
    ----------
    X : array of shape (n, d)
    sigma : scalar > 0

    Returns
    -------
    K : array of shape (n, n)
    """
    return jnp.exp(-sq_distances(X) / (2.0 * sigma * sigma))


@jax.jit
def rbf_gram_grid(X, sigmas):
    """Gaussian Gram matrices for a grid of bandwidths, sharing the distance matrix.

    Parameters
    ----------
    X : array of shape (n, d)
    sigmas : array of shape (S,)

    Returns
    -------
    K : array of shape (S, n, n)
    """
    d2 = sq_distances(X)
    return jnp.exp(-d2[None] / (2.0 * sigmas[:, None, None] ** 2))


@jax.jit
def center_columns(X):
    """Subtract the column means: ``H X`` with ``H = I - 11^T / n``.

    Parameters
    ----------
    X : array of shape (n, d)

    Returns
    -------
    array of shape (n, d)
    """
    return X - jnp.mean(X, axis=0, keepdims=True)


@jax.jit
def center_gram(K):
    """Double centering ``H K H`` with ``H = I - 11^T / n``.

    Parameters
    ----------
    K : array of shape (n, n), symmetric.

    Returns
    -------
    array of shape (n, n)
    """
    row = jnp.mean(K, axis=0)
    tot = jnp.mean(row)
    return K - row[None, :] - row[:, None] + tot


@jax.jit
def center_gram_unbiased(K):
    """The centering of the unbiased HSIC estimator (Song et al. 2012).

    Returns ``U(K)``, a symmetric matrix with zero diagonal such that for any two
    Gram matrices ``<U(K), U(L)>_F = n (n - 3) HSIC_u(K, L)``, so the debiased CKA is
    the cosine of ``U(K)`` and ``U(L)``. With ``K~`` = K with zeroed diagonal,
    ``r = K~ 1 / (n - 2)`` and ``m = 1^T r / (2 (n - 1))``:
    ``U(K)_ij = K~_ij - (r_i - m) - (r_j - m)`` off the diagonal, 0 on it.
    Needs n >= 4.

    Parameters
    ----------
    K : array of shape (n, n), symmetric.

    Returns
    -------
    array of shape (n, n)
    """
    n = K.shape[0]
    off = 1.0 - jnp.eye(n, dtype=K.dtype)
    Kt = K * off
    r = jnp.sum(Kt, axis=0) / (n - 2)
    r = r - jnp.sum(r) / (2 * (n - 1))
    return (Kt - r[None, :] - r[:, None]) * off


# ----------------------------------------------------------------------------- normalised centred Grams
# The one normalised centred Gram of the project (CKA, its bootstrap and the sweep's Gram
# cache build on these): every Gram comes with its representation's constant statistic,
# computed from the same centred products. ``scaled`` multiplies the data by a power of two
# first (exact), so no product can overflow or underflow.

def pow2_scale(A):
    """A power of two s with ``max|A s|`` in [0.5, 1) (1 for an all-zero or non-finite A):
    squares and Gram products of ``A s`` can neither overflow nor underflow, and the
    multiplication is exact. CKA is invariant to the scale of each representation."""
    m = jnp.max(jnp.abs(A))
    _, e = jnp.frexp(jnp.where(jnp.isfinite(m) & (m > 0), m, 1.0).astype(A.dtype))
    return jnp.ldexp(jnp.ones((), A.dtype), -e)


def centred_columns(A, scaled):
    """Column-centred ``A`` (n, d) (scaled by ``pow2_scale`` when ``scaled``) and
    ``n ||mean||^2``, the uncentred part of its sum of squares."""
    if scaled:
        A = A * pow2_scale(A)
    m = jnp.mean(A, axis=0, keepdims=True)
    return A - m, A.shape[0] * jnp.sum(m * m)


def constant_ratio(g2, mean_ss, scaled):
    """The constant statistic ``||Ac Ac^T||_F / (||Ac Ac^T||_F + n ||mean||^2)`` from the
    centred Gram's squared norm ``g2`` (``jaxprobe._validate.CONSTANT_RULE``). Unscaled, a Gram
    norm outside the dtype's normal range (overflow, or underflow that would cost
    precision) gives the sentinel -1: the caller then recomputes with ``scaled=True``."""
    gn = jnp.sqrt(g2)
    den = gn + mean_ss
    r = jnp.where(den > 0, gn / jnp.where(den > 0, den, 1), 0.0)
    if scaled:
        return r
    ok = jnp.isfinite(g2) & (g2 >= jnp.finfo(g2.dtype).tiny) & jnp.isfinite(mean_ss)
    return jnp.where(ok, r, -1.0).astype(g2.dtype)


@partial(jax.jit, static_argnames=("debiased", "scaled"))
def normalised_linear_gram(A, *, debiased, scaled=False):
    """Unit-Frobenius-norm centered linear Gram of one (n, d) representation, and its
    constant statistic (``constant_ratio``). The Gram is built from the column-centred data for
    both estimators (``U(Ac Ac^T) = U(A A^T)``: U-centring removes what a feature shift adds)."""
    Ac, mean_ss = centred_columns(A, scaled)
    G = Ac @ Ac.T  # = H A A^T H, cheaper and more accurate than centering the Gram
    g2 = jnp.sum(G * G)
    r = constant_ratio(g2, mean_ss, scaled)
    if debiased:
        G = center_gram_unbiased(G)
        g2 = jnp.sum(G * G)
    return G / jnp.sqrt(g2), r


@partial(jax.jit, static_argnames=("debiased",))
def normalised_rbf_gram(A, sigma, *, debiased):
    """Unit-norm centred RBF Gram and the constant statistic of ``A`` (always scaled)."""
    s = pow2_scale(A)
    Ac, mean_ss = centred_columns(A, True)
    L = Ac @ Ac.T  # linear centred Gram: the statistic, and the distances (as kernels.gram.sq_distances)
    r = constant_ratio(jnp.sum(L * L), mean_ss, True)
    sq = jnp.diagonal(L)
    eye = jnp.eye(A.shape[0], dtype=bool)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * L, 0.0)
    ss = sigma * s  # the kernel is invariant to scaling the data and sigma together
    K = jnp.where(eye, 1.0, jnp.exp(-(d2 / ss) / (2.0 * ss))).astype(A.dtype)  # no underflow of ss^2
    G = center_gram_unbiased(K) if debiased else center_gram(K)
    return G / jnp.sqrt(jnp.sum(G * G)), r
