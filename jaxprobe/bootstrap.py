"""Bootstrap confidence intervals for CKA and for means of per-item statistics.

Every resampling scheme is expressed as a matrix of counts ``C`` (B, n): row b says
how often each sample enters replicate b. Replicate b's counts come from
``jax.random.fold_in(key, b)``, so a replicate does not depend on the chunking, the
batch it is computed in or the device count. The statistics are then matrix
products with ``C`` (see ``kernels.resample`` for the HSIC derivation); no resampled
data set or Gram matrix is ever materialised.

Schemes
-------
* iid (``groups=None``): n rows drawn with replacement.
* cluster (``groups`` given): the G groups (e.g. noise types) are drawn with
  replacement and every row of a drawn group enters with its group's count.
* hierarchical (``groups`` and ``hierarchical=True``): groups drawn with
  replacement, then, for every drawn group, its own number of rows drawn with
  replacement from within it (two-level bootstrap, e.g. noise types x utterances).

Intervals
---------
* ``percentile``: the (1 - level)/2 and (1 + level)/2 quantiles of the replicates
  (linear interpolation, numpy's default).
* ``bca``: bias-corrected and accelerated (Efron 1987). Bias ``z0 = Phi^-1(#{theta* <
  theta_hat} / B)``; acceleration from the jackknife over the resampling unit (rows
  for iid, groups for cluster and hierarchical), itself computed through count rows
  ``1 - e_i``: ``a = sum (m - theta_i)^3 / (6 (sum (m - theta_i)^2)^1.5)``.

The designs, the result record and the interval methods are in :mod:`jaxprobe.resampling`
(re-exported here); this module holds the bootstraps of CKA, of means and of verification
measures, and their sharded replicate paths.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxprobe._validate import as_float_array, check_bool, check_choice, check_finite, check_int, check_key
from jaxprobe._cka import KERNELS, resolve_sigma, validate_pair, raise_constants
from jaxprobe import _mesh
from jaxprobe.resampling import (METHODS, BootstrapResult, Design, bootstrap_interval, check_boot_settings,  # noqa: F401
                                 n_distinct_resamples, resample_counts)
from jaxprobe_kernels import gram as _gram
from jaxprobe_kernels import resample as _resample


# ----------------------------------------------------------------------------- CKA

@partial(jax.jit, static_argnames=("debiased", "chunk"))
def _boot_cka_from_grams(K, L, C, *, debiased, chunk):
    """K, L (..., n, n) sharing one count matrix C (B, n) -> CKA (B, ...)."""
    def one(k, l):
        kl, kk, ll = _resample.bootstrap_hsic_terms(k, l, C, debiased=debiased, chunk=chunk)
        return kl, kk, ll

    f = one
    for _ in range(K.ndim - 2):
        f = jax.vmap(f)
    kl, kk, ll = f(K, L)
    kl, kk, ll = (jnp.moveaxis(a, -1, 0) for a in (kl, kk, ll))
    return kl, kk, ll


@partial(jax.jit, static_argnames=("kernel",))
def _grams(X, Y, sx, sy, *, kernel):
    """Grams of every item (each scaled by a power of two: no overflow) and the items'
    constant statistics (``kernels.gram.constant_ratio``), from the same centred products."""
    def g(A, s):
        Ac, mean_ss = _gram.centred_columns(A, True)  # HSIC is shift invariant; centering helps float32
        L = Ac @ Ac.T
        r = _gram.constant_ratio(jnp.sum(L * L), mean_ss, True)
        if kernel == "linear":
            return L, r
        return _gram.rbf_gram(A * _gram.pow2_scale(A), s * _gram.pow2_scale(A)), r

    f = g
    for _ in range(X.ndim - 2):
        f = jax.vmap(f)
    (K, rx), (L, ry) = f(X, sx), f(Y, sy)
    return K, L, rx, ry


# ----------------------------------------------------------------------------- sharded replicates
# With mesh=, each device receives the replicate ids it owns and draws their count rows itself
# from fold_in(key, b); the Grams or item values are replicated. Row b is the same on any device
# count, so results do not depend on the mesh. Plumbing in jaxprobe._mesh.

def _design_parts(design):
    """Static kind and replicated arrays of a Design."""
    if design.labels is None:
        return ("iid", design.n, 0), (np.zeros(1, np.int32), np.zeros((1, 1), np.int32), np.zeros(1, np.int32))
    kind = "hier" if design.hierarchical else "cluster"
    return (kind, design.n, design.n_groups), (design.labels, design.members, design.sizes)


def _local_counts(ids, kd, labels, members, sizes, *, impl, kind, n, n_groups):
    key = _mesh.rewrap_key(kd, impl)
    if kind == "iid":
        return _resample.iid_counts(key, ids, n)
    if kind == "cluster":
        return _resample.cluster_counts(key, ids, labels, n_groups)
    return _resample.hier_counts(key, ids, members, sizes, n)


def _cka_body(ids, kd, labels, members, sizes, K, L, *, impl, kind, n, n_groups, debiased, chunk):
    C = _local_counts(ids, kd, labels, members, sizes, impl=impl, kind=kind, n=n, n_groups=n_groups)
    return _boot_cka_from_grams(K, L, C, debiased=debiased, chunk=chunk)


def _counts_body(ids, kd, labels, members, sizes, *, impl, kind, n, n_groups):
    return _local_counts(ids, kd, labels, members, sizes, impl=impl, kind=kind, n=n, n_groups=n_groups)


def _run_replicates(body, mesh, design, key, n_boot, arrays, **statics):
    mesh = _mesh.as_mesh(mesh)
    (kind, n, n_groups), parts = _design_parts(design)
    kd, impl = _mesh.key_parts(key)
    total = _mesh.padded_size(n_boot, mesh)
    ids = _mesh.put(np.arange(total, dtype=np.int32), mesh, _mesh.leading_spec(mesh))
    rep = [_mesh.put(a, mesh, P()) for a in (kd, *parts, *arrays)]
    st = tuple(sorted(dict(statics, impl=impl, kind=kind, n=n, n_groups=n_groups).items()))
    out = _mesh.compiled_shard_map(body, mesh, len(rep), st)(ids, *rep)
    return jax.tree_util.tree_map(lambda a: _mesh.fetch(a, n_boot), out)


def sharded_bootstrap_cka_terms(K, L, design, key, n_boot, *, mesh, debiased, chunk):
    """HSIC terms (kl, kk, ll), each (n_boot, ...), with replicates split over ``mesh``.

    K, L : (..., n, n) Grams, replicated; ``design`` a ``Design``. Every device draws its
    own replicates' count rows from ``fold_in(key, b)``.
    """
    mesh = _mesh.as_mesh(mesh)
    per_device = _mesh.padded_size(n_boot, mesh) // mesh.size
    return _run_replicates(_cka_body, mesh, design, key, n_boot, (K, L),
                           debiased=bool(debiased), chunk=int(min(chunk, per_device)))


def sharded_counts(design, key, n_boot, *, mesh):
    """The (n_boot, n) int32 count matrix of ``design``, its rows drawn over ``mesh``
    (row b from ``fold_in(key, b)``: equal to ``design.counts(key, n_boot)``)."""
    return np.asarray(_run_replicates(_counts_body, mesh, design, key, n_boot, ()))


def bootstrap_cka(
    X,
    Y,
    *,
    key,
    n_boot: int = 1000,
    groups=None,
    hierarchical: bool = False,
    level: float = 0.95,
    method: str = "percentile",
    debiased: bool = False,
    kernel: str = "linear",
    sigma=None,
    chunk: int = 256,
    mesh=None,
) -> BootstrapResult:
    """Bootstrap interval of CKA(X, Y), all replicates from count-matrix GEMMs.

    Parameters
    ----------
    X : array of shape (..., n, d1)
    Y : array of shape (..., n, d2)
        Rows are matched samples; leading axes broadcast and all share the same
        resamples (a paired bootstrap across, e.g., layers and SNRs).
    key : jax PRNG key. Replicate b uses ``fold_in(key, b)``.
    n_boot : int >= 1
    groups : optional array of shape (n,), cluster labels (e.g. noise type per row).
    hierarchical : bool, resample groups then rows within groups.
    level : float in (0, 1)
    method : {"percentile", "bca"}
    debiased : bool, unbiased HSIC (needs n >= 4 and >= 4 rows in every replicate).
    kernel, sigma : as in :func:`jaxprobe.cka`; the RBF bandwidth is set once on the
        full sample and kept for every replicate.
    chunk : replicates per GEMM (memory O(chunk * 5n) per batch item).
    mesh : None (one device), or a ``jax.sharding.Mesh``, "all" or N: replicates are split
        over the devices (``jaxprobe.distributed``); the same replicates for any device count.

    Returns
    -------
    BootstrapResult with estimate/low/high of shape (...) and replicates (n_boot, ...).

    Raises
    ------
    ValueError naming 'X' or 'Y' and the batch index for a constant item, by the rule of every
    CKA path (``jaxprobe._validate.CONSTANT_RULE``), computed with the Grams.
    """
    fn = "bootstrap_cka"
    n_boot, level = check_boot_settings(n_boot, level, method, fn)
    check_choice(kernel, "kernel", KERNELS, fn=fn)
    chunk = check_int(chunk, "chunk", fn=fn, low=1)
    hierarchical = check_bool(hierarchical, "hierarchical", fn=fn)
    key = check_key(key, fn=fn)
    X, Y, batch = validate_pair(X, Y, fn, debiased)
    debiased = bool(debiased)
    X0, Y0 = X, Y
    X = jnp.broadcast_to(X, batch + X.shape[-2:])
    Y = jnp.broadcast_to(Y, batch + Y.shape[-2:])
    n = X.shape[-2]
    design = Design(n, groups, hierarchical, fn)
    if kernel == "linear":
        if sigma is not None:
            raise ValueError("The 'sigma' parameter of bootstrap_cka applies to kernel='rbf' only.")
        sx = sy = jnp.zeros(batch, X.dtype)
    else:
        sx, sy = resolve_sigma(X, sigma, fn), resolve_sigma(Y, sigma, fn)
    K, L, rx, ry = _grams(X, Y, sx, sy, kernel=kernel)
    if not bool(jnp.all(jnp.isfinite(K)) & jnp.all(jnp.isfinite(L))):
        check_finite(X0, "X", fn=fn)
        check_finite(Y0, "Y", fn=fn)
    raise_constants(rx, ry, X0, Y0, fn)

    chunk = min(chunk, n_boot)
    if mesh is None:
        C = design.counts(key, n_boot)
        kl, kk, ll = _boot_cka_from_grams(K, L, C, debiased=debiased, chunk=chunk)
    else:
        kl, kk, ll = sharded_bootstrap_cka_terms(K, L, design, key, n_boot, mesh=mesh, debiased=debiased, chunk=chunk)
    full = jnp.ones((1, n), jnp.int32)
    ekl, ekk, ell = _boot_cka_from_grams(K, L, full, debiased=debiased, chunk=1)
    estimate = (ekl / jnp.sqrt(ekk * ell))[0]

    bad = np.asarray((kk <= 0) | (ll <= 0))
    if bad.any():
        b = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"{int(bad.sum())} bootstrap replicate(s) of {fn} (first: replicate {b}) resampled a "
            "degenerate set (fewer distinct rows than the estimator needs, so HSIC(K, K) <= 0). "
            "Use more samples, the cluster design, or debiased=False."
        )
    reps = kl / jnp.sqrt(kk * ll)
    if not bool(jnp.all(jnp.isfinite(reps)) & jnp.all(jnp.isfinite(estimate))):
        raise FloatingPointError(f"{fn} produced a non-finite CKA from finite, non-constant inputs"
                                 + (" (an RBF bandwidth of 0; pass sigma= explicitly)." if kernel == "rbf" else "."))
    jack = None
    if method == "bca":
        J = jnp.asarray(design.jackknife())
        jkl, jkk, jll = _boot_cka_from_grams(K, L, J, debiased=debiased, chunk=min(chunk, J.shape[0]))
        jack = jkl / jnp.sqrt(jkk * jll)
    low, high = bootstrap_interval(reps, estimate, jack, level, method)
    return BootstrapResult(estimate, low, high, reps, level, method)


# ----------------------------------------------------------------------------- means
# The arithmetic around the weighted means is two jitted programs per shape (not ~25 eager
# operations, each compiled on first use).

@jax.jit
def _scaled_items(v):
    """v (..., n) -> the (n, k) items, every statistic scaled by a power of two (exact) so that
    its values are below 1 in magnitude (the count-weighted sums cannot overflow, values near
    1e37 in float32), and the scales (k,)."""
    rows = v.reshape(-1, v.shape[-1])
    scale = jax.vmap(_gram.pow2_scale)(rows)  # (k,)
    return rows.T * scale[None, :], scale


@partial(jax.jit, static_argnames=("shape",))
def _unscaled_means(flat, C, scale, shape):
    """Replicate means (B, *shape) of the scaled items under the count rows C (B, n), and the
    estimate (*shape), scaled back."""
    reps = _resample.bootstrap_weighted_means(flat, C) / scale[None, :]
    estimate = jnp.mean(flat, axis=0) / scale
    return reps.reshape((C.shape[0],) + shape), estimate.reshape(shape)


def bootstrap_mean(
    values,
    *,
    key,
    n_boot: int = 1000,
    groups=None,
    hierarchical: bool = False,
    level: float = 0.95,
    method: str = "percentile",
    mesh=None,
) -> BootstrapResult:
    """Bootstrap interval of the mean of per-item statistics (last axis = items).

    E.g. per-utterance CKA values of shape (layers, SNRs, noise x utterance items)
    averaged over items, with ``groups`` = the noise type of each item for the
    paper's across-noise-type bootstrap. All statistics share the same resamples.

    Parameters
    ----------
    values : array of shape (..., n)
    key, n_boot, groups, hierarchical, level, method, mesh : as in :func:`bootstrap_cka`.

    Returns
    -------
    BootstrapResult with estimate/low/high of shape (...) and replicates (n_boot, ...).
    """
    fn = "bootstrap_mean"
    n_boot, level = check_boot_settings(n_boot, level, method, fn)
    key = check_key(key, fn=fn)
    hierarchical = check_bool(hierarchical, "hierarchical", fn=fn)
    v = as_float_array(values, "values", fn=fn)
    check_finite(v, "values", fn=fn)
    n = v.shape[-1]
    if n < 2:
        raise ValueError(f"The 'values' parameter of {fn} needs at least 2 items on the last axis; got {n}.")
    design = Design(n, groups, hierarchical, fn)
    flat, scale = _scaled_items(v)
    if mesh is None:
        C = design.counts(key, n_boot)
    else:
        # count rows drawn on the mesh's devices; the weighted means (one GEMM) by the same
        # single-device program as without a mesh: bit-identical on any number of devices (a
        # GEMM split by rows may round differently)
        C = jnp.asarray(sharded_counts(design, key, n_boot, mesh=mesh))
    reps, estimate = _unscaled_means(flat, C, scale, v.shape[:-1])
    jack = None
    if method == "bca":
        J = jnp.asarray(design.jackknife())
        jack = (_resample.bootstrap_weighted_means(flat, J) / scale[None, :]).reshape((J.shape[0],) + v.shape[:-1])
    low, high = bootstrap_interval(reps, estimate, jack, level, method)
    return BootstrapResult(estimate, low, high, reps, level, method)


# ----------------------------------------------------------------------------- EER


class TooFewResamplesError(ValueError):
    """Too few bootstrap resamples kept both trial classes for an EER interval."""


def bootstrap_eer(
    scores,
    labels,
    pairs,
    *,
    key,
    n_items: int | None = None,
    n_boot: int = 1000,
    groups=None,
    level: float = 0.95,
) -> BootstrapResult:
    """Bootstrap interval of a verification EER, resampling the items the trials are made of.

    Trials share items (an utterance takes part in many pairs), so resampling trials
    would treat dependent trials as independent and give too narrow an interval. Here the
    items are resampled (whole ``groups``, e.g. speakers, with ``groups``): replicate b
    weights trial (i, j) by ``c_bi * c_bj``, its multiplicity among the resampled items
    (pairs of a duplicated item with itself are not trials), and its EER is the weighted
    EER (:func:`jaxprobe.stats.eer`) -- all replicates in one batched call. A replicate
    that leaves no target or no non-target trial has no EER; it is dropped
    (``result.n_boot`` counts those kept; fewer than half kept is an error). Percentile
    intervals.

    Parameters
    ----------
    scores : array of shape (m,), or (k, m) for k systems scoring the same trials (e.g.
        two recognisers' reconstructions of the same utterances): all share the
        resamples, so replicate differences give paired intervals.
    labels : array of shape (m,) (1 = same speaker)
    pairs : int array of shape (m, 2), the items of each trial.
    key : PRNG key; replicate b uses ``fold_in(key, b)``.
    n_items : number of items (default: ``pairs.max() + 1``).
    n_boot, level : as in :func:`bootstrap_cka`.
    groups : array of shape (n_items,) or None; resample whole groups (cluster bootstrap).

    Returns
    -------
    BootstrapResult: estimate/low/high of shape () or (k,), replicates (kept resamples, ...).

    Raises
    ------
    TooFewResamplesError (a ValueError) when fewer than half the resamples keep both
    trial classes; ValueError for malformed scores, labels or pairs.
    """
    from jaxprobe.stats import eer_inputs, weighted_eer

    fn = "bootstrap_eer"
    key = check_key(key, fn=fn)
    n_boot, level = check_boot_settings(n_boot, level, "percentile", fn)
    s, y = eer_inputs(scores, labels, fn, max_ndim=2)
    m = s.shape[-1]
    p = np.asarray(pairs)
    if p.ndim != 2 or p.shape != (m, 2) or p.dtype.kind not in "iu":
        raise ValueError(f"The 'pairs' parameter of {fn} must be an int array of shape (m, 2) = ({m}, 2), "
                         f"the two items of each trial; got {p.dtype} {tuple(p.shape)}.")
    n = int(p.max()) + 1 if n_items is None else check_int(n_items, "n_items", fn=fn, low=2)
    if p.min() < 0 or p.max() >= n or np.any(p[:, 0] == p[:, 1]):
        raise ValueError(f"The 'pairs' parameter of {fn} must hold two different item indices in [0, {n}) per trial.")
    C = Design(n, groups, False, fn).counts(key, n_boot).astype(s.dtype)  # (B, n)
    W = C[:, p[:, 0]] * C[:, p[:, 1]]
    sk = s.reshape(-1, m)
    reps = np.asarray(jax.vmap(weighted_eer, in_axes=(0, None, None), out_axes=1)(sk, y, W))  # (B, k)
    keep = np.isfinite(reps).all(axis=1)  # validity depends on the weights only: the same for every system
    reps = reps[keep].reshape((-1,) + s.shape[:-1])
    if reps.shape[0] < max(2, n_boot // 2):
        raise TooFewResamplesError(
            f"{fn}: only {reps.shape[0]} of {n_boot} replicates had both target and non-target trials; the trial "
            "list is too small (or too few groups) for a bootstrap interval."
        )
    estimate = jax.vmap(weighted_eer, in_axes=(0, None, None))(sk, y, jnp.ones((m,), s.dtype)).reshape(s.shape[:-1])
    low, high = bootstrap_interval(reps, estimate, None, level, "percentile")
    return BootstrapResult(estimate, low, high, jnp.asarray(reps), level, "percentile")


def bootstrap_min_dcf(
    scores,
    labels,
    pairs,
    *,
    key,
    p_target=(0.01, 0.001),
    n_items: int | None = None,
    n_boot: int = 1000,
    groups=None,
    level: float = 0.95,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> BootstrapResult:
    """Bootstrap interval of the normalised minDCF (:func:`jaxprobe.stats.min_dcf`), resampling
    the items the trials are made of exactly as :func:`bootstrap_eer` does: the same ``key``,
    ``n_items``, ``n_boot`` and ``groups`` give the same resamples, so minDCF and EER intervals
    describe the same replicate populations. Percentile intervals.

    Parameters
    ----------
    scores : array of shape (m,), or (k, m) for k systems scoring the same trials.
    labels, pairs, key, n_items, n_boot, groups, level : as in :func:`bootstrap_eer`.
    p_target : a prior in (0, 1) or a 1-D list of them (default 0.01 and 0.001).
    c_miss, c_fa : costs of a miss and a false alarm (default 1 and 1).

    Returns
    -------
    BootstrapResult: estimate/low/high of shape (P,) or (k, P) (P priors; a scalar prior drops
    that axis), replicates (kept resamples, ...).

    Raises
    ------
    TooFewResamplesError as :func:`bootstrap_eer`; ValueError for malformed inputs.
    """
    from jaxprobe.stats import dcf_params, eer_inputs, weighted_min_dcf

    fn = "bootstrap_min_dcf"
    n_boot, level = check_boot_settings(n_boot, level, "percentile", fn)
    s, y = eer_inputs(scores, labels, fn, max_ndim=2)
    p_arr, cm, cf = dcf_params(p_target, c_miss, c_fa, fn)
    m = s.shape[-1]
    p = np.asarray(pairs)
    if p.ndim != 2 or p.shape != (m, 2) or p.dtype.kind not in "iu":
        raise ValueError(f"The 'pairs' parameter of {fn} must be an int array of shape (m, 2) = ({m}, 2), "
                         f"the two items of each trial; got {p.dtype} {tuple(p.shape)}.")
    n = int(p.max()) + 1 if n_items is None else check_int(n_items, "n_items", fn=fn, low=2)
    if p.min() < 0 or p.max() >= n or np.any(p[:, 0] == p[:, 1]):
        raise ValueError(f"The 'pairs' parameter of {fn} must hold two different item indices in [0, {n}) per trial.")
    C = Design(n, groups, False, fn).counts(key, n_boot).astype(s.dtype)  # (B, n), as bootstrap_eer
    W = C[:, p[:, 0]] * C[:, p[:, 1]]
    sk = s.reshape(-1, m)
    pj = jnp.asarray(p_arr, s.dtype)
    stat = jax.vmap(weighted_min_dcf, in_axes=(0, None, None, None, None, None), out_axes=1)
    reps = np.asarray(stat(sk, y, W, pj, cm, cf))  # (B, k, P)
    keep = np.isfinite(reps).reshape(reps.shape[0], -1).all(axis=1)
    scalar = np.ndim(p_target) == 0
    shape = s.shape[:-1] + (() if scalar else (p_arr.size,))
    reps = reps[keep].reshape((-1,) + shape)
    if reps.shape[0] < max(2, n_boot // 2):
        raise TooFewResamplesError(
            f"{fn}: only {reps.shape[0]} of {n_boot} replicates had both target and non-target trials; the trial "
            "list is too small (or too few groups) for a bootstrap interval."
        )
    estimate = stat(sk, y, jnp.ones((m,), s.dtype), pj, cm, cf).reshape(shape)
    low, high = bootstrap_interval(reps, estimate, None, level, "percentile")
    return BootstrapResult(estimate, low, high, jnp.asarray(reps), level, "percentile")
