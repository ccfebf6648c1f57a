"""jaxprobe: JAX-accelerated probing of speech-model representations.

The public API is what ``__all__`` lists. ``import jaxprobe`` never imports torch.
"""
from jaxprobe.bootstrap import BootstrapResult, bootstrap_cka, bootstrap_mean, resample_counts
from jaxprobe.cka import cka, cka_matrix
from jaxprobe.stats import LinregressResult, linregress, pearson, rankdata, spearman

__version__ = "0.1.0"

__all__ = [
    "BootstrapResult",
    "LinregressResult",
    "bootstrap_cka",
    "bootstrap_mean",
    "cka",
    "cka_matrix",
    "linregress",
    "pearson",
    "rankdata",
    "resample_counts",
    "spearman",
]
