"""The hear study's statistics with percentile intervals from resampling utterances: verification
EER and normalised minDCF of speaker embeddings, means (STOI, L1) and wide-band PESQ means."""
from __future__ import annotations

import numpy as np


def eer_boot(embs: list, speakers: list, key_int: int, cfg):
    """EERs of the verification trials among utterances, one per embedding set in ``embs``
    (the same utterances through different systems), bootstrapped together by resampling
    utterances (trials share utterances; see ``jaxprobe.bootstrap_eer``). Returns
    (estimates (k,) in %, the BootstrapResult in fractions, or None when too few resamples
    keep both trial classes, as in tiny sets)."""
    import jax

    from jaxprobe.bootstrap import TooFewResamplesError, bootstrap_eer
    from jaxprobe.stats import eer
    from torch_bridge.verification import cosine_scores, verification_trials

    lst = cfg["listen"]
    trials = cfg["speaker"]["trials_per_class"] or None
    pairs, labels = verification_trials(speakers, n_per_class=trials, seed=cfg["seed"])
    scores = np.stack([cosine_scores(e, pairs) for e in embs])
    try:
        r = bootstrap_eer(scores, labels, pairs, n_items=len(speakers), n_boot=lst["n_boot"], level=lst["level"],
                          key=jax.random.fold_in(jax.random.key(cfg["seed"]), key_int))
    except TooFewResamplesError:
        return 100.0 * np.array([float(eer(sc, labels)) for sc in scores]), None
    return 100.0 * np.asarray(r.estimate, np.float64), r


def eer_ci(emb: np.ndarray, speakers: list, key_int: int, cfg) -> tuple[float, float | None, float | None]:
    """One system's EER (%) with its percentile interval (None, None for tiny sets)."""
    est, r = eer_boot([emb], speakers, key_int, cfg)
    if r is None:
        return float(est[0]), None, None
    return float(est[0]), 100.0 * float(r.low[0]), 100.0 * float(r.high[0])


def dcf_key(p: float) -> str:
    """The record key of the minDCF at prior ``p`` ('min_dcf_0.01')."""
    return f"min_dcf_{p:g}"


def min_dcf_ci(emb: np.ndarray, speakers: list, key_int: int, cfg) -> dict:
    """One system's normalised minDCF at each prior in ``jaxprobe.stats.P_TARGETS`` (C_miss = C_fa = 1)
    with percentile intervals from the same utterance resamples as its EER (``key_int`` as given to
    :func:`eer_ci`); intervals None for tiny sets. Keys 'min_dcf_0.01', 'min_dcf_0.01_low', ..."""
    import jax

    from jaxprobe.bootstrap import TooFewResamplesError, bootstrap_min_dcf
    from jaxprobe.stats import P_TARGETS, min_dcf
    from torch_bridge.verification import cosine_scores, verification_trials

    lst = cfg["listen"]
    trials = cfg["speaker"]["trials_per_class"] or None
    pairs, labels = verification_trials(speakers, n_per_class=trials, seed=cfg["seed"])
    scores = cosine_scores(emb, pairs)
    try:
        r = bootstrap_min_dcf(scores, labels, pairs, p_target=P_TARGETS, n_items=len(speakers), n_boot=lst["n_boot"],
                              level=lst["level"], key=jax.random.fold_in(jax.random.key(cfg["seed"]), key_int))
        est, lo, hi = (np.asarray(a, np.float64) for a in (r.estimate, r.low, r.high))
    except TooFewResamplesError:
        est, lo, hi = np.asarray(min_dcf(scores, labels, P_TARGETS), np.float64), None, None
    out = {}
    for k, p in enumerate(P_TARGETS):
        out[dcf_key(p)] = float(est[k])
        out[dcf_key(p) + "_low"] = None if lo is None else float(lo[k])
        out[dcf_key(p) + "_high"] = None if hi is None else float(hi[k])
    return out


def ci_mean(values: np.ndarray, key_int: int, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over items (last axis) with percentile bootstrap intervals over utterances."""
    import jax

    from jaxprobe.bootstrap import bootstrap_mean

    lst = cfg["listen"]
    r = bootstrap_mean(values, key=jax.random.fold_in(jax.random.key(cfg["seed"]), key_int),
                       n_boot=lst["n_boot"], level=lst["level"])
    return np.asarray(r.estimate), np.asarray(r.low), np.asarray(r.high)


def pesq_ci(scores: np.ndarray, key_int: int, cfg) -> dict:
    """Mean wide-band PESQ over the items PESQ could score (NaN = excluded), with its percentile
    interval over utterances and the number excluded; None where fewer than 2 items remain."""
    ok = np.isfinite(scores)
    rec = {"pesq": None, "pesq_low": None, "pesq_high": None, "pesq_excluded": int((~ok).sum())}
    if ok.sum() >= 2:
        e, lo, hi = ci_mean(scores[ok], key_int, cfg)
        rec.update(pesq=float(e), pesq_low=float(lo), pesq_high=float(hi))
    return rec

