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
