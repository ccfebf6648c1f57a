"""`jaxprobe hear-score` on synthetic answers files with a known error rate."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from jaxprobe.report.hear_score import COLUMNS, read_answers, score_answers


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def _answers(rng, rate_of, n_listeners=6, n_triplets=40):
    """Every listener answers every triplet of every layer; in layer L exactly round(rate * n)
    of each listener's answers are wrong (positions drawn at random)."""
    rows = []
    for layer, rate in rate_of.items():
        for li in range(n_listeners):
            wrong = set(rng.choice(n_triplets, int(round(rate * n_triplets)), replace=False).tolist())
            for t in range(n_triplets):
                truth = "AB"[int(rng.integers(2))]
                answer = ("B" if truth == "A" else "A") if t in wrong else truth
                rows.append({"listener": f"L{li}", "triplet": f"{layer}-{t}", "model": "lstm", "regime": "robust",
                             "layer": layer, "condition": "clean", "answer": answer, "truth": truth})
    return rows


def test_known_error_rates_and_intervals(rng, tmp_path):
    rows = _answers(rng, {"blstm1": 0.1, "blstm3": 0.25, "blstm5": 0.5})
    recs = {r["layer"]: r for r in score_answers(read_answers([_write(tmp_path / "a.csv", rows)]), n_boot=500)}
    for layer, rate in (("blstm1", 0.1), ("blstm3", 0.25), ("blstm5", 0.5)):
        r = recs[layer]
        assert r["error_rate"] == pytest.approx(rate, abs=1e-12)  # exact: the file's share of wrong answers
        assert r["low"] < rate < r["high"] and r["high"] - r["low"] < 0.35
        assert (r["n_answers"], r["n_listeners"], r["n_triplets"]) == (240, 6, 40)
    assert recs["blstm1"]["high"] < recs["blstm5"]["low"]  # 10 % vs 50 %: the intervals separate


def test_interval_covers_the_true_rate_of_a_random_panel(tmp_path):
    """Answers drawn with a 30 % error probability: the 95 % interval covers 0.3 in most panels."""
    cover = 0
    for s in range(20):
        r = np.random.default_rng(s)
        rows = [{"listener": f"L{li}", "triplet": f"t{t}", "model": "m", "regime": "g", "layer": "x",
                 "condition": "clean", "truth": "A", "answer": "B" if r.random() < 0.3 else "A"}
                for li in range(5) for t in range(30)]
        rec = score_answers(rows, n_boot=400, seed=s)[0]
        cover += rec["low"] <= 0.3 <= rec["high"]
    assert cover >= 16


def test_cli_writes_table_and_figure_beside_the_judge(rng, tmp_path, capsys):
    from jaxprobe.cli import main

    rows = _answers(rng, {"blstm1": 0.2, "blstm5": 0.5}, n_listeners=3, n_triplets=10)
    a = _write(tmp_path / "a.csv", rows[: len(rows) // 2])
    b = _write(tmp_path / "b.csv", rows[len(rows) // 2:])
    results = {"probe": [{"model": "lstm", "regime": "robust", "layer": "blstm1", "condition": "clean", "eer": 12.5}],
               "reference": []}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "out"
    assert main(["hear-score", str(a), str(b), "--results", str(tmp_path / "results.json"), "--out", str(out),
                 "--n-boot", "200"]) == 0
    table = (out / "human_error.md").read_text()
    assert "| lstm | robust | blstm1 | clean | 20.0 [" in table and "| 12.5 |" in table
    assert (out / "human_error_per_layer.png").stat().st_size > 5000
    with open(out / "human_error.csv") as f:
        got = list(csv.DictReader(f))
    assert {g["layer"]: float(g["error_rate"]) for g in got} == {"blstm1": 0.2, "blstm5": 0.5}
    assert "blstm5" in capsys.readouterr().out


def test_bad_answers_file_is_one_line_exit_2(tmp_path, capsys):
    from jaxprobe.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("listener,triplet,model,regime,layer,condition,answer,truth\nL0,t0,m,g,x,clean,C,A\n")
    assert main(["hear-score", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "line 2: column 'answer' must be A or B" in capsys.readouterr().err
    (tmp_path / "short.csv").write_text("listener,answer\nL0,A\n")
    assert main(["hear-score", str(tmp_path / "short.csv"), "--out", str(tmp_path / "o")]) == 2
