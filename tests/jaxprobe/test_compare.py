"""`jaxprobe compare` on two tiny runs of two different (toy) models on the same data.

Each run is made by the real pipeline pieces: a synthetic SNR sweep (torch_bridge.mixing), a
small torch model dumped into an activation store (torch_bridge.dump), and the sweep's own
analysis stage writing results.json. The two models differ in layer names, shapes, blocks,
skip roles and window length (so one averages several windows per utterance)."""
import itertools
import json
import shutil

import numpy as np
import pytest

from tests.reference.cka_ref import cka as ref_cka
from tests.reference.cka_ref import linear_gram

SNRS = [-5, 5, 15]


def _toy_models():
    import torch
    from torch import nn

    class A(nn.Module):  # (B, 400) -> maps (B, C, T=20, F=20)
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.Conv2d(5, 6, 3, padding=1))
            self.mid = nn.Conv2d(6, 6, 3, padding=1)
            self.dec = nn.Sequential(nn.Conv2d(6, 4, 3, padding=1))

        def forward(self, w):
            x = w.reshape(w.shape[0], 1, 20, 20)
            e0 = torch.tanh(self.enc[0](x))
            e1 = torch.tanh(self.enc[1](e0))
            m = torch.tanh(self.mid(e1))
            return self.dec[0](m + e1)

    class B(nn.Module):  # (B, 800) -> maps (B, C, T=40, F=20), other names and widths
        def __init__(self):
            super().__init__()
            self.front = nn.Conv2d(1, 4, (3, 5), padding=(1, 2))
            self.body = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)])

        def forward(self, w):
            x = torch.relu(self.front(w.reshape(w.shape[0], 1, 40, 20)))
            for layer in self.body:
                x = torch.tanh(layer(x)) + x
            return x

    torch.manual_seed(0)
    a, b = A().eval(), B().eval()
    layers_a = [
        {"name": "enc.0", "block": "Encoder", "index": 0, "shape": [5, 20], "skip": None},
        {"name": "enc.1", "block": "Encoder", "index": 1, "shape": [6, 20], "skip": "output"},
        {"name": "mid", "block": "Middle", "index": 0, "shape": [6, 20], "skip": None},
        {"name": "dec.0", "block": "Decoder", "index": 0, "shape": [4, 20], "skip": "input"},
    ]
    layers_b = [{"name": "front", "block": "Front", "index": 0, "shape": [4, 20], "skip": None}] + [
        {"name": f"body.{i}", "block": "Body", "index": i, "shape": [4, 20], "skip": None} for i in range(3)]
    return (a, layers_a, 400), (b, layers_b, 800)


def _sweep():
    from torch_bridge.mixing import snr_sweep

    rng = np.random.default_rng(7)
    t = np.arange(8000) / 16000
    speech = {f"u{i}": (0.2 * np.sin(2 * np.pi * (150 + 70 * i) * t) * (1.1 + np.sin(2 * np.pi * (2 + i) * t))
                        + 0.02 * rng.standard_normal(t.size)).astype(np.float32) for i in range(5)}
    noises = {"white": (0.1 * rng.standard_normal(16000)).astype(np.float32),
              "hum": (0.1 * np.sin(2 * np.pi * 50 * np.arange(16000) / 16000)).astype(np.float32),
              "brown": (0.002 * np.cumsum(rng.standard_normal(16000))).astype(np.float32)}
    return snr_sweep(speech, noises, SNRS, seed=0, duration=None)


def _cfg(seed=0):
    from jaxprobe.studies.sweep.config import load_sweep_config

    return load_sweep_config({
        "name": "compare-test",
        "data": {"utterances": 5, "noises": ["brown", "hum", "white"]},
        "sweep": {"snrs": SNRS, "seed": seed},
        "cka": {"n_boot": 50, "protocols": ["utterance"], "designs": ["noise"]},
        "diffusion": {"inter_snrs": SNRS},
    })


def _make_run(root, name, model, layers, window, monkeypatch):
    from jaxprobe.studies.sweep import diffusion as sweep_diffusion
    from jaxprobe.studies.sweep.runner import _analysis_stage
    from torch_bridge.dump import dump_snr_sweep

    out = root / name
    store = out / "store" / "s0"
    dump_snr_sweep(model, layers, _sweep(), str(store), window=window, window_mode="all", hop=2 * window,
                   model_info={"name": name}, batch_size=8, chunk_size=64, progress=False, durable=False)
    cfg = _cfg()
    cfg["model"]["name"] = name
    # the comparison never reads the diffusion maps: skip them to keep the test fast
    monkeypatch.setattr(sweep_diffusion, "analyze_diffusion", lambda *a, **k: {"skipped": "in this test"})
    _analysis_stage(cfg, store, out, "synthetic sweep")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    (a, la, wa), (b, lb, wb) = _toy_models()
    mp = pytest.MonkeyPatch()
    try:
        return (_make_run(root, "toya", a, la, wa, mp), _make_run(root, "toyb", b, lb, wb, mp), root)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def compared(runs):
    from jaxprobe.studies.compare import run

    ra, rb, root = runs
    out = root / "cmp"
    paths = run([ra, rb], out, formats=("png",))
    return out, paths, json.loads((out / "results.json").read_text())


def _clean_by_utterance(run_dir, layer):
    """Reference: a layer's clean activations, windows averaged per utterance, (U, C*F) float64,
    read straight from the store's chunk files (no jaxprobe code)."""
    from torch_bridge.store import open_store

    st = open_store(next((run_dir / "store").iterdir()))
    idx = st.index()
    noise, utt = idx.condition_field("noise"), idx.utterance_ids()
    rows = [r for r in range(len(idx)) if noise[r] == "clean"]
    by = {}
    for r in rows:
        by.setdefault(str(utt[r]), []).append(np.asarray(st.read(layer, [int(idx.item[r])]), np.float64).ravel())
    return sorted(by), np.stack([np.mean(by[u], axis=0) for u in sorted(by)])


def test_results_contract(compared, runs):
    out, paths, res = compared
    ra, rb, _ = runs
    assert res["settings"]["labels"] == ["toya", "toyb"]
    assert (res["settings"]["protocol"], res["settings"]["estimator"]) == ("utterance", "biased")
    assert [r["n_layers"] for r in res["runs"]] == [4, 4]
    # the two models cut utterances differently: 10 windows of 400 (hop 800) vs 5 of 800 (hop 1600)
    assert [r["n_windows"] for r in res["runs"]] == [10, 5]
    assert [r["blocks"] for r in res["runs"]] == [["Encoder", "Middle", "Decoder"], ["Front", "Body"]]
    # normalised depth from each run's own layer order
    for label in ("toya", "toyb"):
        nd = [r["norm_depth"] for r in res["layers"] if r["model"] == label]
        np.testing.assert_allclose(nd, [0, 1 / 3, 2 / 3, 1])
    # curves and profile are each run's own numbers, copied
    for label, run_dir in (("toya", ra), ("toyb", rb)):
        own = json.loads((run_dir / "results.json").read_text())
        reg = {r["layer"]: r for r in own["regression"] if (r["protocol"], r["estimator"]) == ("utterance", "biased")}
        prof = [r for r in res["profile"] if r["model"] == label]
        assert len(prof) == 4
        for r in prof:
            for k in ("slope", "slope_low", "slope_high", "intercept", "intercept_low", "intercept_high", "r2"):
                assert r[k] == pytest.approx(reg[r["layer"]][k], rel=1e-12)
        cka = {(r["layer"], r["snr"]): r["estimate"] for r in own["cka"]
               if (r["protocol"], r["estimator"]) == ("utterance", "biased")}
        curves = [r for r in res["curves"] if r["model"] == label]
        assert len(curves) == 4 * len(SNRS)
        for r in curves:
            assert r["estimate"] == pytest.approx(cka[(r["layer"], r["snr"])], rel=1e-12)
        blocks = [r for r in res["blocks"] if r["model"] == label]
        assert [b["block"] for b in blocks] == [b for b in res["runs"][0 if label == "toya" else 1]["blocks"]]
        assert all(b["block_mean_slope_low"] <= b["block_mean_slope"] <= b["block_mean_slope_high"] for b in blocks)
    assert {t["statistic"] for t in res["trends"]} == {"spearman_slope_depth", "spearman_intercept_depth"}
    for name in ("report.html", "report.md", "profile.csv", "curves.csv", "blocks.csv", "trends.csv",
                 "cross_cka.csv", "figures/compare_curves.png", "figures/compare_profile.png",
                 "figures/cross_cka_toya_toyb_clean.png"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") == 3 and "Block summaries side by side" in html
    assert html.index("Summary of findings") < html.index("Runs compared")


def test_cross_model_cka_against_a_float64_reference(compared, runs):
    """Every layer pair against explicit-centring CKA on the window-averaged clean activations
    read from the stores; the permutation null (all 5! orders) against a plain loop."""
    _, _, res = compared
    ra, rb, _ = runs
    (rec,) = res["cross_cka"]
    assert (rec["a"], rec["b"], rec["n_inputs"], rec["n_permutations"]) == ("toya", "toyb", 5, 120)
    assert rec["inputs"] == "clean"
    (inp,) = res["inputs"]
    assert inp["kind"] == "clean" and inp["n"] == 5 and all(k[1] == "clean" for k in inp["keys"])
    m, null, p = (np.asarray(rec[k]) for k in ("matrix", "null_mean", "p_value"))
    assert m.shape == (4, 4)
    for i, la in enumerate(rec["layers_a"]):
        ua, xa = _clean_by_utterance(ra, la)
        for j, lb in enumerate(rec["layers_b"]):
            ub, xb = _clean_by_utterance(rb, lb)
            assert ua == ub == [f"u{k}" for k in range(5)]
            K, L = linear_gram(xa), linear_gram(xb)
            assert m[i, j] == pytest.approx(ref_cka(K, L), abs=2e-5)
            perm = [ref_cka(K, L[np.ix_(q, q)]) for q in map(list, itertools.permutations(range(5)))]
            assert null[i, j] == pytest.approx(np.mean(perm), abs=2e-5)
            assert p[i, j] == pytest.approx(np.mean(np.asarray(perm) >= ref_cka(K, L) - 1e-5), abs=1e-9)
    # every cell is one of 120 orders, the observed one among them
    assert np.all(p >= 1 / 120 - 1e-12)
    # the CSV holds the same matrix, long format
    from jaxprobe.report import read_csv

    rows = read_csv(compared[0] / "cross_cka.csv")
    assert len(rows) == 16
    assert rows[5]["cka"] == pytest.approx(m[1, 1], rel=1e-12)


def _copy_run(src, dst, edit=None, edit_manifest=None):
    shutil.copytree(src, dst)
    if edit:
        res = json.loads((dst / "results.json").read_text())
        edit(res)
        (dst / "results.json").write_text(json.dumps(res))
    if edit_manifest:
        man_path = next((dst / "store").iterdir()) / "manifest.json"
        man = json.loads(man_path.read_text())
        edit_manifest(man)
        man_path.write_text(json.dumps(man))
    return dst


@pytest.mark.parametrize("what", ["seed", "levels", "data", "store"])
def test_refuses_runs_of_different_data_levels_or_seeds(runs, tmp_path, what):
    from jaxprobe.errors import UserError
    from jaxprobe.studies.compare import run

    ra, rb, _ = runs
    edits = {
        "seed": (lambda r: r["settings"]["sweep"].__setitem__("seed", 1), None,
                 ["seed: settings sweep.seed expected 0 (as RUN_DIR 1), got 1"]),
        "levels": (lambda r: r["data"].__setitem__("snrs", [-5.0, 5.0, 20.0]), None,
                   ["levels: results data.snrs expected [-5.0, 5.0, 15.0] (as RUN_DIR 1), got [-5.0, 5.0, 20.0]"]),
        "data": (lambda r: (r["data"].__setitem__("noises", ["hum"]),
                            r["settings"]["data"].__setitem__("duration", 4.0)), None,
                 ["data: results data.noises expected [\"brown\", \"hum\", \"white\"] (as RUN_DIR 1), got [\"hum\"]",
                  "data: settings data.duration expected 10.0 (as RUN_DIR 1), got 4.0"]),
        "store": (None, lambda m: m["mixing"].__setitem__("seed", 3),
                  ["seed: store mixing.seed expected 0 (as RUN_DIR 1), got 3"]),
    }
    edit, edit_manifest, words = edits[what]
    other = _copy_run(rb, tmp_path / "other", edit, edit_manifest)
    with pytest.raises(UserError) as exc:
        run([ra, other], tmp_path / "cmp")
    msg = str(exc.value)
    assert "RUN_DIR 2" in msg and str(other) in msg and "same data, levels and seeds" in msg
    for w in words:
        assert w in msg, (w, msg)
    assert not (tmp_path / "cmp" / "results.json").exists()


def test_refuses_bad_arguments(runs, tmp_path):
    from jaxprobe.studies.compare import CompareError, run

    ra, rb, _ = runs
    with pytest.raises(CompareError, match="at least 2 RUN_DIRs; got 1"):
        run([ra], tmp_path / "c")
    with pytest.raises(CompareError, match="RUN_DIR 2 .* is the same folder as RUN_DIR 1"):
        run([ra, ra], tmp_path / "c")
    with pytest.raises(CompareError, match="results.json does not exist|holding results.json"):
        run([ra, tmp_path], tmp_path / "c")
    with pytest.raises(CompareError, match="one label per RUN_DIR: expected 2, got 1"):
        run([ra, rb], tmp_path / "c", labels=["x"])
    with pytest.raises(CompareError, match="protocol='centroid'"):
        run([ra, rb], tmp_path / "c", protocol="centroid")  # the runs have the utterance protocol only
    shutil.copytree(rb, tmp_path / "nostore")
    shutil.rmtree(tmp_path / "nostore" / "store")
    with pytest.raises(CompareError, match="activation store of run 'toyb' .* is missing"):
        run([ra, tmp_path / "nostore"], tmp_path / "c")


def test_cli_compare(runs, tmp_path, capsys):
    from jaxprobe.cli import main

    ra, rb, _ = runs
    assert main(["compare", str(ra), str(rb), "--out", str(tmp_path / "c"), "--labels", "A", "B",
                 "--estimator", "debiased", "--inputs", "clean", "all", "--permutations", "50", "--formats", "png"]) == 0
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    clean, rec = res["cross_cka"]
    assert (clean["inputs"], clean["n_inputs"], clean["n_permutations"], rec["inputs"]) == ("clean", 5, 120, "all")
    assert (tmp_path / "c" / "figures" / "cross_cka_A_B_all.png").is_file()
    # all inputs: 5 utterances x (clean + 3 noises x 3 SNRs); 50 random orders plus the observed one
    assert (rec["a"], rec["b"], rec["estimator"], rec["n_inputs"], rec["n_permutations"]) == ("A", "B", "debiased", 50, 51)
    assert not rec["exhaustive"]
    capsys.readouterr()
    assert main(["compare", str(ra), str(ra), "--out", str(tmp_path / "d")]) == 2
    assert "is the same folder as RUN_DIR 1" in capsys.readouterr().err


def test_report_rerenders_from_results_json(compared, tmp_path):
    """`python -m jaxprobe.report` re-renders a comparison from its results.json alone."""
    from jaxprobe.report.__main__ import main

    out, _, res = compared
    assert main([str(out / "results.json"), "--out", str(tmp_path / "r"), "--no-pdf"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert md == (out / "report.md").read_text()  # paths in it are relative to its folder
    assert (tmp_path / "r" / "figures" / "cross_cka_toya_toyb_clean.png").is_file()


def test_cross_grams_one_program_equals_cka_matrix_path_and_words_bad_layers():
    """The cross-model Grams and matrix in one program: bit-equal to normed_grams and
    cka_matrix's product; a non-finite or constant layer raises cka_matrix's errors."""
    import jaxprobe
    from jaxprobe._cka import normed_grams
    from jaxprobe.studies.compare import _cross_grams

    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((9, 40)).astype(np.float32) + 0.5 for _ in range(3)]
    ys = [rng.standard_normal((9, 40)).astype(np.float32) for _ in range(2)]
    for deb in (False, True):
        gx, gy, m = _cross_grams(xs, ys, debiased=deb)
        wx, wy = normed_grams(xs, debiased=deb), normed_grams(ys, debiased=deb)
        np.testing.assert_array_equal(np.asarray(gx), np.asarray(wx))
        np.testing.assert_array_equal(np.asarray(gy), np.asarray(wy))
        np.testing.assert_array_equal(np.asarray(m), np.asarray(wx.reshape(3, 81) @ wy.reshape(2, 81).T))
        np.testing.assert_allclose(np.asarray(m), np.asarray(jaxprobe.cka_matrix(xs, ys, debiased=deb)), atol=1e-6)
    bad = [y.copy() for y in ys]
    bad[1][2, 3] = np.nan
    with pytest.raises(ValueError, match=r"'Xs\[1\]' parameter of cka_matrix must be finite"):
        _cross_grams(xs, bad, debiased=False)
    flat = [x.copy() for x in xs]
    flat[2][:] = 3.0
    with pytest.raises(ValueError, match=r"'Xs\[2\]' parameter of cka_matrix is a constant representation"):
        _cross_grams(flat, ys, debiased=False)
    with pytest.raises(ValueError, match=r"n = 3 samples; the debiased estimator needs n >= 4"):
        _cross_grams([x[:3] for x in xs], [y[:3] for y in ys], debiased=True)
