"""Read the results dictionary (the content of ``results.json``) for the report.

Every accessor validates only the part it reads and words errors one way: which key
is missing, where, what was found, and what the report needs it for. Nothing here
imports JAX or torch; it is plain Python and numpy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BLOCK_ORDER = ("Enc1", "Enc2", "Latent", "Dec2", "Dec1", "Refine")  # MUSE's; results without a layer map
PREFERRED_COMBO = ("utterance", "biased")


class ResultsError(ValueError):
    """The results dictionary lacks something the report needs, or holds it in the wrong form."""


def require(obj, key: str, where: str, *, why: str = ""):
    """Return ``obj[key]``; raise :class:`ResultsError` naming ``where[key]`` if absent."""
    if not isinstance(obj, Mapping):
        raise ResultsError(f"{where} must be a dict; got {type(obj).__name__}.")
    if key not in obj:
        found = ", ".join(repr(k) for k in list(obj)[:12]) or "nothing"
        hint = f" It is needed for {why}." if why else ""
        raise ResultsError(
            f"results is missing the key {key!r} at {where}[{key!r}] (found: {found}).{hint} "
            "Re-run the analysis stage, or pass a results dict that follows the results.json contract."
        )
    return obj[key]


def _records(results, key: str, fields: Sequence[str], why: str, where: str = "results") -> list:
    recs = require(results, key, where, why=why)
    at = f"{where}[{key!r}]"
    if not isinstance(recs, Sequence) or isinstance(recs, (str, bytes)):
        raise ResultsError(f"{at} must be a list of records; got {type(recs).__name__}.")
    if len(recs) == 0:
        raise ResultsError(f"{at} is empty; the report needs at least one record for {why}.")
    need = frozenset(fields)
    for i, r in enumerate(recs):
        if type(r) is dict and need <= r.keys():  # the common case, checked at set speed
            continue
        for f in fields:
            require(r, f, f"{at}[{i}]", why=why)
    return list(recs)


def finite(x, where: str) -> float:
    """``float(x)``, refusing None/NaN/inf so that no silent NaN reaches a table."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ResultsError(f"{where} must be a number; got {x!r}.") from None
    if not np.isfinite(v):
        raise ResultsError(f"{where} must be finite; got {v!r}. The analysis stage must not emit NaN.")
    return v


def bound(rec, key: str, where: str, *, optional_key: bool = False) -> float:
    """An interval bound: a finite float, or NaN standing for "no interval" when the value
    is null (or, with ``optional_key``, absent). NaN never reaches a table: it prints as
    "no interval" and draws no band."""
    if key not in rec:
        if optional_key:
            return float("nan")
        require(rec, key, where)
    if rec[key] is None:
        return float("nan")
    return finite(rec[key], f"{where}[{key!r}]")


@dataclass(frozen=True)
class Layer:
    name: str
    block: str
    index: int
    skip: str | None
    depth: int
    display: str | None = None  # the model spec's label, when the results carry one

    @property
    def label(self) -> str:
        return self.display or f"{self.block}.{self.index}"


def layers(results) -> list[Layer]:
    """The probed layers in depth order (``results['layers']``)."""
    recs = _records(results, "layers", ("name", "block", "index", "skip"), "the layer axis of every figure")
    out = []
    for d, r in enumerate(recs):
        skip = r["skip"]
        if skip not in (None, "input", "output"):
            raise ResultsError(f"results['layers'][{d}]['skip'] must be null, 'input' or 'output'; got {skip!r}.")
        label = r.get("label")
        out.append(Layer(str(r["name"]), str(r["block"]), int(r["index"]), skip, d,
                         str(label) if label is not None else None))
    names = [layer.name for layer in out]
    if len(set(names)) != len(names):
        raise ResultsError("results['layers'] lists a layer name twice; names must be unique module paths.")
    return out


def blocks(lays: Sequence[Layer]) -> list[tuple[str, list[Layer]]]:
    """Consecutive runs of layers sharing a block, in depth order."""
    groups: list[tuple[str, list[Layer]]] = []
    for layer in lays:
        if groups and groups[-1][0] == layer.block:
            groups[-1][1].append(layer)
        else:
            groups.append((layer.block, [layer]))
    return groups


def block_order(results) -> dict[str, int]:
    """block -> rank in depth order, from the layer map in ``results['layers']`` (the model's
    spec); MUSE's block order for results without one."""
    recs = results.get("layers") if isinstance(results, Mapping) else None
    if isinstance(recs, Sequence) and recs and all(isinstance(r, Mapping) and "block" in r for r in recs):
        names = list(dict.fromkeys(str(r["block"]) for r in recs))
    else:
        names = list(BLOCK_ORDER)
    return {b: i for i, b in enumerate(names)}


def short_label(results, name: str) -> str:
    """``Block.index`` for a known layer name, else the last two path components."""
    for layer in layers(results):
        if layer.name == name:
            return layer.label
    parts = str(name).split(".")
    return ".".join(parts[-2:])


CKA_FIELDS = ("layer", "block", "snr", "protocol", "estimator", "estimate", "low", "high")
REG_FIELDS = ("layer", "block", "protocol", "estimator", "slope", "intercept", "r2",
              "slope_low", "slope_high", "intercept_low", "intercept_high", "r2_low", "r2_high", "poor_fit")
TABLE1_FIELDS = ("block", "spearman", "r2", "spearman_low", "spearman_high", "r2_low", "r2_high")
TABLE1_REQUIRED = TABLE1_FIELDS[:3]  # bounds may be absent (fewer than two noise types)


def cka_records(results) -> list:
    return _records(results, "cka", CKA_FIELDS, "the CKA heatmap, curves and tables")


def regression_records(results) -> list:
    return _records(results, "regression", REG_FIELDS, "the slope/intercept figure and the regression table")


def combos(results) -> list[tuple[str, str]]:
    """(protocol, estimator) pairs present in ``results['cka']``, the preferred one first."""
    seen: list[tuple[str, str]] = []
    for r in cka_records(results):
        c = (str(r["protocol"]), str(r["estimator"]))
        if c not in seen:
            seen.append(c)
    primary = primary_combo(results, seen)
    return [primary] + [c for c in seen if c != primary]


def primary_combo(results, available=None) -> tuple[str, str]:
    """The settings' protocol/estimator if present, else utterance/biased, else the first found."""
    if available is None:
        available = combos(results)
    settings = results.get("settings", {}) if isinstance(results, Mapping) else {}
    want = (find_setting(settings, "protocol"), find_setting(settings, "estimator"))
    for cand in (want, PREFERRED_COMBO):
        if cand in available:
            return cand
    return available[0]


def resolve_combo(results, protocol, estimator) -> tuple[str, str]:
    avail = combos(results)
    p0, e0 = avail[0]
    c = (protocol or p0, estimator or e0)
    if c not in avail:
        raise ResultsError(
            f"results['cka'] has no records with protocol={c[0]!r} and estimator={c[1]!r}; "
            f"available: {', '.join(f'{p}/{e}' for p, e in avail)}."
        )
    return c


@dataclass(frozen=True)
class CkaGrid:
    snrs: np.ndarray        # (S,)
    layers: list            # [Layer] (L)
    estimate: np.ndarray    # (S, L)
    low: np.ndarray
    high: np.ndarray
    protocol: str
    estimator: str


def cka_grid(results, protocol=None, estimator=None) -> CkaGrid:
    """CKA estimates and interval bounds as (SNR, layer) arrays for one protocol/estimator."""
    protocol, estimator = resolve_combo(results, protocol, estimator)
    lays = layers(results)
    cell = {}
    for i, r in enumerate(cka_records(results)):
        if (r["protocol"], r["estimator"]) != (protocol, estimator):
            continue
        w = f"results['cka'][{i}]"
        cell[(str(r["layer"]), finite(r["snr"], w + "['snr']"))] = (
            finite(r["estimate"], w + "['estimate']"), bound(r, "low", w), bound(r, "high", w))
    snrs = np.array(sorted({s for _, s in cell}))
    est = np.empty((snrs.size, len(lays)))
    low, high = np.empty_like(est), np.empty_like(est)
    for j, layer in enumerate(lays):
        for i, s in enumerate(snrs):
            if (layer.name, s) not in cell:
                raise ResultsError(
                    f"results['cka'] has no {protocol}/{estimator} record for layer {layer.name!r} at "
                    f"SNR {s:g} dB; every layer in results['layers'] needs a value at every SNR.")
            est[i, j], low[i, j], high[i, j] = cell[(layer.name, s)]
    return CkaGrid(snrs, lays, est, low, high, protocol, estimator)


def regression_by_layer(results, protocol=None, estimator=None) -> list[dict]:
    """Regression records in layer depth order for one protocol/estimator."""
    protocol, estimator = resolve_combo(results, protocol, estimator)
    by = {}
    for i, r in enumerate(regression_records(results)):
        if (r["protocol"], r["estimator"]) == (protocol, estimator):
            w = f"results['regression'][{i}]"
            rec = {k: finite(r[k], f"{w}[{k!r}]") for k in ("slope", "intercept", "r2")}
            rec.update({k: bound(r, k, w) for k in REG_FIELDS[7:-1]})
            rec["poor_fit"] = bool(r["poor_fit"])
            by[str(r["layer"])] = rec
    out = []
    for layer in layers(results):
        if layer.name not in by:
            raise ResultsError(
                f"results['regression'] has no {protocol}/{estimator} record for layer {layer.name!r}.")
        out.append(dict(by[layer.name], layer=layer))
    return out


def diffusion(results) -> Mapping:
    return require(results, "diffusion", "results", why="Table 1 and the diffusion figures")


def table1(results, key: str = "table1") -> list[dict]:
    """Table 1 rows (DC1 vs SNR per block) in network block order; ``key`` "table1" (Markov
    coordinates) or "table1_symmetric" (the SE authors' convention)."""
    recs = _records(diffusion(results), key, TABLE1_REQUIRED, "Table 1", "results['diffusion']")
    rows = []
    for i, r in enumerate(recs):
        w = f"results['diffusion'][{key!r}][{i}]"
        rows.append({"block": str(r["block"]), "spearman": finite(r["spearman"], f"{w}['spearman']"),
                     "r2": finite(r["r2"], f"{w}['r2']"),
                     **{k: bound(r, k, w, optional_key=True) for k in TABLE1_FIELDS[3:]}})
    order = block_order(results)
    return sorted(rows, key=lambda r: order.get(r["block"], len(order)))


@dataclass(frozen=True)
class IntraLayer:
    snrs: np.ndarray             # (S,)
    dc1: dict                    # "pooled" / noise -> (S,)
    distances: np.ndarray        # (S, S)
    dist_to_clean: np.ndarray    # (S,)


def intra_layer(results, name: str) -> IntraLayer:
    intra = require(diffusion(results), "intra_layer", "results['diffusion']",
                    why="the diffusion-distance and DC1 figures")
    rec = require(intra, name, "results['diffusion']['intra_layer']", why="the diffusion figures")
    w = f"results['diffusion']['intra_layer'][{name!r}]"
    snrs = np.asarray(require(rec, "snrs", w), dtype=float)
    dc1 = require(rec, "dc1", w)
    require(dc1, "pooled", w + "['dc1']", why="the DC1 trajectories")
    dc = {str(k): np.asarray(v, dtype=float) for k, v in dc1.items()}
    dist = np.asarray(require(rec, "distances", w), dtype=float)
    to_clean = np.asarray(require(rec, "dist_to_clean", w), dtype=float)
    s = snrs.size
    bad = [k for k, v in dc.items() if v.shape != (s,)]
    if bad or dist.shape != (s, s) or to_clean.shape != (s,):
        raise ResultsError(f"{w}: shapes disagree with its {s} SNRs (dc1 {bad or 'ok'}, distances "
                           f"{dist.shape}, dist_to_clean {to_clean.shape}).")
    for k, v in [("snrs", snrs), ("distances", dist), ("dist_to_clean", to_clean), *dc.items()]:
        if not np.all(np.isfinite(v)):
            raise ResultsError(f"{w}[{k!r}] holds non-finite values; the analysis stage must not emit NaN.")
    return IntraLayer(snrs, dc, dist, to_clean)


def has_table1_symmetric(results) -> bool:
    return isinstance(results.get("diffusion"), Mapping) and bool(results["diffusion"].get("table1_symmetric"))


def _matrix_key(rec, w):
    """Inter-layer distances are under "distances" (older results: "matrix")."""
    if isinstance(rec, Mapping) and "distances" not in rec and "matrix" in rec:
        return "matrix"
    require(rec, "distances", w, why="the inter-layer diffusion figure (Fig. 5)")
    return "distances"


def inter_layer(results) -> list[tuple[float, list[str], np.ndarray]]:
    """(snr, display labels, distance matrix) per SNR, sorted by SNR.

    Labels: ``Block.index`` of the record's ``groups`` when it groups by layer; its
    ``groups`` (block names) when it groups by block; else its ``blocks`` when it has one
    per matrix row, else ``Block.index`` of its ``layers``."""
    inter = require(diffusion(results), "inter_layer", "results['diffusion']",
                    why="the inter-layer diffusion figure (Fig. 5)")
    out = []
    for key, rec in inter.items():
        w = f"results['diffusion']['inter_layer'][{key!r}]"
        names = [str(n) for n in require(rec, "layers", w)]
        m = np.asarray(rec[_matrix_key(rec, w)], dtype=float)
        blocks_ = rec.get("blocks") if isinstance(rec, Mapping) else None
        groups = rec.get("groups")
        if groups is not None and rec.get("grouping") == "layer":
            labels = [short_label(results, g) for g in groups]
        elif groups is not None:
            labels = [str(g) for g in groups]
        elif blocks_ is not None and m.ndim == 2 and len(blocks_) == len(m):
            labels = [str(b) for b in blocks_]
        else:
            labels = [short_label(results, n) for n in names]
        if m.shape != (len(labels), len(labels)) or not np.all(np.isfinite(m)):
            raise ResultsError(f"{w}['matrix'] must be a finite {len(labels)}x{len(labels)} matrix; got shape {m.shape}.")
        out.append((finite(key, f"{w} (the SNR key)"), labels, m))
    if not out:
        raise ResultsError("results['diffusion']['inter_layer'] is empty.")
    return sorted(out, key=lambda t: t[0])


def inter_layer_bounds(results) -> dict:
    """SNR -> (low, high) matrices of the inter-layer distances; empty when the results have none."""
    out = {}
    for key, rec in diffusion(results).get("inter_layer", {}).items():
        k = _matrix_key(rec, f"results['diffusion']['inter_layer'][{key!r}]")
        if f"{k}_low" in rec and f"{k}_high" in rec:
            out[float(key)] = (np.asarray(rec[f"{k}_low"], float), np.asarray(rec[f"{k}_high"], float))
    return out


def inter_layer_group_blocks(results) -> list[str] | None:
    """The block of every row of the inter-layer matrices (from the layer map, written by the
    analysis as ``group_blocks``); None for results without it."""
    for rec in diffusion(results).get("inter_layer", {}).values():
        gb = rec.get("group_blocks") if isinstance(rec, Mapping) else None
        return [str(b) for b in gb] if gb else None
    return None


def inter_layer_set(results) -> str | None:
    """The phrase naming the inter-layer point set (``results['diffusion']['inter_layer_set']``)."""
    rec = diffusion(results).get("inter_layer_set")
    return str(rec.get("description")) if isinstance(rec, Mapping) and rec.get("description") else None


def _estimate_records(results, key: str, est: str) -> list[dict] | None:
    recs = diffusion(results).get(key)
    if not recs:
        return None
    out = []
    for i, r in enumerate(recs):
        w = f"results['diffusion'][{key!r}][{i}]"
        out.append(dict(r, estimate=finite(require(r, est, w), f"{w}[{est!r}]"),
                        low=bound(r, f"{est}_low", w, optional_key=True),
                        high=bound(r, f"{est}_high", w, optional_key=True)))
    return out


def block_drift(results) -> list[dict] | None:
    """Per block: mean distance from the lowest SNR to the cleanest with its bootstrap interval."""
    return _estimate_records(results, "block_drift", "distance")


def inter_layer_mean(results) -> list[dict] | None:
    """Per SNR: mean off-diagonal inter-layer distance with its bootstrap interval."""
    return _estimate_records(results, "inter_layer_mean", "mean_off_diagonal")


def flatten_settings(settings, prefix: str = "") -> list[tuple[str, object]]:
    """Nested settings as (dotted key, value) pairs, in insertion order."""
    out = []
    if isinstance(settings, Mapping):
        for k, v in settings.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping) and v:
                out.extend(flatten_settings(v, key))
            else:
                out.append((key, v))
    return out


def find_setting(settings, *names, default=None):
    """The first setting whose last dotted component is one of ``names``."""
    for key, value in flatten_settings(settings):
        if key.rsplit(".", 1)[-1] in names:
            return value
    return default


TREND_FIELDS = ("statistic", "block", "protocol", "estimator", "estimate", "low", "high")
DEPTH_TRENDS = ("spearman_slope_depth", "spearman_intercept_depth")
BLOCK_STATS = ("block_mean_cka_0db", "block_mean_cka_lowest_snr", "block_mean_slope", "block_mean_intercept")


def has_trends(results) -> bool:
    """Whether the results carry the replicate-level trend records (``results['trends']``;
    results written before they existed do not)."""
    return isinstance(results, Mapping) and bool(results.get("trends"))


def trends(results, protocol=None, estimator=None) -> dict:
    """The trend records of one protocol/estimator.

    Returns
    -------
    dict with, per depth statistic (``DEPTH_TRENDS``) present, a record
    {estimate, low, high, ...} and under ``"blocks"`` an ordered dict block ->
    {statistic: record} for the ``BLOCK_STATS``. Estimates and bounds are floats, NaN
    where the results hold null (no interval, or a statistic undefined for the data).
    """
    protocol, estimator = resolve_combo(results, protocol, estimator)
    recs = _records(results, "trends", TREND_FIELDS, "the depth-trend and block tables")
    out: dict = {"blocks": {}}
    for i, r in enumerate(recs):
        if (r["protocol"], r["estimator"]) != (protocol, estimator):
            continue
        w = f"results['trends'][{i}]"
        rec = dict(r, estimate=bound(r, "estimate", w), low=bound(r, "low", w), high=bound(r, "high", w))
        if r["block"] is None:
            out[str(r["statistic"])] = rec
        else:
            out["blocks"].setdefault(str(r["block"]), {})[str(r["statistic"])] = rec
    if not out["blocks"] and not any(k in out for k in DEPTH_TRENDS):
        raise ResultsError(f"results['trends'] has no {protocol}/{estimator} records.")
    order = block_order(results)
    out["blocks"] = dict(sorted(out["blocks"].items(), key=lambda kv: order.get(kv[0], len(order))))
    return out
