"""The demo's tail side by side: the sweep's diffusion maps beside its CKA, the comparison in the
GTCRN child beside MUSE's report. The side-by-side paths give the sequential path's results, a
failure of a side task surfaces with its own message, and one worker keeps everything sequential."""
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jaxprobe.studies.sweep import runner
from jaxprobe.studies.sweep.config import load_sweep_config
from tests.jaxprobe.test_sweep_analysis import SNRS, _synthetic
from tests.jaxprobe.test_sweep_cache import _write_store


@pytest.fixture()
def small(tmp_path, rng):
    layers, noisy, clean, noises = _synthetic(rng, K=2, U=3)
    store = tmp_path / "store"
    _write_store(store, layers, noisy, clean, noises)
    cfg = load_sweep_config({"sweep": {"snrs": [float(s) for s in SNRS]},
                             "cka": {"n_boot": 20, "estimators": ["biased"], "designs": ["noise"]},
                             "diffusion": {"inter_snrs": [float(s) for s in SNRS], "n_boot": 20},
                             "report": {"formats": ["png"]}})
    return cfg, store


def _without_timings(res):
    res = json.loads(json.dumps(res))
    res["settings"].pop("timings_s")
    return res


def test_side_by_side_analysis_and_report_equal_the_sequential_ones(small, tmp_path, capsys):
    """The maps beside the CKA and the CKA figures drawn beside the maps: every number and every
    PNG byte of the sequential path's, and the report takes the early figures as drawn."""
    from jaxprobe.report import write_report

    cfg, store = small
    got = {}
    for side in (False, True):
        out = tmp_path / f"out-{side}"
        out.mkdir()
        early = {}
        res = runner._analysis_stage(cfg, store, out, "synthetic", side_by_side=side, early_figures=early)
        assert bool(early) is side and all(f.png.is_file() for f in early.values())
        write_report(res, out, formats=("png",), drawn=early, log=print)
        got[side] = (res, np.load(out / "cka_values.npz"), out)
    log = capsys.readouterr().out
    assert "beside the CKA" in log and "drawn beside the analysis, drawing 3" in log
    (seq, seq_arr, seq_out), (par, par_arr, par_out) = got[False], got[True]
    assert par["diffusion"] and _without_timings(par) == _without_timings(seq)  # every number equal, bit for bit
    assert sorted(par_arr.files) == sorted(seq_arr.files)
    for k in seq_arr.files:
        np.testing.assert_array_equal(par_arr[k], seq_arr[k], err_msg=k)
    pngs = sorted(p.name for p in (seq_out / "figures").glob("*.png"))
    assert len(pngs) >= 6 and pngs == sorted(p.name for p in (par_out / "figures").glob("*.png"))
    for name in pngs:
        assert (par_out / "figures" / name).read_bytes() == (seq_out / "figures" / name).read_bytes(), name
    assert ((par_out / "report.md").read_text().split("timings_s")[0]
            == (seq_out / "report.md").read_text().split("timings_s")[0])


def test_a_failing_side_task_surfaces_with_its_own_message(small, tmp_path, monkeypatch):
    cfg, store = small
    from jaxprobe.studies.sweep import diffusion

    def broken(*a, **k):
        raise FloatingPointError("diffusion map of layer x: not finite (injected)")

    monkeypatch.setattr(diffusion, "analyze_diffusion", broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FloatingPointError, match=r"diffusion map of layer x: not finite \(injected\)"):
        runner._analysis_stage(cfg, store, out, "synthetic", side_by_side=True)
    assert not (out / "results.json").exists()  # nothing half-written


def test_cka_failure_is_raised_after_the_side_task_ends():
    ended = threading.Event()

    def slow_diffusion():
        time.sleep(0.3)
        ended.set()
        return {}

    def bad_cka():
        raise ValueError("CKA: constant representation (injected)")

    with pytest.raises(ValueError, match="constant representation"):
        runner._cka_beside_diffusion(bad_cka, slow_diffusion)
    assert ended.is_set()  # no diffusion thread left running behind the error
    cka_part, t1, diff_part, t2 = runner._cka_beside_diffusion(lambda: {"cka": 1}, lambda: {"d": 2})
    assert (cka_part, diff_part) == ({"cka": 1}, {"d": 2}) and t2 >= t1
    ended.clear()

    def bad_figures(cka_part):
        raise OSError("figures/fig2.png: disk full (injected)")

    with pytest.raises(OSError, match="disk full"):  # the step after the CKA, beside the maps, too
        runner._cka_beside_diffusion(lambda: {}, slow_diffusion, then=bad_figures)
    assert ended.is_set()


@pytest.mark.parametrize("workers, side", [(1, False), (2, True)])
def test_one_worker_keeps_the_sweep_analysis_sequential(tmp_path, monkeypatch, workers, side):
    seen = {}
    monkeypatch.setattr(runner, "_dump_stage", lambda cfg, out, ckpt: (tmp_path / "store", "synthetic", []))

    def analyse(cfg, out, ckpt, store_dir, desc, *, side_by_side, early_figures):
        seen["side"] = side_by_side
        return {"r": 1}

    import jaxprobe.report

    monkeypatch.setattr(runner, "_analyse_repairing", analyse)
    monkeypatch.setattr(jaxprobe.report, "write_report", lambda results, out, **k: {})
    calls = []
    runner.run("demo", tmp_path / "o", model="gtcrn", workers=workers, on_results=calls.append)
    assert seen["side"] is side and calls == [{"r": 1}]


def _fake_steps(monkeypatch, calls):
    from jaxprobe.studies import compare, sweep

    def fake_sweep(config, out, *, checkpoint=None, model=None, workers=None, on_results=None):
        calls.append(("sweep", model, workers, on_results is not None))
        Path(out).mkdir(parents=True, exist_ok=True)
        return {"results": f"{out}/results.json"}

    def fake_compare(runs, out, *, inputs=()):
        calls.append(("compare", [str(r) for r in runs], tuple(inputs)))
        return {"results": f"{out}/results.json"}

    monkeypatch.setattr(sweep, "run", fake_sweep)
    monkeypatch.setattr(compare, "run", fake_compare)


def test_demo_with_one_worker_runs_every_step_in_turn_in_one_process(tmp_path, monkeypatch, capsys):
    from jaxprobe import _cmd_demo, cli

    calls = []
    _fake_steps(monkeypatch, calls)
    monkeypatch.setattr(_cmd_demo, "_start_sweep_process", lambda *a, **k: pytest.fail("no child at 1 worker"))
    assert cli.main(["demo", "--workers", "1", "--out", str(tmp_path / "d")]) == 0
    d = tmp_path / "d"
    assert calls == [("sweep", "muse", 1, False), ("sweep", "gtcrn", 1, False),
                     ("compare", [str(d / "muse"), str(d / "gtcrn")], ("clean", "all"))]


@pytest.mark.parametrize("said, compared", [("compare\n", True), ("", False)])
def test_the_child_compares_only_when_told(tmp_path, monkeypatch, said, compared):
    from jaxprobe import _cmd_demo

    calls = []
    _fake_steps(monkeypatch, calls)
    monkeypatch.setattr(sys, "stdin", io.StringIO(said))
    g, c = tmp_path / "gtcrn", tmp_path / "compare"
    assert _cmd_demo._side_main([str(g), "", "gtcrn", str(c), str(tmp_path / "muse"), str(g)]) == 0
    assert calls[0] == ("sweep", "gtcrn", 1, False) and json.loads((g / ".demo-outputs.json").read_text())
    assert (len(calls) == 2) is compared and (c / ".demo-outputs.json").is_file() is compared
    if compared:
        assert calls[1] == ("compare", [str(tmp_path / "muse"), str(g)], ("clean", "all"))
        assert "demo: comparing muse and gtcrn" in (tmp_path / "compare.log").read_text()


def test_a_failed_comparison_in_the_child_is_named_with_its_log(tmp_path):
    from jaxprobe._cmd_demo import _finish_sweep_process

    out = tmp_path / "gtcrn"
    out.mkdir()
    (out / ".demo-outputs.json").write_text("{}")  # its sweep had finished
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"],
                             stdin=subprocess.PIPE, text=True)
    child.log, child.out, child.compare_log = tmp_path / "gtcrn.log", out, tmp_path / "compare.log"
    child.log.write_text("sweep ok\n")
    child.compare_log.write_text("CompareError: the stores hold different inputs (injected)\n")
    with pytest.raises(RuntimeError, match=r"(?s)The comparison \(run in the GTCRN sweep's child process.*exit "
                                           r"status 3.*compare\.log.*different inputs \(injected\)"):
        _finish_sweep_process(child)
