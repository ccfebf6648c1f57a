"""Speaker verification in numpy, torch-free: trial lists, cosine scores and the equal error rate.

Shared by the speaker model (``torch_bridge.models.speaker``, which re-exports these names) and
the hear study (``jaxprobe.studies.hear``), which thus needs no torch to score trials. The JAX
EER of ``jaxprobe.stats`` (used by the bootstraps) is the same definition;
``tests/torch_bridge/test_verification.py`` checks that the two agree. Imports numpy only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["cosine_scores", "eer", "verification_trials"]


def eer(scores, labels) -> float:
    """Equal error rate of a verification trial list, by ROC interpolation.

    scores : array of shape (m,), higher = more likely the same speaker.
    labels : array of shape (m,), 1 for a target (same-speaker) trial, 0 otherwise; both
        classes must occur.

    The ROC points are those of accepting every trial with score >= t, for each distinct
    score t (from the highest down, starting at "accept none"). The EER is where the
    miss rate 1 - TPR equals the false-alarm rate FPR, interpolated linearly between the
    two consecutive points that bracket the crossing. Returns a float in [0, 1].
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape or s.size == 0:
        raise ValueError(f"eer expects scores and labels of the same shape (m,) with m > 0; got {np.shape(scores)} and {np.shape(labels)}.")
    if not np.all(np.isfinite(s)):
        raise ValueError("eer: scores must be finite; found NaN or inf.")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("eer: labels must be 0 (different speakers) or 1 (same speaker).")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"eer needs target and non-target trials; got {n_pos} and {n_neg}.")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tpr = np.r_[0.0, np.cumsum(y)[last] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~y)[last] / n_neg]
    diff = (1.0 - tpr) - fpr  # decreasing from 1 to -1
    i = int(np.argmax(diff <= 0))  # first point at or past the crossing (exists: diff[-1] = -1)
    d0, d1 = diff[i - 1], diff[i]
    a = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + a * (fpr[i] - fpr[i - 1]))


def verification_trials(speakers: Sequence[str], *, n_per_class: int | None = None,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Trial pairs among items labelled by ``speakers``.

    Returns ``pairs`` (m, 2) of item indices (i < j) and ``labels`` (m,) (1 = same speaker).
    ``n_per_class=None`` keeps every pair; an int samples that many target and that many
    non-target pairs without replacement (seeded), as the paper does ("the same number of
    positive and negative pairs"); it is capped by the smaller class.
    """
    spk = np.asarray(list(speakers))
    if spk.size < 2:
        raise ValueError("verification_trials needs at least 2 items.")
    i, j = np.triu_indices(spk.size, k=1)
    same = spk[i] == spk[j]
    if not same.any() or same.all():
        raise ValueError("verification_trials needs at least two items of one speaker and two speakers.")
    if n_per_class is None:
        return np.stack([i, j], 1), same.astype(np.int64)
    rng = np.random.default_rng(seed)
    k = min(int(n_per_class), int(same.sum()), int((~same).sum()))
    pos = rng.choice(np.nonzero(same)[0], k, replace=False)
    neg = rng.choice(np.nonzero(~same)[0], k, replace=False)
    sel = np.sort(np.r_[pos, neg])
    return np.stack([i[sel], j[sel]], 1), same[sel].astype(np.int64)


def cosine_scores(embeddings, pairs) -> np.ndarray:
    """Cosine similarity of embedding pairs: embeddings (n, e), pairs (m, 2) -> (m,)."""
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cosine_scores: an embedding is all zeros; its cosine score is undefined.")
    e = e / norms
    p = np.asarray(pairs)
    return np.einsum("md,md->m", e[p[:, 0]], e[p[:, 1]])
