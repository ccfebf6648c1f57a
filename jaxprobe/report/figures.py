"""Figures of the SNR-sweep study, each drawn from the results dictionary alone.

Every ``fig_*`` function takes the results dict (the content of ``results.json``) and an
output folder, writes ``<stem>.png`` (200 dpi) and ``<stem>.pdf`` atomically, and returns a
:class:`Figure` record (paths and caption). :func:`render_figures` draws all of them.

Layer axes follow ``results['layers']`` (depth order); blocks and skip roles come from
that layer map, never from parsing module paths. Multi-panel figures are drawn at page
width (7 in), fonts at 7-8 pt, so they stay readable when printed across both columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patheffects import Normal, Stroke
from matplotlib.ticker import MaxNLocator

from jaxprobe.report import _results as R
from jaxprobe.report.axis import axis_label, axis_unit, level_text
from jaxprobe.report._style import (
    DIST_CMAP, LAYER_COLORS, PAGE_WIDTH, POOR_FIT_COLOR, SEQ_CMAP, SKIP_INPUT, SKIP_OUTPUT,
    new_figure, save, style,
)

from jaxprobe.report._figure import FORMATS, Figure, block_axis  # noqa: E402,F401 (re-exported)

FIG5_SNRS = (-10.0, -5.0, 0.0, 10.0, 20.0, 30.0)
_DESIGN_WORDS = {"noise": "resampling noise types", "noise-types": "resampling noise types",
                 "hierarchical": "resampling noise types, then utterances within them"}


def interval_words(results) -> str:
    s = results.get("settings", {})
    level = R.find_setting(s, "level", "confidence", "ci_level")
    kind = R.find_setting(s, "interval", "method", "ci_method")
    scheme = R.find_setting(s, "designs", "design", "scheme")
    if isinstance(scheme, (list, tuple)):
        scheme = scheme[0] if scheme else None  # the first design gives the headline intervals
    n_boot = R.find_setting(s, "n_boot", "n_resamples", "replicates")
    pct = f"{100 * float(level):g}% " if isinstance(level, (int, float)) else ""
    bits = [b for b in (f"{kind}" if kind else "", f"{n_boot} replicates" if n_boot else "",
                        _DESIGN_WORDS.get(str(scheme), f"design '{scheme}'") if scheme else "") if b]
    return f"{pct}bootstrap intervals" + (f" ({', '.join(bits)})" if bits else "")


def _combo_words(protocol: str, estimator: str) -> str:
    what = {"utterance": "per-utterance CKA averaged over utterances and noise types",
            "centroid": "CKA between noisy and clean centroids"}.get(protocol, f"protocol '{protocol}'")
    return f"{estimator} linear {what}"


def _snr_edges(snrs: np.ndarray) -> np.ndarray:
    if snrs.size == 1:
        return np.array([snrs[0] - 0.5, snrs[0] + 0.5])
    mid = (snrs[1:] + snrs[:-1]) / 2
    return np.concatenate([[2 * snrs[0] - mid[0]], mid, [2 * snrs[-1] - mid[-1]]])


def snr_ticks(axis, snrs: np.ndarray, *, max_listed: int = 11) -> None:
    """Tick the SNRs themselves on a short grid; on a long one, round steps inside the grid."""
    if snrs.size <= max_listed:
        axis.set_ticks(snrs, [_num(s) for s in snrs])
        return
    loc = MaxNLocator(nbins=max_listed - 2, steps=[1, 2, 5, 10], integer=True)
    ticks = [t for t in loc.tick_values(snrs.min(), snrs.max()) if snrs.min() <= t <= snrs.max()]
    axis.set_ticks(ticks, [_num(t) for t in ticks])


def _num(v: float) -> str:
    """A tick label with a typographic minus, like matplotlib's own formatters."""
    return f"{v:g}".replace("-", "\N{MINUS SIGN}")


def _scale(vmax: float) -> tuple[float, str]:
    """A power of ten that brings ``vmax`` into [0.1, 100), and its label suffix."""
    if vmax <= 0 or 0.1 <= vmax < 100:
        return 1.0, ""
    k = int(np.floor(np.log10(vmax)))
    return 10.0 ** -k, f" (×10$^{{{k}}}$)"


def _stem(base: str, protocol: str, estimator: str, primary) -> str:
    return base if primary else f"{base}_{protocol}_{estimator}"


def fig_cka_heatmap(results, out_dir, *, protocol=None, estimator=None, formats=FORMATS) -> Figure:
    """Fig. 2: CKA between noisy and clean activations, SNR (rows) x layer (columns)."""
    g = R.cka_grid(results, protocol, estimator)
    primary = (g.protocol, g.estimator) == R.primary_combo(results)
    with style():
        fig = new_figure(PAGE_WIDTH, 2.9)
        ax = fig.add_subplot()
        xe = np.arange(len(g.layers) + 1) - 0.5
        vmin = min(float(np.floor(g.estimate.min() * 20) / 20), 0.9)
        mesh = ax.pcolormesh(xe, _snr_edges(g.snrs), g.estimate, cmap=SEQ_CMAP, vmin=vmin,
                             vmax=max(1.0, float(g.estimate.max())), shading="flat", rasterized=True)
        for b, (_, group) in enumerate(R.blocks(g.layers)):
            if b:
                ax.axvline(group[0].depth - 0.5, color="white", lw=1.4)
        block_axis(ax, g.layers, lines=False)
        snr_ticks(ax.yaxis, g.snrs)
        ax.set_xlabel("Layer (index within block)")
        ax.set_ylabel(axis_label())
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        cb = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04, aspect=25)
        cb.set_label("CKA (noisy vs clean)")
        png, pdf = save(fig, out_dir, _stem("fig2_cka_heatmap", g.protocol, g.estimator, primary), formats)
    cap = (f"CKA between noisy and clean activations ({_combo_words(g.protocol, g.estimator)}) for "
           f"{len(g.layers)} layers grouped by block (white lines: block boundaries) and {g.snrs.size} "
           f"input SNRs from {g.snrs.min():g} to {g.snrs.max():g} dB. Colour scale from {vmin:g} to 1.")
    return Figure(f"fig2:{g.protocol}/{g.estimator}", f"Fig. 2 — CKA heatmap ({g.protocol}, {g.estimator})",
                  png, pdf, cap)


def fig_regression(results, out_dir, *, protocol=None, estimator=None, formats=FORMATS) -> Figure:
    """Fig. 3: slope (top) and intercept at 0 dB (bottom) of the CKA-vs-SNR fit per layer."""
    protocol, estimator = R.resolve_combo(results, protocol, estimator)
    rows = R.regression_by_layer(results, protocol, estimator)
    lays = [r["layer"] for r in rows]
    x = np.arange(len(rows))
    primary = (protocol, estimator) == R.primary_combo(results)
    with style():
        fig = new_figure(PAGE_WIDTH, 3.9)
        axes = fig.subplots(2, 1, sharex=True)
        specs = (("slope", f"Slope (CKA / {axis_unit()})"), ("intercept", f"Intercept (CKA at {level_text(0.0)})"))
        handles = {}
        for ax, (key, ylabel) in zip(axes, specs):
            y = np.array([r[key] for r in rows])
            lo = np.array([r[f"{key}_low"] for r in rows])
            hi = np.array([r[f"{key}_high"] for r in rows])
            err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
            h = ax.errorbar(x, y, yerr=err, fmt="o-", color="0.2", ecolor="0.45", elinewidth=0.8,
                            capsize=1.8, ms=3.2, lw=0.7, zorder=2)
            handles.setdefault("estimate with interval", h)
            for role, spec in (("input", SKIP_INPUT), ("output", SKIP_OUTPUT)):
                idx = [i for i, layer in enumerate(lays) if layer.skip == role]
                if idx:
                    handles.setdefault(spec["label"], ax.scatter(
                        x[idx], y[idx], marker=spec["marker"], s=70 if spec["marker"] == "*" else 42,
                        color=spec["color"], edgecolor="black", linewidth=0.4, zorder=4))
            poor = [i for i, r in enumerate(rows) if r["poor_fit"]]
            if poor:
                handles.setdefault("poor linear fit", ax.scatter(
                    x[poor], y[poor], marker="s", s=80, facecolor="none", edgecolor=POOR_FIT_COLOR,
                    linewidth=1.1, zorder=5))
            ax.set_ylabel(ylabel)
            block_axis(ax, lays, top_labels=ax is axes[0])
            ax.grid(axis="y", color="0.9", lw=0.5, zorder=0)
        axes[1].set_xlabel("Layer (index within block)")
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=len(handles))
        png, pdf = save(fig, out_dir, _stem("fig3_regression", protocol, estimator, primary), formats)
    r2 = np.array([r["r2"] for r in rows])
    n_poor = sum(r["poor_fit"] for r in rows)
    thr = R.find_setting(results.get("settings", {}), "poor_fit_r2", "r2_threshold")
    cap = (f"Linear fits of CKA versus SNR per layer ({_combo_words(protocol, estimator)}): slope (top) "
           f"and intercept, the fitted CKA at 0 dB (bottom). Error bars: {interval_words(results)}, the "
           f"fit repeated in every replicate. Green triangles mark layers receiving a skip connection, "
           f"orange stars layers whose block output leaves on one (skip roles from the model's layer map). {n_poor} of {len(rows)} fits are flagged "
           f"poor (red squares{f', R² < {thr}' if thr is not None else ''}); R² ranges "
           f"{r2.min():.3f}-{r2.max():.3f}.")
    return Figure(f"fig3:{protocol}/{estimator}", f"Fig. 3 — CKA-vs-SNR slopes and intercepts "
                  f"({protocol}, {estimator})", png, pdf, cap)


def fig_cka_curves(results, out_dir, *, protocol=None, estimator=None, formats=FORMATS) -> Figure:
    """CKA versus SNR per block (one panel each), one line per layer with its interval band."""
    g = R.cka_grid(results, protocol, estimator)
    primary = (g.protocol, g.estimator) == R.primary_combo(results)
    groups = R.blocks(g.layers)
    with style():
        fig = new_figure(PAGE_WIDTH, 3.9)
        axes = np.atleast_1d(fig.subplots(2, (len(groups) + 1) // 2, sharex=True, sharey=True)).ravel()
        for ax, (name, group) in zip(axes, groups):
            for layer in group:
                c = LAYER_COLORS[layer.index % len(LAYER_COLORS)]
                j = layer.depth
                ax.fill_between(g.snrs, g.low[:, j], g.high[:, j], color=c, alpha=0.15, lw=0)
                ax.plot(g.snrs, g.estimate[:, j], color=c, marker="o", ms=2, label=f"layer {layer.index}")
            ax.set_title(name, fontweight="bold")
            ax.grid(color="0.92", lw=0.5)
        for ax in axes[len(groups):]:
            ax.set_visible(False)
        for ax in axes.reshape(2, -1)[:, 0]:
            ax.set_ylabel("CKA (noisy vs clean)")
        for ax in axes.reshape(2, -1)[-1]:
            ax.set_xlabel(axis_label())
        # the legend of the panel with the most layers (blocks of a model may differ in size)
        h, lab = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[1]))
        fig.legend(h, lab, loc="outside lower center", ncol=len(lab))
        png, pdf = save(fig, out_dir, _stem("cka_curves", g.protocol, g.estimator, primary), formats)
    cap = (f"CKA versus input SNR per block ({_combo_words(g.protocol, g.estimator)}); one line per "
           f"layer (index within the block), bands: {interval_words(results)}.")
    return Figure(f"curves:{g.protocol}/{g.estimator}", f"CKA versus SNR per block ({g.protocol}, "
                  f"{g.estimator})", png, pdf, cap)


def _block_distance(results, group, reduce: str):
    recs = [R.intra_layer(results, layer.name) for layer in group]
    if reduce == "first":
        return recs[0].snrs, recs[0].distances
    snrs = recs[0].snrs
    if any(r.snrs.shape != snrs.shape or not np.allclose(r.snrs, snrs) for r in recs):
        raise R.ResultsError(f"results['diffusion']['intra_layer']: layers of block {group[0].block} "
                             "use different SNR grids; pass reduce='first' or align the grids.")
    return snrs, np.mean([r.distances for r in recs], axis=0)


def fig_diffusion_snr(results, out_dir, *, reduce: str = "mean", formats=FORMATS) -> Figure:
    """Fig. 4: pairwise diffusion distances between SNRs, one SNR x SNR panel per block.

    ``reduce='mean'`` averages the four layers' distance matrices of a block; ``'first'``
    shows the block's first layer. One colour scale is shared by all panels so that the
    drift of blocks can be compared.
    """
    if reduce not in ("mean", "first"):
        raise ValueError(f"The 'reduce' parameter of fig_diffusion_snr must be 'mean' or 'first'. Got {reduce!r}.")
    groups = R.blocks(R.layers(results))
    mats = [(name, *_block_distance(results, group, reduce)) for name, group in groups]
    factor, suffix = _scale(max(float(m.max()) for _, _, m in mats))
    mats = [(name, snrs, m * factor) for name, snrs, m in mats]
    vmax = max(float(m.max()) for _, _, m in mats) or 1.0
    with style():
        fig = new_figure(PAGE_WIDTH, 4.6)
        axes = np.atleast_1d(fig.subplots(2, (len(mats) + 1) // 2)).ravel()
        for ax, (name, snrs, m) in zip(axes, mats):
            e = _snr_edges(snrs)
            mesh = ax.pcolormesh(e, e, m, cmap=DIST_CMAP, vmin=0, vmax=vmax, rasterized=True)
            ax.set_aspect("equal")
            ax.set_title(name, fontweight="bold")
            snr_ticks(ax.xaxis, snrs, max_listed=6)
            snr_ticks(ax.yaxis, snrs, max_listed=6)
            for side in ("top", "right"):
                ax.spines[side].set_visible(True)
        for ax in axes[len(mats):]:
            ax.set_visible(False)
        grid = axes.reshape(2, -1)
        for ax in grid[:, 0]:
            ax.set_ylabel(axis_label(short=True))
        for ax in grid[-1]:
            ax.set_xlabel(axis_label(short=True))
        cb = fig.colorbar(mesh, ax=list(axes[: len(mats)]), shrink=0.8, aspect=30, pad=0.02)
        cb.set_label("Diffusion distance (intra-layer map)" + suffix)
        png, pdf = save(fig, out_dir, "fig4_diffusion_snr", formats)
    how = "averaged over the layers of each block" if reduce == "mean" else "of the first layer of each block"
    coords = R.find_setting(results.get("settings", {}), "coordinates")
    conv = f" ({coords} coordinates)" if coords else ""
    boot = (" Every cell has a bootstrap interval (maps recomputed per replicate) in results.json (intra_layer "
            "distances_low / distances_high) and in diffusion_intervals.csv."
            if any("distances_low" in (rec or {}) for rec in R.diffusion(results).get("intra_layer", {}).values())
            else "")
    cap = (f"Pairwise diffusion distances{conv} between input SNRs, {how}; each layer's diffusion map is "
           f"computed on its (noise, SNR) centroids. One colour scale (0 to {vmax / factor:.3g}) is shared by all "
           f"panels so blocks can be compared." + boot)
    return Figure("fig4", "Fig. 4 — Diffusion distances across SNRs per block", png, pdf, cap)


def fig_inter_layer(results, out_dir, *, snrs=FIG5_SNRS, formats=FORMATS) -> Figure:
    """Fig. 5: inter-layer diffusion distances at selected SNRs (the available subset).

    When none of ``snrs`` is available, up to six SNRs spread over the available ones are shown.
    """
    entries = R.inter_layer(results)
    have = np.array([s for s, _, _ in entries])
    pick = [e for e in entries if any(np.isclose(e[0], s) for s in snrs)]
    if not pick:
        idx = np.unique(np.linspace(0, len(entries) - 1, min(6, len(entries))).round().astype(int))
        pick = [entries[i] for i in idx]
    factor, suffix = _scale(max(float(m.max()) for _, _, m in pick))
    pick = [(snr, labels, m * factor) for snr, labels, m in pick]
    vmax = max(float(m.max()) for _, _, m in pick) or 1.0
    group_blocks = R.inter_layer_group_blocks(results)
    n_rows = len(pick[0][1])
    cuts = []
    if group_blocks and len(group_blocks) == n_rows and len(set(group_blocks)) < n_rows:
        cuts = [i - 0.5 for i in range(1, n_rows) if group_blocks[i] != group_blocks[i - 1]]
    with style():
        ncol = min(3, len(pick))
        nrow = (len(pick) + ncol - 1) // ncol
        fig = new_figure(PAGE_WIDTH, 2.75 * nrow)
        axes = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
        for k, (ax, (snr, labels, m)) in enumerate(zip(axes, pick)):
            mesh = ax.imshow(m, cmap=DIST_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(level_text(snr), fontweight="bold")
            for edge in cuts:  # block boundaries (from the layer map) when rows are layers
                ax.axhline(edge, color="white", lw=1.2)
                ax.axvline(edge, color="white", lw=1.2)
            pos = np.arange(len(labels))
            ax.set_xticks(pos, labels, rotation=90 if len(labels) > 6 else 45, ha="center" if len(labels) > 6 else "right")
            ax.set_yticks(pos, labels if k % ncol == 0 else [""] * len(labels))
            ax.tick_params(length=0)
            if len(labels) <= 8:
                for i in range(len(labels)):
                    for j in range(len(labels)):
                        ax.text(j, i, f"{m[i, j]:.2g}", ha="center", va="center", fontsize=5.5,
                                color="white" if m[i, j] > 0.55 * vmax else "black")
        for ax in axes[len(pick):]:
            ax.set_visible(False)
        what = "Layer (block.index)" if all("." in lab for _, labs, _ in pick for lab in labs) else "Block"
        for k, ax in enumerate(axes[: len(pick)]):
            if k % ncol == 0:
                ax.set_ylabel(what)
            if k + ncol >= len(pick):
                ax.set_xlabel(what)
        cb = fig.colorbar(mesh, ax=list(axes[: len(pick)]), shrink=0.8, aspect=30, pad=0.02)
        cb.set_label("Diffusion distance (inter-layer map)" + suffix)
        png, pdf = save(fig, out_dir, "fig5_inter_layer", formats)
    shown = ", ".join(f"{s:g}" for s, _, _ in pick)
    missing = [s for s in snrs if not np.any(np.isclose(have, s))]
    blocks_shown = set(group_blocks) if group_blocks else {lab.split(".")[0] for _, labels, _ in pick for lab in labels}
    latent = "" if "Latent" in blocks_shown else " (Latent excluded: different dimensionality)"
    latent = _other_maps_words(results) if R.diffusion(results).get("inter_layer_maps") else latent
    unit = f"; values shown in units of 10^{-round(np.log10(factor))}" if factor != 1.0 else ""
    which = R.inter_layer_set(results)
    points = f"{which}{latent}" if which else f"the layers shown{latent}"
    grouped = "; white lines separate the blocks" if cuts else ""
    bounds = R.inter_layer_bounds(results)
    boot = (" Every cell has a bootstrap interval (maps recomputed per replicate) in results.json "
            "(inter_layer distances_low / distances_high) and in diffusion_intervals.csv." if bounds else "")
    cap = (f"Pairwise diffusion distances between layers in the diffusion map computed per SNR over "
           f"{points}, at {shown} dB{grouped}. One colour scale "
           f"(0 to {vmax / factor:.3g}) is shared by all panels{unit}."
           + (f" Not in the results: {', '.join(f'{s:g}' for s in missing)} dB." if missing else "") + boot)
    return Figure("fig5", "Fig. 5 — Inter-layer diffusion distances", png, pdf, cap)


def _other_maps_words(results) -> str:
    """Which blocks are not in the drawn inter-layer map, and why (their width differs)."""
    maps = R.diffusion(results).get("inter_layer_maps")
    if maps:  # the analysis split the blocks into maps by width; the first is drawn
        others = [m for m in maps[1:] if m.get("blocks")]
        if not others:
            return ""
        parts = [f"{', '.join(m['blocks'])} (width {m['width']}"
                 + (", in a map of their own" if len(m["blocks"]) > 1 else ", alone") + ")" for m in others]
        return (f" of width {maps[0]['width']}; blocks with no layer of that width are in separate maps: "
                + "; ".join(parts) + " (results.json, diffusion.inter_layer_maps)")
    excluded = R.diffusion(results).get("inter_layer_excluded") or []
    if excluded:
        return " (excluded, different dimensionality: " + ", ".join(R.short_label(results, n) for n in excluded) + ")"
    return ""


def fig_dc1(results, out_dir, *, formats=FORMATS) -> Figure:
    """DC1 versus SNR per block: thick lines noise-pooled per layer, thin lines per noise type."""
    groups = R.blocks(R.layers(results))
    with style():
        fig = new_figure(PAGE_WIDTH, 3.9)
        axes = np.atleast_1d(fig.subplots(2, (len(groups) + 1) // 2, sharex=True)).ravel()
        noises = []
        for ax, (name, group) in zip(axes, groups):
            for layer in group:
                rec = R.intra_layer(results, layer.name)
                c = LAYER_COLORS[layer.index % len(LAYER_COLORS)]
                for noise, v in rec.dc1.items():
                    if noise != "pooled":
                        ax.plot(rec.snrs, v, color=c, lw=0.5, alpha=0.35, zorder=1)
                        if noise not in noises:
                            noises.append(noise)
                ax.plot(rec.snrs, rec.dc1["pooled"], color=c, lw=1.6, label=f"layer {layer.index}", zorder=3,
                        path_effects=[Stroke(linewidth=2.6, foreground="white"), Normal()])
            ax.set_title(name, fontweight="bold")
            ax.grid(color="0.92", lw=0.5)
        for ax in axes[len(groups):]:
            ax.set_visible(False)
        grid = axes.reshape(2, -1)
        for ax in grid[:, 0]:
            ax.set_ylabel("DC1 (a.u.)")
        for ax in grid[-1]:
            ax.set_xlabel(axis_label())
        h, lab = axes[0].get_legend_handles_labels()
        h = [*h, Line2D([], [], color="0.4", lw=0.5), Line2D([], [], color="0.4", lw=1.6)]
        lab = [*lab, "per noise type", "noise-pooled"]
        fig.legend(h, lab, loc="outside lower center", ncol=len(lab))
        png, pdf = save(fig, out_dir, "dc1_trajectories", formats)
    cap = (f"First diffusion coordinate (DC1) of each layer's intra-layer diffusion map versus input SNR. "
           f"Thick lines: noise-pooled; thin lines: each of {len(noises)} noise types "
           f"({', '.join(noises[:6])}{', ...' if len(noises) > 6 else ''}). DC1 has arbitrary units and "
           f"scale per layer; its sign is oriented by the analysis.")
    return Figure("dc1", "DC1 trajectories versus SNR", png, pdf, cap)


def _inter_snrs(results) -> tuple:
    """The SNRs Fig. 5 shows: the run's ``diffusion.inter_snrs`` setting, else FIG5_SNRS."""
    chosen = R.find_setting(results.get("settings", {}), "inter_snrs")
    return tuple(float(v) for v in chosen) if isinstance(chosen, (list, tuple)) and chosen else FIG5_SNRS


_CACHE_INDEX = ".figure_cache.json"
_SOURCES = ("figures.py", "_style.py", "_pdf_fonts.py", "_results.py", "axis.py", "quality_figures.py")


def _figure_inputs_key(results, formats) -> str:
    """A hash of everything a figure is drawn from: the results (without the run's timings,
    which no figure shows), the formats and the source of the figure code."""
    import hashlib
    import json

    r = dict(results)
    if isinstance(r.get("settings"), dict) and "timings_s" in r["settings"]:
        r["settings"] = {k: v for k, v in r["settings"].items() if k != "timings_s"}
    h = hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode())
    h.update(repr(tuple(formats)).encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _read_index(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


#: the figures drawn from the CKA tables alone (no diffusion or quality result): a study may draw them
#: while its other analyses still run (:func:`render_cka_figures`, ``render_figures(drawn=...)``)
CKA_FIGURES = (fig_cka_heatmap, fig_regression, fig_cka_curves)


def _figure_calls(results, all_combos: bool, formats, cka_only: bool = False) -> list[tuple]:
    """(call id, function, keyword arguments) of every figure, in the report's reading order."""
    first, *others = R.combos(results)
    kw = dict(zip(("protocol", "estimator"), first), formats=formats)
    calls = [(fig_cka_heatmap, kw), (fig_regression, kw), (fig_diffusion_snr, {"formats": formats}),
             (fig_inter_layer, {"snrs": _inter_snrs(results), "formats": formats}),
             (fig_cka_curves, kw), (fig_dc1, {"formats": formats})]
    if cka_only:
        calls = [c for c in calls if c[0] in CKA_FIGURES]
    else:
        if "inter_layer_maps" in R.diffusion(results) and not R.diffusion(results).get("inter_layer"):
            calls.remove(calls[3])  # no two blocks share a width: no inter-layer distances (the notes say so)
        if results.get("quality"):
            from jaxprobe.report.quality_figures import fig_correlations, fig_quality

            calls += [(fig_quality, {"formats": formats})]
            if results.get("correlations"):
                calls += [(fig_correlations, {"formats": formats})]
    for protocol, estimator in others if all_combos else ():
        kw = {"protocol": protocol, "estimator": estimator, "formats": formats}
        calls += [(fig_cka_heatmap, kw), (fig_regression, kw), (fig_cka_curves, kw)]
    return [(f"{fn.__name__}({', '.join(f'{a}={k[a]!r}' for a in sorted(k))})", fn, k) for fn, k in calls]


def render_cka_figures(results, out_dir, *, all_combos: bool = True, formats=FORMATS) -> dict:
    """Draw now the figures of :data:`CKA_FIGURES` (``results`` needs its CKA tables only: the
    diffusion or quality parts may still be computing) -> {call id: Figure}, for
    ``render_figures(..., drawn=...)`` once the results are complete (the same files: each is
    drawn from the CKA tables alone)."""
    return {cid: fn(results, out_dir, **k) for cid, fn, k in _figure_calls(results, all_combos, formats, True)}


def render_figures(results, out_dir, *, all_combos: bool = True, formats=FORMATS, cache: bool = True,
                   log=None, drawn: dict | None = None) -> list[Figure]:
    """Draw every figure into ``out_dir`` in the report's reading order: Fig. 2-5, the CKA
    curves and DC1 trajectories for the primary protocol/estimator, then Fig. 2, Fig. 3 and
    the CKA curves of every other protocol/estimator present (unless ``all_combos=False``).
    ``formats``: a subset of ("png", "pdf") that includes "png" (the HTML report embeds it).

    With ``cache`` (default), a figure whose inputs (the results, the formats, the figure
    code) are unchanged since it was last drawn into ``out_dir``, and whose files are all
    there, is not drawn again: its record comes from ``out_dir/.figure_cache.json`` (paths
    relative to ``out_dir``, so a copied run folder keeps its cache). ``log``: optional
    ``log(msg)`` for a summary line and a tqdm bar while drawing. ``drawn``: {call id: Figure}
    of :func:`render_cka_figures` on these results' CKA tables: taken as drawn (and cached).
    """
    import json
    import os

    calls = _figure_calls(results, all_combos, formats)
    drawn = {cid: f for cid, f in (drawn or {}).items()
             if Path(f.png).is_file() and (f.pdf is None or Path(f.pdf).is_file())}
    out = Path(out_dir)
    index_path = out / _CACHE_INDEX
    index = _read_index(index_path) if cache else {}
    inputs = _figure_inputs_key(results, formats)
    todo = []
    figs: list[Figure | None] = []
    for call_id, fn, k in calls:
        if call_id in drawn:
            figs.append(None)
            todo.append((len(figs) - 1, call_id, lambda *a, f=drawn[call_id], **kw: f, k))
            continue
        ent = index.get(call_id)
        files = [out / ent["png"]] + ([out / ent["pdf"]] if ent and ent.get("pdf") else []) if ent else []
        if ent and ent.get("inputs") == inputs and all(f.is_file() for f in files):
            figs.append(Figure(ent["key"], ent["title"], out / ent["png"],
                               out / ent["pdf"] if ent.get("pdf") else None, ent["caption"]))
        else:
            figs.append(None)
            todo.append((len(figs) - 1, call_id, fn, k))
    if log is not None:
        log(f"report: {len(calls) - len(todo)} of {len(calls)} figures unchanged (cached), "
            + (f"{len(drawn)} drawn beside the analysis, " if drawn else "") + f"drawing {len(todo) - len(drawn)}")
    steps = todo
    if log is not None and todo:
        from tqdm.auto import tqdm

        steps = tqdm(todo, desc="figures", unit="fig", leave=False, mininterval=1.0)
    for i, call_id, fn, k in steps:
        f = fn(results, out_dir, **k)
        figs[i] = f
        index[call_id] = {"inputs": inputs, "key": f.key, "title": f.title, "caption": f.caption,
                          "png": os.path.relpath(f.png, out), "pdf": os.path.relpath(f.pdf, out) if f.pdf else None}
    if todo and cache:
        out.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_name(f".{index_path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
        os.replace(tmp, index_path)
    return figs
