"""`jaxprobe compare`: one report across models run on the same data.

Each input is the output folder of a `jaxprobe sweep` run (its ``results.json`` and activation
store). Everything about a model — its layers, blocks, skip roles and depth order — is read
from that run's ``results.json``, never from a model's constants, so any model the sweep can
probe can be compared. The runs must share their data (utterances, noise types, mixing
settings), their degradation levels (the SNR grid) and their seed: the comparison refuses runs
that differ in any of them and names each difference (the argument, what was expected, what
arrived).

What it computes, for one protocol/estimator of the per-run CKA (default: the first run's
headline one):

* per model, the CKA-vs-SNR curve of every layer with its interval, the slope and intercept
  of the CKA-vs-SNR line per layer against *normalised depth* (layer position / (L - 1), so
  models with different numbers of layers share one axis), the block means and the depth
  trends — all copied from each run's results, with their bootstrap intervals;
* the cross-model CKA of every layer pair: linear CKA (``jaxprobe.cka_matrix``) between the
  pooled activations of model A's layer i and model B's layer j over the *same inputs* —
  samples are the inputs (by default the clean utterances), features the flattened pooled
  activation of the layer, so layers of any width compare. When a model cut an utterance into
  several windows, the windows' pooled activations are averaged per utterance first. With few
  inputs CKA is biased upwards for any pair of representations, so every value comes with a
  permutation null: the same CKA after shuffling which input of B is paired with which input
  of A (all n! orders for n <= 7 inputs, else ``n_perm`` random ones), its mean and the
  permutation p-value.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxprobe.errors import UserError
from jaxprobe.report import _results as R
from jaxprobe.studies._common import atomic_json, ensure_writable_dir, stage_logger

CLEAN = "clean"
INPUTS = ("clean", "all")
INPUT_WORDS = {"clean": "the clean utterances", "all": "every input (clean and noisy)"}
# settings.data keys that say how a model cuts an utterance or where the files live, not which
# data it is: they may differ between the runs being compared
MODEL_DEPENDENT_DATA = ("window", "hop", "cache_dir")
# results["data"] keys that depend on the model's windowing
MODEL_DEPENDENT_COUNTS = ("corpus", "n_items", "n_windows")
EXHAUSTIVE_PERMUTATIONS_UP_TO = 7  # 7! = 5040 orders
FEW_INPUTS = 20  # below this many inputs the report warns that cross-model CKA is biased upwards

_log = stage_logger("compare")


class CompareError(UserError, ValueError):
    """Runs that cannot be compared (different data, levels or seeds; missing files)."""


@dataclass(frozen=True)
class Run:
    """One input run folder: its label, path and results dictionary."""

    label: str
    path: Path
    results: dict

    @property
    def model(self) -> str:
        m = (self.results.get("settings") or {}).get("model") or {}
        return str(m.get("name", "model")) if isinstance(m, dict) else str(m)

    @property
    def layers(self) -> list:
        return R.layers(self.results)

    @property
    def store(self) -> Path:
        rel = R.require(R.require(self.results, "settings", "results"), "store", "results['settings']",
                        why="the cross-model CKA (the clean activations)")
        return (self.path / rel) if not Path(rel).is_absolute() else Path(rel)


# ----------------------------------------------------------------------------- reading runs

def load_run(path, position: int, label: str | None = None) -> Run:
    """The run folder ``path`` (the ``position``-th RUN_DIR, from 1) with its results.json."""
    p = Path(path).expanduser()
    res = p / "results.json"
    what = f"RUN_DIR {position} ({str(p)!r})"
    if not res.is_file():
        raise CompareError(f"{what} must be an output folder of `jaxprobe sweep` holding results.json; "
                           f"{res} does not exist. Run `jaxprobe sweep --out {p}` first (or give the folder "
                           f"it wrote).")
    try:
        results = json.loads(res.read_text())
    except (OSError, ValueError) as exc:
        raise CompareError(f"{what}: {res} cannot be read as JSON ({exc}); re-run `jaxprobe sweep` on it.") from None
    try:
        for key in ("settings", "data", "layers", "cka", "regression"):
            R.require(results, key, "results", why="the comparison")
        R.layers(results)
    except R.ResultsError as exc:
        raise CompareError(f"{what}: {exc}") from None
    return Run(label or "", p, results)


def _labels(runs_paths, results_list, labels) -> list[str]:
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != len(runs_paths):
            raise CompareError(f"--labels must give one label per RUN_DIR: expected {len(runs_paths)}, got "
                               f"{len(labels)} ({labels}).")
        if len(set(labels)) != len(labels):
            raise CompareError(f"--labels must be distinct; got {labels}.")
        return labels
    names = []
    for res in results_list:
        m = (res.get("settings") or {}).get("model") or {}
        names.append(str(m.get("name", "model")) if isinstance(m, dict) else str(m))
    if len(set(names)) == len(names):
        return names
    # the same model twice (e.g. two checkpoints): the folder names tell them apart
    return [f"{n} ({Path(p).name})" for n, p in zip(names, runs_paths)]


# ----------------------------------------------------------------------------- same data, levels, seeds

def _norm(v):
    """Values as compared: numbers as floats, tuples as lists, dicts recursively."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in v.items()}
    return v


_ABSENT = "<absent>"


def _diff(kind: str, where: str, a, b, out: list) -> None:
    if _norm(a) != _norm(b):
        out.append((kind, where, a, b))


def _store_manifest(run: Run) -> dict | None:
    path = run.store / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def differences(ref: Run, other: Run) -> list[tuple[str, str, object, object]]:
    """How ``other`` differs from ``ref`` in data, levels or seed: (kind, where, expected, got)
    with kind "data", "levels" or "seed"; empty when they can be compared."""
    out: list = []
    s_ref, s_oth = ref.results.get("settings") or {}, other.results.get("settings") or {}
    # data: the shared data settings (not the model's windowing) and what was actually selected
    d_ref, d_oth = s_ref.get("data") or {}, s_oth.get("data") or {}
    for k in sorted(set(d_ref) | set(d_oth)):
        if k not in MODEL_DEPENDENT_DATA:
            _diff("data", f"settings data.{k}", d_ref.get(k, _ABSENT), d_oth.get(k, _ABSENT), out)
    r_ref, r_oth = ref.results["data"], other.results["data"]
    for k in sorted(set(r_ref) | set(r_oth)):
        if k in MODEL_DEPENDENT_COUNTS:
            continue
        kind = "levels" if (k == "snrs" or "level" in k) else "data"
        _diff(kind, f"results data.{k}", r_ref.get(k, _ABSENT), r_oth.get(k, _ABSENT), out)
    # levels and seed of the sweep itself (the grid keys only matter through data.snrs above)
    sw_ref, sw_oth = s_ref.get("sweep") or {}, s_oth.get("sweep") or {}
    _diff("seed", "settings sweep.seed", sw_ref.get("seed", _ABSENT), sw_oth.get("seed", _ABSENT), out)
    for k in sorted(set(sw_ref) | set(sw_oth)):
        if k not in ("seed", "snrs", "snr_min", "snr_max", "snr_step"):
            _diff("levels", f"settings sweep.{k}", sw_ref.get(k, _ABSENT), sw_oth.get(k, _ABSENT), out)
    # the stores: the mixtures they were made from (everything but the model's windows)
    m_ref, m_oth = _store_manifest(ref), _store_manifest(other)
    if m_ref is not None and m_oth is not None:
        mx_ref = {k: v for k, v in (m_ref.get("mixing") or {}).items() if k != "window"}
        mx_oth = {k: v for k, v in (m_oth.get("mixing") or {}).items() if k != "window"}
        for k in sorted(set(mx_ref) | set(mx_oth)):
            kind = "seed" if k == "seed" else "levels" if k == "snrs" else "data"
            _diff(kind, f"store mixing.{k}", mx_ref.get(k, _ABSENT), mx_oth.get(k, _ABSENT), out)
        for k in ("conditions", "utterances"):
            _diff("data" if k == "utterances" else "levels", f"store plan.{k}",
                  (m_ref.get("plan") or {}).get(k, _ABSENT), (m_oth.get("plan") or {}).get(k, _ABSENT), out)
    return out


def _short(v, limit: int = 120) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def check_comparable(runs: list[Run]) -> None:
    """Refuse runs whose data, levels or seeds differ from the first run's; the message names
    every difference: (where, expected, got) per run."""
    problems = []
    for i, run in enumerate(runs[1:], start=2):
        diffs = differences(runs[0], run)
        if diffs:
            items = "; ".join(f"{kind}: {where} expected {_short(a)} (as RUN_DIR 1), got {_short(b)}"
                              for kind, where, a, b in diffs)
            problems.append(f"RUN_DIR {i} ({run.label!r}, {str(run.path)!r}) differs from RUN_DIR 1 "
                            f"({runs[0].label!r}) in {len(diffs)} place(s): {items}")
    if problems:
        kinds = sorted({d[0] for run in runs[1:] for d in differences(runs[0], run)})
        raise CompareError("jaxprobe compare needs runs of the same data, levels and seeds (only the model may "
                           f"differ); these differ in {', '.join(kinds)}. " + " | ".join(problems)
                           + ". Re-run `jaxprobe sweep` for those models with the [data] and [sweep] settings "
                           "of RUN_DIR 1.")


def _analysis_notes(runs: list[Run]) -> list[str]:
    """Analysis settings that differ between runs (allowed, but said: intervals then differ)."""
    notes = []
    ref = (runs[0].results.get("settings") or {}).get("cka") or {}
    for run in runs[1:]:
        c = (run.results.get("settings") or {}).get("cka") or {}
        for k in sorted(set(ref) | set(c)):
            if _norm(ref.get(k)) != _norm(c.get(k)):
                notes.append(f"The CKA setting cka.{k} differs: {runs[0].label} {_short(ref.get(k))}, "
                             f"{run.label} {_short(c.get(k))}; intervals of the two are not computed alike.")
    return notes


# ----------------------------------------------------------------------------- per-model tables

def _norm_depth(layer, n: int) -> float:
    return layer.depth / (n - 1) if n > 1 else 0.0


def _layer_records(run: Run) -> list[dict]:
    lays = run.layers
    shapes = {r["name"]: r.get("shape") for r in run.results["layers"]}
    return [{"model": run.label, "layer": l.name, "label": l.label, "block": l.block, "index": l.index,
             "skip": l.skip, "depth": l.depth, "norm_depth": _norm_depth(l, len(lays)),
             "shape": shapes.get(l.name)} for l in lays]


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _curve_records(run: Run, protocol: str, estimator: str) -> list[dict]:
    g = R.cka_grid(run.results, protocol, estimator)
    n = len(g.layers)
    return [{"model": run.label, "layer": l.name, "label": l.label, "block": l.block,
             "norm_depth": _norm_depth(l, n), "snr": float(s), "estimate": float(g.estimate[i, j]),
             "low": _num(g.low[i, j]), "high": _num(g.high[i, j])}
            for j, l in enumerate(g.layers) for i, s in enumerate(g.snrs)]


def _profile_records(run: Run, protocol: str, estimator: str) -> list[dict]:
    rows = R.regression_by_layer(run.results, protocol, estimator)
    n = len(rows)
    out = []
    for r in rows:
        l = r["layer"]
        out.append({"model": run.label, "layer": l.name, "label": l.label, "block": l.block, "index": l.index,
                    "skip": l.skip, "norm_depth": _norm_depth(l, n),
                    **{k: _num(r[k]) for k in ("slope", "slope_low", "slope_high", "intercept", "intercept_low",
                                               "intercept_high", "r2", "r2_low", "r2_high")},
                    "poor_fit": bool(r["poor_fit"])})
    return out


def _block_records(run: Run, protocol: str, estimator: str) -> tuple[list[dict], list[dict]]:
    """Block means (with the blocks' normalised depth span) and depth trends of one run."""
    lays = run.layers
    span = {}
    for name, group in R.blocks(lays):
        span[name] = (_norm_depth(group[0], len(lays)), _norm_depth(group[-1], len(lays)), len(group))
    if not R.has_trends(run.results):
        return [], []
    t = R.trends(run.results, protocol, estimator)
    blocks = []
    for block, stats in t["blocks"].items():
        lo_d, hi_d, n = span.get(block, (None, None, None))
        rec = {"model": run.label, "block": block, "n_layers": n, "norm_depth_first": lo_d, "norm_depth_last": hi_d}
        for stat in R.BLOCK_STATS:
            if stat in stats:
                s = stats[stat]
                rec[stat] = _num(s["estimate"])
                rec[f"{stat}_low"] = _num(s["low"])
                rec[f"{stat}_high"] = _num(s["high"])
                if s.get("snr") is not None:
                    rec[f"{stat}_snr"] = float(s["snr"])
        blocks.append(rec)
    order = [name for name, _ in R.blocks(lays)]
    blocks.sort(key=lambda r: order.index(r["block"]) if r["block"] in order else len(order))
    trends = [{"model": run.label, "statistic": k, "estimate": _num(t[k]["estimate"]), "low": _num(t[k]["low"]),
               "high": _num(t[k]["high"])} for k in R.DEPTH_TRENDS if k in t]
    return blocks, trends


# ----------------------------------------------------------------------------- cross-model CKA

def input_activations(run: Run, inputs: str = "clean"):
    """The pooled activations of every layer of ``run`` over the inputs, flattened.

    Returns
    -------
    keys : list of (utterance, noise, snr) tuples, sorted; the inputs (noise "clean" and snr
        None for the clean reference)
    acts : list (one per layer, depth order) of float32 arrays of shape (n_inputs, prod(shape)),
        windows of one input averaged
    """
    from torch_bridge.store import StoreIntegrityError, open_store  # numpy only; no torch

    store_dir = run.store
    if not (store_dir / "manifest.json").is_file():
        raise CompareError(f"The activation store of run {run.label!r} ({store_dir}) is missing; the cross-model CKA "
                           f"reads the clean activations from it. Re-run `jaxprobe sweep --out {run.path}` (it is "
                           f"cached) to restore it.")
    try:
        store = open_store(store_dir)
        store.require_complete()
    except (StoreIntegrityError, ValueError, OSError) as exc:
        raise CompareError(f"The activation store of run {run.label!r} ({store_dir}) cannot be read: {exc}") from None
    idx = store.index()
    noise = idx.condition_field("noise")
    snr = idx.condition_field("snr")
    utt = idx.utterance_ids()
    rows, keys = [], []
    for r in range(len(idx)):
        is_clean = str(noise[r]) == CLEAN
        if inputs == "clean" and not is_clean:
            continue
        s = None if is_clean or snr[r] is None else float(snr[r])
        rows.append(int(idx.item[r]))
        keys.append((str(utt[r]), str(noise[r]), s))
    if not rows:
        raise CompareError(f"The activation store of run {run.label!r} ({store_dir}) holds no clean reference "
                           f"items (condition noise = {CLEAN!r}); the cross-model CKA needs them.")
    uniq = sorted(set(keys), key=lambda k: (k[0], k[1], -math.inf if k[2] is None else k[2]))
    pos = {k: i for i, k in enumerate(uniq)}
    code = np.array([pos[k] for k in keys])
    counts = np.bincount(code, minlength=len(uniq)).astype(np.float64)
    acts = []
    for layer in run.layers:
        a = np.asarray(store.read(layer.name, np.asarray(rows)), np.float64).reshape(len(rows), -1)
        m = np.zeros((len(uniq), a.shape[1]))
        np.add.at(m, code, a)
        acts.append((m / counts[:, None]).astype(np.float32))
    return uniq, acts


def _permutations(n: int, n_perm: int, seed: int) -> np.ndarray:
    """(P, n) permutations of n inputs: all of them (identity first) for n <= 7, else the
    identity and ``n_perm`` random ones drawn from ``seed``."""
    if n <= EXHAUSTIVE_PERMUTATIONS_UP_TO:
        return np.array(list(itertools.permutations(range(n))), np.int32)
    rand = np.asarray(_random_permutations()(seed=int(seed), n=n, n_perm=n_perm), np.int32)
    return np.concatenate([np.arange(n, dtype=np.int32)[None], rand])


@functools.cache
def _random_permutations():
    """The random orders as one jitted program (key, fold-in, split and shuffles; not four
    eagerly compiled ones), integer-only and so compiled at the cheap optimisation level
    (``jaxprobe_kernels.resample.INTEGER_PROGRAM``): the same orders bit for bit."""
    import jax

    from jaxprobe_kernels.resample import INTEGER_PROGRAM

    def draw(*, seed, n, n_perm):  # all static: any int seed, as jax.random.key takes it
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 17), n_perm)
        return jax.vmap(lambda k: jax.random.permutation(k, n))(keys)

    return jax.jit(draw, static_argnames=("seed", "n", "n_perm"), compiler_options=INTEGER_PROGRAM)


def _null(gx, gy, perms: np.ndarray, chunk: int):
    """CKA of every layer pair with B's inputs reordered by each permutation -> (P, L1, L2)."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def piece(p):
        g = gy[:, p[:, :, None], p[:, None, :]]  # (L2, c, n, n)
        return jnp.einsum("inm,jcnm->cij", gx, g)

    out = []
    for s in range(0, len(perms), chunk):
        p = perms[s:s + chunk]
        short = chunk - len(p)
        if short:
            p = np.concatenate([p, np.repeat(p[:1], short, axis=0)])
        out.append(np.asarray(piece(jnp.asarray(p)))[:chunk - short])
    return np.concatenate(out)


def _cross_grams(xs, ys, *, debiased: bool):
    """``jaxprobe._cka.normed_grams`` of both models' (n, width) layers and their CKA matrix
    (= ``cka_matrix``'s product), in one compiled program per input count: a sequential map of
    the one-layer Gram program over the layers (the same per-layer values), the finiteness
    checks and the product inside it (not a dozen eagerly compiled reshapes, stacks and
    products). The same errors as ``normed_grams``, naming ``Xs[i]``."""
    from jaxprobe._validate import check_finite, check_not_constant

    A = np.stack([*xs, *ys])
    n0 = A.shape[1]
    if n0 < (4 if debiased else 2):
        raise ValueError(f"cka_matrix got n = {n0} samples; the {'debiased' if debiased else 'biased'} estimator "
                         f"needs n >= {4 if debiased else 2}.")
    gx, gy, r, finite, m = _cross_program(A, len(xs), bool(debiased))
    bad = ~np.asarray(finite)
    r = np.asarray(r)
    for i, A_i in enumerate([*xs, *ys]):
        name = f"Xs[{i if i < len(xs) else i - len(xs)}]"
        if bad[i]:
            check_finite(A_i, name, fn="cka_matrix")
        check_not_constant(r[i], name, fn="cka_matrix", dtype=A.dtype)
    return gx, gy, m


@functools.cache
def _cross_jit():
    import jax
    import jax.numpy as jnp

    from jaxprobe_kernels import gram as _gram

    def program(A, La, debiased):
        g, r = jax.lax.map(lambda a: _gram.normalised_linear_gram(a, debiased=debiased, scaled=True), A)
        finite = jnp.all(jnp.isfinite(g), axis=(1, 2))
        n = g.shape[-1]
        m = g[:La].reshape(La, n * n) @ g[La:].reshape(g.shape[0] - La, n * n).T
        return g[:La], g[La:], r, finite, m

    return jax.jit(program, static_argnames=("La", "debiased"))


def _cross_program(A, La, debiased):
    return _cross_jit()(A, La=La, debiased=debiased)


def _pad_features(x: np.ndarray, width: int) -> np.ndarray:
    """(n, d) -> (n, width) with zero features appended."""
    return x if x.shape[1] == width else np.pad(x, ((0, 0), (0, width - x.shape[1])))


def cross_model_cka(a: Run, b: Run, acts_a, acts_b, n_inputs: int, *, debiased: bool, n_perm: int,
                    seed: int) -> dict:
    """CKA of every (layer of a, layer of b) pair over matched inputs, with its permutation null.

    ``acts_a`` / ``acts_b``: lists of (n, d_i) arrays (:func:`input_activations`), rows matched."""
    for run, acts in ((a, acts_a), (b, acts_b)):
        for layer, x in zip(run.layers, acts):
            if float(np.max(np.ptp(x, axis=0))) == 0.0:
                raise CompareError(f"Layer {layer.label} ({layer.name}) of run {run.label!r} is constant over the "
                                   f"{n_inputs} inputs; CKA with a constant representation is undefined.")
    # Every layer zero-padded to the widest one: a linear Gram is unchanged by zero features
    # (their column means are 0), and one compiled Gram program serves every layer of both
    # models instead of one per width. The Grams serve the matrix (= cka_matrix's product) and
    # the null alike.
    width = max(x.shape[1] for x in (*acts_a, *acts_b))
    gx, gy, m = _cross_grams([_pad_features(x, width) for x in acts_a], [_pad_features(x, width) for x in acts_b],
                             debiased=debiased)
    n = gx.shape[-1]
    m = np.asarray(m, np.float64)
    if not np.all(np.isfinite(m)):
        raise FloatingPointError("cross_model_cka produced a non-finite CKA value from finite, non-constant inputs.")
    perms = _permutations(n_inputs, n_perm, seed)
    per = max(1, int(2e8 // (4 * len(acts_b) * n_inputs * n_inputs)))  # ~200 MB of permuted Grams per step
    null = _null(gx, gy, perms, min(per, len(perms)))
    # p-value: the share of orders (the observed one included) whose CKA reaches the observed one
    p = (np.sum(null >= m[None] - 1e-5, axis=0)) / len(perms)
    la, lb = a.layers, b.layers
    best = []
    for i, l in enumerate(la):
        j = int(np.argmax(m[i]))
        best.append({"layer": l.name, "label": l.label, "norm_depth": _norm_depth(l, len(la)),
                     "best_layer": lb[j].name, "best_label": lb[j].label,
                     "best_norm_depth": _norm_depth(lb[j], len(lb)), "cka": float(m[i, j]),
                     "null_mean": float(null[:, i, j].mean()), "p_value": float(p[i, j])})
    # does depth map onto depth? Spearman rho of each A layer's depth against its best B match's
    best_depth = np.array([r["best_norm_depth"] for r in best])
    corr = None
    if len(best) >= 3 and np.ptp(best_depth) > 0:
        from jaxprobe.stats import spearman

        corr = float(spearman(np.array([r["norm_depth"] for r in best]), best_depth))
    return {
        "a": a.label, "b": b.label, "estimator": "debiased" if debiased else "biased", "n_inputs": n_inputs,
        "depth_correspondence_spearman": corr,
        "layers_a": [l.name for l in la], "labels_a": [l.label for l in la],
        "layers_b": [l.name for l in lb], "labels_b": [l.label for l in lb],
        "blocks_a": [l.block for l in la], "blocks_b": [l.block for l in lb],
        "matrix": m.tolist(), "null_mean": null.mean(0).tolist(), "p_value": p.tolist(),
        "n_permutations": int(len(perms)), "exhaustive": bool(n_inputs <= EXHAUSTIVE_PERMUTATIONS_UP_TO),
        "best_match_a_to_b": best,
    }


# ----------------------------------------------------------------------------- entry point

def compare(run_dirs, *, labels=None, protocol=None, estimator=None, inputs=("clean",), n_perm: int = 999,
            log=_log) -> dict:
    """The comparison results dictionary (the content of the comparison's results.json).

    ``inputs``: the input sets of the cross-model CKA, each "clean" (the clean utterances) or
    "all" (every clean and noisy input of the sweep); one heatmap per model pair and set."""
    inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
    if not inputs or any(i not in INPUTS for i in inputs) or len(set(inputs)) != len(inputs):
        raise CompareError(f"--inputs must name distinct input sets among {list(INPUTS)}; got {list(inputs)!r}.")
    if isinstance(n_perm, bool) or not isinstance(n_perm, int) or n_perm < 1:
        raise CompareError(f"--permutations must be an int >= 1; got {n_perm!r}.")
    paths = [Path(p).expanduser() for p in run_dirs]
    if len(paths) < 2:
        raise CompareError(f"jaxprobe compare needs at least 2 RUN_DIRs; got {len(paths)}.")
    resolved = [p.resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise CompareError(f"RUN_DIR {i + 1} ({str(paths[i])!r}) is the same folder as RUN_DIR "
                               f"{resolved.index(p) + 1}; give each run once.")
    loaded = [load_run(p, i + 1) for i, p in enumerate(paths)]
    names = _labels(paths, [r.results for r in loaded], labels)
    runs = [Run(n, r.path, r.results) for n, r in zip(names, loaded)]
    check_comparable(runs)
    # one protocol/estimator for every run: the first run's headline one unless asked
    try:
        combo = R.resolve_combo(runs[0].results, protocol, estimator) if (protocol or estimator) \
            else R.primary_combo(runs[0].results)
        for run in runs:
            R.resolve_combo(run.results, *combo)
    except R.ResultsError as exc:
        raise CompareError(f"--protocol/--estimator: {exc}") from None
    protocol, estimator = combo
    log(f"{len(runs)} runs: {', '.join(f'{r.label} ({len(r.layers)} layers)' for r in runs)}; "
        f"{protocol}/{estimator}")
    warnings = _analysis_notes(runs)
    layers, curves, profile, blocks, trends = [], [], [], [], []
    try:
        for run in runs:
            layers += _layer_records(run)
            curves += _curve_records(run, protocol, estimator)
            profile += _profile_records(run, protocol, estimator)
            b, t = _block_records(run, protocol, estimator)
            blocks += b
            trends += t
            if not b:
                warnings.append(f"Run {run.label!r} has no block/trend records (results written before they "
                                f"existed); re-run its analysis for the block summary.")
    except R.ResultsError as exc:
        raise CompareError(f"{exc}") from None
    # cross-model CKA on the same inputs
    t0 = time.perf_counter()
    seed = int(((runs[0].results.get("settings") or {}).get("sweep") or {}).get("seed", 0))
    debiased = estimator == "debiased"
    cross, input_sets = [], []
    for inp in inputs:
        acts = {run.label: input_activations(run, inp) for run in runs}
        keys0 = acts[runs[0].label][0]
        for run in runs[1:]:
            if acts[run.label][0] != keys0:
                miss = sorted(set(map(str, keys0)) ^ set(map(str, acts[run.label][0])))[:4]
                raise CompareError(f"The stores of {runs[0].label!r} and {run.label!r} hold different inputs although "
                                   f"their settings agree (e.g. {miss}); re-run `jaxprobe sweep` on both.")
        n = len(keys0)
        need = 4 if debiased else 3
        if n < need:
            raise CompareError(f"The cross-model CKA needs at least {need} {inp} inputs for the {estimator} "
                               f"estimator; the runs hold {n}. Use more utterances (data.utterances) or --inputs all.")
        if n < FEW_INPUTS:
            warnings.append(f"The cross-model CKA on {INPUT_WORDS[inp]} rests on {n} inputs: with so few samples, "
                            f"linear CKA is high for any two representations; read it against its chance level "
                            f"(the permutation null given with every value).")
        input_sets.append({"kind": inp, "n": n, "keys": [list(k) for k in keys0]})
        for a, b in itertools.combinations(runs, 2):
            rec = cross_model_cka(a, b, acts[a.label][1], acts[b.label][1], n, debiased=debiased, n_perm=n_perm,
                                  seed=seed)
            cross.append({"inputs": inp, **rec})
        log(f"cross-model CKA of {len(runs) * (len(runs) - 1) // 2} model pair(s) over {n} {inp} inputs")
    log(f"cross-model CKA in {time.perf_counter() - t0:.1f} s")
    import jax

    data = {k: v for k, v in runs[0].results["data"].items() if k not in MODEL_DEPENDENT_COUNTS}
    data["corpus"] = runs[0].results["data"].get("corpus")
    return {
        "settings": {
            "runs": [str(r.path) for r in runs], "labels": [r.label for r in runs], "protocol": protocol,
            "estimator": estimator, "inputs": list(inputs), "n_perm": n_perm, "seed": seed,
            "cka": (runs[0].results.get("settings") or {}).get("cka"),
            "versions": {"jax": jax.__version__, "numpy": np.__version__},
        },
        "data": data,
        "runs": [{"label": r.label, "path": str(r.path), "model": (r.results.get("settings") or {}).get("model"),
                  # the model as its store records it (name, window, what CKA's samples are), where the run has it
                  "model_record": r.results.get("model"),
                  "n_layers": len(r.layers), "blocks": [name for name, _ in R.blocks(r.layers)],
                  "n_items": r.results["data"].get("n_items"), "n_windows": r.results["data"].get("n_windows"),
                  "window": ((r.results.get("settings") or {}).get("data") or {}).get("window"),
                  "store": str(r.store)} for r in runs],
        "inputs": input_sets,
        "layers": layers,
        "curves": curves,
        "profile": profile,
        "blocks": blocks,
        "trends": trends,
        "cross_cka": cross,
        "warnings": warnings,
    }


def run(run_dirs, out_dir, *, labels=None, protocol=None, estimator=None, inputs=("clean",),
        n_perm: int = 999, formats=("png", "pdf")) -> dict:
    """Compare the sweep runs ``run_dirs`` and write the report into ``out_dir``. Returns the
    paths of the outputs."""
    formats = tuple(formats)
    if "png" not in formats or not set(formats) <= {"png", "pdf"}:
        raise CompareError(f"--formats must be png or png,pdf (the HTML report embeds PNG); got {','.join(formats)!r}.")
    out = ensure_writable_dir(out_dir, "--out")
    results = compare(run_dirs, labels=labels, protocol=protocol, estimator=estimator, inputs=inputs, n_perm=n_perm)
    for w in results["warnings"]:
        _log(f"warning: {w}")
    atomic_json(out / "results.json", results)
    from jaxprobe.report.compare import write_compare_report

    t0 = time.perf_counter()
    paths = write_compare_report(results, out, formats=formats)
    _log(f"report: {paths['html']} in {time.perf_counter() - t0:.1f} s")
    return {"results": str(out / "results.json"), **{k: str(v) for k, v in paths.items()}}


__all__ = ["CompareError", "Run", "check_comparable", "compare", "cross_model_cka", "differences",
           "input_activations", "load_run", "run"]
