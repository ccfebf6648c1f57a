"""The hear study's listening test page on a tiny synthetic study folder: self-contained HTML with
the expected triplets, an example CSV that hear-score reads with the error rate it was built with,
and (where Debian's chromium is installed) the page driven in a real headless browser."""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from jaxprobe.errors import DataError
from jaxprobe.report.hear_score import COLUMNS, read_answers, score_answers
from jaxprobe.report.listening import choose_triplets, write_listening_test

ROOT = Path(__file__).resolve().parents[2]
# speaker -> utterances; s1 has two, s2 two, s3 one (never used: only the first two speakers)
SPEAKERS = {"u1": "s1", "u2": "s1", "u3": "s2", "u4": "s2", "u5": "s3"}
LAYERS = {"vgg_lstm": ["conv1", "blstm1"], "lstm": ["lstm1"]}


def _study(tmp_path: Path, seconds: float = 0.25) -> tuple[Path, dict]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    utts = sorted(SPEAKERS)
    for model, layers in LAYERS.items():
        for regime in ("baseline", "robust"):
            tag = f"{model}-{regime}"
            (tmp_path / "listen").mkdir(parents=True, exist_ok=True)
            np.savez(tmp_path / "listen" / f"{tag}-items.npz", utterance=np.array(utts * 2),
                     speaker=np.array([SPEAKERS[u] for u in utts] * 2), condition=np.array(["clean"] * 5 + ["0"] * 5))
            for cond in ("clean", "0"):
                d = tmp_path / "wavs" / tag / cond
                d.mkdir(parents=True)
                for u in utts[:4]:  # as the study writes them: the first two speakers' two utterances
                    for label in ["audio", "mel"] + layers:
                        sf.write(d / f"{u}_{label}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)), 16000,
                                 subtype="PCM_16")
    results = {"layers": {m: [{"label": lab} for lab in layers] for m, layers in LAYERS.items()}}
    return tmp_path, results


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.stack = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in ("meta", "input", "br"):
            self.stack.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def test_page_is_self_contained_with_the_expected_triplets(tmp_path):
    out, results = _study(tmp_path)
    paths = write_listening_test(out, results)
    page = paths["listening_test"].read_text()
    p = _Collect()
    p.feed(page)
    p.close()
    assert p.tags[0] == "html" and not p.stack, "unbalanced HTML"
    assert p.urls == [], f"the page references {p.urls}"
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I), "an external URL in the page"
    assert "fetch(" not in page and "XMLHttpRequest" not in page and "WebSocket" not in page
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    # per cell (model, regime, layer), clean only: A = u1 (s1), B = u3 (s2), X = u2 (truth A) and u4 (truth B)
    n_cells = sum(2 * (len(v) + 2) for v in LAYERS.values())
    assert len(data["triplets"]) == 2 * n_cells == 28
    assert len(data["audio"]) == 4 * n_cells  # each wav once
    assert page.count("data:audio/wav;base64,") == 4 * n_cells
    assert {t["condition"] for t in data["triplets"]} == {"clean"}
    assert sorted(t["truth"] for t in data["triplets"]) == ["A"] * n_cells + ["B"] * n_cells
    wav = base64.b64decode(data["audio"][0].split(",", 1)[1])
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    first = [t for t in data["triplets"] if t["model"] == "lstm" and t["regime"] == "baseline"]
    assert [t["layer"] for t in first] == ["audio", "audio", "mel", "mel", "lstm1", "lstm1"]  # the study's layer order
    assert data["columns"] == list(COLUMNS)
    # the example parses with hear-score's reader: wrong on each cell's first triplet, right on its second
    rows = read_answers([paths["listening_test_example"]])
    assert len(rows) == 2 * n_cells and {r["triplet"] for r in rows} == {t["id"] for t in data["triplets"]}
    scores = score_answers(rows, n_boot=50)
    assert len(scores) == n_cells and all(s["error_rate"] == 0.5 for s in scores)


def test_triplets_are_deterministic_and_conditions_selectable(tmp_path):
    out, results = _study(tmp_path)
    t1, w1 = choose_triplets(out, results, conditions=("clean", "0"), triplets_per_cell=1)
    t2, w2 = choose_triplets(out, results, conditions=("clean", "0"), triplets_per_cell=1)
    assert t1 == t2 and w1 == w2 and len(t1) == 2 * sum(2 * (len(v) + 2) for v in LAYERS.values())
    for t in t1:  # A and B are different speakers, X is one of them, as truth says
        spk = [SPEAKERS[Path(w1[t[k]]).stem.rpartition("_")[0]] for k in ("a", "b", "x")]
        assert spk[0] != spk[1] and spk[2] == spk["AB".index(t["truth"])]
        assert Path(w1[t["a"]]).parent.name == t["condition"] and Path(w1[t["x"]]).stem.endswith("_" + t["layer"])


def test_no_triplet_possible_is_an_error(tmp_path):
    out, results = _study(tmp_path)
    for p in (out / "wavs").rglob("u[34]_*.wav"):  # one speaker left
        p.unlink()
    with pytest.raises(DataError, match="two speakers"):
        write_listening_test(out, results)
    shutil.rmtree(out / "wavs")
    with pytest.raises(DataError, match="wav_examples"):
        write_listening_test(out, results)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed (make setup installs it)")
def test_page_in_headless_chromium(tmp_path):
    pytest.importorskip("websocket", reason="websocket-client (the dev extra) is not installed")
    spec = importlib.util.spec_from_file_location("check_listening_page", ROOT / "scripts" / "check_listening_page.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, _ = _study(tmp_path / "study", seconds=0.2)
    LAYERS_SMALL = {"lstm": ["lstm1"]}
    results = {"layers": {m: [{"label": lab} for lab in v] for m, v in LAYERS_SMALL.items()}}
    for d in (out / "wavs").iterdir():  # keep the test short: one recogniser
        if d.name != "lstm-robust":
            shutil.rmtree(d)
    paths = write_listening_test(out, results)
    r = mod.check_page(paths["listening_test"], tmp_path / "check")
    assert r["n_triplets"] == r["n_answers"] == 6 and r["n_wrong"] == 3
    assert r["requests"] and all(u.startswith(("file:", "data:", "blob:")) for u in r["requests"])
    assert len(r["ids"]) == 6 and {s["layer"] for s in r["scores"]} == {"audio", "mel", "lstm1"}
    assert all(p.stat().st_size > 5000 for p in r["screenshots"])
