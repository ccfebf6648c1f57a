"""Output quality of an enhancement model and its link to the representations.

* :func:`si_sdr` — scale-invariant SDR (Le Roux et al. 2019: both signals zero-mean, the
  reference scaled by its least-squares projection), float64.
* :func:`item_quality` — PESQ (wide band, the ``pesq`` package), STOI (the JAX STOI, which
  matches pystoi) and SI-SDR of a batch of estimates against their references. Pairs PESQ
  cannot score (silence, too short) are NaN there and named in ``excluded``, never a number.
* :func:`quality_records` — per level (and pooled over noise types / per noise type) the mean
  of each metric for the noisy input and the enhanced output, with bootstrap intervals:
  hierarchical (noise types, then utterances within them) for ``noise = "all"``, utterances for
  one noise type. Unscored items are left out and counted (``n_excluded``).
* :func:`weighted_spearman` / :func:`correlation_records` — per layer, Spearman's rho between
  per-item CKA and per-item quality of the enhanced output (and its improvement over the noisy
  input), pooled over levels and within each level, with bootstrap intervals from the same
  count matrices (a replicate is the rank correlation of the resampled multiset, computed
  exactly from the counts). Replicates whose resample is constant in either variable have no
  rho; they are left out of the interval and counted (``n_degenerate``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["METRICS", "correlation_records", "item_quality", "quality_records", "si_sdr", "weighted_spearman"]

METRICS = ("pesq", "stoi", "si_sdr")


def si_sdr(reference, estimate) -> np.ndarray:
    """Scale-invariant signal-to-distortion ratio in dB.

    Parameters
    ----------
    reference, estimate : arrays of shape (..., n), n >= 2, same shape.

    Returns
    -------
    ndarray of shape (...), float64. A silent (constant) reference raises ValueError; an
    estimate equal to a scaled reference gives +inf (no distortion).
    """
    s = np.asarray(reference, dtype=np.float64)
    e = np.asarray(estimate, dtype=np.float64)
    if s.shape != e.shape or s.ndim < 1 or s.shape[-1] < 2:
        raise ValueError(f"The 'reference' and 'estimate' parameters of si_sdr must have one shape (..., n), n >= 2; "
                         f"got {s.shape} and {e.shape}.")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(e))):
        raise ValueError("The 'reference' and 'estimate' parameters of si_sdr must be finite; got NaN or inf.")
    s = s - s.mean(axis=-1, keepdims=True)
    e = e - e.mean(axis=-1, keepdims=True)
    ss = np.sum(s * s, axis=-1, keepdims=True)
    for name, a in (("reference", ss), ("estimate", np.sum(e * e, axis=-1))):
        if np.any(a == 0):
            raise ValueError(f"The '{name}' parameter of si_sdr holds a constant (silent) signal; SI-SDR is "
                             "undefined there. Leave such items out.")
    target = np.sum(s * e, axis=-1, keepdims=True) / ss * s
    noise = e - target
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.sum(target**2, axis=-1) / np.sum(noise**2, axis=-1))


def item_quality(reference, estimate, *, sample_rate: int = 16000) -> dict[str, Any]:
    """PESQ (wide band), STOI and SI-SDR of each estimate against its reference.

    reference, estimate : arrays of shape (n, L) (or (L,)), time aligned, at 16 kHz.
    Returns {"pesq": (n,), "stoi": (n,), "si_sdr": (n,), "excluded": {metric: {index: reason}}};
    a metric is NaN exactly where ``excluded[metric]`` names the item (PESQ: silence, too short,
    a silent estimate; STOI: fewer than 30 frames of speech; SI-SDR: a silent estimate). A
    silent (constant) reference is an error.
    """
    from jaxprobe.audio import stoi
    from jaxprobe.audio.pesq import wideband_pesq

    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    est = np.atleast_2d(np.asarray(estimate, dtype=np.float64))
    p = wideband_pesq(ref, est, sample_rate)
    sdr = np.full(ref.shape[0], np.nan)
    live = np.ptp(est, axis=-1) > 0
    sdr[live] = si_sdr(ref[live], est[live])
    excluded_stoi = {}
    try:
        st = np.asarray(stoi(ref, est, sample_rate=sample_rate), np.float64)
    except ValueError:  # some pair is too short or silent after STOI's frame removal: score one by one
        st = np.full(ref.shape[0], np.nan)
        for i in range(ref.shape[0]):
            try:
                st[i] = float(stoi(ref[i], est[i], sample_rate=sample_rate))
            except ValueError as exc:
                excluded_stoi[i] = str(exc)
    return {"pesq": p.scores, "stoi": st,
            "si_sdr": sdr, "excluded": {"pesq": dict(p.failures), "stoi": excluded_stoi,
                                        "si_sdr": {int(i): "silent (constant) estimate" for i in np.flatnonzero(~live)}}}


def _interval(reps: np.ndarray, level: float):
    a = (1.0 - level) / 2.0
    return np.quantile(reps, [a, 1.0 - a], axis=0)


def quality_records(values: dict, *, model: str, axis: str, levels, noises, key, n_boot: int = 1000,
                    level: float = 0.95) -> tuple[list[dict], dict]:
    """Mean quality per (level, noise) with bootstrap intervals.

    Parameters
    ----------
    values : {(metric, input): array of shape (K, S, U)} — K noise types, S levels, U items;
        NaN marks an item the metric could not score (left out, counted).
    levels : S level values; noises : K names; key : a JAX PRNG key.

    Returns
    -------
    records : list of {model, axis, level, noise ("all" or a type), metric, input, estimate,
        low, high, n, n_excluded}
    replicates : {(metric, input, level index): (n_boot,) replicates of the pooled mean}
    """
    import jax

    from jaxprobe.bootstrap import bootstrap_mean

    records, reps_out = [], {}
    for (metric, inp), v in sorted(values.items()):
        v = np.asarray(v, np.float64)
        K, S, U = v.shape
        for si, lv in enumerate(levels):
            k_cell = jax.random.fold_in(key, si)
            flat = v[:, si, :].reshape(-1)
            groups = np.repeat(np.arange(K), U)
            ok = np.isfinite(flat)
            cells = [("all", flat[ok], groups[ok], K > 1)]
            cells += [(noises[k], v[k, si][np.isfinite(v[k, si])], None, False) for k in range(K)]
            for noise, x, g, hier in cells:
                rec = {"model": model, "axis": axis, "level": float(lv), "noise": noise, "metric": metric,
                       "input": inp, "n": int(x.size), "n_excluded": int((K * U if noise == "all" else U) - x.size)}
                if x.size == 0:
                    rec.update(estimate=None, low=None, high=None)
                elif x.size == 1 or np.ptp(x) == 0:
                    rec.update(estimate=float(x.mean()), low=float(x.mean()), high=float(x.mean()))
                else:
                    b = bootstrap_mean(x, key=k_cell, n_boot=n_boot, groups=g if hier else None,
                                       hierarchical=hier, level=level)
                    rec.update(estimate=float(b.estimate), low=float(b.low), high=float(b.high))
                    if noise == "all":
                        reps_out[(metric, inp, si)] = np.asarray(b.replicates, np.float64)
                records.append(rec)
    return records, reps_out


def _weighted_ranks(v: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Ranks of the items of v (n,) in the multiset each count row (B, n) draws, ties averaged
    (scipy's 'average'), 1-based -> (B, n)."""
    uniq, inv = np.unique(v, return_inverse=True)
    onehot = np.zeros((v.shape[0], uniq.shape[0]))
    onehot[np.arange(v.shape[0]), inv] = 1.0
    cg = counts @ onehot  # (B, g) draws per tie group
    below = np.cumsum(cg, axis=1) - cg
    return (below + (cg + 1.0) / 2.0)[:, inv]


def weighted_spearman(x, y, counts) -> np.ndarray:
    """Spearman's rho of the multisets drawn by bootstrap count rows.

    x : (..., n) — leading axes are several variables correlated with the same y;
    y : (n,); counts : (B, n) non-negative integers (a row of ones is the plain sample).
    Returns (B, ...) float64: rho of each resample (equal to scipy's spearmanr on the items
    repeated by their counts); NaN where x or y is constant in that resample.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    C = np.asarray(counts, np.float64)
    lead = x.shape[:-1]
    xs = x.reshape(-1, x.shape[-1])
    w = C / C.sum(axis=1, keepdims=True)
    ry = _weighted_ranks(y, C)
    dy = ry - np.sum(w * ry, axis=1, keepdims=True)
    vy = np.sum(w * dy * dy, axis=1)
    out = np.empty((C.shape[0], xs.shape[0]))
    for i, row in enumerate(xs):
        rx = _weighted_ranks(row, C)
        dx = rx - np.sum(w * rx, axis=1, keepdims=True)
        vx = np.sum(w * dx * dx, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.sum(w * dx * dy, axis=1) / np.sqrt(vx * vy)
        r[(vx <= 1e-12 * np.max(vx, initial=0)) | (vy <= 1e-12 * np.max(vy, initial=0)) | (vx == 0) | (vy == 0)] = np.nan
        out[:, i] = r
    return out.reshape((C.shape[0],) + lead)


def correlation_records(cka_items: np.ndarray, quality: dict, *, layers, levels, key, n_boot: int = 1000,
                        level: float = 0.95) -> list[dict]:
    """Per layer, Spearman's rho between per-item CKA and per-item output quality.

    Parameters
    ----------
    cka_items : array of shape (L, K, S, U), per-item CKA of L layers (K noise types, S levels).
    quality : {(metric, "enhanced" | "improvement"): array (K, S, U)}; NaN items are left out.
    layers : L layer records with "name" and "block"; levels : S values; key : JAX PRNG key.

    Returns
    -------
    list of {layer, block, metric, target, level ("all" or a value), rho, low, high, n,
    n_excluded, n_degenerate}: pooled over levels and within each level; intervals from
    resampling noise types, then items within them (utterances x levels when pooled).
    """
    import jax

    from jaxprobe.bootstrap import resample_counts

    cka_items = np.asarray(cka_items, np.float64)
    L, K, S, U = cka_items.shape
    records = []
    for qi, ((metric, target), q) in enumerate(sorted(quality.items())):
        q = np.asarray(q, np.float64)
        for si, lv in enumerate([None] + list(levels)):
            sl = slice(None) if lv is None else slice(si - 1, si)
            xq = q[:, sl, :].reshape(K, -1)
            xc = cka_items[:, :, sl, :].reshape(L, K, -1)
            groups = np.repeat(np.arange(K), xq.shape[1])
            ok = np.isfinite(xq.reshape(-1))
            y, x, g = xq.reshape(-1)[ok], xc.reshape(L, -1)[:, ok], groups[ok]
            base = {"metric": metric, "target": target, "level": "all" if lv is None else float(lv),
                    "n": int(y.size), "n_excluded": int(ok.size - y.size)}
            if y.size < 3 or np.ptp(y) == 0:
                for lay in layers:
                    records.append({"layer": lay["name"], "block": lay["block"], **base, "rho": None, "low": None,
                                    "high": None, "n_degenerate": None,
                                    "note": f"{y.size} scored item(s){'' if y.size < 3 else ', all equal'}: no rank correlation"})
                continue
            k = jax.random.fold_in(jax.random.fold_in(key, qi), si)
            hier = len(np.unique(g)) > 1
            C = np.asarray(resample_counts(k, n_boot, y.size, groups=g if hier else None, hierarchical=hier))
            rho = weighted_spearman(x, y, np.ones((1, y.size)))[0]
            reps = weighted_spearman(x, y, C)
            for li, lay in enumerate(layers):
                r = reps[:, li]
                good = r[np.isfinite(r)]
                lo, hi = _interval(good, level) if good.size else (np.nan, np.nan)
                rec = {"layer": lay["name"], "block": lay["block"], **base,
                       "rho": None if not np.isfinite(rho[li]) else float(rho[li]),
                       "low": float(lo) if good.size else None, "high": float(hi) if good.size else None,
                       "n_degenerate": int(r.size - good.size)}
                if rec["rho"] is None:
                    rec["note"] = "per-item CKA is constant over these items: no rank correlation"
                records.append(rec)
    return records
