"""Long-format CSV tables of a study (cka.csv, regression.csv, table1.csv, and trends.csv
when the results carry trend records) and the
rows of the report's tables. CSVs are written with the csv module, floats as Python's
shortest round-trip repr, atomically (temp name, then ``os.replace``)."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import uuid
from pathlib import Path

import numpy as np

from jaxprobe.report import _results as R

CSV_COLUMNS = {
    "cka": R.CKA_FIELDS,
    "regression": R.REG_FIELDS,
    "table1": R.TABLE1_FIELDS,
    "trends": R.TREND_FIELDS,
}


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def write_csv(path, columns, records) -> Path:
    """The contract columns first, then any extra keys the records carry (e.g. per-design
    bounds ``low_hierarchical``), in first-seen order; absent cells are left empty."""
    cols = list(columns)
    for r in records:
        cols += [k for k in r if k not in cols and not isinstance(r[k], (dict, list))]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in records:
        w.writerow([_cell(r.get(c)) for c in cols])
    return atomic_write_text(path, buf.getvalue())


def write_csvs(results, out_dir) -> dict[str, Path]:
    """Write cka.csv, regression.csv, table1.csv and, when the results have trend records,
    trends.csv (one row per record, every combination)."""
    out = Path(out_dir)
    paths = {
        "cka": write_csv(out / "cka.csv", CSV_COLUMNS["cka"], R.cka_records(results)),
        "regression": write_csv(out / "regression.csv", CSV_COLUMNS["regression"], R.regression_records(results)),
        "table1": write_csv(out / "table1.csv", CSV_COLUMNS["table1"], _table1_raw(results)),
    }
    if R.has_trends(results):
        paths["trends"] = write_csv(out / "trends.csv", CSV_COLUMNS["trends"], results["trends"])
    if R.has_table1_symmetric(results):
        paths["table1_symmetric"] = write_csv(out / "table1_symmetric.csv", CSV_COLUMNS["table1"],
                                               _table1_raw(results, "table1_symmetric"))
    rows = _diffusion_interval_rows(results)
    if rows:
        paths["diffusion_intervals"] = write_csv(out / "diffusion_intervals.csv", DIFFUSION_INTERVAL_FIELDS, rows)
    return paths


DIFFUSION_INTERVAL_FIELDS = ("map", "layer", "snr", "row", "column", "estimate", "low", "high")


def _diffusion_interval_rows(results) -> list[dict]:
    """Every diffusion distance with its bootstrap bounds, one row per matrix cell: intra-layer
    (map = layer; row/column = SNRs) and inter-layer (map = SNR; row/column = layers or blocks)."""
    d = R.diffusion(results)
    out = []
    for name, rec in (d.get("intra_layer") or {}).items():
        if "distances_low" not in rec:
            continue
        snrs = rec["snrs"]
        for i, a in enumerate(snrs):
            for j, b in enumerate(snrs):
                out.append({"map": "intra_layer", "layer": name, "snr": None, "row": a, "column": b,
                            "estimate": rec["distances"][i][j], "low": rec["distances_low"][i][j],
                            "high": rec["distances_high"][i][j]})
    for key, rec in (d.get("inter_layer") or {}).items():
        if "distances_low" not in rec:
            continue
        groups = rec.get("groups") or rec.get("layers")
        for i, a in enumerate(groups):
            for j, b in enumerate(groups):
                out.append({"map": "inter_layer", "layer": None, "snr": float(key), "row": a, "column": b,
                            "estimate": rec["distances"][i][j], "low": rec["distances_low"][i][j],
                            "high": rec["distances_high"][i][j]})
    return out


def _table1_raw(results, key: str = "table1") -> list:
    R.table1(results, key)  # validates
    order = R.block_order(results)
    recs = results["diffusion"][key]
    return sorted(recs, key=lambda r: order.get(r["block"], len(order)))


def read_csv(path) -> list[dict]:
    """Read a CSV written by :func:`write_csvs` back, converting numbers and booleans."""
    def conv(s: str):
        if s == "":
            return None
        if s in ("true", "false"):
            return s == "true"
        try:
            return float(s)
        except ValueError:
            return s

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: conv(v) for k, v in row.items()} for row in csv.DictReader(f)]


def ci(est: float, low: float, high: float, digits: int = 3) -> str:
    """``0.930 [0.910, 0.950]``; ``0.930 [no interval]`` when a bound is NaN (null in the results)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{est:.{digits}f} [no interval]"
    return f"{est:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table1_rows(results) -> tuple[list[str], list[list[str]]]:
    """Table 1 per block; with ``table1_symmetric`` in the results, both coordinate conventions."""
    rows = R.table1(results)
    head = ["Block", "Spearman ρ [interval]", "R² [interval]"]
    body = [[r["block"], ci(r["spearman"], r["spearman_low"], r["spearman_high"]),
             ci(r["r2"], r["r2_low"], r["r2_high"])] for r in rows]
    if R.has_table1_symmetric(results):
        sym = {r["block"]: r for r in R.table1(results, "table1_symmetric")}
        head = ["Block", "ρ, Markov [interval]", "R², Markov [interval]", "ρ, symmetric [interval]",
                "R², symmetric [interval]"]
        for row in body:
            r = sym.get(row[0])
            row += ([ci(r["spearman"], r["spearman_low"], r["spearman_high"]), ci(r["r2"], r["r2_low"], r["r2_high"])]
                    if r else ["n/a", "n/a"])
    return head, body


def regression_rows(results, protocol=None, estimator=None) -> tuple[list[str], list[list[str]]]:
    head = ["Layer", "Block", "Skip", "Slope (CKA/dB) [interval]", "Intercept at 0 dB [interval]",
            "R² [interval]", "Fit"]
    body = []
    for r in R.regression_by_layer(results, protocol, estimator):
        layer = r["layer"]
        body.append([layer.label, layer.block, layer.skip or "",
                     ci(r["slope"], r["slope_low"], r["slope_high"], 4),
                     ci(r["intercept"], r["intercept_low"], r["intercept_high"]),
                     ci(r["r2"], r["r2_low"], r["r2_high"]), "poor" if r["poor_fit"] else "ok"])
    return head, body


TREND_LABELS = {
    "spearman_slope_depth": "Spearman ρ, slope vs layer depth",
    "spearman_intercept_depth": "Spearman ρ, intercept vs layer depth",
}


def trend_rows(results, protocol=None, estimator=None) -> tuple[list[str], list[list[str]]]:
    """The depth trends of the per-layer fits, each with its replicate interval."""
    t = R.trends(results, protocol, estimator)
    n = len(R.layers(results))
    head = ["Statistic", "Estimate [interval]", "Layers"]
    body = [[TREND_LABELS[k], _ci_or_undefined(t[k]), str(n)] for k in R.DEPTH_TRENDS if k in t]
    return head, body


def block_rows(results, protocol=None, estimator=None) -> tuple[list[str], list[list[str]]]:
    """Per block: mean over its layers of the CKA near 0 dB and at the lowest SNR, of the
    slope and of the intercept, each with its replicate interval."""
    t = R.trends(results, protocol, estimator)
    count = {name: len(group) for name, group in R.blocks(R.layers(results))}
    first = next(iter(t["blocks"].values()), {})

    def snr_of(stat, fallback):
        v = first.get(stat, {}).get("snr")
        return f"{float(v):g} dB" if v is not None else fallback

    head = ["Block", "Layers", f"Mean CKA at {snr_of('block_mean_cka_0db', '0 dB')} [interval]",
            f"Mean CKA at {snr_of('block_mean_cka_lowest_snr', 'the lowest SNR')} [interval]",
            "Mean slope (CKA/dB) [interval]", "Mean intercept at 0 dB [interval]"]
    body = []
    for block, recs in t["blocks"].items():
        cells = [_ci_or_undefined(recs[k], 4 if k == "block_mean_slope" else 3) if k in recs else "n/a"
                 for k in R.BLOCK_STATS]
        body.append([block, str(count.get(block, ""))] + cells)
    return head, body


def _ci_or_undefined(rec, digits: int = 3) -> str:
    if not np.isfinite(rec["estimate"]):
        return "undefined"
    return ci(rec["estimate"], rec["low"], rec["high"], digits)


def summary_snrs(snrs: np.ndarray) -> list[float]:
    """The lowest SNR, the one nearest 0 dB and the highest, without repeats."""
    picks = [float(snrs.min()), float(snrs[np.argmin(np.abs(snrs))]), float(snrs.max())]
    return sorted(set(picks))


def cka_rows(results, protocol=None, estimator=None) -> tuple[list[str], list[list[str]]]:
    """Per layer: CKA with its interval at the lowest SNR, near 0 dB and at the highest SNR."""
    g = R.cka_grid(results, protocol, estimator)
    picks = summary_snrs(g.snrs)
    cols = [int(np.flatnonzero(g.snrs == s)[0]) for s in picks]
    head = ["Layer", "Block"] + [f"CKA at {s:g} dB [interval]" for s in picks]
    body = [[layer.label, layer.block] + [ci(g.estimate[i, j], g.low[i, j], g.high[i, j]) for i in cols]
            for j, layer in enumerate(g.layers)]
    return head, body


def settings_rows(results) -> tuple[list[str], list[list[str]]]:
    flat = R.flatten_settings(R.require(results, "settings", "results", why="the settings table"))
    return ["Setting", "Value"], [[k, _show(v)] for k, v in flat]


def data_rows(results) -> tuple[list[str], list[list[str]]]:
    data = R.require(results, "data", "results", why="the data summary")
    for key in ("n_utterances", "noises", "snrs", "n_windows", "corpus"):
        R.require(data, key, "results['data']", why="the data summary")
    snrs = np.asarray(data["snrs"], dtype=float)
    step = np.unique(np.round(np.diff(snrs), 9)) if snrs.size > 1 else np.array([])
    grid = f"{snrs.size} values, {snrs.min():g} to {snrs.max():g} dB" + (
        f" in steps of {step[0]:g} dB" if step.size == 1 else "")
    rows = [["Corpus", str(data["corpus"])], ["Utterances", str(data["n_utterances"])],
            ["Noise types", f"{len(data['noises'])}: {', '.join(map(str, data['noises']))}"],
            ["SNR grid", grid], ["Windows per utterance", str(data["n_windows"])]]
    rows += [[k, _show(v)] for k, v in data.items() if k not in ("n_utterances", "noises", "snrs", "n_windows", "corpus")]
    return ["Item", "Value"], rows


def _show(v, nested: bool = False) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        parts = [_show(x, True) for x in v[:12 if len(v) <= 12 else 5]]
        text = ", ".join(parts) if len(v) <= 12 else f"{len(v)} values: " + ", ".join(parts) + ", ..."
        return f"({text})" if nested else text
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_show(x, True)}" for k, x in v.items()) + "}"
    return "null" if v is None else str(v)
