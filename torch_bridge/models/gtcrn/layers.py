"""The canonical probe layers of GTCRN: the 14 top-level block outputs, in forward order.

Each record names a module of ``GTCRN.named_modules()`` whose forward output is a
``(B, C, T, F)`` map (architecture §11); the time mean gives a ``(C, F)`` matrix per utterance,
as for MUSE (channels are the samples of per-utterance CKA, frequency positions the features).
Shapes do not depend on T.

Skip roles (architecture §7.2): the decoder adds the encoder outputs in mirror order,
``d_i = de_convs.i(d_(i-1) + e_(4-i))`` with ``d_(-1)`` the output of ``dpgrnn2``. So every
encoder block output leaves on a skip (``skip="output"``: en_convs.4 feeds de_convs.0,
en_convs.3 feeds de_convs.1, ..., en_convs.0 feeds de_convs.4) and every decoder block receives
one (``skip="input"``; a hook on a decoder block sees its output, the skip sum is its input).
``sfe`` (the parameter-free ERB-feature expansion), the two DPGRNNs (the bottleneck; dpgrnn1 reads
e4 directly, not through a skip) and ``mask`` (the enhanced spectrum, re/im channels) have none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Block = Literal["SFE", "Encoder", "DPGRNN", "Decoder", "Mask"]
Skip = Literal["input", "output"] | None


@dataclass(frozen=True)
class GtcrnLayer:
    """One probed GTCRN layer.

    Attributes
    ----------
    name : str
        Module path in ``GTCRN.named_modules()``.
    block : str
        "SFE", "Encoder", "DPGRNN", "Decoder" or "Mask".
    index : int
        Position within the block (encoder and decoder 0..4, DPGRNN 0..1, else 0).
    shape : tuple (C, F)
        One utterance's activation after time-mean pooling.
    skip : str or None
        "output" for an encoder block (its output is added into the decoder), "input" for a
        decoder block (its input holds a skip), else None.
    skip_partner : str or None
        The module at the other end of that skip.
    """

    name: str
    block: Block
    index: int
    shape: tuple[int, int]
    skip: Skip = None
    skip_partner: str | None = None


def _layers() -> tuple[GtcrnLayer, ...]:
    enc_f = (65, 33, 33, 33, 33)
    dec = [(16, 33), (16, 33), (16, 33), (16, 65), (2, 129)]
    out = [GtcrnLayer("sfe", "SFE", 0, (9, 129))]
    out += [
        GtcrnLayer(f"encoder.en_convs.{i}", "Encoder", i, (16, f), "output", f"decoder.de_convs.{4 - i}")
        for i, f in enumerate(enc_f)
    ]
    out += [GtcrnLayer(f"dpgrnn{i + 1}", "DPGRNN", i, (16, 33)) for i in range(2)]
    out += [
        GtcrnLayer(f"decoder.de_convs.{i}", "Decoder", i, shape, "input", f"encoder.en_convs.{4 - i}")
        for i, shape in enumerate(dec)
    ]
    out.append(GtcrnLayer("mask", "Mask", 0, (2, 257)))
    return tuple(out)


GTCRN_LAYERS: tuple[GtcrnLayer, ...] = _layers()
GTCRN_BLOCKS: tuple[str, ...] = ("SFE", "Encoder", "DPGRNN", "Decoder", "Mask")
