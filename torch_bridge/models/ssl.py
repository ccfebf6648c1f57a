"""Self-supervised speech encoders (torchaudio's builders): wav2vec 2.0, HuBERT and WavLM Base.

The architectures come from ``torchaudio.models`` (``wav2vec2_base``, ``hubert_base``,
``wavlm_base``); their weights come only from a local state-dict file (nothing is downloaded
here). To make one from torchaudio's pretrained bundles on a machine with network access::

    import torch, torchaudio
    model = torchaudio.pipelines.WAV2VEC2_BASE.get_model()      # or HUBERT_BASE, WAVLM_BASE
    torch.save(model.state_dict(), "wav2vec2_base.pt")

then ``load_model("wav2vec2_base", checkpoint="wav2vec2_base.pt")``.

Probe layers: the convolutional feature encoder's output (block "CNN", ``feature_extractor``,
``(T, 512)``) and the 12 transformer layers (block "Transformer", index 0..11, ``(T, 768)``),
the hidden states of the s3prl convention. Each is kept frame by frame: frames (20 ms apart)
are the samples of per-utterance CKA and hidden units the features. Windows are 30,700
samples (the span of a MUSE window, so models compared on one sweep hear the same audio),
``T = (30700 - 400) // 320 + 1 = 95`` frames.
"""
from __future__ import annotations

from pathlib import Path

import torch

from torch_bridge.models.spec import LayerSpec, ModelError, ModelSpec

__all__ = ["SSL_MODELS", "ssl_frames", "ssl_spec"]

SSL_MODELS = ("wav2vec2_base", "hubert_base", "wavlm_base")
SSL_WINDOW = 30700
CONV_WIDTH, HIDDEN, N_LAYERS = 512, 768, 12


def ssl_frames(n_samples: int) -> int:
    """Frames of the conv feature encoder (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2)."""
    t = n_samples
    for k, s in ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)):
        t = (t - k) // s + 1
    return t


def _build(name: str) -> torch.nn.Module:
    import torchaudio.models as M

    return getattr(M, name)()


def _read_state(path: Path, name: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"Could not read the {name} weights {str(path)!r} as a torch state dict "
                         f"({type(exc).__name__}: {exc}).") from exc
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"The {name} weights {str(path)!r} must hold a state dict (parameter name -> tensor); "
                         f"got a {type(obj).__name__}.")
    return obj


def _forward(model, batch: torch.Tensor):
    return model(batch.to(next(model.parameters()).device))


def ssl_spec(name: str, checkpoint=None, device: str = "cpu") -> ModelSpec:
    """The torchaudio architecture ``name`` with the weights in ``checkpoint`` (a state-dict
    file, loaded strictly), in eval mode on ``device``."""
    from torch_bridge.weights import sha256_file

    if name not in SSL_MODELS:
        raise ModelError(f"The SSL architectures are {list(SSL_MODELS)}; got {name!r}.")
    if checkpoint is None:
        raise ModelError(
            f"Model {name!r} needs --checkpoint: a local state-dict file of torchaudio.models.{name}() "
            "(nothing is downloaded here). Make one where the network is reachable with "
            f"torch.save(torchaudio.pipelines.{name.upper()}.get_model().state_dict(), '{name}.pt').")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"The {name} checkpoint must be an existing state-dict file; got {str(checkpoint)!r}.")
    model = _build(name)
    try:
        model.load_state_dict(_read_state(path, name), strict=True)
    except RuntimeError as exc:
        raise ModelError(f"The weights {str(path)!r} do not fit torchaudio.models.{name}(): {exc}") from exc
    t = ssl_frames(SSL_WINDOW)
    layers = (LayerSpec("feature_extractor", "CNN", 0, None, (t, CONV_WIDTH), "frames", select=0),)
    layers += tuple(LayerSpec(f"encoder.transformer.layers.{i}", "Transformer", i, None, (t, HIDDEN), "frames", select=0)
                    for i in range(N_LAYERS))
    return ModelSpec(
        name=name, model=model.to(device), layers=layers, forward_fn=_forward, window=SSL_WINDOW,
        cka_samples="frames (20 ms apart, T per window)", cka_features="hidden units (512 CNN, 768 transformer)",
        kind="ssl", info={"name": name, "checkpoint_sha256": sha256_file(path)},
        source={"checkpoint_path": str(path)},
    )
