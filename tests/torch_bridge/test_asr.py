"""CTC recognisers: text, decoding, layer map and downsampling factors through capture, the
BLSTM's padding handling, bad inputs, training (loss falls), checkpoints and exact resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torch_bridge as tb
from torch_bridge.data.record import AudioRecord
from torch_bridge.models.asr import (
    ASR_LAYERS,
    BLSTM,
    VOCAB,
    AsrConfig,
    CTCRecogniser,
    encode_text,
    greedy_decode,
    normalise_text,
    output_frames,
)
from torch_bridge.train_asr import TrainConfig, add_noise, evaluate_asr, load_recogniser, step_items, train_asr

SR = 16000
TINY = {"channels": (2, 2, 4, 4), "hidden": 8}


def _utt(i: int, text: str, seconds: float = 0.5) -> AudioRecord:
    """A 'word' of harmonics whose pitch depends on the item, so items differ."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110.0 + 20.0 * i
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * np.hanning(t.size)
    return AudioRecord(id=f"u{i}", speaker=f"s{i % 2}", waveform=(0.1 * x).astype(np.float32),
                       sample_rate=SR, transcript=text)


UTTS = [_utt(i, w) for i, w in enumerate(["ab", "ba", "a b", "bb"])]


def test_text_normalisation_and_vocabulary():
    assert normalise_text("The  old-barn, leaned!  ") == "the old barn leaned"
    assert "".join(VOCAB[i] for i in encode_text("Don't stop.")) == "don't stop"
    assert VOCAB[0] == "<blank>" and len(set(VOCAB)) == len(VOCAB) == 29
    with pytest.raises(ValueError, match="no characters"):
        encode_text("123 !")


def test_greedy_decode_merges_repeats_and_drops_blanks():
    ids = [[3, 3, 0, 3, 4, 0, 1, 5, 5], [4, 0, 0, 0, 0, 0, 0, 0, 0]]
    lp = torch.full((2, 9, len(VOCAB)), -10.0)
    for b, seq in enumerate(ids):
        for t, s in enumerate(seq):
            lp[b, t, s] = 0.0
    out = greedy_decode(lp, torch.tensor([9, 1]))
    assert out == ["aab c", "b"]


@pytest.mark.parametrize("model", ["vgg_lstm", "lstm"])
def test_layer_map_shapes_and_downsampling_through_capture(model):
    cfg = AsrConfig(model=model, **TINY)
    net = CTCRecogniser(cfg).eval()
    layers = net.layers
    expected_labels = (["cnn1", "cnn2", "cnn4"] if model == "vgg_lstm" else []) + [f"blstm{k}" for k in range(1, 6)]
    assert [l.label for l in layers] == expected_labels
    assert [l.label for l in ASR_LAYERS[model]] == expected_labels
    rs = (1, 1, 2, 4, 4, 4, 4, 4) if model == "vgg_lstm" else (1, 1, 2, 4, 8)
    assert tuple(l.r for l in layers) == rs
    n = 7001  # odd frame counts exercise the ceil rules
    x = torch.randn(2, n) * 0.1
    with tb.capture(net, layers, pooling="frames") as acts:
        out = net(x)
    t_mel = n // cfg.hop_length + 1
    assert net.log_mel(x).shape == (2, t_mel, 80)
    for layer in layers:
        assert acts[layer.name].shape == (2, math.ceil(t_mel / layer.r), layer.width), layer.label
    assert out.log_probs.shape == (2, output_frames(cfg, n), len(VOCAB))
    assert out.lengths.tolist() == [output_frames(cfg, n)] * 2
    assert math.ceil(t_mel / net.downsampling) == output_frames(cfg, n)
    # the deepest layer runs at the output rate
    assert acts[layers[-1].name].shape[1] == out.log_probs.shape[1]
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2, out.log_probs.shape[1]))


def test_default_hops_give_both_models_the_same_output_rate():
    a, b = AsrConfig(model="vgg_lstm"), AsrConfig(model="lstm")
    assert output_frames(a, 48000) == output_frames(b, 48000) == 76  # 40 ms frames


def test_blstm_padding_does_not_leak_into_valid_frames():
    torch.manual_seed(0)
    layer = BLSTM(5, 4)
    a, b = torch.randn(1, 9, 5), torch.randn(1, 6, 5)
    batch = torch.zeros(2, 9, 5)
    batch[0], batch[1, :6] = a[0], b[0]
    batch[1, 6:] = 100.0  # garbage in the padding must not matter
    out = layer(batch, torch.tensor([9, 6]))
    torch.testing.assert_close(out[0], layer(a, torch.tensor([9]))[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1, :6], layer(b, torch.tensor([6]))[0], rtol=1e-5, atol=1e-6)
    assert torch.all(out[1, 6:] == 0)
    # the backward half at frame 0 depends on the last valid frame: it is no causal copy
    b2 = b.clone()
    b2[0, 5] += 1.0
    assert not torch.allclose(layer(b2, torch.tensor([6]))[0, 0, 4:], layer(b, torch.tensor([6]))[0, 0, 4:])


def test_bad_inputs_are_rejected_with_clear_errors():
    net = CTCRecogniser(AsrConfig(**TINY))
    with pytest.raises(ValueError, match=r"shape \(batch, samples\)"):
        net(torch.zeros(1, 1, 4000))
    with pytest.raises(ValueError, match="at least 400 samples"):
        net(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="NaN"):
        net(torch.full((1, 4000), float("nan")))
    with pytest.raises(ValueError, match="'lengths'"):
        net(torch.zeros(2, 4000), torch.tensor([4000, 5000]))
    with pytest.raises(ValueError, match="'model'"):
        AsrConfig(model="transformer")
    with pytest.raises(ValueError, match="'channels'"):
        AsrConfig(channels=(1, 2, 3))
    with pytest.raises(ValueError, match="'regime'"):
        TrainConfig(regime="noisy")
    with pytest.raises(ValueError, match="robust regime"):
        train_asr(UTTS, UTTS, "/nonexistent", asr_config=AsrConfig(**TINY),
                  config=TrainConfig(regime="robust", batch_size=2), progress=False)


def test_add_noise_hits_the_snr_and_is_seeded():
    rng = np.random.default_rng(0)
    clean = 0.05 * rng.standard_normal(8000)
    noise = 0.3 * rng.standard_normal(3000)  # shorter than the speech: read circularly
    mix = add_noise(clean, noise, 7.0, rng=np.random.default_rng(5))
    added = mix.astype(np.float64) - clean
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean(added ** 2))
    assert abs(snr - 7.0) < 1e-3
    np.testing.assert_array_equal(mix, add_noise(clean, noise, 7.0, rng=np.random.default_rng(5)))
    loud = add_noise(clean * 20, noise, -10.0, rng=np.random.default_rng(1))
    assert np.max(np.abs(loud)) <= 0.99 + 1e-6
    with pytest.raises(ValueError, match="silent"):
        add_noise(np.zeros(100), noise, 0.0, rng=rng)


def test_step_items_depend_on_the_step_only():
    a = [step_items(s, 10, 3, seed=4).tolist() for s in range(6)]
    assert a == [step_items(s, 10, 3, seed=4).tolist() for s in range(6)]
    assert sorted(sum(a[:3], [])) == sorted(set(sum(a[:3], [])))  # no repeats within an epoch


def _train(tmp, steps, regime="baseline", resume=True):
    cfg = TrainConfig(regime=regime, batch_size=2, lr=1e-2, max_steps=steps, checkpoint_every=2, seed=3)
    noises = [np.random.default_rng(0).standard_normal(4000).astype(np.float32)]
    return train_asr(UTTS, UTTS[:2], tmp, asr_config=AsrConfig(model="lstm", **TINY), config=cfg,
                     noises=noises, resume=resume, progress=False)


def test_loss_decreases_and_checkpoint_loads(tmp_path):
    cfg = TrainConfig(batch_size=4, lr=2e-2, max_steps=12, checkpoint_every=100)
    res = train_asr(UTTS, UTTS, tmp_path, asr_config=AsrConfig(model="vgg_lstm", **TINY), config=cfg, progress=False)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert set(res.metrics) >= {"cer", "wer", "step"} and res.metrics["step"] == 12
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.json").is_file()
    loaded = load_recogniser(tmp_path)
    x = torch.from_numpy(UTTS[0].waveform)[None]
    torch.testing.assert_close(loaded(x).log_probs, res.model(x).log_probs)
    assert evaluate_asr(loaded, UTTS)["cer"] == pytest.approx(res.metrics["cer"])


def test_resume_equals_straight_run(tmp_path):
    straight = _train(tmp_path / "a", 4, regime="robust")
    first = _train(tmp_path / "b", 2, regime="robust")
    assert first.step == 2
    resumed = _train(tmp_path / "b", 4, regime="robust")
    assert resumed.step == 4
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], rel=1e-6)
    for (k, v), (_, w) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(v, w, rtol=1e-6, atol=1e-7, msg=k)
    with pytest.raises(ValueError, match="different train_config"):
        _train(tmp_path / "b", 6, regime="baseline")


def test_train_asr_command_is_registered():
    from jaxprobe import cli

    args = cli.build_parser().parse_args(["train-asr", "--out", "x", "--model", "lstm", "--regime", "robust"])
    assert args._module == "jaxprobe._cmd_train_asr" and args.model == "lstm" and args.regime == "robust"


@pytest.mark.parametrize("model", ["vgg_lstm", "lstm"])
def test_mel_settings_rebuild_the_front_end(model):
    import torchaudio

    cfg = AsrConfig(model=model, **TINY)
    s = cfg.mel_settings()
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=s["sample_rate"], n_fft=s["n_fft"], win_length=s["win_length"], hop_length=s["hop_length"],
        n_mels=s["n_mels"], f_min=s["f_min"], f_max=s["f_max"], power=s["power"], mel_scale=s["mel_scale"],
        norm=s["norm"])
    x = torch.from_numpy(UTTS[1].waveform)[None]
    expected = torch.log(mel(x) + s["log_floor"]).transpose(1, 2)
    torch.testing.assert_close(CTCRecogniser(cfg).log_mel(x), expected)


def test_asr_activations_by_label():
    from torch_bridge.models.asr import asr_activations

    net = CTCRecogniser(AsrConfig(model="vgg_lstm", **TINY)).eval()
    x = torch.from_numpy(np.stack([UTTS[0].waveform, UTTS[1].waveform]))
    mel, acts, out = asr_activations(net, x)
    assert mel.shape == (2, x.shape[1] // 160 + 1, 80)
    assert list(acts) == ["cnn1", "cnn2", "cnn4"] + [f"blstm{k}" for k in range(1, 6)]
    assert acts["cnn4"].shape == (2, math.ceil(mel.shape[1] / 2), 4 * 40)
    np.testing.assert_array_equal(acts["blstm5"].shape[:2], out.log_probs.shape[:2])


def test_dump_through_the_bridge_store(tmp_path):
    from torch_bridge.dump import Item, dump
    from torch_bridge.models.asr import INPUT_LAYER, asr_activations, asr_dump_spec

    net = CTCRecogniser(AsrConfig(model="lstm", **TINY)).eval()
    layers, pooling = asr_dump_spec(net)
    items = [Item({"snr": "clean"}, u.id) for u in UTTS[:3]]
    waves = {u.id: u.waveform for u in UTTS}
    dump(net, layers, items, lambda it: waves[it.utterance], str(tmp_path / "store"), pooling=pooling,
         batch_size=2, chunk_size=2, progress=False, durable=False)
    store = tb.open_store(tmp_path / "store")
    mel, acts, _ = asr_activations(net, torch.from_numpy(np.stack([waves[i.utterance] for i in items])))
    np.testing.assert_allclose(store.read(INPUT_LAYER), mel, rtol=1e-5, atol=1e-5)
    for layer in net.layers:
        got = store.read(layer.name)
        assert got.shape == (3, layer.frames(mel.shape[1]), layer.width)
        np.testing.assert_allclose(got, acts[layer.label], rtol=1e-5, atol=1e-5)
    assert [e["r"] for e in store.manifest["layers"]] == [1, 1, 2, 4, 8, 1]


def test_package_exports_resolve_to_callables():
    import torch_bridge.train_asr  # noqa: F401  (the submodule shadows nothing exported)

    assert tb.train_recogniser is train_asr and callable(tb.train_on_corpus)
    assert tb.CTCRecogniser is CTCRecogniser and tb.ASR_LAYERS is ASR_LAYERS
