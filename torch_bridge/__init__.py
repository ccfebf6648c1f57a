"""torch_bridge: everything that imports torch — models, hook-based capture, mixing,
dataset readers, the activation store, ASR training.

Public names are resolved lazily from the table below so that `import torch_bridge`
is cheap; each entry maps an exported name to the module that defines it.
"""
from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    # name: module  (one line per export; keep sorted within each group)
    # capture
    "Captured": "torch_bridge.capture",
    "capture": "torch_bridge.capture",
    "forward_batches": "torch_bridge.capture",
    "to_jax": "torch_bridge.capture",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'torch_bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
