"""The embedded corpus: a tiny build into tmp_path, manifest and checksums, repair of
missing/corrupt files, clear errors for missing Debian packages, the noise tables."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from torch_bridge.corpus import (
    NOISE_TYPES,
    Corpus,
    CorpusError,
    CorpusSpec,
    MissingDependencyError,
    build_corpus,
    load_corpus,
)
from torch_bridge.corpus import noises as nz
from torch_bridge.corpus import speech as sp
from torch_bridge.mixing import mix_at_snr, snr_sweep

SR = 16000
MINI = CorpusSpec("mini", ("flite_awb", "flite_slt"), 3, 2, (), 0, (1.0, 6.0), ("white", "hum"), 5.0, (), 0)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("cache")
    report = build_corpus(base, size="tiny", workers=2)
    return base, report


# ---------------------------------------------------------------------------- the tiny build

@pytest.mark.slow
def test_tiny_build_manifest_and_checksums(tiny):
    base, report = tiny
    root = base / "tiny"
    assert report.root == root and report.built == len(report.manifest["items"]) and report.kept == 0
    manifest = json.loads((root / "manifest.json").read_text())
    kinds = {}
    for it in manifest["items"]:
        kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
        path = root / it["path"]
        assert sha256(path) == it["sha256"] and path.stat().st_size == it["bytes"]
        info = sf.info(str(path))
        assert info.samplerate == SR and info.channels == 1 and info.frames == it["num_samples"]
        assert abs(it["duration"] - info.frames / SR) < 1e-3
        assert it["licence"] and it["attribution"]
    # 2 train voices x 4 sentences + 1 test voice x 2 test sentences; 2 prompts x en, fr; 7 noises
    assert kinds == {"speech": 10, "real_speech": 4, "noise": 7}
    assert not list(root.rglob(".*.tmp-*"))
    assert manifest["debian_packages"]["flite"]
    assert {s for s, v in manifest["speakers"].items() if v["role"] == "heldout"} == {"allison", "june"}


@pytest.mark.slow
def test_tiny_corpus_loads_with_splits_and_attribution(tiny):
    base, _ = tiny
    c = load_corpus(base, size="tiny", build=False)
    assert isinstance(c, Corpus)
    for r in c.utterances + c.real_speech + list(c.noises.values()):
        assert r.waveform.dtype == np.float32 and r.sample_rate == SR and np.any(r.waveform)
    test, train = c.split("test"), c.split("train")
    assert {u.speaker for u in test} == {"flite_slt"} and "flite_slt" not in {u.speaker for u in train}
    assert not {u.transcript for u in test} & {u.transcript for u in train}
    assert all(u.transcript for u in c.utterances + c.real_speech)
    assert {r.speaker for r in c.real_speech} == {"allison", "june"}
    assert all(r.meta["licence"].startswith("CC-BY") for r in c.real_speech)
    street = c.noises["transport"]
    assert street.meta["category"] == "transport" and not street.meta["synthetic"]
    assert all("opensfx.cat:" in comp["member"] for comp in street.meta["components"])
    assert abs(c.noises["white"].duration - 12.0) < 1e-6
    assert c.noise("hum") is c.noises["hum"]
    with pytest.raises(KeyError, match="Unknown noise type 'rain'.*'babble'"):
        c.noise("rain")


@pytest.mark.slow
def test_corpus_feeds_the_mixer(tiny):
    base, _ = tiny
    c = load_corpus(base, size="tiny", build=False)
    sweep = snr_sweep(c.split("train")[:2], c.noises, [-5, 5], seed=0, noise_types=["babble", "water"],
                      duration=None)
    assert len(sweep) == 8
    for m in sweep:  # flite output has exact digital zeros: loudness is still finite
        assert abs(m.info["snr_achieved_db"] - m.info["snr_target_db"]) < 0.01
        assert abs(m.info["lufs_after"] + 23.0) < 0.1
    real = c.real_speech[0]
    m = mix_at_snr(real, c.noises["pink"], 0, seed=1, power="active")
    assert abs(m.info["snr_achieved_db"]) < 0.01


@pytest.mark.slow
def test_rebuild_only_missing_or_corrupt(tiny, tmp_path):
    base, report = tiny
    root = base / "tiny"
    again = build_corpus(base, size="tiny")
    assert again.built == 0 and again.kept == len(report.manifest["items"])
    speech_item = next(it for it in report.manifest["items"] if it["kind"] == "speech")
    noise_item = next(it for it in report.manifest["items"] if it["id"] == "babble")
    (root / speech_item["path"]).write_bytes(b"corrupt")
    (root / noise_item["path"]).unlink()
    with pytest.raises(CorpusError, match="jaxprobe corpus build --size tiny"):
        load_corpus(base, size="tiny", build=False)
    fixed = build_corpus(base, size="tiny")
    assert fixed.built == 2
    # deterministic: the regenerated files are byte-identical to the first build's
    assert sha256(root / speech_item["path"]) == speech_item["sha256"]
    assert sha256(root / noise_item["path"]) == noise_item["sha256"]
    load_corpus(base, size="tiny", build=False)


# ---------------------------------------------------------------------------- mini builds

def test_mini_build_and_manifest_loss(tmp_path):
    rep = build_corpus(tmp_path, size=MINI)
    assert rep.built == 3 + 2 + 2  # awb reads sentences 0-2, slt the test sentences 0 and 2, 2 noises
    (tmp_path / "mini" / "manifest.json").write_text("{not json")
    with pytest.raises(CorpusError, match="missing or corrupt"):
        load_corpus(tmp_path, size=MINI, build=False)
    c = load_corpus(tmp_path, size=MINI)
    assert len(c.utterances) == 5 and set(c.noises) == {"white", "hum"}


def test_failed_build_writes_nothing_half_way(tmp_path, monkeypatch):
    real = sp.synthesize

    def flaky(voice, text):
        if voice.id == "flite_slt":
            raise RuntimeError("synthesis failed on purpose")
        return real(voice, text)

    monkeypatch.setattr(sp, "synthesize", flaky)
    with pytest.raises(RuntimeError, match="on purpose"):
        build_corpus(tmp_path, size=MINI, workers=1)
    root = tmp_path / "mini"
    assert not (root / "manifest.json").exists()
    assert not list(root.rglob(".*.tmp-*"))
    for f in root.rglob("*.flac"):  # whatever was written is complete
        assert sf.info(str(f)).frames > 0


def test_missing_debian_packages_are_named(tmp_path, monkeypatch):
    spec = dataclasses.replace(MINI, voices=(), noise_types=("transport",))
    monkeypatch.setattr(nz, "OPENSFX_CAT", tmp_path / "absent" / "opensfx.cat")
    with pytest.raises(MissingDependencyError, match="'openttd-opensfx'.*apt-get install openttd-opensfx"):
        build_corpus(tmp_path, size=spec)
    spec = dataclasses.replace(MINI, voices=(), noise_types=(), real_languages=("it",), real_per_language=1)
    monkeypatch.setattr(sp, "ASTERISK_SOUNDS", tmp_path / "absent")
    with pytest.raises(MissingDependencyError, match="'asterisk-core-sounds-it-g722'"):
        build_corpus(tmp_path, size=spec)
    monkeypatch.setattr(sp.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependencyError, match="'flite'"):
        build_corpus(tmp_path, size=MINI)
    with pytest.raises(ValueError, match="'size' parameter of build_corpus"):
        build_corpus(tmp_path, size="huge")


# ---------------------------------------------------------------------------- noise tables

def test_at_least_ten_noise_types_in_demand_like_categories():
    assert len(NOISE_TYPES) >= 10
    cats = {t.category for t in NOISE_TYPES.values()}
    assert {"street/traffic", "transport", "crowd/babble", "nature", "machinery"} <= cats
    assert sum(not t.synthetic for t in NOISE_TYPES.values()) >= 8


def test_every_source_clip_is_reviewed_and_every_used_clip_exists():
    ufo = nz.ufoai_clips()
    sfx = [t for t, _ in nz.opensfx_clips()]
    assert len(ufo) > 50 and len(sfx) > 70
    unreviewed = [("ufoai", n) for n in ufo if not nz.is_reviewed("ufoai", n)]
    unreviewed += [("opensfx", n) for n in sfx if not nz.is_reviewed("opensfx", n)]
    assert unreviewed == []
    for t in nz.REAL_TYPES:
        for source, name in t.clips:
            assert name in (ufo if source == "ufoai" else sfx), (t.name, name)
            assert (source, name) not in nz.EXCLUDED


def test_ufoai_licences_come_from_debian_copyright():
    lic = nz.ufoai_licences()
    assert lic["minepump03"][0] == "CC-BY-3.0"
    assert lic["arcticwind"][0] and lic["tv_newswav"][0]


def _slope_db_per_decade(x):
    from scipy.signal import welch

    f, p = welch(x, fs=SR, nperseg=4096)
    band = (f > 100) & (f < 4000)
    return np.polyfit(np.log10(f[band]), 10 * np.log10(p[band]), 1)[0]


def test_synthetic_noise_spectra_and_determinism():
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    white = nz.synthetic_noise("white", 8.0, rng=rng())
    assert abs(_slope_db_per_decade(white)) < 1.0
    assert abs(_slope_db_per_decade(nz.synthetic_noise("pink", 8.0, rng=rng())) + 10) < 1.5
    assert abs(_slope_db_per_decade(nz.synthetic_noise("brown", 8.0, rng=rng())) + 20) < 1.5
    hum = nz.synthetic_noise("hum", 4.0, rng=rng())
    spec = np.abs(np.fft.rfft(hum))
    freqs = np.fft.rfftfreq(len(hum), 1 / SR)
    top = sorted(freqs[np.argsort(spec)[-5:]])
    assert all(abs(f / 50 - round(f / 50)) < 0.01 for f in top) and 50 in np.round(top)
    np.testing.assert_array_equal(nz.synthetic_noise("pink", 2.0, rng=rng()),
                                  nz.synthetic_noise("pink", 2.0, rng=rng()))
    with pytest.raises(ValueError, match="babble_talkers"):
        nz.synthetic_noise("babble", 2.0, rng=rng())
    with pytest.raises(KeyError, match="Unknown noise type 'rain'"):
        nz.synthetic_noise("rain", 2.0, rng=rng(), babble_talkers=[[white]])


def test_concatenate_visits_every_clip_with_crossfades():
    clips = [np.full(SR * 20, 1.0), np.full(SR // 2, 2.0), np.full(SR, 3.0)]
    out = nz.concatenate(clips, 12 * SR)
    assert out.shape == (12 * SR,)
    levels = set(np.round(out[::400], 6))
    assert {1.0, 2.0, 3.0} <= levels  # the long clip does not crowd out the others


def test_g722_prompt_decodes_to_speech():
    name, text, path = sp.asterisk_prompts("en")[0]
    x = sp.decode_g722(path)
    assert abs(len(x) / SR - path.stat().st_size / 8000) < 0.01
    assert 0.01 < np.sqrt(np.mean(x ** 2)) < 0.5 and text


def test_cli_command_imports_no_torch_and_verifies(tmp_path, tiny):
    code = ("import argparse, sys, jaxprobe.cli as c, jaxprobe._cmd_corpus as m; "
            "m.add_arguments(argparse.ArgumentParser()); "
            "print(c._COMMANDS['corpus'][0], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["jaxprobe._cmd_corpus", "False"]
    import argparse

    from jaxprobe import _cmd_corpus

    parser = argparse.ArgumentParser()
    _cmd_corpus.add_arguments(parser)
    assert _cmd_corpus.main(parser.parse_args(["verify", "--size", "tiny", "--cache-dir", str(tmp_path)])) == 1
    base, _ = tiny
    assert _cmd_corpus.main(parser.parse_args(["verify", "--size", "tiny", "--cache-dir", str(base)])) == 0
    assert _cmd_corpus.main(parser.parse_args(["build", "--size", "tiny", "--cache-dir", str(base)])) == 0


def test_drop_gaps_shortens_only_long_silences():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(SR), np.zeros(SR), rng.standard_normal(SR),
                        np.zeros(SR // 20), rng.standard_normal(SR)])
    y = nz.drop_gaps(x)
    assert len(y) == 3 * SR + SR // 10 + SR // 20  # the 1 s gap keeps 0.1 s, the 50 ms one stays
    f = y[: len(y) // 160 * 160].reshape(-1, 160)
    runs, run = [], 0
    for quiet in np.sqrt((f ** 2).mean(1)) < 1e-3:
        run = run + 1 if quiet else 0
        runs.append(run)
    assert max(runs) <= 10


# ---------------------------------------------------------------------------- records read on first use

def test_records_are_read_on_first_use_as_an_eager_read_gives(tmp_path):
    import concurrent.futures
    import pickle

    build_corpus(tmp_path, size=MINI)
    c = load_corpus(tmp_path, size=MINI, build=False)
    recs = c.utterances + list(c.noises.values())
    assert not any(r.loaded for r in recs)  # loading decoded nothing
    for r in recs:  # lengths and durations from the manifest, still without reading
        info = sf.info(r.path)
        assert r.num_samples == info.frames and r.duration == info.frames / SR and not r.loaded
    first = c.utterances[0]
    assert "loaded=False" in repr(first)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # threads share one read
        got = list(pool.map(lambda _: first.waveform, range(8)))
    assert all(g is got[0] for g in got) and first.loaded
    for r in recs:
        eager, rate = sf.read(r.path, dtype="float32")
        assert r.waveform.dtype == np.float32 and rate == r.sample_rate
        np.testing.assert_array_equal(r.waveform, eager)
        assert r.duration == eager.shape[0] / SR
    again = pickle.loads(pickle.dumps(load_corpus(tmp_path, size=MINI, build=False).noises["hum"]))
    assert not again.loaded and np.array_equal(again.waveform, c.noises["hum"].waveform)
    renamed = dataclasses.replace(c.noises["white"], id="w2")
    assert renamed.id == "w2" and np.array_equal(renamed.waveform, c.noises["white"].waveform)


def test_a_file_gone_or_changed_after_loading_is_named_at_first_use(tmp_path):
    build_corpus(tmp_path, size=MINI)
    c = load_corpus(tmp_path, size=MINI, build=False)
    gone, changed, ok = c.utterances[0], c.utterances[1], c.noises["hum"]
    import pathlib

    pathlib.Path(gone.path).unlink()
    with pytest.raises(CorpusError, match=f"{gone.path}.*{gone.id}.*cannot be read.*--size mini"):
        gone.waveform
    pathlib.Path(changed.path).write_bytes(b"not flac at all")
    with pytest.raises(CorpusError, match=f"{changed.path}.*changed since the corpus was loaded"):
        changed.waveform
    assert np.any(ok.waveform)
    # without checksums the bytes are still decoded, and a broken file is named too
    unchecked = load_corpus(tmp_path, size=MINI, build=False, verify_checksums=False).utterances[1]
    with pytest.raises(CorpusError, match=f"{changed.path}.*cannot be decoded"):
        unchecked.waveform
