"""Score a listening test of the hear study: human speaker-discrimination error per layer.

The answers file (CSV, one row per answered triplet) has the columns of :data:`COLUMNS`:
``listener`` (an id), ``triplet`` (the triplet's id: the same id for every listener who heard it),
``model``, ``regime``, ``layer``, ``condition`` (the cell the triplet's audio comes from),
``answer`` and ``truth`` (``A`` or ``B``: the first or the second utterance's speaker). A triplet is
the paper's: two utterances of different speakers, then a third by one of them; which one?
Chance is 50 % error.

The error rate of a cell is the share of its answers that are wrong. Its interval resamples
listeners and triplets together (a crossed bootstrap: replicate b weights an answer by
``c_listener * c_triplet``, the multiplicities of its listener and its triplet among the
resampled ones), the same resamples for every cell; percentile intervals. Resampling answers
alone would treat one listener's answers (or one triplet's) as independent and give too narrow
an interval.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from jaxprobe.errors import DataError

COLUMNS = ("listener", "triplet", "model", "regime", "layer", "condition", "answer", "truth")
CELL = ("model", "regime", "layer", "condition")


def read_answers(paths) -> list[dict]:
    """The rows of one or more answers files; a missing column or an answer other than A/B is a
    DataError naming the file, the row and the column."""
    rows = []
    for path in [Path(p) for p in paths]:
        if not path.is_file():
            raise FileNotFoundError(f"Answers file {str(path)!r} does not exist.")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"Answers file {str(path)!r} lacks the column(s) {missing}; expected {list(COLUMNS)}.")
            for i, r in enumerate(reader, start=2):
                for c in ("answer", "truth"):
                    if r[c].strip().upper() not in ("A", "B"):
                        raise DataError(f"Answers file {str(path)!r}, line {i}: column '{c}' must be A or B; got {r[c]!r}.")
                rows.append({k: r[k].strip() for k in COLUMNS})
    if not rows:
        raise DataError("The answers file(s) hold no answers.")
    return rows


def score_answers(rows, *, seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> list[dict]:
    """Per cell: error rate (fraction), its interval (listeners and triplets resampled), counts."""
    import jax

    from jaxprobe.bootstrap import resample_counts

    listeners = sorted({r["listener"] for r in rows})
    triplets = sorted({r["triplet"] for r in rows})
    li = {v: k for k, v in enumerate(listeners)}
    ti = {v: k for k, v in enumerate(triplets)}
    key = jax.random.key(seed)
    CL = np.asarray(resample_counts(jax.random.fold_in(key, 0), n_boot, len(listeners)), np.float64) \
        if len(listeners) > 1 else np.ones((n_boot, 1))
    CT = np.asarray(resample_counts(jax.random.fold_in(key, 1), n_boot, len(triplets)), np.float64) \
        if len(triplets) > 1 else np.ones((n_boot, 1))
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault(tuple(r[c] for c in CELL), []).append(r)
    out = []
    for cell, rs in cells.items():
        err = np.array([r["answer"].upper() != r["truth"].upper() for r in rs], np.float64)
        W = CL[:, [li[r["listener"]] for r in rs]] * CT[:, [ti[r["triplet"]] for r in rs]]  # (B, answers)
        tot = W.sum(axis=1)
        reps = (W @ err)[tot > 0] / tot[tot > 0]
        a = (1.0 - level) / 2
        lo, hi = (np.quantile(reps, [a, 1 - a]) if reps.size >= 2 else (None, None))
        out.append({**dict(zip(CELL, cell)), "error_rate": float(err.mean()),
                    "low": None if lo is None else float(lo), "high": None if hi is None else float(hi),
                    "n_answers": len(rs), "n_listeners": len({r["listener"] for r in rs}),
                    "n_triplets": len({r["triplet"] for r in rs}), "n_boot": int(reps.size)})
    return out


def _judge_eer(results: dict | None, rec: dict):
    if not results:
        return None
    for r in results.get("probe", []) + results.get("reference", []):
        if all(str(r.get(c)) == rec[c] for c in CELL):
            return None if r.get("eer") is None else r["eer"] / 100.0
    return None


def write_scores(records, out_dir, results: dict | None = None) -> dict[str, Path]:
    """human_error.csv, human_error.md and human_error_per_layer.png in ``out_dir``; with the
    study's results.json, the judge's EER of each cell beside the human error."""
    from jaxprobe.report._style import PAGE_WIDTH, new_figure, save, style
    from jaxprobe.report.tables import write_csv
    from jaxprobe.studies._common import ensure_writable_dir

    out = ensure_writable_dir(out_dir, "--out")
    recs = [{**r, "judge_eer": _judge_eer(results, r)} for r in records]
    paths = {"csv": write_csv(out / "human_error.csv", list(CELL) + ["error_rate", "low", "high", "judge_eer",
                                                                       "n_answers", "n_listeners", "n_triplets"], recs)}
    f = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| model | regime | layer | condition | human error % [95 % interval] | judge EER % | answers | listeners |",
             "|---|---|---|---|---|---|---|---|"]
    for r in recs:
        lines.append(f"| {r['model']} | {r['regime']} | {r['layer']} | {r['condition']} | {f(r['error_rate'])} "
                     f"[{f(r['low'])}, {f(r['high'])}] | {f(r['judge_eer'])} | {r['n_answers']} | {r['n_listeners']} |")
    paths["md"] = out / "human_error.md"
    paths["md"].write_text("\n".join(lines) + "\n")
    series = {}
    for r in recs:
        series.setdefault((r["model"], r["regime"], r["condition"]), []).append(r)
    models = sorted({r["model"] for r in recs})
    with style():
        fig = new_figure(PAGE_WIDTH, 2.5)
        axes = fig.subplots(1, len(models), squeeze=False)[0]
        for ax, m in zip(axes, models):
            layers = list(dict.fromkeys(r["layer"] for r in recs if r["model"] == m))
            for (mm, regime, cond), rs in series.items():
                if mm != m:
                    continue
                x = [layers.index(r["layer"]) for r in rs]
                y = [100 * r["error_rate"] for r in rs]
                err = [[100 * (r["error_rate"] - (r["low"] if r["low"] is not None else r["error_rate"])) for r in rs],
                       [100 * ((r["high"] if r["high"] is not None else r["error_rate"]) - r["error_rate"]) for r in rs]]
                line = ax.errorbar(x, y, yerr=err, marker="o", ms=3, lw=1, capsize=2, label=f"human, {regime}, {cond}")
                je = [(xi, 100 * r["judge_eer"]) for xi, r in zip(x, rs) if r["judge_eer"] is not None]
                if je:
                    ax.plot(*zip(*je), ls="--", marker="s", ms=3, lw=1, color=line[0].get_color(),
                            label=f"judge EER, {regime}, {cond}")
            ax.axhline(50, color="#999", lw=0.5, ls=":")
            ax.set_xticks(range(len(layers)), layers, rotation=45 if len(layers) > 6 else 0)
            ax.set_ylim(0, 100)
            ax.set_title(m)
            ax.set_ylabel("error (%)")
            ax.set_xlabel("layer (input → output)")
        h, lab = axes[0].get_legend_handles_labels()
        fig.legend(h, lab, loc="outside right center")
        paths["png"], _ = save(fig, out, "human_error_per_layer", ("png",))
    return paths
