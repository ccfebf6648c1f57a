"""Deformable convolution v1, depthwise, with one offset group, written with plain torch.

The convention is torchvision's ``deform_conv2d`` (MUSE was trained with it): for output
position (y, x) and kernel tap (i, j) of a ``kh x kw`` kernel, tap k = i*kw + j reads offset
channel 2k as the vertical displacement Δy and channel 2k+1 as the horizontal one Δx; it
samples the input at ``(y - pad_h + i + Δy, x - pad_w + j + Δx)`` by bilinear interpolation
from the four integer neighbours, and neighbours outside the map contribute zero.

The sampling positions are shared by all channels (one offset group), so they are computed
once per tap. Two vectorised samplers give the same result (no Python loop over pixels,
channels or batch items):

* ``method="grid"`` (default, ~3x faster on CPU): torch's ``grid_sample`` (bilinear, zero
  padding, ``align_corners=True``) on a float64 copy. The positions are computed in the input
  dtype exactly as torchvision does, then normalised to [-1, 1] in float64, where the round
  trip back to pixels is exact to ~1e-14 px; in float32 it would shift samples by up to
  ~1e-5 px (about 3e-5 relative error at the first MUSE embedding).
* ``method="grid_cl"`` (the fast MUSE's): the same float64 ``grid_sample``, on a
  channels-last copy (the C values of a pixel are adjacent, so each sample reads one cache
  line per corner instead of C), one batch item, one tap and one chunk of ~32 output rows at a
  time (the all-taps sample tensor is 9x the input in float64, which thrashed the cache at
  batch 8; per chunk the samples and the float64 accumulator stay in L2), the taps
  accumulated in float64 by ``addcmul_`` and one rounding to the input dtype at the end; the
  positions are built in the channels-last order of the offsets (no strided copies). The
  result is channels-last. (A float32 gather of the four corners and a fixed-window "tent"
  formulation were measured too: both exact to rounding, both 2-4x slower than this in torch.)
* ``method="native"``: the ``grid_cl`` arithmetic in C (``torch_bridge.native``, the
  ``deform_dw3x3`` kernel): the same float32 positions, float64 interpolation in grid_sample's
  corner order, float64 tap accumulation and one rounding; it agrees with ``grid_cl`` to one
  float32 ulp, in a few values per million (grid_sample's round trip through [-1, 1]
  coordinates moves a float64 weight by ~1e-16; tests/torch_bridge/test_native.py), and is
  ~5x faster. It falls back to ``grid_cl`` where the C kernels are unavailable or the input is
  not a float32 CPU 3x3 case.
* ``method="gather"``: the four neighbours of every sample by one row gather on a
  channels-last copy of the input, with explicit bilinear weights; the plain formula.
"""
from __future__ import annotations

import torch


def deform_conv2d_depthwise(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, *, method: str = "grid"
) -> torch.Tensor:
    """Depthwise deformable convolution, stride 1, dilation 1, "same" zero padding.

    Parameters
    ----------
    x : tensor of shape (B, C, H, W)
    offset : tensor of shape (B, 2*kh*kw, H, W)
        Channel 2k is Δy and 2k+1 is Δx of tap k (row-major taps).
    weight : tensor of shape (C, 1, kh, kw)
        One kernel per channel; kh and kw odd (padding (kh-1)/2, (kw-1)/2).
    method : {"grid", "grid_cl", "native", "gather"}
        Sampler; see the module docstring. Both agree to float rounding.

    Returns
    -------
    tensor of shape (B, C, H, W)
    """
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    n_taps = kh * kw
    if offset.shape != (b, 2 * n_taps, h, w):
        raise ValueError(
            f"The 'offset' parameter of deform_conv2d_depthwise must have shape {(b, 2 * n_taps, h, w)}; "
            f"got {tuple(offset.shape)}."
        )
    if method not in ("grid", "grid_cl", "native", "gather"):
        raise ValueError(
            "The 'method' parameter of deform_conv2d_depthwise must be 'grid', 'grid_cl', 'native' or 'gather'; "
            f"got {method!r}."
        )
    if method == "native":
        out = _native(x, offset, weight)
        if out is not None:
            return out
        method = "grid_cl"
    if method == "grid_cl" and h > 1 and w > 1:
        return _grid_cl(x, offset, weight)
    dtype = x.dtype
    off = offset.reshape(b, n_taps, 2, h, w)
    tap = torch.arange(n_taps, device=x.device)
    ti = (tap // kw - (kh - 1) // 2).to(dtype).view(1, n_taps, 1, 1)
    tj = (tap % kw - (kw - 1) // 2).to(dtype).view(1, n_taps, 1, 1)
    ys = torch.arange(h, device=x.device, dtype=dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, 1, w)
    py = ys + ti + off[:, :, 0]  # (B, taps, H, W) sampling rows, as torchvision computes them
    px = xs + tj + off[:, :, 1]
    kernel = weight.reshape(c, n_taps)
    if method == "grid" and h > 1 and w > 1:
        grid = torch.stack([px.double() * (2.0 / (w - 1)) - 1.0, py.double() * (2.0 / (h - 1)) - 1.0], dim=-1)
        samples = torch.nn.functional.grid_sample(
            x.double(), grid.reshape(b, n_taps * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=True
        ).to(dtype)  # (B, C, taps*H, W)
        return torch.einsum("bckhw,ck->bchw", samples.reshape(b, c, n_taps, h, w), kernel).contiguous()
    return _gather_sample_and_reduce(x, py, px, kernel)


def _native(x, offset, weight):
    """The C kernel on each batch item (channels-last result), or None where it does not apply."""
    from torch_bridge.native import library, pointer

    b, c, h, w = x.shape
    if (x.dtype != torch.float32 or offset.dtype != torch.float32 or weight.dtype != torch.float32
            or x.device.type != "cpu" or tuple(weight.shape[-2:]) != (3, 3) or c > 64):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, offset, weight)):
        return None  # the kernel has no backward
    lib = library()
    if lib is None:
        return None
    xt = x.permute(0, 2, 3, 1).contiguous()  # no copy when x is channels-last
    ot = offset.permute(0, 2, 3, 1).contiguous()
    wt = weight.reshape(c, 9).contiguous()
    out = torch.empty(b, h, w, c, dtype=x.dtype)
    for bi in range(b):
        lib.deform_dw3x3(pointer(xt[bi]), pointer(ot[bi]), pointer(wt), pointer(out[bi]), h, w, c)
    return out.permute(0, 3, 1, 2)


def _gather_sample_and_reduce(x, py, px, kernel):
    b, c, h, w = x.shape
    n_taps = kernel.shape[1]
    dtype = x.dtype
    y0f = torch.floor(py)
    x0f = torch.floor(px)
    ly = py - y0f
    lx = px - x0f
    y0 = y0f.long()
    x0 = x0f.long()

    # Channels-last rows: row index b*H*W + y*W + x holds the C values of that pixel.
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
    base = (torch.arange(b, device=x.device) * (h * w)).view(b, 1, 1, 1)
    out = None
    for dy, wy in ((0, 1.0 - ly), (1, ly)):
        yy = y0 + dy
        in_y = (yy >= 0) & (yy < h)
        for dx, wx in ((0, 1.0 - lx), (1, lx)):
            xx = x0 + dx
            valid = in_y & (xx >= 0) & (xx < w)
            wgt = torch.where(valid, wy * wx, torch.zeros((), dtype=dtype, device=x.device))
            idx = base + yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)
            term = rows.index_select(0, idx.reshape(-1)).view(b, n_taps, h, w, c) * wgt.unsqueeze(-1)
            out = term if out is None else out + term
    # out: sampled values (B, taps, H, W, C); contract the taps with the per-channel kernel.
    y = torch.einsum("bkhwc,ck->bchw", out, kernel)
    return y.contiguous()


# Rows of output per grid_sample call in ``_grid_cl``: the float64 samples and the accumulator of
# one chunk (2 x rows x W x C x 8 bytes, 0.5 MB at MUSE's first level) stay in the L2 cache.
_CL_CHUNK_ELEMS = 32 * 128 * 16


def _grid_cl(x, offset, weight):
    """The ``grid_cl`` sampler: float64 ``grid_sample`` on a channels-last copy of each batch item,
    one tap and one chunk of output rows at a time, the taps accumulated in float64 by
    ``addcmul_`` in the chunk (cache-resident); one rounding to the input dtype per output.

    The positions are those of ``deform_conv2d_depthwise``: ``(y + i - pad) + Δy`` and
    ``(x + j - pad) + Δx`` rounded once in the input dtype (as torchvision computes them), then
    normalised in float64. They are built in the (B, H, W, taps, 2) order of a channels-last
    offset map, so no strided copy of the offsets is made; the values are bit-identical.
    """
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    n_taps = kh * kw
    dtype = x.dtype
    tap = torch.arange(n_taps, device=x.device)
    rows_i = torch.arange(h, device=x.device).view(h, 1, 1) + (tap // kw - (kh - 1) // 2)
    cols_j = torch.arange(w, device=x.device).view(1, w, 1) + (tap % kw - (kw - 1) // 2)
    off = offset.permute(0, 2, 3, 1).reshape(b, h, w, n_taps, 2)  # a view when channels-last
    grid = torch.empty(b, h, w, n_taps, 2, dtype=torch.float64, device=x.device)  # (x, y) order
    grid[..., 0] = cols_j.to(dtype) + off[..., 1]  # rounded in the input dtype, then widened
    grid[..., 1] = rows_i.to(dtype) + off[..., 0]
    grid[..., 0].mul_(2.0 / (w - 1))
    grid[..., 1].mul_(2.0 / (h - 1))
    grid.sub_(1.0)
    k64 = weight.reshape(c, n_taps).double()
    rows = max(1, min(h, _CL_CHUNK_ELEMS // max(1, w * c)))
    out = torch.empty(b, h, w, c, dtype=dtype, device=x.device)
    for bi in range(b):
        x64 = x[bi : bi + 1].to(torch.float64, memory_format=torch.channels_last)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            acc = None
            for k in range(n_taps):
                s_k = torch.nn.functional.grid_sample(
                    x64, grid[bi : bi + 1, r0:r1, :, k], mode="bilinear", padding_mode="zeros", align_corners=True
                ).permute(0, 2, 3, 1)  # (1, rows, W, C)
                if acc is None:
                    acc = s_k * k64[:, k]
                else:
                    acc.addcmul_(s_k, k64[:, k])
            out[bi, r0:r1] = acc[0]
    return out.permute(0, 3, 1, 2)
