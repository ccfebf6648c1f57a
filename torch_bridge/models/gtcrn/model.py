"""GTCRN (Rong et al., ICASSP 2024) in plain torch, written from ``shared/gtcrn/gtcrn-architecture.md``.

A 48k-parameter causal speech-enhancement network on a 512-point STFT (hop 256, 16 kHz):
ERB band merge -> subband feature extraction (SFE) -> encoder (two strided conv blocks, three
grouped temporal conv blocks with temporal recurrent attention) -> two grouped dual-path RNNs ->
mirrored decoder of transposed convs with additive skips -> ERB split -> complex mask on the
input spectrum. Module names follow the official state dict, so ``model_trained_on_vctk.tar``
and ``model_trained_on_dns3.tar`` load with ``strict=True`` (section numbers below refer to the
architecture description).

Feature maps are ``(B, C, T, F)``: time is dim 2, frequency dim 3. The model is causal in time.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_FFT = 512
N_BINS = N_FFT // 2 + 1  # 257
SAMPLE_RATE = 16000
LOW_BINS = 65  # bins 0..64 pass through the ERB merge untouched
ERB_BANDS = 64  # bands merged from the 192 high bins


# ----------------------------------------------------------------------------- ERB (§3)
def erb_matrix() -> np.ndarray:
    """The fixed (64, 192) triangular ERB weight matrix W of §3, float32.

    Built in float64 from the ERB-rate scale ``e(f) = 21.4 log10(1 + 0.00437 f)``: 64 band centres
    equally spaced in e between 2031.25 Hz and 8000 Hz, rounded to STFT bins; rising and falling
    triangular edges between neighbouring centres (with the code's 1e-12 offsets), the last
    band taking the complement of band 62 up to bin 256 inclusive. Every column sums to 1.
    """
    f_lo = LOW_BINS / N_FFT * SAMPLE_RATE
    f_hi = SAMPLE_RATE / 2

    def to_erb(f):
        return 21.4 * np.log10(1 + 0.00437 * f)

    def from_erb(e):
        return (10 ** (e / 21.4) - 1) / 0.00437

    e = np.linspace(to_erb(f_lo), to_erb(f_hi), ERB_BANDS)
    b = np.round(from_erb(e) / SAMPLE_RATE * N_FFT).astype(int)
    eps = 1e-12
    m = np.zeros((ERB_BANDS, N_BINS), np.float32)
    k = np.arange(b[0], b[1])
    m[0, k] = (b[1] - k + eps) / (b[1] - b[0] + eps)
    for r in range(1, ERB_BANDS - 1):
        k = np.arange(b[r - 1], b[r])
        m[r, k] = (k - b[r - 1] + eps) / (b[r] - b[r - 1] + eps)
        k = np.arange(b[r], b[r + 1])
        m[r, k] = (b[r + 1] - k + eps) / (b[r + 1] - b[r] + eps)
    k = np.arange(b[-2], b[-1] + 1)
    m[-1, k] = np.float32(1) - m[-2, k]
    return np.abs(m[:, LOW_BINS:])


class ERB(nn.Module):
    """ERB band merge (257 bins -> 129 positions) and split (129 -> 257), §3.

    ``erb_fc`` holds W (64, 192) and ``ierb_fc`` holds Wᵀ; both are frozen parameters (they
    are in the checkpoints). The module is never called itself: use :meth:`bm` and :meth:`bs`.
    """

    def __init__(self):
        super().__init__()
        w = torch.from_numpy(erb_matrix())
        self.erb_fc = nn.Linear(N_BINS - LOW_BINS, ERB_BANDS, bias=False)
        self.ierb_fc = nn.Linear(ERB_BANDS, N_BINS - LOW_BINS, bias=False)
        with torch.no_grad():
            self.erb_fc.weight.copy_(w)
            self.ierb_fc.weight.copy_(w.T)
        self.erb_fc.weight.requires_grad_(False)
        self.ierb_fc.weight.requires_grad_(False)

    def bm(self, x: torch.Tensor) -> torch.Tensor:
        """Merge ``(..., 257)`` -> ``(..., 129)``: low bins kept, high bins weighted by W."""
        return torch.cat([x[..., :LOW_BINS], self.erb_fc(x[..., LOW_BINS:])], dim=-1)

    def bs(self, x: torch.Tensor) -> torch.Tensor:
        """Split ``(..., 129)`` -> ``(..., 257)``: low positions kept, bands spread by Wᵀ."""
        return torch.cat([x[..., :LOW_BINS], self.ierb_fc(x[..., LOW_BINS:])], dim=-1)


# ----------------------------------------------------------------------------- SFE (§4)
class SFE(nn.Module):
    """Subband feature extraction: ``(B, C, T, F)`` -> ``(B, 3C, T, F)``, channel 3c+k = channel c
    shifted to read frequency f+k-1 (zero outside), k = 0, 1, 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        padded = nn.functional.pad(x, (1, 1))
        shifted = torch.stack([padded[..., k : k + f] for k in range(3)], dim=2)  # (B, C, 3, T, F)
        return shifted.reshape(b, 3 * c, t, f)


# ----------------------------------------------------------------------------- blocks (§6)
class ConvBlock(nn.Module):
    """conv (1x5, frequency stride 2) -> BatchNorm -> PReLU (or Tanh), §6.1.

    The encoder version halves the frequency axis (F -> (F-1)//2 + 1) with a Conv2d; the decoder
    version doubles it (F -> 2F - 1) with a ConvTranspose2d.
    """

    def __init__(self, cin: int, cout: int, *, groups: int = 1, transposed: bool = False, tanh: bool = False):
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(cin, cout, (1, 5), stride=(1, 2), padding=(0, 2), groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Tanh() if tanh else nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class TRA(nn.Module):
    """Temporal recurrent attention, §6.4: a causal GRU on the per-frame mean energy of each
    channel gives one sigmoid gain per (channel, frame), applied to all frequencies."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.att_gru = nn.GRU(channels, 2 * channels, batch_first=True)
        self.att_fc = nn.Linear(2 * channels, channels)
        self.att_act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = x.pow(2).mean(dim=-1).transpose(1, 2)  # (B, T, C)
        gain = self.att_act(self.att_fc(self.att_gru(energy)[0]))  # (B, T, C)
        return x * gain.transpose(1, 2)[..., None]


class GTConvBlock(nn.Module):
    """Grouped temporal convolution block, §6.2 (encoder) and §6.3 (decoder, transposed convs).

    Channels 0-7 go through SFE -> 1x1 conv -> BN -> PReLU -> causal pad of 2d frames ->
    depthwise 3x3 conv dilated d in time -> BN -> PReLU -> 1x1 conv -> BN -> TRA; channels 8-15
    pass unchanged; the two halves are interleaved (processed half on even channels).

    In the decoder the convs are ``ConvTranspose2d`` (weights ``[in, out/groups, kh, kw]``); the
    depthwise one then correlates with the kernel flipped in both axes and pads (2d, 1), which
    torch's transposed convolution does by itself.
    """

    def __init__(self, channels: int = 16, dilation: int = 1, *, transposed: bool = False):
        super().__init__()
        half = channels // 2
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.dilation = dilation
        self.sfe = SFE()
        self.point_conv1 = conv(3 * half, channels, 1)
        self.point_bn1 = nn.BatchNorm2d(channels)
        self.point_act = nn.PReLU()
        time_pad = 2 * dilation if transposed else 0
        self.depth_conv = conv(channels, channels, 3, padding=(time_pad, 1), dilation=(dilation, 1), groups=channels)
        self.depth_bn = nn.BatchNorm2d(channels)
        self.depth_act = nn.PReLU()
        self.point_conv2 = conv(channels, half, 1)
        self.point_bn2 = nn.BatchNorm2d(half)
        self.tra = TRA(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        x1, x2 = x[:, :half], x[:, half:]
        h = self.point_act(self.point_bn1(self.point_conv1(self.sfe(x1))))
        h = nn.functional.pad(h, (0, 0, 2 * self.dilation, 0))  # causal: 2d zero frames in front
        h = self.depth_act(self.depth_bn(self.depth_conv(h)))
        h = self.tra(self.point_bn2(self.point_conv2(h)))
        return torch.stack([h, x2], dim=2).flatten(1, 2)  # channels h0, x2_0, h1, x2_1, ...


# ----------------------------------------------------------------------------- DPGRNN (§8)
class GRNN(nn.Module):
    """Grouped GRU: channel halves through ``rnn1`` and ``rnn2``, outputs concatenated.

    Input ``(N, S, C)`` batch-first sequences; returns ``(output (N, S, C_out), None)`` (a tuple,
    like ``nn.GRU``, so a forward hook sees the output as element 0).

    Without gradients (inference), both halves run as ONE GRU whose weights are the two GRUs'
    weights block-diagonally per gate (hidden state ``[h1, h2]``): the zero blocks add exact
    zeros, so the outputs are those of the two GRUs up to the BLAS's summation order (bitwise in
    float32 on this CPU, 2e-15 relative in float64), in half the sequential steps (a GRU on CPU
    costs mostly per-step overhead: 1.15-1.18x GTCRN's forward at batch 1, bench/bench_gtcrn.py).
    The merged weights are rebuilt whenever ``rnn1``/``rnn2``'s parameters change; with hooks
    on ``rnn1``/``rnn2`` or with gradients the two GRUs run separately, as written.
    """

    def __init__(self, input_size: int, hidden_size: int, *, bidirectional: bool):
        super().__init__()
        half, h = input_size // 2, hidden_size // 2
        if bidirectional:
            h //= 2
        self.rnn1 = nn.GRU(half, h, batch_first=True, bidirectional=bidirectional)
        self.rnn2 = nn.GRU(half, h, batch_first=True, bidirectional=bidirectional)
        self._merged: tuple[tuple, list[torch.Tensor]] | None = None  # (parameter versions, flat weights)

    def _merged_weights(self) -> list[torch.Tensor]:
        """The flat weight list of the merged GRU (``nn.GRU._flat_weights`` order)."""
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device)
                    for p in (*self.rnn1._flat_weights, *self.rnn2._flat_weights))
        if self._merged is None or self._merged[0] != key:
            flat = []
            for a, b in zip(self.rnn1._flat_weights, self.rnn2._flat_weights):
                pair = zip(a.detach().chunk(3), b.detach().chunk(3))  # gates r, z, n
                flat.append(torch.cat([torch.block_diag(x, y) if a.ndim == 2 else torch.cat([x, y]) for x, y in pair]))
            self._merged = (key, flat)
        return self._merged[1]

    def _runs_merged(self) -> bool:
        r1, r2 = self.rnn1, self.rnn2
        return (not torch.is_grad_enabled() and not (r1._forward_hooks or r1._forward_pre_hooks or r2._forward_hooks
                                                     or r2._forward_pre_hooks)
                and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks))

    def forward(self, x: torch.Tensor):
        half = x.shape[-1] // 2
        if not self._runs_merged():
            return torch.cat([self.rnn1(x[..., :half])[0], self.rnn2(x[..., half:])[0]], dim=-1), None
        r1 = self.rnn1
        bi = r1.bidirectional
        h = r1.hidden_size
        hx = x.new_zeros(2 if bi else 1, x.shape[0], 2 * h)
        out = torch.gru(x, hx, self._merged_weights(), True, 1, 0.0, self.training, bi, True)[0]
        if bi:  # [fwd1, fwd2, rev1, rev2] -> [fwd1, rev1, fwd2, rev2], the two GRUs' outputs side by side
            out = out.unflatten(-1, (2, 2, h)).transpose(-3, -2).flatten(-3)
        return out, None


class DPGRNN(nn.Module):
    """Grouped dual-path RNN, §8: a bidirectional grouped GRU along frequency, then a causal one
    along time, each followed by a Linear, a LayerNorm over the whole (F, C) frame slab
    (eps 1e-8) and a residual. ``(B, C, T, F)`` in and out."""

    def __init__(self, channels: int = 16, width: int = 33):
        super().__init__()
        self.intra_rnn = GRNN(channels, channels, bidirectional=True)
        self.intra_fc = nn.Linear(channels, channels)
        self.intra_ln = nn.LayerNorm((width, channels), eps=1e-8)
        self.inter_rnn = GRNN(channels, channels, bidirectional=False)
        self.inter_fc = nn.Linear(channels, channels)
        self.inter_ln = nn.LayerNorm((width, channels), eps=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        x = x.permute(0, 2, 3, 1)  # (B, T, F, C)
        intra = self.intra_fc(self.intra_rnn(x.reshape(b * t, f, c))[0])
        u = x + self.intra_ln(intra.reshape(b, t, f, c))
        seq = u.permute(0, 2, 1, 3).reshape(b * f, t, c)  # sequences over time
        inter = self.inter_fc(self.inter_rnn(seq)[0]).reshape(b, f, t, c).permute(0, 2, 1, 3)
        out = u + self.inter_ln(inter)
        return out.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- encoder / decoder (§7)
class Encoder(nn.Module):
    """en_convs.0 (9->16, F 129->65), en_convs.1 (16->16 groups 2, F 65->33), three GTConvBlocks
    with dilations 1, 2, 5. Returns the last output and the list of all five (the skips)."""

    def __init__(self):
        super().__init__()
        self.en_convs = nn.ModuleList([
            ConvBlock(9, 16),
            ConvBlock(16, 16, groups=2),
            GTConvBlock(16, 1),
            GTConvBlock(16, 2),
            GTConvBlock(16, 5),
        ])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = []
        for block in self.en_convs:
            x = block(x)
            outs.append(x)
        return x, outs


class Decoder(nn.Module):
    """Mirror of the encoder with transposed convs; block i gets its input plus the skip
    e[4 - i]. The last block (Tanh) gives the 2-channel ERB-domain mask ``(B, 2, T, 129)``."""

    def __init__(self):
        super().__init__()
        self.de_convs = nn.ModuleList([
            GTConvBlock(16, 5, transposed=True),
            GTConvBlock(16, 2, transposed=True),
            GTConvBlock(16, 1, transposed=True),
            ConvBlock(16, 16, groups=2, transposed=True),
            ConvBlock(16, 2, transposed=True, tanh=True),
        ])

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i, block in enumerate(self.de_convs):
            x = block(x + skips[len(skips) - 1 - i])
        return x


class Mask(nn.Module):
    """Complex multiplication of the mask ``(B, 2, T, 257)`` (re, im) with the spectrum
    ``(B, 2, T, 257)`` (re, im), §9."""

    def forward(self, mask: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        m_re, m_im = mask[:, 0], mask[:, 1]
        s_re, s_im = spec[:, 0], spec[:, 1]
        return torch.stack([s_re * m_re - s_im * m_im, s_im * m_re + s_re * m_im], dim=1)


# ----------------------------------------------------------------------------- GTCRN (§2)
class GTCRN(nn.Module):
    """The GTCRN enhancement network.

    ``forward(spec)`` maps a ``(B, 257, T, 2)`` STFT (last axis real, imaginary; n_fft 512,
    hop 256, sqrt-Hann window, see :func:`torch_bridge.models.gtcrn.gtcrn_stft`) to the enhanced
    spectrum of the same shape. Use it in eval mode: the BatchNorms must use their running
    statistics. 23,669 trainable parameters plus the 24,576 fixed ERB weights.
    """

    def __init__(self):
        super().__init__()
        self.erb = ERB()
        self.sfe = SFE()
        self.encoder = Encoder()
        self.dpgrnn1 = DPGRNN(16, 33)
        self.dpgrnn2 = DPGRNN(16, 33)
        self.decoder = Decoder()
        self.mask = Mask()

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.ndim != 4 or spec.shape[1] != N_BINS or spec.shape[3] != 2:
            raise ValueError(
                f"The 'spec' parameter of GTCRN.forward must have shape (B, {N_BINS}, T, 2) (a 512-point "
                f"STFT with real and imaginary parts last); got {tuple(spec.shape)}. Make it with gtcrn_stft."
            )
        s = spec.permute(0, 3, 2, 1)  # (B, 2, T, 257)
        re, im = s[:, 0], s[:, 1]
        mag = torch.sqrt(re**2 + im**2 + 1e-12)
        feat = self.erb.bm(torch.stack([mag, re, im], dim=1))  # (B, 3, T, 129)
        feat = self.sfe(feat)  # (B, 9, T, 129)
        x, skips = self.encoder(feat)
        x = self.dpgrnn2(self.dpgrnn1(x))
        mask = self.erb.bs(self.decoder(x, skips))  # (B, 2, T, 257)
        return self.mask(mask, s).permute(0, 3, 2, 1)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and fixed parameter counts (the fixed ones are the ERB matrices)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "fixed": total - trainable, "total": total}


