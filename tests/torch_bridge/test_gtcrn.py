"""GTCRN against the official implementation's golden case (shared/gtcrn/golden_case1.npz, GOLDEN.md).

The golden arrays were produced by the official code (commit 3862c44, torch 2.9.1, CPU) with the
vctk checkpoint; the re-implementation here was written from the architecture description only.
Tolerance: max|a - b| / max|b| <= 1e-4 for every array (the description's suggestion; an
independent float64 re-implementation reached 2e-6).
"""
from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

from tests.conftest import SHARED
from torch_bridge import capture, weights
from torch_bridge.models.gtcrn import (
    GTCRN,
    GTCRN_LAYERS,
    erb_matrix,
    gtcrn_enhance,
    gtcrn_istft,
    gtcrn_stft,
    gtcrn_variant,
    load_gtcrn,
    parameter_counts,
)

GTCRN_DIR = SHARED / "gtcrn"
CHECKPOINTS = {"vctk": "model_trained_on_vctk.tar", "dns3": "model_trained_on_dns3.tar"}
RTOL = 1e-4


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def gtcrn_dir():
    if not (GTCRN_DIR / "golden_case1.npz").exists():
        pytest.skip(f"needs {GTCRN_DIR} (../shared is absent on this machine)")
    return GTCRN_DIR


@pytest.fixture(scope="module")
def vctk(gtcrn_dir):
    return load_gtcrn(gtcrn_dir / CHECKPOINTS["vctk"])


@pytest.fixture(scope="module")
def golden(gtcrn_dir):
    with np.load(gtcrn_dir / "golden_case1.npz") as g:
        return {k: g[k] for k in g.files}


@pytest.fixture(scope="module")
def ours(vctk, golden):
    """Our pipeline on the golden input: spectra, waveform, every probe output, its time mean,
    the ERB features (input of `sfe`) and the 257-bin mask (input of `mask`)."""
    wave = golden["wave"]
    spec = gtcrn_stft(wave)
    with capture(vctk, GTCRN_LAYERS, pooling="none") as outs:
        out_spec = vctk(spec)
    with capture(vctk, GTCRN_LAYERS, pooling="time_mean") as means:
        vctk(spec)
    with capture(vctk, ["sfe"], pooling="none", side="input") as feat, capture(
        vctk, ["mask"], pooling="none", side="input"
    ) as mask:
        vctk(spec)
    with torch.inference_mode():
        enhanced = gtcrn_istft(out_spec)
    return {
        "stft_in": spec[0].numpy(),
        "spec_out": out_spec[0].numpy(),
        "enhanced": enhanced[0].numpy(),
        "enhance()": gtcrn_enhance(vctk, wave),
        "feat_erb": feat["sfe"][0],
        "mask": mask["mask"][0],
        **{f"out.{n}": outs[n][0] for n in outs},
        **{f"mean.{n}": means[n][0] for n in means},
    }


# ----------------------------------------------------------------------------- checkpoints
def test_module_tree_matches_the_official_state_dict_keys(gtcrn_dir):
    rows = [line.split("\t") for line in (gtcrn_dir / "gtcrn-state-dict-keys.txt").read_text().splitlines() if line]
    state = GTCRN().state_dict()
    assert [r[0] for r in rows] == list(state) and len(state) == 271
    assert [ast.literal_eval(r[1]) for r in rows] == [tuple(t.shape) for t in state.values()]


@pytest.mark.parametrize("variant", ["vctk", "dns3"])
def test_checkpoints_load_strictly(gtcrn_dir, variant):
    model = load_gtcrn(gtcrn_dir / CHECKPOINTS[variant], variant=variant)
    assert not model.training
    assert parameter_counts(model) == {"trainable": 23669, "fixed": 24576, "total": 48245}
    raw = torch.load(gtcrn_dir / CHECKPOINTS[variant], map_location="cpu", weights_only=True)
    assert sorted(raw) == ["epoch", "model", "optimizer"]
    for key, value in raw["model"].items():
        assert torch.equal(model.state_dict()[key], value), key
    # the fixed ERB matrices are the §3 construction, bit for bit, in both files
    w = erb_matrix()
    assert np.array_equal(raw["model"]["erb.erb_fc.weight"].numpy(), w)
    assert np.array_equal(raw["model"]["erb.ierb_fc.weight"].numpy(), w.T)
    assert np.allclose(w.sum(axis=0), 1.0, atol=1e-6, rtol=0)


def test_other_variants_file_is_refused(gtcrn_dir):
    with pytest.raises(weights.ChecksumError, match="(?s)GTCRN \\(vctk\\) checkpoint.*model_trained_on_dns3.tar.*verify=False"):
        load_gtcrn(gtcrn_dir / CHECKPOINTS["dns3"], variant="vctk")


def test_own_weights_load_without_verification(gtcrn_dir, tmp_path):
    state = load_gtcrn(gtcrn_dir / CHECKPOINTS["dns3"], variant="dns3").state_dict()
    path = tmp_path / "mine.pt"
    torch.save(state, path)  # a bare state dict, not the official {'model': ...} wrapper
    with pytest.raises(weights.ChecksumError):
        load_gtcrn(path)
    model = load_gtcrn(path, verify=False)
    assert torch.equal(model.dpgrnn2.inter_ln.weight, state["dpgrnn2.inter_ln.weight"])
    broken = {k: v for k, v in state.items() if k != "dpgrnn1.intra_fc.bias"}
    torch.save({"model": broken}, path)
    with pytest.raises(ValueError, match="(?s)does not match the GTCRN network.*Missing.*dpgrnn1.intra_fc.bias"):
        load_gtcrn(path, verify=False)


def test_resolution_order_env_cache_then_verified_download(gtcrn_dir, tmp_path, monkeypatch):
    vctk_src, dns3_src = weights.GTCRN_SOURCES["vctk"], weights.GTCRN_SOURCES["dns3"]
    monkeypatch.setenv(weights.ENV_CACHE, str(tmp_path / "cache"))
    for src in (vctk_src, dns3_src):
        monkeypatch.delenv(src.env_checkpoint, raising=False)
        monkeypatch.delenv(src.env_url, raising=False)
    with pytest.raises(FileNotFoundError, match="JAXPROBE_GTCRN_CHECKPOINT"):
        weights.resolve_checkpoint(vctk_src, download=False)
    # environment variable, per variant
    monkeypatch.setenv("JAXPROBE_GTCRN_DNS3_CHECKPOINT", str(gtcrn_dir / CHECKPOINTS["dns3"]))
    assert weights.resolve_checkpoint(dns3_src) == gtcrn_dir / CHECKPOINTS["dns3"]
    monkeypatch.delenv("JAXPROBE_GTCRN_DNS3_CHECKPOINT")
    # download (a file:// mirror) into the cache, verified; then the cache is used
    monkeypatch.setenv("JAXPROBE_GTCRN_URL", (gtcrn_dir / CHECKPOINTS["vctk"]).as_uri())
    got = weights.resolve_checkpoint(vctk_src)
    assert got == tmp_path / "cache" / "gtcrn" / "model_trained_on_vctk.tar"
    assert weights.sha256_file(got) == vctk_src.sha256
    monkeypatch.setenv("JAXPROBE_GTCRN_URL", "file:///nonexistent/model.tar")
    assert weights.resolve_checkpoint(vctk_src) == got
    # a download with the wrong hash leaves nothing behind
    monkeypatch.setenv("JAXPROBE_GTCRN_DNS3_URL", (gtcrn_dir / CHECKPOINTS["vctk"]).as_uri())
    with pytest.raises(weights.ChecksumError, match=dns3_src.sha256):
        weights.resolve_checkpoint(dns3_src)
    assert sorted(p.name for p in got.parent.iterdir()) == ["model_trained_on_vctk.tar"]
    with pytest.raises(ConnectionError, match="GTCRN \\(vctk\\).*JAXPROBE_GTCRN_CHECKPOINT"):
        weights.download_checkpoint("file:///nonexistent/model.tar", tmp_path / "x.tar", source=vctk_src)
    # a direct download for a source checks that source's hash by default, not MUSE's
    direct = weights.download_checkpoint((gtcrn_dir / CHECKPOINTS["dns3"]).as_uri(), tmp_path / "d.tar", source=dns3_src)
    assert weights.sha256_file(direct) == dns3_src.sha256
    with pytest.raises(weights.ChecksumError):
        weights.download_checkpoint((gtcrn_dir / CHECKPOINTS["vctk"]).as_uri(), tmp_path / "e.tar", source=dns3_src)


def test_variant_names():
    assert gtcrn_variant(None) == gtcrn_variant("gtcrn") == gtcrn_variant("gtcrn:vctk") == "vctk"
    assert gtcrn_variant("gtcrn:dns3") == gtcrn_variant("dns3") == "dns3"
    with pytest.raises(ValueError, match="gtcrn:dns3.*'gtcrn:voicebank'"):
        gtcrn_variant("gtcrn:voicebank")


# ----------------------------------------------------------------------------- golden case 1
@pytest.mark.parametrize("key", ["stft_in", "spec_out", "enhanced", "feat_erb", "mask"])
def test_golden_pipeline_arrays(ours, golden, key):
    assert _rel(ours[key], golden[key]) <= RTOL


def test_golden_enhance_is_the_same_pipeline(ours, golden):
    assert ours["enhance()"].shape == (32000,) and ours["enhance()"].dtype == np.float32
    assert _rel(ours["enhance()"], golden["enhanced"]) <= RTOL
    err = ours["enhance()"].astype(np.float64) - golden["enhanced"]
    assert 10 * np.log10(np.sum(golden["enhanced"].astype(np.float64) ** 2) / np.sum(err**2)) > 80  # dB


@pytest.mark.parametrize("layer", GTCRN_LAYERS, ids=lambda layer: layer.name)
def test_golden_probe_layers(ours, golden, layer):
    assert ours[f"out.{layer.name}"].shape == golden[f"out.{layer.name}"].shape
    assert _rel(ours[f"out.{layer.name}"], golden[f"out.{layer.name}"]) <= RTOL
    assert ours[f"mean.{layer.name}"].shape == layer.shape == golden[f"mean.{layer.name}"].shape
    assert _rel(ours[f"mean.{layer.name}"], golden[f"mean.{layer.name}"]) <= RTOL


def test_layer_table_covers_the_golden_probes_in_module_order(golden):
    names = [layer.name for layer in GTCRN_LAYERS]
    assert sorted(names) == sorted(k[4:] for k in golden if k.startswith("out."))
    order = [n for n, _ in GTCRN().named_modules()]
    assert names == sorted(names, key=order.index)
    skips = {layer.name: (layer.skip, layer.skip_partner) for layer in GTCRN_LAYERS if layer.skip}
    assert skips["encoder.en_convs.0"] == ("output", "decoder.de_convs.4")
    assert skips["decoder.de_convs.0"] == ("input", "encoder.en_convs.4")
    assert len(skips) == 10 and all(skips[p][1] in skips for p in skips)


# ----------------------------------------------------------------------------- shapes, batches, errors
@pytest.mark.parametrize("length", [257, 511, 4097, 16001])
def test_lengths(vctk, length, rng):
    x = (0.1 * rng.standard_normal(length)).astype(np.float32)
    spec = gtcrn_stft(x)
    assert spec.shape == (1, 257, 1 + length // 256, 2) and spec.dtype == torch.float32
    y = gtcrn_enhance(vctk, x)
    assert y.shape == (256 * (length // 256),) and y.dtype == np.float32 and np.isfinite(y).all()


def test_causal_in_time(vctk, rng):
    x = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    x2 = x.copy()
    x2[4096:] = 0.3 * rng.standard_normal(8000 - 4096)
    a, b = gtcrn_enhance(vctk, x), gtcrn_enhance(vctk, x2)
    # sample 4096 is padded sample 4352: first seen by frame 16, whose output starts at sample 3840
    assert np.array_equal(a[:3840], b[:3840])
    assert not np.allclose(a[4096:], b[4096:])


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_equals_items_stacked(vctk, golden, batch, rng):
    items = [golden["wave"][:6000]] + [(0.1 * rng.standard_normal(6000)).astype(np.float32) for _ in range(batch - 1)]
    batched = gtcrn_enhance(vctk, np.stack(items))
    stacked = np.stack([gtcrn_enhance(vctk, w) for w in items])
    assert batched.shape == stacked.shape == (batch, 256 * (6000 // 256))
    assert _rel(batched, stacked) <= 1e-5
    listed = gtcrn_enhance(vctk, items)
    assert isinstance(listed, list) and all(np.array_equal(a, b) for a, b in zip(listed, stacked))


def test_other_sample_rate_round_trip(vctk, golden):
    import torchaudio.functional as AF

    x8 = AF.resample(torch.from_numpy(golden["wave"][:16000]), 16000, 8000).numpy()
    y = gtcrn_enhance(vctk, x8, sample_rate=8000)
    assert y.shape == (256 * (16000 // 256) // 2,) and np.isfinite(y).all()


def test_bad_input_is_refused_naming_the_argument(vctk):
    with pytest.raises(ValueError, match="'waveform' parameter is silent"):
        gtcrn_enhance(vctk, np.zeros(4000, np.float32))
    noisy = np.full((2, 4000), 0.1, np.float32)
    noisy[1] = 0
    with pytest.raises(ValueError, match=r"'waveform\[1\]' parameter is silent"):
        gtcrn_enhance(vctk, noisy)
    bad = np.full(4000, 0.1, np.float32)
    bad[10] = np.nan
    with pytest.raises(ValueError, match="'waveform' parameter holds NaN or inf"):
        gtcrn_enhance(vctk, bad)
    bad[10] = np.inf
    with pytest.raises(ValueError, match="'waveforms' parameter holds NaN or inf"):
        gtcrn_stft(bad)
    with pytest.raises(ValueError, match="at least 257 samples.*got 256"):
        gtcrn_enhance(vctk, np.ones(256, np.float32))
    with pytest.raises(ValueError, match=r"shape \(L,\) or a batch \(B, L\)"):
        gtcrn_enhance(vctk, np.ones((1, 2, 4000), np.float32))
    with pytest.raises(ValueError, match="'sample_rate' parameter"):
        gtcrn_enhance(vctk, np.ones(4000, np.float32), sample_rate=0)
    with pytest.raises(ValueError, match=r"\(B, 257, T, 2\)"):
        vctk(torch.zeros(1, 256, 10, 2))


# ----------------------------------------------------------------------------- the merged grouped GRU
@pytest.mark.parametrize("bidirectional", [True, False])
def test_grouped_gru_runs_as_one_gru_equal_to_the_two(bidirectional):
    """Without gradients GRNN runs rnn1 and rnn2 as one block-diagonal GRU; the reference is the
    two nn.GRUs as written (the path taken with gradients): equal up to the BLAS's summation
    order (1e-6 relative; bitwise on this machine), and the merged weights follow the parameters
    when they change."""
    from torch_bridge.models.gtcrn.model import GRNN

    torch.manual_seed(0)
    g = GRNN(16, 16, bidirectional=bidirectional).eval()
    x = torch.randn(7, 33, 16)

    def two(x):
        half = x.shape[-1] // 2
        return torch.cat([g.rnn1(x[..., :half])[0], g.rnn2(x[..., half:])[0]], dim=-1).detach()

    with torch.inference_mode():
        got = g(x)[0]
    assert g._merged is not None  # the merged path ran
    assert got.shape == (7, 33, 16) and _rel(got, two(x)) <= 1e-6
    with torch.no_grad():
        g.rnn2.weight_hh_l0.mul_(0.5)  # in place: the parameter's version changes
    with torch.no_grad():
        assert _rel(g(x)[0], two(x)) <= 1e-6
    g.load_state_dict({k: torch.randn_like(v) for k, v in g.state_dict().items()})
    with torch.no_grad():
        assert _rel(g(x)[0], two(x)) <= 1e-6
    # with gradients the two GRUs run as written, so their parameters get gradients
    g(x)[0].sum().backward()
    assert g.rnn1.weight_ih_l0.grad is not None and g.rnn2.weight_hh_l0.grad is not None


def test_grouped_gru_with_hooks_on_its_halves_runs_them(vctk, golden):
    """A hook on rnn1/rnn2 (e.g. --layers 'dpgrnn1.inter_rnn.rnn1') must see them run: the
    separate path is taken, and the model's output is that of the merged path (1e-6 relative)."""
    spec = gtcrn_stft(golden["wave"][:8000])
    with torch.inference_mode():
        merged = vctk(spec)
    with capture(vctk, ["dpgrnn1.inter_rnn.rnn1", "dpgrnn2.intra_rnn.rnn2"], pooling="none") as acts:
        separate = vctk(spec)
    assert acts["dpgrnn1.inter_rnn.rnn1"].shape == (33, spec.shape[2], 8)
    assert acts["dpgrnn2.intra_rnn.rnn2"].shape == (spec.shape[2], 33, 8)
    assert _rel(merged, separate) <= 1e-6
