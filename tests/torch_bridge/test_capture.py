"""capture(): hooks, pooling, sides, errors, torchaudio models, user modules, DLPack."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torch_bridge.hooks import Captured, capture, forward_batches, resolve_modules, to_jax


class Tiny(nn.Module):
    """[B, 1, T, F] -> conv -> relu(inplace) -> norm; a tuple-returning block; a dict head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.block = Pair()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        y = self.act(self.conv(x))          # [B, 3, T, F]
        z, _ = self.block(y)                # tuple output
        return self.head(z)


class Pair(nn.Module):
    def forward(self, y):
        return y * 2.0, y.sum()


def _tiny():
    torch.manual_seed(0)
    return Tiny().eval()


def _x(b=2, t=7, f=5, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((b, 1, t, f)).astype(np.float32))


def _hooks(m: nn.Module) -> int:
    return sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in m.modules())


def test_time_mean_matches_manual_and_concatenates_batches():
    m, x1, x2 = _tiny(), _x(seed=1), _x(b=3, seed=2)
    with capture(m, ["conv", "block"]) as acts:
        m(x1)
        m(x2)
    with torch.no_grad():
        conv = torch.cat([torch.relu(m.conv(x1)), torch.relu(m.conv(x2))])  # conv output is relu'd in place
    assert acts["conv"].shape == (5, 3, 5)
    assert acts.n_calls("conv") == 2
    # conv's output is modified in place by ReLU after the hook ran: the hook must have
    # pooled the pre-ReLU values (mean over T of the raw conv output).
    with torch.no_grad():
        raw = torch.cat([m.conv(x1), m.conv(x2)]).mean(2).numpy()
    np.testing.assert_allclose(acts["conv"], raw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(acts["block"], (2 * conv).mean(2).numpy(), rtol=1e-6, atol=1e-6)


def test_pooling_specs_none_is_a_private_copy_and_flat_forms():
    m, x = _tiny(), _x()
    specs = {"conv": "none", "block": "time_mean_flat", "head": "flatten"}
    with capture(m, list(specs), pooling=specs) as acts:
        m(x)
    with torch.no_grad():
        raw = m.conv(x).numpy()  # before the in-place ReLU
        blk = 2 * torch.relu(m.conv(x))
    assert acts["conv"].shape == (2, 3, 7, 5)
    np.testing.assert_allclose(acts["conv"], raw, rtol=1e-6, atol=1e-6)
    assert (acts["conv"] < 0).any(), "the in-place ReLU must not reach the captured copy"
    np.testing.assert_allclose(acts["block"], blk.mean(2).flatten(1).numpy(), rtol=1e-6, atol=1e-6)
    assert acts["head"].shape == (2, 3 * 7 * 2)


def test_frames_and_callable_pooling():
    m, x = _tiny(), _x()
    with capture(m, ["block", "head"], pooling={"block": "frames", "head": lambda t: t.amax(dim=(1, 2))}) as acts:
        m(x)
    with torch.no_grad():
        blk = 2 * torch.relu(m.conv(x))  # [B, C, T, F]
        head = m.head(blk)
    want = blk.permute(0, 2, 1, 3).reshape(2, 7, 15).numpy()
    np.testing.assert_allclose(acts["block"], want, rtol=1e-6)
    np.testing.assert_allclose(acts["head"], head.amax(dim=(1, 2)).numpy(), rtol=1e-6)


def test_input_and_output_side_per_layer():
    m, x = _tiny(), _x()
    with capture(m, ["head", "conv"], pooling="none", side={"head": "input"}) as acts:
        out = m(x)
    with torch.no_grad():
        z = 2 * torch.relu(m.conv(x))
    np.testing.assert_allclose(acts["head"], z.numpy(), rtol=1e-6)
    assert acts["conv"].shape == (2, 3, 7, 5)
    assert out.shape == (2, 3, 7, 2)


def test_select_other_tuple_element_and_bad_select():
    m, x = _tiny(), _x()
    with capture(m, ["block"], pooling=lambda t: t.reshape(1), select=1) as acts:
        m(x)
    with torch.no_grad():
        total = torch.relu(m.conv(x)).sum()
    np.testing.assert_allclose(acts["block"], [total.item()], rtol=1e-5)
    with pytest.raises(TypeError, match="select=5"):
        with capture(m, ["block"], select=5):
            m(x)
    assert _hooks(m) == 0


def test_hooks_removed_on_exception_and_threads_restored():
    m, x = _tiny(), _x()
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with capture(m, ["conv", "block"], threads=1):
            assert _hooks(m) == 2
            assert torch.get_num_threads() == 1
            assert torch.is_inference_mode_enabled()
            raise RuntimeError("boom")
    assert _hooks(m) == 0
    assert torch.get_num_threads() == threads
    assert not torch.is_inference_mode_enabled()
    # an error raised inside a hook (time_mean of a 2-D tensor) also removes them
    lin = nn.Sequential(nn.Linear(5, 2))
    with pytest.raises(ValueError, match="time_mean"):
        with capture(lin, ["0"], pooling="time_mean"):
            lin(torch.zeros(2, 5))
    assert _hooks(lin) == 0


def test_unknown_layer_lists_close_matches():
    m = _tiny()
    with pytest.raises(KeyError, match="'conv'"):
        capture(m, ["conv2"]).__enter__()
    with pytest.raises(KeyError, match="Closest module paths"):
        resolve_modules(nn.Sequential(nn.Sequential(nn.Linear(2, 2))), ["0.O"])
    assert _hooks(m) == 0


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(pooling="mean"), "pooling"),
        (dict(side="middle"), "side"),
        (dict(threads=0), "threads"),
        (dict(pooling={"nope": "none"}), "not captured"),
    ],
)
def test_bad_arguments(bad, match):
    m = _tiny()
    with pytest.raises((ValueError, TypeError), match=match):
        capture(m, ["conv"], **bad).__enter__()
    assert _hooks(m) == 0


def test_layer_records_with_name_attribute():
    from dataclasses import dataclass

    @dataclass
    class Rec:
        name: str
        block: str

    m, x = _tiny(), _x()
    with capture(m, [Rec("conv", "A"), Rec("block", "B")]) as acts:
        m(x)
    assert list(acts) == ["conv", "block"] and isinstance(acts, Captured)


def test_forward_batches_matches_one_big_batch():
    m = _tiny()
    x = _x(b=7, seed=3)
    with capture(m, ["block"]) as a:
        assert forward_batches(m, x, batch_size=3) == 3
    with capture(m, ["block"]) as b:
        m(x)
    np.testing.assert_allclose(a["block"], b["block"], rtol=1e-5, atol=1e-6)


def test_variable_frame_counts_need_batches():
    gru = nn.GRU(4, 6, batch_first=True).eval()
    model = nn.Sequential(gru)
    with capture(model, ["0"], pooling="frames") as acts:  # GRU returns (output, h_n): element 0
        model(torch.randn(2, 5, 4))
        model(torch.randn(2, 8, 4))
    assert [b.shape for b in acts.batches("0")] == [(2, 5, 6), (2, 8, 6)]
    with pytest.raises(ValueError, match="batches"):
        acts["0"]


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["wav2vec2_base", "hubert_base"])
def test_torchaudio_ssl_models_match_extract_features(factory):
    import torchaudio

    torch.manual_seed(0)
    model = getattr(torchaudio.models, factory)().eval()
    wave = torch.randn(2, 8000)
    layers = [f"encoder.transformer.layers.{i}" for i in (0, 5, 11)]
    with capture(model, layers, pooling="frames") as acts:
        model(wave)
    with torch.inference_mode():
        feats, _ = model.extract_features(wave)
    for i, name in zip((0, 5, 11), layers):
        assert acts[name].shape == (2, 24, 768)
        np.testing.assert_allclose(acts[name], feats[i].numpy(), rtol=1e-5, atol=1e-5)
    with capture(model, layers[-1:], pooling="time_mean") as pooled:
        model(wave)
    np.testing.assert_allclose(pooled[layers[-1]], feats[11].mean(1).numpy(), rtol=1e-5, atol=1e-5)


def test_to_jax_shares_memory_with_torch():
    jax = pytest.importorskip("jax")
    t = torch.arange(64 * 32, dtype=torch.float32).reshape(64, 32)
    a = to_jax(t)
    assert a.shape == (64, 32) and a.dtype == jax.numpy.float32
    assert a.unsafe_buffer_pointer() == t.data_ptr(), "DLPack hand-over copied the tensor"
    np.testing.assert_array_equal(np.asarray(a), t.numpy())
    # a non-contiguous view is made contiguous first (a copy, by necessity) and still correct
    np.testing.assert_array_equal(np.asarray(to_jax(t.T)), t.T.numpy())


def test_package_exports_are_the_functions_not_modules():
    import importlib

    import torch_bridge

    for mod in ("torch_bridge.hooks", "torch_bridge.store", "torch_bridge.dump"):
        importlib.import_module(mod)  # importing a submodule must not shadow an export
    from torch_bridge import hooks

    assert torch_bridge.capture is hooks.capture and torch_bridge.to_jax is hooks.to_jax
    assert callable(torch_bridge.run_dump) and callable(torch_bridge.dump_snr_sweep)


def _counting(module: nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda m, a, o: calls.append(1))
    return calls


def test_run_stops_a_pass_after_the_last_captured_layer():
    """The first pass through ``run`` is whole (it counts each layer's calls); later ones stop
    once conv and act have run, so the head never runs again, and what they capture is
    bit-identical to whole passes'."""
    m = _tiny()
    head_calls = _counting(m.head)
    xs = [_x(seed=s) for s in range(3)]
    with capture(m, ["conv", "act"], pooling="none") as whole:
        for x in xs:
            m(x)
    assert len(head_calls) == 3
    with capture(m, ["conv", "act"], pooling="none") as acts:
        first = acts.run(m, xs[0])
        assert isinstance(first, torch.Tensor) and acts.stops_early and len(head_calls) == 4
        assert acts.run(m, xs[1]) is None and acts.run(m, xs[2]) is None
    assert len(head_calls) == 4, "the passes after the first must stop before the head"
    for name in ("conv", "act"):
        assert acts.n_calls(name) == 3
        np.testing.assert_array_equal(acts[name], whole[name])
    assert _hooks(m) == 1  # only the counter is left


def test_run_keeps_every_pass_whole_when_a_layer_runs_twice():
    lin = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.tail = lin, nn.Linear(4, 4)

        def forward(self, x):
            return self.tail(self.lin(self.lin(x)))

    m = Twice().eval()
    tail_calls = _counting(m.tail)
    with capture(m, ["lin"], pooling="none") as acts:
        for _ in range(3):
            assert acts.run(m, torch.ones(1, 4)) is not None
    assert not acts.stops_early and acts.n_calls("lin") == 6 and len(tail_calls) == 3


def test_run_with_a_layer_that_never_runs_keeps_passes_whole_and_errors_propagate():
    m = _tiny()
    head_calls = _counting(m.head)
    with capture(m, ["conv", "head"], pooling="none") as acts:
        acts.run(lambda x: m.act(m.conv(x)), _x())  # head never runs in this pass
        assert not acts.stops_early
        acts.run(m, _x())
    assert len(head_calls) == 1 and acts.n_calls("conv") == 2
    with capture(m, ["conv"], pooling="none") as acts, pytest.raises(RuntimeError, match="boom"):
        acts.run(lambda x: (_ for _ in ()).throw(RuntimeError("boom")), _x())
