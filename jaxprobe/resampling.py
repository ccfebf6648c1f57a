"""Bootstrap designs and intervals: the resampling schemes as count rows, how many distinct resamples
a design has, the result record and the interval methods (see :mod:`jaxprobe.bootstrap` for the
schemes and methods). The count matrices themselves are the kernels of ``jaxprobe_kernels.resample``;
this module checks a design once and hands them static arrays. ``jaxprobe.bootstrap`` re-exports
every public name here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr, ndtri

from jaxprobe._validate import check_bool, check_choice, check_int, check_key, check_open_interval
from jaxprobe.stats import percentile_interval
from jaxprobe_kernels import resample as _resample

__all__ = ["METHODS", "BootstrapResult", "Design", "bootstrap_interval", "check_boot_settings", "n_distinct_resamples",
           "resample_counts"]

METHODS = ("percentile", "bca")


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate, interval and replicates.

    Attributes
    ----------
    estimate, low, high : arrays of shape (...) (the statistic's batch shape)
    replicates : array of shape (n_boot, ...)
    level : float, method : str
    """

    estimate: Any
    low: Any
    high: Any
    replicates: Any
    level: float
    method: str

    @property
    def n_boot(self) -> int:
        return int(self.replicates.shape[0])

    @property
    def se(self):
        """Bootstrap standard error (std of the replicates, ddof=1)."""
        return jnp.std(self.replicates, axis=0, ddof=1)


# ----------------------------------------------------------------------------- counts

class Design:
    """The resampling design: group structure as static arrays for jitted drawing."""

    def __init__(self, n: int, groups, hierarchical: bool, fn: str):
        self.n = n
        self.hierarchical = bool(hierarchical)
        if groups is None:
            if hierarchical:
                raise ValueError(f"The 'hierarchical' option of {fn} needs 'groups' (the upper level).")
            self.labels = None
            return
        g = np.asarray(groups)
        if g.ndim != 1 or g.shape[0] != n:
            raise ValueError(
                f"The 'groups' parameter of {fn} must be a 1-D array of n = {n} labels, one per "
                f"sample; got shape {g.shape}."
            )
        _, inv = np.unique(g, return_inverse=True)
        self.labels = inv.astype(np.int32)
        self.n_groups = int(inv.max()) + 1
        if self.n_groups < 2:
            raise ValueError(f"The 'groups' parameter of {fn} has a single group; a cluster bootstrap needs at least 2.")
        sizes = np.bincount(inv, minlength=self.n_groups)
        self.sizes = sizes.astype(np.int32)
        width = int(sizes.max())
        members = np.zeros((self.n_groups, width), np.int32)
        for k in range(self.n_groups):
            idx = np.flatnonzero(inv == k)
            members[k, : idx.size] = idx
        self.members = members

    def counts(self, key, n_boot: int):
        """(n_boot, n) int32 count matrix; replicate b from ``fold_in(key, b)``."""
        ids = jnp.arange(n_boot)
        if self.labels is None:  # the level-1 compiles of the count programs (the same bits)
            return _resample.iid_counts_top(key, ids, self.n)
        if not self.hierarchical:
            return _resample.cluster_counts_top(key, ids, jnp.asarray(self.labels), self.n_groups)
        return _resample.hier_counts_top(key, ids, jnp.asarray(self.members), jnp.asarray(self.sizes), self.n)

    def jackknife(self):
        """Leave-one-unit-out count rows (J, n): rows for iid, groups otherwise."""
        if self.labels is None:
            return 1 - np.eye(self.n, dtype=np.int32)
        return (self.labels[None, :] != np.arange(self.n_groups)[:, None]).astype(np.int32)


def n_distinct_resamples(n: int | None = None, *, groups=None, hierarchical: bool = False) -> int:
    """How many different count vectors (resamples) a bootstrap design can draw.

    With so few that replicates repeat (e.g. 2 noise types resampled: 3 resamples), a
    percentile interval takes only a handful of values and means little.

    Parameters
    ----------
    n : number of items (iid design, ``groups`` None).
    groups : array of shape (n,), group label of each item (cluster designs).
    hierarchical : groups drawn with replacement, then items within every drawn group.

    Returns
    -------
    int (exact). iid over n items or cluster over G groups: multisets of size n (G) from n
    (G): C(2n - 1, n). Hierarchical: sum over group multiplicities m_g (sum = G) of
    prod_g C(m_g u_g + u_g - 1, u_g - 1), u_g the group sizes (m_g draws of u_g items
    from a group add up to any multiset of size m_g u_g), by polynomial multiplication.
    """
    if groups is None:
        n = check_int(n, "n", fn="n_distinct_resamples", low=1)
        return math.comb(2 * n - 1, n)
    _, sizes = np.unique(np.asarray(groups), return_counts=True)
    G = len(sizes)
    if not hierarchical:
        return math.comb(2 * G - 1, G)
    poly = [1] + [0] * G  # coefficients of x^0..x^G
    for u in (int(v) for v in sizes):
        f = [math.comb(m * u + u - 1, u - 1) for m in range(G + 1)]
        poly = [sum(poly[i] * f[k - i] for i in range(k + 1)) for k in range(G + 1)]
    return poly[G]


def resample_counts(key, n_boot: int, n: int, *, groups=None, hierarchical: bool = False):
    """Count matrix (n_boot, n) of a bootstrap design (see the module docstring)."""
    fn = "resample_counts"
    key = check_key(key, fn=fn)
    hierarchical = check_bool(hierarchical, "hierarchical", fn=fn)
    n_boot = check_int(n_boot, "n_boot", fn=fn, low=1)
    n = check_int(n, "n", fn=fn, low=1)
    return Design(n, groups, hierarchical, fn).counts(key, n_boot)


# ----------------------------------------------------------------------------- intervals

def bootstrap_interval(reps, est, jack, level, method):
    """reps (B, ...), est (...), jack (J, ...) or None -> low, high (numpy float64 math)."""
    r = np.asarray(reps, dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    if method == "percentile":
        lo, hi = percentile_interval(r, level)
    else:
        e = np.asarray(est, dtype=np.float64)
        frac = np.mean(r < e, axis=0)
        if np.any((frac == 0) | (frac == 1)):
            raise ValueError(
                "BCa interval undefined: for some statistic every bootstrap replicate lies on one "
                "side of the estimate (bias correction z0 = +-inf). Use method='percentile' or more replicates."
            )
        z0 = ndtri(frac)
        j = np.asarray(jack, dtype=np.float64)
        d = j.mean(axis=0) - j
        num = np.sum(d**3, axis=0)
        den = 6.0 * np.sum(d**2, axis=0) ** 1.5
        a = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        zl, zh = ndtri(alpha), ndtri(1.0 - alpha)
        ql = ndtr(z0 + (z0 + zl) / (1.0 - a * (z0 + zl)))
        qh = ndtr(z0 + (z0 + zh) / (1.0 - a * (z0 + zh)))
        flat = r.reshape(r.shape[0], -1)
        ql_f, qh_f = np.ravel(ql), np.ravel(qh)
        lo = np.array([np.quantile(flat[:, i], ql_f[i]) for i in range(flat.shape[1])]).reshape(np.shape(ql))
        hi = np.array([np.quantile(flat[:, i], qh_f[i]) for i in range(flat.shape[1])]).reshape(np.shape(qh))
    dt = np.asarray(reps).dtype
    return jnp.asarray(lo, dtype=dt), jnp.asarray(hi, dtype=dt)


def check_boot_settings(n_boot, level, method, fn):
    """The settings every bootstrap entry point checks: n_boot (an int >= 1), level in (0, 1), method."""
    n_boot = check_int(n_boot, "n_boot", fn=fn, low=1)
    level = check_open_interval(level, "level", fn=fn)
    check_choice(method, "method", METHODS, fn=fn)
    return n_boot, level
