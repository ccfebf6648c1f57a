"""HSIC estimators and CKA.

For Gram matrices ``K, L`` of shape (n, n) and ``H = I - 11^T / n``:

* biased HSIC (Gretton et al. 2005): ``HSIC_b = tr(K H L H) / (n - 1)^2``;
* unbiased HSIC (Song et al. 2012), with ``K~, L~`` the Grams with zeroed diagonal:
  ``HSIC_u = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))``;
* CKA = ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019); with the
  unbiased estimator this is the "debiased CKA". The debiased value can be negative;
  it is never clamped.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxprobe_kernels.gram import center_columns, center_gram, center_gram_unbiased


@jax.jit
def hsic_biased(K, L):
    """Biased HSIC ``tr(K H L H) / (n - 1)^2``.

    Parameters
    ----------
    K, L : arrays of shape (n, n)

    Returns
    -------
    scalar
    """
    n = K.shape[0]
    return jnp.sum(center_gram(K) * L) / (n - 1) ** 2


@jax.jit
def hsic_unbiased(K, L):
    """Unbiased HSIC of Song et al. (2012), written term by term. Needs n >= 4.

    Parameters
    ----------
    K, L : arrays of shape (n, n)

    Returns
    -------
    scalar
    """
    n = K.shape[0]
    off = 1.0 - jnp.eye(n, dtype=K.dtype)
    Kt, Lt = K * off, L * off
    kl = jnp.sum(Kt * Lt)
    sk, sl = jnp.sum(Kt), jnp.sum(Lt)
    cross = jnp.sum(jnp.sum(Kt, axis=0) * jnp.sum(Lt, axis=0))
    return (kl + sk * sl / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))


@partial(jax.jit, static_argnames=("debiased",))
def cka_from_grams(K, L, *, debiased=False):
    """CKA from two Gram matrices over the same n samples.

    Computed as the cosine of the centered Grams: ``H K H`` for the biased estimator,
    ``U(K)`` (see ``center_gram_unbiased``) for the debiased one; this equals the
    HSIC ratio in the module docstring exactly, with every normaliser cancelling.

    Parameters
    ----------
    K, L : arrays of shape (n, n)
    debiased : bool, static

    Returns
    -------
    scalar
    """
    c = center_gram_unbiased if debiased else center_gram
    Kc, Lc = c(K), c(L)
    return jnp.sum(Kc * Lc) / jnp.sqrt(jnp.sum(Kc * Kc) * jnp.sum(Lc * Lc))


@partial(jax.jit, static_argnames=("debiased",))
def cka_linear_features(X, Y, *, debiased=False):
    """Linear CKA in feature space, cheaper than the Gram form when d < n.

    With column-centred ``X, Y``: ``<XX^T, YY^T> = ||X^T Y||_F^2``. The debiased form
    expands ``<U(XX^T), U(YY^T)>`` through row norms ``a_i = |x_i|^2``,
    ``b_i = |y_i|^2`` (the diagonal terms) and ``sum(a)``, ``sum(b)``:
    ``||X^T Y||^2 - n/(n-2) a.b + sum(a) sum(b) / ((n-1)(n-2))``.

    Parameters
    ----------
    X : array of shape (n, d1)
    Y : array of shape (n, d2)
    debiased : bool, static

    Returns
    -------
    scalar
    """
    X, Y = center_columns(X), center_columns(Y)
    n = X.shape[0]

    def dot(A, B):
        s = jnp.sum((A.T @ B) ** 2)
        if not debiased:
            return s
        a, b = jnp.sum(A * A, axis=1), jnp.sum(B * B, axis=1)
        return s - n / (n - 2) * jnp.dot(a, b) + jnp.sum(a) * jnp.sum(b) / ((n - 1) * (n - 2))

    return dot(X, Y) / jnp.sqrt(dot(X, X) * dot(Y, Y))
