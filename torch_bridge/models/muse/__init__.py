"""MUSE (Lin, Chen, Wang, Interspeech 2024): the fast network (``model.py`` on ``blocks.py``), the reference
network kept as its yardstick (``reference.py``), the depthwise deformable convolution (``deform.py``) and the
probed-layer map with the model's window and rate (``layers.py``).

``layers`` is torch-free and imported here; the networks import torch and load on first use
(``from torch_bridge.models.muse import MUSE``), so ``torch_bridge.models.muse.layers`` and the names
below stay importable without torch (the studies read MUSE's window from them)."""
from torch_bridge.models.muse.layers import (MUSE_BLOCKS, MUSE_LAYERS, MUSE_SAMPLE_RATE, MUSE_WINDOW, MuseLayer,
                                             muse_layers_by_block)

_LAZY = {"MUSE": "torch_bridge.models.muse.model", "MUSEReference": "torch_bridge.models.muse.reference",
         "deform_conv2d_depthwise": "torch_bridge.models.muse.deform"}

__all__ = ["MUSE", "MUSEReference", "MUSE_BLOCKS", "MUSE_LAYERS", "MUSE_SAMPLE_RATE", "MUSE_WINDOW", "MuseLayer",
           "deform_conv2d_depthwise", "muse_layers_by_block"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
