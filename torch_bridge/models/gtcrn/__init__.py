"""GTCRN (Rong et al., ICASSP 2024): the network, its probe layers and the official inference pipeline."""
from torch_bridge.models.gtcrn.inference import gtcrn_enhance, gtcrn_istft, gtcrn_stft, gtcrn_variant, load_gtcrn
from torch_bridge.models.gtcrn.layers import GTCRN_BLOCKS, GTCRN_LAYERS, GtcrnLayer
from torch_bridge.models.gtcrn.model import GTCRN, erb_matrix, parameter_counts

__all__ = [
    "GTCRN",
    "GTCRN_BLOCKS",
    "GTCRN_LAYERS",
    "GtcrnLayer",
    "erb_matrix",
    "gtcrn_enhance",
    "gtcrn_istft",
    "gtcrn_stft",
    "gtcrn_variant",
    "load_gtcrn",
    "parameter_counts",
]
