"""A pretrained speaker judge: the GE2E LSTM speaker encoder shipped in Resemblyzer's wheel.

Resemblyzer (PyPI ``resemblyzer`` 0.1.4, Apache-2.0, Resemble AI) ships the weights of a
generalised-end-to-end (GE2E, Wan et al. 2018) speaker encoder trained on LibriSpeech and VoxCeleb 1
and 2 (``resemblyzer/pretrained.pt``): 40-channel mel power spectrogram (25 ms Hann window, 10 ms hop,
16 kHz) -> 3-layer LSTM (256 units) -> linear 256 -> ReLU -> L2 norm, on 1.6 s partial utterances
(160 frames) cut at 1.3 partials per second (about 50 % overlap); an utterance's embedding is the
L2-normalised mean of its partials' embeddings.

:class:`GE2EJudge` loads those weights offline (from the installed package's folder; it does not
import the package, whose module pulls in librosa at import) and computes the same embeddings,
batched: the mel front end is torch (``torch.stft`` + a Slaney mel filter bank, librosa's defaults),
every partial of every utterance goes through the LSTM in one call. Volume normalisation to -30 dBFS
(increase only) is Resemblyzer's ``preprocess_wav``; its VAD trimming of long silences is not
applied: the study scores fixed windows, and trimming reconstructions of different layers
differently would change what is compared. ``tests/torch_bridge/test_ge2e.py`` checks the embeddings
against Resemblyzer's own ``VoiceEncoder.embed_utterance``.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS, PARTIAL_FRAMES = 400, 160, 40, 160
RATE, MIN_COVERAGE = 1.3, 0.75  # Resemblyzer's embed_utterance defaults
TARGET_DBFS = -30.0
INT16_MAX = 2 ** 15 - 1

INFO = {
    "name": "GE2E LSTM speaker encoder (Resemblyzer 0.1.4)",
    "source": "PyPI resemblyzer==0.1.4, resemblyzer/pretrained.pt (Resemble AI)",
    "training_data": "LibriSpeech and VoxCeleb 1 and 2 (real human speech; per Resemblyzer's documentation)",
    "licence": "Apache-2.0",
    "architecture": "40-mel (25 ms / 10 ms) -> 3 x LSTM 256 -> linear 256 -> ReLU -> L2; 1.6 s partials, "
                    "rate 1.3/s, mean of partials",
}


def default_weights() -> Path:
    """``pretrained.pt`` of the installed resemblyzer package (found without importing it)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The GE2E judge needs the 'resemblyzer' package (pip install resemblyzer==0.1.4), "
                                "which ships its weights; it is not installed.")
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.is_file():
        raise FileNotFoundError(f"The resemblyzer package has no weights file at {path}.")
    return path


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels):  # (B, 160, 40) -> (B, 256), L2-normalised
        _, (h, _) = self.lstm(mels)
        e = torch.relu(self.linear(h[-1]))
        return e / torch.linalg.vector_norm(e, dim=1, keepdim=True)


@functools.lru_cache(maxsize=1)
def _mel_filters() -> torch.Tensor:
    import torchaudio

    # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40) defaults: Slaney mel scale, Slaney (area) norm
    return torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE,
                                                 norm="slaney", mel_scale="slaney")  # (201, 40)


def mel_power(wav: torch.Tensor) -> torch.Tensor:
    """(B, L) waveforms -> (B, frames, 40) mel power spectrograms (librosa.feature.melspectrogram's
    defaults at n_fft 400, hop 160: centred frames, zero padding, periodic Hann window, power 2)."""
    spec = torch.stft(wav, N_FFT, HOP, window=torch.hann_window(N_FFT, periodic=True, dtype=wav.dtype),
                      center=True, pad_mode="constant", return_complex=True).abs() ** 2  # (B, 201, T)
    return torch.einsum("bft,fm->btm", spec, _mel_filters().to(wav.dtype))


def partial_slices(n_samples: int) -> list[tuple[int, int]]:
    """Frame ranges of the 1.6 s partials of an ``n_samples`` utterance (Resemblyzer's rule: a
    step of round(16000 / 1.3 / 160) frames, the last partial kept if it covers >= 75 %)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round(SAMPLE_RATE / RATE / HOP))
    steps = max(1, n_frames - PARTIAL_FRAMES + step + 1)
    out = [(i, i + PARTIAL_FRAMES) for i in range(0, steps, step)]
    start = out[-1][0] * HOP
    if (n_samples - start) / (PARTIAL_FRAMES * HOP) < MIN_COVERAGE and len(out) > 1:
        out = out[:-1]
    return out


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Scale up (never down) to -30 dBFS RMS, as Resemblyzer's preprocess_wav."""
    rms = np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2))
    change = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    return wav if change < 0 else wav * (10 ** (change / 20))


class GE2EJudge:
    """Embeds 16 kHz waveforms with the pretrained GE2E encoder (see the module docstring)."""

    info = INFO

    def __init__(self, weights: str | Path | None = None):
        path = Path(weights) if weights else default_weights()
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        self.model = _Encoder()
        self.model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
        self.model.eval()
        self.weights = str(path)

    @torch.no_grad()
    def embed(self, waveforms: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """(n, 256) float32 L2-normalised utterance embeddings of ``waveforms`` (1-D float arrays)."""
        mels, owner = [], []
        for i, w in enumerate(waveforms):
            w = np.asarray(w, np.float32)
            if w.ndim != 1 or w.size < N_FFT or not np.isfinite(w).all() or not np.any(w):
                raise ValueError(f"GE2EJudge.embed: waveform {i} must be a finite, non-silent 1-D array of at least "
                                 f"{N_FFT} samples; got shape {w.shape}"
                                 + (", all zeros" if w.size and not np.any(w) else "") + ".")
            sl = partial_slices(w.size)
            w = normalize_volume(w).astype(np.float32)
            w = np.pad(w, (0, max(0, sl[-1][1] * HOP - w.size)))
            m = mel_power(torch.from_numpy(w)[None])[0]
            mels += [m[a:b] for a, b in sl]
            owner += [i] * len(sl)
        x = torch.stack(mels)
        parts = torch.cat([self.model(x[s:s + batch_size]) for s in range(0, x.shape[0], batch_size)]).numpy()
        owner = np.asarray(owner)
        out = np.stack([parts[owner == i].mean(axis=0) for i in range(len(waveforms))])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
