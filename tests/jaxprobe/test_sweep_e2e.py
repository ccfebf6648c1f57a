"""The SNR-sweep study end to end on the real MUSE checkpoint (from ../shared), at a
test size: tiny embedded corpus, 2 utterances x 2 noise types x 4 SNRs."""
import json

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, request):
    from tests.conftest import MUSE_DIR

    if not (MUSE_DIR / "g_best").exists():
        pytest.skip(f"needs {MUSE_DIR}/g_best (../shared is absent on this machine)")
    from jaxprobe.studies.sweep import run

    root = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXPROBE_CACHE", str(root / "cache"))
    request.addfinalizer(mp.undo)
    cfg = {
        "name": "e2e",
        "model": {"batch_size": 1, "threads": 1},
        "data": {"corpus_size": "tiny", "speech_split": "all", "utterances": 2, "noises": ["pink", "babble"]},
        "sweep": {"snrs": [-10, 0, 10, 30]},
        "cka": {"n_boot": 300},
        "diffusion": {"inter_snrs": [-10, 0, 10, 30], "n_boot": 20},
    }
    out = root / "out"
    paths = run(cfg, out, checkpoint=str(MUSE_DIR / "g_best"))
    return cfg, out, paths, run


def test_outputs_and_schema(sweep_run):
    cfg, out, paths, _ = sweep_run
    res = json.loads((out / "results.json").read_text())
    assert len(res["layers"]) == 24
    assert {"cka", "regression", "diffusion", "settings", "data"} <= set(res)
    rec = res["cka"][0]
    assert {"layer", "block", "snr", "protocol", "estimator", "estimate", "low", "high"} <= set(rec)
    assert all(r["axis"] == "snr" and r["level"] == r["snr"] for r in res["cka"])  # issue 18: axis and level too
    reg = res["regression"][0]
    assert {"slope", "intercept", "r2", "slope_low", "slope_high", "intercept_low", "intercept_high"} <= set(reg)
    assert {r["block"] for r in res["diffusion"]["table1"]} == {"Enc1", "Enc2", "Latent", "Dec2", "Dec1", "Refine"}
    inter = res["diffusion"]["inter_layer"]["-10"]
    assert inter["group_blocks"] == ["Enc1"] * 4 + ["Enc2"] * 4 + ["Dec2"] * 4 + ["Dec1"] * 4  # the authors' set
    assert np.asarray(inter["distances_low"]).shape == np.asarray(inter["distances"]).shape == (16, 16)
    assert {r["block"] for r in res["diffusion"]["table1_symmetric"]} == {r["block"] for r in res["diffusion"]["table1"]}
    for name in ("report.html", "report.md", "cka.csv", "regression.csv", "table1.csv",
                 "figures/fig2_cka_heatmap.png", "figures/fig3_regression.pdf"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "src=\"http" not in html
    for rec in res["cka"]:
        assert np.isfinite(rec["estimate"])
    # the store is recorded relative to the run folder, so a copied folder stays valid
    assert res["settings"]["store"].startswith("store/") and (out / res["settings"]["store"]).is_dir()
    # 2 noise types: 3 distinct resamples of the noise design, said in results.json and the report
    noise = [d for d in res["bootstrap"]["designs"] if d["design"] == "noise"]
    assert noise and all(d["distinct_resamples"] == 3 and d["too_few"] for d in noise)
    assert any("only 3 distinct resamples" in w for w in res["warnings"])
    assert html.index("only 3 distinct resamples") < html.index("<h2>Data")
    assert html.index("<h2>Summary of findings") < html.index("<h2>Appendix: settings")


def test_robust_findings_with_intervals(sweep_run):
    """Encoder layer 0 stays close to clean at 0 dB while the latent block does not; the
    latent block is more SNR-sensitive (steeper slope) than encoder layer 0."""
    _, out, _, _ = sweep_run
    res = json.loads((out / "results.json").read_text())
    reg = {r["layer"]: r for r in res["regression"] if r["protocol"] == "utterance" and r["estimator"] == "biased"}
    layers = res["layers"]
    enc0 = reg[layers[0]["name"]]
    latent = [reg[l["name"]] for l in layers if l["block"] == "Latent"]
    assert enc0["intercept_low"] > max(r["intercept_high"] for r in latent)
    assert enc0["slope_high"] < min(r["slope_low"] for r in latent)
    # DC1 follows SNR in the per-(layer, noise) maps
    t1 = res["diffusion"]["table1_per_noise_maps"]
    assert np.mean([r["spearman"] for r in t1]) > 0.8


def test_rerun_uses_caches(sweep_run, capsys):
    cfg, out, _, run = sweep_run
    from tests.conftest import MUSE_DIR

    run(cfg, out, checkpoint=str(MUSE_DIR / "g_best"))
    log = capsys.readouterr().out
    assert "analysis: cached" in log
    assert "dump: 0 new items" in log
    assert "drawing 0" in log  # no figure re-rendered


def test_copied_run_folder_reuses_everything(sweep_run, capsys, tmp_path):
    import shutil

    cfg, out, _, run = sweep_run
    from tests.conftest import MUSE_DIR

    copy = tmp_path / "copied"
    shutil.copytree(out, copy)
    shutil.rmtree(out / "figures")  # the copy must not lean on the original
    try:
        run(cfg, copy, checkpoint=str(MUSE_DIR / "g_best"))
    finally:
        shutil.copytree(copy / "figures", out / "figures")
    log = capsys.readouterr().out
    assert "analysis: cached" in log and "dump: 0 new items" in log and "drawing 0" in log


def test_rerun_repairs_a_damaged_store(sweep_run, capsys):
    """Flipped low mantissa bits in one chunk file (invisible to any value check): the re-run's
    analysis finds them when it reads the file, the chunk is recomputed with MUSE, and the
    results are the same numbers as before."""
    cfg, out, _, run = sweep_run
    from tests.conftest import MUSE_DIR

    before = json.loads((out / "results.json").read_text())
    (store,) = (out / "store").iterdir()
    f = sorted((store / "chunks" / "0000001").glob("*.npy"))[5]
    data = np.load(f)
    raw = bytearray(f.read_bytes())
    offset = len(raw) - data.nbytes
    for p in np.random.default_rng(0).choice(data.size, size=min(200, data.size), replace=False):
        raw[offset + 4 * int(p)] ^= 0x01  # little-endian float32: the lowest mantissa bit
    f.write_bytes(bytes(raw))
    (out / "stages" / "analysis.json").unlink()  # make the analysis read the store again
    capsys.readouterr()
    run(cfg, out, checkpoint=str(MUSE_DIR / "g_best"))
    log = capsys.readouterr().out
    assert "the store is damaged" in log and str(f) in log
    assert "store: chunk 1 is damaged, recomputing it" in log and "dump: 2 new items" in log
    after = json.loads((out / "results.json").read_text())
    assert after["cka"] == before["cka"] and after["regression"] == before["regression"]
