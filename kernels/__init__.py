"""Pure, jitted array math for jaxprobe: Gram matrices and bandwidth rules, centering,
HSIC/CKA estimators, count-weighted bootstrap GEMMs, Gaussian affinities, a block
Krylov top-k eigensolver.

No I/O, no configuration objects, no printing. Every function takes arrays and
keyword-only static settings and returns arrays; shapes are in the docstrings.
Validation of user input happens once, in `jaxprobe`, before these are called.
"""
from jaxprobe_kernels.affinity import (
    affinity_matvec,
    bgh_curve,
    cross_affinity,
    dense_affinity,
    epsilon_bgh,
    epsilon_median,
    gaussian_affinity,
)
from jaxprobe_kernels.gram import (
    center_columns,
    center_gram,
    center_gram_unbiased,
    linear_gram,
    median_sq_distance,
    rbf_gram,
    rbf_gram_grid,
    rbf_sigma,
    sq_distances,
)
from jaxprobe_kernels.hsic import (
    cka_from_grams,
    cka_linear_features,
    hsic_biased,
    hsic_unbiased,
)
from jaxprobe_kernels.krylov import block_krylov_eigh
from jaxprobe_kernels.resample import bootstrap_hsic_terms, bootstrap_weighted_means

__all__ = [
    "affinity_matvec",
    "bgh_curve",
    "cross_affinity",
    "dense_affinity",
    "epsilon_bgh",
    "epsilon_median",
    "gaussian_affinity",
    "block_krylov_eigh",
    "bootstrap_hsic_terms",
    "bootstrap_weighted_means",
    "center_columns",
    "center_gram",
    "center_gram_unbiased",
    "cka_from_grams",
    "cka_linear_features",
    "hsic_biased",
    "hsic_unbiased",
    "linear_gram",
    "median_sq_distance",
    "rbf_gram",
    "rbf_gram_grid",
    "rbf_sigma",
    "sq_distances",
]
