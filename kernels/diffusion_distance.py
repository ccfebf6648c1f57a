"""All-component diffusion distances at t = 1/2 in closed form (no eigendecomposition).

Conventions as ``jaxprobe.diffusion``: ``K`` the Gaussian affinity (n, n) (PSD),
``q = K 1``, ``K_a = Q^-a K Q^-a``, ``deg = K_a 1``, ``vol = 1^T deg``, ``pi = deg / vol``,
``S = D^-1/2 K_a D^-1/2 = sum_k lambda_k v_k v_k^T`` (trivial pair ``lambda_0 = 1``,
``v_0 = sqrt(pi)``), right eigenvectors ``psi_k = v_k / sqrt(pi)``, coordinates
``lambda_k^t psi_k``.

Derivation. Summed over every nontrivial component, the coordinates' inner products are

    <Psi_t(i), Psi_t(j)> = sum_{k>=1} lambda_k^{2t} v_k(i) v_k(j) / sqrt(pi_i pi_j)
                         = [S^{2t}]_ij / sqrt(pi_i pi_j) - 1.

At t = 1/2, ``2t = 1``: ``S^{2t} = S`` itself (no matrix power, no square root), and
``S_ij / sqrt(pi_i pi_j) = vol K_a,ij / (deg_i deg_j)``. So the coordinate Gram is

    G = vol D^-1 K_a D^-1 - 1 1^T,

and the squared diffusion distance between the means of two groups of points with
weight rows ``m_a``, ``m_b`` (each summing to 1; ``m = e_i`` for a single point) is

    D^2(a, b) = vol (m_a - m_b)^T D^-1 K_a D^-1 (m_a - m_b)

(the ``1 1^T`` term cancels). This is exact for all components; ``K_a`` PSD makes every
``lambda_k >= 0`` so ``lambda^{2t} = lambda`` needs no clipping. (For t = 1 the same
route gives ``S^2``, i.e. ``vol D^-1 K_a D^-1 K_a D^-1``: one (n, n) product.)

The energy rule (keep the fewest leading components whose share of ``sum_{k>=1} lambda_k``
reaches ``e``) drops a tail. At t = 1/2 its cost is known exactly without the spectrum:
the pi-weighted mean of the squared pairwise distances is
``sum_ij pi_i pi_j D^2(i, j) = 2 sum_{k>=1} lambda_k``, and the dropped components remove
exactly ``2 sum_{k>m} lambda_k``, a share ``1 - (kept share) <= 1 - e`` of it (<= 1 % at
e = 0.99). Per pair, the dropped part is at most ``lambda_{m+1} (1/pi_i + 1/pi_j)``.
``total_energy`` gives ``sum_{k>=1} lambda_k = tr(S) - 1 = sum_i K_a,ii / deg_i - 1``.

Symmetric coordinates (the SE authors' ``lambda^t v``): at t = 1/2 their Gram over every
nontrivial component is ``sum_{k>=1} lambda_k v_k v_k^T = S - v_0 v_0^T``, so
``D^2(a, b) = (m_a - m_b)^T (S - v_0 v_0^T) (m_a - m_b)`` (``group_sq_distances_symmetric``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def _degrees(K, qa):
    deg = qa * (K @ qa)
    return deg, jnp.sum(deg)


@jax.jit
def group_sq_distances(K, qa, M):
    """Squared all-component diffusion distances at t = 1/2 between weighted groups.

    Parameters
    ----------
    K : array (n, n), the (symmetric, PSD) affinity matrix.
    qa : array (n,), the density normalisation ``q^-alpha`` (ones for alpha = 0).
    M : array (G, n), each row a weighting of the points summing to 1 (a group mean;
        the identity for pairwise point distances).

    Returns
    -------
    array (G, G), clipped at 0, exact zero diagonal.
    """
    deg, vol = _degrees(K, qa)
    W = M * (qa / deg)[None, :]  # rows of M D^-1 Q^-a
    C = vol * (W @ K @ W.T)
    C = 0.5 * (C + C.T)
    dg = jnp.diagonal(C)
    d2 = jnp.maximum(dg[:, None] + dg[None, :] - 2.0 * C, 0.0)
    return d2 * (1.0 - jnp.eye(M.shape[0], dtype=d2.dtype))


@jax.jit
def group_sq_distances_symmetric(K, qa, M):
    """As ``group_sq_distances`` for symmetric coordinates ``lambda^t v`` at t = 1/2:
    ``D^2(a, b) = (m_a - m_b)^T (S - v_0 v_0^T) (m_a - m_b)`` with ``S = diag(c) K diag(c)``,
    ``c = q^-a / sqrt(deg)``, ``v_0 = sqrt(deg / vol)``.

    Parameters
    ----------
    K : array (n, n); qa : array (n,); M : array (G, n), rows summing to 1.

    Returns
    -------
    array (G, G), clipped at 0, exact zero diagonal.
    """
    deg, vol = _degrees(K, qa)
    W = M * (qa * jax.lax.rsqrt(deg))[None, :]  # rows of M diag(c)
    Mv = M @ jnp.sqrt(deg / vol)
    C = W @ K @ W.T - Mv[:, None] * Mv[None, :]
    C = 0.5 * (C + C.T)
    dg = jnp.diagonal(C)
    d2 = jnp.maximum(dg[:, None] + dg[None, :] - 2.0 * C, 0.0)
    return d2 * (1.0 - jnp.eye(M.shape[0], dtype=d2.dtype))


@jax.jit
def total_energy(K, qa):
    """``sum_{k>=1} lambda_k = tr(S) - 1``: the energy rule's denominator over all n - 1
    nontrivial eigenvalues, from the diagonal and the degrees."""
    deg, _ = _degrees(K, qa)
    return jnp.sum(jnp.diagonal(K) * qa * qa / deg) - 1.0


@jax.jit
def group_sq_distances_t1(K, qa, M):
    """As ``group_sq_distances`` at t = 1: ``S^2`` in place of ``S``, i.e.
    ``D^2(a, b) = vol (m_a - m_b)^T D^-1 K_a D^-1 K_a D^-1 (m_a - m_b)`` (one more (G, n) x (n, n)
    product)."""
    deg, vol = _degrees(K, qa)
    W = M * (qa / deg)[None, :]
    KW = K @ W.T  # (n, G)
    C = vol * (KW.T @ (KW * (qa * qa / deg)[:, None]))  # vol W K Q^-a D^-1 Q^-a K W^T
    C = 0.5 * (C + C.T)
    dg = jnp.diagonal(C)
    d2 = jnp.maximum(dg[:, None] + dg[None, :] - 2.0 * C, 0.0)
    return d2 * (1.0 - jnp.eye(M.shape[0], dtype=d2.dtype))
