"""Tables and sentences of the quality stage (``results['quality']``, ``results['correlations']``)."""
from __future__ import annotations

from jaxprobe.report.axis import AXES, axis_of

METRIC_NAMES = {"pesq": "PESQ", "stoi": "STOI", "si_sdr": "SI-SDR"}


def _iv(r, fmt="{:.2f}") -> str:
    if r is None or r.get("estimate") is None:
        return "—"
    return f"{fmt.format(r['estimate'])} [{fmt.format(r['low'])}, {fmt.format(r['high'])}]"


def quality_rows(results):
    """Per level: each metric of the noisy input and of the enhanced output with its interval."""
    recs = [r for r in results["quality"] if r["noise"] == "all"]
    metrics = [m for m in METRIC_NAMES if any(r["metric"] == m for r in recs)]
    levels = sorted({r["level"] for r in recs})
    get = {(r["metric"], r["input"], r["level"]): r for r in recs}
    head = ["Level"] + [f"{METRIC_NAMES[m]} {inp}" for m in metrics for inp in ("noisy", "enhanced")]
    rows = [[f"{lv:g}"] + [_iv(get.get((m, inp, lv)), "{:.1f}" if m == "si_sdr" else "{:.2f}")
                           for m in metrics for inp in ("noisy", "enhanced")] for lv in levels]
    return head, rows


def correlation_findings(results) -> list[str]:
    """Sentences: quality at the worst and best level, the layers whose CKA best predicts quality."""
    axis = axis_of(results)
    name, unit, _ = AXES[axis]
    recs = [r for r in results["quality"] if r["noise"] == "all" and r["estimate"] is not None]
    out = []
    if recs:
        lo, hi = min(r["level"] for r in recs), max(r["level"] for r in recs)
        get = {(r["metric"], r["input"], r["level"]): r for r in recs}
        for m in METRIC_NAMES:
            a, b = get.get((m, "noisy", lo)), get.get((m, "enhanced", lo))
            c, d = get.get((m, "noisy", hi)), get.get((m, "enhanced", hi))
            if a and b and c and d:
                f = "{:.1f}" if m == "si_sdr" else "{:.2f}"
                out.append(f"{METRIC_NAMES[m]} at {name} {lo:g}: noisy {_iv(a, f)}, enhanced {_iv(b, f)}; "
                           f"at {hi:g}: noisy {_iv(c, f)}, enhanced {_iv(d, f)}.")
    ex = (results.get("quality_excluded") or {}).get("counts") or {}
    n = (results.get("quality_excluded") or {}).get("n_items")
    for m, c in ex.items():
        out.append(f"{METRIC_NAMES.get(m, m)}: {c['noisy']} noisy and {c['enhanced']} enhanced item(s) of {n} could not "
                   "be scored; they are left out of the means and correlations (listed in results.json).")
    corr = [r for r in results.get("correlations", []) if r["level"] == "all" and r["rho"] is not None]
    for m in METRIC_NAMES:
        for target in ("enhanced", "improvement"):
            rows = [r for r in corr if r["metric"] == m and r["target"] == target]
            if not rows:
                continue
            best = max(rows, key=lambda r: r["rho"])
            worst = min(rows, key=lambda r: r["rho"])
            what = f"enhanced {METRIC_NAMES[m]}" if target == "enhanced" else f"{METRIC_NAMES[m]} improvement"
            out.append(f"Per-item CKA vs {what} (Spearman ρ pooled over levels, {rows[0]['n']} items): highest in "
                       f"{best['layer']} ({best['block']}) ρ = {best['rho']:.2f} [{best['low']:.2f}, {best['high']:.2f}], "
                       f"lowest in {worst['layer']} ({worst['block']}) ρ = {worst['rho']:.2f} "
                       f"[{worst['low']:.2f}, {worst['high']:.2f}].")
    return out
