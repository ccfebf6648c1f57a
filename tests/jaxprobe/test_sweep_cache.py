"""The sweep's analysis stage trusts neither its cache nor the store: results are keyed on the
store's content (its checksums) and every output of the stage is written and checked as one
unit (fault injection on a small synthetic sweep store)."""
import json

import numpy as np
import pytest

from jaxprobe.studies.sweep.config import load_sweep_config
from jaxprobe.studies.sweep import runner as sweep
from tests.jaxprobe.test_sweep_analysis import SNRS, _synthetic
from torch_bridge.dump import Item
from torch_bridge.store import Plan, StoreIntegrityError, StoreWriter
from tests.npz import load_npz

CHUNK = 8


def _write_store(path, layers, noisy, clean, noises):
    """Items in the layout of dump_snr_sweep: per utterance the clean reference, then every
    (noise, SNR); one window each."""
    U = next(iter(clean.values())).shape[0]
    items, rows = [], []
    for u in range(U):
        items.append(Item({"noise": "clean", "snr": None}, f"u{u}", 0))
        rows.append(("clean", None, u))
        for k, n in enumerate(noises):
            for s, snr in enumerate(SNRS):
                items.append(Item({"noise": n, "snr": float(snr)}, f"u{u}", 0))
                rows.append(("noisy", (k, s), u))
    w = StoreWriter(path, plan=Plan.from_items(items), layers=layers, chunk_size=CHUNK, durable=False)

    def row(layer, r):
        kind, ks, u = r
        return clean[layer][u] if kind == "clean" else noisy[layer][ks[0], ks[1], u]

    for k in w.shard_chunks():
        rng = w.chunk_items(k)
        w.write_chunk(k, {e["name"]: np.stack([row(e["name"], rows[i]) for i in rng]) for e in layers})
    return w


@pytest.fixture()
def setup(tmp_path, rng):
    layers, noisy, clean, noises = _synthetic(rng, K=2, U=3)
    store = tmp_path / "store"
    writer = _write_store(store, layers, noisy, clean, noises)
    cfg = load_sweep_config({"sweep": {"snrs": [float(s) for s in SNRS]},
                             "cka": {"n_boot": 20, "estimators": ["biased"], "designs": ["noise"]},
                             "diffusion": {"inter_snrs": [float(s) for s in SNRS]}})
    out = tmp_path / "out"
    out.mkdir()
    return cfg, store, writer, out


def _run(cfg, store, out, capsys):
    res = sweep._analysis_stage(cfg, store, out, "synthetic")
    return res, capsys.readouterr().out


def test_cached_only_while_store_and_outputs_are_unchanged(setup, capsys):
    cfg, store, writer, out = setup
    first, log = _run(cfg, store, out, capsys)
    assert "analysis: cached" not in log and (out / "stages" / "analysis.json").is_file()
    again, log = _run(cfg, store, out, capsys)
    assert "analysis: cached" in log and again == json.loads((out / "results.json").read_text())

    # the store changes under the cached results: one chunk recomputed with other values
    k = 1
    rng = writer.chunk_items(k)
    arrays = {name: writer.chunk(k, name, mmap=False) * np.float32(1.5) for name in writer.layers}
    writer.discard_chunk(k)
    assert writer.write_chunk(k, arrays)
    changed, log = _run(cfg, store, out, capsys)
    assert "recomputing: its inputs or settings changed" in log and "analysis: cached" not in log
    assert changed["settings"]["analysis_fingerprint"] != first["settings"]["analysis_fingerprint"]
    assert changed["cka"] != first["cka"] and len(rng) == CHUNK


def test_missing_or_edited_output_is_recomputed(setup, capsys):
    cfg, store, _, out = setup
    _run(cfg, store, out, capsys)
    before = load_npz(out / "cka_values.npz")
    keys = sorted(before)
    (out / "cka_values.npz").unlink()
    _, log = _run(cfg, store, out, capsys)
    assert f"recomputing: {out / 'cka_values.npz'} is missing" in log
    after = load_npz(out / "cka_values.npz")
    assert sorted(after) == keys
    for name in keys:
        np.testing.assert_array_equal(after[name], before[name])
    res = json.loads((out / "results.json").read_text())
    res["cka"][0]["estimate"] = 0.5
    (out / "results.json").write_text(json.dumps(res))
    _, log = _run(cfg, store, out, capsys)
    assert "results.json changed since the stage wrote it" in log


def test_kill_between_the_two_writes_is_recomputed(setup, capsys, monkeypatch):
    """A run killed after results.json and before cka_values.npz leaves no stage manifest,
    so the next run recomputes instead of saying "cached"."""
    cfg, store, _, out = setup

    def killed(*a, **k):
        raise KeyboardInterrupt("killed between the two writes")

    with monkeypatch.context() as m:
        m.setattr(np, "savez_compressed", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(cfg, store, out, capsys)
    assert (out / "results.json").is_file() and not (out / "cka_values.npz").exists()
    assert not (out / "stages" / "analysis.json").exists()
    _, log = _run(cfg, store, out, capsys)
    assert "recomputing: not run yet" in log and (out / "cka_values.npz").is_file()


def test_damaged_store_is_named_not_analysed(setup, capsys):
    cfg, store, _, out = setup
    f = store / "chunks" / "0000002" / "Dec1.1.npy"
    raw = bytearray(f.read_bytes())
    raw[-4] ^= 0x01  # the lowest mantissa bit of the last value
    f.write_bytes(bytes(raw))
    with pytest.raises(StoreIntegrityError, match="content changed since commit") as err:
        _run(cfg, store, out, capsys)
    assert str(f) in str(err.value)


def test_damage_found_while_analysing_is_recomputed_then_analysed(setup, capsys, monkeypatch):
    """The sweep's dump stage checks sizes and seals only; a flipped bit is caught when the
    analysis reads the file, and the damaged chunks (all of them, found by one verify) go back
    to the dump stage before the analysis runs again."""
    cfg, store, writer, out = setup
    clean_run, _ = _run(cfg, store, out, capsys)
    (out / "stages" / "analysis.json").unlink()  # force the analysis to read the store again
    good = {k: {name: writer.chunk(k, name, mmap=False).copy() for name in writer.layers} for k in (1, 3)}
    for k, layer in ((1, "Enc1.0"), (3, "Latent.1")):
        f = store / "chunks" / f"{k:07d}" / f"{layer}.npy"
        raw = bytearray(f.read_bytes())
        raw[-8] ^= 0x01
        f.write_bytes(bytes(raw))
    calls = []

    def dump_stage(cfg_, out_, checkpoint, recompute=()):  # what the real dump does for these chunks
        calls.append(list(recompute))
        for k in recompute:
            writer.discard_chunk(k)
            writer.write_chunk(k, good[k])
        return store, "synthetic", []

    monkeypatch.setattr(sweep, "_dump_stage", dump_stage)
    res = sweep._analyse_repairing(cfg, out, None, store, "synthetic")
    log = capsys.readouterr().out
    assert calls == [[1, 3]] and "the store is damaged" in log and "0000001/Enc1.0.npy" in log
    assert res["cka"] == clean_run["cka"]
