"""jaxprobe: JAX-accelerated probing of speech-model representations.

The public API is what ``__all__`` lists. ``import jaxprobe`` never imports torch.
"""
from jaxprobe.bootstrap import BootstrapResult, bootstrap_cka, bootstrap_eer, bootstrap_mean, bootstrap_min_dcf, resample_counts
from jaxprobe._cka import cka, cka_matrix
from jaxprobe.diffusion import (DiffusionMap, InterLayerResult, IntraLayerResult, diffusion_distances, diffusion_map,
                                diffusion_nystrom, inter_layer, intra_layer, intra_layer_by_name)
from jaxprobe._mesh import make_mesh
from jaxprobe.stats import LinregressResult, eer, linregress, min_dcf, pearson, rankdata, spearman
from jaxprobe.streaming import store_gram, streaming_cka

__version__ = "0.1.0"

__all__ = [
    "BootstrapResult",
    "DiffusionMap",
    "InterLayerResult",
    "IntraLayerResult",
    "LinregressResult",
    "bootstrap_cka",
    "bootstrap_eer",
    "bootstrap_mean",
    "bootstrap_min_dcf",
    "cka",
    "cka_matrix",
    "diffusion_distances",
    "diffusion_map",
    "diffusion_nystrom",
    "eer",
    "inter_layer",
    "intra_layer",
    "intra_layer_by_name",
    "linregress",
    "make_mesh",
    "min_dcf",
    "pearson",
    "rankdata",
    "resample_counts",
    "spearman",
    "store_gram",
    "streaming_cka",
]
