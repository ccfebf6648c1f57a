"""The comparison report (`jaxprobe compare`): figures, tables, report.md / report.html and
the long-format CSVs, drawn from the comparison's results dictionary alone
(``jaxprobe.studies.compare.compare``). Matplotlib and the standard library only.

Figures: the CKA-vs-SNR curves of every model (one panel each, layers coloured by
normalised depth), the slope/intercept profile against normalised depth (one series per
model, bootstrap intervals, skip roles marked, every model's blocks named along the top),
and per model pair the cross-model CKA heatmap with its permutation-null correction.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from jaxprobe.report._style import PAGE_WIDTH, SEQ_CMAP, SKIP_INPUT, SKIP_OUTPUT, new_figure, save, style
from jaxprobe.report.figures import Figure, snr_ticks, interval_words
from jaxprobe.report.html import render_html, render_md
from jaxprobe.report.tables import write_csv, atomic_write_text, ci

MODEL_COLORS = ("#1f5fa8", "#d4561d", "#2a9d5c", "#8e44ad", "#b8860b")
MARKERS = ("o", "s", "D", "v", "P")
FORMATS = ("png", "pdf")
INPUT_WORDS = {"clean": "the clean utterances", "all": "every input, clean and noisy"}


def _color(i: int) -> str:
    return MODEL_COLORS[i % len(MODEL_COLORS)]


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def _nan(v):
    return float("nan") if v is None else float(v)


def _by_model(records, label):
    return [r for r in records if r["model"] == label]


def _blocks_of(results, label):
    """[(block, first norm depth, last norm depth)] of one model, in depth order."""
    out = []
    for r in _by_model(results["layers"], label):
        if out and out[-1][0] == r["block"]:
            out[-1][2] = r["norm_depth"]
        else:
            out.append([r["block"], r["norm_depth"], r["norm_depth"]])
    return out


def _combo(results) -> str:
    s = results["settings"]
    return f"{s['protocol']}, {s['estimator']}"


# ----------------------------------------------------------------------------- figures

def fig_curves(results, out_dir, *, formats=FORMATS) -> Figure:
    """CKA versus SNR: one row per model, one panel per block, one line per layer with its
    interval band, coloured by the layer's position within its block."""
    labels = results["settings"]["labels"]
    per_model = {label: _blocks_of(results, label) for label in labels}
    ncol = max(len(b) for b in per_model.values())
    cmap = colormaps[SEQ_CMAP]
    with style():
        fig = new_figure(PAGE_WIDTH, 0.35 + 1.45 * len(labels))
        axes = np.array(fig.subplots(len(labels), ncol, sharex=True, sharey=True, squeeze=False))
        for row, label in enumerate(labels):
            recs = _by_model(results["curves"], label)
            blocks = [b for b, _, _ in per_model[label]]
            for col, ax in enumerate(axes[row]):
                if col >= len(blocks):
                    ax.set_visible(False)
                    continue
                names = list(dict.fromkeys(r["layer"] for r in recs if r["block"] == blocks[col]))
                for k, layer in enumerate(names):
                    rr = sorted((r for r in recs if r["layer"] == layer), key=lambda r: r["snr"])
                    x = np.array([r["snr"] for r in rr])
                    c = cmap(0.85 * k / max(1, len(names) - 1))
                    lo, hi = np.array([_nan(r["low"]) for r in rr]), np.array([_nan(r["high"]) for r in rr])
                    if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
                        ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
                    ax.plot(x, [r["estimate"] for r in rr], color=c, lw=0.9, marker="o", ms=1.5)
                ax.set_title(f"{blocks[col]} ({len(names)})", fontsize=7, fontweight="bold", pad=2)
                ax.grid(color="0.92", lw=0.5)
            axes[row, 0].set_ylabel(f"{label}\nCKA (noisy vs clean)")
        snrs = np.array(sorted({r["snr"] for r in results["curves"]}))
        for ax in axes[-1]:
            ax.set_xlabel("SNR (dB)")
            snr_ticks(ax.xaxis, snrs, max_listed=5)
        for ax in axes[:-1].ravel():  # a hidden bottom panel leaves its column's x axis to the row above
            ax.tick_params(labelbottom=True)
        png, pdf = save(fig, out_dir, "compare_curves", formats)
    cap = (f"CKA between noisy and clean activations versus input SNR ({_combo(results)}): one row per model, one "
           f"panel per block (number of probed layers in brackets), one line per layer, dark to light from the "
           f"first layer of the block to the last; bands: each run's bootstrap intervals.")
    return Figure("compare:curves", "CKA versus SNR per model and block", png, pdf, cap)


def fig_profile(results, out_dir, *, formats=FORMATS) -> Figure:
    """Slope (top) and 0 dB intercept (bottom) of the CKA-vs-SNR line against normalised depth."""
    labels = results["settings"]["labels"]
    with style():
        fig = new_figure(PAGE_WIDTH, 4.4)
        axes = fig.subplots(2, 1, sharex=True)
        handles = {}
        for k, label in enumerate(labels):
            recs = _by_model(results["profile"], label)
            x = np.array([r["norm_depth"] for r in recs])
            for ax, key in zip(axes, ("slope", "intercept")):
                y = np.array([r[key] for r in recs])
                lo = np.array([_nan(r[f"{key}_low"]) for r in recs])
                hi = np.array([_nan(r[f"{key}_high"]) for r in recs])
                err = np.vstack([np.clip(np.nan_to_num(y - lo), 0, None), np.clip(np.nan_to_num(hi - y), 0, None)])
                h = ax.errorbar(x, y, yerr=err, fmt=MARKERS[k % len(MARKERS)] + "-", color=_color(k),
                                ecolor=_color(k), elinewidth=0.7, capsize=1.5, ms=3.0, lw=0.8, alpha=0.9, zorder=2)
                handles.setdefault(label, h)
                for role, spec in (("input", SKIP_INPUT), ("output", SKIP_OUTPUT)):
                    idx = [i for i, r in enumerate(recs) if r["skip"] == role]
                    if idx:
                        handles.setdefault(spec["label"], ax.scatter(
                            x[idx], y[idx], marker=spec["marker"], s=50 if spec["marker"] == "*" else 30,
                            color=spec["color"], edgecolor=_color(k), linewidth=0.8, zorder=4))
        axes[0].set_ylabel("Slope (CKA / dB)")
        axes[1].set_ylabel("Intercept (CKA at 0 dB)")
        axes[1].set_xlabel("Normalised depth (layer position / (number of layers − 1))")
        for ax in axes:
            ax.grid(color="0.92", lw=0.5, zorder=0)
            ax.set_xlim(-0.04, 1.04)
        # every model's blocks along the top, in its colour
        for k, label in enumerate(labels):
            for block, lo, hi in _blocks_of(results, label):
                y = 1.02 + 0.075 * (len(labels) - 1 - k)
                axes[0].plot([lo, hi], [y - 0.012] * 2, color=_color(k), lw=1.6, solid_capstyle="butt",
                             transform=axes[0].get_xaxis_transform(), clip_on=False)
                axes[0].text((lo + hi) / 2, y, block, transform=axes[0].get_xaxis_transform(), ha="center",
                             va="bottom", fontsize=6, color=_color(k))
        order = [k for k in handles if k in labels] + [k for k in handles if k not in labels]
        fig.legend([handles[k] for k in order], order, loc="outside lower center", ncol=len(order))
        png, pdf = save(fig, out_dir, "compare_profile", formats)
    cap = (f"Slope (top) and intercept at 0 dB (bottom) of each layer's CKA-vs-SNR line ({_combo(results)}) against "
           f"normalised depth, one series per model; error bars: each run's bootstrap intervals (the fit repeated in "
           f"every replicate). Green triangles: layers receiving a skip connection; orange stars: layers whose "
           f"output leaves on one. Each model's blocks are named along the top in its colour.")
    return Figure("compare:profile", "Slope and intercept against normalised depth", png, pdf, cap)


def _block_lines(ax, blocks, axis: str):
    """White lines between blocks and block names beside the axis (blocks: per layer)."""
    edges = [i for i in range(1, len(blocks)) if blocks[i] != blocks[i - 1]]
    for e in edges:
        (ax.axvline if axis == "x" else ax.axhline)(e - 0.5, color="white", lw=1.2)
    starts = [0] + edges
    ends = edges + [len(blocks)]
    for s, e in zip(starts, ends):
        mid = (s + e - 1) / 2
        if axis == "x":
            ax.text(mid, 1.01, blocks[s], transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=6, fontweight="bold")
        else:
            ax.annotate(blocks[s], xy=(0, mid), xycoords=ax.get_yaxis_transform(), xytext=(-9, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=6, fontweight="bold",
                        rotation=90)


def fig_cross(results, rec, out_dir, *, formats=FORMATS) -> Figure:
    """Cross-model CKA of every layer pair (left) and its excess over the permutation null (right)."""
    m = np.asarray(rec["matrix"], float)
    null = np.asarray(rec["null_mean"], float)
    p = np.asarray(rec["p_value"], float)
    la, lb = rec["labels_a"], rec["labels_b"]
    h = max(2.6, min(6.0, 0.6 + 0.13 * len(la)))
    with style():
        fig = new_figure(PAGE_WIDTH, h)
        axes = fig.subplots(1, 2)
        panels = ((m, "CKA", "viridis", 0.0, 1.0),
                  (m - null, "CKA − permutation-null mean", "RdBu_r", -max(0.05, float(np.abs(m - null).max())),
                   max(0.05, float(np.abs(m - null).max()))))
        for ax, (z, title, cmap, vmin, vmax) in zip(axes, panels):
            mesh = ax.pcolormesh(np.arange(len(lb) + 1) - 0.5, np.arange(len(la) + 1) - 0.5, z, cmap=cmap,
                                 vmin=vmin, vmax=vmax, shading="flat", rasterized=True)
            ax.set_xlim(-0.5, len(lb) - 0.5)
            ax.set_ylim(len(la) - 0.5, -0.5)
            ax.set_xticks(np.arange(len(lb)), [s.split(".")[-1] for s in lb], fontsize=5)
            ax.set_yticks(np.arange(len(la)), [s.split(".")[-1] for s in la], fontsize=5)
            _block_lines(ax, rec["blocks_b"], "x")
            _block_lines(ax, rec["blocks_a"], "y")
            sig = np.argwhere(p < 0.05)
            if len(sig):
                ax.scatter(sig[:, 1], sig[:, 0], s=3, color="white", edgecolor="black", linewidth=0.3, zorder=3)
            ax.set_xlabel(f"{rec['b']} layer (index within block)")
            ax.set_ylabel(f"{rec['a']} layer (index within block)", labelpad=14)
            for side in ("top", "right"):
                ax.spines[side].set_visible(True)
            cb = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.05, aspect=25)
            cb.set_label(title)
        png, pdf = save(fig, out_dir, f"cross_cka_{_safe(rec['a'])}_{_safe(rec['b'])}_{rec['inputs']}", formats)
    n_sig = int((p < 0.05).sum())
    perm = (f"all {rec['n_permutations']} orderings" if rec["exhaustive"]
            else f"{rec['n_permutations']} orderings (the observed one and random ones)")
    cap = (f"Linear CKA ({rec['estimator']}) between every layer of {rec['a']} (rows) and of {rec['b']} (columns) over "
           f"the same {rec['n_inputs']} inputs, {INPUT_WORDS[rec['inputs']]} (samples: inputs; features: the "
           f"layer's pooled activation, flattened). Right: the same minus the mean CKA over {perm} of the inputs "
           f"of {rec['b']} (the chance level at this n). Dots: permutation p < 0.05 ({n_sig} of {p.size} cells; the "
           f"smallest attainable p is {1 / rec['n_permutations']:.3g}).")
    return Figure(f"compare:cross:{rec['a']}/{rec['b']}/{rec['inputs']}",
                  f"Cross-model CKA, {rec['a']} × {rec['b']}, {INPUT_WORDS[rec['inputs']]}", png, pdf, cap)


def render_compare_figures(results, out_dir, *, formats=FORMATS) -> list[Figure]:
    figs = [fig_curves(results, out_dir, formats=formats), fig_profile(results, out_dir, formats=formats)]
    figs += [fig_cross(results, rec, out_dir, formats=formats) for rec in results["cross_cka"]]
    return figs


# ----------------------------------------------------------------------------- tables

def _ci(rec, key, digits=3):
    v = rec.get(key)
    if v is None:
        return "n/a"
    return ci(float(v), _nan(rec.get(f"{key}_low")), _nan(rec.get(f"{key}_high")), digits)


def runs_rows(results):
    head = ["Label", "Model", "Layers", "Blocks", "Window", "Run folder"]
    rows = []
    for r in results["runs"]:
        rec = r.get("model_record") or {}
        model = rec.get("name") or (r["model"].get("name") if isinstance(r["model"], dict) else r["model"])
        if rec.get("checkpoint_sha256"):
            model = f"{model} (checkpoint sha256 {str(rec['checkpoint_sha256'])[:8]}…)"
        if "window" in rec:
            win = "whole utterance" if rec["window"] is None else f"{rec['window']} samples"
            win += f", {r['n_windows']} per utterance"
        else:
            win = f"{r['n_windows']} per utterance ({r['window']})"
        rows.append([r["label"], str(model), str(r["n_layers"]), ", ".join(r["blocks"]), win, r["path"]])
    return head, rows


def data_rows(results):
    d, s = results["data"], results["settings"]
    snrs = d.get("snrs") or []
    rows = [["Corpus (RUN_DIR 1)", str(d.get("corpus"))], ["Utterances", str(d.get("n_utterances"))],
            ["Noise types", ", ".join(map(str, d.get("noises") or []))],
            ["SNR grid (dB)", ", ".join(f"{float(x):g}" for x in snrs)], ["Seed", str(s["seed"])],
            *[[f"Cross-model CKA inputs: {i['kind']}", f"{i['n']} ({INPUT_WORDS[i['kind']]})"]
              for i in results["inputs"]]]
    return ["Item", "Value"], rows


TREND_NAMES = {"spearman_slope_depth": "Spearman ρ, slope vs depth",
               "spearman_intercept_depth": "Spearman ρ, intercept vs depth"}


def trend_rows(results):
    labels = results["settings"]["labels"]
    head = ["Statistic"] + labels
    rows = []
    for stat, name in TREND_NAMES.items():
        cells = []
        for label in labels:
            rec = next((t for t in results["trends"] if t["model"] == label and t["statistic"] == stat), None)
            cells.append("n/a" if rec is None or rec["estimate"] is None else _trend_ci(rec))
        rows.append([name] + cells)
    return head, rows


def _trend_ci(rec):
    return ci(rec["estimate"], _nan(rec["low"]), _nan(rec["high"]))


def block_rows(results):
    """Block means of every model, side by side (one row per model and block)."""
    first = results["blocks"][0] if results["blocks"] else {}
    at = {k: f"{first[k + '_snr']:g} dB" if first.get(k + "_snr") is not None else w
          for k, w in (("block_mean_cka_0db", "near 0 dB"), ("block_mean_cka_lowest_snr", "lowest SNR"))}
    head = ["Model", "Block", "Layers", "Normalised depth", f"Mean CKA at {at['block_mean_cka_0db']}",
            f"Mean CKA at {at['block_mean_cka_lowest_snr']} (lowest)", "Mean slope (CKA/dB)",
            "Mean intercept at 0 dB"]
    rows = []
    for b in results["blocks"]:
        rows.append([b["model"], b["block"], str(b["n_layers"]),
                     f"{b['norm_depth_first']:.2f}–{b['norm_depth_last']:.2f}",
                     _ci(b, "block_mean_cka_0db"), _ci(b, "block_mean_cka_lowest_snr"),
                     _ci(b, "block_mean_slope", 4), _ci(b, "block_mean_intercept")])
    return head, rows


def best_match_rows(results, rec):
    head = [f"{rec['a']} layer", "Depth", f"Most similar {rec['b']} layer", "Depth", "CKA", "Null mean",
            "Permutation p"]
    rows = [[r["label"], f"{r['norm_depth']:.2f}", r["best_label"], f"{r['best_norm_depth']:.2f}",
             f"{r['cka']:.3f}", f"{r['null_mean']:.3f}", f"{r['p_value']:.3g}"] for r in rec["best_match_a_to_b"]]
    return head, rows


# ----------------------------------------------------------------------------- findings

def findings(results) -> list[str]:
    """Summary sentences, each number with its interval (or its permutation null)."""
    out = []
    labels = results["settings"]["labels"]
    for label in labels:
        tr = {t["statistic"]: t for t in results["trends"] if t["model"] == label}
        prof = _by_model(results["profile"], label)
        n = len(prof)
        bits = []
        for stat, what in (("spearman_slope_depth", "slopes vs depth"), ("spearman_intercept_depth",
                                                                          "intercepts vs depth")):
            if stat in tr and tr[stat]["estimate"] is not None:
                bits.append(f"{what} ρ = {_trend_ci(tr[stat])}")
        steep = max(prof, key=lambda r: r["slope"])
        flat = max(prof, key=lambda r: r["intercept"])
        r2 = min(prof, key=lambda r: r["r2"])
        s = f"{label} ({n} layers): " + ("; ".join(bits) + "; " if bits else "")
        s += (f"steepest layer {steep['label']} (slope {_ci(steep, 'slope', 4)} CKA/dB, depth "
              f"{steep['norm_depth']:.2f}); highest 0 dB intercept {flat['label']} ({_ci(flat, 'intercept')}, depth "
              f"{flat['norm_depth']:.2f}); lowest R² {r2['r2']:.3f} ({r2['label']}).")
        out.append(s)
        blocks = _by_model(results["blocks"], label)
        if blocks and all(b.get("block_mean_slope") is not None for b in blocks):
            b = max(blocks, key=lambda r: r["block_mean_slope"])
            out.append(f"{label}: the most SNR-sensitive block is {b['block']} (mean slope "
                       f"{_ci(b, 'block_mean_slope', 4)} CKA/dB, depth {b['norm_depth_first']:.2f}–"
                       f"{b['norm_depth_last']:.2f}).")
    for rec in results["cross_cka"]:
        m = np.asarray(rec["matrix"], float)
        null = np.asarray(rec["null_mean"], float)
        p = np.asarray(rec["p_value"], float)
        corr = rec.get("depth_correspondence_spearman")
        s = (f"Cross-model CKA {rec['a']} × {rec['b']} over {rec['n_inputs']} inputs ({INPUT_WORDS[rec['inputs']]}): "
             f"{m.min():.2f}–{m.max():.2f} (mean {m.mean():.2f}) against a permutation-null mean of "
             f"{null.mean():.2f}; {int((p < 0.05).sum())} of {p.size} layer pairs reach p < 0.05 (smallest "
             f"attainable p {1 / rec['n_permutations']:.3g}).")
        if corr is not None:
            s += (f" Depth correspondence (Spearman ρ of each {rec['a']} layer's depth against that of its most "
                  f"similar {rec['b']} layer): {corr:.2f}.")
        out.append(s)
    return out


# ----------------------------------------------------------------------------- report

def _sections(results, figures):
    secs = [("list", "Summary of findings", [f"Warning: {w}" for w in results["warnings"]] + findings(results)),
            ("table", "Runs compared", runs_rows(results)),
            ("table", "Shared data (checked identical across runs)", data_rows(results)),
            ("figures", "Figures", figures),
            ("table", f"Trends across depth ({_combo(results)}), each run's replicate intervals", trend_rows(results))]
    if results["blocks"]:
        secs.append(("table", f"Block summaries side by side ({_combo(results)}): means over each block's layers",
                     block_rows(results)))
    for rec in results["cross_cka"]:
        secs.append(("table", f"Most similar {rec['b']} layer for each {rec['a']} layer (cross-model CKA over "
                     f"{INPUT_WORDS[rec['inputs']]})",
                     best_match_rows(results, rec)))
    secs.append(("list", "How to read this", [
        "Normalised depth is a layer's position among the model's probed layers divided by their number minus one, "
        "so models with different numbers of layers share one axis; it is not a claim that equal depths do the "
        "same work.",
        "Curves, slopes, intercepts, block means and their intervals are copied from each run's results.json "
        f"(each run's own bootstrap; RUN_DIR 1: {interval_words(results)}); the comparison recomputes none of "
        "them. Intervals of different models are independent bootstraps over the same noise types and utterances.",
        "The cross-model CKA uses the pooled activations in each run's store: samples are the inputs, matched "
        "across models by (utterance, noise, SNR); a model that cut an utterance into several windows is "
        "averaged over them. Models with different windows saw different spans of the same utterances (see "
        "'Windows per utterance').",
    ]))
    s = results["settings"]
    secs.append(("table", "Appendix: settings", (["Setting", "Value"], [
        ["runs", ", ".join(s["runs"])], ["labels", ", ".join(s["labels"])], ["protocol", s["protocol"]],
        ["estimator", s["estimator"]], ["inputs", ", ".join(s["inputs"])], ["permutations (when random)", str(s["n_perm"])],
        ["seed", str(s["seed"])], ["versions", ", ".join(f"{k} {v}" for k, v in s["versions"].items())]])))
    return secs


CSV_COLUMNS = {
    "profile": ("model", "layer", "label", "block", "index", "skip", "norm_depth", "slope", "slope_low", "slope_high",
                "intercept", "intercept_low", "intercept_high", "r2", "r2_low", "r2_high", "poor_fit"),
    "curves": ("model", "layer", "label", "block", "norm_depth", "snr", "estimate", "low", "high"),
    "blocks": ("model", "block", "n_layers", "norm_depth_first", "norm_depth_last"),
    "trends": ("model", "statistic", "estimate", "low", "high"),
    "cross_cka": ("model_a", "layer_a", "label_a", "model_b", "layer_b", "label_b", "inputs", "estimator", "n_inputs", "cka",
                  "null_mean", "p_value"),
}


def _cross_long(results) -> list[dict]:
    out = []
    for rec in results["cross_cka"]:
        for i, (na, la) in enumerate(zip(rec["layers_a"], rec["labels_a"])):
            for j, (nb, lb) in enumerate(zip(rec["layers_b"], rec["labels_b"])):
                out.append({"model_a": rec["a"], "layer_a": na, "label_a": la, "model_b": rec["b"], "layer_b": nb,
                            "label_b": lb, "inputs": rec["inputs"], "estimator": rec["estimator"], "n_inputs": rec["n_inputs"],
                            "cka": rec["matrix"][i][j], "null_mean": rec["null_mean"][i][j],
                            "p_value": rec["p_value"][i][j]})
    return out


def write_compare_csvs(results, out_dir) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {k: write_csv(out / f"{k}.csv", CSV_COLUMNS[k], results[k])
             for k in ("profile", "curves", "blocks", "trends") if results[k]}
    paths["cross_cka"] = write_csv(out / "cross_cka.csv", CSV_COLUMNS["cross_cka"], _cross_long(results))
    return paths


def write_compare_report(results, out_dir, *, formats=FORMATS) -> dict[str, Path]:
    """report.md, report.html, the CSVs and figures/*.png|pdf of a comparison into ``out_dir``."""
    out = Path(out_dir)
    figures = render_compare_figures(results, out / "figures", formats=formats)
    secs = _sections(results, figures)
    csvs = write_compare_csvs(results, out)
    title = "Comparing " + " and ".join(results["settings"]["labels"]) + ": CKA across input SNRs on the same data"
    md = atomic_write_text(out / "report.md", render_md(title, secs, out, csvs))
    files = ", ".join(os.path.relpath(p, out) for p in csvs.values())
    page = atomic_write_text(out / "report.html", render_html(
        title, secs, out, csvs, files_note=f"Long-format tables next to this report: {files}; figure files in figures/."))
    paths = {"md": md, "html": page, **{f"{k}_csv": p for k, p in csvs.items()}}
    for f in figures:
        for p in (f.png, f.pdf):
            if p is not None:
                paths[f"figures/{Path(p).name}"] = Path(p)
    return paths

