"""Plain float64 reference for the depthwise deformable convolution (torchvision convention),
written with explicit loops over pixels, taps and corners for readability."""
from __future__ import annotations

import math

import numpy as np


def bilinear_sample(img: np.ndarray, py: float, px: float) -> float:
    """Bilinear value of a (H, W) map at (py, px); neighbours outside the map count as zero."""
    h, w = img.shape
    y0, x0 = math.floor(py), math.floor(px)
    ly, lx = py - y0, px - x0
    total = 0.0
    for yy, wy in ((y0, 1.0 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1.0 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * img[yy, xx]
    return total


def deform_conv2d_depthwise_ref(x: np.ndarray, offset: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x (B, C, H, W), offset (B, 2*kh*kw, H, W) [2k = dy, 2k+1 = dx], weight (C, 1, kh, kw)."""
    x = np.asarray(x, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    out = np.zeros_like(x)
    for n in range(b):
        for ch in range(c):
            for y in range(h):
                for xp in range(w):
                    acc = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            py = y - ph + i + offset[n, 2 * k, y, xp]
                            px = xp - pw + j + offset[n, 2 * k + 1, y, xp]
                            acc += weight[ch, 0, i, j] * bilinear_sample(x[n, ch], py, px)
                    out[n, ch, y, xp] = acc
    return out
