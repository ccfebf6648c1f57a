"""The MUSE speech-enhancement generator (Lin, Chen, Wang, Interspeech 2024) in plain torch.

Written from the architecture description in ``shared/muse/muse-architecture.md``; module
names follow the official checkpoint's state-dict keys, so ``g_best`` loads with
``strict=True`` and every layer can be hooked by its ``named_modules()`` path, e.g.
``TCFTransformer.encoder_level1.mhca_blks.0.transformer_layers.0.norm1``.

Feature maps are ``(B, C, T, F)``: time is the height axis, frequency the width axis.
``MUSE.forward(mag_c, pha)`` takes the compressed magnitude and the phase, both
``(B, 256, T)`` with T divisible by 4 (T = 308 for the official 30,700-sample segment),
and returns ``(est_mag_c, est_pha, com)``: ``(B, 256, T)``, ``(B, 256, T)`` and the
compressed complex spectrum ``(B, 256, T, 2)`` (unused at inference).

This is the fast formulation (issue 19); ``muse_reference.MUSEReference`` is the first,
straightforward one, kept as the yardstick (same modules and keys; the fast outputs agree with
it to < 1e-5 relative in ``est_mag_c``, tests/torch_bridge/test_muse.py). What differs, each
measured on this CPU: feature maps are channels-last (oneDNN's NCHW depthwise and grouped
convolutions were 2-7x slower); 1x1 convolutions are GEMMs on the (B, H, W, C) tokens (the NCHW
ones fell back to ``_slow_conv2d_forward``); reductions over a short channel axis (LayerNorm,
q/k norms, instance-norm statistics) are GEMMs, since torch's reductions over short axes are
several times slower; the gate's grouped conv (2 inputs per group) is a depthwise conv plus a
pair sum; the dense blocks run NCHW in one preallocated buffer instead of three concatenations;
the decoders compute only the pixel-shuffle rows their strided conv reads; the deformable
sampling stays float64 ``grid_sample`` (exact positions) but on a channels-last copy, per
chunk of rows; the dense encoder and decoders, deformable embeddings, LayerNorms, attentions and
FFNs run one batch item at a time (``_per_item``: a batch of 8 spilled the cache and ran
slower per window than 1), the last three writing into their slice of the batch output.
Forward hooks see the same ``(B, C, T, F)`` shapes as before (channels-last strides).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.models.deform import deform_conv2d_depthwise

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
    return _InstanceNormCL(c, affine=True)


_CL = torch.channels_last


def _cl(x):
    """``x`` in channels-last memory order (a no-op when it already is)."""
    return x.contiguous(memory_format=_CL)


def _tokens(x):
    """``(B, C, H, W)`` channels-last → ``(B, H, W, C)`` contiguous view (no copy)."""
    return _cl(x).permute(0, 2, 3, 1)


def _from_tokens(t):
    """``(B, H, W, C)`` contiguous → ``(B, C, H, W)`` channels-last view."""
    return t.permute(0, 3, 1, 2)


def _pointwise(conv, x):
    """A 1x1 conv as one GEMM on the channels-last tokens (oneDNN's 1x1 path and the slow
    NCHW fallback are both slower here)."""
    w = conv.weight
    return _from_tokens(F.linear(_tokens(x), w.reshape(w.shape[0], w.shape[1]), conv.bias))


def _per_item(forward_one, x, *, writes_out=False):
    """``forward_one`` on each batch item of ``x`` in turn, outputs gathered on the batch axis
    (memory order kept). The items are independent in every layer of MUSE; one at a time, a
    level-1 block's working set (~2.5 MB per 16-channel map) stays cache-resident, where a
    batch of 8 spilled and ran ~1.6x slower per window than a batch of 1. With
    ``writes_out``, ``forward_one(x_i, out=o_i)`` writes items 2.. straight into their slice of
    the batch output (no gathering copy)."""
    if x.shape[0] == 1:
        return forward_one(x)
    first = forward_one(x[:1])
    fmt = torch.contiguous_format if first.is_contiguous() else _CL
    out = torch.empty((x.shape[0], *first.shape[1:]), dtype=first.dtype, device=first.device, memory_format=fmt)
    out[:1] = first
    for i in range(1, x.shape[0]):
        if writes_out:
            forward_one(x[i : i + 1], out=out[i : i + 1])
        else:
            out[i : i + 1] = forward_one(x[i : i + 1])
    return out


def _linear_out(t, weight, out=None):
    """``F.linear(t, weight)`` on tokens (B, H, W, K) → (B, C, H, W) channels-last, written into
    ``out`` (a channels-last (B, C, H, W) map) when given; the same matmul either way."""
    if out is None:
        return _from_tokens(F.linear(t, weight))
    torch.matmul(t, weight.t(), out=_tokens(out))
    return out


class _InstanceNormCL(nn.InstanceNorm2d):
    """``InstanceNorm2d(affine=True)`` computed on channels-last maps (same parameters and
    result; the library kernel reshapes channels-last input to NCHW first)."""

    def forward(self, x):
        if x.is_contiguous():  # NCHW (the dense blocks): torch's own kernel
            return super().forward(x)
        # As torch's kernel: statistics in float64, then y = x * alpha + beta in float32 with
        # alpha = w / sqrt(var + eps), beta = b - mean * alpha. The means over the positions are
        # GEMVs on the (B, H*W, C) tokens (torch's reductions over the outer axes of a
        # channels-last map are slow); var = E[x^2] - mean^2 is exact enough in float64.
        b, c, h, w = x.shape
        t = _tokens(x).reshape(b, h * w, c)
        t64 = t.double()
        ones = torch.full((1, h * w), 1.0 / (h * w), dtype=torch.float64, device=x.device)
        mean = torch.matmul(ones, t64)  # (B, 1, C)
        var = torch.matmul(ones, t64 * t64) - mean * mean
        alpha = torch.rsqrt(var + self.eps) * self.weight.double()
        beta = (self.bias.double() - mean * alpha).to(x.dtype)
        out = torch.addcmul(beta, t, alpha.to(x.dtype))
        return _from_tokens(out.view(b, h, w, c))


class _PixelShuffleCL(nn.PixelShuffle):
    """``PixelShuffle`` on channels-last maps: ``out[b, c, r*y+i, r*x+j] = in[b, r*r*c + r*i + j, y, x]``."""

    def forward(self, x):
        r = self.upscale_factor
        b, c, h, w = x.shape
        t = _tokens(x).reshape(b, h, w, c // (r * r), r, r).permute(0, 1, 4, 2, 5, 3)
        return _from_tokens(t.reshape(b, h * r, w * r, c // (r * r)))


class _PixelUnshuffleCL(nn.PixelUnshuffle):
    """``PixelUnshuffle`` on channels-last maps: ``out[b, r*r*c + r*i + j, y, x] = in[b, c, r*y+i, r*x+j]``."""

    def forward(self, x):
        r = self.downscale_factor
        b, c, h, w = x.shape
        t = _tokens(x).reshape(b, h // r, r, w // r, r, c).permute(0, 1, 3, 5, 2, 4)
        return _from_tokens(t.reshape(b, h // r, w // r, c * r * r))


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
        return _per_item(self._forward_one, x)

    def _forward_one(self, x):
        # NCHW here, unlike the rest of the model: the newest-first concatenation is then a
        # contiguous channel suffix of one preallocated buffer [y2, y1, y0, x], so no step
        # concatenates, and the convolutions are oneDNN's NCHW ones, as in the reference.
        c, depth = x.shape[1], len(self.dense_block)
        buf = x.new_empty(x.shape[0], c * depth, *x.shape[2:])
        buf[:, (depth - 1) * c :] = x
        for i, step in enumerate(self.dense_block):
            y = step(buf[:, (depth - 1 - i) * c :])
            if i < depth - 1:
                buf[:, (depth - 2 - i) * c : (depth - 1 - i) * c] = y
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
        return _per_item(self._forward_one, x)

    def _forward_one(self, x):
        return _cl(self.dense_conv_2(self.dense_block(self.dense_conv_1(x))))


class LearnableSigmoid(nn.Module):
    """``beta * sigmoid(slope[f] * x)`` with one slope per frequency bin (last axis)."""

    def __init__(self, n_freq: int = 256, beta: float = BETA):
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(n_freq, 1))

    def forward(self, x):
        return self.beta * torch.sigmoid(self.slope[:, 0] * x)


def _mask_tail(seq, x):
    """``seq`` = (1x1 conv C→4C, PixelShuffle(2), depthwise (1, 3) conv with time stride 2, rest...)
    applied to ``x``. The strided conv reads only the even output rows of the pixel shuffle,
    i.e. sub-pixel row 0, channels 4c and 4c+1 of the 1x1 conv; only those are computed, and
    the shuffle becomes a frequency interleave. The values are those of the full path."""
    conv1, _, dw, *rest = seq
    c = dw.weight.shape[0]
    w = conv1.weight.reshape(c, 2, 2, -1)[:, 0].transpose(0, 1).reshape(2 * c, -1)  # row j*C + c = 4c + j
    b, _, h, wid = x.shape
    y = F.linear(_tokens(x), w).reshape(b, h, wid * 2, c)  # (B, T, 2F, C): column 2f + j
    y = F.conv2d(_from_tokens(y), dw.weight, padding=(0, 1), groups=c)
    for m in rest:
        y = _pointwise(m, y) if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) else m(y)
    return y


def _pointwise_pair(conv_a, conv_b, x):
    """Two 1x1 convs on the same input as one GEMM; output channels [a, b]."""
    w = torch.cat([conv_a.weight, conv_b.weight]).flatten(1)
    bias = torch.cat([conv_a.bias, conv_b.bias])
    return _from_tokens(F.linear(_tokens(x), w, bias))


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
        return _per_item(self._forward_one, x)

    def _forward_one(self, x):
        return self.lsigmoid(_mask_tail(self.mask_conv, self.dense_block(x.contiguous())))


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
        return _per_item(self._forward_one, x)

    def _forward_one(self, x):
        x = _mask_tail(self.phase_conv, self.dense_block(x.contiguous()))
        ri = _pointwise_pair(self.phase_conv_r, self.phase_conv_i, x)
        return torch.atan2(ri[:, 1:2], ri[:, 0:1])


# ----------------------------------------------------------------------------- embeddings
class DeformConv(nn.Module):
    """Weight holder for the depthwise deformable 3x3 conv (``dcn.weight`` of shape (C, 1, 3, 3))."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c, 1, 3, 3))

    def forward(self, x, offset):
        return deform_conv2d_depthwise(x, offset, self.weight, method="grid_cl")


class DeformPatchConv(nn.Module):
    """Offsets (clamped to [-1, 1]) → deformable depthwise conv → 1x1 conv → Hardswish."""

    def __init__(self, c: int):
        super().__init__()
        self.offset_generator = nn.Sequential(_conv(c, c, 3, padding=1, groups=c), _conv(c, 18, 1))
        self.dcn = DeformConv(c)
        self.pwconv = _conv(c, c, 1)
        self.act = nn.Hardswish()

    def forward(self, x):
        return _per_item(self._forward_one, x)

    def _forward_one(self, x):
        dw, pw = self.offset_generator
        offset = _pointwise(pw, dw(x)).clamp(-1.0, 1.0)
        return self.act(_pointwise(self.pwconv, self.dcn(x, offset)))


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

    def forward(self, x, out=None):
        # Reductions over a short last axis are slow in torch on CPU; the centring and the
        # variance are GEMMs with (I - 1/C) and 1/C instead (two-pass variance, as before).
        c = x.shape[-1]
        eye = torch.eye(c, dtype=x.dtype, device=x.device)
        centred = torch.matmul(x, eye - 1.0 / c)
        var = torch.matmul(centred.mul_(centred), torch.full((c, 1), 1.0 / c, dtype=x.dtype, device=x.device))
        return torch.mul(x, torch.rsqrt(var + 1e-5) * self.weight, out=out)


class LayerNorm2d(nn.Module):
    """``(B, C, H, W)`` → tokens ``(B, H*W, C)`` → ``body`` → ``(B, C, H, W)``."""

    def __init__(self, c: int):
        super().__init__()
        self.body = BiasFreeLayerNormBody(c)

    def forward(self, x):
        # Channels-last: the tokens (B, H, W, C) are a view of the map, and so is the result.
        def one(xi, out=None):
            return _from_tokens(self.body(_tokens(xi), out=None if out is None else _tokens(out)))

        return _per_item(one, x, writes_out=True)


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
        return _per_item(self._forward_one, u, writes_out=True)

    def _forward_one(self, u, out=None):
        b, c, h, w = u.shape
        n, heads = h * w, self.heads
        d = c // heads
        ut = _tokens(u)  # (B, H, W, C)
        s = F.linear(ut.mean(dim=(1, 2)), self.sca[1].weight.flatten(1), self.sca[1].bias)  # (B, C)
        g = self._gate(u)
        qkv = _tokens(self.qkv_dwconv(_pointwise(self.qkv, u))).reshape(b, n, 3, heads, d)
        q, k, v = qkv.unbind(2)  # (B, N, heads, d) each
        # L2 norm of each token over the head's d channels (eps added to the norm).
        # (Sums over the short head axis as GEMMs with the (C, heads) head indicator.)
        onehead = self._block_mask(c, d, u)[:, ::d]
        # q̂ and k̂ are written straight into the refine conv's input, per head [q̂, k̂] (no stack).
        qk = u.new_empty(b, n, heads, 2, d)
        torch.div(q, (torch.matmul((q * q).reshape(b, n, c), onehead).sqrt() + 1e-6).unsqueeze(-1), out=qk[:, :, :, 0])
        torch.div(k, (torch.matmul((k * k).reshape(b, n, c), onehead).sqrt() + 1e-6).unsqueeze(-1), out=qk[:, :, :, 1])
        q, k = qk[:, :, :, 0], qk[:, :, :, 1]
        r = self.refine_att(_from_tokens(qk.view(b, h, w, 2 * c)))  # (B, heads, H, W) channels-last

        q = q.reshape(b, n, c)
        k = k.reshape(b, n, c)
        v = v.reshape(b, n, c)
        block = self._block_mask(c, d, u)  # (C, C), 1 inside a head's d x d block
        kv = torch.matmul(k.transpose(1, 2), v) * block  # (B, C_k, C_v), per-head blocks
        k_sum = k.sum(dim=1)  # (B, C)
        v_sum = v.sum(dim=1, keepdim=True)  # (B, 1, C)
        num = torch.baddbmm(v_sum, q, kv)  # (B, N, C): V + KV^T q̂ per head
        # den per head: N + q̂·K + 1e-6, as a GEMM with the head-indicator (C, heads) matrix.
        k_heads = k_sum.unsqueeze(2) * block[:, ::d].unsqueeze(0)  # (B, C, heads)
        den = torch.matmul(q, k_heads) + (n + 1e-6)  # (B, N, heads)
        scale = self.temperature.view(1, 1, heads) * _tokens(r).reshape(b, n, heads) / den
        # In place on temporaries (same arithmetic, fewer fresh multi-MB allocations, each of
        # which page-faults anew).
        o = num.view(b, n, heads, d).mul_(scale.unsqueeze(-1)).view(b, h, w, c)
        o = o.mul_(s.view(b, 1, 1, c)).mul_(torch.ops.aten.gelu_(_tokens(g)))
        return _linear_out(o, self.project_out.weight.flatten(1), out)

    def _gate(self, u):
        """``dwconv``: 1x1 conv C→2C, then the grouped 3x3 conv (2 inputs per output) computed
        as a depthwise 3x3 conv on the 2C channels plus a pairwise sum (oneDNN's grouped
        kernel is slow for 2 channels per group)."""
        pw, grouped = self.dwconv
        c = grouped.weight.shape[0]
        # Even input channels (2c) first, then odd (2c + 1), so the pair sum adds two halves.
        order = torch.cat([torch.arange(0, 2 * c, 2), torch.arange(1, 2 * c, 2)])
        w_pw = pw.weight.flatten(1)[order]
        w_dw = grouped.weight.transpose(0, 1).reshape(2 * c, 1, 3, 3)  # [w[c, 0] ..., w[c, 1] ...]
        y = _tokens(F.conv2d(_from_tokens(F.linear(_tokens(u), w_pw)), w_dw, padding=1, groups=2 * c))
        return _from_tokens(y[..., :c] + y[..., c:])

    @staticmethod
    def _block_mask(c, d, like):
        head = torch.arange(c, device=like.device) // d
        return (head[:, None] == head[None, :]).to(like.dtype)


class GatedFFN(nn.Module):
    """1x1 conv to 2m → depthwise 3x3 → GELU(a)·b → 1x1 conv back to C; m = int(2.66 C)."""

    def __init__(self, c: int):
        super().__init__()
        m = int(c * FFN_EXPANSION)
        self.project_in = _conv(c, 2 * m, 1)
        self.dwconv = _conv(2 * m, 2 * m, 3, padding=1, groups=2 * m)
        self.project_out = _conv(m, c, 1)

    def forward(self, x):
        return _per_item(self._forward_one, x, writes_out=True)

    def _forward_one(self, x, out=None):
        # The two halves a, b are computed as separate maps so GELU runs on contiguous memory.
        m = self.project_out.weight.shape[1]
        w_in, w_dw = self.project_in.weight.flatten(1), self.dwconv.weight
        a, b = (
            _tokens(F.conv2d(_from_tokens(F.linear(_tokens(x), w_in[sl])), w_dw[sl], padding=1, groups=m))
            for sl in (slice(0, m), slice(m, 2 * m))
        )
        return _linear_out(torch.ops.aten.gelu_(a).mul_(b), self.project_out.weight.flatten(1), out)


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
    return nn.Sequential(_conv(c, c, 3, padding=1, groups=c), _conv(c, c_out // 4, 1), _PixelUnshuffleCL(2))


def _upsample(c, c_out):
    return nn.Sequential(_conv(c, c, 3, padding=1, groups=c), _conv(c, 4 * c_out, 1), _PixelShuffleCL(2))


class _Body(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        dw, pw, shuffle = self.body
        return shuffle(_pointwise(pw, dw(x)))


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
        d2 = _pointwise(self.reduce_chan_level2[0], torch.cat([self.up3_2(lat), e2], dim=1))
        o2 = self._stage("decoder_level2", d2)
        d1 = _pointwise(self.reduce_chan_level1[0], torch.cat([self.up2_1(o2), e1], dim=1))
        o1 = self._stage("decoder_level1", d1)
        m = self.mag_output(self._stage("mag_refinement", o1)) + x0
        p = self.pha_output(self._stage("pha_refinement", o1)) + x0
        return m, p


class MUSE(nn.Module):
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
        # Feature maps are channels-last (B, T, F, C in memory) from the dense encoder's output
        # on: oneDNN's depthwise convolutions are several times faster so, and the per-token
        # LayerNorm, attention and 1x1 convs work on the tokens in place. The dense blocks
        # alone run NCHW (see DenseBlock).
        x = torch.stack([mag_c.transpose(1, 2), pha.transpose(1, 2)], dim=1)
        x0 = self.dense_encoder(x)
        m, p = self.TCFTransformer(x0)
        mask = self.mask_decoder(m)
        est_mag = (mag * mask).squeeze(1).transpose(1, 2)
        est_pha = self.phase_decoder(p).squeeze(1).transpose(1, 2)
        com = torch.stack([est_mag * torch.cos(est_pha), est_mag * torch.sin(est_pha)], dim=-1)
        return est_mag, est_pha, com
