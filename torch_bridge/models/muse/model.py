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

This is the fast formulation (issue 19); ``reference.MUSEReference`` is the first,
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
FFNs run one batch item at a time (``blocks.per_item``: a batch of 8 spilled the cache and ran
slower per window than 1), the last three writing into their slice of the batch output.
Forward hooks see the same ``(B, C, T, F)`` shapes as before (channels-last strides).

On CPU in float32 without autograd (and with float32, contiguous parameters), these parts run
as C kernels (``torch_bridge.native``, compiled on first use; the torch formulation above stays
the fallback and the yardstick): the deformable sampling (``deform_dw3x3``), the dense blocks
(``dense_step``: dilated conv, InstanceNorm, PReLU; their input copied by ``copy_pixels``), the
InstanceNorm + PReLU after the encoder's strided conv and in the decoders' tails (``norm_prelu_cl``),
the LayerNorms (``layer_norm_cl``), the
gated FFN (``gated_ffn``), the Taylor attention of the 16- and 32-channel levels
(``taylor_attention_d16``), and, in ``TransformerBlock``, norm2 and both residual adds folded
into those two (``ffn_block``). Each walks the map once row by row with its intermediates in
the cache, where the torch formulation writes and re-reads each multi-megabyte intermediate
(bench/bench_muse.py gives the same-run ratio). The probed norm1 stays a module call; a hook
on a fused module (its own forward or pre-forward hook) makes that block run module by module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.models.muse.blocks import (DenseEncoder, MaskDecoder, PatchEmbed, PhaseDecoder, PixelShuffleCL,
                                            PixelUnshuffleCL, check_rc, from_tokens, hooked, item_workers, linear_out,
                                            make_conv, native_kernels, per_item, pointwise, run_items, to_tokens)
from torch_bridge.native import pointer

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
        c = x.shape[1]
        lib = native_kernels(x, self) if c in (16, 32, 48) and not hooked(self.body) else None
        if lib is not None:  # layer_norm_cl (torch_bridge/native/muse_kernels.c): one pass
            out = torch.empty_like(x, memory_format=torch.channels_last)
            pixels = x[0].numel() // c

            def one(i):  # items side by side at several torch threads (blocks.run_items)
                check_rc(lib.layer_norm_cl(pointer(x[i]), pointer(self.body.weight), pointer(out[i]), pixels, c),
                         "layer_norm_cl", x)

            run_items(one, range(x.shape[0]), item_workers(x))
            return out

        # Channels-last: the tokens (B, H, W, C) are a view of the map, and so is the result.
        def one(xi, out=None):
            return from_tokens(self.body(to_tokens(xi), out=None if out is None else to_tokens(out)))

        return per_item(one, x, writes_out=True, module=self)


class RefineAttention(nn.Module):
    """Per-head position weight from the normalised q and k: ``(B, 2*d*h, H, W)`` → ``(B, h, H, W)``."""

    def __init__(self, head_dim: int, heads: int):
        super().__init__()
        self.splits = []
        convs = []
        for n_heads, k in _REFINE_GROUPS[heads]:
            convs.append(make_conv(2 * head_dim * n_heads, n_heads, k, padding=k // 2, groups=n_heads, bias=True))
            self.splits.append(2 * head_dim * n_heads)
        self.conv_list = nn.ModuleList(convs)

    def forward(self, qk):
        parts = torch.split(qk, self.splits, dim=1)
        return torch.sigmoid(torch.cat([self._conv(conv, p) for conv, p in zip(self.conv_list, parts)], dim=1))

    @staticmethod
    def _conv(conv, p):
        """One grouped refine conv (2d inputs, one output per group) as a depthwise conv over its
        2 d h inputs, each with its own k x k kernel, then the per-group sum as a GEMM on the
        channels-last tokens, plus the bias: the same sum (float32, another order). oneDNN's
        grouped kernel ran these 12-input, 1-output groups at ~7 GFLOP/s (latent, 77 x 32, 7 x 7:
        1.23 -> 0.24 ms; 5 x 5: 0.68 -> 0.19 ms; 3 x 3: 0.22 -> 0.13 ms, and 1.8e-7 vs 7.8e-7 from
        float64). A hooked conv is called as the module."""
        if hooked(conv) or p.dtype not in (torch.float32, torch.float64):
            return conv(p)
        g, c_in, k = conv.weight.shape[:3]
        y = F.conv2d(p.contiguous(memory_format=torch.channels_last), conv.weight.reshape(g * c_in, 1, k, k),
                     padding=conv.padding, groups=g * c_in)
        heads = TaylorAttention._block_mask(g * c_in, c_in, p)[::c_in]  # (g, g * c_in): 1 on each head's inputs
        return from_tokens(F.linear(to_tokens(y), heads, conv.bias))


class TaylorAttention(nn.Module):
    """Gated first-order Taylor linear attention over all T*F tokens (spec §3.5)."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), make_conv(c, c, 1, bias=True))
        self.dwconv = nn.Sequential(make_conv(c, 2 * c, 1), make_conv(2 * c, c, 3, padding=1, groups=c))
        self.qkv = make_conv(c, 3 * c, 1)
        self.qkv_dwconv = make_conv(3 * c, 3 * c, 3, padding=1, groups=3 * c)
        self.project_out = make_conv(c, c, 1)
        self.refine_att = RefineAttention(c // heads, heads)

    def forward(self, u):
        return per_item(self._forward_one, u, writes_out=True, module=self)

    def _forward_one(self, u, out=None):
        b, c, h, w = u.shape
        lib = native_kernels(u, self) if self.native_applies(c) else None
        if lib is not None:
            return self._native_one(lib, u, out)
        n, heads = h * w, self.heads
        d = c // heads
        ut = to_tokens(u)  # (B, H, W, C)
        s = F.linear(ut.mean(dim=(1, 2)), self.sca[1].weight.flatten(1), self.sca[1].bias)  # (B, C)
        g = self._gate(u)
        qkv = to_tokens(self.qkv_dwconv(pointwise(self.qkv, u))).reshape(b, n, 3, heads, d)
        q, k, v = qkv.unbind(2)  # (B, N, heads, d) each
        # L2 norm of each token over the head's d channels (eps added to the norm).
        # (Sums over the short head axis as GEMMs with the (C, heads) head indicator.)
        onehead = self._block_mask(c, d, u)[:, ::d]
        # q̂ and k̂ are written straight into the refine conv's input, per head [q̂, k̂] (no stack).
        qk = u.new_empty(b, n, heads, 2, d)
        torch.div(q, (torch.matmul((q * q).reshape(b, n, c), onehead).sqrt() + 1e-6).unsqueeze(-1), out=qk[:, :, :, 0])
        torch.div(k, (torch.matmul((k * k).reshape(b, n, c), onehead).sqrt() + 1e-6).unsqueeze(-1), out=qk[:, :, :, 1])
        q, k = qk[:, :, :, 0], qk[:, :, :, 1]
        r = self.refine_att(from_tokens(qk.view(b, h, w, 2 * c)))  # (B, heads, H, W) channels-last

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
        scale = self.temperature.view(1, 1, heads) * to_tokens(r).reshape(b, n, heads) / den
        # In place on temporaries (same arithmetic, fewer fresh multi-MB allocations, each of
        # which page-faults anew).
        o = num.view(b, n, heads, d).mul_(scale.unsqueeze(-1)).view(b, h, w, c)
        o = o.mul_(s.view(b, 1, 1, c)).mul_(torch.ops.aten.gelu_(to_tokens(g)))
        return linear_out(o, self.project_out.weight.flatten(1), out)

    def native_applies(self, c: int) -> bool:
        """True when ``taylor_attention_d16`` computes this attention (heads of 16 channels, at most
        two) and no hook waits on a module inside that it would skip (the qkv and project convs,
        the channel attention, the refine convs)."""
        return c == 16 * self.heads <= 32 and not any(hooked(m) for m in self.modules() if m is not self)

    def _native_one(self, lib, u, out, residual=None):
        """``taylor_attention_d16`` (torch_bridge/native/muse_kernels.c) on one channels-last item:
        the same arithmetic in two passes over the rows, no map-sized intermediate but the
        (H+2, W+2, 2C) q̂/k̂ scratch; with ``residual``, ``out = residual + attention``."""
        _, c, h, w = u.shape
        if out is None:
            out = torch.empty_like(u, memory_format=torch.channels_last)
        scratch = u.new_empty((h + 2) * (w + 2) * 2 * c)
        conv_r = self.refine_att.conv_list[0]
        rc = lib.taylor_attention_d16(
            pointer(u), pointer(self.sca[1].weight), pointer(self.sca[1].bias), pointer(self.dwconv[0].weight),
            pointer(self.dwconv[1].weight), pointer(self.qkv.weight), pointer(self.qkv_dwconv.weight),
            pointer(conv_r.weight), pointer(conv_r.bias), pointer(self.temperature), pointer(self.project_out.weight),
            None if residual is None else pointer(residual), pointer(scratch), pointer(out), h, w, self.heads)
        check_rc(rc, "taylor_attention_d16", u)
        return out

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
        y = to_tokens(F.conv2d(from_tokens(F.linear(to_tokens(u), w_pw)), w_dw, padding=1, groups=2 * c))
        return from_tokens(y[..., :c] + y[..., c:])

    @staticmethod
    def _block_mask(c, d, like):
        head = torch.arange(c, device=like.device) // d
        return (head[:, None] == head[None, :]).to(like.dtype)


class GatedFFN(nn.Module):
    """1x1 conv to 2m → depthwise 3x3 → GELU(a)·b → 1x1 conv back to C; m = int(2.66 C)."""

    def __init__(self, c: int):
        super().__init__()
        m = int(c * FFN_EXPANSION)
        self.project_in = make_conv(c, 2 * m, 1)
        self.dwconv = make_conv(2 * m, 2 * m, 3, padding=1, groups=2 * m)
        self.project_out = make_conv(m, c, 1)

    def forward(self, x):
        return per_item(self._forward_one, x, writes_out=True, module=self)

    def native_applies(self, c: int) -> bool:
        """True when the C kernels compute this FFN (C a multiple of 16, at most 48; at most 128
        hidden channels per half). (Both paths read the convs' weights; neither calls them as modules.)"""
        return c % 16 == 0 and c <= 48 and self.project_out.weight.shape[1] <= 128

    def _native_one(self, lib, x, out, ln_weight=None):
        """``gated_ffn`` (torch_bridge/native/muse_kernels.c) on one channels-last item: one pass
        over the rows, the 2M-channel intermediates never leave the cache. With ``ln_weight``
        (``ffn_block``): ``out = x + ffn(LayerNorm(x))``, and ``out`` may be ``x``."""
        _, c, h, w = x.shape
        m = self.project_out.weight.shape[1]
        if out is None:
            out = torch.empty_like(x, memory_format=torch.channels_last)
        weights = (pointer(self.project_in.weight), pointer(self.dwconv.weight), pointer(self.project_out.weight))
        if ln_weight is None:
            rc = lib.gated_ffn(pointer(x), *weights, pointer(out), h, w, c, m)
        else:
            rc = lib.ffn_block(pointer(x), pointer(ln_weight), *weights, pointer(out), h, w, c, m)
        check_rc(rc, "gated_ffn" if ln_weight is None else "ffn_block", x)
        return out

    def _forward_one(self, x, out=None):
        m = self.project_out.weight.shape[1]
        lib = native_kernels(x, self) if self.native_applies(x.shape[1]) else None
        if lib is not None:
            return self._native_one(lib, x, out)
        # The two halves a, b are computed as separate maps so GELU runs on contiguous memory.
        w_in, w_dw = self.project_in.weight.flatten(1), self.dwconv.weight
        a, b = (
            to_tokens(F.conv2d(from_tokens(F.linear(to_tokens(x), w_in[sl])), w_dw[sl], padding=1, groups=m))
            for sl in (slice(0, m), slice(m, 2 * m))
        )
        return linear_out(torch.ops.aten.gelu_(a).mul_(b), self.project_out.weight.flatten(1), out)


class TransformerBlock(nn.Module):
    """``y = x + attn(norm1(x)); z = y + ffn(norm2(y))``.

    With the C kernels (levels 1 and 2), norm1 runs as a module (its output is the probed map,
    and its hooks fire); then, per batch item, ``taylor_attention_d16`` writes
    ``y = x + attn(u)`` and ``ffn_block`` turns ``y`` into ``y + ffn(norm2(y))`` in place: the
    residual adds and norm2 are folded into the kernels' row passes. Where a hook waits on
    attn, norm2 or ffn (or their kernels do not apply) the modules run one by one as above.
    """

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.norm1 = LayerNorm2d(c)
        self.attn = TaylorAttention(c, heads)
        self.norm2 = LayerNorm2d(c)
        self.ffn = GatedFFN(c)

    def forward(self, x):
        c = x.shape[1]
        lib = None
        if (self.attn.native_applies(c) and self.ffn.native_applies(c)
                and not any(hooked(m) for m in (*self.attn.modules(), *self.norm2.modules(), self.ffn))):
            lib = native_kernels(x, self)
        if lib is None:
            x = x + self.attn(self.norm1(x))
            return x + self.ffn(self.norm2(x))
        u = self.norm1(x).contiguous(memory_format=torch.channels_last)  # a no-op unless a hook replaced it
        y = torch.empty_like(x, memory_format=torch.channels_last)

        def one(i):
            yi = y[i : i + 1]
            self.attn._native_one(lib, u[i : i + 1], yi, residual=x[i : i + 1])
            self.ffn._native_one(lib, yi, yi, ln_weight=self.norm2.body.weight)

        run_items(one, range(x.shape[0]), item_workers(x))
        return y


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
        self.conv_du = nn.Sequential(make_conv(c, d, 1), nn.PReLU(1))
        self.fcs = nn.ModuleList([make_conv(d, c, 1)])

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
    return nn.Sequential(make_conv(c, c, 3, padding=1, groups=c), make_conv(c, c_out // 4, 1), PixelUnshuffleCL(2))


def _upsample(c, c_out):
    return nn.Sequential(make_conv(c, c, 3, padding=1, groups=c), make_conv(c, 4 * c_out, 1), PixelShuffleCL(2))


class _Body(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        dw, pw, shuffle = self.body
        return shuffle(pointwise(pw, dw(x)))


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
        self.reduce_chan_level2 = nn.Sequential(make_conv(64, 32, 1))
        self.up2_1 = _Body(_upsample(32, 16))
        self.reduce_chan_level1 = nn.Sequential(make_conv(32, 16, 1))
        self.mag_output = nn.Sequential(make_conv(16, 16, 3, padding=1))
        self.pha_output = nn.Sequential(make_conv(16, 16, 3, padding=1))

    def _stage(self, name, x):
        return getattr(self, name)(getattr(self, _EMBED_NAMES[name])(x)) + x

    def forward(self, x0):
        e1 = self._stage("encoder_level1", x0)
        i2 = self.down1_2(e1)
        e2 = self._stage("encoder_level2", i2)
        i3 = self.down2_3(e2)
        lat = self._stage("latent", i3)
        d2 = pointwise(self.reduce_chan_level2[0], torch.cat([self.up3_2(lat), e2], dim=1))
        o2 = self._stage("decoder_level2", d2)
        d1 = pointwise(self.reduce_chan_level1[0], torch.cat([self.up2_1(o2), e1], dim=1))
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
