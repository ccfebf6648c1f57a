"""The built-in models behind the model contract: MUSE, GTCRN and the project's CTC recognisers.

Each builder is ``build(variant, checkpoint, device) -> ModelSpec``; the registry
(:mod:`torch_bridge.models.registry`) maps names to them. The torchaudio SSL architectures
live in :mod:`torch_bridge.models.ssl`.
"""
from __future__ import annotations

import dataclasses

import torch

from torch_bridge.models.spec import LayerSpec, ModelError, ModelSpec

__all__ = ["ctc_spec", "gtcrn_spec", "muse_spec"]

ENHANCE_WORDS = ("time mean -> (C, F) per item: channels are the samples of per-utterance CKA",
                 "frequency positions")


# ----------------------------------------------------------------------------- MUSE
def _muse_enhance(model, waveform):
    from torch_bridge.muse_inference import enhance

    return enhance(model, waveform)


def muse_spec(variant: str | None = None, checkpoint=None, device: str = "cpu") -> ModelSpec:
    """MUSE with the official weights (``load_muse``'s resolution), its 24 ``norm1`` layers
    (``MUSE_LAYERS``), the STFT front end, 30,700-sample windows and the official energy
    normalisation of each whole mixture."""
    from torch_bridge.models.muse.layers import MUSE_LAYERS
    from torch_bridge.muse_inference import SEGMENT_SIZE, load_muse, muse_dump_forward, muse_energy_norm
    from torch_bridge.weights import resolve_muse_checkpoint, sha256_file

    path = resolve_muse_checkpoint(checkpoint)
    layers = tuple(LayerSpec(lay.name, lay.block, lay.index, lay.skip, lay.shape, "time_mean") for lay in MUSE_LAYERS)
    return ModelSpec(
        name="muse", model=load_muse(path).to(device), layers=layers, forward_fn=muse_dump_forward,
        window=SEGMENT_SIZE, cka_samples=ENHANCE_WORDS[0].replace("(C, F)", "(C, F) [C = 16/32/48 channels]"),
        cka_features="F frequency bins (128/64/32)", enhance_fn=_muse_enhance, prepare=muse_energy_norm,
        kind="enhancement", info={"name": "muse", "checkpoint_sha256": sha256_file(path)},
        source={"checkpoint_path": str(path)},
    )


# ----------------------------------------------------------------------------- GTCRN
#: fewest rows of a per-item matrix for per-utterance CKA: the debiased estimator needs n >= 4,
#: and the biased one is identically 1 for n = 2
MIN_CKA_SAMPLES = 4


def time_mean_bins_as_rows(t: torch.Tensor) -> torch.Tensor:
    """Capture pooling ``[B, C, T, F]`` -> mean over T, transposed -> ``(B, F, C)``: the
    frequency positions become the samples of per-utterance CKA (for 2-channel maps)."""
    if t.ndim != 4:
        raise ValueError(f"time_mean_bins_as_rows expects a [B, C, T, F] map; got shape {tuple(t.shape)}.")
    return t.mean(dim=2).transpose(1, 2)

#: GTCRN's dump batch (whole mixtures per forward pass): its GRUs step frame by frame, so most
#: of a one-item pass is per-step overhead that a batch shares; 8 measured fastest per item on
#: one CPU thread (bench/bench_gtcrn.py, results in bench/results/gtcrn.json)
GTCRN_DUMP_BATCH = 8


def _gtcrn_forward(model, batch: torch.Tensor):
    from torch_bridge.models.gtcrn.inference import gtcrn_stft

    p = next(model.parameters())
    return model(gtcrn_stft(batch.to(p.device)))


def _gtcrn_enhance(model, waveform):
    from torch_bridge.models.gtcrn.inference import gtcrn_enhance

    return gtcrn_enhance(model, waveform)


def gtcrn_spec(variant: str | None = None, checkpoint=None, device: str = "cpu") -> ModelSpec:
    """GTCRN (``vctk`` default or ``dns3``) with official weights, its 14 block outputs
    (``GTCRN_LAYERS``), whole utterances (no window: the official pipeline runs each
    utterance in one pass), the official STFT front end."""
    from torch_bridge.models.gtcrn.inference import load_gtcrn
    from torch_bridge.models.gtcrn.layers import GTCRN_LAYERS
    from torch_bridge.weights import GTCRN_SOURCES, resolve_checkpoint, sha256_file

    variant = variant or "vctk"
    if variant not in GTCRN_SOURCES:
        raise ModelError(f"GTCRN has the variants {sorted(GTCRN_SOURCES)}; got {variant!r}.")
    path = resolve_checkpoint(GTCRN_SOURCES[variant], checkpoint)  # sha256-verified, as load_gtcrn
    model = load_gtcrn(path, variant=variant, verify=False).to(device)
    layers = tuple(
        LayerSpec(lay.name, lay.block, lay.index, lay.skip, lay.shape, "time_mean", skip_partner=lay.skip_partner)
        if lay.shape[0] >= MIN_CKA_SAMPLES else
        LayerSpec(lay.name, lay.block, lay.index, lay.skip, lay.shape[::-1], time_mean_bins_as_rows,
                  skip_partner=lay.skip_partner)
        for lay in GTCRN_LAYERS)
    return ModelSpec(
        name=f"gtcrn:{variant}", model=model, layers=layers, forward_fn=_gtcrn_forward, window=None,
        cka_samples="time mean -> (C, F) per item, the C channels (9 in SFE, 16 elsewhere) are the samples of "
                    "per-utterance CKA; the two 2-channel layers (Decoder.4: the complex mask, Mask: the enhanced "
                    "spectrum, re/im) are stored transposed, (F, 2), with frequency positions as the samples, "
                    "since CKA over 2 samples is degenerate (always 1)",
        cka_features="frequency positions (129 ERB-compressed bands in SFE, 65/33 in the encoder) or, for the "
                     "two transposed layers, the re/im pair",
        enhance_fn=_gtcrn_enhance, kind="enhancement",
        info={"name": f"gtcrn:{variant}", "checkpoint_sha256": sha256_file(path)},
        source={"checkpoint_path": str(path)}, dump_batch_size=GTCRN_DUMP_BATCH,
    )


# ----------------------------------------------------------------------------- CTC recognisers
def _ctc_forward(model, batch: torch.Tensor):
    return model(batch.to(next(model.parameters()).device))


CTC_WINDOW = 30700  # the same audio span as a MUSE window, so frame counts stay fixed per item


def ctc_spec(variant: str | None = None, checkpoint=None, device: str = "cpu") -> ModelSpec:
    """A trained CTC recogniser (``jaxprobe train-asr``; ``checkpoint`` = its checkpoint.pt or
    folder, required) probed frame by frame: conv maps as ``(T, C*F)``, BLSTMs as ``(T, 2H)``,
    frames are the samples of per-utterance CKA; 30,700-sample windows."""
    from torch_bridge.models.asr import MODELS
    from torch_bridge.train_asr import load_recogniser
    from torch_bridge.weights import sha256_file

    if checkpoint is None:
        raise ModelError(f"Model 'ctc:{variant}' needs --checkpoint: the checkpoint.pt (or its folder) that "
                         "`jaxprobe train-asr` wrote. Nothing is downloaded for the project's recognisers.")
    model = load_recogniser(checkpoint).to(device)
    if model.config.model != variant:
        raise ModelError(f"The checkpoint {str(checkpoint)!r} holds a {model.config.model!r} recogniser; "
                         f"load it as 'ctc:{model.config.model}' (asked for 'ctc:{variant}', known: {list(MODELS)}).")
    rank: dict[str, int] = {}
    layers = []
    for lay in model.layers:
        block = "CNN" if lay.kind == "conv" else "BLSTM"
        rank[block] = rank.get(block, -1) + 1
        layers.append(LayerSpec(lay.name, block, rank[block], None, None, "frames", label=lay.label))
    from pathlib import Path

    path = Path(checkpoint)
    path = path / "checkpoint.pt" if path.is_dir() else path
    spec = ModelSpec(
        name=f"ctc:{variant}", model=model, layers=tuple(layers), forward_fn=_ctc_forward, window=CTC_WINDOW,
        cka_samples="frames (T at the layer's frame rate)", cka_features="hidden units (C*F for conv maps, 2H for BLSTMs)",
        kind="recognition", info={"name": f"ctc:{variant}", "checkpoint_sha256": sha256_file(path)},
        source={"checkpoint_path": str(path)},
    )
    from torch_bridge.models.spec import measure_shapes

    return dataclasses.replace(spec, layers=measure_shapes(spec, spec.layers))
