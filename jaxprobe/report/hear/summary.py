"""The hear report's findings: sentences computed from the numbers, the paper's expectations checked
one by one and reported whether or not they hold."""
from __future__ import annotations

import numpy as np

from jaxprobe.report.hear import _records as R


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def findings(results, *, part: str = "synthetic") -> list[str]:
    """Sentences computed from the numbers; the paper's expectations checked, whatever the outcome.
    ``part`` 'human': the same checks on :func:`R.human_view` (no recogniser or judge sentences)."""
    out = []
    for r in results["asr"] if part == "synthetic" else []:
        out.append(f"{R.MODEL_NAMES.get(r['model'], r['model'])} {r['regime']}: held-out CER {100 * r['cer']:.1f} %, "
                   f"WER {100 * r['wer']:.1f} % after {r.get('steps')} steps"
                   + (f"; on the listening set CER " + ", ".join(f"{100 * v['cer']:.0f} % ({R.cond_label(c)})"
                                                                 for c, v in r.get("listen", {}).items()) if r.get("listen") else "") + ".")
    conds = R.conditions(results)
    rises, falls, total = 0, 0, 0
    for m in R.models(results):
        lays = R.layers(results, m)
        for regime in R.regimes(results):
            for c in conds:
                eer = [R.cell(results, m, regime, lay, c) for lay in lays]
                st = [R.cell(results, m, regime, lay, c, "stoi") for lay in lays]
                if None in eer or None in st:
                    continue
                total += 1
                rho_e, rho_s = _spearman(range(len(lays)), eer), _spearman(range(len(lays)), st)
                rises += rho_e > 0
                falls += rho_s < 0
        first, last = lays[0], lays[-1]
        for regime in R.regimes(results):
            e0, e1 = R.cell(results, m, regime, first, "clean"), R.cell(results, m, regime, last, "clean")
            s0, s1 = R.cell(results, m, regime, first, "clean", "stoi"), R.cell(results, m, regime, last, "clean", "stoi")
            if None not in (e0, e1, s0, s1):
                out.append(f"{R.MODEL_NAMES.get(m, m)} {regime}, clean input: EER {e0:.1f} % at {first} → {e1:.1f} % at "
                           f"{last}; STOI {s0:.2f} → {s1:.2f}.")
    if total:
        out.append(f"Expected: EER rises and STOI falls with depth. EER vs layer index has Spearman ρ > 0 in "
                   f"{rises} of {total} (model, recogniser, condition) series; STOI vs layer index ρ < 0 in {falls} of {total}.")
    noisy = [c for c in conds if c != "clean"]
    if noisy and {"baseline", "robust"} <= set(R.regimes(results)):
        for m in R.models(results):
            lstm = [lay for lay in R.layers(results, m) if lay.startswith("blstm")][:2]
            cells = better = 0
            for c in noisy:
                for lay in lstm:
                    b, r = R.cell(results, m, "baseline", lay, c, "stoi"), R.cell(results, m, "robust", lay, c, "stoi")
                    if b is not None and r is not None:
                        cells += 1
                        better += r > b
            con = {(c["layer"], c["condition"]): c for c in results.get("contrasts", [])
                   if c["model"] == m and c.get("statistic", "stoi_robust_minus_baseline") == "stoi_robust_minus_baseline"}
            paired = [con[(lay, c)] for c in noisy for lay in lstm if (lay, c) in con]
            if paired:  # paired (same utterances) intervals of robust - baseline
                above = sum(c["low"] > 0 for c in paired)
                below = sum(c["high"] < 0 for c in paired)
                parts = [f"{c['layer']} at {R.cond_label(c['condition'])}: {c['estimate']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"
                         for c in paired]
                out.append(f"Expected: the robust model's early LSTM layers remove more noise than the baseline's "
                           f"(higher STOI of their reconstructions from noisy input). {R.MODEL_NAMES.get(m, m)}: robust "
                           f"higher in {better} of {cells} cells; the paired robust − baseline interval lies above 0 in "
                           f"{above} and below 0 in {below} of {len(paired)} — paired STOI differences: "
                           + "; ".join(parts) + ".")
            eb = [R.cell(results, m, "baseline", lay, c) for c in noisy for lay in R.layers(results, m)]
            er = [R.cell(results, m, "robust", lay, c) for c in noisy for lay in R.layers(results, m)]
            if None not in eb and None not in er:
                econ = [c for c in results.get("contrasts", []) if c["model"] == m and c["condition"] in noisy
                        and c.get("statistic") == "eer_robust_minus_baseline" and c["low"] is not None]
                paired = ""
                if econ:
                    paired = (f" Paired robust − baseline EER intervals (same utterances) lie below 0 in "
                              f"{sum(c['high'] < 0 for c in econ)} and above 0 in {sum(c['low'] > 0 for c in econ)} "
                              f"of {len(econ)} (layer, noisy condition) cells.")
                out.append(f"{R.MODEL_NAMES.get(m, m)}: mean EER over layers and noisy conditions, robust {np.mean(er):.1f} % vs "
                           f"baseline {np.mean(eb):.1f} % (the paper: the robust model keeps more speaker information "
                           "in noise, i.e. lower EER)." + paired)
    sp = [r for r in results.get("reference", []) if r["layer"] == "audio" and r["condition"] == "clean"]
    if sp:
        who = "synthetic voices" if part == "synthetic" else "human speakers"
        out.append(f"Speaker judge on the unprocessed clean listening windows ({who}): EER {sp[0]['eer']:.1f} % "
                   f"{_interval_pct(sp[0].get('eer_low'), sp[0].get('eer_high'))}"
                   "(the floor every layer's EER is read against).")
    if part != "synthetic":
        return out
    j = results.get("speaker", {}).get("judge", {})
    if j.get("eer_human") is not None:
        x = results["speaker"].get("xvector", {})
        syn = "" if j.get("eer_synthetic") is None else (
            f"; on the clean synthetic listening windows (voices it never saw) {100 * j['eer_synthetic']:.1f} % "
            f"{_interval_frac(j.get('eer_synthetic_low'), j.get('eer_synthetic_high'))}")
        xs = "" if x.get("eer_human") is None else (
            f" The x-vector trained here: {100 * x['eer_human']:.1f} % {_interval_frac(x.get('eer_human_low'), x.get('eer_human_high'))}"
            f"on the human speech" + ("" if x.get("eer_synthetic") is None else
                                      f", {100 * x['eer_synthetic']:.1f} % on the synthetic voices it was trained on") + ".")
        out.append(f"The judge ({j['name']}; {j['training_data']}) on the corpus's held-out human speech, clean: EER "
                   f"{100 * j['eer_human']:.1f} % {_interval_frac(j.get('eer_human_low'), j.get('eer_human_high'))}"
                   f"({j.get('n_human_utterances')} utterances of {len(j.get('human_speakers') or [])} speakers)"
                   f"{syn}.{xs}")
    return out


def _interval_pct(lo, hi) -> str:
    return "" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}] "


def _interval_frac(lo, hi) -> str:
    return "" if lo is None or hi is None else f"[{100 * lo:.1f}, {100 * hi:.1f}] "


