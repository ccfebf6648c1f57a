"""The quality stage of the sweep study: the model's enhanced output per item and level, scored
against the clean reference, and linked to the per-item CKA of every layer.

1. ``enhance_stage`` (torch, through torch_bridge): every mixture enhanced by the model's official
   pipeline (``ModelSpec.enhance``; per window, or the whole mixture for whole-utterance models),
   per utterance one file under ``quality/<store fingerprint>/`` (resumable).
2. ``analyze_quality`` (no torch): PESQ (wide band), STOI and SI-SDR of the noisy input and of
   the enhanced output per item, ``quality`` records with hierarchical bootstrap intervals
   and ``correlations`` (per layer, Spearman's rho of per-item CKA against enhanced quality
   and against its improvement over the noisy input; pooled over levels and per level).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from jaxprobe.errors import DataError

__all__ = ["analyze_quality", "enhance_stage", "quality_content_key"]


def enhance_stage(spec, sweep, cfg: dict, qdir: Path, log) -> Path:
    """Enhance every mixture of ``sweep`` with the dump's model (``spec``) into ``qdir``."""
    from torch_bridge.degrade_dump import enhance_sweep

    d = cfg["data"]
    return enhance_sweep(spec, sweep, qdir, window_mode=d["window"], hop=d["hop"] or None,
                         threads=cfg["model"]["threads"] or None, log=log)


def quality_content_key(qdir: Path) -> str:
    """A digest of every enhanced-output file (the analysis cache depends on it)."""
    h = hashlib.sha256()
    for p in sorted(Path(qdir).glob("[0-9]*.npz")):
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:16]


def _load(qdir: Path, noises: list[str], n_levels: int, items: list[tuple[str, int]]):
    """Per item (analysis order): (clean (W,), noisy (K, S, W), enhanced (K, S, W)); W may differ
    between items (whole-utterance models get whole mixtures)."""
    files = sorted(Path(qdir).glob("[0-9]*.npz"))
    per_utt = {}
    for p in files:
        with np.load(p) as z:
            per_utt[str(z["utterance"])] = (z["clean"], z["noisy"], z["enhanced"], [str(n) for n in z["noises"]])
    missing = sorted({u for u, _ in items} - set(per_utt))
    if missing:
        raise DataError(f"The quality stage's folder {qdir} lacks the enhanced outputs of {missing[:3]}; "
                        "re-run the sweep to compute them.")
    out = []
    for u, w in items:
        c, n, e, names = per_utt[u]
        order = [names.index(k) for k in noises]
        if n.shape[1] != n_levels:
            raise DataError(f"{qdir}: the enhanced outputs of {u!r} have {n.shape[1]} levels; expected {n_levels}. "
                            "Re-run the sweep to recompute them.")
        out.append((c[w].astype(np.float32), n[order][:, :, w].astype(np.float32), e[order][:, :, w].astype(np.float32)))
    return out


def analyze_quality(qdir: Path, *, model: str, axis: str, levels, noises, items, layers, cka_items, key,
                    n_boot: int, level: float, log=None) -> tuple[dict, dict]:
    """Quality and correlation records (see the module docstring).

    cka_items : (L, K, S, U) per-item CKA (the first estimator of the utterance protocol) or None.
    Returns (results part {"quality", "correlations", "quality_excluded"}, arrays to save).
    """
    import jax

    from jaxprobe.quality import METRICS, correlation_records, item_quality, quality_records

    loaded = _load(qdir, list(noises), len(levels), list(items))
    K, S, U = len(noises), len(levels), len(loaded)
    groups: dict[int, list[int]] = {}  # items of equal length are scored together
    for u, (c, _, _) in enumerate(loaded):
        groups.setdefault(c.shape[-1], []).append(u)
    values, excluded = {}, {}
    for j, inp in ((1, "noisy"), (2, "enhanced")):
        if log:
            log(f"quality: PESQ, STOI, SI-SDR of {K * S * U} {inp} items")
        for m in METRICS:
            values[(m, inp)] = np.full((K, S, U), np.nan)
        for W, us in groups.items():
            sig = np.stack([loaded[u][j] for u in us], axis=2)  # (K, S, n, W)
            ref = np.broadcast_to(np.stack([loaded[u][0] for u in us])[None, None], sig.shape)
            q = item_quality(ref.reshape(-1, W), sig.reshape(-1, W))
            for m in METRICS:
                values[(m, inp)][:, :, us] = q[m].reshape(K, S, len(us))
                for i, why in q["excluded"].get(m, {}).items():
                    k, s_, g = np.unravel_index(int(i), (K, S, len(us)))
                    u = us[g]
                    excluded.setdefault(m, []).append({"input": inp, "noise": noises[k], "level": float(levels[s_]),
                                                       "utterance": items[u][0], "window": int(items[u][1]),
                                                       "reason": why})
    if log:
        for m, rows in excluded.items():
            log(f"quality: {len(rows)} {m} score(s) excluded (e.g. {rows[0]['reason'][:80]})")
    k_q, k_c = jax.random.split(key)
    recs, _ = quality_records(values, model=model, axis=axis, levels=levels, noises=list(noises), key=k_q,
                              n_boot=n_boot, level=level)
    corr = []
    if cka_items is not None:
        targets = {}
        for m in METRICS:
            targets[(m, "enhanced")] = values[(m, "enhanced")]
            targets[(m, "improvement")] = values[(m, "enhanced")] - values[(m, "noisy")]
        corr = correlation_records(cka_items, targets, layers=layers, levels=levels, key=k_c, n_boot=n_boot,
                                   level=level)
        for r in corr:
            r["axis"] = axis
    counts = {m: {"noisy": sum(r["input"] == "noisy" for r in rows), "enhanced": sum(r["input"] == "enhanced" for r in rows)}
              for m, rows in excluded.items()}
    part = {"quality": recs, "correlations": corr,
            "quality_excluded": {"counts": counts, "items": excluded, "n_items": int(K * S * U)}}
    arrays = {f"{m}__{inp}": v for (m, inp), v in values.items()}
    return part, arrays
