"""The canonical activation map of MUSE: the 24 probed layers, their blocks, shapes and skip roles.

Each record names the ``norm1`` wrapper of one transformer layer,
``TCFTransformer.<stage>.mhca_blks.0.transformer_layers.<l>.norm1``, whose forward output is a
``(B, C, T, F)`` map; the time mean gives the ``(C, F)`` "frequency-token" matrix of the SE
paper (channels are the samples of CKA, frequency bins the features). Shapes are for the
official 30,700-sample segment (T = 308, 154 and 77 at levels 1, 2 and the latent).

How the skip roles follow from the architecture (``muse-architecture.md`` §3.1)
--------------------------------------------------------------------------------
The TCFTransformer is a three-level U-Net::

    e1 = Enc1(x0) + x0                       -> down -> Enc2 ...
    e2 = Enc2(i2) + i2                       -> down -> Latent ...
    d2 = reduce_chan_level2([up(latent), e2]) -> Dec2
    d1 = reduce_chan_level1([up(o2),     e1]) -> Dec1 -> Refine (mag / pha)

Only two tensors travel on skip paths across the U: e1 and e2, the outputs of the Enc1 and
Enc2 blocks. Within a block, a ``norm1`` sees the residual stream *entering* its layer, so the
last probed layer of a block (index 3) is the one closest to the block output that leaves on
the skip: Enc1.3 and Enc2.3 are marked ``skip="output"``. The skips arrive in ``d2`` and ``d1``
(concatenated with the upsampled path, fused by a 1x1 conv), which after the deformable
embedding are exactly the input of the first layer of Dec2 and Dec1: Dec2.0 and Dec1.0 are
marked ``skip="input"``. No other probed layer touches a skip: the Latent block is the bottom of
the U; the Refine block reads ``o1`` straight from Dec1 (not a skip); and the long residual that
adds the dense-encoder output x0 to the TCFTransformer outputs joins after the last refinement
layer, so it reaches no probed ``norm1`` (its source x0 is not a probed layer either). The
outer residual of each stage (``+`` its own input) is a block-local shortcut, not a U-Net skip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Block = Literal["Enc1", "Enc2", "Latent", "Dec2", "Dec1", "Refine"]
Skip = Literal["input", "output"] | None

# block -> (stage module name, (C, F) after time pooling)
_BLOCKS: dict[str, tuple[str, tuple[int, int]]] = {
    "Enc1": ("encoder_level1", (16, 128)),
    "Enc2": ("encoder_level2", (32, 64)),
    "Latent": ("latent", (48, 32)),
    "Dec2": ("decoder_level2", (32, 64)),
    "Dec1": ("decoder_level1", (16, 128)),
    "Refine": ("mag_refinement", (16, 128)),
}
# (block, index) -> skip role; derivation in the module docstring.
_SKIPS: dict[tuple[str, int], str] = {
    ("Enc1", 3): "output",
    ("Enc2", 3): "output",
    ("Dec2", 0): "input",
    ("Dec1", 0): "input",
}
LAYERS_PER_BLOCK = 4
#: MUSE's window: the official inference cuts an utterance into segments of this many samples
#: (about 1.92 s) at MUSE_SAMPLE_RATE; the model's constants live here, in its torch-free spec
#: module, so jaxprobe's configuration checks read them without importing torch.
MUSE_WINDOW = 30700
MUSE_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class MuseLayer:
    """One probed MUSE layer.

    Attributes
    ----------
    name : str
        Module path in ``MUSE.named_modules()``.
    block : str
        "Enc1", "Enc2", "Latent", "Dec2", "Dec1" or "Refine".
    index : int
        Layer index 0..3 within the block.
    shape : tuple (C, F)
        Shape of one segment's activation after time-mean pooling.
    skip : str or None
        "output" if the block output leaving on a U-Net skip is closest to this layer,
        "input" if this layer receives a skip, else None.
    """

    name: str
    block: Block
    index: int
    shape: tuple[int, int]
    skip: Skip = None


def _layer_name(stage: str, index: int) -> str:
    return f"TCFTransformer.{stage}.mhca_blks.0.transformer_layers.{index}.norm1"


MUSE_LAYERS: tuple[MuseLayer, ...] = tuple(
    MuseLayer(
        name=_layer_name(stage, i),
        block=block,
        index=i,
        shape=shape,
        skip=_SKIPS.get((block, i)),
    )
    for block, (stage, shape) in _BLOCKS.items()
    for i in range(LAYERS_PER_BLOCK)
)

MUSE_BLOCKS: tuple[str, ...] = tuple(_BLOCKS)


def muse_layers_by_block(layers=MUSE_LAYERS) -> dict[str, tuple[MuseLayer, ...]]:
    """Group layer records by block, keeping the block order of the network and the layer order."""
    groups: dict[str, list[MuseLayer]] = {}
    for layer in layers:
        groups.setdefault(layer.block, []).append(layer)
    return {block: tuple(group) for block, group in groups.items()}
