"""The reference MUSE generator: the first plain-torch implementation, kept unchanged as the
yardstick for the fast ``torch_bridge.models.muse.MUSE`` (``model.py``) (same modules, same state-dict keys;
tests/torch_bridge/test_muse.py checks the fast path against it to 1e-5 relative, and
bench/bench_muse.py times both). Layout NCHW, deformable sampling by float64 ``grid_sample``.

The MUSE speech-enhancement generator (Lin, Chen, Wang, Interspeech 2024) in plain torch.

Written from the architecture description in ``shared/muse/muse-architecture.md``; module
names follow the official checkpoint's state-dict keys, so ``g_best`` loads with
``strict=True`` and every layer can be hooked by its ``named_modules()`` path, e.g.
``TCFTransformer.encoder_level1.mhca_blks.0.transformer_layers.0.norm1``.

Feature maps are ``(B, C, T, F)``: time is the height axis, frequency the width axis.
``MUSE.forward(mag_c, pha)`` takes the compressed magnitude and the phase, both
``(B, 256, T)`` with T divisible by 4 (T = 308 for the official 30,700-sample segment),
and returns ``(est_mag_c, est_pha, com)``: ``(B, 256, T)``, ``(B, 256, T)`` and the
compressed complex spectrum ``(B, 256, T, 2)`` (unused at inference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.models.muse.deform import deform_conv2d_depthwise

DENSE_CHANNELS = 16
BETA = 2.0
FFN_EXPANSION = 2.66
# Stage name -> (channels, heads). The refinement stages run at level-1 width.
STAGES = {
    "encoder_level1": (16, 1),
    "encoder_level2": (32, 2),
    "latent": (48, 8),
    "decoder_level2": (32, 2),
    "decoder_level1": (16, 1),
    "mag_refinement": (16, 1),
    "pha_refinement": (16, 1),
}
# Grouping of heads for the refinement weight: (heads in the group, kernel size) per conv.
_REFINE_GROUPS = {1: ((1, 3),), 2: ((2, 3),), 8: ((2, 3), (3, 5), (3, 7))}


def _conv(c_in, c_out, kernel=1, *, padding=0, stride=1, dilation=1, groups=1, bias=False):
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias)


def _instance_norm(c):
    return nn.InstanceNorm2d(c, affine=True)


# ----------------------------------------------------------------------------- dense parts
class DenseBlock(nn.Module):
    """Four dilated (time axis) 3x3 conv steps with dense, newest-first concatenation.

    Returns only the last step's output, ``(B, 16, T, F)``.
    """

    def __init__(self, channels: int = DENSE_CHANNELS, depth: int = 4):
        super().__init__()
        self.dense_block = nn.ModuleList(
            nn.Sequential(
                _conv(channels * (i + 1), channels, 3, padding=(2**i, 1), dilation=(2**i, 1), bias=True),
                _instance_norm(channels),
                nn.PReLU(channels),
            )
            for i in range(depth)
        )

    def forward(self, x):
        skip = x
        for step in self.dense_block:
            y = step(skip)
            skip = torch.cat([y, skip], dim=1)
        return y


class DenseEncoder(nn.Module):
    """``(B, 2, T, 256)`` → ``(B, 16, T, 128)``."""

    def __init__(self, c: int = DENSE_CHANNELS):
        super().__init__()
        self.dense_conv_1 = nn.Sequential(_conv(2, c, 1, bias=True), _instance_norm(c), nn.PReLU(c))
        self.dense_block = DenseBlock(c)
        self.dense_conv_2 = nn.Sequential(
            _conv(c, c, (1, 3), stride=(1, 2), padding=(0, 1), bias=True), _instance_norm(c), nn.PReLU(c)
        )

    def forward(self, x):
        return self.dense_conv_2(self.dense_block(self.dense_conv_1(x)))


class LearnableSigmoid(nn.Module):
    """``beta * sigmoid(slope[f] * x)`` with one slope per frequency bin (last axis)."""

    def __init__(self, n_freq: int = 256, beta: float = BETA):
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(n_freq, 1))

    def forward(self, x):
        return self.beta * torch.sigmoid(self.slope[:, 0] * x)


class MaskDecoder(nn.Module):
    """``(B, 16, T, 128)`` → mask ``(B, 1, T, 256)`` in (0, beta)."""

    def __init__(self, c: int = DENSE_CHANNELS):
        super().__init__()
        self.dense_block = DenseBlock(c)
        self.mask_conv = nn.Sequential(
            _conv(c, 4 * c, 1),
            nn.PixelShuffle(2),
            _conv(c, c, (1, 3), stride=(2, 1), padding=(0, 1), groups=c),
            _conv(c, 1, 1, bias=True),
            _instance_norm(1),
            nn.PReLU(1),
            _conv(1, 1, 1, bias=True),
        )
        self.lsigmoid = LearnableSigmoid()

    def forward(self, x):
        return self.lsigmoid(self.mask_conv(self.dense_block(x)))


class PhaseDecoder(nn.Module):
    """``(B, 16, T, 128)`` → phase ``(B, 1, T, 256)`` in (-pi, pi]."""

    def __init__(self, c: int = DENSE_CHANNELS):
        super().__init__()
        self.dense_block = DenseBlock(c)
        self.phase_conv = nn.Sequential(
            _conv(c, 4 * c, 1),
            nn.PixelShuffle(2),
            _conv(c, c, (1, 3), stride=(2, 1), padding=(0, 1), groups=c),
            _instance_norm(c),
            nn.PReLU(c),
        )
        self.phase_conv_r = _conv(c, 1, 1, bias=True)
        self.phase_conv_i = _conv(c, 1, 1, bias=True)

    def forward(self, x):
        x = self.phase_conv(self.dense_block(x))
        return torch.atan2(self.phase_conv_i(x), self.phase_conv_r(x))


# ----------------------------------------------------------------------------- embeddings
class DeformConv(nn.Module):
    """Weight holder for the depthwise deformable 3x3 conv (``dcn.weight`` of shape (C, 1, 3, 3))."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c, 1, 3, 3))

    def forward(self, x, offset):
        return deform_conv2d_depthwise(x, offset, self.weight, method="grid")


class DeformPatchConv(nn.Module):
    """Offsets (clamped to [-1, 1]) → deformable depthwise conv → 1x1 conv → Hardswish."""

    def __init__(self, c: int):
        super().__init__()
        self.offset_generator = nn.Sequential(_conv(c, c, 3, padding=1, groups=c), _conv(c, 18, 1))
        self.dcn = DeformConv(c)
        self.pwconv = _conv(c, c, 1)
        self.act = nn.Hardswish()

    def forward(self, x):
        offset = self.offset_generator(x).clamp(-1.0, 1.0)
        return self.act(self.pwconv(self.dcn(x, offset)))


class _PatchPath(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.patch_conv = DeformPatchConv(c)

    def forward(self, x):
        return self.patch_conv(x)


class PatchEmbed(nn.Module):
    """Deformable embedding of a stage, ``(B, C, H, W)`` → ``(B, C, H, W)`` (one path)."""

    def __init__(self, c: int):
        super().__init__()
        self.patch_embeds = nn.ModuleList([_PatchPath(c)])

    def forward(self, x):
        return self.patch_embeds[0](x)


# ----------------------------------------------------------------------------- transformer
class BiasFreeLayerNormBody(nn.Module):
    """On tokens ``(B, N, C)``: ``x / sqrt(var_C(x) + 1e-5) * weight`` (mean kept in the numerator)."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        # Two-pass biased variance, written out: ~5x faster than Tensor.var on this layout.
        centred = x - x.mean(dim=-1, keepdim=True)
        var = (centred * centred).mean(dim=-1, keepdim=True)
        return x / torch.sqrt(var + 1e-5) * self.weight


class LayerNorm2d(nn.Module):
    """``(B, C, H, W)`` → tokens ``(B, H*W, C)`` → ``body`` → ``(B, C, H, W)``."""

    def __init__(self, c: int):
        super().__init__()
        self.body = BiasFreeLayerNormBody(c)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        return self.body(tokens).transpose(1, 2).reshape(b, c, h, w)


class RefineAttention(nn.Module):
    """Per-head position weight from the normalised q and k: ``(B, 2*d*h, H, W)`` → ``(B, h, H, W)``."""

    def __init__(self, head_dim: int, heads: int):
        super().__init__()
        self.splits = []
        convs = []
        for n_heads, k in _REFINE_GROUPS[heads]:
            convs.append(_conv(2 * head_dim * n_heads, n_heads, k, padding=k // 2, groups=n_heads, bias=True))
            self.splits.append(2 * head_dim * n_heads)
        self.conv_list = nn.ModuleList(convs)

    def forward(self, qk):
        parts = torch.split(qk, self.splits, dim=1)
        return torch.sigmoid(torch.cat([conv(p) for conv, p in zip(self.conv_list, parts)], dim=1))


class TaylorAttention(nn.Module):
    """Gated first-order Taylor linear attention over all T*F tokens (spec §3.5)."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv(c, c, 1, bias=True))
        self.dwconv = nn.Sequential(_conv(c, 2 * c, 1), _conv(2 * c, c, 3, padding=1, groups=c))
        self.qkv = _conv(c, 3 * c, 1)
        self.qkv_dwconv = _conv(3 * c, 3 * c, 3, padding=1, groups=3 * c)
        self.project_out = _conv(c, c, 1)
        self.refine_att = RefineAttention(c // heads, heads)

    def forward(self, u):
        b, c, h, w = u.shape
        n, heads = h * w, self.heads
        d = c // heads
        s = self.sca(u)
        g = self.dwconv(u)
        q, k, v = self.qkv_dwconv(self.qkv(u)).chunk(3, dim=1)
        q = q.reshape(b, heads, d, n)
        k = k.reshape(b, heads, d, n)
        v = v.reshape(b, heads, d, n)
        # L2 norm of each token over the head's d channels. (Written out: on CPU this is ~30x
        # faster than torch.linalg.vector_norm over a strided axis; it differs by 1 ulp.)
        q = q / ((q * q).sum(dim=2, keepdim=True).sqrt() + 1e-6)
        k = k / ((k * k).sum(dim=2, keepdim=True).sqrt() + 1e-6)
        r = self.refine_att(torch.stack([q, k], dim=2).reshape(b, 2 * c, h, w))  # (B, heads, H, W)

        k_sum = k.sum(dim=-1, keepdim=True)  # (B, h, d, 1)
        v_sum = v.sum(dim=-1, keepdim=True)  # (B, h, d, 1)
        kv = torch.matmul(k, v.transpose(-1, -2))  # (B, h, d_k, d_v)
        num = v_sum + torch.matmul(kv.transpose(-1, -2), q)  # (B, h, d_v, N)
        den = n + (q * k_sum).sum(dim=2, keepdim=True) + 1e-6  # (B, h, 1, N)
        o = self.temperature * (num / den) * r.reshape(b, heads, 1, n)
        o = o.reshape(b, c, h, w) * s * F.gelu(g)
        return self.project_out(o)


class GatedFFN(nn.Module):
    """1x1 conv to 2m → depthwise 3x3 → GELU(a)·b → 1x1 conv back to C; m = int(2.66 C)."""

    def __init__(self, c: int):
        super().__init__()
        m = int(c * FFN_EXPANSION)
        self.project_in = _conv(c, 2 * m, 1)
        self.dwconv = _conv(2 * m, 2 * m, 3, padding=1, groups=2 * m)
        self.project_out = _conv(m, c, 1)

    def forward(self, x):
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """``y = x + attn(norm1(x)); z = y + ffn(norm2(y))``."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.norm1 = LayerNorm2d(c)
        self.attn = TaylorAttention(c, heads)
        self.norm2 = LayerNorm2d(c)
        self.ffn = GatedFFN(c)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _TransformerStack(nn.Module):
    def __init__(self, c: int, heads: int, depth: int = 4):
        super().__init__()
        self.transformer_layers = nn.ModuleList(TransformerBlock(c, heads) for _ in range(depth))

    def forward(self, x):
        for layer in self.transformer_layers:
            x = layer(x)
        return x


class SelectiveKernelFusion(nn.Module):
    """The stage aggregator. It fuses a single branch, so its softmax over branches is exactly
    1 and it returns its input unchanged; the parameters exist only so the checkpoint loads."""

    def __init__(self, c: int):
        super().__init__()
        d = max(c // 8, 4)
        self.conv_du = nn.Sequential(_conv(c, d, 1), nn.PReLU(1))
        self.fcs = nn.ModuleList([_conv(d, c, 1)])

    def forward(self, x):
        return x


class Stage(nn.Module):
    """Four transformer blocks then the (identity) aggregator; shape-preserving."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.mhca_blks = nn.ModuleList([_TransformerStack(c, heads)])
        self.aggregate = SelectiveKernelFusion(c)

    def forward(self, x):
        return self.aggregate(self.mhca_blks[0](x))


# ----------------------------------------------------------------------------- U-Net
def _downsample(c, c_out):
    return nn.Sequential(_conv(c, c, 3, padding=1, groups=c), _conv(c, c_out // 4, 1), nn.PixelUnshuffle(2))


def _upsample(c, c_out):
    return nn.Sequential(_conv(c, c, 3, padding=1, groups=c), _conv(c, 4 * c_out, 1), nn.PixelShuffle(2))


class _Body(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


_EMBED_NAMES = {
    "encoder_level1": "patch_embed_encoder_level1",
    "encoder_level2": "patch_embed_encoder_level2",
    "latent": "patch_embed_latent",
    "decoder_level2": "patch_embed_decoder_level2",
    "decoder_level1": "patch_embed_decoder_level1",
    "mag_refinement": "mag_patch_embed_refinement",
    "pha_refinement": "pha_patch_embed_refinement",
}


class TCFTransformer(nn.Module):
    """Three-level U-Net of deformable embeddings and Taylor-attention stages, with two
    refinement branches. ``(B, 16, T, 128)`` → ``(m, p)``, both ``(B, 16, T, 128)``."""

    def __init__(self):
        super().__init__()
        for stage, (c, heads) in STAGES.items():
            setattr(self, _EMBED_NAMES[stage], PatchEmbed(c))
            setattr(self, stage, Stage(c, heads))
        self.down1_2 = _Body(_downsample(16, 32))
        self.down2_3 = _Body(_downsample(32, 48))
        self.up3_2 = _Body(_upsample(48, 32))
        self.reduce_chan_level2 = nn.Sequential(_conv(64, 32, 1))
        self.up2_1 = _Body(_upsample(32, 16))
        self.reduce_chan_level1 = nn.Sequential(_conv(32, 16, 1))
        self.mag_output = nn.Sequential(_conv(16, 16, 3, padding=1))
        self.pha_output = nn.Sequential(_conv(16, 16, 3, padding=1))

    def _stage(self, name, x):
        return getattr(self, name)(getattr(self, _EMBED_NAMES[name])(x)) + x

    def forward(self, x0):
        e1 = self._stage("encoder_level1", x0)
        i2 = self.down1_2(e1)
        e2 = self._stage("encoder_level2", i2)
        i3 = self.down2_3(e2)
        lat = self._stage("latent", i3)
        d2 = self.reduce_chan_level2(torch.cat([self.up3_2(lat), e2], dim=1))
        o2 = self._stage("decoder_level2", d2)
        d1 = self.reduce_chan_level1(torch.cat([self.up2_1(o2), e1], dim=1))
        o1 = self._stage("decoder_level1", d1)
        m = self.mag_output(self._stage("mag_refinement", o1)) + x0
        p = self.pha_output(self._stage("pha_refinement", o1)) + x0
        return m, p


class MUSEReference(nn.Module):
    """The MUSE generator: ``(mag_c, pha)`` ``(B, 256, T)`` → ``(est_mag_c, est_pha, com)``.

    Parameters of ``forward``
    -------------------------
    mag_c : tensor of shape (B, 256, T)
        Compressed magnitude ``|STFT| ** 0.3``; T divisible by 4.
    pha : tensor of shape (B, 256, T)
        Phase ``angle(STFT)``.

    Returns
    -------
    est_mag_c : tensor of shape (B, 256, T)
    est_pha : tensor of shape (B, 256, T)
    com : tensor of shape (B, 256, T, 2)
        ``est_mag_c * (cos, sin)(est_pha)``; unused at inference.
    """

    def __init__(self):
        super().__init__()
        self.dense_encoder = DenseEncoder()
        self.TCFTransformer = TCFTransformer()
        self.mask_decoder = MaskDecoder()
        self.phase_decoder = PhaseDecoder()

    def forward(self, mag_c, pha):
        if mag_c.ndim != 3 or mag_c.shape != pha.shape or mag_c.shape[1] != 256 or mag_c.shape[2] % 4:
            raise ValueError(
                "MUSE expects 'mag_c' and 'pha' of equal shape (B, 256, T) with T divisible by 4; "
                f"got {tuple(mag_c.shape)} and {tuple(pha.shape)}."
            )
        mag = mag_c.transpose(1, 2).unsqueeze(1)  # (B, 1, T, F)
        x = torch.cat([mag, pha.transpose(1, 2).unsqueeze(1)], dim=1)
        x0 = self.dense_encoder(x)
        m, p = self.TCFTransformer(x0)
        mask = self.mask_decoder(m)
        est_mag = (mag * mask).squeeze(1).transpose(1, 2)
        est_pha = self.phase_decoder(p).squeeze(1).transpose(1, 2)
        com = torch.stack([est_mag * torch.cos(est_pha), est_mag * torch.sin(est_pha)], dim=-1)
        return est_mag, est_pha, com
