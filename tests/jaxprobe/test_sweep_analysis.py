"""The sweep's analysis stage on synthetic activations with MUSE-like shapes."""
import numpy as np
import pytest
from scipy import stats

import jaxprobe
from jaxprobe.studies.sweep.config import ConfigError, load_sweep_config, snr_grid
from jaxprobe.studies.sweep.analysis import CkaSettings, analyze_cka, centroid_cka, per_item_cka
from jaxprobe.studies.sweep.diffusion import analyze_diffusion

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


@pytest.mark.parametrize("ride", [True, False])
def test_analysis_arrays_equal_direct_calls_across_padded_buckets(rng, monkeypatch, ride):
    """analyze_cka pads the layers' items to shared buckets (Latent (12, 8) joins (16, 32)) and
    computes the centroids as one more item (ride) or in their own call (large sweeps): every
    per-item and centroid value is the direct unpadded call's to float32 rounding, with either
    protocol alone too."""
    from jaxprobe import _cka_items
    from jaxprobe.studies.sweep import analysis

    if not ride:
        monkeypatch.setattr(analysis, "CENTROID_RIDE_BYTES", 0)

    layers, noisy, clean, noises = _synthetic(rng)
    assert _cka_items.item_buckets([SHAPES[l["block"]] for l in layers], 5 * 16)[(12, 8)] == (16, 32)
    want = {}
    for l in layers:
        nm = l["name"]
        for deb in (False, True):
            est = "debiased" if deb else "biased"
            want.setdefault(f"utterance/{est}", []).append(np.asarray(per_item_cka(noisy[nm], clean[nm], debiased=deb)))
            want.setdefault(f"centroid/{est}", []).append(np.asarray(centroid_cka(noisy[nm], clean[nm], debiased=deb)))
    for protocols in (("utterance", "centroid"), ("centroid",), ("utterance",)):
        got = analyze_cka(noisy, clean, layers, SNRS, noises, CkaSettings(n_boot=20, protocols=protocols))["arrays"]
        assert sorted(got) == sorted(k for k in want if k.split("/")[0] in protocols)
        for k, v in got.items():
            np.testing.assert_allclose(v, np.stack(want[k]), rtol=0, atol=1e-6, err_msg=k)


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
    dcfg = load_sweep_config({"diffusion": {"inter_layers": "first_of_block"}})["diffusion"]
    d = analyze_diffusion(noisy, layers, SNRS, noises, dcfg, n_boot=20)
    # the latent (another width) gets its own map, alone there: reported, not silent
    assert any("Latent alone" in n and "no inter-layer distances" in n for n in d["notes"])
    assert [r["block"] for r in d["table1"]] == list(SHAPES)
    assert d["inter_layer_excluded"] == ["Latent.0"]
    m = np.asarray(d["inter_layer"]["-10"]["distances"])
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


def test_trends_are_recomputed_inside_every_replicate(rng):
    """Spearman rho of slope / intercept vs depth and the block means, per replicate, against
    scipy on that replicate's curves. Tolerance: rho is a ratio of rank sums, exact up to
    float32 rounding (abs 1e-6) unless two slopes tie within float32 precision (they do not
    here); block means of float32 fits: rel 1e-4."""
    layers, noisy, clean, noises = _synthetic(rng)
    s = CkaSettings(n_boot=64, protocols=("utterance",), estimators=("biased",))
    r = analyze_cka(noisy, clean, layers, SNRS, noises, s)
    names = [l["name"] for l in layers]
    block_of = np.array([l["block"] for l in layers])
    depth = np.arange(len(layers))
    for design in ("noise", "hierarchical"):
        reps = r["replicates"]["utterance/biased"][design]
        curves = reps["cka"]  # (B, L, S)
        assert curves.shape == (64, len(layers), len(SNRS))
        for b in (0, 9, 31, 63):
            fits = [stats.linregress(SNRS, curves[b, l].astype(np.float64)) for l in range(len(layers))]
            slopes = np.array([f.slope for f in fits])
            icpts = np.array([f.intercept for f in fits])
            assert reps["spearman_slope_depth"][b] == pytest.approx(stats.spearmanr(depth, slopes).statistic, abs=1e-6)
            assert reps["spearman_intercept_depth"][b] == pytest.approx(stats.spearmanr(depth, icpts).statistic, abs=1e-6)
            for g, block in enumerate(SHAPES):
                m = block_of == block
                assert reps["block_mean_slope"][b, g] == pytest.approx(slopes[m].mean(), rel=1e-4)
                assert reps["block_mean_intercept"][b, g] == pytest.approx(icpts[m].mean(), rel=1e-4)
                assert reps["block_mean_cka_lowest_snr"][b, g] == pytest.approx(curves[b, m, 0].mean(), rel=1e-5)
                assert reps["block_mean_cka_0db"][b, g] == pytest.approx(curves[b, m, 1].mean(), rel=1e-5)  # SNRS[1] = 0
    # the records: estimate from the mean curves, bounds = percentiles of the replicates (first design)
    trends = {(t["statistic"], t["block"]): t for t in r["trends"]}
    reg = [next(x for x in r["regression"] if x["layer"] == nm) for nm in names]
    rho = trends[("spearman_slope_depth", None)]
    assert rho["estimate"] == pytest.approx(stats.spearmanr(depth, [x["slope"] for x in reg]).statistic, abs=1e-6)
    reps = r["replicates"]["utterance/biased"]["noise"]["spearman_slope_depth"]
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (rho["low"], rho["high"]) == pytest.approx((lo, hi)) and rho["low_noise"] == rho["low"]
    assert "low_hierarchical" in rho
    assert rho["estimate"] > 0  # deeper layers are noisier in the synthetic data: slopes grow
    assert trends[("spearman_intercept_depth", None)]["estimate"] < 0
    cell = {(x["layer"], x["snr"]): x["estimate"] for x in r["cka"]}
    enc = trends[("block_mean_cka_lowest_snr", "Enc1")]
    assert enc["snr"] == -10.0 and trends[("block_mean_cka_0db", "Enc1")]["snr"] == 0.0
    assert enc["estimate"] == pytest.approx(np.mean([cell[("Enc1.0", -10.0)], cell[("Enc1.1", -10.0)]]), rel=1e-6)
    assert enc["low"] <= enc["estimate"] <= enc["high"]
    assert len(r["trends"]) == 2 + 4 * len(SHAPES)


def test_fused_per_item_cka_equals_one_call_per_estimator(rng):
    from jaxprobe.studies.sweep.analysis import per_item_cka_all

    layers, noisy, clean, noises = _synthetic(rng)
    for orientation in ("channels", "bins"):
        got = per_item_cka_all(noisy["Latent.1"], clean["Latent.1"], orientation=orientation)
        for est in ("biased", "debiased"):
            want = per_item_cka(noisy["Latent.1"], clean["Latent.1"], debiased=est == "debiased", orientation=orientation)
            np.testing.assert_allclose(got[est], want, atol=2e-6)


def test_report_from_real_analysis_has_trend_tables(rng, tmp_path):
    """analyze_cka + analyze_diffusion on the synthetic activations -> results -> report."""
    from jaxprobe.report import write_report
    from jaxprobe.report.summary import findings

    layers, noisy, clean, noises = _synthetic(rng)
    cka_part = analyze_cka(noisy, clean, layers, SNRS, noises, CkaSettings(n_boot=100))
    dcfg = load_sweep_config({})["diffusion"]
    results = {
        "settings": {"cka": {"n_boot": 100}, "diffusion": dcfg},
        "data": {"corpus": "synthetic", "n_utterances": 4, "noises": noises, "snrs": SNRS.tolist(), "n_windows": 1},
        "layers": layers, "cka": cka_part["cka"], "regression": cka_part["regression"],
        "trends": cka_part["trends"], "diffusion": analyze_diffusion(noisy, layers, SNRS, noises, dcfg, n_boot=50),
    }
    paths = write_report(results, tmp_path, figures=[])
    md, page = paths["md"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
    t = {(x["statistic"], x["block"]): x for x in cka_part["trends"]
         if (x["protocol"], x["estimator"]) == ("utterance", "biased")}
    rho = t[("spearman_slope_depth", None)]
    rho_txt = f"{rho['estimate']:.3f} [{rho['low']:.3f}, {rho['high']:.3f}]"
    slope = t[("block_mean_slope", "Latent")]
    slope_txt = f"{slope['estimate']:.4f} [{slope['low']:.4f}, {slope['high']:.4f}]"
    c0 = t[("block_mean_cka_0db", "Dec1")]
    c0_txt = f"{c0['estimate']:.3f} [{c0['low']:.3f}, {c0['high']:.3f}]"
    for doc in (md, page):
        assert "Trends across depth" in doc and "Block summary" in doc
        assert "Mean CKA at 0 dB [interval]" in doc and "Mean CKA at -10 dB [interval]" in doc
        assert rho_txt in doc and slope_txt in doc and c0_txt in doc
    assert (tmp_path / "trends.csv").is_file()
    lines = findings(results)
    assert any(f"Slopes versus depth: Spearman ρ = {rho['estimate']:.2f} [{rho['low']:.2f}, {rho['high']:.2f}]" in s
               for s in lines)
    assert any(f"Latent {slope_txt}" in s for s in lines)
    assert not any("envelope" in s for s in lines)  # block numbers carry replicate intervals
    # the geometry: every diffusion number quoted with an interval, Table 1 in both conventions
    assert "no interval" not in md and "no interval" not in page
    assert "ρ, symmetric [interval]" in md and "Why Table 1 has two conventions" in md
    drift = results["diffusion"]["block_drift"][0]
    assert f"{drift['block']} {drift['distance']:.3f} [{drift['distance_low']:.3f}, {drift['distance_high']:.3f}]" in md
    assert "SE authors' set" in md and (tmp_path / "diffusion_intervals.csv").is_file()


def test_resampling_summary_warns_when_few_distinct_resamples():
    from jaxprobe.studies.sweep.analysis import CkaSettings, resampling_summary

    recs, warns = resampling_summary(2, 4, CkaSettings(n_boot=1000))
    noise = [r for r in recs if r["design"] == "noise"]
    assert {r["protocol"] for r in noise} == {"utterance", "centroid"}
    assert all(r["distinct_resamples"] == 3 and r["too_few"] for r in noise)
    assert len(warns) == 2 and all("only 3 distinct resamples exist for 1000 replicates" in w for w in warns)
    hier = next(r for r in recs if r["design"] == "hierarchical")
    assert hier["distinct_resamples"] > 1000 and not hier["too_few"]
    recs, warns = resampling_summary(18, 50, CkaSettings(n_boot=1000))
    assert warns == [] and not any(r["too_few"] for r in recs)
