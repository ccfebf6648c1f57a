"""Deformable convolution against the float64 loop reference and against a plain conv."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.reference.deform_ref import deform_conv2d_depthwise_ref
from torch_bridge.models.muse.deform import deform_conv2d_depthwise


@pytest.mark.parametrize("method", ["grid", "grid_cl", "native", "gather"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kernel", [3, 5])
def test_matches_loop_reference(rng, dtype, kernel, method):
    b, c, h, w = 2, 3, 6, 7
    x = rng.standard_normal((b, c, h, w))
    # Offsets up to 1.7 pixels push samples across the border (zero padding) and beyond it.
    off = rng.uniform(-1.7, 1.7, (b, 2 * kernel * kernel, h, w))
    off[0, :, 0, 0] = 1.0  # integer displacements (bilinear weights 0/1) are exact too
    wgt = rng.standard_normal((c, 1, kernel, kernel))
    got = deform_conv2d_depthwise(*(torch.tensor(a, dtype=dtype) for a in (x, off, wgt)), method=method)
    assert got.dtype == dtype and got.shape == (b, c, h, w)
    want = deform_conv2d_depthwise_ref(x, off, wgt)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("method", ["grid", "grid_cl", "native", "gather"])
def test_zero_offsets_is_depthwise_conv(rng, method):
    x = torch.tensor(rng.standard_normal((1, 4, 9, 11)))
    wgt = torch.tensor(rng.standard_normal((4, 1, 3, 3)))
    got = deform_conv2d_depthwise(x, torch.zeros(1, 18, 9, 11, dtype=x.dtype), wgt, method=method)
    torch.testing.assert_close(got, F.conv2d(x, wgt, padding=1, groups=4), rtol=1e-12, atol=1e-12)


def test_samplers_agree_at_muse_scale(rng):
    """float32 at the first embedding's size, offsets clamped to [-1, 1] (many exactly +-1)."""
    x = torch.tensor(rng.standard_normal((1, 16, 308, 128)), dtype=torch.float32)
    off = torch.tensor(rng.uniform(-1.3, 1.3, (1, 18, 308, 128)), dtype=torch.float32).clamp(-1, 1)
    wgt = torch.tensor(rng.standard_normal((16, 1, 3, 3)), dtype=torch.float32)
    a = deform_conv2d_depthwise(x, off, wgt, method="grid")
    b = deform_conv2d_depthwise(x, off, wgt, method="gather")
    assert (a - b).abs().max() / b.abs().max() < 1e-6


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_grid_cl_chunks_and_batch_items(rng, monkeypatch, layout):
    """``grid_cl`` processes one batch item and one chunk of rows at a time; with chunks of 2
    rows (the last one short) on a batch of 3 it must give the loop reference's values in
    either memory order of the input and offsets."""
    from torch_bridge.models.muse import deform

    monkeypatch.setattr(deform, "_CL_CHUNK_ELEMS", 2 * 7 * 3)  # 2 rows of W = 7, C = 3
    x = rng.standard_normal((3, 3, 9, 7))
    off = rng.uniform(-1.7, 1.7, (3, 18, 9, 7))
    wgt = rng.standard_normal((3, 1, 3, 3))
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    xt, ot = (torch.tensor(a, dtype=torch.float32).contiguous(memory_format=fmt) for a in (x, off))
    got = deform_conv2d_depthwise(xt, ot, torch.tensor(wgt, dtype=torch.float32), method="grid_cl")
    np.testing.assert_allclose(got.numpy(), deform_conv2d_depthwise_ref(x, off, wgt), rtol=1e-5, atol=1e-5)


def test_offset_shape_is_checked():
    with pytest.raises(ValueError, match="'offset' parameter"):
        deform_conv2d_depthwise(torch.zeros(1, 2, 4, 4), torch.zeros(1, 9, 4, 4), torch.zeros(2, 1, 3, 3))
