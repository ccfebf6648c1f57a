"""The C kernels of MUSE's CPU forward pass (torch_bridge/native) against independent references:
scipy's erfc for the GELU, float64 torch modules for the fused blocks, the float64 loop
reference and the torch ``grid_cl`` sampler for the deformable convolution, and the official
implementation's golden window for the whole network. Errors are max|a - b| / max|b| unless
stated. The float32 torch formulations sit at 1-4e-7 of float64 on these blocks; the kernels
are held to 1e-6.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from scipy import special

from tests.reference.deform_ref import deform_conv2d_depthwise_ref
from torch_bridge.models.muse.blocks import DenseBlock
from torch_bridge.models.muse.deform import deform_conv2d_depthwise
from torch_bridge.models.muse.model import GatedFFN, TaylorAttention, TransformerBlock
from torch_bridge.native import NativeUnavailable, build_library, library, load_library, pointer

BLOCK_TOL = 1e-6


@pytest.fixture(scope="module")
def lib():
    return library(required=True)


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


def cl(t):
    return t.contiguous(memory_format=torch.channels_last)


def _randomised(module, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


def _f64(module_cls, module, *args):
    m = module_cls(*args).double()
    m.load_state_dict(module.state_dict())
    return m.eval()


def _run_hooked(module, fn):
    """``fn()`` with a forward hook on ``module`` recording its output shapes: (result, shapes)."""
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, o: seen.append(tuple(o.shape)))
    try:
        return fn(), seen
    finally:
        handle.remove()


# ----------------------------------------------------------------------------- building
def test_builds_into_a_fresh_cache_and_reuses_it(tmp_path):
    path = build_library(tmp_path)
    assert path.exists() and path.parent == tmp_path
    mtime = path.stat().st_mtime_ns
    assert build_library(tmp_path) == path and path.stat().st_mtime_ns == mtime  # no rebuild
    assert not list(tmp_path.glob("*.tmp"))  # the temporary name is gone
    assert hasattr(load_library(path), "ffn_block")


def test_source_compiles_without_warnings(tmp_path):
    import shutil
    import subprocess

    from torch_bridge.native.build import FLAGS, SOURCE

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this machine")
    proc = subprocess.run([cc, *FLAGS, "-Werror", "-Wextra", "-Wno-unused-parameter", str(SOURCE), "-o",
                           str(tmp_path / "k.so"), "-lm"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(NativeUnavailable, match="no C compiler found.*no-such-compiler-here"):
        build_library(tmp_path)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("JAXPROBE_NATIVE", "0")
    assert library() is None
    with pytest.raises(NativeUnavailable, match="switched off"):
        library(required=True)


def test_unsupported_sizes_are_refused_by_the_kernels(lib):
    x = torch.zeros(5, 7, 20)
    w = torch.zeros(100)
    assert lib.gated_ffn(pointer(x), pointer(w), pointer(w), pointer(w), pointer(x), 5, 7, 20, 53) == -1
    assert lib.taylor_attention_d16(*[pointer(w)] * 11, None, pointer(w), pointer(x), 5, 7, 8) == -1


# ----------------------------------------------------------------------------- GELU
def test_gelu_against_scipy(lib):
    """Absolute error <= 3e-7 on a dense float32 grid of [-10, 10] (measured 2.4e-7; torch's own
    float32 gelu: 1.3e-6) and <= 4 ulp wherever |gelu| >= 1e-3 (measured 3.6); the limits and NaN."""
    x = np.linspace(-10, 10, 4_000_001, dtype=np.float32)
    x = np.concatenate([x, np.float32([0.0, 1e-30, -1e-30, 13.5, -13.5, 1e4, -1e4, np.inf, -np.inf, np.nan])])
    out = np.empty_like(x)
    lib.gelu_array(x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                   x.size)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        want = 0.5 * x64 * special.erfc(-x64 / np.sqrt(2.0))
    finite = np.isfinite(x64) & (np.abs(x64) <= 10)
    err = np.abs(out[finite] - want[finite])
    assert err.max() <= 3e-7, err.max()
    big = finite & (np.abs(want) >= 1e-3)
    ulp = np.spacing(np.abs(want[big]).astype(np.float32)).astype(np.float64)
    assert (np.abs(out[big] - want[big]) / ulp).max() <= 4.0
    tail = out[-10:]
    assert tail[0] == 0.0 and abs(tail[1]) <= 1e-30 and abs(tail[2]) <= 1e-30
    assert tail[3] == np.float32(13.5) and tail[4] == 0.0 and tail[5] == np.float32(1e4) and tail[6] == 0.0
    assert tail[7] == np.inf and tail[8] == 0.0 and np.isnan(tail[9])


# ----------------------------------------------------------------------------- deformable conv
@pytest.mark.parametrize("c,h,w", [(16, 308, 128), (32, 154, 64), (48, 77, 32), (3, 6, 7)])
def test_deform_kernel_is_the_grid_cl_sampler_to_one_ulp(lib, rng, c, h, w):
    """Same float32 positions, float64 interpolation and accumulation, one rounding: the kernel
    and grid_cl differ only where grid_sample's round trip through [-1, 1] coordinates moves a
    float64 weight by ~1e-16 and the final rounding tips: by at most one float32 ulp, in at
    most 1 value in 10,000 (MUSE's clamped offsets and offsets beyond the border)."""
    x = cl(torch.tensor(rng.standard_normal((1, c, h, w)), dtype=torch.float32))
    wgt = torch.tensor(rng.standard_normal((c, 1, 3, 3)), dtype=torch.float32)
    clamped = torch.tensor(rng.uniform(-1.3, 1.3, (1, 18, h, w)), dtype=torch.float32).clamp(-1, 1)
    wide = torch.tensor(rng.uniform(-1.7, 1.7, (1, 18, h, w)), dtype=torch.float32)
    for off in (cl(clamped), cl(wide)):
        got = deform_conv2d_depthwise(x, off, wgt, method="native")
        want = deform_conv2d_depthwise(x, off, wgt, method="grid_cl")
        diff = (got - want).abs()
        assert (diff <= torch.finfo(torch.float32).eps * want.abs()).all()
        assert (diff > 0).sum() <= max(1, got.numel() // 10_000)
    if c == 3:
        ref = deform_conv2d_depthwise_ref(x.double().numpy(), wide.double().numpy(), wgt.double().numpy())
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c,h,w", [(16, 308, 128), (32, 23, 17), (48, 5, 4)])
def test_fused_embedding_against_float64_and_the_module_path(rng, c, h, w):
    """Offsets (depthwise 3x3, 1x1, clamp), the deformable sampling, the 1x1 conv and Hardswish
    in one kernel; weights scaled so that many offsets clamp at +-1 and Hardswish's three
    pieces all occur. Both float32 paths round the sampling position in float32 (as torchvision
    does: ulp(300) = 3e-5 px), which puts them ~9e-6 off float64 at 308 rows; the kernel is held
    to the module path (<1e-6) and to no more than its distance from float64."""
    from torch_bridge.models.muse.blocks import DeformPatchConv

    emb = _randomised(DeformPatchConv(c), std=0.5)
    x = cl(torch.tensor(rng.standard_normal((2, c, h, w)) * 2, dtype=torch.float32))
    with torch.inference_mode():
        got = emb(x)
        want = _f64(DeformPatchConv, emb, c)(x.double())
        handle = emb.pwconv.register_forward_hook(lambda *_: None)
        try:
            by_module = emb(x)
        finally:
            handle.remove()
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert rel(got, by_module) < BLOCK_TOL
    assert rel(got, want) < 1.05 * rel(by_module, want) + BLOCK_TOL


def test_deform_native_keeps_gradients(rng):
    x = torch.tensor(rng.standard_normal((1, 4, 6, 7)), dtype=torch.float32, requires_grad=True)
    off = torch.tensor(rng.uniform(-1, 1, (1, 18, 6, 7)), dtype=torch.float32)
    wgt = torch.tensor(rng.standard_normal((4, 1, 3, 3)), dtype=torch.float32)
    deform_conv2d_depthwise(x, off, wgt, method="native").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_deform_native_falls_back_where_it_does_not_apply(rng):
    """float64 input and 5x5 kernels are not the kernel's: the torch sampler runs instead."""
    x = torch.tensor(rng.standard_normal((2, 3, 6, 7)))
    off = torch.tensor(rng.uniform(-1, 1, (2, 50, 6, 7)))
    wgt = torch.tensor(rng.standard_normal((3, 1, 5, 5)))
    got = deform_conv2d_depthwise(x, off, wgt, method="native")
    np.testing.assert_allclose(got.numpy(), deform_conv2d_depthwise_ref(x.numpy(), off.numpy(), wgt.numpy()),
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- fused blocks
SIZES = [(16, 1, 37, 29), (32, 2, 23, 17), (16, 1, 1, 5), (16, 1, 308, 128)]


@pytest.mark.parametrize("c,heads,h,w", SIZES)
def test_attention_kernel_against_float64(rng, c, heads, h, w):
    att = _randomised(TaylorAttention(c, heads))
    u = cl(torch.tensor(rng.standard_normal((2, c, h, w)), dtype=torch.float32))
    with torch.inference_mode():
        got = att(u)
        want = _f64(TaylorAttention, att, c, heads)(u.double())
    assert rel(got, want) < BLOCK_TOL


@pytest.mark.parametrize("c,h,w", [(16, 37, 29), (32, 23, 17), (48, 11, 9), (16, 1, 3), (16, 308, 128)])
def test_ffn_kernel_against_float64(rng, c, h, w):
    ffn = _randomised(GatedFFN(c))
    x = cl(torch.tensor(rng.standard_normal((2, c, h, w)), dtype=torch.float32))
    with torch.inference_mode():
        got = ffn(x)
        want = _f64(GatedFFN, ffn, c)(x.double())
    assert rel(got, want) < BLOCK_TOL


@pytest.mark.parametrize("c,heads,h,w", SIZES + [(48, 8, 11, 9)])
def test_fused_block_against_float64_and_the_module_path(rng, c, heads, h, w):
    """The fused block (norm2 and both residual adds folded into the kernels) against float64,
    and against the module-by-module path that a hook on ``attn`` forces; the latent's eight
    6-channel heads are not the attention kernel's and take the module path."""
    blk = _randomised(TransformerBlock(c, heads), std=0.2)
    x = cl(torch.tensor(rng.standard_normal((2, c, h, w)), dtype=torch.float32))
    with torch.inference_mode():
        fused = blk(x)
        want = _f64(TransformerBlock, blk, c, heads)(x.double())
        by_module, seen = _run_hooked(blk.attn, lambda: blk(x))
    assert seen == [(2, c, h, w)]  # the hook fired: the module path ran
    assert rel(fused, want) < BLOCK_TOL and rel(by_module, want) < BLOCK_TOL
    assert fused.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("h,w,layout", [(308, 256, "contiguous"), (308, 128, "channels_last"), (9, 5, "contiguous"),
                                      (2, 3, "channels_last")])
def test_dense_block_kernel_against_float64_and_the_module_path(rng, h, w, layout):
    """Four dilated steps (dilation 1, 2, 4, 8 on the time axis, so the small maps read mostly
    padding) with InstanceNorm and PReLU, from either memory order; a hook on one step makes
    the block run module by module."""
    blk = _randomised(DenseBlock(16))
    x = torch.tensor(rng.standard_normal((2, 16, h, w)), dtype=torch.float32)
    x = cl(x) if layout == "channels_last" else x.contiguous()
    with torch.inference_mode():
        got = blk(x)
        want = _f64(DenseBlock, blk, 16)(x.double())
        by_module, seen = _run_hooked(blk.dense_block[2][1], lambda: blk(x))
    assert seen == [(1, 16, h, w)] * 2
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert rel(got, want) < BLOCK_TOL and rel(by_module, want) < BLOCK_TOL


def test_parameters_the_kernels_cannot_read_as_arrays_take_the_torch_path(rng):
    """A non-contiguous weight (a transposed view) would be read in the wrong order by a kernel:
    the block runs its torch formulation instead and stays right."""
    blk = _randomised(TransformerBlock(16, 1), std=0.2)
    x = cl(torch.tensor(rng.standard_normal((1, 16, 9, 8)), dtype=torch.float32))
    with torch.inference_mode():
        want = _f64(TransformerBlock, blk, 16, 1)(x.double())
    w = blk.attn.project_out.weight.detach().clone()
    blk.attn.project_out.weight = torch.nn.Parameter(w[:, :, 0, 0].t().contiguous().t()[:, :, None, None])
    assert not blk.attn.project_out.weight.is_contiguous()
    with torch.inference_mode():
        got = blk(x)
    assert rel(got, want) < BLOCK_TOL


def test_kernels_stay_out_of_autograd(rng):
    """With gradients wanted the torch formulation runs (the kernels have no backward)."""
    ffn = _randomised(GatedFFN(16))
    x = cl(torch.tensor(rng.standard_normal((1, 16, 9, 8)), dtype=torch.float32)).requires_grad_()
    out = ffn(x)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- whole network
def test_muse_with_and_without_kernels_matches_the_official_output(monkeypatch):
    from tests.conftest import MUSE_DIR
    from torch_bridge import load_muse

    if not (MUSE_DIR / "golden_case1.npz").exists():
        pytest.skip(f"needs {MUSE_DIR}/golden_case1.npz (../shared is absent on this machine)")
    gold = np.load(MUSE_DIR / "golden_case1.npz")
    model = load_muse(MUSE_DIR / "g_best")
    mag, pha = torch.from_numpy(gold["stft_mag_c"])[None], torch.from_numpy(gold["stft_pha"])[None]
    want = torch.from_numpy(gold["est_mag_c"])[None]
    with torch.inference_mode():
        native = model(mag, pha)[0]
        monkeypatch.setenv("JAXPROBE_NATIVE", "0")
        plain = model(mag, pha)[0]
    # Each path sits 1-7e-6 off the official output (the torch parts round differently at one and
    # two threads), and the two can sit on opposite sides: 1.4e-5 apart at two threads.
    assert rel(native, want) < 1e-5 and rel(plain, want) < 1e-5
    assert rel(native, plain) < 2e-5


@pytest.mark.parametrize("c", [16, 32, 48])
def test_layer_norm_kernel_against_float64(rng, c):
    from torch_bridge.models.muse.model import LayerNorm2d

    ln = _randomised(LayerNorm2d(c), std=1.0)
    x = cl(torch.tensor(rng.standard_normal((2, c, 13, 11)) * 3 + 1, dtype=torch.float32))
    with torch.inference_mode():
        got = ln(x)
        want = _f64(LayerNorm2d, ln, c)(x.double())
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert rel(got, want) < BLOCK_TOL


# ----------------------------------------------------------------------------- InstanceNorm + PReLU
def _norm_prelu_f64(x, norm, act):
    """InstanceNorm2d (affine) then PReLU in float64 torch modules: the yardstick."""
    n64 = torch.nn.InstanceNorm2d(norm.num_features, affine=True, eps=norm.eps).double()
    n64.load_state_dict(norm.state_dict())
    a64 = torch.nn.PReLU(act.weight.numel()).double()
    a64.load_state_dict(act.state_dict())
    return a64(n64(x.double()))


@pytest.mark.parametrize("c,slopes,h,w", [(16, 16, 308, 128), (16, 1, 5, 3), (1, 1, 308, 256), (1, 1, 2, 1)])
def test_norm_prelu_kernel_against_float64_in_place_and_strided(lib, rng, c, slopes, h, w):
    """norm_prelu_cl on a channel slice of a wider buffer (pixel stride 3c), in place, against
    float64 modules; offset, scaled data so E[x^2] - mean^2 in float64 is exercised; relative
    1e-6 (float32 output rounding: measured ~1e-7)."""
    from torch_bridge.models.muse.blocks import _instance_norm

    norm, act = _randomised(_instance_norm(c), std=1.0), _randomised(torch.nn.PReLU(slopes), std=0.5)
    x = torch.tensor(rng.standard_normal((h, w, c)) * 4 + 3, dtype=torch.float32)
    buf = torch.zeros(h, w, 3 * c)
    buf[..., c : 2 * c] = x
    rc = lib.norm_prelu_cl(pointer(buf[..., c:]), 3 * c, pointer(norm.weight), pointer(norm.bias), pointer(act.weight),
                           slopes, pointer(buf[..., c:]), 3 * c, h * w, c)
    assert rc == 0
    with torch.no_grad():
        want = _norm_prelu_f64(x.permute(2, 0, 1)[None], norm, act)[0].permute(1, 2, 0)
    assert rel(buf[..., c : 2 * c], want) < 1e-6
    assert not buf[..., :c].any() and not buf[..., 2 * c :].any()  # nothing outside the slice written


def test_norm_prelu_kernel_refuses_what_it_does_not_handle(lib):
    x = torch.zeros(4, 8)
    w = torch.ones(8)
    assert lib.norm_prelu_cl(pointer(x), 8, pointer(w), pointer(w), pointer(w), 8, pointer(x), 8, 4, 8) == -1
    assert lib.norm_prelu_cl(pointer(x), 16, pointer(w), pointer(w), pointer(w), 3, pointer(x), 16, 2, 16) == -1


def test_norm_prelu_helper_falls_back_for_hooks_and_other_widths(rng):
    """blocks.norm_prelu: the kernel for 16 or 1 channels (both items of a batch), the two
    module calls where a hook waits on either module or the width is another."""
    from torch_bridge.models.muse.blocks import _instance_norm, norm_prelu

    for c in (16, 1, 8):
        norm, act = _randomised(_instance_norm(c), std=1.0), _randomised(torch.nn.PReLU(c), std=0.5)
        x = cl(torch.tensor(rng.standard_normal((2, c, 9, 7)) * 2 + 1, dtype=torch.float32))
        with torch.inference_mode():
            want = _norm_prelu_f64(x, norm, act)
            got = norm_prelu(library(), norm, act, x.clone())
            hooked_out, seen = _run_hooked(act, lambda: norm_prelu(library(), norm, act, x.clone()))
        assert seen == [(2, c, 9, 7)]
        assert rel(got, want) < 1e-6 and rel(hooked_out, want) < 1e-6


@pytest.mark.parametrize("h,w", [(308, 256), (7, 5)])
def test_dense_encoder_with_kernels_against_float64_and_the_module_path(rng, h, w):
    """The dense encoder with its first stage copied by copy_pixels into the dense block's
    buffer, the block's steps and the last stage's InstanceNorm and PReLU in C, against float64
    modules; a hook on the first stage's PReLU makes the encoder run module by module. The two
    agree to float32 rounding (the last stage's float64 statistics are summed in another order,
    so alpha and beta can differ in the last bit)."""
    from torch_bridge.models.muse.blocks import DenseEncoder

    enc = _randomised(DenseEncoder(), std=0.3)
    x = torch.tensor(rng.standard_normal((2, 2, h, w)), dtype=torch.float32)
    with torch.inference_mode():
        got = enc(x)
        want = _f64(DenseEncoder, enc)(x.double())
        by_module, seen = _run_hooked(enc.dense_conv_1[2], lambda: enc(x))
    assert seen == [(1, 16, h, w)] * 2
    assert got.shape == (2, 16, h, (w + 1) // 2) and got.is_contiguous(memory_format=torch.channels_last)
    assert rel(got, want) < BLOCK_TOL and rel(got, by_module) < BLOCK_TOL


@pytest.mark.parametrize("decoder", ["MaskDecoder", "PhaseDecoder"])
def test_decoders_with_the_norm_kernel_against_float64(rng, decoder):
    """The decoders' tails (16-channel and 1-channel InstanceNorm + PReLU through norm_prelu_cl)
    against float64 modules. The mask is relative 1e-6; the phase, an atan2, absolute 1e-5 rad."""
    from torch_bridge.models.muse import blocks

    cls = getattr(blocks, decoder)
    dec = _randomised(cls(), std=0.3)
    x = cl(torch.tensor(rng.standard_normal((2, 16, 23, 128)), dtype=torch.float32))  # 256 mask slopes
    with torch.inference_mode():
        got = dec(x)
        want = _f64(cls, dec)(x.double())
    assert got.shape == (2, 1, 23, 256)
    if decoder == "MaskDecoder":
        assert rel(got, want) < BLOCK_TOL
    else:
        diff = torch.remainder(got.double() - want + torch.pi, 2 * torch.pi) - torch.pi
        assert float(diff.abs().max()) < 1e-5


# ----------------------------------------------------------------------------- refine conv
def test_refine_convs_as_depthwise_plus_group_sum_against_float64(rng):
    """The latent's grouped refine convs (2, 3, 3 heads; kernels 3, 5, 7; 12 inputs per head)
    computed as depthwise convs plus a per-head GEMM sum: against a float64 grouped conv to 1e-6
    after the sigmoid (measured ~4e-7; oneDNN's grouped conv ~1e-6); a hooked conv runs as the module."""
    from torch_bridge.models.muse.model import RefineAttention

    ra = _randomised(RefineAttention(6, 8), std=0.3)
    qk = cl(torch.tensor(rng.standard_normal((2, 96, 13, 11)), dtype=torch.float32))
    with torch.inference_mode():
        got = ra(qk)
        want = _f64(RefineAttention, ra, 6, 8)(qk.double())
        by_module, seen = _run_hooked(ra.conv_list[1], lambda: ra(qk))
    assert seen == [(2, 3, 13, 11)]
    assert float((got.double() - want).abs().max()) < 1e-6 and float((by_module.double() - want).abs().max()) < 1e-6
