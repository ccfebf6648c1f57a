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
    "Captured": "torch_bridge.hooks",
    "capture": "torch_bridge.hooks",
    "forward_batches": "torch_bridge.hooks",
    "to_jax": "torch_bridge.hooks",
    # the model contract
    "LayerSpec": "torch_bridge.models.spec",
    "ModelError": "torch_bridge.models.spec",
    "ModelSpec": "torch_bridge.models.spec",
    "available_models": "torch_bridge.models.registry",
    "load_model": "torch_bridge.models.registry",
    # MUSE
    "MUSE": "torch_bridge.models.muse.model",
    "MUSE_BLOCKS": "torch_bridge.models.muse.layers",
    "MUSE_LAYERS": "torch_bridge.models.muse.layers",
    "MuseLayer": "torch_bridge.models.muse.layers",
    "MuseSegments": "torch_bridge.muse_inference",
    "enhance": "torch_bridge.muse_inference",
    "load_muse": "torch_bridge.muse_inference",
    "muse_forward_inputs": "torch_bridge.muse_inference",
    "muse_join": "torch_bridge.muse_inference",
    "muse_layers_by_block": "torch_bridge.models.muse.layers",
    "muse_normalise": "torch_bridge.muse_inference",
    "muse_reconstruct": "torch_bridge.muse_inference",
    "muse_segments": "torch_bridge.muse_inference",
    "resolve_muse_checkpoint": "torch_bridge.weights",
    # GTCRN
    "GTCRN": "torch_bridge.models.gtcrn",
    "GTCRN_BLOCKS": "torch_bridge.models.gtcrn",
    "GTCRN_LAYERS": "torch_bridge.models.gtcrn",
    "GtcrnLayer": "torch_bridge.models.gtcrn",
    "gtcrn_enhance": "torch_bridge.models.gtcrn",
    "gtcrn_istft": "torch_bridge.models.gtcrn",
    "gtcrn_stft": "torch_bridge.models.gtcrn",
    "load_gtcrn": "torch_bridge.models.gtcrn",
    "resolve_checkpoint": "torch_bridge.weights",
    # activation store
    "ActivationStore": "torch_bridge.store",
    "Plan": "torch_bridge.store",
    "StoreIndex": "torch_bridge.store",
    "StoreWriter": "torch_bridge.store",
    "open_store": "torch_bridge.store",
    # dump
    "dump_snr_sweep": "torch_bridge.dump",
    "run_dump": "torch_bridge.dump",
    # mixing
    "Clip": "torch_bridge.mixing",
    "DEFAULT_SNRS": "torch_bridge.mixing",
    "MUSE_CHUNK": "torch_bridge.mixing",
    "Mixture": "torch_bridge.mixing",
    "Reverb": "torch_bridge.mixing",
    "SNRSweep": "torch_bridge.mixing",
    "content_id": "torch_bridge.mixing",
    "item_seed": "torch_bridge.mixing",
    "loudness": "torch_bridge.mixing",
    "measure_snr": "torch_bridge.mixing",
    "mix_at_snr": "torch_bridge.mixing",
    "rir_at_c50": "torch_bridge.degrade",
    "c50": "torch_bridge.degrade",
    "degraded_mixture": "torch_bridge.degrade",
    "degradation_sweep": "torch_bridge.degrade",
    "snr_sweep": "torch_bridge.mixing",
    "synthetic_rir": "torch_bridge.mixing",
    "window_starts": "torch_bridge.mixing",
    "windows": "torch_bridge.mixing",
    # data
    "AudioError": "torch_bridge.data",
    "AudioFolder": "torch_bridge.data",
    "AudioRecord": "torch_bridge.data",
    "Demand": "torch_bridge.data",
    "LibriSpeech": "torch_bridge.data",
    "Musan": "torch_bridge.data",
    "VoiceBank": "torch_bridge.data",
    "read_audio": "torch_bridge.data",
    # corpus
    "Corpus": "torch_bridge.corpus",
    "build_corpus": "torch_bridge.corpus",
    "load_corpus": "torch_bridge.corpus",
    # ASR recognisers and their training
    "ASR_LAYERS": "torch_bridge.models.asr",
    "AsrConfig": "torch_bridge.models.asr",
    "AsrLayer": "torch_bridge.models.asr",
    "CTCRecogniser": "torch_bridge.models.asr",
    "TrainConfig": "torch_bridge.train_asr",
    "add_noise": "torch_bridge.train_asr",
    "asr_activations": "torch_bridge.models.asr",
    "asr_dump_spec": "torch_bridge.models.asr",
    "asr_layers": "torch_bridge.models.asr",
    "evaluate_asr": "torch_bridge.train_asr",
    "greedy_decode": "torch_bridge.models.asr",
    "load_recogniser": "torch_bridge.train_asr",
    "normalise_text": "torch_bridge.models.asr",
    "train_on_corpus": "torch_bridge.train_asr",
    "train_recogniser": "torch_bridge.train_asr",
    # speaker embeddings and verification
    "SpeakerConfig": "torch_bridge.models.speaker",
    "XVector": "torch_bridge.models.speaker",
    "cosine_scores": "torch_bridge.verification",
    "eer": "torch_bridge.verification",
    "load_speaker_model": "torch_bridge.models.speaker",
    "speaker_eer": "torch_bridge.models.speaker",
    "speaker_embeddings": "torch_bridge.models.speaker",
    "train_speaker_model": "torch_bridge.models.speaker",
    "train_speaker_on_corpus": "torch_bridge.models.speaker",
    "verification_trials": "torch_bridge.verification",
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
