"""The study report: ``report.md`` and a self-contained ``report.html`` (figures embedded
as base64 PNG, inline CSS, no external assets), plus the long-format CSV tables.

Top to bottom: title, the summary of findings (opened by any warning of the analysis, such
as a bootstrap design with too few distinct resamples), data summary, analysis choices,
figures with captions, Table 1, the regression table, the depth trends and the block
summary (when the results carry trend records), the CKA table summary, the bootstrap
designs, notes, and the settings in an appendix.
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from jaxprobe.report import _results as R
from jaxprobe.report import tables as T
from jaxprobe.report.figures import Figure, interval_words, render_figures
from jaxprobe.report.summary import findings

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}
th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:1rem 0 2rem}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444}.small{font-size:.85rem;color:#555}
"""


def _title(results) -> str:
    rec = results.get("model")
    model = rec.get("name") if isinstance(rec, dict) and rec.get("name") else None
    model = model or R.find_setting(results.get("settings", {}), "model_name", "model", default="MUSE")
    if isinstance(model, dict):
        model = model.get("name", "MUSE")
    return f"Probing {model} across input SNRs: CKA and diffusion-map study"


def _choices(results, combo) -> list[str]:
    """Sentences stating the analysis choices the figures and tables rest on, and the
    presentation choices the report itself makes."""
    s = results.get("settings", {})
    protocol, estimator = combo
    out = [f"Headline CKA: protocol '{protocol}', estimator '{estimator}'. Every other protocol/estimator "
           f"in the results is drawn as well (end of the figures), and all are in cka.csv and regression.csv."]
    orient = R.find_setting(s, "orientation")
    if orient is not None:
        out.append(f"Per-utterance CKA orientation: {orient}.")
    rec = results.get("model")
    if isinstance(rec, dict) and rec.get("cka_samples"):
        window = rec.get("window")
        out.append(f"What per-utterance CKA compares for {rec.get('name', 'this model')} (its model spec): samples = "
                   f"{rec['cka_samples']}; features = {rec.get('cka_features', '?')}. Model input: "
                   + (f"{window}-sample windows." if window else "whole mixtures (no window)."))
    out.append(f"Intervals: {interval_words(results)}.")
    diff = [f"{k} = {v}" for k in ("epsilon", "alpha", "t_intra", "t_inter", "energy")
            if (v := R.find_setting(s, k)) is not None]
    if diff:
        out.append("Diffusion maps: " + ", ".join(diff) + ".")
    d = results.get("diffusion", {}) if isinstance(results.get("diffusion"), dict) else {}
    coords = R.find_setting(s, "coordinates")
    if coords is not None:
        out.append(f"Diffusion coordinates of every distance and figure: {coords} "
                   + ("(right eigenvectors of the Markov matrix, Coifman-Lafon; distances are diffusion distances)."
                      if coords == "markov" else "(eigenvectors of D^-1/2 K D^-1/2 used directly, the SE authors' code)."))
    which = R.inter_layer_set(results)
    if which:
        out.append(f"Inter-layer maps (Fig. 5): {which}.")
    boot = d.get("bootstrap")
    if isinstance(boot, dict) and boot.get("n_boot"):
        out.append(f"Diffusion intervals: {100 * float(boot.get('level', 0.95)):g}% percentile intervals from "
                   f"{boot['n_boot']} replicates ({boot.get('design', 'hierarchical')} design: noise types"
                   + (", then utterances within each" if boot.get("design", "hierarchical") == "hierarchical" else "")
                   + "), with the centroids and every diffusion map recomputed in every replicate and eigenvector "
                   "signs aligned to the full-data map.")
    if R.has_trends(results):
        out.append("Depth trends (Spearman ρ of slope and of intercept against layer index) and block means "
                   "(CKA near 0 dB and at the lowest SNR, slope, intercept) are computed on the mean curves and "
                   "again inside every bootstrap replicate from the same resampled curves as the per-layer "
                   "fits; their brackets are percentile intervals of those replicates.")
    thr = R.find_setting(s, "poor_fit_r2", "r2_threshold")
    if thr is not None:
        out.append(f"A linear fit of CKA on SNR is flagged poor when R² < {thr}.")
    block_words = ("block-level numbers in the summary are block means with their replicate intervals "
                   "(the block summary table)" if R.has_trends(results) else
                   "block-level numbers in the summary are means of the layers' estimates with the envelope "
                   "of their intervals")
    out.append("Presentation (the report's own choices): Fig. 4 averages the intra-layer distance matrices "
               f"of each block's layers; Fig. 4 and Fig. 5 share one colour scale across panels; {block_words}. "
               "Every setting of the run is listed in the appendix.")
    return out


def md_table(head, rows) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(head, rows) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{html.escape(str(c))}</td>' if any(ch.isdigit() for ch in str(c))
                         and "[" in str(c) else f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>\n"


def _sections(results, figures, combo):
    """(kind, title, payload) in reading order; rendered to Markdown and HTML alike."""
    summary = [f"Warning: {w}" for w in _warnings(results)]
    summary += findings(results, protocol=combo[0], estimator=combo[1])
    secs = [("list", "Summary of findings", summary),
            ("table", "Data", T.data_rows(results)),
            ("list", "Analysis choices", _choices(results, combo)),
            ("figures", "Figures", figures),
            ("table", "Table 1 — DC1 versus SNR per block (Spearman ρ and R² of the linear fit)",
             T.table1_rows(results)),
            *_table1_note(results),
            ("table", f"Regression of CKA on SNR per layer ({combo[0]}, {combo[1]})",
             T.regression_rows(results, *combo)),
            *_trend_sections(results, combo),
            ("table", f"CKA summary ({combo[0]}, {combo[1]}): estimate [interval] at selected SNRs",
             T.cka_rows(results, *combo))]
    if results.get("quality"):
        from jaxprobe.report.quality_tables import correlation_findings, quality_rows

        secs.insert(1, ("list", "Output quality and its link to the representations", correlation_findings(results)))
        secs.append(("table", "Output quality per level (mean over noise types and utterances) [interval]",
                     quality_rows(results)))
    resampling = _resampling_rows(results)
    if resampling:
        secs.append(("table", "Bootstrap designs: distinct resamples", resampling))
    notes = _notes(results)
    if notes:
        secs.append(("list", "Notes from the analysis", notes))
    secs.append(("table", "Appendix: settings", T.settings_rows(results)))
    return secs


def _warnings(results) -> list[str]:
    """The analysis's warnings (``results['warnings']``), e.g. too few distinct resamples."""
    return [str(w) for w in results.get("warnings", []) or []]


def _resampling_rows(results):
    """Per bootstrap design: what is resampled and how many distinct resamples exist."""
    designs = (results.get("bootstrap") or {}).get("designs") or []
    if not designs:
        return None
    rows = [[d["protocol"], d["design"], d["unit"], f"{d['distinct_resamples']:,}", str(d["n_boot"]),
             "too few: intervals mean little" if d["too_few"] else "enough"] for d in designs]
    return ["Protocol", "Design", "Resampled", "Distinct resamples", "Replicates", "Verdict"], rows


def _table1_note(results):
    if not R.has_table1_symmetric(results):
        return []
    return [("list", "Why Table 1 has two conventions",
             ["Markov coordinates are the symmetric matrix's eigenvectors divided by sqrt(π) point by point "
              "(π ∝ kernel degree), so where degrees are uneven the two conventions order the points along DC1 "
              "differently and their ρ and R² differ; the paper's Table 1 used the symmetric eigenvectors."])]


def _trend_sections(results, combo):
    """The depth-trend and block tables (results written before trend records had none)."""
    if not R.has_trends(results):
        return []
    return [("table", f"Trends across depth ({combo[0]}, {combo[1]}): rank correlation of the per-layer "
             "fits with layer depth, recomputed in every bootstrap replicate", T.trend_rows(results, *combo)),
            ("table", f"Block summary ({combo[0]}, {combo[1]}): means over each block's layers, recomputed "
             "in every bootstrap replicate", T.block_rows(results, *combo))]


def _notes(results) -> list[str]:
    """Free-text notes the analysis left (``results['notes']``, ``results['diffusion']['notes']``)
    and the layers it excluded from the inter-layer maps."""
    out = [str(n) for n in results.get("notes", []) or []]
    diff = results.get("diffusion", {})
    out += [str(n) for n in diff.get("notes", []) or []]
    excluded = diff.get("inter_layer_excluded")
    maps = diff.get("inter_layer_maps")
    if maps:
        words = [f"width {m['width']}: {', '.join(m['blocks'])}"
                 + (" (Fig. 5)" if k == 0 and len(m["blocks"]) > 1 else " (alone: no distances)"
                    if len(m["blocks"]) == 1 else " (a separate map, in results.json)") for k, m in enumerate(maps)]
        out.append("Inter-layer diffusion maps (one layer per block; a map's points share a width): "
                   + "; ".join(words) + "."
                   + ("" if any(len(m["blocks"]) > 1 for m in maps)
                      else " No two blocks share a width, so there are no inter-layer distances and no Fig. 5."))
    elif excluded:
        out.append("Excluded from the inter-layer diffusion maps: "
                   + ", ".join(R.short_label(results, n) for n in excluded) + ".")
    return out


def render_md(title, secs, out_dir: Path, csvs, *, files: list[str] | None = None) -> str:
    """report.md from the report's sections (tables, lists, figures) and its CSV files.

    ``files``: the closing Files list (paths as written); default: the CSV files, relative to ``out_dir``."""
    parts = [f"# {title}\n"]
    for kind, head, payload in secs:
        parts.append(f"## {head}\n")
        if kind == "table":
            parts.append(md_table(*payload))
        elif kind == "list":
            parts.append("\n".join(f"- {s}" for s in payload) + "\n")
        else:
            for f in payload:
                rel = os.path.relpath(f.png, out_dir)
                pdf = f" ([PDF]({os.path.relpath(f.pdf, out_dir)}))" if f.pdf is not None else ""
                parts.append(f"### {f.title}\n\n![{f.title}]({rel})\n\n{f.caption}{pdf}\n")
    if files is None:
        files = [os.path.relpath(p, out_dir) for p in csvs.values()]
    parts.append("## Files\n\n" + "\n".join(f"- `{p}`" for p in files) + "\n")
    return "\n".join(parts)


def render_html(title, secs, out_dir: Path, csvs, *, files_note: str | None = None) -> str:
    """report.html (self-contained: inline CSS, figures as base64 PNG) from the report's sections.

    ``files_note``: the plain text of the closing Files paragraph (escaped here); default: the CSV
    files next to the report (``csvs``, relative to ``out_dir``) and the figure files' folder."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for kind, head, payload in secs:
        parts.append(f"<h2>{html.escape(head)}</h2>")
        if kind == "table":
            parts.append(html_table(*payload))
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in payload) + "</ul>")
        else:
            for f in payload:
                data = base64.b64encode(Path(f.png).read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
                             f"<figcaption><b>{html.escape(f.title)}.</b> {html.escape(f.caption)}"
                             "</figcaption></figure>")
    if files_note is None:
        files_note = ("Long-format tables next to this report: "
                      + ", ".join(os.path.relpath(p, out_dir) for p in csvs.values())
                      + "; figure files (PNG, and PDF where asked for) in figures/.")
    parts.append(f'<h2>Files</h2><p class="small">{html.escape(files_note)}</p></body></html>')
    return "\n".join(parts)


def draw_cka_figures(results, out_dir, *, formats=("png", "pdf")) -> dict:
    """The report's figures drawn from the CKA tables alone (``jaxprobe.report.figures.CKA_FIGURES``),
    drawn now into ``out_dir/figures`` from ``results`` whose other parts may still be computing;
    give them to :func:`write_report` (``drawn=``) once the results are complete."""
    from jaxprobe.report.axis import axis_of, set_axis, snr_view
    from jaxprobe.report.figures import render_cka_figures

    set_axis(axis_of(results))
    return render_cka_figures(snr_view(results), Path(out_dir) / "figures", formats=formats)


def write_report(results, out_dir, figures: list[Figure] | None = None, *,
                 formats=("png", "pdf"), log=None, drawn: dict | None = None) -> dict[str, Path]:
    """Write report.md, report.html and cka.csv / regression.csv / table1.csv into ``out_dir``.

    Parameters
    ----------
    results : dict
        The results dictionary (the content of results.json).
    out_dir : path
        Output folder (created). Figures are rendered into ``out_dir/figures`` unless given.
    figures : list of Figure, optional
        Figures already rendered by :func:`jaxprobe.report.render_figures` (e.g. cached).
    formats : tuple of str
        Figure files to write: ("png", "pdf") or ("png",); PNG is always needed (embedded).
    log : callable, optional
        ``log(msg)`` for progress lines (figures reused from the cache, drawn, tqdm bar).
    drawn : dict, optional
        Figures :func:`draw_cka_figures` drew from these results' CKA tables (not drawn again).

    Returns
    -------
    dict of str to Path
        ``md``, ``html``, ``cka_csv``, ``regression_csv``, ``table1_csv``, and per figure
        ``figures/<stem>.png`` (and ``.pdf``) mapped to its path.

    Raises
    ------
    ResultsError
        When the results lack a key the report needs (the message names it).
    """
    from jaxprobe.report.axis import axis_of, relabel, set_axis, snr_view

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    axis = axis_of(results)
    set_axis(axis)
    results = snr_view(results)  # the levels of any axis where the SNR figures and tables read them
    combo = R.primary_combo(results)
    secs = _sections(results, [], combo)  # validate everything before drawing anything
    if figures is None:
        figures = render_figures(results, out / "figures", formats=formats, log=log, drawn=drawn)
    secs = [(k, h, figures if k == "figures" else p) for k, h, p in secs]
    csvs = T.write_csvs(results, out)
    title = _title(results)
    md = T.atomic_write_text(out / "report.md", relabel(render_md(title, secs, out, csvs), axis))
    page = T.atomic_write_text(out / "report.html", relabel(render_html(title, secs, out, csvs), axis))
    paths = {"md": md, "html": page, **{f"{k}_csv": p for k, p in csvs.items()}}
    for f in figures:
        for p in (f.png, f.pdf):
            if p is not None:
                paths[f"figures/{Path(p).name}"] = Path(p)
    return paths
