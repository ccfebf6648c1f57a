"""The hear study's listening test (the ASR paper's Fig. 2b): a self-contained page and its example.

``listening_test.html`` plays triplets of reconstructions per cell (model, regime, layer,
condition): two utterances of different speakers (A, B), then a third (X) by one of them; which
speaker is X? The audio is the study's own wavs (``wavs/<model>-<regime>/<condition>/<utt>_<layer>.wav``,
the speakers from ``listen/<model>-<regime>-items.npz``), embedded once each as data URIs, so the
page needs nothing but a browser and sends nothing anywhere. The triplets are chosen here,
deterministically: per cell, A and B are the first utterance of the first two speakers with wavs,
X each further utterance of either of them (at most ``triplets_per_cell``, alternating A and B).
The page shuffles the triplets and swaps A/B, seeded by the listener's id (the same id, the same
order), and exports the answers as the CSV ``jaxprobe hear-score`` reads
(:data:`jaxprobe.report.hear_score.COLUMNS`); ``answer`` and ``truth`` refer to the order played.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from jaxprobe.errors import DataError
from jaxprobe.report.hear_score import COLUMNS
from jaxprobe.report.tables import atomic_write_text

PAGE = "listening_test.html"
EXAMPLE = "listening_test_answers_example.csv"
REFERENCES = ("audio", "mel")  # the two reference rows come before the layers


def _speakers(source: Path, tag: str) -> dict[str, str]:
    path = source / "listen" / f"{tag}-items.npz"
    if not path.is_file():
        raise DataError(f"The listening test needs {str(path)!r} (utterance -> speaker); run the hear study's listen stage.")
    with np.load(path) as z:
        return {str(u): str(s) for u, s in zip(z["utterance"], z["speaker"])}


def choose_triplets(source, results: dict | None = None, *, conditions=("clean",),
                    triplets_per_cell: int = 2) -> tuple[list[dict], list[Path]]:
    """The triplets (dicts with id, model, regime, layer, condition, a, b, x as indices into the
    returned wav list, truth 'A'/'B') of every cell whose wavs hold two speakers, one with two
    utterances. Deterministic: sorted speakers and utterance ids."""
    source = Path(source)
    if triplets_per_cell < 1:
        raise ValueError(f"triplets_per_cell must be >= 1; got {triplets_per_cell}.")
    root = source / "wavs"
    if not root.is_dir():
        raise DataError(f"No wavs in {str(root)!r}: the listening test needs the listen stage's wavs (listen.wav_examples > 0).")
    layer_order = {}
    for model, layers in ((results or {}).get("layers") or {}).items():
        layer_order[model] = list(REFERENCES) + [e["label"] for e in layers]
    triplets, wavs = [], []
    for tag_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        model, _, regime = tag_dir.name.rpartition("-")
        spk = _speakers(source, tag_dir.name)
        for cond in conditions:
            cdir = tag_dir / cond
            if not cdir.is_dir():
                continue
            cells: dict[str, dict[str, Path]] = {}
            for p in sorted(cdir.glob("*.wav")):
                utt, _, label = p.stem.rpartition("_")
                if utt not in spk:
                    raise DataError(f"{str(p)!r}: utterance {utt!r} is not in listen/{tag_dir.name}-items.npz.")
                cells.setdefault(label, {})[utt] = p
            order = layer_order.get(model) or sorted(cells)
            for label in [lab for lab in order if lab in cells] + sorted(set(cells) - set(order)):
                by_spk: dict[str, list[str]] = {}
                for u in sorted(cells[label]):
                    by_spk.setdefault(spk[u], []).append(u)
                speakers = sorted(by_spk)[:2]
                if len(speakers) < 2 or max(len(by_spk[s]) for s in speakers) < 2:
                    continue
                a, b = by_spk[speakers[0]][0], by_spk[speakers[1]][0]
                xs = [[(u, "A") for u in by_spk[speakers[0]][1:]], [(u, "B") for u in by_spk[speakers[1]][1:]]]
                picks = []  # alternate A and B so that both answers occur
                while (xs[0] or xs[1]) and len(picks) < triplets_per_cell:
                    for q in xs:
                        if q and len(picks) < triplets_per_cell:
                            picks.append(q.pop(0))
                idx = {}
                for u in [a, b] + [u for u, _ in picks]:
                    idx[u] = len(wavs)
                    wavs.append(cells[label][u])
                for k, (x, truth) in enumerate(picks):
                    triplets.append({"id": f"{tag_dir.name}/{label}/{cond}/{k}", "model": model, "regime": regime,
                                     "layer": label, "condition": cond, "a": idx[a], "b": idx[b], "x": idx[x],
                                     "truth": truth})
    if not triplets:
        raise DataError(f"No cell in {str(root)!r} (conditions {list(conditions)}) has wavs of two speakers with two "
                        "utterances of one of them; no triplet can be formed.")
    return triplets, wavs


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def example_answers(triplets: list[dict], listener: str = "example") -> list[dict]:
    """A made-up listener's answers in the export's format: wrong on each cell's first triplet,
    right on the others (so a cell of two triplets scores 50 %)."""
    rows, seen = [], set()
    for t in triplets:
        cell = (t["model"], t["regime"], t["layer"], t["condition"])
        wrong = cell not in seen
        seen.add(cell)
        answer = {"A": "B", "B": "A"}[t["truth"]] if wrong else t["truth"]
        rows.append({"listener": listener, "triplet": t["id"], "model": t["model"], "regime": t["regime"],
                     "layer": t["layer"], "condition": t["condition"], "answer": answer, "truth": t["truth"]})
    return rows


def write_listening_test(out_dir, results: dict | None = None, *, source=None, conditions=("clean",),
                         triplets_per_cell: int = 2) -> dict[str, Path]:
    """``listening_test.html`` and ``listening_test_answers_example.csv`` in ``out_dir`` from the
    wavs under ``source`` (default ``out_dir``)."""
    out = Path(out_dir)
    triplets, wavs = choose_triplets(out if source is None else source, results, conditions=conditions,
                                     triplets_per_cell=triplets_per_cell)
    audio = ["data:audio/wav;base64," + base64.b64encode(p.read_bytes()).decode("ascii") for p in wavs]
    data = json.dumps({"columns": list(COLUMNS), "audio": audio, "triplets": triplets}, separators=(",", ":"))
    page = _PAGE.replace("__DATA__", data.replace("</", "<\\/")).replace("__N__", str(len(triplets)))
    page = page.replace("__COLUMNS__", html.escape(", ".join(COLUMNS)))
    return {"listening_test": atomic_write_text(out / PAGE, page),
            "listening_test_example": atomic_write_text(out / EXAMPLE, _csv_text(example_answers(triplets)))}


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; media-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>Listening test: which speaker is X?</title>
<style>
body{font-family:system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.4em}.small{font-size:.85em;color:#555}
.box{border:1px solid #ccc;border-radius:6px;padding:1em 1.2em;margin:1em 0}
.play{display:flex;gap:1em;margin:1em 0}
.slot{flex:1;text-align:center;padding:.8em 0;border:2px solid #ccc;border-radius:6px;font-size:1.5em;font-weight:600;color:#999}
.slot.on{border-color:#1f77b4;color:#1f77b4;background:#eef5fb}.slot.done{color:#222}
button{font-size:1em;padding:.5em 1.1em;margin-right:.5em;border-radius:5px;border:1px solid #888;background:#f6f6f6;cursor:pointer}
button:disabled{opacity:.4;cursor:default}
.bar{height:8px;background:#eee;border-radius:4px;overflow:hidden}.bar>div{height:100%;background:#1f77b4;width:0}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3em;background:#f4f4f4;font-size:.9em}
input{font-size:1em;padding:.3em}
</style></head><body>
<h1>Listening test: which speaker is X?</h1>
<p>Each of the __N__ triplets plays two utterances by two different speakers, <b>A</b> and <b>B</b>,
then a third, <b>X</b>, spoken by one of them. Say whether X is speaker A or speaker B. The audio is
speech reconstructed from a speech recogniser's layers, so it can sound rough: judge the voice, not
the quality. Use headphones in a quiet room.</p>
<p class="small">Keys: <kbd>1</kbd> or <kbd>A</kbd>: X is speaker A; <kbd>2</kbd> or <kbd>B</kbd>: speaker B;
<kbd>Space</kbd>: play the triplet again. Answers are kept only in this page (nothing is sent anywhere);
download them as CSV at the end (or at any time) and give the file to the experimenter, who scores it with
<code>jaxprobe hear-score</code>.</p>
<div id="start" class="box">
<label>Your listener id (a name or code; it also fixes your order of the triplets):
<input id="listener" autocomplete="off"></label>
<button id="go">Start</button> <span class="small">(<kbd>Enter</kbd>)</span>
</div>
<div id="trial" class="box" hidden>
<div id="progress">Triplet 0 of __N__</div>
<div class="bar"><div id="bar"></div></div>
<div class="play"><div class="slot" id="slotA">A</div><div class="slot" id="slotB">B</div><div class="slot" id="slotX">X</div></div>
<div id="status" class="small">&nbsp;</div>
<p><button id="ansA" disabled>X is A (1)</button><button id="ansB" disabled>X is B (2)</button>
<button id="replay">Play again (Space)</button></p>
</div>
<div id="end" class="box" hidden><p><b>Done, thank you.</b> Please download your answers and give the file to the experimenter.</p></div>
<p><button id="export" disabled>Download answers (CSV)</button> <span id="count" class="small">0 answers</span></p>
<p class="small">Export columns: __COLUMNS__ (answer and truth: A or B, as played).</p>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = id => document.getElementById(id);
const S = {listener: "", order: [], swap: [], i: 0, answers: [], heardX: false, token: 0, audio: new Audio()};
window.listeningTest = S;  // for the automated browser check

function hash32(s) {  // FNV-1a
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
  return h >>> 0;
}
function rng(seed) {  // mulberry32
  return function () {
    seed = (seed + 0x6D2B79F5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function start() {
  const id = $("listener").value.trim();
  if (!id) { $("listener").focus(); return; }
  S.listener = id;
  const r = rng(hash32(id));
  S.order = D.triplets.map((_, k) => k);
  for (let k = S.order.length - 1; k > 0; k--) { const j = Math.floor(r() * (k + 1)); [S.order[k], S.order[j]] = [S.order[j], S.order[k]]; }
  S.swap = S.order.map(() => r() < 0.5);
  $("start").hidden = true; $("trial").hidden = false;
  show();
}
function current() { const k = S.order[S.i]; const t = D.triplets[k];
  const sw = S.swap[S.i];
  return {t: t, a: sw ? t.b : t.a, b: sw ? t.a : t.b, truth: sw ? (t.truth === "A" ? "B" : "A") : t.truth}; }
function show() {
  $("progress").textContent = "Triplet " + (S.i + 1) + " of " + D.triplets.length;
  $("bar").style.width = (100 * S.i / D.triplets.length) + "%";
  play();
}
function mark(on) { for (const s of ["A", "B", "X"]) { const el = $("slot" + s);
  el.classList.toggle("on", s === on); if (s === on) el.classList.add("done"); } }
function sleep(ms) { return new Promise(res => setTimeout(res, ms)); }
function playOne(src, token) {
  return new Promise((res, rej) => {
    const a = S.audio;
    a.onended = () => res(); a.onerror = () => rej(new Error("audio could not be played"));
    a.src = src;
    a.play().catch(rej);
  });
}
async function play() {
  const token = ++S.token; const c = current();
  S.heardX = false; S.audio.pause();
  for (const s of ["A", "B", "X"]) $("slot" + s).classList.remove("on", "done");
  $("ansA").disabled = $("ansB").disabled = true;
  $("status").textContent = "Playing…";
  try {
    for (const [slot, idx] of [["A", c.a], ["B", c.b], ["X", c.t.x]]) {
      if (token !== S.token) return;
      mark(slot);
      if (slot === "X") { S.heardX = true; $("ansA").disabled = $("ansB").disabled = false; }
      await playOne(D.audio[idx], token);
      if (token !== S.token) return;
      if (slot !== "X") await sleep(400);
    }
    mark("");
    $("status").textContent = "Which speaker is X? Press 1 (A) or 2 (B); Space plays the triplet again.";
  } catch (e) {
    if (token === S.token) $("status").textContent = "Playback failed (" + e.message + "); press Space to retry.";
  }
}
function answer(letter) {
  if (S.i >= D.triplets.length || !S.heardX) return;
  const c = current(), t = c.t;
  S.answers.push({listener: S.listener, triplet: t.id, model: t.model, regime: t.regime, layer: t.layer,
                  condition: t.condition, answer: letter, truth: c.truth});
  $("count").textContent = S.answers.length + (S.answers.length === 1 ? " answer" : " answers");
  $("export").disabled = false;
  S.i += 1;
  if (S.i < D.triplets.length) { show(); return; }
  ++S.token; S.audio.pause();
  $("bar").style.width = "100%";
  $("trial").hidden = true; $("end").hidden = false;
}
function field(v) { v = String(v); return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function csvText() {
  return [D.columns.join(",")].concat(S.answers.map(r => D.columns.map(c => field(r[c])).join(","))).join("\n") + "\n";
}
function exportCsv() {
  if (!S.answers.length) return;
  const url = URL.createObjectURL(new Blob([csvText()], {type: "text/csv"}));
  const a = document.createElement("a");
  a.href = url; a.download = "listening_test_answers_" + S.listener.replace(/[^A-Za-z0-9_.-]+/g, "_") + ".csv";
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  S.exported = S.answers.length;
}
S.csvText = csvText;
S.exported = 0;
window.addEventListener("beforeunload", e => { if (S.answers.length > S.exported) { e.preventDefault(); e.returnValue = ""; } });
$("go").onclick = start;
$("ansA").onclick = () => answer("A"); $("ansB").onclick = () => answer("B");
$("replay").onclick = () => { if (!$("trial").hidden) play(); };
$("export").onclick = exportCsv;
document.addEventListener("keydown", e => {
  if (!$("start").hidden) { if (e.key === "Enter") start(); return; }
  if ($("trial").hidden) return;
  const k = e.key.toLowerCase();
  if (k === "1" || k === "a") answer("A");
  else if (k === "2" || k === "b") answer("B");
  else if (k === " ") { e.preventDefault(); play(); }
  else return;
});
$("listener").focus();
</script>
</body></html>
"""
