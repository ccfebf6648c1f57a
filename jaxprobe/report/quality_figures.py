"""Figures of the quality stage: output quality versus level (noisy input and enhanced output)
and, across depth, how well each layer's per-item CKA predicts the enhanced output's quality."""
from __future__ import annotations

import numpy as np

from jaxprobe.report import _results as R
from jaxprobe.report._style import PAGE_WIDTH, new_figure, save, style
from jaxprobe.report.axis import axis_label
from jaxprobe.report._figure import FORMATS, Figure, block_axis

METRIC_LABELS = {"pesq": "PESQ (wide band)", "stoi": "STOI", "si_sdr": "SI-SDR (dB)"}
INPUT_STYLE = {"noisy": dict(color="#7f7f7f", ls="--", marker="o"), "enhanced": dict(color="#2c7bb6", ls="-", marker="s")}
TARGET_STYLE = {"enhanced": dict(color="#2c7bb6", marker="o"), "improvement": dict(color="#d7191c", marker="^")}


def _metrics(records) -> list[str]:
    have = {r["metric"] for r in records}
    return [m for m in METRIC_LABELS if m in have]


def fig_quality(results, out_dir, *, formats=FORMATS) -> Figure:
    """Quality of the noisy input and the enhanced output versus level (pooled over noise types)."""
    recs = [r for r in results["quality"] if r["noise"] == "all" and r["estimate"] is not None]
    metrics = _metrics(recs)
    with style():
        fig = new_figure(PAGE_WIDTH, 2.4)
        axes = np.atleast_1d(fig.subplots(1, len(metrics)))
        for ax, m in zip(axes, metrics):
            for inp, st in INPUT_STYLE.items():
                rows = sorted((r for r in recs if r["metric"] == m and r["input"] == inp), key=lambda r: r["level"])
                if not rows:
                    continue
                x = np.array([r["level"] for r in rows])
                ax.fill_between(x, [r["low"] for r in rows], [r["high"] for r in rows], color=st["color"], alpha=0.18, lw=0)
                ax.plot(x, [r["estimate"] for r in rows], ms=3, label=inp, **st)
            ax.set_title(METRIC_LABELS[m], fontweight="bold")
            ax.set_xlabel(axis_label())
            ax.grid(color="0.92", lw=0.5)
        axes[0].legend(loc="best")
        png, pdf = save(fig, out_dir, "quality_vs_level", formats)
    model = recs[0]["model"] if recs else "the model"
    excl = (results.get("quality_excluded") or {}).get("counts") or {}
    ex = "; ".join(f"{m}: {c['noisy']} noisy and {c['enhanced']} enhanced item(s) could not be scored and are left out"
                   for m, c in excl.items()) or "every item was scored"
    cap = (f"Quality of the noisy input (dashed) and of {model}'s enhanced output (solid) against the clean "
           f"reference, mean over utterances and noise types per level; bands: 95% bootstrap intervals "
           f"resampling noise types, then utterances within them. {ex[0].upper() + ex[1:]}.")
    return Figure("quality", "Output quality versus level", png, pdf, cap)


def fig_correlations(results, out_dir, *, formats=FORMATS) -> Figure:
    """Per layer, Spearman's rho of per-item CKA against enhanced quality (and its improvement),
    pooled over levels, with intervals; one panel per metric."""
    recs = [r for r in results["correlations"] if r["level"] == "all" and r["rho"] is not None]
    lays = R.layers(results)
    depth = {layer.name: layer.depth for layer in lays}
    metrics = _metrics(recs)
    with style():
        fig = new_figure(PAGE_WIDTH, 1.9 * len(metrics) + 0.6)
        axes = np.atleast_1d(fig.subplots(len(metrics), 1, sharex=True))
        for k, (ax, m) in enumerate(zip(axes, metrics)):
            for j, (target, st) in enumerate(TARGET_STYLE.items()):
                rows = sorted((r for r in recs if r["metric"] == m and r["target"] == target), key=lambda r: depth[r["layer"]])
                if not rows:
                    continue
                x = np.array([depth[r["layer"]] for r in rows]) + (j - 0.5) * 0.25
                y = np.array([r["rho"] for r in rows])
                err = np.array([[r["rho"] - r["low"], r["high"] - r["rho"]] for r in rows]).T
                ax.errorbar(x, y, yerr=err, ls="none", ms=3, capsize=1.5, lw=0.8,
                            label="enhanced quality" if target == "enhanced" else "improvement over noisy", **st)
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_ylim(-1.05, 1.05)
            ax.set_ylabel(f"ρ with {METRIC_LABELS[m].split(' (')[0]}")
            block_axis(ax, lays, top_labels=k == 0)
        h, lab = axes[0].get_legend_handles_labels()
        fig.legend(h, lab, loc="outside lower center", ncol=2)
        axes[-1].set_xlabel("layer (index within block)")
        png, pdf = save(fig, out_dir, "quality_correlations", formats)
    cc = results.get("correlations_cka") or {}
    cap = (f"Spearman's ρ between each layer's per-item CKA ({cc.get('estimator', 'biased')} linear, per utterance) "
           "and the enhanced output's quality of the same item (blue) or its improvement over the noisy input (red), "
           "pooled over every level and noise type; bars: 95% bootstrap intervals resampling noise types, then items "
           "within them. Per-level values are in results.json ('correlations').")
    return Figure("correlations", "Which layers' similarity predicts output quality", png, pdf, cap)
