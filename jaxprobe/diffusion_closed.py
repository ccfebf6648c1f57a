"""Diffusion distances over all components without an eigendecomposition (t = 1/2 or 1).

``diffusion_group_distances(X, labels)`` gives, for each cloud, the distances between the
means (over the points of each group, e.g. each SNR level) of its diffusion coordinates
with every nontrivial component kept: the same numbers as ``intra_layer(X, snr, t=0.5)``'s
``level_distances`` with ``solver="eigh"`` and ``energy=None``, from the affinity matrix
and its degrees alone (the derivation is in ``kernels.diffusion_distance``):
``D^2(a, b) = vol (m_a - m_b)^T D^-1 K_a D^-1 (m_a - m_b)`` at t = 1/2.

With the authors' 99 % energy rule the truncated distances differ from these by the
dropped tail: at t = 1/2 the pi-weighted mean of the squared point distances loses exactly
the dropped share of ``sum(lambda)`` (<= 1 %), each pair at most
``lambda_{m+1} (1/pi_i + 1/pi_j)``. Conventions (kernel, epsilon rules, alpha) are those of
``jaxprobe.diffusion``.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import native
from jaxprobe._validate import check_choice, check_positive
from jaxprobe_kernels.affinity import default_gram_blocks, epsilon_bgh, epsilon_median, gaussian_affinity, symmetric_sq_distances
from jaxprobe_kernels.diffusion_distance import group_sq_distances, group_sq_distances_t1
from jaxprobe_kernels.gram import sq_distances

_FN = "diffusion_group_distances"
EPSILON_RULES = ("median", "bgh")


@partial(jax.jit, static_argnames=("rule", "t1", "native_median"))
def _one(X, M, eps_value, alpha, *, rule, t1, native_median=False):
    D2 = symmetric_sq_distances(X) if default_gram_blocks(*X.shape) > 1 else sq_distances(X)
    if rule == "median":  # the same bits either way (jaxprobe.native.upper_median)
        eps = native.upper_median(D2) if native_median else epsilon_median(D2)
    else:
        eps = epsilon_bgh(D2)[0] if rule == "bgh" else eps_value
    K = gaussian_affinity(D2, eps)
    qa = jnp.sum(K, axis=1) ** (-alpha)
    d2 = (group_sq_distances_t1 if t1 else group_sq_distances)(K, qa, M)
    return jnp.sqrt(d2)


@partial(jax.jit, static_argnames=("rule", "t1", "native_median"))
def _batched(flat, M, eps_value, alpha, *, rule, t1, native_median=False):
    return jax.lax.map(lambda x: _one(x, M, eps_value, alpha, rule=rule, t1=t1, native_median=native_median), flat)


def diffusion_group_distances(X, labels, *, epsilon="median", alpha=0.0, t=0.5):
    """Distances between group means of all-component diffusion coordinates, closed form.

    Parameters
    ----------
    X : array of shape (..., n, d), one cloud per leading index.
    labels : int array of shape (n,), the group of each point (e.g. the SNR level index);
        groups are the sorted distinct labels.
    epsilon : "median", "bgh" or a number > 0, as in ``diffusion_map``.
    alpha : float in [0, 1], density normalisation as in ``diffusion_map``.
    t : 0.5 or 1 (the times with a closed form without a matrix power or root).

    Returns
    -------
    array of shape (..., G, G): symmetric, zero diagonal.
    """
    from jaxprobe.diffusion import check_clouds

    if isinstance(t, bool) or t not in (0.5, 1, 1.0):
        raise ValueError(f"The 't' parameter of {_FN} must be 0.5 or 1 (the closed forms); got {t!r}. "
                         "Use diffusion_map and diffusion_distances for other times.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"The 'alpha' parameter of {_FN} must be a number in [0, 1]. Got {alpha!r} instead.")
    if isinstance(epsilon, str):
        rule, eps_value = check_choice(epsilon, "epsilon", EPSILON_RULES, fn=_FN), 1.0
    else:
        rule, eps_value = None, check_positive(epsilon, "epsilon", fn=_FN)
    X = check_clouds(X, "X", _FN)
    n = X.shape[-2]
    lab = np.asarray(labels)
    if lab.shape != (n,) or lab.dtype.kind not in "iu":
        raise ValueError(f"The 'labels' parameter of {_FN} must be an int array of shape (n,) = ({n},), one group "
                         f"per point; got {lab.dtype} {lab.shape}.")
    groups, inv = np.unique(lab, return_inverse=True)
    if len(groups) < 2:
        raise ValueError(f"The 'labels' parameter of {_FN} must name at least 2 groups; got {len(groups)}.")
    M = np.zeros((len(groups), n))
    M[inv, np.arange(n)] = 1.0
    M = jnp.asarray(M / M.sum(axis=1, keepdims=True), X.dtype)
    batch = X.shape[:-2]
    flat = X.reshape((-1,) + X.shape[-2:])
    out = _batched(flat, M, jnp.asarray(eps_value, X.dtype), jnp.asarray(alpha, X.dtype), rule=rule,
                   t1=float(t) == 1.0, native_median=rule == "median" and native.median_usable(X))
    return out.reshape(batch + out.shape[-2:])
