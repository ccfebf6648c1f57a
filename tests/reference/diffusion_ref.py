"""Plain float64 diffusion maps, written to be read, not to be fast.

Dense kernel with explicit loops, explicit density normalisation, the symmetric
conjugate matrix solved with ``scipy.linalg.eigh``. Conventions match
``jaxprobe.diffusion``: kernel ``exp(-||xi - xj||^2 / (2 eps))``, median rule over
distinct pairs, right eigenvectors normalised so that ``sum_i pi_i psi(i)^2 = 1``.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special


def sq_distance_matrix(X):
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    D2 = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            diff = X[i] - X[j]
            D2[i, j] = diff @ diff
    return D2


def median_epsilon(D2):
    n = D2.shape[0]
    upper = [D2[i, j] for i in range(n) for j in range(i + 1, n)]
    return float(np.median(upper))


def bgh_epsilon(D2, log2_grid):
    """Berry-Giannakis-Harlim sweep on ``median * 2^log2_grid``; geometric midpoint."""
    med = median_epsilon(D2)
    eps = med * 2.0 ** np.asarray(log2_grid, dtype=np.float64)
    log_t = np.array([scipy.special.logsumexp(-D2 / (2.0 * e)) for e in eps])
    slope = np.diff(log_t) / np.diff(np.log(eps))
    j = int(np.argmax(slope))
    return float(np.sqrt(eps[j] * eps[j + 1])), 2.0 * slope[j]


def markov_matrices(X, epsilon, alpha):
    """Return K, the alpha-normalised kernel, its degrees and P = D^-1 K_alpha."""
    D2 = sq_distance_matrix(X)
    K = np.exp(-D2 / (2.0 * epsilon))
    q = K.sum(axis=1)
    Q_inv_alpha = np.diag(q ** (-alpha))
    K_alpha = Q_inv_alpha @ K @ Q_inv_alpha
    degree = K_alpha.sum(axis=1)
    P = np.diag(1.0 / degree) @ K_alpha
    return K, K_alpha, degree, P


def diffusion_map(X, epsilon, alpha=0.0, t=1.0):
    """All nontrivial eigenpairs, sorted by decreasing eigenvalue.

    Returns
    -------
    eigenvalues : (n - 1,)
    psi : (n, n - 1) right eigenvectors of P, ``sum pi psi^2 = 1``
    coords : (n, n - 1) ``lambda^t psi``
    pi : (n,) stationary distribution
    P : (n, n) Markov matrix
    """
    _, K_alpha, degree, P = markov_matrices(X, epsilon, alpha)
    D_half_inv = np.diag(1.0 / np.sqrt(degree))
    S = D_half_inv @ K_alpha @ D_half_inv
    S = 0.5 * (S + S.T)
    w, V = scipy.linalg.eigh(S)
    order = np.argsort(w)[::-1]
    w, V = w[order], V[:, order]
    pi = degree / degree.sum()
    psi = V / np.sqrt(pi)[:, None]
    # drop the trivial pair (eigenvalue 1, constant psi)
    w, psi = w[1:], psi[:, 1:]
    coords = psi * np.clip(w, 0.0, None) ** t
    return w, psi, coords, pi, P


def diffusion_distance_from_P(P, pi, t):
    """``D_t(i, j)^2 = sum_k (P^t[i, k] - P^t[j, k])^2 / pi_k`` for integer t."""
    Pt = np.linalg.matrix_power(P, int(t))
    n = P.shape[0]
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            D[i, j] = np.sqrt(np.sum((Pt[i] - Pt[j]) ** 2 / pi))
    return D
