"""Small, batched statistics used across the analyses: least-squares lines,
Pearson and Spearman correlation, tie-averaged ranks.

All functions take ``(..., n)`` arrays and reduce the last axis, so a whole
(layers x noise types) table of fits is one call.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_finite


class LinregressResult(NamedTuple):
    """Least-squares line ``y = slope * x + intercept`` per leading index.

    Fields are arrays of shape ``(...)``. ``r2`` is the coefficient of determination;
    the standard errors are the usual OLS ones (residual variance with n - 2 degrees
    of freedom) and are NaN-free only for n >= 3 (enforced).
    """

    slope: jax.Array
    intercept: jax.Array
    r2: jax.Array
    slope_stderr: jax.Array
    intercept_stderr: jax.Array


@jax.jit
def linregress_fields(x, y):
    n = x.shape[-1]
    mx = jnp.mean(x, axis=-1, keepdims=True)
    my = jnp.mean(y, axis=-1, keepdims=True)
    dx, dy = x - mx, y - my
    sxx = jnp.sum(dx * dx, axis=-1)
    sxy = jnp.sum(dx * dy, axis=-1)
    syy = jnp.sum(dy * dy, axis=-1)
    slope = sxy / sxx
    intercept = my[..., 0] - slope * mx[..., 0]
    ss_res = jnp.maximum(syy - slope * sxy, 0.0)
    # A constant y is fitted perfectly: define r2 = 1 there instead of 0/0.
    r2 = jnp.where(syy > 0, 1.0 - ss_res / jnp.where(syy > 0, syy, 1.0), 1.0)
    s2 = ss_res / (n - 2)
    slope_se = jnp.sqrt(s2 / sxx)
    intercept_se = jnp.sqrt(s2 * (1.0 / n + mx[..., 0] ** 2 / sxx))
    return LinregressResult(slope, intercept, r2, slope_se, intercept_se)


def _pair(x, y, fn, min_n):
    x = as_float_array(x, "x", fn=fn)
    y = as_float_array(y, "y", fn=fn)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"The 'x' and 'y' parameters of {fn} must have the same length on the last axis; "
            f"got x {tuple(x.shape)} and y {tuple(y.shape)}."
        )
    if x.shape[-1] < min_n:
        raise ValueError(f"{fn} needs at least {min_n} points on the last axis; got {x.shape[-1]}.")
    check_finite(x, "x", fn=fn)
    check_finite(y, "y", fn=fn)
    dtype = jnp.result_type(x.dtype, y.dtype)
    x, y = jnp.broadcast_arrays(x.astype(dtype), y.astype(dtype))
    return x, y


def _check_not_constant(v, name, fn):
    span = np.asarray(jnp.max(v, axis=-1) - jnp.min(v, axis=-1))
    if (span == 0).any():
        idx = tuple(int(i) for i in np.argwhere(span == 0)[0])
        raise ValueError(
            f"The '{name}' parameter of {fn} is constant along the last axis at batch index {idx}; "
            "the statistic is undefined for a constant input."
        )


def linregress(x, y) -> LinregressResult:
    """Ordinary least squares of ``y`` on ``x`` along the last axis.

    Parameters
    ----------
    x, y : arrays of shape (..., n), broadcastable; n >= 3.

    Returns
    -------
    LinregressResult with fields of shape (...). Matches ``scipy.stats.linregress``
    (slope, intercept, rvalue**2, stderr, intercept_stderr).
    """
    x, y = _pair(x, y, "linregress", 3)
    _check_not_constant(x, "x", "linregress")
    return _linregress_scaled(x, y)


def _row_scale(a):
    """Per-row powers of two bringing max|a| into [0.5, 1) (exact; 1 for all-zero rows)."""
    m = jnp.max(jnp.abs(a), axis=-1, keepdims=True)
    _, e = jnp.frexp(jnp.where(m > 0, m, 1.0).astype(a.dtype))
    return jnp.ldexp(jnp.ones_like(m), -e)


@jax.jit
def _linregress_scaled(x, y):
    """``linregress_fields`` on x, y scaled by powers of two (sums of squares cannot overflow or
    underflow, e.g. x ~ 1e30 or 1e-25 in float32), the fit scaled back."""
    a, b = _row_scale(x), _row_scale(y)
    f = linregress_fields(x * a, y * b)
    k = (a / b)[..., 0]
    ib = 1.0 / b[..., 0]
    return LinregressResult(f.slope * k, f.intercept * ib, f.r2, f.slope_stderr * k, f.intercept_stderr * ib)


@jax.jit
def rankdata(a):
    """Ranks along the last axis, ties averaged (scipy's ``method='average'``), 1-based.

    Parameters
    ----------
    a : array of shape (..., n)

    Returns
    -------
    array of shape (..., n), floating
    """
    s = jnp.sort(a, axis=-1)

    def one(srow, row):
        lo = jnp.searchsorted(srow, row, side="left")
        hi = jnp.searchsorted(srow, row, side="right")
        return (lo + hi + 1) / 2.0

    flat_s = s.reshape(-1, a.shape[-1])
    flat_a = a.reshape(-1, a.shape[-1])
    r = jax.vmap(one)(flat_s, flat_a).astype(jnp.result_type(a.dtype, jnp.float32))
    return r.reshape(a.shape)


@jax.jit
def _pearson(x, y):
    dx = x - jnp.mean(x, axis=-1, keepdims=True)
    dy = y - jnp.mean(y, axis=-1, keepdims=True)
    return jnp.sum(dx * dy, axis=-1) / jnp.sqrt(jnp.sum(dx * dx, axis=-1) * jnp.sum(dy * dy, axis=-1))


def pearson(x, y):
    """Pearson correlation along the last axis. x, y : (..., n) -> (...)."""
    x, y = _pair(x, y, "pearson", 2)
    _check_not_constant(x, "x", "pearson")
    _check_not_constant(y, "y", "pearson")
    return _pearson(x * _row_scale(x), y * _row_scale(y))  # scale invariant; no overflow


def spearman(x, y):
    """Spearman rank correlation along the last axis, ties ranked as scipy ranks them.

    Parameters
    ----------
    x, y : arrays of shape (..., n), n >= 2, neither constant.

    Returns
    -------
    rho : array of shape (...). Matches ``scipy.stats.spearmanr(x, y).statistic``.
    """
    x, y = _pair(x, y, "spearman", 2)
    _check_not_constant(x, "x", "spearman")
    _check_not_constant(y, "y", "spearman")
    rx, ry = rankdata(x), rankdata(y)
    return _pearson(rx.astype(x.dtype), ry.astype(y.dtype))


@jax.jit
def weighted_eer(scores, labels, weights):
    """EER of trials (m,) under trial weights (..., m) -> (...); NaN where a class has no weight.

    The ROC points are those of accepting every trial with score >= t for each distinct
    score t, from "accept none" down; the EER interpolates linearly where the miss rate
    equals the false-alarm rate (the same definition as ``torch_bridge.models.speaker.eer``,
    which is this with unit weights). Integer weights w give the EER of the trial list in
    which trial k appears w_k times.
    """
    order = jnp.argsort(-scores, stable=True)
    s, y = scores[order], labels[order]
    w = weights[..., order]
    m = s.shape[0]
    last = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])  # last trial of each distinct score
    valid = jnp.concatenate([jnp.ones((1,), bool), last])  # ROC points: "accept none", then one per score
    wt = w * y
    wn = w * (1 - y)
    pos = jnp.sum(wt, axis=-1, keepdims=True)
    neg = jnp.sum(wn, axis=-1, keepdims=True)
    zero = jnp.zeros(w.shape[:-1] + (1,), w.dtype)
    tpr = jnp.concatenate([zero, jnp.cumsum(wt, axis=-1)], axis=-1) / pos
    fpr = jnp.concatenate([zero, jnp.cumsum(wn, axis=-1)], axis=-1) / neg
    diff = (1.0 - tpr) - fpr  # non-increasing from 1 to -1 over the valid points
    k = jnp.arange(m + 1)
    i = jnp.argmax(valid & (diff <= 0), axis=-1)  # first valid point at or past the crossing
    prev = jnp.max(jnp.where(valid & (k < i[..., None]), k, 0), axis=-1)
    take = lambda a, j: jnp.take_along_axis(a, j[..., None], axis=-1)[..., 0]  # noqa: E731
    d0, d1 = take(diff, prev), take(diff, i)
    f0, f1 = take(fpr, prev), take(fpr, i)
    a = jnp.where(d0 != d1, d0 / jnp.where(d0 != d1, d0 - d1, 1.0), 0.0)
    out = f0 + a * (f1 - f0)
    ok = (pos[..., 0] > 0) & (neg[..., 0] > 0)
    return jnp.where(ok, out, jnp.nan)


def eer_inputs(scores, labels, fn, *, max_ndim=1):
    s = as_float_array(scores, "scores", fn=fn)
    y = np.asarray(labels)
    if not 1 <= s.ndim <= max_ndim or y.shape != s.shape[-1:] or s.shape[-1] == 0:
        want = "(m,)" if max_ndim == 1 else "(m,) or (k, m) (k systems scoring the same trials)"
        raise ValueError(
            f"The 'scores' and 'labels' parameters of {fn} must have shapes {want} and (m,), m > 0 trials; "
            f"got shapes {tuple(np.shape(scores))} and {tuple(np.shape(labels))}."
        )
    check_finite(s, "scores", fn=fn)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"The 'labels' parameter of {fn} must hold 0 (different speakers) or 1 (same speaker) per trial.")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            f"The 'labels' parameter of {fn} needs both target (1) and non-target (0) trials; got {n_pos} targets "
            f"of {y.size}."
        )
    return s, jnp.asarray(y, s.dtype)


def eer(scores, labels, weights=None):
    """Equal error rate of verification trials, optionally weighted.

    Parameters
    ----------
    scores : array of shape (m,), higher = more likely the same speaker.
    labels : array of shape (m,), 1 for a target (same-speaker) trial, 0 otherwise.
    weights : array of shape (..., m) or None; non-negative trial weights, a batch of
        weightings on leading axes (e.g. bootstrap replicates). Integer weights give the
        EER of the list in which each trial is repeated that many times.

    Returns
    -------
    array of shape (...) in [0, 1]: the miss rate where it equals the false-alarm rate,
    linearly interpolated between the two ROC points (one per distinct score) that
    bracket the crossing. With weights, NaN marks a weighting that leaves a class empty.
    """
    fn = "eer"
    s, y = eer_inputs(scores, labels, fn)
    if weights is None:
        return weighted_eer(s, y, jnp.ones_like(s))
    w = as_float_array(weights, "weights", fn=fn).astype(s.dtype)
    if w.shape[-1] != s.shape[0]:
        raise ValueError(f"The 'weights' parameter of {fn} must have shape (..., m) with m = {s.shape[0]} trials; "
                         f"got {tuple(w.shape)}.")
    check_finite(w, "weights", fn=fn)
    if bool(jnp.any(w < 0)):
        raise ValueError(f"The 'weights' parameter of {fn} must be non-negative.")
    return weighted_eer(s, y, w)


P_TARGETS = (0.01, 0.001)  # the operating points of the NIST SRE / VoxSRC detection cost


@jax.jit
def weighted_min_dcf(scores, labels, weights, p_targets, c_miss, c_fa):
    """Normalised minimum detection cost of trials (m,) under trial weights (..., m), one per
    prior in ``p_targets`` (P,) -> (..., P); NaN where a class has no weight.

    The operating points are the ROC points of :func:`weighted_eer` ("accept none", then one per
    distinct score, accepting every trial with score >= t). At each,
    DCF = c_miss * P_miss * p + c_fa * P_fa * (1 - p), divided by min(c_miss * p, c_fa * (1 - p)),
    the cost of the better trivial system (accept all or reject all); the minimum over the points.
    """
    order = jnp.argsort(-scores, stable=True)
    s, y = scores[order], labels[order]
    w = weights[..., order]
    last = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
    valid = jnp.concatenate([jnp.ones((1,), bool), last])
    wt = w * y
    wn = w * (1 - y)
    pos = jnp.sum(wt, axis=-1, keepdims=True)
    neg = jnp.sum(wn, axis=-1, keepdims=True)
    zero = jnp.zeros(w.shape[:-1] + (1,), w.dtype)
    # clipped to [0, 1]: in float32 a cumulative sum can overshoot its total by a rounding step
    p_miss = jnp.clip(1.0 - jnp.concatenate([zero, jnp.cumsum(wt, axis=-1)], axis=-1) / pos, 0.0, 1.0)  # (..., m + 1)
    p_fa = jnp.clip(jnp.concatenate([zero, jnp.cumsum(wn, axis=-1)], axis=-1) / neg, 0.0, 1.0)
    p = p_targets.astype(w.dtype)[:, None]  # (P, 1)
    dcf = c_miss * p * p_miss[..., None, :] + c_fa * (1.0 - p) * p_fa[..., None, :]  # (..., P, m + 1)
    dcf = dcf / jnp.minimum(c_miss * p, c_fa * (1.0 - p))
    out = jnp.min(jnp.where(valid, dcf, jnp.inf), axis=-1)
    ok = (pos[..., 0] > 0) & (neg[..., 0] > 0)
    return jnp.where(ok[..., None], out, jnp.nan)


def dcf_params(p_target, c_miss, c_fa, fn):
    p = np.atleast_1d(np.asarray(p_target, np.float64))
    if p.ndim != 1 or p.size == 0 or not np.all((p > 0) & (p < 1)):
        raise ValueError(f"The 'p_target' parameter of {fn} must be a prior or a 1-D list of priors in (0, 1); "
                         f"got {p_target!r}.")
    for name, c in (("c_miss", c_miss), ("c_fa", c_fa)):
        if not (isinstance(c, (int, float)) and np.isfinite(c) and c > 0):
            raise ValueError(f"The '{name}' parameter of {fn} must be a positive finite cost; got {c!r}.")
    return p, float(c_miss), float(c_fa)


def min_dcf(scores, labels, p_target=P_TARGETS, weights=None, *, c_miss: float = 1.0, c_fa: float = 1.0):
    """Normalised minimum detection cost (minDCF) of verification trials, optionally weighted.

    Parameters
    ----------
    scores : array of shape (m,), higher = more likely the same speaker.
    labels : array of shape (m,), 1 for a target (same-speaker) trial, 0 otherwise.
    p_target : a prior of a target trial in (0, 1), or a 1-D list of them (default 0.01 and 0.001).
    weights : array of shape (..., m) or None; non-negative trial weights (as in :func:`eer`).
    c_miss, c_fa : costs of a miss and of a false alarm (default 1 and 1).

    Returns
    -------
    array of shape (..., P), P = number of priors (a scalar prior gives (...,)): the minimum over
    the score thresholds of C_miss P_miss p + C_fa P_fa (1 - p), divided by
    min(C_miss p, C_fa (1 - p)); 0 for separable trials, at most 1 (a trivial system). With
    weights, NaN marks a weighting that leaves a class empty.
    """
    fn = "min_dcf"
    s, y = eer_inputs(scores, labels, fn)
    p, cm, cf = dcf_params(p_target, c_miss, c_fa, fn)
    if weights is None:
        w = jnp.ones_like(s)
    else:
        w = as_float_array(weights, "weights", fn=fn).astype(s.dtype)
        if w.shape[-1] != s.shape[0]:
            raise ValueError(f"The 'weights' parameter of {fn} must have shape (..., m) with m = {s.shape[0]} trials; "
                             f"got {tuple(w.shape)}.")
        check_finite(w, "weights", fn=fn)
        if bool(jnp.any(w < 0)):
            raise ValueError(f"The 'weights' parameter of {fn} must be non-negative.")
    out = weighted_min_dcf(s, y, w, jnp.asarray(p, s.dtype), cm, cf)
    return out[..., 0] if np.ndim(p_target) == 0 else out


def percentile_interval(reps, level: float):
    """The percentile bootstrap interval: (B, ...) replicates -> (low, high), float64 arrays of
    shape (...), the (1 - level)/2 and (1 + level)/2 quantiles over the replicate axis (numpy's
    linear interpolation). The one percentile helper of the bootstrap, the sweep and the geometry."""
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(reps, np.float64), [a, 1.0 - a], axis=0)
    return lo, hi
