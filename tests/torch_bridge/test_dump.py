"""dump(): generic pipeline, resume after real SIGKILLs, concurrent shard writers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torch_bridge.dump import Item, dump, parse_shard
from torch_bridge.store import open_store

from . import _dump_worker as worker

WORKER = Path(worker.__file__)
ROOT = Path(__file__).resolve().parents[2]


def _spawn(out, shard="0/1", kill_at=None):
    args = [sys.executable, str(WORKER), str(out), shard] + ([str(kill_at)] if kill_at else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    if p.stdout.readline().strip() != "ready":
        raise AssertionError(p.communicate()[1])
    return p


def _finish(p, timeout=120):
    """Wait for the worker; returns (returncode, stdout, stderr) and closes its pipes."""
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _kill_after(p, seconds):
    """SIGKILL the worker after `seconds` unless it finished first; closes its pipes."""
    try:
        p.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
    return _finish(p)


def _assert_consistent(path):
    """Every committed chunk is whole: all layers, right rows, readable; no stray entries."""
    st = open_store(path)
    for k in st.done_chunks():
        rows = len(st.chunk_items(k))
        for layer in st.layers:
            assert st.chunk(k, layer, mmap=False).shape[0] == rows
        assert st.chunk_meta(k)["items"] == [st.chunk_items(k).start, st.chunk_items(k).stop]
    names = os.listdir(Path(path) / "chunks")
    assert all(n.isdigit() or n.startswith(".tmp-") for n in names)
    return st


def _assert_equal_stores(a, b):
    sa, sb = open_store(a), open_store(b)
    assert sa.is_complete() and sb.is_complete()
    np.testing.assert_array_equal(sa.index().item, sb.index().item)
    for layer in sa.layers:
        np.testing.assert_array_equal(sa.read(layer), sb.read(layer))
    assert sa.info() == sb.info()
    assert not [n for n in os.listdir(Path(a) / "chunks") if n.startswith(".tmp-")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "store"
    rep = worker.run(out)
    assert rep.chunks_written == 12 and rep.items_written == 24
    return out


def test_reference_run_matches_direct_capture(reference):
    import torch

    from torch_bridge.capture import capture

    st = open_store(reference)
    model = worker.make_model()
    xs = np.stack([worker.load(it)[0] for it in worker.items()])
    with capture(model, worker.LAYERS) as acts:
        for x in xs:  # the same batch size (1) as the dump, so the arithmetic is identical
            model(torch.from_numpy(x[None]))
    for layer in worker.LAYERS:
        np.testing.assert_array_equal(st.read(layer), acts[layer])
    assert st.read("body.0").shape == (24, 4, 20)  # time_mean of [B, 4, 20, 20]
    assert st.info([0])[0]["rms"] == pytest.approx(float(np.sqrt(np.mean(xs[0] ** 2))))
    idx = st.index()
    assert list(idx.condition_field("noise")[:9:8]) == ["clean", "pink"]
    assert st.manifest["model"] == {"name": "toy"} and st.manifest["capture"]["pooling"] == "time_mean"


def test_second_run_skips_everything(reference, tmp_path):
    rep = worker.run(reference)
    assert rep.chunks_written == 0 and rep.chunks_skipped == 12


@pytest.mark.slow
def test_resume_after_random_sigkills(reference, tmp_path):
    out = tmp_path / "store"
    rng = np.random.default_rng(0)
    for _ in range(3):  # kill at random moments of the run, then resume
        _kill_after(_spawn(out), rng.uniform(0.05, 0.4))
        if (out / "manifest.json").exists():
            _assert_consistent(out)
    # kills inside a chunk commit: before the 1st layer file, between layer files, before meta.json
    for kill_at in (1, 3, 4):
        assert _finish(_spawn(out, kill_at=kill_at))[0] == -signal.SIGKILL
        _assert_consistent(out)
    before = set(open_store(out).done_chunks())
    rc, stdout, stderr = _finish(_spawn(out))
    assert rc == 0, stderr
    assert stdout.strip() == "done"
    assert before != set(range(12)), "the kills left nothing to resume; the test would prove nothing"
    _assert_equal_stores(out, reference)


@pytest.mark.slow
def test_two_shard_writers_fill_one_store_concurrently(reference, tmp_path):
    out = tmp_path / "store"
    a, b = _spawn(out, "0/2"), _spawn(out, "1/2")  # both race to create the manifest
    _kill_after(a, 0.15)
    rc, _, err = _finish(b)
    assert rc == 0, err
    st = _assert_consistent(out)
    assert set(range(1, 12, 2)) <= set(st.done_chunks())
    rc, _, err = _finish(_spawn(out, "0/2"))  # resume the killed shard
    assert rc == 0, err
    _assert_equal_stores(out, reference)


def test_generic_dump_rejects_mismatched_batches_and_bad_shards(tmp_path):
    model = worker.make_model()
    its = [Item({"snr": 0}, "a"), Item({"snr": 0}, "b")]
    shapes = {"a": 400, "b": 399}
    with pytest.raises(ValueError, match="different shapes"):
        dump(model, ["head"], its, lambda it: np.zeros(shapes[it.utterance], np.float32), tmp_path / "s",
             batch_size=2, progress=False, durable=False)
    assert open_store(tmp_path / "s").done_chunks() == []
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(ValueError, match="i/n"):
            parse_shard(bad)


def test_module_running_twice_per_forward_is_an_error(tmp_path):
    import torch
    from torch import nn

    lin = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(self.lin(x))

    with pytest.raises(RuntimeError, match="ran 2 times"):
        dump(Twice().eval(), ["lin"], [Item({}, "a")], lambda it: np.ones(4, np.float32), tmp_path / "s",
             pooling="none", progress=False, durable=False)
    del torch
