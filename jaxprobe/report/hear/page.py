"""The hear report's pages: its sections in reading order, rendered to report.md and to a
self-contained report.html by :mod:`jaxprobe.report.html` (`render_md`, `render_html`), with the CSV tables and figures."""
from __future__ import annotations

import os
from pathlib import Path

from jaxprobe.report.hear import _records as R
from jaxprobe.report.hear.figures import render_hear_figures
from jaxprobe.report.hear.summary import findings
from jaxprobe.report.hear.tables import (asr_rows, contrast_rows, data_rows, metric_rows, reference_rows,
                                         settings_rows, table2_rows, write_hear_csvs)
from jaxprobe.report.html import render_html, render_md
from jaxprobe.report.tables import atomic_write_text


def _human_sections(results, figures) -> list:
    """The human speakers of the listening set, apart from the synthetic voices (none: [])."""
    hv = R.human_view(results)
    if hv is None:
        return []
    note = results.get("human_note") or ""
    return [("list", "Human speakers of the listening set (reported apart)", [note] + findings(hv, part="human")),
            ("figures", "Figures (human speakers)", figures),
            ("table", "Table 2 (human speakers) — EER (%) on speech reconstructed from each layer", table2_rows(hv)),
            ("table", "Human speakers: EER % of the reconstructions ([95 % bootstrap interval, utterances resampled])",
             metric_rows(hv, "eer", 1)),
            *[("table", f"Human speakers: normalised minDCF, P_target {p:g} ([95 % bootstrap interval])",
               metric_rows(hv, f"min_dcf_{p:g}", 3)) for p in _dcf_priors(hv)],
            ("table", "Human speakers: second judge (x-vector) EER % ([95 % bootstrap interval])",
             metric_rows(hv, "eer_xvector", 1)),
            ("table", "Human speakers: STOI (mean [95 % bootstrap interval over utterances])", metric_rows(hv, "stoi")),
            ("table", "Human speakers: wide-band PESQ (mean [95 % bootstrap interval over utterances])",
             metric_rows(hv, "pesq")),
            ("table", "Human speakers: robust − baseline STOI, paired ([95 % bootstrap interval])", contrast_rows(hv)),
            ("table", "Human speakers: robust − baseline EER (points), paired ([95 % bootstrap interval])",
             contrast_rows(hv, "eer_robust_minus_baseline", 1)),
            ("table", "Human speakers: references", reference_rows(hv))]


def _sections(results, figures):
    human_figs = [f for f in figures if f.key.endswith("_human")]
    figures = [f for f in figures if not f.key.endswith("_human")]
    return [("list", "Findings", findings(results)),
            ("table", "Data", data_rows(results)),
            ("table", "Recognisers: CER / WER (greedy CTC decoding, jiwer)", asr_rows(results)),
            ("figures", "Figures", figures),
            ("table", "Table 2 — speaker-verification EER (%) on speech reconstructed from each layer", table2_rows(results)),
            ("table", "Speaker-verification EER % of the reconstructions ([95 % bootstrap interval, utterances "
                      "resampled])", metric_rows(results, "eer", 1)),
            *[("table", f"Normalised minDCF of the reconstructions, P_target {p:g}, C_miss = C_fa = 1 ([95 % bootstrap "
                        "interval, the EER's resamples]; 1 = no better than a trivial system)",
               metric_rows(results, f"min_dcf_{p:g}", 3)) for p in _dcf_priors(results)],
            ("table", "Second judge: x-vector (trained here on the synthetic training voices) EER % of the "
                      "reconstructions ([95 % bootstrap interval])", metric_rows(results, "eer_xvector", 1)),
            ("table", "STOI of the reconstructions (mean [95 % bootstrap interval over utterances])", metric_rows(results, "stoi")),
            ("table", "Wide-band PESQ of the reconstructions (mean over the items PESQ could score [95 % bootstrap "
                      "interval over utterances])", metric_rows(results, "pesq")),
            ("table", "Items PESQ could not score (silence or too short), excluded from the PESQ means",
             metric_rows(results, "pesq_excluded", 0)),
            ("table", "Probe L1 error (log-mel, mean [interval])", metric_rows(results, "l1")),
            ("table", "Robust − baseline STOI, paired over the same utterances (mean [95 % bootstrap interval])",
             contrast_rows(results)),
            ("table", "Robust − baseline wide-band PESQ, paired over the utterances PESQ scored for both recognisers "
                      "(mean [95 % bootstrap interval])", contrast_rows(results, "pesq_robust_minus_baseline")),
            ("table", "Robust − baseline EER (percentage points), paired over the same utterances and trials "
                      "([95 % bootstrap interval])", contrast_rows(results, "eer_robust_minus_baseline", 1)),
            ("table", "References: the unprocessed input and Griffin-Lim of the input mel", reference_rows(results)),
            *_human_sections(results, human_figs),
            ("table", "Appendix: settings", settings_rows(results))]


def _dcf_priors(results) -> list[float]:
    """The P_target values of the minDCF fields the probe records carry (none in older results)."""
    keys = {k for r in results.get("probe", []) for k in r if k.startswith("min_dcf_") and not k.endswith(("_low", "_high"))}
    return sorted((float(k[len("min_dcf_"):]) for k in keys), reverse=True)


def write_hear_report(results, out_dir, *, formats=("png", "pdf"), source=None) -> dict[str, Path]:
    """report.md, report.html (self-contained), CSV tables and figures of a hear study.
    ``source``: the study folder holding ``listen/*-mels.npz`` (default ``out_dir``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _sections(results, [])  # validate before drawing
    figures = render_hear_figures(results, out / "figures", formats, source=source if source is not None else out)
    secs = _sections(results, figures)
    csvs = write_hear_csvs(results, out)
    title = "What does a layer hear? Probing CTC recognisers by reconstruction"
    files = [os.path.relpath(p, out) for p in csvs.values()] + ["results.json", "wavs/<model>-<regime>/<condition>/"]
    if R.human_view(results) is not None:
        files.append("wavs-human/<model>-<regime>/<condition>/")
    page = render_html(title, secs, out, csvs, files_note=", ".join(files) + "; figures (PNG, PDF) in figures/.")
    paths = {"md": atomic_write_text(out / "report.md", render_md(title, secs, out, csvs, files=files)),
             "html": atomic_write_text(out / "report.html", page),
             **{f"{k}_csv": p for k, p in csvs.items()}}
    for f in figures:
        for p in (f.png, f.pdf):
            if p is not None:
                paths[f"figures/{Path(p).name}"] = Path(p)
    return paths
