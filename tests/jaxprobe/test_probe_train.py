"""All-layer probe training: data alignment, loss goes down, vmapped == per-layer, exact resume."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxprobe.probe import ProbeConfig, TrainConfig, evaluate_probes, probe_frames, train_probes

RATES = {"cnn1": 1, "blstm3": 2, "blstm4": 2, "blstm5": 4}
HIDDEN = {"cnn1": 12, "blstm3": 8, "blstm4": 8, "blstm5": 8}
PROBE = ProbeConfig(width=16, n_mels=8)
CFG = TrainConfig(steps=40, batch_blocks=8, learning_rate=1e-2, warmup_steps=5, eval_every=10, patience=50)


def _corpus(seed=0, n_utt=5):
    """Activations that carry the mel (linearly mixed, per layer), so probes can learn."""
    rng = np.random.default_rng(seed)
    mels = [rng.standard_normal((int(rng.integers(40, 70)), 8)).astype(np.float32) for _ in range(n_utt)]
    mixer = np.random.default_rng(99)  # the same "model" for training and held-out utterances
    mix = {n: mixer.standard_normal((8 * r, HIDDEN[n])).astype(np.float32) / np.sqrt(8 * r) for n, r in RATES.items()}
    acts = {}
    for n, r in RATES.items():
        acts[n] = []
        for m in mels:
            T = -(-len(m) // r)  # ceil: the last frame covers a partial block
            pad = np.pad(m, ((0, T * r - len(m)), (0, 0)))
            acts[n].append(np.tanh(pad.reshape(T, r * 8) @ mix[n]).astype(np.float32))
    return acts, mels


@pytest.fixture(scope="module")
def data():
    acts, mels = _corpus(0)
    vacts, vmels = _corpus(1, 3)
    return probe_frames(acts, mels, RATES), probe_frames(vacts, vmels, RATES)


def test_probe_frames_alignment():
    acts, mels = _corpus(0)
    d = probe_frames(acts, mels, RATES)
    assert d.block == 4 and d.names == tuple(RATES)
    assert sum(len(m) // 4 for m in mels) == d.n_blocks
    assert d.inputs[3].shape == (d.n_blocks, 1, 8) and d.inputs[1].shape == (d.n_blocks, 2, 8)
    # block b of utterance 0 holds mel frames 4b..4b+3 and activation frames (4b/r)...
    np.testing.assert_array_equal(d.target[2], mels[0][8:12])
    np.testing.assert_array_equal(d.inputs[1][2], acts["blstm3"][0][4:6])
    np.testing.assert_array_equal(d.inputs[3][2], acts["blstm5"][0][2:3])
    assert d.subset(["blstm5"]).block == 4


def test_probe_frames_errors():
    acts, mels = _corpus(0)
    with pytest.raises(ValueError, match="has no rate for layer"):
        probe_frames(acts, mels, {"cnn1": 1})
    with pytest.raises(ValueError, match="check the layer's downsampling factor"):
        probe_frames(acts, mels, {**RATES, "blstm5": 8})
    with pytest.raises(ValueError, match="multiple of every rate"):
        probe_frames(acts, mels, RATES, block=6)
    bad = [m.copy() for m in mels]
    bad[1][3, 2] = np.nan
    with pytest.raises(ValueError, match=r"targets\[1\].*must be finite"):
        probe_frames(acts, bad, RATES)
    with pytest.raises(ValueError, match="has 4 utterances but targets has 5"):
        probe_frames({**acts, "cnn1": acts["cnn1"][:4]}, mels, RATES)
    with pytest.raises(TypeError, match="must be a ProbeData"):
        train_probes({"a": 1}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="'steps' parameter of TrainConfig"):
        train_probes(probe_frames(acts, mels, RATES), key=jax.random.key(0), config=TrainConfig(steps=0))


def test_all_layers_learn_and_equal_per_layer(data):
    d, v = data
    key = jax.random.key(3)
    res = train_probes(d, key=key, valid=v, config=CFG, probe=PROBE)
    first, last = res.history[0]["valid_l1"], res.history[-1]["valid_l1"]
    assert res.step == 40 and res.finished and len(res.history) == 4
    for n in RATES:
        assert last[n] < first[n], (n, first[n], last[n])
    assert last["cnn1"] < 0.8 * first["cnn1"]  # the widest, non-downsampled layer learns most
    ev = evaluate_probes(res, v)
    best = {n: min(h["valid_l1"][n] for h in res.history) for n in RATES}
    for n in RATES:
        np.testing.assert_allclose(ev[n], best[n], rtol=1e-5)
    # the vmapped/grouped run equals training each layer alone with the same key
    for n in ("blstm4", "blstm5"):  # one from a group of two, one alone
        alone = train_probes(d.subset([n]), key=key, valid=v.subset([n]), config=CFG, probe=PROBE)
        np.testing.assert_allclose(alone.history[-1]["valid_l1"][n], last[n], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     alone.params[n], res.params[n])


def test_vmap_and_unrolled_layouts_agree(data):
    """The two layouts of the all-layer step (TrainConfig.fuse) train the same probes: same
    parameters, same batches, float tolerance after 40 Adam steps (rtol 1e-4, atol 1e-6)."""
    import dataclasses

    d, v = data
    key = jax.random.key(3)
    a = train_probes(d, key=key, valid=v, config=dataclasses.replace(CFG, fuse="vmap"), probe=PROBE)
    b = train_probes(d, key=key, valid=v, config=dataclasses.replace(CFG, fuse="unroll"), probe=PROBE)
    for n in RATES:
        np.testing.assert_allclose(a.history[-1]["valid_l1"][n], b.history[-1]["valid_l1"][n], rtol=1e-5)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), a.params[n], b.params[n])
    with pytest.raises(ValueError, match="fuse"):
        train_probes(d, key=key, config=dataclasses.replace(CFG, fuse="scan"), probe=PROBE)


def test_early_stopping_keeps_best(data):
    d, v = data
    cfg = TrainConfig(steps=60, batch_blocks=8, learning_rate=3e-1, warmup_steps=0, schedule="constant",
                      eval_every=10, patience=1, min_delta=0.0)
    res = train_probes(d, key=jax.random.key(0), valid=v, config=cfg, probe=PROBE)
    stopped = [n for n, s in res.stopped.items() if s is not None]
    assert stopped, "a huge learning rate should stall at least one layer"
    ev = evaluate_probes(res, v)
    for n in RATES:
        np.testing.assert_allclose(ev[n], min(h["valid_l1"][n] for h in res.history), rtol=1e-5)
    for n in stopped:  # a stopped layer is frozen: its held-out loss no longer changes
        after = [h["valid_l1"][n] for h in res.history if h["step"] >= res.stopped[n]]
        assert len(set(after)) == 1, (n, after)


def test_resume_is_exact(data, tmp_path):
    d, v = data
    key = jax.random.key(3)
    straight = train_probes(d, key=key, valid=v, config=CFG, probe=PROBE, checkpoint_dir=tmp_path / "a")
    # the first run stops mid-chunk (step 25; evaluations every 10) and is dropped, as a killed job
    # would be; a fresh call finds its checkpoint and resumes
    half = train_probes(d, key=key, valid=v, config=CFG, probe=PROBE, checkpoint_dir=tmp_path / "b",
                        stop_at_step=25)
    assert half.step == 25 and not half.finished
    del half
    resumed = train_probes(d, key=key, valid=v, config=CFG, probe=PROBE, checkpoint_dir=tmp_path / "b")
    assert resumed.step == 40 and resumed.finished
    assert resumed.history == straight.history
    jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
    # a checkpoint of another run is refused
    with pytest.raises(ValueError, match="different run"):
        train_probes(d, key=jax.random.key(4), valid=v, config=CFG, probe=PROBE, checkpoint_dir=tmp_path / "b")
