"""The sweep study on the C50 (with the quality stage) and clipping axes, end to end on the real
MUSE checkpoint (from ../shared), at a test size: tiny embedded corpus, 2 utterances x 2 noise
types x 3 levels. (The SNR axis: tests/jaxprobe/test_sweep_e2e.py.)"""
import json

import numpy as np
import pytest
from tests.npz import load_npz

pytestmark = [pytest.mark.slow, pytest.mark.shared]

pytest.importorskip("pyroomacoustics")

LEVELS = {"c50": [4, 12, 20], "clipping": [1.0, 0.3, 0.05]}


def _run(axis, quality, tmp_path_factory, request):
    from tests.conftest import MUSE_DIR

    if not (MUSE_DIR / "g_best").exists():
        pytest.skip(f"needs {MUSE_DIR}/g_best (../shared is absent on this machine)")
    from jaxprobe.studies.sweep import run

    root = tmp_path_factory.mktemp(axis)
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXPROBE_CACHE", str(root / "cache"))
    request.addfinalizer(mp.undo)
    cfg = {
        "name": f"e2e-{axis}",
        "model": {"batch_size": 1, "threads": 1},
        "data": {"corpus_size": "tiny", "speech_split": "all", "utterances": 2, "noises": ["pink", "babble"]},
        "sweep": {"axis": axis, "values": LEVELS[axis], "noise_snr": 20.0},
        "quality": {"enabled": quality},
        "cka": {"n_boot": 100, "protocols": ["utterance"], "estimators": ["biased"], "designs": ["hierarchical"]},
        "report": {"formats": ["png"]},
    }
    out = root / "out"
    run(cfg, out, checkpoint=str(MUSE_DIR / "g_best"))
    return cfg, out, run


@pytest.fixture(scope="module")
def c50_run(tmp_path_factory, request):
    return _run("c50", True, tmp_path_factory, request)


@pytest.fixture(scope="module")
def clipping_run(tmp_path_factory, request):
    return _run("clipping", False, tmp_path_factory, request)


def _common(out, axis):
    res = json.loads((out / "results.json").read_text())
    levels = [float(v) for v in LEVELS[axis]]
    assert res["data"]["axis"] == axis and res["data"]["levels"] == levels and "snrs" not in res["data"]
    for r in res["cka"]:
        assert r["axis"] == axis and r["level"] in levels and "snr" not in r and np.isfinite(r["estimate"])
    for r in res["regression"]:
        assert r["axis"] == axis and r["level"] == "all"
    from torch_bridge.store import open_store

    idx = open_store(out / res["settings"]["store"]).index()
    stored = {float(v) for v, n in zip(idx.condition_field(axis), idx.condition_field("noise")) if n != "clean"}
    assert stored == set(levels)
    html = (out / "report.html").read_text()
    name = {"c50": "C50", "clipping": "clipping level"}[axis]
    assert f"across {name} levels" in html and "input SNR" not in html
    return res


def test_c50_sweep_with_quality(c50_run):
    cfg, out, _ = c50_run
    res = _common(out, "c50")
    q = res["quality"]
    assert {"model", "axis", "level", "noise", "metric", "input", "estimate", "low", "high"} <= set(q[0])
    pooled = {(r["metric"], r["input"], r["level"]): r for r in q if r["noise"] == "all"}
    assert len(pooled) == 3 * 2 * 3
    vals = load_npz(out / "quality_values.npz")
    for (m, inp, lv), r in pooled.items():
        v = vals[f"{m}__{inp}"][:, LEVELS["c50"].index(lv)]
        assert r["estimate"] == pytest.approx(np.nanmean(v), rel=1e-5)
        assert r["low"] <= r["estimate"] <= r["high"]
        assert r["n"] + r["n_excluded"] == 4
    # reverberation lowers the noisy input's STOI: the most reverberant level is the worst
    stoi = [pooled[("stoi", "noisy", float(lv))]["estimate"] for lv in LEVELS["c50"]]
    assert stoi[0] < stoi[-1]
    corr = res["correlations"]
    assert len(corr) == 24 * 6 * 4  # layers x (3 metrics x enhanced/improvement) x (pooled + 3 levels)
    for r in corr:
        assert {"layer", "block", "metric", "level", "rho", "low", "high"} <= set(r)
        if r["rho"] is not None:
            assert -1 <= r["low"] <= r["rho"] <= r["high"] <= 1 or r["n_degenerate"] > 0
    assert (out / "figures/quality_vs_level.png").stat().st_size > 0
    assert (out / "figures/quality_correlations.png").stat().st_size > 0


def test_c50_rerun_reuses_stages(c50_run, capsys):
    cfg, out, run = c50_run
    from tests.conftest import MUSE_DIR

    capsys.readouterr()
    run(cfg, out, checkpoint=str(MUSE_DIR / "g_best"))
    log = capsys.readouterr().out
    assert "enhancing 0 of 2 utterances" in log and "analysis: cached" in log


def test_clipping_sweep(clipping_run):
    cfg, out, _ = clipping_run
    res = _common(out, "clipping")
    assert "quality" not in res
    mean = {lv: np.mean([r["estimate"] for r in res["cka"] if r["level"] == lv and r["protocol"] == "utterance"
                         and r["estimator"] == "biased"]) for lv in (1.0, 0.05)}
    assert mean[0.05] < mean[1.0]  # clipping at 5 % of the peak moves the representations away from clean
