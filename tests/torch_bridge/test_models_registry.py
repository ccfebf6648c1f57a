"""The model contract (``torch_bridge.load_model`` -> ``ModelSpec``): every built-in name,
``package.module:function`` user models, the ``jaxprobe.models`` entry points, ``--layers``
globs and the unknown-name error. Capture is checked against what each model computes on its
own (torchaudio's ``extract_features``, the recogniser's layer map, direct calls of the
module), not against numbers this code produced."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import SHARED
from torch_bridge import LayerSpec, ModelError, ModelSpec, available_models, capture, load_model
from torch_bridge.models.registry import resolve_model

GTCRN_DIR = SHARED / "gtcrn"
THIS = "tests.torch_bridge.test_models_registry"


def _capture(spec: ModelSpec, x: np.ndarray) -> dict:
    with capture(spec.model, [lay.name for lay in spec.layers], spec.pooling, select=spec.select) as acts:
        spec.forward(x)
    return {lay.name: acts[lay.name] for lay in spec.layers}


def _noise(n: int, b: int = 1, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((b, n))).astype(np.float32)


# ----------------------------------------------------------------------------- user models
class TinyFrames(nn.Module):
    """A user model: (B, samples) -> framing -> linear -> GRU -> linear, outputs (B, T, H)."""

    def __init__(self, frame: int = 160):
        super().__init__()
        self.frame = frame
        self.embed = nn.Linear(frame, 12)
        self.rnn = nn.GRU(12, 8, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        b, n = x.shape
        frames = x[:, : n // self.frame * self.frame].reshape(b, -1, self.frame)
        h, _ = self.rnn(self.embed(frames))
        return self.head(h)


def tiny_model(checkpoint=None):
    torch.manual_seed(0)
    model = TinyFrames()
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
    return model


def tiny_spec():
    model = tiny_model()
    layers = (LayerSpec("embed", "Front", 0, None, None, "frames", label="embedding"),
              LayerSpec("head", "Back", 0, None, None, "frames"))
    return ModelSpec(name="tiny-spec", model=model, layers=layers, forward_fn=lambda m, x: m(x), window=1600)


def not_a_model():
    return 42


# ----------------------------------------------------------------------------- names
def test_unknown_name_lists_models_and_the_closest():
    with pytest.raises(ModelError) as ex:
        load_model("gtcrm")
    msg = str(ex.value)
    assert "Did you mean 'gtcrn'?" in msg
    for name in ("muse", "gtcrn:dns3", "ctc:vgg_lstm", "wav2vec2_base", "hubert_base", "wavlm_base"):
        assert name in msg
    with pytest.raises(ModelError, match="Did you mean 'wav2vec2_base'"):
        resolve_model("wav2vec_base")
    with pytest.raises(ModelError, match="Unknown model 'gtcrn:dns4'"):
        resolve_model("gtcrn:dns4")


def test_user_function_errors_name_what_is_wrong():
    with pytest.raises(ModelError, match="cannot import module 'no_such_pkg.models'"):
        resolve_model("no_such_pkg.models:build")
    with pytest.raises(ModelError, match="has no attribute 'tiny_modle'.*Did you mean .*:tiny_model"):
        resolve_model(f"{THIS}:tiny_modle")
    with pytest.raises(ModelError, match="returned a int; expected a torch_bridge.ModelSpec or a torch.nn.Module"):
        load_model(f"{THIS}:not_a_model")


def test_ssl_and_ctc_need_a_local_checkpoint():
    with pytest.raises(ModelError, match="needs --checkpoint.*nothing is downloaded"):
        load_model("hubert_base")
    with pytest.raises(ModelError, match="needs --checkpoint.*train-asr"):
        load_model("ctc:lstm")


# ----------------------------------------------------------------------------- plug-ins
def test_plain_module_by_module_function(tmp_path):
    spec = load_model(f"{THIS}:tiny_model")
    assert spec.name == f"{THIS}:tiny_model" and not spec.model.training
    # default layers: the immediate children in the order they run, each its own block
    assert [lay.name for lay in spec.layers] == ["embed", "rnn", "head"]
    assert spec.blocks == ("embed", "rnn", "head") and spec.window == 30700
    assert all(lay.pooling == "frames" and lay.skip is None for lay in spec.layers)
    t = 30700 // 160
    assert [lay.shape for lay in spec.layers] == [(t, 12), (t, 8), (t, 5)]
    x = _noise(3200, b=2)
    got = _capture(spec, x)
    # against direct calls of the same module (GRU output element 0 is the hidden sequence)
    m = spec.model
    with torch.no_grad():
        xt = torch.from_numpy(x).reshape(2, -1, 160)
        e = m.embed(xt)
        h = m.rnn(e)[0]
        np.testing.assert_allclose(got["embed"], e.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got["rnn"], h.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got["head"], m.head(h).numpy(), rtol=1e-6, atol=1e-7)
    # a checkpoint is passed on to the function
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    path = tmp_path / "w.pt"
    torch.save(m.state_dict(), path)
    again = load_model(f"{THIS}:tiny_model", checkpoint=str(path))
    assert torch.equal(again.model.head.weight, m.head.weight)


def test_user_function_returning_a_spec_keeps_its_layer_map():
    spec = load_model(f"{THIS}:tiny_spec")
    assert spec.name == "tiny-spec" and spec.window == 1600
    assert [(lay.block, lay.label) for lay in spec.layers] == [("Front", "embedding"), ("Back", "Back.0")]
    got = _capture(spec, _noise(1600, b=2))
    assert got["embed"].shape == (2, 10, 12) and got["head"].shape == (2, 10, 5)


def test_entry_point_registration_through_a_fake_distribution(tmp_path, monkeypatch):
    """A package registers a model under the jaxprobe.models group in its metadata; an
    installed distribution is a *.dist-info folder on sys.path, which importlib.metadata reads."""
    dist = tmp_path / "fake_probe_models-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-probe-models\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[jaxprobe.models]\nfake_tiny = {THIS}:tiny_spec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "fake_tiny" in available_models()
    spec = load_model("fake_tiny")
    assert spec.name == "tiny-spec" and spec.blocks == ("Front", "Back")
    with pytest.raises(ModelError, match="Did you mean 'fake_tiny'"):
        load_model("fake_tiy")


def test_layers_globs_keep_canonical_records_and_add_others():
    spec = load_model(f"{THIS}:tiny_spec", layers=["rnn", "e*"])
    assert [lay.name for lay in spec.layers] == ["embed", "rnn"]  # named_modules order
    assert spec.layers[0].label == "embedding"  # canonical record kept
    rnn = spec.layers[1]
    assert (rnn.block, rnn.index, rnn.skip, rnn.pooling, rnn.shape) == ("rnn", 0, None, "frames", (10, 8))
    with pytest.raises(ModelError, match="pattern 'decoder.\\*' matches no module path"):
        load_model(f"{THIS}:tiny_spec", layers=["decoder.*"])


def test_spec_checks_its_fields():
    m = TinyFrames()
    with pytest.raises(ValueError, match="'skip' of layer 'embed' must be 'input', 'output' or None"):
        LayerSpec("embed", "B", 0, "both")
    with pytest.raises(ValueError, match="lists layer\\(s\\) \\['embed'\\] more than once"):
        ModelSpec("m", m, (LayerSpec("embed", "B", 0), LayerSpec("embed", "B", 1)), lambda mm, x: mm(x))
    with pytest.raises(ValueError, match="'window' of ModelSpec 'm' must be a positive int or None"):
        ModelSpec("m", m, (LayerSpec("embed", "B", 0),), lambda mm, x: mm(x), window=0)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="'dump_batch_size' of ModelSpec 'm' must be an int >= 1; got"):
            ModelSpec("m", m, (LayerSpec("embed", "B", 0),), lambda mm, x: mm(x), dump_batch_size=bad)
    spec = ModelSpec("m", m, (LayerSpec("embed", "B", 0),), lambda mm, x: mm(x))
    assert spec.dump_batch_size == 1
    from torch_bridge.dump import spec_batch_size

    own = dataclasses.replace(spec, dump_batch_size=6)
    assert [spec_batch_size(own, b) for b in (0, None, 1, 3)] == [6, 6, 1, 3]
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="'batch_size' parameter of a model dump must be an int >= 0 "
                                             "\\(0 = the model's own, 6 for 'm'\\)"):
            spec_batch_size(own, bad)
    with pytest.raises(TypeError, match="'m' \\(custom\\) is not an enhancement model"):
        spec.enhance(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="must have shape \\(B, samples\\)"):
        spec.forward(np.zeros(100, np.float32))


# ----------------------------------------------------------------------------- built-in models
@pytest.fixture(scope="module")
def gtcrn_ckpt():
    path = GTCRN_DIR / "model_trained_on_vctk.tar"
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is absent on this machine)")
    return path


@pytest.fixture
def gtcrn_env(monkeypatch, gtcrn_ckpt):
    """Both official checkpoints through the environment variables (MUSE's resolution order)."""
    dns3 = GTCRN_DIR / "model_trained_on_dns3.tar"
    if not dns3.exists():
        pytest.skip(f"needs {dns3}")
    monkeypatch.setenv("JAXPROBE_GTCRN_CHECKPOINT", str(gtcrn_ckpt))
    monkeypatch.setenv("JAXPROBE_GTCRN_DNS3_CHECKPOINT", str(dns3))


@pytest.mark.shared
@pytest.mark.parametrize("name", ["gtcrn", "gtcrn:dns3"])
def test_gtcrn_capture_and_enhance(name, gtcrn_env):
    spec = load_model(name)  # resolved like MUSE: here through JAXPROBE_GTCRN_* or the given file
    assert spec.name == ("gtcrn:vctk" if name == "gtcrn" else name) and spec.window is None
    assert spec.blocks == ("SFE", "Encoder", "DPGRNN", "Decoder", "Mask") and spec.enhances
    assert spec.dump_batch_size == 8  # whole mixtures per dump forward pass (bench/bench_gtcrn.py --part dump)
    assert [lay.skip for lay in spec.layers if lay.block == "Encoder"] == ["output"] * 5
    assert [lay.skip for lay in spec.layers if lay.block == "Decoder"] == ["input"] * 5
    x = _noise(4000)
    got = _capture(spec, x)
    for lay in spec.layers:
        assert got[lay.name].shape == (1,) + lay.shape, lay.name
    # the mask layer is the enhanced spectrum, time-averaged, stored (F, re/im)
    from torch_bridge import gtcrn_stft

    with torch.no_grad():
        out = spec.model(gtcrn_stft(x))  # (1, 257, T, 2)
    np.testing.assert_allclose(got["mask"][0], out[0].mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    y = spec.enhance(x[0])
    assert y.shape == (256 * (4000 // 256),) and np.isfinite(y).all()


@pytest.mark.shared
@pytest.mark.slow
def test_muse_capture(muse_dir):
    spec = load_model("muse", checkpoint=str(muse_dir / "g_best"))
    assert len(spec.layers) == 24 and spec.window == 30700 and spec.prepare is not None
    assert spec.dump_batch_size == 1  # a batch of MUSE windows is slower per window
    assert spec.blocks == ("Enc1", "Enc2", "Latent", "Dec2", "Dec1", "Refine")
    x = _noise(30700)
    got = _capture(spec, x)
    for lay in spec.layers:
        assert got[lay.name].shape == (1,) + lay.shape
        assert np.isfinite(got[lay.name]).all()
    # the store identity is the one MUSE stores had before the model contract (they stay valid)
    import dataclasses

    from torch_bridge import MUSE_LAYERS
    from torch_bridge.dump import uniform_value

    assert spec.layer_records() == [{**dataclasses.asdict(lay), "shape": list(lay.shape)} for lay in MUSE_LAYERS]
    assert uniform_value(spec.pooling) == "time_mean" and uniform_value(spec.select) == 0
    assert set(spec.info) == {"name", "checkpoint_sha256"} and spec.info["name"] == "muse"


@pytest.mark.parametrize("variant", ["vgg_lstm", "lstm"])
def test_ctc_capture_follows_the_recogniser_layer_map(variant, tmp_path):
    from torch_bridge.models.asr import AsrConfig, CTCRecogniser, asr_layers

    torch.manual_seed(0)
    cfg = AsrConfig(model=variant)
    model = CTCRecogniser(cfg)
    path = tmp_path / "checkpoint.pt"
    torch.save({"asr_config": cfg.to_dict(), "model": model.state_dict()}, path)
    spec = load_model(f"ctc:{variant}", checkpoint=str(tmp_path))
    n_mel = 30700 // cfg.hop_length + 1
    expect = {lay.name: (math.ceil(n_mel / lay.r), lay.width) for lay in asr_layers(cfg)}
    assert {lay.name: lay.shape for lay in spec.layers} == expect
    assert spec.blocks == (("CNN", "BLSTM") if variant == "vgg_lstm" else ("BLSTM",))
    with pytest.raises(ModelError, match="holds a '.*' recogniser; load it as"):
        load_model(f"ctc:{'lstm' if variant == 'vgg_lstm' else 'vgg_lstm'}", checkpoint=str(path))
    x = _noise(4000)
    got = _capture(spec, x)
    # the recogniser's own activation helper gives the same frames
    from torch_bridge.models.asr import asr_activations

    _, ref, _ = asr_activations(spec.model, torch.from_numpy(x))
    for lay in asr_layers(cfg):
        np.testing.assert_allclose(got[lay.name], ref[lay.label], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wav2vec2_base", "hubert_base", "wavlm_base"])
def test_ssl_capture_with_fixed_seed_weights(name, tmp_path):
    """Fixed-seed weights through a state-dict file (nothing downloaded); the captured
    transformer layers equal torchaudio's own extract_features, the CNN layer its feature
    encoder output; a second load of the file gives the same model."""
    import torchaudio.models as M

    torch.manual_seed(0)
    ref = getattr(M, name)().eval()
    path = tmp_path / f"{name}.pt"
    torch.save(ref.state_dict(), path)
    spec = load_model(name, checkpoint=str(path))
    assert spec.kind == "ssl" and spec.window == 30700 and len(spec.layers) == 13
    assert spec.layers[0].shape == (95, 512) and spec.layers[-1].shape == (95, 768)
    x = _noise(4000)  # a quarter second: 12 frames
    got = _capture(spec, x)
    with torch.no_grad():
        feats, _ = ref.extract_features(torch.from_numpy(x))
        conv, _ = ref.feature_extractor(torch.from_numpy(x), None)
    np.testing.assert_allclose(got["feature_extractor"], conv.numpy(), rtol=1e-5, atol=1e-5)
    assert len(feats) == 12
    for i, f in enumerate(feats):
        assert got[f"encoder.transformer.layers.{i}"].shape == (1, 12, 768)
        np.testing.assert_allclose(got[f"encoder.transformer.layers.{i}"], f.numpy(), rtol=1e-4, atol=1e-4)
