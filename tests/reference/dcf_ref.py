"""Plain float64 minimum detection cost by an explicit threshold sweep (readability over speed)."""
from __future__ import annotations

import numpy as np


def min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """Normalised minDCF: accept a trial when its score >= t, for t = every distinct score and
    +inf (accept none); DCF(t) = c_miss P_miss(t) p + c_fa P_fa(t) (1 - p), divided by
    min(c_miss p, c_fa (1 - p)); the smallest over t."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    tar, non = s[y], s[~y]
    best = np.inf
    for t in list(np.unique(s)) + [np.inf]:
        p_miss = np.mean(tar < t)
        p_fa = np.mean(non >= t)
        dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
        best = min(best, dcf / min(c_miss * p_target, c_fa * (1.0 - p_target)))
    return best
