"""A small x-vector-like speaker embedding model and verification EER.

Model (:class:`XVector`, after Snyder et al.'s x-vectors, reduced for a CPU): 40-dim log-mel
(25 ms / 10 ms, per-utterance mean removed) -> five TDNN layers (1-D convolutions with
kernel/dilation 5/1, 3/2, 3/3, 1/1, 1/1; ReLU and batch norm) -> statistics pooling (mean
and standard deviation over the valid frames) -> a linear "segment" layer whose output is
the embedding -> ReLU, batch norm -> speaker logits. Trained with cross-entropy on random
crops of the training speakers' utterances (:func:`train_speaker_model`).

Verification (``torch_bridge.verification``, torch-free, re-exported here):
:func:`verification_trials` forms same/different-speaker pairs, :func:`cosine_scores` scores
them, and :func:`eer` reads the equal error rate off the ROC curve by linear interpolation
between the two operating points where the miss rate crosses the false-alarm rate.
:func:`speaker_eer` does all three for a list of waveforms.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from torch_bridge.verification import cosine_scores, eer, verification_trials  # noqa: F401 (torch-free; re-exported)

SAMPLE_RATE = 16000
_MIN_SAMPLES = 400


@dataclasses.dataclass(frozen=True)
class SpeakerConfig:
    """Sizes of :class:`XVector`: ``n_mels`` input bins, ``channels`` TDNN width,
    ``stats_channels`` width of the last frame layer, ``embed_dim`` embedding size."""

    n_speakers: int
    n_mels: int = 40
    channels: int = 128
    stats_channels: int = 256
    embed_dim: int = 128

    def __post_init__(self):
        for name in ("n_speakers", "n_mels", "channels", "stats_channels", "embed_dim"):
            v = getattr(self, name)
            low = 2 if name == "n_speakers" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"The '{name}' parameter of SpeakerConfig must be an int in [{low}, inf). Got {v!r} instead.")


class XVector(nn.Module):
    """TDNN + statistics pooling speaker model.

    ``embed(waveforms (B, n), lengths (B,)) -> (B, embed_dim)``;
    ``forward(waveforms, lengths) -> logits (B, n_speakers)``.
    """

    def __init__(self, config: SpeakerConfig, speakers: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.speakers = list(speakers) if speakers is not None else [str(i) for i in range(config.n_speakers)]
        if len(self.speakers) != config.n_speakers:
            raise ValueError(f"XVector got {len(self.speakers)} speaker names for n_speakers={config.n_speakers}.")
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=512, win_length=400,
                                                        hop_length=160, n_mels=config.n_mels)
        c, s = config.channels, config.stats_channels
        spec = [(config.n_mels, c, 5, 1), (c, c, 3, 2), (c, c, 3, 3), (c, c, 1, 1), (c, s, 1, 1)]
        self.frames = nn.ModuleList(
            nn.Sequential(nn.Conv1d(i, o, k, dilation=d, padding=d * (k - 1) // 2), nn.ReLU(), nn.BatchNorm1d(o))
            for i, o, k, d in spec)
        self.segment = nn.Linear(2 * s, config.embed_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(config.embed_dim),
                                  nn.Linear(config.embed_dim, config.n_speakers))

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n) -> log-mel (B, n_mels, T) with the per-utterance mean removed, and frame counts."""
        x = torch.log(self.mel(waveforms) + 1e-6)
        n_frames = torch.div(lengths, 160, rounding_mode="floor") + 1
        mask = (torch.arange(x.shape[-1])[None, :] < n_frames[:, None]).to(x.dtype)[:, None, :]
        mean = (x * mask).sum(-1, keepdim=True) / n_frames[:, None, None]
        return (x - mean) * mask, n_frames

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        waveforms, lengths = _check_batch(waveforms, lengths)
        x, n_frames = self.features(waveforms, lengths)
        for layer in self.frames:
            x = layer(x)
        mask = (torch.arange(x.shape[-1])[None, :] < n_frames[:, None]).to(x.dtype)[:, None, :]
        n = n_frames[:, None].to(x.dtype)
        mean = (x * mask).sum(-1) / n
        var = (((x - mean[..., None]) ** 2) * mask).sum(-1) / n
        return self.segment(torch.cat([mean, var.clamp_min(1e-6).sqrt()], dim=1))

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(waveforms, lengths))


def _check_batch(waveforms, lengths) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(waveforms)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"Expected float waveforms of shape (batch, samples) at 16 kHz; got shape {tuple(x.shape)} "
                         f"and dtype {x.dtype}.")
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if lengths.shape != (x.shape[0],) or int(lengths.min()) < _MIN_SAMPLES or int(lengths.max()) > x.shape[1]:
        raise ValueError(f"lengths must hold {x.shape[0]} sample counts in [{_MIN_SAMPLES}, {x.shape[1]}]; got {lengths.tolist()}.")
    if not torch.isfinite(x).all():
        raise ValueError("Waveforms contain NaN or inf samples; repair or drop them.")
    return x.float(), lengths


@torch.no_grad()
def speaker_embeddings(model: XVector, waveforms: Sequence[np.ndarray], *, batch_size: int = 16) -> np.ndarray:
    """Embeddings (n, embed_dim) of 1-D 16 kHz waveforms (model in eval mode, whole utterances)."""
    was = model.training
    model.eval()
    out = np.zeros((len(waveforms), model.config.embed_dim), dtype=np.float32)
    order = np.argsort([len(w) for w in waveforms])
    for s in range(0, len(order), batch_size):
        ids = order[s:s + batch_size]
        lengths = torch.tensor([len(waveforms[i]) for i in ids])
        x = torch.zeros(len(ids), int(lengths.max()))
        for r, i in enumerate(ids):
            x[r, : len(waveforms[i])] = torch.as_tensor(np.asarray(waveforms[i], dtype=np.float32))
        out[ids] = model.embed(x, lengths).numpy()
    model.train(was)
    return out


def speaker_eer(model: XVector, waveforms: Sequence[np.ndarray], speakers: Sequence[str], *,
                n_per_class: int | None = None, seed: int = 0) -> float:
    """EER of cosine-scored trials among ``waveforms`` labelled by ``speakers``."""
    if len(waveforms) != len(speakers):
        raise ValueError(f"speaker_eer got {len(waveforms)} waveforms and {len(speakers)} speaker labels.")
    pairs, labels = verification_trials(speakers, n_per_class=n_per_class, seed=seed)
    return eer(cosine_scores(speaker_embeddings(model, waveforms), pairs), labels)


# ----------------------------------------------------------------------------- training
def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if x.shape[0] <= n:
        return np.pad(x, (0, n - x.shape[0]))
    start = int(rng.integers(0, x.shape[0] - n + 1))
    return x[start:start + n]


def train_speaker_model(
    utterances: Sequence,
    *,
    steps: int = 300,
    batch_size: int = 32,
    crop_seconds: float = 2.0,
    lr: float = 2e-3,
    seed: int = 0,
    config: SpeakerConfig | None = None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> XVector:
    """Train an :class:`XVector` on records with ``speaker`` and ``waveform``.

    Each step draws ``batch_size`` utterances and a random ``crop_seconds`` crop of each,
    all from a ``numpy`` generator seeded by ``(seed, step)``. When ``out`` is a file path
    that exists the model is loaded from it instead (delete it to retrain); otherwise the
    trained model is saved there (written to a temporary file, then renamed).
    """
    if out is not None and Path(out).is_file():
        return load_speaker_model(out)
    say = log or (lambda s: None)
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 2:
        raise ValueError(f"train_speaker_model needs utterances of at least 2 speakers; got {speakers}.")
    config = config or SpeakerConfig(n_speakers=len(speakers))
    if config.n_speakers != len(speakers):
        raise ValueError(f"config.n_speakers={config.n_speakers} but the utterances have {len(speakers)} speakers.")
    label = {s: k for k, s in enumerate(speakers)}
    y_all = np.array([label[u.speaker] for u in utterances])
    n = int(crop_seconds * SAMPLE_RATE)
    torch.manual_seed(seed)
    model = XVector(config, speakers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    t0 = time.monotonic()
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        idx = rng.choice(len(utterances), batch_size, replace=len(utterances) < batch_size)
        x = torch.from_numpy(np.stack([_crop(utterances[i].waveform, n, rng) for i in idx]).astype(np.float32))
        loss = F.cross_entropy(model(x), torch.from_numpy(y_all[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 50 == 0:
            say(f"speaker step {step + 1}/{steps}: loss {float(loss.detach()):.3f} ({time.monotonic() - t0:.0f} s)")
    model.eval()
    if out is not None:
        save_speaker_model(model, out)
    return model


def save_speaker_model(model: XVector, path: str | os.PathLike) -> None:
    from ..train_asr import save_checkpoint

    save_checkpoint(path, {"config": dataclasses.asdict(model.config), "speakers": model.speakers,
                           "model": model.state_dict()})


def load_speaker_model(path: str | os.PathLike) -> XVector:
    """An :class:`XVector` saved by :func:`train_speaker_model`, in eval mode."""
    state: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = XVector(SpeakerConfig(**state["config"]), state["speakers"])
    model.load_state_dict(state["model"])
    return model.eval()


def train_speaker_on_corpus(out_dir: str | os.PathLike, *, size: str = "default", steps: int = 300,
                            seed: int = 0, cache_dir=None, n_per_class: int | None = None,
                            log: Callable[[str], None] | None = None, **kwargs) -> tuple[XVector, dict]:
    """Train (or reuse) the corpus speaker model and measure its clean-speech EER.

    Trains on the 'train' split (the corpus' training voices) and writes
    ``out_dir/xvector.pt`` and ``out_dir/metrics.json`` with the EER of all cosine-scored
    pairs on 'dev' (the same voices, unseen sentences) and on 'test' (unseen voices and
    sentences; only two of them in the default corpus, so that figure is coarse) and on
    'real' (the corpus' human studio prompts: unseen speakers, five languages).
    A saved ``xvector.pt`` is reused (delete it to retrain).
    """
    import json

    from ..corpus import load_corpus

    corpus = load_corpus(cache_dir, size=size)
    out_dir = Path(out_dir)
    t0 = time.monotonic()
    model = train_speaker_model(corpus.split("train"), steps=steps, seed=seed, out=out_dir / "xvector.pt",
                                log=log, **kwargs)
    metrics: dict[str, Any] = {"steps": steps, "train_seconds": round(time.monotonic() - t0, 1),
                               "speakers": model.speakers}
    for split in ("dev", "test", "real"):
        utts = corpus.real_speech if split == "real" else corpus.split(split)
        metrics[f"eer_{split}"] = speaker_eer(model, [u.waveform for u in utts], [u.speaker for u in utts],
                                              n_per_class=n_per_class, seed=seed)
        metrics[f"n_{split}"] = len(utts)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return model, metrics
