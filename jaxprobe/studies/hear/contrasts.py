"""Paired robust - baseline contrasts of the hear study: the same listening items through both
recognisers of a model, read from the listen stage's per-item files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe.studies.hear.listen_stage import REFERENCES, part_suffix
from jaxprobe.studies.hear.scoring import ci_mean, eer_boot


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, the file closed again."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def regime_contrasts(out: Path, models, cfg, *, part: str = "synthetic") -> list[dict]:
    """Paired robust - baseline STOI, PESQ and EER differences per (model, layer, condition): the same
    listening items through both recognisers, so the bootstrap resamples utterances once for both
    (a tighter and more honest comparison than two separate intervals). ``part``: which part of the
    listening set (see :func:`jaxprobe.studies.hear.listen_stage.listen`)."""
    from jaxprobe.bootstrap import bootstrap_interval

    sfx = part_suffix(part)
    recs = []
    for mi, model in enumerate(models):
        paths = [out / "listen" / f"{model}-{g}{sfx}-items.npz" for g in ("baseline", "robust")]
        if not all(p.is_file() for p in paths):
            continue
        b, r = (_read_npz(p) for p in paths)
        if not (np.array_equal(b["utterance"], r["utterance"]) and np.array_equal(b["condition"], r["condition"])):
            raise RuntimeError(f"The baseline and robust {model} listening items differ; re-run the listen stage.")
        layers = [k.split("|", 1)[1] for k in b if k.startswith("stoi|") and k.split("|", 1)[1] not in REFERENCES]
        for li, layer in enumerate(layers):
            for ci, cond in enumerate(dict.fromkeys(b["condition"].tolist())):
                sel = np.flatnonzero(b["condition"] == cond)
                d = r[f"stoi|{layer}"][sel] - b[f"stoi|{layer}"][sel]
                e, lo, hi = ci_mean(d, 10_000 + 1000 * mi + 10 * li + ci, cfg)
                recs.append({"model": model, "layer": layer, "condition": str(cond), "statistic": "stoi_robust_minus_baseline",
                             "estimate": float(e), "low": float(lo), "high": float(hi), "n_items": int(sel.size)})
                if f"pesq|{layer}" in b and f"pesq|{layer}" in r:  # items PESQ scored in both
                    d = r[f"pesq|{layer}"][sel] - b[f"pesq|{layer}"][sel]
                    ok = np.isfinite(d)
                    rec = {"model": model, "layer": layer, "condition": str(cond), "statistic": "pesq_robust_minus_baseline",
                           "estimate": None, "low": None, "high": None, "n_items": int(ok.sum()),
                           "n_excluded": int((~ok).sum())}
                    if ok.sum() >= 2:
                        e, lo, hi = ci_mean(d[ok], 30_000 + 1000 * mi + 10 * li + ci, cfg)
                        rec.update(estimate=float(e), low=float(lo), high=float(hi))
                    recs.append(rec)
                if f"emb|{layer}" in b and f"emb|{layer}" in r:
                    order = sel[np.argsort(b["utterance"][sel])]  # the order listen() scored them in
                    est, boot = eer_boot([b[f"emb|{layer}"][order], r[f"emb|{layer}"][order]],
                                          b["speaker"][order].tolist(), 20_000 + 1000 * mi + 10 * li + ci, cfg)
                    lo = hi = None
                    if boot is not None:  # percentile interval of the paired replicate differences
                        dl, dh = bootstrap_interval(boot.replicates[:, 1] - boot.replicates[:, 0], None, None,
                                           boot.level, "percentile")
                        lo, hi = 100.0 * float(dl), 100.0 * float(dh)
                    recs.append({"model": model, "layer": layer, "condition": str(cond),
                                 "statistic": "eer_robust_minus_baseline", "estimate": float(est[1] - est[0]),
                                 "low": lo, "high": hi, "n_items": int(sel.size)})
    return recs

