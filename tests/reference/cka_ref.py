"""Plain float64 numpy references, written for readability rather than speed."""
from __future__ import annotations

import numpy as np


def centering_matrix(n):
    return np.eye(n) - np.ones((n, n)) / n


def linear_gram(X):
    X = np.asarray(X, np.float64)
    return X @ X.T


def sq_dists(X):
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            D[i, j] = np.sum((X[i] - X[j]) ** 2)
    return D


def median_sq_distance(X, include_diagonal=False):
    D = sq_dists(X)
    if include_diagonal:
        return np.median(D)
    iu = np.triu_indices(D.shape[0], 1)
    return np.median(D[iu])


def rbf_gram(X, sigma):
    return np.exp(-sq_dists(X) / (2 * sigma**2))


def hsic_biased(K, L):
    n = K.shape[0]
    H = centering_matrix(n)
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased(K, L):
    """Song et al. (2012), eq. (5), with explicit zeroed diagonals."""
    n = K.shape[0]
    Kt = np.array(K, np.float64)
    Lt = np.array(L, np.float64)
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def cka(K, L, debiased=False):
    h = hsic_unbiased if debiased else hsic_biased
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def resampled_cka(K, L, idx, debiased=False):
    """CKA of the Grams restricted to an explicit index resample (duplicates kept)."""
    idx = np.asarray(idx)
    return cka(K[np.ix_(idx, idx)], L[np.ix_(idx, idx)], debiased=debiased)


def counts_to_indices(c):
    return np.repeat(np.arange(len(c)), np.asarray(c))


def percentile_interval(reps, level):
    a = (1 - level) / 2
    return np.quantile(reps, a), np.quantile(reps, 1 - a)


def bca_interval(reps, est, jack, level):
    """Efron's BCa with the jackknife acceleration, scalar statistic."""
    from scipy.stats import norm

    a_lvl = (1 - level) / 2
    z0 = norm.ppf(np.mean(np.asarray(reps) < est))
    d = np.mean(jack) - np.asarray(jack)
    acc = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    out = []
    for z in (norm.ppf(a_lvl), norm.ppf(1 - a_lvl)):
        q = norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))
        out.append(np.quantile(reps, q))
    return tuple(out)


def kornblith_demo_data():
    """The construction of Kornblith et al.'s CKA demonstration notebook."""
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y
