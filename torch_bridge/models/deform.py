"""Deformable convolution v1, depthwise, with one offset group, written with plain torch.

The convention is torchvision's ``deform_conv2d`` (MUSE was trained with it): for output
position (y, x) and kernel tap (i, j) of a ``kh x kw`` kernel, tap k = i*kw + j reads offset
channel 2k as the vertical displacement Δy and channel 2k+1 as the horizontal one Δx; it
samples the input at ``(y - pad_h + i + Δy, x - pad_w + j + Δx)`` by bilinear interpolation
from the four integer neighbours, and neighbours outside the map contribute zero.

The sampling positions and bilinear weights are shared by all channels (one offset group),
so they are computed once and applied to every channel with one row gather on a
channels-last copy of the input: no Python loop over pixels, channels or batch items.
"""
from __future__ import annotations

import torch


def deform_conv2d_depthwise(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise deformable convolution, stride 1, dilation 1, "same" zero padding.

    Parameters
    ----------
    x : tensor of shape (B, C, H, W)
    offset : tensor of shape (B, 2*kh*kw, H, W)
        Channel 2k is Δy and 2k+1 is Δx of tap k (row-major taps).
    weight : tensor of shape (C, 1, kh, kw)
        One kernel per channel; kh and kw odd (padding (kh-1)/2, (kw-1)/2).

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
    dtype = x.dtype
    off = offset.reshape(b, n_taps, 2, h, w)
    tap = torch.arange(n_taps, device=x.device)
    ti = (tap // kw - (kh - 1) // 2).to(dtype).view(1, n_taps, 1, 1)
    tj = (tap % kw - (kw - 1) // 2).to(dtype).view(1, n_taps, 1, 1)
    ys = torch.arange(h, device=x.device, dtype=dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, 1, w)
    py = ys + ti + off[:, :, 0]  # (B, taps, H, W)
    px = xs + tj + off[:, :, 1]
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
    kernel = weight.reshape(c, n_taps)
    y = torch.einsum("bkhwc,ck->bchw", out, kernel)
    return y.contiguous()
