"""The sweep's analysis stage on synthetic activations with MUSE-like shapes."""
import numpy as np
import pytest
from scipy import stats

import jaxprobe
from jaxprobe.config import ConfigError, load_sweep_config, snr_grid
from jaxprobe.studies.sweep_analysis import CkaSettings, analyze_cka, centroid_cka, per_item_cka
from jaxprobe.studies.sweep_diffusion import analyze_diffusion

SNRS = np.arange(-10.0, 31.0, 10.0)
SHAPES = {"Enc1": (16, 32), "Latent": (12, 8), "Dec1": (16, 32)}


def _synthetic(rng, K=3, U=4):
    layers, noisy, clean = [], {}, {}
    for depth, (block, (C, F)) in enumerate(SHAPES.items()):
        for i in range(2):
            name = f"{block}.{i}"
            layers.append({"name": name, "block": block, "index": i, "shape": [C, F], "skip": None})
            cl = rng.standard_normal((U, C, F)).astype(np.float32)
            clean[name] = cl
            w = (1 + depth) * 0.5 / (1 + np.exp(SNRS / 8.0))  # noisier at low SNR, more so deeper
            dirs = rng.standard_normal((K, 1, 1, C, F))
            noisy[name] = (cl[None, None] + w[None, :, None, None, None] * (dirs + rng.standard_normal((K, len(SNRS), U, C, F)))).astype(np.float32)
    return layers, noisy, clean, [f"n{k}" for k in range(K)]


def test_per_item_and_centroid_cka_match_direct_calls(rng):
    layers, noisy, clean, noises = _synthetic(rng)
    a = noisy["Enc1.0"]
    got = np.asarray(per_item_cka(a, clean["Enc1.0"], debiased=False))
    assert got.shape == (3, len(SNRS), 4)
    np.testing.assert_allclose(got[2, 1, 3], jaxprobe.cka(a[2, 1, 3], clean["Enc1.0"][3]), rtol=1e-5)
    tr = np.asarray(per_item_cka(a, clean["Enc1.0"], debiased=True, orientation="bins"))
    np.testing.assert_allclose(tr[0, 0, 0], jaxprobe.cka(a[0, 0, 0].T, clean["Enc1.0"][0].T, debiased=True), rtol=1e-5)
    cen = np.asarray(centroid_cka(a, clean["Enc1.0"], debiased=False))
    np.testing.assert_allclose(cen[1, 2], jaxprobe.cka(a[1, 2].mean(0), clean["Enc1.0"].mean(0)), rtol=1e-5)


def test_tables_regressions_and_determinism(rng):
    layers, noisy, clean, noises = _synthetic(rng)
    s = CkaSettings(n_boot=200)
    r1 = analyze_cka(noisy, clean, layers, SNRS, noises, s)
    r2 = analyze_cka(noisy, clean, layers, SNRS, noises, s)
    assert r1["cka"] == r2["cka"] and r1["regression"] == r2["regression"]  # same seed, same numbers
    assert len(r1["cka"]) == 6 * len(SNRS) * 2 * 2
    for rec in r1["cka"]:
        if rec["protocol"] == "utterance":
            assert rec["low"] <= rec["estimate"] + 1e-6 and rec["estimate"] <= rec["high"] + 1e-6
    # the regression equals scipy on the averaged CKA curve
    V = r1["arrays"]["utterance/biased"]  # (L, K, S, U)
    y = V[0].mean(axis=(0, 2))
    ref = stats.linregress(SNRS, y)
    reg = next(r for r in r1["regression"] if r["layer"] == "Enc1.0" and r["protocol"] == "utterance" and r["estimator"] == "biased")
    assert reg["slope"] == pytest.approx(ref.slope, rel=1e-4)
    assert reg["intercept"] == pytest.approx(ref.intercept, rel=1e-4)
    assert reg["slope_low"] <= reg["slope"] <= reg["slope_high"]
    # deeper layers are noisier here: lower intercept, steeper slope
    by = {r["layer"]: r for r in r1["regression"] if r["protocol"] == "utterance" and r["estimator"] == "biased"}
    assert by["Dec1.0"]["intercept"] < by["Enc1.0"]["intercept"]
    assert by["Dec1.0"]["slope"] > by["Enc1.0"]["slope"]


def test_diffusion_stage_shapes_and_exclusion(rng):
    layers, noisy, clean, noises = _synthetic(rng)
    dcfg = load_sweep_config({})["diffusion"]
    d = analyze_diffusion(noisy, layers, SNRS, noises, dcfg, n_boot=100)
    assert any("excluded" in n for n in d["notes"])  # the latent exclusion is reported, not silent
    assert [r["block"] for r in d["table1"]] == list(SHAPES)
    assert d["inter_layer_excluded"] == ["Latent.0"]
    m = np.asarray(d["inter_layer"]["-10"]["matrix"])
    assert m.shape == (2, 2) and np.allclose(m, m.T) and np.all(np.diag(m) == 0)
    one = d["intra_layer"]["Dec1.1"]
    assert np.asarray(one["distances"]).shape == (len(SNRS), len(SNRS))
    assert len(one["dc1"]["pooled"]) == len(SNRS)
    for rec in d["table1_per_noise_maps"]:
        assert -1 <= rec["spearman"] <= 1


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="Unknown configuration key 'cka.nboot'"):
        load_sweep_config({"cka": {"nboot": 5}})
    with pytest.raises(ConfigError, match="'cka.n_boot' must be int"):
        load_sweep_config({"cka": {"n_boot": "many"}})
    with pytest.raises(ConfigError, match="'data.window' must be one of"):
        load_sweep_config({"data": {"window": "middle"}})
    with pytest.raises(ConfigError, match="data.voicebank"):
        load_sweep_config({"data": {"source": "voicebank_demand"}})
    assert len(snr_grid(load_sweep_config({}))) == 41
    assert snr_grid(load_sweep_config("demo"))[0] == -10.0
    assert load_sweep_config("paper")["data"]["source"] == "voicebank_demand"
