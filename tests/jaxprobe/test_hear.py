"""`jaxprobe hear` end to end on a small configuration, its config and its item audio.

The end-to-end run trains four tiny recognisers for a few steps (their CER is meaningless; the
demo's figures are in the README), probes and listens, and checks the outputs' contract: the
records results.json must hold, finite numbers in their ranges, the report files, the wavs, and
that a re-run reuses every stage.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from jaxprobe.errors import ConfigError
from jaxprobe.studies.hear.config import load_hear_config

TINY = {
    "name": "hear-test",
    "data": {"corpus_size": "small", "window_seconds": 1.5, "probe_train_utterances": 30,
             "probe_valid_utterances": 4, "eval_per_speaker": 3, "asr_held_out": 4, "human_per_speaker": 2},
    "conditions": {"snrs": [10.0, 0.0], "noises": ["babble", "pink"]},
    "asr": {"hidden": 16, "channels": [4, 4, 4, 4], "batch_size": 4, "max_steps": 4, "workers": 1},
    "speaker": {"steps": 8, "batch_size": 8},
    "probe": {"steps": 20, "eval_every": 10, "batch_blocks": 16},
    "listen": {"griffin_lim_iters": 4, "n_boot": 50, "wav_examples": 1, "workers": 2},  # PESQ's pool path
    "report": {"formats": ["png"]},
}


# ----------------------------------------------------------------------------- config
def test_shipped_configs_load():
    demo, paper = load_hear_config("demo"), load_hear_config("paper")
    assert demo["data"]["source"] == "embedded" and paper["data"]["source"] == "librispeech"
    assert demo["conditions"]["snrs"] == [20.0, 10.0, 0.0] == paper["conditions"]["snrs"]
    assert paper["asr"]["channels"] == [64, 64, 128, 128] and paper["asr"]["hidden"] == 320


@pytest.mark.parametrize("over, match", [
    ({"probe": {"stepz": 3}}, r"Unknown configuration key 'probe.stepz'"),
    ({"probe": {"target": "noisy"}}, r"'probe.target' must be one of \['input', 'clean'\]"),
    ({"asr": {"models": ["vgg_lstm", "gru"]}}, r"'asr.models' must be a non-empty list"),
    ({"asr": {"steps_per_model": {"lstm": 0}}}, r"'asr.steps_per_model.lstm' must be an int >= 1"),
    ({"data": {"eval_per_speaker": 1}}, r"'data.eval_per_speaker' must be an int >= 2"),
    ({"data": {"source": "librispeech"}}, r"'data.librispeech_train' must name a folder"),
    ({"probe": {"snr_range": [10.0, 0.0]}}, r"'probe.snr_range' must be \[low, high\]"),
    ({"conditions": {"snrs": [10.0, 10.0]}}, r"'conditions.snrs' must be a list of distinct SNRs"),
    ({"compute": {"devices": "two"}}, r"'compute.devices' must be 'all' or a device count"),
    ({"data": {"human_per_speaker": 1}}, r"'data.human_per_speaker' must be 0 \(no human speakers\) or an int >= 2"),
    ({"data": {"human_per_speaker": -1}}, r"'data.human_per_speaker' must be an int >= 0"),
    ({"listen": {"workers": -1}}, r"'listen.workers' must be an int >= 0"),
])
def test_config_errors_name_the_key(over, match):
    with pytest.raises(ConfigError, match=match):
        load_hear_config(over)


def test_missing_config_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="not found"):
        load_hear_config("no-such-config")


# ----------------------------------------------------------------------------- items
def test_item_audio_is_deterministic_and_at_the_snr():
    from torch_bridge.dump import Item
    from torch_bridge.hear import item_audio, window
    from torch_bridge.mixing import measure_snr

    rng = np.random.default_rng(0)

    class Rec:
        id = "u1"
        waveform = (0.1 * rng.standard_normal(40000)).astype(np.float32)

    noise = rng.standard_normal(16000).astype(np.float32)
    it = Item({"condition": "10", "noise": "n", "snr": 10.0}, "u1")
    a = item_audio(it, {"u1": Rec}, {"n": noise}, 32000, 0)
    b = item_audio(it, {"u1": Rec}, {"n": noise}, 32000, 0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], window(Rec.waveform, 32000))
    full = a[0] - a[1]  # the noise inside the window; SNR is the utterance's, so check on the window
    assert abs(measure_snr(a[1], full) - 10.0) < 0.5
    clean = item_audio(Item({"condition": "clean"}, "u1"), {"u1": Rec}, {"n": noise}, 32000, 0)
    np.testing.assert_array_equal(clean[0], clean[1])
    short = window(np.ones(10, np.float32), 16)
    assert short.shape == (16,) and short.sum() == 10 and short[0] == 0


def test_human_listening_speakers_are_the_held_out_prompts_and_retrain_nothing(tmp_path):
    from jaxprobe.studies.hear import plan_jobs
    from torch_bridge.hear import load_hear_data

    cfg = load_hear_config(TINY)
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    human_ids = {r.id for r in data.human}
    assert data.listen_human and {r.id for r in data.listen_human} <= human_ids
    assert not {r.id for r in data.listen_human} & {r.id for r in data.listen + data.train + data.probe_train}
    per = {}
    for r in data.listen_human:
        per.setdefault(str(r.speaker), []).append(r.id)
    assert len(per) == 4 and all(len(v) == 2 for v in per.values())  # human_per_speaker of each human speaker
    assert not set(per) & {str(r.speaker) for r in data.listen}
    none = load_hear_config({**TINY, "data": {**TINY["data"], "human_per_speaker": 0}})
    assert load_hear_data(none["data"], none["conditions"]["noises"]).listen_human == []
    # the human part only adds a store: the recognisers' and the speaker model's keys do not depend on it
    assert [j["key"] for j in plan_jobs(cfg, tmp_path)] == [j["key"] for j in plan_jobs(none, tmp_path)]


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def hear_run(tmp_path_factory):
    from jaxprobe.studies.hear import run

    out = tmp_path_factory.mktemp("hear")
    t0 = time.perf_counter()
    paths = run(TINY, out)
    first = time.perf_counter() - t0
    return out, paths, first


def test_results_contract(hear_run):
    out, paths, _ = hear_run
    res = json.loads((out / "results.json").read_text())
    assert {(r["model"], r["regime"]) for r in res["asr"]} == {(m, g) for m in ("vgg_lstm", "lstm")
                                                                for g in ("baseline", "robust")}
    for r in res["asr"]:
        assert 0 <= r["cer"] <= 1.5 and 0 <= r["wer"] <= 1.5
        assert set(r["listen"]) == {"clean", "10", "0"}
    n_layers = {"vgg_lstm": 8, "lstm": 5}
    assert [e["label"] for e in res["layers"]["vgg_lstm"]] == ["cnn1", "cnn2", "cnn4"] + [f"blstm{k}" for k in range(1, 6)]
    assert [e["r"] for e in res["layers"]["lstm"]] == [1, 1, 2, 4, 8]
    assert len(res["probe"]) == sum(2 * n * 3 for n in n_layers.values())
    for r in res["probe"]:
        assert {"model", "regime", "layer", "condition", "l1", "stoi", "eer"} <= set(r)
        assert 0 <= r["eer"] <= 100 and -1 <= r["stoi"] <= 1 and r["l1"] > 0
        assert r["stoi_low"] <= r["stoi"] <= r["stoi_high"] and r["l1_low"] <= r["l1"] <= r["l1_high"]
        assert r["n_items"] == 9
    # EER intervals from resampling utterances (None only where too few resamples keep both trial classes)
    with_ci = [r for r in res["probe"] + res["reference"] if r["eer_low"] is not None]
    assert len(with_ci) >= len(res["probe"]) // 2
    for r in with_ci:
        assert 0 <= r["eer_low"] <= r["eer"] <= r["eer_high"] <= 100
    # the pretrained judge and the x-vector as a second judge, both on human speech
    j, x = res["speaker"]["judge"], res["speaker"]["xvector"]
    assert "Resemblyzer" in j["name"] and j["licence"] == "Apache-2.0" and "VoxCeleb" in j["training_data"]
    assert len(j["human_speakers"]) == 4 and j["n_human_utterances"] >= 8
    for judge in (j, x):
        assert 0 <= judge["eer_human"] <= 1 and 0 <= judge["eer_synthetic"] <= 1
    assert j["eer_human_low"] <= j["eer_human"] <= j["eer_human_high"]
    for r in res["probe"]:
        assert 0 <= r["eer_xvector"] <= 100
    # wide-band PESQ next to STOI: excluded items counted, never silently a number
    for r in res["probe"] + res["reference"]:
        assert 0 <= r["pesq_excluded"] <= r["n_items"]
        if r["pesq"] is not None:
            assert 1.0 <= r["pesq_low"] - 1e-6 <= r["pesq"] <= r["pesq_high"] + 1e-6 <= 4.65  # float32 means
    assert sum(r["pesq"] is not None for r in res["probe"]) >= len(res["probe"]) // 2
    # minDCF at P_target 0.01 and 0.001 next to the EER, intervals from the same resamples (present together)
    for r in res["probe"] + res["reference"]:
        for p in ("0.01", "0.001"):
            d, lo, hi = r[f"min_dcf_{p}"], r[f"min_dcf_{p}_low"], r[f"min_dcf_{p}_high"]
            assert 0 <= d <= 1 + 1e-6 and (lo is None) == (hi is None) == (r["eer_low"] is None)
            assert lo is None or 0 <= lo <= hi <= 1 + 1e-6
    # paired robust - baseline STOI and EER contrasts: every (model, layer, condition), intervals around estimates
    for stat, field in (("stoi_robust_minus_baseline", "stoi"), ("eer_robust_minus_baseline", "eer"),
                        ("pesq_robust_minus_baseline", "pesq")):
        cons = [c for c in res["contrasts"] if c["statistic"] == stat]
        assert len(cons) == sum(n * 3 for n in n_layers.values())
        for c in cons:
            assert c["n_items"] == 9 and (c["low"] is None or c["low"] <= c["high"])
            per = {r["regime"]: r[field] for r in res["probe"]
                   if (r["model"], r["layer"], r["condition"]) == (c["model"], c["layer"], c["condition"])}
            if field == "pesq":  # paired over the items PESQ scored for both: equal to the means' difference then
                if c["estimate"] is not None and c["n_excluded"] == 0:
                    assert math.isclose(c["estimate"], per["robust"] - per["baseline"], abs_tol=1e-4)
                continue
            assert math.isclose(c["estimate"], per["robust"] - per["baseline"], abs_tol=1e-4)  # same items, paired
    assert all(c["low"] <= c["estimate"] <= c["high"] for c in res["contrasts"] if c["statistic"].startswith("stoi"))
    # references: the unprocessed clean input scores STOI 1 against itself
    ref = [r for r in res["reference"] if r["layer"] == "audio" and r["condition"] == "clean"]
    assert ref and all(math.isclose(r["stoi"], 1.0, abs_tol=1e-4) for r in ref)
    assert all(r["pesq_excluded"] > 0 or abs(r["pesq"] - 4.644) < 0.01 for r in ref)  # and PESQ the scale's top
    for name in ("md", "html", "probe_csv", "asr_csv", "table2_csv", "contrasts_csv"):
        assert (out / paths[name].split(str(out))[-1].lstrip("/")).exists()
    html = (out / "report.html").read_text()
    assert "Table 2" in html and "data:image/png;base64," in html and "Findings" in html
    assert "minDCF of the reconstructions, P_target 0.001" in html and "Second judge: x-vector" in html
    assert "judge EER, held-out human speech" in html
    for stem in ("fig2_eer_per_layer", "fig3_mel_per_layer", "fig4_stoi_per_layer", "fig4b_pesq_per_layer"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 10_000
    wavs = sorted((out / "wavs").rglob("*.wav"))
    # one example utterance (also the listening test's first) + the listening test's other three (two speakers x
    # two utterances) x 4 recognisers x 3 conditions x (layers + 2 references)
    assert len(wavs) == sum(4 * 2 * 3 * (n + 2) for n in n_layers.values())
    page = (out / "listening_test.html").read_text()
    assert page.count("data:audio/wav;base64,") == sum(4 * 2 * (n + 2) for n in n_layers.values())  # clean only
    assert (out / "listening_test_answers_example.csv").is_file()


def test_human_speakers_reported_apart(hear_run):
    """The held-out human speakers: their own records (same fields as the synthetic voices'), paired
    contrasts, note, tables, figures and wavs; their clean unprocessed windows scored as an
    independent computation from the corpus scores them (the judge's minDCF against the float64
    threshold sweep in tests/reference, and its EER)."""
    from jaxprobe.stats import eer
    from tests.reference.dcf_ref import min_dcf as ref_min_dcf
    from torch_bridge.hear import judge_embeddings, load_hear_data, window
    from torch_bridge.models.speaker import cosine_scores, verification_trials

    out, paths, _ = hear_run
    res = json.loads((out / "results.json").read_text())
    n_layers = {"vgg_lstm": 8, "lstm": 5}
    assert {r["speakers"] for r in res["probe"] + res["reference"]} == {"synthetic"}
    hp, hr = res["probe_human"], res["reference_human"]
    assert {r["speakers"] for r in hp + hr} == {"human"}
    assert len(hp) == len(res["probe"]) == sum(2 * n * 3 for n in n_layers.values())
    assert len(hr) == len(res["reference"])
    assert res["data"]["n_listen_human"] == 8 and len(res["data"]["listen_human_speakers"]) == 4
    assert set(res["data"]["listen_human_speakers"]) == set(res["speaker"]["judge"]["human_speakers"])
    ref_keys = {r["layer"]: set(r) for r in res["reference"]}  # 'audio' has no L1, 'mel' has
    assert all(set(r) == set(res["probe"][0]) for r in hp) and all(set(r) == ref_keys[r["layer"]] for r in hr)
    for r in hp + hr:
        assert r["n_items"] == 8
        assert 0 <= r["eer"] <= 100 and 0 <= r["eer_xvector"] <= 100 and -1 <= r["stoi"] <= 1
        for p in ("0.01", "0.001"):
            assert 0 <= r[f"min_dcf_{p}"] <= 1 + 1e-6 and f"min_dcf_{p}_low" in r and f"min_dcf_{p}_high" in r
        assert 0 <= r["pesq_excluded"] <= r["n_items"] and "pesq_low" in r and "pesq_high" in r
    # the human rows differ from the synthetic ones (other utterances), so they are not a copy
    assert [r["stoi"] for r in hp] != [r["stoi"] for r in res["probe"]]
    cons = res["contrasts_human"]
    assert len(cons) == 3 * sum(n * 3 for n in n_layers.values())
    for c in cons:
        if c["statistic"] == "stoi_robust_minus_baseline":
            per = {r["regime"]: r["stoi"] for r in hp if (r["model"], r["layer"], r["condition"]) ==
                   (c["model"], c["layer"], c["condition"])}
            assert math.isclose(c["estimate"], per["robust"] - per["baseline"], abs_tol=1e-4)
    assert "synthetic" in res["human_note"] and "trained on synthetic" in res["human_note"]
    # the unprocessed clean human windows, scored here from the corpus
    cfg = load_hear_config(TINY)
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    recs = sorted(data.listen_human, key=lambda r: r.id)
    n = int(round(cfg["data"]["window_seconds"] * 16000))
    emb = judge_embeddings([window(r.waveform, n) for r in recs])
    pairs, labels = verification_trials([str(r.speaker) for r in recs])
    scores = cosine_scores(emb, pairs)
    clean = [r for r in hr if r["layer"] == "audio" and r["condition"] == "clean"]
    assert len(clean) == 4 and all(math.isclose(r["stoi"], 1.0, abs_tol=1e-4) for r in clean)
    for r in clean:
        assert math.isclose(r["min_dcf_0.01"], ref_min_dcf(scores, labels, 0.01), abs_tol=1e-5)
        assert math.isclose(r["eer"], 100 * float(eer(scores, labels)), abs_tol=1e-3)
    html = (out / "report.html").read_text()
    assert "Human speakers of the listening set (reported apart)" in html and "Table 2 (human speakers)" in html
    assert "trained on synthetic English voices only" in html
    assert html.index("Human speakers of the listening set") > html.index("Table 2 —")
    for stem in ("fig2h_eer_per_layer_human", "fig4h_stoi_per_layer_human"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 10_000
    for name in ("probe_human.csv", "table2_human.csv", "contrasts_human.csv"):
        assert (out / name).stat().st_size > 100
    # one human example utterance per recogniser, condition and layer (+ the two references)
    assert len(sorted((out / "wavs-human").rglob("*.wav"))) == sum(2 * 3 * (n + 2) for n in n_layers.values())


def test_rerun_reuses_every_stage(hear_run):
    from jaxprobe.studies.hear import run

    out, _, first = hear_run
    before = json.loads((out / "results.json").read_text())
    t0 = time.perf_counter()
    run(TINY, out)
    again = time.perf_counter() - t0
    after = json.loads((out / "results.json").read_text())
    assert after["probe"] == before["probe"] and after["asr"] == before["asr"]
    assert after["probe_human"] == before["probe_human"]
    assert again < first


def test_listening_equals_the_one_process_path(hear_run, tmp_path):
    """The run listened with PESQ in worker processes and the reference rows measured once for all
    recognisers (``listen``'s ``pool`` and ``measured``); the one-process path, every layer in
    turn and nothing shared, gives the same records and per-item STOI, PESQ and embeddings exactly
    (one recogniser's human part, the smallest, its two reference rows and first layer: the same
    code path as every other; its references came from the run's ``measured``, so this also
    checks that sharing them across recognisers changed no number)."""
    from jaxprobe.studies.hear import INPUT, listen, plan_jobs, train_layer_probes
    from jaxprobe.studies.hear.probes import probe_layers
    from torch_bridge.hear import load_hear_data, run_jobs

    out, _, _ = hear_run
    cfg = load_hear_config(TINY)
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    done = run_jobs(plan_jobs(cfg, out), workers=1)  # cached: returns the finished jobs' results
    rec = next(r for r in done[1:] if (r["model"], r["regime"]) == ("lstm", "robust"))  # the refs came from the cache
    probes, _ = train_layer_probes(rec, cfg, data, out)  # resumes the finished checkpoint
    first = [e for e in rec["layers"] if e["name"] == INPUT] + probe_layers(rec["layers"])[:1]
    (tmp_path / "listen").mkdir()
    got = listen({**rec, "layers": first}, probes, cfg, data, done[0]["path"], tmp_path, part="human", pool=None,
                 measured=None)
    want = json.loads((out / "listen" / "lstm-robust-human.json").read_text())
    assert got["reference"] == want["reference"] and len(got["reference"]) == 2 * 3
    assert got["probe"] == [r for r in want["probe"] if r["layer"] == "blstm1"] and len(got["probe"]) == 3
    a, b = np.load(tmp_path / "listen" / "lstm-robust-human-items.npz"), np.load(out / "listen" / "lstm-robust-human-items.npz")
    assert len(a.files) == 3 + 4 * 3 and "pesq|blstm1" in a.files  # utterance, condition, speaker + 4 per row
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cli_hear_rejects_bad_config(tmp_path, capsys):
    from jaxprobe.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[probe]\nsteps = 0\n")
    assert main(["hear", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "'probe.steps' must be an int >= 1" in capsys.readouterr().err


def test_librispeech_musan_source(tmp_path):
    """data.source = 'librispeech' reads train/dev/test folders and MUSAN noise (a fake tree)."""
    import soundfile as sf

    from torch_bridge.hear import load_hear_data

    rng = np.random.default_rng(0)
    for subset, speakers in (("train-clean-100", ("11", "12", "13")), ("dev-clean", ("21", "22")),
                             ("test-clean", ("31", "32", "33"))):
        for spk in speakers:
            chap = tmp_path / "LibriSpeech" / subset / spk / "100"
            chap.mkdir(parents=True)
            lines = []
            for u in range(4):
                uid = f"{spk}-100-{u:04d}"
                sf.write(chap / f"{uid}.flac", 0.1 * rng.standard_normal(16000), 16000)
                lines.append(f"{uid} HELLO WORLD {u}")
            (chap / f"{spk}-100.trans.txt").write_text("\n".join(lines) + "\n")
    noise = tmp_path / "musan" / "noise" / "free-sound"
    noise.mkdir(parents=True)
    for k in range(2):
        sf.write(noise / f"noise-free-sound-000{k}.wav", 0.1 * rng.standard_normal(32000), 16000)
    cfg = load_hear_config({"data": {
        "source": "librispeech", "librispeech_train": str(tmp_path / "LibriSpeech" / "train-clean-100"),
        "librispeech_dev": str(tmp_path / "LibriSpeech" / "dev-clean"),
        "librispeech_test": str(tmp_path / "LibriSpeech" / "test-clean"), "musan": str(tmp_path / "musan"),
        "eval_per_speaker": 2, "eval_speakers": 2, "probe_train_utterances": 5, "probe_valid_utterances": 3,
        "asr_held_out": 0}})
    data = load_hear_data(cfg["data"])
    assert len(data.train) == 12 and len(data.probe_train) == 5 and len(data.probe_valid) == 3
    assert len(data.held_out) == 8  # all of dev-clean
    assert [r.id for r in data.listen] == ["31-100-0000", "31-100-0001", "32-100-0000", "32-100-0001"]
    assert sorted(data.noises["listen"]) == ["noise/free-sound/noise-free-sound-0000",
                                             "noise/free-sound/noise-free-sound-0001"]
    assert "MUSAN" in data.description
    with pytest.raises(ValueError, match="Unknown noise type"):
        load_hear_data(cfg["data"], ["babble"])


def test_report_rerenders_from_results_alone(hear_run, tmp_path):
    from jaxprobe.report.__main__ import main

    out, _, _ = hear_run
    assert main([str(out / "results.json"), "--out", str(tmp_path), "--no-pdf"]) == 0
    assert "Table 2" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / "fig3_mel_per_layer.png").exists()


def test_clean_targets_equal_the_recogniser_front_end(hear_run):
    """probe.target = 'clean' computes the clean log-mel in JAX; on clean items it must equal the
    log-mel the torch front end fed the recogniser (captured in the store), to float32 tolerance."""
    from jaxprobe.studies.hear.probes import INPUT, clean_targets, mel_config, store_arrays
    from torch_bridge.hear import load_hear_data
    from torch_bridge.store import open_store

    out, _, _ = hear_run
    cfg = load_hear_config(TINY)
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    for store in sorted(out.glob("recognisers/*/store-listen")):
        arrays, items = store_arrays(str(store), [INPUT])
        mel_cfg = mel_config(open_store(store).manifest["model"]["mel"])
        clean = clean_targets(items, data, cfg, mel_cfg)
        rows = [i for i, (_, c) in enumerate(items) if c["condition"] == "clean"]
        assert rows and clean.shape == arrays[INPUT].shape
        # log domain: near-silent bins (zero padding) sit at log(1e-6); compare where there is signal
        a, b = clean[rows], arrays[INPUT][rows]
        sig = b > -10
        np.testing.assert_allclose(a[sig], b[sig], atol=2e-3, rtol=1e-3)
