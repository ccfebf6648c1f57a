"""The sweep study on another model than MUSE: GTCRN end to end on its real checkpoint (tiny
size), and model names checked before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jaxprobe import cli
from tests.conftest import SHARED
from tests.npz import load_npz

GTCRN_CKPT = SHARED / "gtcrn" / "model_trained_on_vctk.tar"


def test_unknown_model_is_one_line_before_any_work(tmp_path, capsys):
    assert cli.main(["sweep", "--config", "demo", "--model", "gtcrm", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Unknown model 'gtcrm'. Did you mean 'gtcrn'?" in err[0]
    assert not (tmp_path / "r" / "store").exists()
    assert cli.main(["dump", "--model", "wavlm", "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "Did you mean 'wavlm_base'?" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.shared
def test_gtcrn_sweep_end_to_end(tmp_path, monkeypatch):
    if not GTCRN_CKPT.exists():
        pytest.skip(f"needs {GTCRN_CKPT} (../shared is absent on this machine)")
    monkeypatch.setenv("JAXPROBE_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "g.toml"
    cfg.write_text("""name = "g"
[model]
name = "muse"        # overridden by --model
batch_size = 4
threads = 1
[data]
corpus_size = "tiny"
speech_split = "all"
utterances = 2
noises = ["pink", "babble"]
[sweep]
snrs = [-10, 0, 10]
[cka]
n_boot = 50
protocols = ["utterance"]
estimators = ["biased"]
designs = ["noise"]
[diffusion]
inter_snrs = [-10, 0, 10]
n_boot = 10
[report]
formats = ["png"]
""")
    out = tmp_path / "run"
    argv = ["sweep", "--config", str(cfg), "--model", "gtcrn", "--checkpoint", str(GTCRN_CKPT), "--out", str(out)]
    assert cli.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["name"] == "gtcrn:vctk" and res["model"]["window"] is None
    assert "channels" in res["model"]["cka_samples"] and res["settings"]["model"]["name"] == "gtcrn"
    layers = res["layers"]
    assert [lay["name"] for lay in layers][:2] == ["sfe", "encoder.en_convs.0"] and len(layers) == 14
    assert [lay["block"] for lay in layers] == ["SFE"] + ["Encoder"] * 5 + ["DPGRNN"] * 2 + ["Decoder"] * 5 + ["Mask"]
    assert [lay["skip"] for lay in layers if lay["block"] == "Decoder"] == ["input"] * 5
    assert res["data"]["n_windows"] == 1  # whole mixtures, one item per utterance
    assert all(np.isfinite(r["estimate"]) for r in res["cka"])
    assert [r["block"] for r in res["diffusion"]["table1"]] == ["SFE", "Encoder", "DPGRNN", "Decoder", "Mask"]
    # every block is in one inter-layer map; the 528-wide one (16 x 33) is drawn
    maps = res["diffusion"]["inter_layer_maps"]
    assert sorted(b for m in maps for b in m["blocks"]) == sorted(["SFE", "Encoder", "DPGRNN", "Decoder", "Mask"])
    assert maps[0]["width"] == 528 and maps[0]["blocks"] == ["Encoder", "DPGRNN", "Decoder"]
    assert res["diffusion"]["inter_layer"]["0"]["groups"] == ["Encoder", "DPGRNN", "Decoder"]
    assert "MUSE's blocks" in res["diffusion"]["inter_layer_set"]["description"]
    html = (out / "report.html").read_text()
    assert "Probing gtcrn:vctk" in html and "whole mixtures (no window)" in html
    assert "SFE (width 1161, alone)" in (out / "report.md").read_text()
    for name in ("figures/fig3_regression.png", "figures/fig5_inter_layer.png", "cka.csv", "table1.csv"):
        assert (out / name).stat().st_size > 0, name


def test_width_maps_keep_every_block():
    from jaxprobe.studies.sweep.diffusion import width_maps

    # MUSE: five 2048-wide blocks in one map (the first layer of each), the 1536-wide latent alone
    muse = [(f"{b}.{i}", b, 1536 if b == "Latent" else 2048)
            for b in ("Enc1", "Enc2", "Latent", "Dec2", "Dec1", "Refine") for i in range(4)]
    names = [n for n, _, _ in muse]
    got = width_maps(names, {n: b for n, b, _ in muse}, {n: w for n, _, w in muse})
    assert got == [(2048, ["Enc1.0", "Enc2.0", "Dec2.0", "Dec1.0", "Refine.0"]), (1536, ["Latent.0"])]
    # a block joins a map through its first layer of the shared width, not its first layer
    lay = [("A.0", "A", 10), ("A.1", "A", 5), ("B.0", "B", 5), ("C.0", "C", 7), ("C.1", "C", 5), ("D.0", "D", 3)]
    names = [n for n, _, _ in lay]
    got = width_maps(names, {n: b for n, b, _ in lay}, {n: w for n, _, w in lay})
    assert got == [(5, ["A.1", "B.0", "C.1"]), (3, ["D.0"])]


def test_report_without_shared_widths_has_no_fig5(tmp_path):
    from jaxprobe.report import write_report
    from tests.jaxprobe.report_fixtures import make_results

    res = make_results(combos=(("utterance", "biased"),))
    blocks = list(dict.fromkeys(lay["block"] for lay in res["layers"]))
    res["diffusion"]["inter_layer"] = {}
    res["diffusion"]["inter_layer_maps"] = [{"width": 100 + k, "blocks": [b], "layers": [res["layers"][4 * k]["name"]]}
                                            for k, b in enumerate(blocks)]
    paths = write_report(res, tmp_path, formats=("png",))
    assert not any("fig5" in k for k in paths)
    md = (tmp_path / "report.md").read_text()
    assert "no two blocks of this model have a layer of the same width" in md
    assert "No two blocks share a width, so there are no inter-layer distances and no Fig. 5." in md


def test_quality_without_enhance_is_a_config_error_before_any_work(tmp_path, capsys):
    # a user model that is not an enhancement model (no enhance(), as the SSL and CTC models)
    out = tmp_path / "r"
    argv = ["sweep", "--config", "reverb-demo", "--model", "tests.torch_bridge.test_models_registry:tiny_spec",
            "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'quality.enabled' = true needs an enhancement model" in err[0], err
    assert "tiny-spec" in err[0] and not (out / "store").exists()


@pytest.mark.slow
@pytest.mark.shared
def test_gtcrn_c50_sweep_with_quality(tmp_path, monkeypatch):
    """GTCRN's quality stage: its official pipeline on whole mixtures of unequal length, scored
    per item on its own length (the analysis recomputed here from the stored outputs)."""
    pytest.importorskip("pyroomacoustics")
    if not GTCRN_CKPT.exists():
        pytest.skip(f"needs {GTCRN_CKPT} (../shared is absent on this machine)")
    from jaxprobe.quality import item_quality
    from jaxprobe.studies.sweep import run

    monkeypatch.setenv("JAXPROBE_CACHE", str(tmp_path / "cache"))
    levels = [4.0, 12.0, 20.0]
    cfg = {"name": "g-c50", "model": {"name": "gtcrn", "batch_size": 0, "threads": 1},  # 0: its own, 8
           "data": {"corpus_size": "tiny", "speech_split": "all", "utterances": 2, "noises": ["pink"]},
           "sweep": {"axis": "c50", "values": levels, "noise_snr": 20.0}, "quality": {"enabled": True},
           "cka": {"n_boot": 50, "protocols": ["utterance"], "estimators": ["biased"], "designs": ["hierarchical"]},
           "diffusion": {"n_boot": 10}, "report": {"formats": ["png"]}}
    out = tmp_path / "out"
    run(cfg, out, checkpoint=str(GTCRN_CKPT))
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["name"] == "gtcrn:vctk"
    q = {(r["metric"], r["input"], r["level"]): r for r in res["quality"] if r["noise"] == "all"}
    assert len(q) == 3 * 2 * 3 and all(r["model"] == "gtcrn" for r in res["quality"])
    files = sorted((out / "quality").glob("*/[0-9]*.npz"))
    assert len(files) == 2
    vals = load_npz(out / "quality_values.npz")
    for f in files:
        z = load_npz(f)
        assert z["enhanced"].shape == z["noisy"].shape == (1, 3, 1, z["clean"].shape[-1])
        assert z["clean"].shape[-1] % 256 == 0  # GTCRN's output length: whole hops
        assert np.abs(z["enhanced"] - z["noisy"]).max() > 1e-3
        got = item_quality(np.repeat(z["clean"], 3, 0), z["enhanced"][0, :, 0])
        col = [np.flatnonzero(np.isclose(vals["si_sdr__enhanced"][0, s], got["si_sdr"][s], rtol=1e-6)) for s in range(3)]
        assert all(len(c) == 1 for c in col), (col, got["si_sdr"], vals["si_sdr__enhanced"])
    for s in range(3):
        assert q[("si_sdr", "enhanced", levels[s])]["estimate"] == pytest.approx(np.nanmean(vals["si_sdr__enhanced"][:, s]))
    assert len(res["correlations"]) == 14 * 6 * 4  # layers x (3 metrics x 2 targets) x (pooled + 3 levels)
    assert (out / "figures/quality_vs_level.png").stat().st_size > 0
