"""Two CTC character recognisers (the ASR paper, 3.1): VGG-LSTM and pure-LSTM, with their layer map.

Contract (one for both models, s3prl-style)::

    model(waveforms (B, n) float32 16 kHz, lengths (B,) samples)
        -> AsrOutput(log_probs (B, T', V), lengths (B,) frames at the output rate)

Front end (:class:`LogMelFrontEnd`): 80-dim log-mel (torchaudio ``MelSpectrogram``, 25 ms
window, ``hop_length`` samples), normalised per mel bin by fixed statistics stored in the
model (``feat_mean``/``feat_std``, set from training data by :func:`fit_normaliser`), then
deltas and accelerations (torchaudio ``ComputeDeltas``) stacked as 3 channels:
``(B, 3, T, 80)``. ``model.log_mel(waveforms)`` gives the un-normalised log-mel ``(B, T, 80)``
that a probe reconstructs (the recogniser's input before its affine normalisation).

VGG-LSTM: conv 3x3 (channels[0]) -> ReLU -> conv (channels[1]) -> ReLU -> maxpool 2x2 ->
conv (channels[2]) -> ReLU -> conv (channels[3]) -> ReLU -> maxpool 2x2 -> LayerNorm over
the flattened (C*20) frame -> 5 BLSTM -> linear. Output rate T/4. The LayerNorm (not in the
paper's description) is there because the un-normalised conv output grew to a standard
deviation of ~14 during training, saturated the first LSTM's gates, and the model stayed on
the CTC plateau (loss ~2.45 after 2000 steps, where pure-LSTM reached 0.4). The
LayerNorm alone did not get it off the plateau at Adam lr 3e-3; lr 1e-3 did (the
training default for this model, ``train_asr.DEFAULT_LR``).

pure-LSTM: 5 BLSTM; after layers 2, 3 and 4 the frame rate is halved by concatenating
adjacent frame pairs (pyramidal BLSTM, as in Listen-Attend-Spell). Output rate T/8.

Frame rates. Character CTC needs at least one output frame per character (two between
repeated ones); this corpus is spoken at about 17 characters per second. The defaults
therefore use a 10 ms hop for VGG-LSTM (T/4: 40 ms per output frame) and a 5 ms hop for
pure-LSTM (T/8: 40 ms), so both emit 25 frames per second. The layer map records the hop.

Layer map (:data:`ASR_LAYERS`): each captured layer is the output of one named module,
``cnnK`` = conv + ReLU (a ``[B, C, T, F]`` map, captured frame level as ``(B, T, C*F)`` with
``pooling="frames"``), ``blstmK`` = one bidirectional LSTM layer ``(B, T, 2H)`` *before* any
downsampling that follows it. ``r`` is the layer's time-downsampling factor relative to the
log-mel frames: a layer with T_k frames covers ``r`` input frames each (``T_k = ceil(T / r)``
for pooling, pairs are zero-padded at an odd end).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

SAMPLE_RATE = 16000
N_MELS = 80
WIN_LENGTH = 400  # 25 ms
N_FFT = 512
LOG_FLOOR = 1e-6

#: CTC vocabulary: index 0 is the blank, then space, apostrophe and a-z.
VOCAB: tuple[str, ...] = ("<blank>", " ", "'") + tuple("abcdefghijklmnopqrstuvwxyz")
BLANK = 0
_CHAR_INDEX = {c: i for i, c in enumerate(VOCAB) if i != BLANK}

ModelName = Literal["vgg_lstm", "lstm"]
MODELS: tuple[str, ...] = ("vgg_lstm", "lstm")


# ----------------------------------------------------------------------------- text
def normalise_text(text: str) -> str:
    """Lower case, keep a-z, space and apostrophe, collapse whitespace (what the models spell)."""
    t = text.lower().replace("-", " ")
    t = re.sub(r"[^a-z' ]+", "", t)
    return re.sub(r"\s+", " ", t).strip()


def encode_text(text: str) -> list[int]:
    """Token ids of ``normalise_text(text)``; ValueError when nothing spellable is left."""
    t = normalise_text(text)
    if not t:
        raise ValueError(f"Transcript {text!r} has no characters of the vocabulary (a-z, space, '); "
                         "it cannot be a CTC target.")
    return [_CHAR_INDEX[c] for c in t]


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Best-path CTC decoding: argmax per frame, merge repeats, drop blanks.

    log_probs : tensor of shape (B, T, V); lengths : (B,) valid frames. Returns B strings.
    """
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])].tolist()
        chars, prev = [], BLANK
        for s in seq:
            if s != prev and s != BLANK:
                chars.append(VOCAB[s])
            prev = s
        out.append(re.sub(r"\s+", " ", "".join(chars)).strip())
    return out


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class AsrConfig:
    """Sizes of a recogniser. Defaults are small enough to train on a 2-core CPU in minutes;
    :func:`paper_config` gives the paper-like sizes.

    model : "vgg_lstm" or "lstm".
    channels : the four conv widths (VGG-LSTM only; the paper: 64, 64, 128, 128).
    hidden : LSTM units per direction (each BLSTM layer outputs 2*hidden).
    hop_length : log-mel hop in samples (None: 160 for vgg_lstm, 80 for lstm; see module doc).
    """

    model: str = "vgg_lstm"
    channels: tuple[int, int, int, int] = (8, 8, 16, 16)
    hidden: int = 64
    hop_length: int | None = None
    n_layers: int = 5

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"The 'model' parameter of AsrConfig must be one of {MODELS}. Got {self.model!r} instead.")
        ch = tuple(self.channels)
        if len(ch) != 4 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in ch):
            raise ValueError(f"The 'channels' parameter of AsrConfig must be 4 positive ints. Got {self.channels!r} instead.")
        object.__setattr__(self, "channels", ch)
        for name in ("hidden",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"The '{name}' parameter of AsrConfig must be an int in [1, inf). Got {v!r} instead.")
        if self.n_layers != 5:
            raise ValueError(f"The 'n_layers' parameter of AsrConfig must be 5 (the paper's models). Got {self.n_layers!r} instead.")
        if self.hop_length is None:
            object.__setattr__(self, "hop_length", 160 if self.model == "vgg_lstm" else 80)
        if isinstance(self.hop_length, bool) or not isinstance(self.hop_length, int) or not 1 <= self.hop_length <= WIN_LENGTH:
            raise ValueError(f"The 'hop_length' parameter of AsrConfig must be an int in [1, {WIN_LENGTH}]. "
                             f"Got {self.hop_length!r} instead.")

    def mel_settings(self) -> dict:
        """The log-mel front end's settings, for inverting it (mel -> linear -> Griffin-Lim):
        torchaudio ``MelSpectrogram`` defaults otherwise (HTK mel scale, no filter norm,
        f_min 0, f_max 8000, Hann window, ``center=True``, reflect padding); features are
        ``log(power + log_floor)``."""
        return {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "win_length": WIN_LENGTH,
                "hop_length": self.hop_length, "n_mels": N_MELS, "f_min": 0.0, "f_max": SAMPLE_RATE / 2,
                "power": 2.0, "mel_scale": "htk", "norm": None, "log": "natural", "log_floor": LOG_FLOOR}

    def to_dict(self) -> dict:
        return {"model": self.model, "channels": list(self.channels), "hidden": self.hidden,
                "hop_length": self.hop_length, "n_layers": self.n_layers}

    @classmethod
    def from_dict(cls, d: dict) -> "AsrConfig":
        return cls(model=d["model"], channels=tuple(d["channels"]), hidden=d["hidden"],
                   hop_length=d["hop_length"], n_layers=d.get("n_layers", 5))


def paper_config(model: str) -> AsrConfig:
    """Paper-like sizes (conv 64/64/128/128, 320 LSTM units per direction): a GPU job."""
    return AsrConfig(model=model, channels=(64, 64, 128, 128), hidden=320)


# ----------------------------------------------------------------------------- layer map
@dataclasses.dataclass(frozen=True)
class AsrLayer:
    """One probed layer: ``name`` is the module path for :func:`torch_bridge.capture`.

    label : the paper's name (cnn1, blstm3, ...).
    r : time-downsampling factor relative to the log-mel frames.
    width : features per frame with ``pooling="frames"`` (C*F for conv maps, 2H for BLSTMs).
    """

    label: str
    name: str
    r: int
    width: int
    kind: str  # "conv" or "blstm"

    def frames(self, n_mel_frames: int) -> int:
        """Frames this layer emits for an input of ``n_mel_frames`` log-mel frames."""
        return -(-n_mel_frames // self.r)


def asr_layers(config: AsrConfig) -> tuple[AsrLayer, ...]:
    """The layer map of a recogniser of these sizes (see the module docstring)."""
    h2 = 2 * config.hidden
    if config.model == "vgg_lstm":
        c = config.channels
        convs = (AsrLayer("cnn1", "cnn1", 1, c[0] * N_MELS, "conv"),
                 AsrLayer("cnn2", "cnn2", 1, c[1] * N_MELS, "conv"),
                 AsrLayer("cnn4", "cnn4", 2, c[3] * (N_MELS // 2), "conv"))
        return convs + tuple(AsrLayer(f"blstm{k}", f"blstm{k}", 4, h2, "blstm") for k in range(1, 6))
    rs = (1, 1, 2, 4, 8)
    return tuple(AsrLayer(f"blstm{k}", f"blstm{k}", rs[k - 1], h2, "blstm") for k in range(1, 6))


#: Layer maps of the default-size models, keyed by model name.
ASR_LAYERS: dict[str, tuple[AsrLayer, ...]] = {m: asr_layers(AsrConfig(model=m)) for m in MODELS}


# ----------------------------------------------------------------------------- modules
class LogMelFrontEnd(nn.Module):
    """waveforms (B, n) -> features (B, 3, T, 80): normalised log-mel, deltas, accelerations."""

    def __init__(self, hop_length: int):
        super().__init__()
        self.hop_length = hop_length
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=hop_length,
            n_mels=N_MELS, power=2.0, center=True)
        self.deltas = torchaudio.transforms.ComputeDeltas(win_length=5)
        self.register_buffer("feat_mean", torch.zeros(N_MELS))
        self.register_buffer("feat_std", torch.ones(N_MELS))

    def n_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Log-mel frames for waveforms of ``lengths`` samples (``center=True``)."""
        return torch.div(lengths, self.hop_length, rounding_mode="floor") + 1

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, n) -> un-normalised natural-log mel power (B, T, 80)."""
        return torch.log(self.mel(waveforms) + LOG_FLOOR).transpose(1, 2)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = (self.log_mel(waveforms) - self.feat_mean) / self.feat_std  # (B, T, 80)
        x = x.transpose(1, 2)  # (B, 80, T): deltas run along the last axis
        d1 = self.deltas(x)
        d2 = self.deltas(d1)
        return torch.stack([x, d1, d2], dim=1).transpose(2, 3)  # (B, 3, T, 80)


class ConvReLU(nn.Module):
    """3x3 convolution + ReLU on a ``[B, C, T, F]`` map (one probed cnn layer).

    He (Kaiming-normal, fan-in, ReLU gain) initialisation, zero bias: with torch's default
    conv init the activation scale shrank about 10x over the four layers (std 0.23 -> 0.02 on
    corpus speech) and the VGG-LSTM sat on the CTC blank plateau for over 1000 steps.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class BLSTM(nn.Module):
    """One bidirectional LSTM layer over zero-padded frames.

    ``forward(x (B, T, D), lengths (B,))`` returns ``(B, T, 2H)`` (forward direction first),
    zero past each length. The backward direction reads each sequence reversed *within its
    length*, so padding never leaks into valid frames. (Two unidirectional LSTMs instead of
    a packed sequence: packed-sequence backward passes are over 10x slower on CPU.)
    """

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.fwd = nn.LSTM(d_in, hidden, batch_first=True)
        self.bwd = nn.LSTM(d_in, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        steps = torch.arange(t, device=x.device)[None, :]
        lens = lengths.to(x.device)[:, None]
        valid = steps < lens  # (B, T)
        rev = torch.where(valid, lens - 1 - steps, steps)  # per-length reversal, identity on padding
        idx = rev[:, :, None].expand(-1, -1, x.shape[2])
        h_f, _ = self.fwd(x)
        h_b, _ = self.bwd(torch.gather(x, 1, idx))
        h_b = torch.gather(h_b, 1, rev[:, :, None].expand(-1, -1, h_b.shape[2]))
        return torch.cat([h_f, h_b], dim=-1) * valid[:, :, None].to(x.dtype)


class AsrOutput(NamedTuple):
    log_probs: torch.Tensor  # (B, T', V)
    lengths: torch.Tensor  # (B,)


def _halve(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate adjacent frame pairs: (B, T, D) -> (B, ceil(T/2), 2D); an odd end is zero-padded."""
    if x.shape[1] % 2:
        x = F.pad(x, (0, 0, 0, 1))
    b, t, d = x.shape
    return x.reshape(b, t // 2, 2 * d), torch.div(lengths + 1, 2, rounding_mode="floor")


def _pool_len(lengths: torch.Tensor) -> torch.Tensor:
    return torch.div(lengths + 1, 2, rounding_mode="floor")


class CTCRecogniser(nn.Module):
    """VGG-LSTM or pure-LSTM character CTC recogniser (see the module docstring).

    Parameters
    ----------
    config : AsrConfig
    """

    def __init__(self, config: AsrConfig | None = None):
        super().__init__()
        self.config = config = config or AsrConfig()
        self.frontend = LogMelFrontEnd(config.hop_length)
        h = config.hidden
        if config.model == "vgg_lstm":
            c = config.channels
            self.cnn1 = ConvReLU(3, c[0])
            self.cnn2 = ConvReLU(c[0], c[1])
            self.pool1 = nn.MaxPool2d(2, ceil_mode=True)
            self.cnn3 = ConvReLU(c[1], c[2])
            self.cnn4 = ConvReLU(c[2], c[3])
            self.pool2 = nn.MaxPool2d(2, ceil_mode=True)
            d_in = c[3] * (N_MELS // 4)
            self.conv_norm = nn.LayerNorm(d_in)
            dims = [d_in] + [2 * h] * 4
        else:
            d_in = 3 * N_MELS
            # layers 3, 4, 5 read concatenated frame pairs
            dims = [d_in, 2 * h, 4 * h, 4 * h, 4 * h]
        for k in range(5):
            setattr(self, f"blstm{k + 1}", BLSTM(dims[k], h))
        self.out = nn.Linear(2 * h, len(VOCAB))
        self.layers = asr_layers(config)

    @property
    def downsampling(self) -> int:
        """Output frames per log-mel frame: 4 (VGG-LSTM) or 8 (pure-LSTM)."""
        return 4 if self.config.model == "vgg_lstm" else 8

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The un-normalised log-mel the recogniser reads: (B, n) -> (B, T, 80)."""
        return self.frontend.log_mel(_check_waves(waveforms))

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> AsrOutput:
        waveforms = _check_waves(waveforms)
        b, n = waveforms.shape
        if lengths is None:
            lengths = torch.full((b,), n, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if lengths.shape != (b,) or int(lengths.min()) < WIN_LENGTH or int(lengths.max()) > n:
            raise ValueError(f"The 'lengths' parameter of CTCRecogniser.forward must hold {b} sample counts in "
                             f"[{WIN_LENGTH}, {n}]; got {lengths.tolist()}.")
        x = self.frontend(waveforms)  # (B, 3, T, 80)
        t_len = self.frontend.n_frames(lengths)
        if self.config.model == "vgg_lstm":
            x = self.pool1(self.cnn2(self.cnn1(x)))
            x = self.pool2(self.cnn4(self.cnn3(x)))  # (B, C, T/4, 20)
            t_len = _pool_len(_pool_len(t_len))
            x = self.conv_norm(x.permute(0, 2, 1, 3).flatten(2))  # (B, T/4, C*20)
            for k in range(1, 6):
                x = getattr(self, f"blstm{k}")(x, t_len)
        else:
            x = x.permute(0, 2, 1, 3).flatten(2)  # (B, T, 3*80), channel-major
            for k in range(1, 6):
                x = getattr(self, f"blstm{k}")(x, t_len)
                if k in (2, 3, 4):
                    x, t_len = _halve(x, t_len)
        return AsrOutput(F.log_softmax(self.out(x), dim=-1), t_len)

    @torch.no_grad()
    def transcribe(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> list[str]:
        """Greedy CTC transcripts of a batch."""
        out = self(waveforms, lengths)
        return greedy_decode(out.log_probs, out.lengths)


def _check_waves(waveforms) -> torch.Tensor:
    x = torch.as_tensor(waveforms)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"Expected float waveforms of shape (batch, samples) at 16 kHz; got shape "
                         f"{tuple(x.shape)} and dtype {x.dtype}. Stack mono waveforms, zero-padded, into a 2-D tensor.")
    if x.shape[1] < WIN_LENGTH:
        raise ValueError(f"Waveforms must be at least {WIN_LENGTH} samples (25 ms) long; got {x.shape[1]}.")
    if not torch.isfinite(x).all():
        raise ValueError("Waveforms contain NaN or inf samples; repair or drop them.")
    return x.float()


@torch.no_grad()
def fit_normaliser(model: CTCRecogniser, waveforms: list) -> None:
    """Set the model's per-bin log-mel mean/std from a list of 1-D waveforms (training data)."""
    if not waveforms:
        raise ValueError("fit_normaliser needs at least one waveform.")
    total, sq, count = torch.zeros(N_MELS, dtype=torch.float64), torch.zeros(N_MELS, dtype=torch.float64), 0
    for w in waveforms:
        m = model.log_mel(torch.as_tensor(w)[None])[0].double()
        total += m.sum(0)
        sq += (m * m).sum(0)
        count += m.shape[0]
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(1e-8).sqrt()
    model.frontend.feat_mean.copy_(mean.float())
    model.frontend.feat_std.copy_(std.float())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_frames(config: AsrConfig, n_samples: int) -> int:
    """Output (CTC) frames of a recogniser for a waveform of ``n_samples``."""
    t = n_samples // config.hop_length + 1
    return math.ceil(t / (4 if config.model == "vgg_lstm" else 8))


def asr_activations(model: CTCRecogniser, waveforms, lengths=None) -> tuple:
    """Frame-level activations of every mapped layer, and the log-mel the model read.

    waveforms : (B, n) float 16 kHz (zero-padded; ``lengths`` in samples, default n).
    Returns ``(log_mel (B, T, 80) ndarray, {label: ndarray (B, ceil(T / r), width)}, AsrOutput)``
    through :func:`torch_bridge.capture` with ``pooling="frames"`` (conv maps as
    ``(B, T_k, C*F)``, channel-major). Frames past an item's length are padding.
    """
    from ..hooks import capture

    with capture(model, model.layers, pooling="frames") as acts:
        out = model(waveforms, lengths)
        mel = model.log_mel(waveforms)
    return mel.numpy(), {layer.label: acts[layer.name] for layer in model.layers}, out


#: Module whose output is the mel power spectrogram the recogniser reads (captured as log-mel).
INPUT_LAYER = "frontend.mel"


def log_mel_frames(t: torch.Tensor) -> torch.Tensor:
    """Capture pooling for :data:`INPUT_LAYER`: mel power (B, 80, T) -> log-mel frames (B, T, 80)."""
    return torch.log(t + LOG_FLOOR).transpose(1, 2)


def asr_dump_spec(model: CTCRecogniser) -> tuple[list[dict], dict]:
    """``(layers, pooling)`` for :func:`torch_bridge.dump.dump`: every mapped layer at frame
    level (records with label, r, width, kind go to the store manifest) plus the input
    log-mel under :data:`INPUT_LAYER` (label ``"input"``, r = 1), the probes' target. Items
    of one store must share one waveform length (the store keeps fixed per-item shapes)."""
    layers = [dataclasses.asdict(layer) for layer in model.layers]
    layers.append({"label": "input", "name": INPUT_LAYER, "r": 1, "width": N_MELS, "kind": "log_mel"})
    pooling = {layer.name: "frames" for layer in model.layers}
    pooling[INPUT_LAYER] = log_mel_frames
    return layers, pooling
