"""Findings sentences generated from the results dictionary, each with its numbers and,
where the results carry them, its intervals. The sentences describe; they do not
presume the paper's findings hold (each names the paper's claim next to the measured
value so a reader can judge)."""
from __future__ import annotations

import numpy as np

from jaxprobe.report import _results as R
from jaxprobe.report.tables import ci

ENCODER_BLOCKS = ("Enc1", "Enc2")


def rankdata(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(x.size)
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation of two 1-D samples (NaN-free; raises on constant input)."""
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        raise ValueError("spearman needs two non-constant samples; got a constant one.")
    return float(np.corrcoef(rx, ry)[0, 1])


def _block_envelope(g: R.CkaGrid, row: int):
    """Per block at one SNR row: mean of the layers' estimates and the envelope of their intervals."""
    out = {}
    for name, group in R.blocks(g.layers):
        cols = [layer.depth for layer in group]
        out[name] = (float(g.estimate[row, cols].mean()), float(g.low[row, cols].min()),
                     float(g.high[row, cols].max()))
    return out


def _overlaps(a: dict, b: dict) -> bool:
    """Whether two layers' slope intervals intersect (True when either has no interval)."""
    lo = max(a["slope_low"], b["slope_low"])
    hi = min(a["slope_high"], b["slope_high"])
    return not (lo > hi)  # NaN bounds compare False: counted as overlapping


def _block_stat(results, protocol, estimator, stat):
    """Per block (estimate, low, high) of a replicate-level block statistic."""
    t = R.trends(results, protocol, estimator)
    return {b: (r[stat]["estimate"], r[stat]["low"], r[stat]["high"]) for b, r in t["blocks"].items() if stat in r}


def _side(low, high) -> str:
    """Where an interval lies relative to zero, in words."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    return "interval above 0" if low > 0 else "interval below 0" if high < 0 else "interval includes 0"


def _cka_sentence(results, protocol, estimator) -> str:
    g = R.cka_grid(results, protocol, estimator)
    row = int(np.argmin(g.snrs))
    replicate = R.has_trends(results)
    env = _block_stat(results, protocol, estimator, "block_mean_cka_lowest_snr") if replicate else {}
    if not env:
        replicate, env = False, _block_envelope(g, row)
    enc = [b for b in env if b in ENCODER_BLOCKS]
    rest = [b for b in env if b not in ENCODER_BLOCKS]
    part = lambda bs: ", ".join(f"{b} {ci(*env[b], digits=2)}" for b in bs)  # noqa: E731
    low = min(rest, key=lambda b: env[b][0]) if rest else None
    s = f"At the lowest SNR ({g.snrs[row]:g} dB), "
    if enc:
        s += f"encoder CKA is {part(enc)}"
    if rest:
        s += ("; " if enc else "") + f"the other blocks reach {part(rest)}, lowest in {low}"
    how = ("brackets: bootstrap interval of the block mean, recomputed in every replicate" if replicate
           else "brackets: envelope of the layers' intervals")
    return s + (f" (block mean of the layers' estimates; {how}; "
                "paper: encoder stays high while latent and decoder drop sharply).")


def _replicate_trend_sentences(results, protocol, estimator) -> list[str]:
    """Depth trends and block means with intervals from the statistic inside every replicate."""
    t = R.trends(results, protocol, estimator)
    n = len(R.layers(results))
    out = []
    parts = []
    for key, what in (("spearman_slope_depth", "Slopes versus depth"), ("spearman_intercept_depth", "intercepts versus depth")):
        if key in t:
            r = t[key]
            val = "undefined (a constant fit statistic)" if not np.isfinite(r["estimate"]) else \
                f"{ci(r['estimate'], r['low'], r['high'], 2)} ({_side(r['low'], r['high'])})"
            parts.append(f"{what}: Spearman ρ = {val}")
    if parts:
        out.append("; ".join(parts) + f" over {n} layers (paper: slopes grow and intercepts fall with depth; "
                   "brackets: ρ recomputed inside every bootstrap replicate from that replicate's fits).")
    for stat, words, digits in (("block_mean_slope", "Mean slope per block in CKA/dB", 4),
                                ("block_mean_intercept", "Mean intercept (CKA at 0 dB of the fit) per block", 3)):
        vals = _block_stat(results, protocol, estimator, stat)
        if vals:
            out.append(f"{words} (brackets: bootstrap interval of the block mean): "
                       + ", ".join(f"{b} {ci(*v, digits)}" for b, v in vals.items()) + ".")
    return out


def _trend_sentences(results, protocol, estimator) -> list[str]:
    if R.has_trends(results):
        return _replicate_trend_sentences(results, protocol, estimator) + _skip_sentences(results, protocol, estimator)
    rows = R.regression_by_layer(results, protocol, estimator)
    depth = np.arange(len(rows))
    slope = np.array([r["slope"] for r in rows])
    icpt = np.array([r["intercept"] for r in rows])
    out = [f"Slopes versus depth: Spearman ρ = {spearman(depth, slope):.2f} over {len(rows)} layers; "
           f"intercepts versus depth: ρ = {spearman(depth, icpt):.2f} (paper: slopes grow and intercepts "
           f"fall with depth). No interval: the results carry no replicate-level slopes."]
    by_block = {}
    for r in rows:
        by_block.setdefault(r["layer"].block, []).append(r)
    parts = []
    for name, rs in by_block.items():
        mean = float(np.mean([r["slope"] for r in rs]))
        lo, hi = np.min([r["slope_low"] for r in rs]), np.max([r["slope_high"] for r in rs])  # NaN: no interval
        parts.append(f"{name} {ci(mean, lo, hi, 4)}")
    out.append("Mean slope per block in CKA/dB (brackets: envelope of the layers' intervals): "
               + ", ".join(parts) + ".")
    return out + _skip_sentences(results, protocol, estimator)


def _skip_sentences(results, protocol, estimator) -> list[str]:
    rows = R.regression_by_layer(results, protocol, estimator)
    by_block = {}
    for r in rows:
        by_block.setdefault(r["layer"].block, []).append(r)
    out = []
    skip_in = [r for r in rows if r["layer"].skip == "input"]
    if skip_in:
        verdicts = []
        for r in skip_in:
            peers = by_block[r["layer"].block]
            top = max(peers, key=lambda q: q["slope"])
            others = [q for q in peers if q is not r]
            overlap = sum(_overlaps(r, q) for q in others)
            verdicts.append(f"{r['layer'].label} {ci(r['slope'], r['slope_low'], r['slope_high'], 4)} "
                            + ("is" if top is r else f"is not (top: {top['layer'].label})")
                            + f" the steepest of its block (its interval overlaps those of {overlap} of "
                            + f"the other {len(others)})")
        out.append("Skip-input layers: " + "; ".join(verdicts) + " (paper: local maxima at decoder skip entries).")
    return out


def _fit_sentence(results, protocol, estimator, threshold) -> str:
    rows = R.regression_by_layer(results, protocol, estimator)
    good = sum(r["r2"] > 0.95 for r in rows)
    worst = min(rows, key=lambda r: r["r2"])
    flagged = [r["layer"].label for r in rows if r["poor_fit"]]
    rule = f" (R² < {threshold:g})" if threshold is not None else ""
    return (f"{good} of {len(rows)} linear fits of CKA versus SNR have R² > 0.95 (the paper: all of them); "
            f"the lowest is {worst['layer'].label} with R² = {ci(worst['r2'], worst['r2_low'], worst['r2_high'])}. "
            + (f"Flagged as poor fits by the analysis{rule}: {', '.join(flagged)}." if flagged
               else f"No fit is flagged as poor by the analysis{rule}."))


def _dc1_sentence(results) -> str:
    rows = R.table1(results)
    rho = np.array([r["spearman"] for r in rows])
    lo = min(rows, key=lambda r: r["spearman"])
    r2lo = min(rows, key=lambda r: r["r2"])
    return (f"DC1 versus SNR (Table 1): median Spearman ρ over {len(rows)} blocks = {np.median(rho):.3f}; lowest "
            f"{lo['block']} ρ = {ci(lo['spearman'], lo['spearman_low'], lo['spearman_high'])}; lowest R² "
            f"{r2lo['block']} {ci(r2lo['r2'], r2lo['r2_low'], r2lo['r2_high'])} (paper: ρ ≈ 0.99, R² ≥ 0.97).")


def _drift_sentence(results) -> str:
    drift = R.block_drift(results)
    if drift:
        r0 = drift[0]
        return (f"Intra-layer diffusion distance from the lowest SNR ({r0['snr_low']:g} dB) to the cleanest "
                f"({r0['snr_clean']:g} dB), mean over each block's layers: "
                + ", ".join(f"{r['block']} {ci(r['estimate'], r['low'], r['high'], 3)}" for r in drift)
                + f" ({_boot_words(results)}; paper: encoders drift little, latent and decoder strongly, "
                "refinement partly reverses).")
    lays = R.layers(results)
    parts = []
    for name, group in R.blocks(lays):
        recs = [R.intra_layer(results, layer.name) for layer in group]
        d = np.mean([r.dist_to_clean[int(np.argmin(r.snrs))] for r in recs])
        parts.append((name, float(d)))
    snr = R.intra_layer(results, lays[0].name).snrs
    return (f"Intra-layer diffusion distance from the lowest SNR ({snr.min():g} dB) to the cleanest "
            f"(mean over each block's layers): " + ", ".join(f"{b} {ci(d, np.nan, np.nan)}" for b, d in parts)
            + " (these results carry no bootstrap of the maps; paper: encoders drift little, latent and "
            "decoder strongly, refinement partly reverses).")


def _boot_words(results) -> str:
    b = R.diffusion(results).get("bootstrap") or {}
    n = b.get("n_boot")
    lvl = b.get("level")
    pct = f"{100 * float(lvl):g}% " if isinstance(lvl, (int, float)) else ""
    return (f"{pct}percentile intervals from {n} bootstrap replicates that resample noise types and utterances and "
            "recompute the centroids and every map" if n else "bootstrap intervals")


def _inter_sentence(results) -> str:
    diff = R.diffusion(results)
    if "inter_layer_maps" in diff and not diff.get("inter_layer"):
        return ("Inter-layer diffusion distances: none, since no two blocks of this model have a layer of the same "
                "width (a diffusion map needs points of one width).")
    entries = R.inter_layer(results)
    means = R.inter_layer_mean(results)
    bounds = R.inter_layer_bounds(results)

    def off(m):
        return float(m[~np.eye(len(m), dtype=bool)].mean()) if len(m) > 1 else 0.0

    (s0, labels0, m0), (s1, _, m1) = entries[0], entries[-1]
    i, j = np.unravel_index(np.argmax(m0), m0.shape)
    if means:
        by = {float(r["snr"]): r for r in means}
        a, b = by.get(s0), by.get(s1)
        mean0 = ci(a["estimate"], a["low"], a["high"], 3) if a else ci(off(m0), np.nan, np.nan)
        mean1 = ci(b["estimate"], b["low"], b["high"], 3) if b else ci(off(m1), np.nan, np.nan)
    else:
        mean0, mean1 = f"{off(m0):.3g}", f"{off(m1):.3g}"
    lo, hi = bounds.get(s0, (None, None))
    pair = (ci(m0[i, j], lo[i, j], hi[i, j], 3) if lo is not None else f"{m0[i, j]:.3g}")
    sci = max(float(np.max(m0)), float(np.max(m1)))
    if 0 < sci < 1e-2:  # tiny distances (large t): state them in a shared power of ten
        e = int(np.floor(np.log10(sci)))
        f = 10.0 ** -e

        def scaled(est, l_, h_):
            return ci(est * f, l_ * f, h_ * f, 3)
        if means and a and b:
            mean0, mean1 = scaled(a["estimate"], a["low"], a["high"]), scaled(b["estimate"], b["low"], b["high"])
        if lo is not None:
            pair = scaled(m0[i, j], lo[i, j], hi[i, j])
        unit = f" (in units of 1e{e})"
    else:
        unit = ""
    which = R.inter_layer_set(results)
    which = f" over {which}" if which else ""
    tail = (f"{_boot_words(results)}; " if means else "these results carry no bootstrap of the maps; ")
    return (f"Inter-layer diffusion distances{which}{unit}: mean off-diagonal {mean0} at {s0:g} dB versus "
            f"{mean1} at {s1:g} dB; the farthest pair at {s0:g} dB is {labels0[i]}-{labels0[j]} ({pair}) "
            f"({tail}paper: cross-block separation grows under noise, most between encoder and decoder).")


def findings(results, *, protocol=None, estimator=None) -> list[str]:
    """The findings sentences: ``results['summary']`` when given, else generated."""
    given = results.get("summary") if hasattr(results, "get") else None
    if given:
        return [str(s) for s in given]
    protocol, estimator = R.resolve_combo(results, protocol or R.primary_combo(results)[0],
                                          estimator or R.primary_combo(results)[1])
    threshold = R.find_setting(results.get("settings", {}), "poor_fit_r2", "r2_threshold")
    out = [f"Scalar findings use {protocol} CKA with the {estimator} estimator."]
    out.append(_cka_sentence(results, protocol, estimator))
    out += _trend_sentences(results, protocol, estimator)
    out.append(_fit_sentence(results, protocol, estimator, threshold))
    out.append(_dc1_sentence(results))
    out.append(_drift_sentence(results))
    out.append(_inter_sentence(results))
    return out
