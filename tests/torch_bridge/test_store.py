"""The activation store: round trip, lazy reads, manifest, atomic commits, identity checks."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from torch_bridge.dump import Item
from torch_bridge.store import (ActivationStore, LegacyStoreError, Plan, StoreIntegrityError, StoreWriter, open_store,
                                rehash_store, verify_store)

LAYERS = [
    {"name": "enc.0.norm1", "block": "Enc1", "index": 0, "shape": [3, 4], "skip": "output"},
    {"name": "dec.1.norm1", "block": "Dec1", "index": 0, "shape": [2, 5], "skip": None},
]


def _items():
    conds = [{"noise": "clean", "snr": None}] + [{"noise": n, "snr": s} for n in ("pink", "babble") for s in (-5, 0, 5)]
    return [Item(c, f"utt{u}", w) for c in conds for u in range(3) for w in range(2)]  # 7*3*2 = 42


def _arrays(items, rng_seed=0):
    """Deterministic fake activations per item (so any chunk can be recomputed)."""
    out = {}
    for e in LAYERS:
        rows = []
        for it in items:
            seed = abs(hash((json.dumps(dict(it.condition), sort_keys=True), it.utterance, it.window, e["name"]))) % 2**32
            rows.append(np.random.default_rng(seed).standard_normal(e["shape"]).astype(np.float32))
        out[e["name"]] = np.stack(rows)
    return out


def _writer(path, items, **kw):
    args = dict(plan=Plan.from_items(items), layers=LAYERS, chunk_size=5,
                model={"name": "toy", "checkpoint_sha256": "ab" * 32},
                capture={"pooling": "time_mean", "side": "output"},
                mixing={"target_lufs": -23.0, "seed": 7}, durable=False)
    args.update(kw)
    return StoreWriter(path, **args)


def _fill(writer, items, chunks=None):
    for k in writer.shard_chunks() if chunks is None else chunks:
        r = writer.chunk_items(k)
        sub = items[r.start:r.stop]
        writer.write_chunk(k, _arrays(sub), [{"snr_achieved": it.condition["snr"], "pos": p} for p, it in zip(r, sub)])


def test_plan_codes_and_hash():
    items = _items()
    plan = Plan.from_items(items)
    assert len(plan) == 42 and len(plan.conditions) == 7 and plan.utterances == ["utt0", "utt1", "utt2"]
    assert plan.conditions[plan.condition[10]] == dict(items[10].condition)
    assert plan.sha256() == Plan.from_items(list(items)).sha256()
    assert plan.sha256() != Plan.from_items(items[::-1]).sha256()
    with pytest.raises(ValueError, match="unique"):
        Plan.from_items(items + items[:1])
    with pytest.raises(ValueError, match="non-finite"):
        Plan.from_items([Item({"snr": float("inf")}, "u")])


def test_round_trip_index_and_lazy_reads(tmp_path):
    items = _items()
    w = _writer(tmp_path / "s", items)
    _fill(w, items)
    st = open_store(tmp_path / "s")
    assert st.is_complete() and st.n_chunks == 9 and st.layers == [e["name"] for e in LAYERS]
    want = _arrays(items)
    for e in LAYERS:
        got = st.read(e["name"])
        assert got.dtype == np.float32 and got.shape == (42, *e["shape"])
        np.testing.assert_array_equal(got, want[e["name"]])
        assert st.layer_shape(e["name"]) == tuple(e["shape"])
    # gathering arbitrary rows, out of order and across chunks
    pick = np.array([41, 0, 17, 5, 5])
    np.testing.assert_array_equal(st.read("dec.1.norm1", pick), want["dec.1.norm1"][pick])
    idx = st.index()
    np.testing.assert_array_equal(idx.item, np.arange(42))
    assert list(idx.utterance_ids()[:3]) == ["utt0", "utt0", "utt1"]
    snr = idx.condition_field("snr")
    assert snr.dtype == object and snr[0] is None and snr[6] == -5  # clean has no SNR: None, not NaN
    noise = idx.condition_field("noise")
    assert list(noise[[0, 6, 41]]) == ["clean", "pink", "babble"]
    assert [i["pos"] for i in st.info([3, 40])] == [3, 40]
    # streaming: every chunk array is a read-only memory map, rows aligned with the index
    seen = []
    for ch in st.iter_chunks(["enc.0.norm1"]):
        a = ch.arrays["enc.0.norm1"]
        assert isinstance(a, np.memmap) and not a.flags.writeable
        np.testing.assert_array_equal(a, want["enc.0.norm1"][ch.index.item])
        seen.extend(ch.index.item.tolist())
    assert seen == list(range(42))
    with pytest.raises(KeyError, match="enc.0.norm1"):
        st.read("enc.0.norm2")


def test_condition_field_types(tmp_path):
    items = [it for it in _items() if it.condition["snr"] is not None]
    w = _writer(tmp_path / "s", items)
    _fill(w, items)
    idx = open_store(tmp_path / "s").index()
    snr = idx.condition_field("snr")
    assert snr.dtype == np.float64 and set(snr) == {-5.0, 0.0, 5.0}


def test_manifest_contents(tmp_path):
    items = _items()
    _writer(tmp_path / "s", items, extra={"note": "x"})
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["format"] == "jaxprobe-activation-store" and m["version"] == 2
    assert m["model"] == {"name": "toy", "checkpoint_sha256": "ab" * 32}
    assert m["layers"] == LAYERS
    assert m["mixing"] == {"target_lufs": -23.0, "seed": 7}
    assert m["capture"]["pooling"] == "time_mean"
    assert m["chunk_size"] == 5 and m["n_items"] == 42
    assert m["plan"]["sha256"] == Plan.from_items(items).sha256()
    assert {"python", "numpy", "torch"} <= set(m["versions"])
    assert m["extra"] == {"note": "x"}


def test_incomplete_store_reads_what_is_committed(tmp_path):
    items = _items()
    w = _writer(tmp_path / "s", items)
    _fill(w, items, chunks=[0, 3])
    st = ActivationStore(tmp_path / "s")
    assert not st.is_complete() and st.done_chunks() == [0, 3]
    np.testing.assert_array_equal(st.index().item, np.r_[0:5, 15:20])
    assert len(st.plan_index()) == 42
    with pytest.raises(RuntimeError, match="incomplete: 7 of 9"):
        st.index(complete_only=True)
    with pytest.raises(FileNotFoundError, match="not committed"):
        st.chunk(1, "enc.0.norm1")


def test_reopen_must_agree(tmp_path):
    items = _items()
    _writer(tmp_path / "s", items)
    _writer(tmp_path / "s", items)  # same settings: fine
    with pytest.raises(ValueError, match="chunk_size"):
        _writer(tmp_path / "s", items, chunk_size=6)
    with pytest.raises(ValueError, match="plan"):
        _writer(tmp_path / "s", items[:-1])
    with pytest.raises(ValueError, match="mixing"):
        _writer(tmp_path / "s", items, mixing={"target_lufs": -20.0, "seed": 7})
    # a user's choice of --out, not a bug: the CLI prints it on one line (exit 2), no traceback
    from jaxprobe.cli import is_user_error
    from torch_bridge.store import StoreSettingsError

    with pytest.raises(StoreSettingsError) as info:
        _writer(tmp_path / "s", items, chunk_size=6)
    assert is_user_error(info.value)


def test_commit_is_exclusive_and_validated(tmp_path):
    items = _items()
    w1 = _writer(tmp_path / "s", items)
    w2 = _writer(tmp_path / "s", items)
    sub = items[0:5]
    assert w1.write_chunk(0, _arrays(sub)) is True
    assert w2.write_chunk(0, _arrays(sub)) is False  # already committed: nothing written twice
    bad = _arrays(sub)
    bad["enc.0.norm1"][1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        w1.write_chunk(1, bad)
    with pytest.raises(ValueError, match="rows"):
        w1.write_chunk(1, _arrays(items[5:9]))
    with pytest.raises(ValueError, match="missing"):
        w1.write_chunk(1, {"enc.0.norm1": _arrays(items[5:10])["enc.0.norm1"]})
    assert not w1.is_done(1)
    assert not [n for n in os.listdir(tmp_path / "s" / "chunks") if n.startswith(".tmp")]


def test_leftover_temporary_is_ignored_then_cleaned(tmp_path):
    items = _items()
    w = _writer(tmp_path / "s", items)
    torn = tmp_path / "s" / "chunks" / ".tmp-0000002-host-99999-deadbeef"
    torn.mkdir()
    (torn / "enc.0.norm1.npy").write_bytes(b"\x93NUMPY garbage")
    st = open_store(tmp_path / "s")
    assert st.done_chunks() == [] and len(st.index()) == 0
    assert w.clean_temporaries([0, 1]) == 0 and torn.exists()  # not ours: left alone
    assert w.clean_temporaries([2]) == 1 and not torn.exists()


def test_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        open_store(tmp_path)


# ----------------------------------------------------------------------------- integrity (fault injection)
def _complete(tmp_path):
    items = _items()
    w = _writer(tmp_path / "s", items)
    _fill(w, items)
    return items, tmp_path / "s"


def _layer_path(root, k, layer="enc.0.norm1"):
    return root / "chunks" / f"{k:07d}" / f"{layer}.npy"


def _flip_low_mantissa_bits(path, n=200, seed=0):
    """Flip the lowest mantissa bit of n float32 values (a ~1e-7 relative change each)."""
    data = np.load(path)
    offset = path.stat().st_size - data.nbytes  # the .npy header
    raw = bytearray(path.read_bytes())
    pos = np.random.default_rng(seed).choice(data.size, size=min(n, data.size), replace=False)
    for p in pos:  # little-endian float32: byte 0 holds the lowest mantissa bits
        raw[offset + 4 * int(p)] ^= 0x01
    path.write_bytes(bytes(raw))
    changed = np.load(path)
    assert np.count_nonzero(changed != data) == len(pos)
    assert np.max(np.abs(changed - data) / np.abs(data)) < 1e-6  # invisible to any value check


def test_commit_records_independently_recomputable_checksums(tmp_path):
    import xxhash

    _, root = _complete(tmp_path)
    meta = json.loads((root / "chunks" / "0000004" / "meta.json").read_text())
    for e in LAYERS:
        f = _layer_path(root, 4, e["name"])
        rec = meta["files"][f.name]
        assert rec == {"bytes": f.stat().st_size, "xxh3_64": xxhash.xxh3_64_hexdigest(f.read_bytes())}
    body = {k: v for k, v in meta.items() if k != "checksum"}
    assert meta["checksum"]["xxh3_64"] == xxhash.xxh3_64_hexdigest(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    assert verify_store(root).ok


def test_flipped_low_mantissa_bits_are_named_not_read(tmp_path):
    _, root = _complete(tmp_path)
    bad = _layer_path(root, 2)
    _flip_low_mantissa_bits(bad)
    st = open_store(root)
    with pytest.raises(StoreIntegrityError, match="content changed since commit") as err:
        st.read("enc.0.norm1")
    assert str(bad) in str(err.value) and "jaxprobe store verify" in str(err.value)
    st.read("dec.1.norm1")  # the other layer's files are intact and readable
    check = verify_store(root)
    assert not check.ok and list(check.problems) == [2] and check.problems[2][0][0] == str(bad)


def test_truncated_chunk_names_the_file(tmp_path):
    _, root = _complete(tmp_path)
    bad = _layer_path(root, 5, "dec.1.norm1")
    size = bad.stat().st_size
    os.truncate(bad, size - 17)
    with pytest.raises(StoreIntegrityError) as err:
        open_store(root).read("dec.1.norm1")
    msg = str(err.value)
    assert str(bad) in msg and f"{size - 17} bytes; {size} were committed" in msg and "mmap length" not in msg
    assert verify_store(root, hash=False).problems.keys() == {5}  # sizes alone catch it


def test_missing_or_edited_meta_json_is_named(tmp_path):
    _, root = _complete(tmp_path)
    (root / "chunks" / "0000003" / "meta.json").unlink()
    meta_path = root / "chunks" / "0000006" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["info"][0]["pos"] = 999  # an edit that keeps the JSON valid
    meta_path.write_text(json.dumps(meta))
    st = open_store(root)
    assert 3 in st.done_chunks()  # a folder without meta.json is a damaged commit, not a missing chunk
    with pytest.raises(StoreIntegrityError, match=r"0000003/meta.json: missing"):
        st.read("enc.0.norm1")
    with pytest.raises(StoreIntegrityError, match=r"0000006/meta.json: its content does not match"):
        st.info([30])
    check = verify_store(root)
    assert sorted(check.problems) == [3, 6]


def test_missing_layer_file_and_missing_chunks(tmp_path):
    items = _items()
    w = _writer(tmp_path / "s", items)
    _fill(w, items, chunks=[0, 1, 2])
    _layer_path(tmp_path / "s", 1).unlink()
    check = verify_store(tmp_path / "s")
    assert check.missing == list(range(3, 9)) and check.problems[1] == [(str(_layer_path(tmp_path / "s", 1)), "missing")]


def test_content_key_follows_content_not_writer(tmp_path):
    items = _items()
    a, b = _writer(tmp_path / "a", items), _writer(tmp_path / "b", items)
    _fill(a, items)
    _fill(b, items)
    assert open_store(tmp_path / "a").content_key() == open_store(tmp_path / "b").content_key()
    sub = items[10:15]
    changed = _arrays(sub)
    changed["enc.0.norm1"][0, 0, 0] += 1e-3
    b.discard_chunk(2)
    assert b.write_chunk(2, changed, [{"snr_achieved": it.condition["snr"], "pos": p} for p, it in zip(range(10, 15), sub)])
    assert open_store(tmp_path / "a").content_key() != open_store(tmp_path / "b").content_key()
    assert verify_store(tmp_path / "b").ok


def _downgrade_to_version_1(root):
    """What a store written before checksums looks like."""
    m = json.loads((root / "manifest.json").read_text())
    m["version"] = 1
    (root / "manifest.json").write_text(json.dumps(m))
    for meta_path in (root / "chunks").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k not in ("files", "checksum")}))


def test_legacy_store_is_refused_with_the_upgrade_then_rehashed(tmp_path):
    _, root = _complete(tmp_path)
    want = open_store(root).read("enc.0.norm1")
    _downgrade_to_version_1(root)
    with pytest.raises(LegacyStoreError, match=r"jaxprobe store verify --rehash"):
        open_store(root)
    check = verify_store(root)
    assert check.legacy and not check.ok and not check.problems
    done = rehash_store(root, durable=False)
    assert done.checked == 9 and not done.problems
    assert verify_store(root).ok
    np.testing.assert_array_equal(open_store(root).read("enc.0.norm1"), want)
    with pytest.raises(ValueError, match="already records checksums"):
        rehash_store(root)


def test_store_verify_cli(tmp_path, capsys):
    from jaxprobe.cli import main

    _, root = _complete(tmp_path)
    assert main(["store", "verify", str(root)]) == 0
    assert "intact and complete" in capsys.readouterr().out
    bad = _layer_path(root, 7)
    _flip_low_mantissa_bits(bad, n=3)
    (root / "chunks" / "0000001" / "meta.json").unlink()
    assert main(["store", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: content changed since commit" in out and "0000001/meta.json: missing" in out
    assert "2 problem(s) in 2 chunk(s)" in out and "re-run the `jaxprobe dump`" in out
    _downgrade_to_version_1(tmp_path / "s")
    assert main(["store", "verify", str(root)]) == 1
    assert "--rehash" in capsys.readouterr().out
    assert main(["store", "verify", "--rehash", str(root)]) == 1  # chunk 1 still has no meta.json
    out = capsys.readouterr().out
    assert "now version 2" in out and "0000001/meta.json: missing" in out
    assert main(["store", "verify", str(tmp_path / "nothing")]) == 2  # not a store: a usage error
    assert main(["store", "verify", "--rehash", str(root)]) == 2  # never re-bless a checksummed store
    assert "already records checksums" in capsys.readouterr().err
