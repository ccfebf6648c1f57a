"""The building blocks of the fast MUSE network (``model.py``): the channels-last helpers it shares
(1x1 convs as GEMMs on tokens, one batch item at a time, channels-last norms and pixel shuffles), the
dense encoder, the mask and phase decoders, and the deformable patch embeddings. Why each is written
so: ``model.py``'s docstring."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.models.muse.deform import deform_conv2d_depthwise
from torch_bridge.native import pointer

DENSE_CHANNELS = 16
BETA = 2.0



def native_kernels(x, module, *, memory_format=torch.channels_last):
    """The C kernels (``torch_bridge.native``) when they apply to ``x`` and ``module``: a float32
    CPU map contiguous in ``memory_format`` (channels-last unless the kernel reads another order),
    no autograd, and the module's parameters float32, on the CPU and contiguous (the kernels read
    them as plain arrays); else None (the torch formulation runs)."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous(memory_format=memory_format):
        return None
    if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
        return None
    if not all(p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous() for p in module.parameters()):
        return None
    from torch_bridge.native import library

    return library()


def hooked(module) -> bool:
    """True when ``module`` has forward hooks of its own (a fused kernel would skip its call)."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def check_rc(rc: int, kernel: str, x) -> None:
    """Raise when a C kernel returned non-zero: it does not handle ``x``'s shape (the callers'
    ``native_applies`` checks keep this from happening; the kernels check again)."""
    if rc != 0:
        raise ValueError(f"The C kernel {kernel} does not handle a map of shape {tuple(x.shape)} (returned {rc}).")


def make_conv(c_in, c_out, kernel=1, *, padding=0, stride=1, dilation=1, groups=1, bias=False):
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias)


def _instance_norm(c):
    return _InstanceNormCL(c, affine=True)


_CL = torch.channels_last


def _cl(x):
    """``x`` in channels-last memory order (a no-op when it already is)."""
    return x.contiguous(memory_format=_CL)


def to_tokens(x):
    """``(B, C, H, W)`` channels-last → ``(B, H, W, C)`` contiguous view (no copy)."""
    return _cl(x).permute(0, 2, 3, 1)


def from_tokens(t):
    """``(B, H, W, C)`` contiguous → ``(B, C, H, W)`` channels-last view."""
    return t.permute(0, 3, 1, 2)


def pointwise(conv, x):
    """A 1x1 conv as one GEMM on the channels-last tokens (oneDNN's 1x1 path and the slow
    NCHW fallback are both slower here)."""
    w = conv.weight
    return from_tokens(F.linear(to_tokens(x), w.reshape(w.shape[0], w.shape[1]), conv.bias))


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_ITEMS = threading.local()  # .running: this thread is inside a side-by-side item run


def item_workers(x) -> int:
    """Threads that run the items of batch ``x`` side by side: torch's intra-op thread count (at most
    the batch size) for a CPU batch of several items outside autograd; 1 otherwise, and inside an
    item run. The C kernels and most of MUSE's small per-item ops use one core each, so a batch
    gains from whole items per core where one item gains little from a second thread."""
    if x.shape[0] < 2 or x.device.type != "cpu" or getattr(_ITEMS, "running", False):
        return 1
    if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
        return 1
    return min(torch.get_num_threads(), x.shape[0])


def run_items(fn, items, workers):
    """``fn(i)`` for each i of ``items`` on ``workers`` threads (this one included), each at one
    torch thread, with the caller's grad and inference modes (thread-local in torch); returns the
    results in order. torch's thread count is process-wide: it is 1 for the duration and restored
    after (another model running at several threads in the same process meanwhile would see 1)."""
    global _POOL
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def one(i):
        _ITEMS.running = True
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return fn(i)
        finally:
            _ITEMS.running = False

    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers - 1:
            _POOL = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="muse-items")
        pool = _POOL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # items dealt round-robin: worker w takes items w, w + workers, ...; this thread is worker 0
        lanes = [items[w::workers] for w in range(workers)]
        futures = [pool.submit(lambda lane: [one(i) for i in lane], lane) for lane in lanes[1:]]
        mine = [one(i) for i in lanes[0]]
        done = [mine] + [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)
    out = [None] * len(items)
    for w, lane in enumerate(done):
        out[w::workers] = lane
    return out


def per_item(forward_one, x, *, writes_out=False, module=None):
    """``forward_one`` on each batch item of ``x``, outputs gathered on the batch axis (memory
    order kept). The items are independent in every layer of MUSE; one at a time, a level-1
    block's working set (~2.5 MB per 16-channel map) stays cache-resident, where a batch of 8
    spilled and ran ~1.6x slower per window than a batch of 1. With several torch threads the
    items run side by side, one per thread (``item_workers``), bit-identical to one at a time.
    With ``writes_out``, ``forward_one(x_i, out=o_i)`` writes the items after the first round
    straight into their slice of the batch output (no gathering copy). ``module``: the caller;
    a forward hook on it or any module inside keeps the items in order on this thread (a hook
    called per item sees them one after another, as a capture expects)."""
    B = x.shape[0]
    if B == 1:
        return forward_one(x)
    workers = item_workers(x)
    if workers > 1 and module is not None and any(hooked(m) for m in module.modules()):
        workers = 1
    head = run_items(lambda i: forward_one(x[i : i + 1]), range(workers), workers)
    first = head[0]
    fmt = torch.contiguous_format if first.is_contiguous() else _CL
    out = torch.empty((B, *first.shape[1:]), dtype=first.dtype, device=first.device, memory_format=fmt)
    for i, o in enumerate(head):
        out[i : i + 1] = o

    def rest(i):
        if writes_out:
            forward_one(x[i : i + 1], out=out[i : i + 1])
        else:
            out[i : i + 1] = forward_one(x[i : i + 1])

    run_items(rest, range(workers, B), workers)
    return out


def linear_out(t, weight, out=None):
    """``F.linear(t, weight)`` on tokens (B, H, W, K) → (B, C, H, W) channels-last, written into
    ``out`` (a channels-last (B, C, H, W) map) when given; the same matmul either way."""
    if out is None:
        return from_tokens(F.linear(t, weight))
    torch.matmul(t, weight.t(), out=to_tokens(out))
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
        t = to_tokens(x).reshape(b, h * w, c)
        t64 = t.double()
        ones = torch.full((1, h * w), 1.0 / (h * w), dtype=torch.float64, device=x.device)
        mean = torch.matmul(ones, t64)  # (B, 1, C)
        var = torch.matmul(ones, t64 * t64) - mean * mean
        alpha = torch.rsqrt(var + self.eps) * self.weight.double()
        beta = (self.bias.double() - mean * alpha).to(x.dtype)
        out = torch.addcmul(beta, t, alpha.to(x.dtype))
        return from_tokens(out.view(b, h, w, c))


def norm_prelu(lib, norm, act, y):
    """``act(norm(y))`` for an ``_InstanceNormCL`` and a ``nn.PReLU``: with the C kernels
    (``lib``, from ``native_kernels``) one ``norm_prelu_cl`` call on each channels-last item of
    16 channels or 1 (in place: ``y`` must be a temporary of the caller), the statistics as
    ``_InstanceNormCL``'s (float64) and one pass for the affine map and the PReLU, where the
    torch formulation writes and re-reads float64 copies of the map (a phase decoder's 16 x 308 x
    256: ~8 ms -> ~0.5 ms); else, or when a hook waits on either module, the two module calls."""
    c = y.shape[1]
    if (lib is None or c not in (1, 16) or act.weight.numel() not in (1, c) or hooked(norm) or hooked(act)
            or not y.is_contiguous(memory_format=_CL) or not norm.affine):
        return act(norm(y))
    h, w = y.shape[2:]
    for i in range(y.shape[0]):
        yi = to_tokens(y[i : i + 1])
        check_rc(lib.norm_prelu_cl(pointer(yi), c, pointer(norm.weight), pointer(norm.bias), pointer(act.weight),
                                   act.weight.numel(), pointer(yi), c, h * w, c), "norm_prelu_cl", y)
    return y


class PixelShuffleCL(nn.PixelShuffle):
    """``PixelShuffle`` on channels-last maps: ``out[b, c, r*y+i, r*x+j] = in[b, r*r*c + r*i + j, y, x]``."""

    def forward(self, x):
        r = self.upscale_factor
        b, c, h, w = x.shape
        t = to_tokens(x).reshape(b, h, w, c // (r * r), r, r).permute(0, 1, 4, 2, 5, 3)
        return from_tokens(t.reshape(b, h * r, w * r, c // (r * r)))


class PixelUnshuffleCL(nn.PixelUnshuffle):
    """``PixelUnshuffle`` on channels-last maps: ``out[b, r*r*c + r*i + j, y, x] = in[b, c, r*y+i, r*x+j]``."""

    def forward(self, x):
        r = self.downscale_factor
        b, c, h, w = x.shape
        t = to_tokens(x).reshape(b, h // r, r, w // r, r, c).permute(0, 1, 3, 5, 2, 4)
        return from_tokens(t.reshape(b, h // r, w // r, c * r * r))


# ----------------------------------------------------------------------------- dense parts
class DenseBlock(nn.Module):
    """Four dilated (time axis) 3x3 conv steps with dense, newest-first concatenation.

    Returns only the last step's output, ``(B, 16, T, F)``.
    """

    def __init__(self, channels: int = DENSE_CHANNELS, depth: int = 4):
        super().__init__()
        self.dense_block = nn.ModuleList(
            nn.Sequential(
                make_conv(channels * (i + 1), channels, 3, padding=(2**i, 1), dilation=(2**i, 1), bias=True),
                _instance_norm(channels),
                nn.PReLU(channels),
            )
            for i in range(depth)
        )

    def forward(self, x):
        lib = None
        if x.shape[1] == 16 and not any(hooked(m) for step in self.dense_block for m in (step, *step)):
            x_cl = _cl(x)  # one conversion (a no-op for the decoders' channels-last input)
            lib = native_kernels(x_cl, self)
        if lib is not None:
            return per_item(lambda xi: self._native_one(lib, xi), x_cl, module=self)
        return per_item(self._forward_one, x.contiguous(), module=self)

    def _native_one(self, lib, x):
        """``dense_step`` (torch_bridge/native/muse_kernels.c) four times on a channels-last
        buffer [y2, y1, y0, x] (pixel stride 64): step i reads the channel suffix that holds
        its inputs and writes its normalised, activated output into the slot before it; the
        last step's output is the block's, channels-last."""
        _, c, h, w = x.shape
        buf = self.native_buffer(x, h, w)
        lib.copy_pixels(pointer(x), c, 1, h * w, c, pointer(buf[..., buf.shape[-1] - c :]), buf.shape[-1])
        return self.native_steps(lib, buf)

    def native_buffer(self, like, h: int, w: int):
        """The (1, h, w, 16 * depth) buffer of ``native_steps`` (``like``'s dtype and device); its last
        16 channels take the input."""
        return like.new_empty(1, h, w, DENSE_CHANNELS * len(self.dense_block))

    def native_steps(self, lib, buf):
        """The steps of ``_native_one`` on a buffer whose last 16 channels hold the input (a caller
        that computes the input can write it there: ``DenseEncoder``)."""
        _, h, w, _ = buf.shape
        c, depth = DENSE_CHANNELS, len(self.dense_block)
        out = buf.new_empty(1, h, w, c)
        for i, (conv, norm, act) in enumerate(self.dense_block):
            dst, stride = (buf[..., (depth - 2 - i) * c :], c * depth) if i < depth - 1 else (out, c)
            lib.dense_step(pointer(buf[..., (depth - 1 - i) * c :]), c * depth, pointer(conv.weight),
                           pointer(conv.bias), pointer(norm.weight), pointer(norm.bias), pointer(act.weight),
                           pointer(dst), stride, h, w, c * (i + 1), conv.dilation[0])
        return from_tokens(out)

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
        self.dense_conv_1 = nn.Sequential(make_conv(2, c, 1, bias=True), _instance_norm(c), nn.PReLU(c))
        self.dense_block = DenseBlock(c)
        self.dense_conv_2 = nn.Sequential(
            make_conv(c, c, (1, 3), stride=(1, 2), padding=(0, 1), bias=True), _instance_norm(c), nn.PReLU(c)
        )

    def forward(self, x):
        return per_item(self._forward_one, x, module=self)

    def _forward_one(self, x):
        lib = None
        if x.shape[1] == 2 and not any(hooked(m) for m in self.modules() if m is not self):
            lib = native_kernels(x, self, memory_format=torch.contiguous_format)
        if lib is None:
            return _cl(self.dense_conv_2(self.dense_block(self.dense_conv_1(x))))
        # dense_conv_1 as modules (torch's NCHW conv, InstanceNorm and PReLU: the values every path
        # has had), copied by copy_pixels (torch_bridge/native/muse_kernels.c) straight into the
        # dense block's buffer (no channels-last copy of the map first); then the block's steps, and
        # dense_conv_2's strided conv with its InstanceNorm and PReLU in place (norm_prelu).
        _, _, h, w = x.shape
        y1 = self.dense_conv_1(x).contiguous()
        buf = self.dense_block.native_buffer(x, h, w)
        lib.copy_pixels(pointer(y1), 1, h * w, h * w, DENSE_CHANNELS, pointer(buf[..., buf.shape[-1] - DENSE_CHANNELS :]),
                        buf.shape[-1])
        y = self.dense_block.native_steps(lib, buf)
        conv2, norm2, act2 = self.dense_conv_2
        return norm_prelu(lib, norm2, act2, _cl(conv2(y)))


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
    y = F.linear(to_tokens(x), w).reshape(b, h, wid * 2, c)  # (B, T, 2F, C): column 2f + j
    y = F.conv2d(from_tokens(y), dw.weight, padding=(0, 1), groups=c)
    i = 0
    while i < len(rest):
        m = rest[i]
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            y = pointwise(m, y)
        elif isinstance(m, _InstanceNormCL) and i + 1 < len(rest) and isinstance(rest[i + 1], nn.PReLU):
            y = norm_prelu(native_kernels(y, m), m, rest[i + 1], y)
            i += 1
        else:
            y = m(y)
        i += 1
    return y


def _pointwise_pair(conv_a, conv_b, x):
    """Two 1x1 convs on the same input as one GEMM; output channels [a, b]."""
    w = torch.cat([conv_a.weight, conv_b.weight]).flatten(1)
    bias = torch.cat([conv_a.bias, conv_b.bias])
    return from_tokens(F.linear(to_tokens(x), w, bias))


class MaskDecoder(nn.Module):
    """``(B, 16, T, 128)`` → mask ``(B, 1, T, 256)`` in (0, beta)."""

    def __init__(self, c: int = DENSE_CHANNELS):
        super().__init__()
        self.dense_block = DenseBlock(c)
        self.mask_conv = nn.Sequential(
            make_conv(c, 4 * c, 1),
            nn.PixelShuffle(2),
            make_conv(c, c, (1, 3), stride=(2, 1), padding=(0, 1), groups=c),
            make_conv(c, 1, 1, bias=True),
            _instance_norm(1),
            nn.PReLU(1),
            make_conv(1, 1, 1, bias=True),
        )
        self.lsigmoid = LearnableSigmoid()

    def forward(self, x):
        return per_item(self._forward_one, x, module=self)

    def _forward_one(self, x):
        return self.lsigmoid(_mask_tail(self.mask_conv, self.dense_block(x)))


class PhaseDecoder(nn.Module):
    """``(B, 16, T, 128)`` → phase ``(B, 1, T, 256)`` in (-pi, pi]."""

    def __init__(self, c: int = DENSE_CHANNELS):
        super().__init__()
        self.dense_block = DenseBlock(c)
        self.phase_conv = nn.Sequential(
            make_conv(c, 4 * c, 1),
            nn.PixelShuffle(2),
            make_conv(c, c, (1, 3), stride=(2, 1), padding=(0, 1), groups=c),
            _instance_norm(c),
            nn.PReLU(c),
        )
        self.phase_conv_r = make_conv(c, 1, 1, bias=True)
        self.phase_conv_i = make_conv(c, 1, 1, bias=True)

    def forward(self, x):
        return per_item(self._forward_one, x, module=self)

    def _forward_one(self, x):
        x = _mask_tail(self.phase_conv, self.dense_block(x))
        ri = _pointwise_pair(self.phase_conv_r, self.phase_conv_i, x)
        return torch.atan2(ri[:, 1:2], ri[:, 0:1])


# ----------------------------------------------------------------------------- embeddings
class DeformConv(nn.Module):
    """Weight holder for the depthwise deformable 3x3 conv (``dcn.weight`` of shape (C, 1, 3, 3))."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c, 1, 3, 3))

    def forward(self, x, offset):
        return deform_conv2d_depthwise(x, offset, self.weight, method="native")


class DeformPatchConv(nn.Module):
    """Offsets (clamped to [-1, 1]) → deformable depthwise conv → 1x1 conv → Hardswish."""

    def __init__(self, c: int):
        super().__init__()
        self.offset_generator = nn.Sequential(make_conv(c, c, 3, padding=1, groups=c), make_conv(c, 18, 1))
        self.dcn = DeformConv(c)
        self.pwconv = make_conv(c, c, 1)
        self.act = nn.Hardswish()

    def forward(self, x):
        lib = None
        if x.shape[1] in (16, 32, 48) and not any(hooked(m) for m in self.modules() if m is not self):
            lib = native_kernels(_cl(x), self)
        if lib is not None:
            return per_item(lambda xi: self._native_one(lib, xi), _cl(x), module=self)
        return per_item(self._forward_one, x, module=self)

    def _native_one(self, lib, x):
        """``deform_embed`` (torch_bridge/native/muse_kernels.c): offsets, sampling, 1x1 conv and
        Hardswish per pixel in one pass (the offsets never reach memory)."""
        _, c, h, w = x.shape
        out = torch.empty_like(x, memory_format=_CL)
        dw, pw = self.offset_generator
        rc = lib.deform_embed(pointer(x), pointer(dw.weight), pointer(pw.weight), pointer(self.dcn.weight),
                              pointer(self.pwconv.weight), pointer(out), h, w, c)
        check_rc(rc, "deform_embed", x)
        return out

    def _forward_one(self, x):
        dw, pw = self.offset_generator
        offset = pointwise(pw, dw(x)).clamp(-1.0, 1.0)
        return self.act(pointwise(self.pwconv, self.dcn(x, offset)))


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
