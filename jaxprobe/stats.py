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
def _linregress(x, y):
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
    return _linregress(x, y)


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
    return _pearson(x, y)


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
