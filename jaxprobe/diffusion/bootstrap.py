"""Bootstrap of the diffusion geometry: resample the data, recompute the centroids, recompute every map.

The SE study's diffusion maps are built on centroids: for each (layer, noise type, SNR)
the mean over items (utterance windows) of the flattened activation. A replicate

1. resamples the noise types with replacement (K slots, each a noise type) and, in the
   "hierarchical" design, the items with replacement independently within each slot
   (the same items at every SNR: an utterance is resampled, not a mixture), as the
   CKA bootstrap does (``jaxprobe.bootstrap``);
2. recomputes the centroids from those weights: ``c[j, s] = sum_u w[j, u] x[k_j, s, u]``;
3. recomputes every map (intra-layer over the K x S centroids, one per layer; one per
   layer and slot over the S SNR centroids; inter-layer over the chosen layers, one per
   SNR) with the settings of the full-data maps (same solver and number of components),
   and aligns each replicate's eigenvector signs to the full-data map: each component is
   flipped so that its pi-weighted inner product with the full-data DC1 at the
   corresponding points (slot j <-> noise type k_j) is >= 0;
4. recomputes every statistic from the recomputed maps (DC1 against SNR per slot, in both
   coordinate conventions; distances between SNR levels; distances between layer groups).

Replicates run in chunks through one jitted function (a chunk is ``vmap``-ed for the dense
eigh solver, mapped sequentially for the top-k solvers), the maps of one replicate batched
over layers as in ``diffusion_map`` (the same dense eigh, Krylov or LOBPCG solvers). Random
keys: replicate b uses ``fold_in(key, b)``, so results do not depend on chunking.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.diffusion.map import diffusion_map_batched
from jaxprobe.stats import linregress_fields, percentile_interval, rankdata
from jaxprobe_kernels.gram import sq_distances

DESIGNS = ("hierarchical", "noise")
CHUNK_BYTES = 256 << 20  # activations gathered per lax.map step, about


def resample(key, n_boot: int, n_noises: int, n_items: int, design: str = "hierarchical"):
    """Replicate designs: which noise type fills each of the K slots, and item weights per slot.

    Returns
    -------
    index : int array of shape (B, K), noise type of each slot.
    weights : float32 array of shape (B, K, U), rows summing to 1 (item counts / U for
        "hierarchical"; 1/U everywhere for "noise").
    """
    if design not in DESIGNS:
        raise ValueError(f"The 'design' parameter of resample must be one of {DESIGNS}. Got {design!r} instead.")

    def one(b):
        kn, ku = jax.random.split(jax.random.fold_in(key, b))
        idx = jax.random.randint(kn, (n_noises,), 0, n_noises)
        if design == "noise":
            return idx, jnp.full((n_noises, n_items), 1.0 / n_items, jnp.float32)
        draws = jax.random.randint(ku, (n_noises, n_items), 0, n_items)
        counts = jnp.sum(jax.nn.one_hot(draws, n_items, dtype=jnp.float32), axis=1)
        return idx, counts / n_items

    return jax.vmap(one)(jnp.arange(n_boot))


def _spearman(x, y):
    """Spearman rho along the last axis, no host checks (NaN for a constant input)."""
    rx, ry = rankdata(jnp.broadcast_to(x, y.shape)), rankdata(y)
    dx = rx - jnp.mean(rx, axis=-1, keepdims=True)
    dy = ry - jnp.mean(ry, axis=-1, keepdims=True)
    return jnp.sum(dx * dy, axis=-1) / jnp.sqrt(jnp.sum(dx * dx, axis=-1) * jnp.sum(dy * dy, axis=-1))


def _maps(cloud, align, key, eps_value, alpha, t, energy, static, M=None, closed=None):
    """Maps of a batch of clouds (B, n, d) with the full-data settings ``static`` (a tuple of
    items: rule, k, solver, use_energy). Returns coords (B, n, k), pi (B, n), a (B,) health
    flag (finite input, points not all identical, epsilon > 0), the largest residual and, with
    group weights ``M`` (G, n), the group distances (B, G, G) of ``diffusion_map``'s
    ``group_distances`` (``closed``: the closed form's coordinates, or None)."""
    st = dict(static)
    out = diffusion_map_batched(
        cloud, eps_value, alpha, t, energy, align, key, M,
        rule=st["rule"], k=st["k"], solver=st["solver"], block_size=None,
        maxiter=100 if st["solver"] != "eigh" else 0, tol=None,
        use_energy=st["use_energy"], use_align=True,
        sequential=st["solver"] in ("lobpcg", "krylov"), closed=closed,
    )
    coords, _, _, eps, pi, _, _, _, _, _, resid, finite, spread, _, gd, _ = out
    ok = finite & spread & (eps > 0) & jnp.all(jnp.isfinite(coords), axis=(-2, -1))
    return coords, pi, ok, jnp.max(resid), gd


def _fits(snrs, dc1):
    return _spearman(snrs, dc1), linregress_fields(jnp.broadcast_to(snrs, dc1.shape), dc1).r2


def _over_replicates(one, index, weights, ids, batched):
    """One chunk of replicates: ``vmap`` (dense eigh solvers: batched LAPACK calls) or a
    sequential ``lax.map`` (top-k solvers: vmap would turn their LOBPCG fallback's
    ``lax.cond`` into running both branches)."""
    if batched:
        return jax.vmap(lambda i, w, b: one((i, w, b)))(index, weights, ids)
    return jax.lax.map(one, (index, weights, ids))


# One LAPACK solver per compiled program, programs run one after another.
# jaxlib 0.10's CPU LAPACK kernels (eigh, qr, cholesky) split a batch over XLA's intra-op
# thread pool and block the calling pool thread until the pieces finish. Two such calls
# that XLA may run concurrently (independent maps in one program, or two programs in
# flight) can occupy every pool thread on a small machine (2 here) while their pieces wait
# in the queue: a deadlock, seen as every thread asleep in ``BlockingCounter::Wait``
# under ``lapack_ssyevd_ffi``. So the pooled maps and the per-noise maps of a replicate
# are separate jitted functions, and ``_in_chunks`` waits for each result before it
# dispatches the next call (tests/jaxprobe/test_diffusion_bootstrap.py checks that each
# compiled program holds one solver call).


@partial(jax.jit, static_argnames=("static", "symmetric", "batched"))
def _intra_pooled_replicates(X, index, weights, ids, align, snrs, eps_value, alpha, t_, energy, key, *,
                             static, symmetric, batched):
    """Per replicate: the pooled intra-layer maps (one per layer, K x S centroids)."""
    L, K, S, U, D = X.shape
    snrs = snrs.astype(X.dtype)

    def one(args):
        i, w, b = args
        kb = jax.random.fold_in(key, b)
        C = jnp.einsum("ju,ljsud->ljsd", w.astype(X.dtype), X[:, i])  # (L, K, S, D) recomputed centroids
        if dict(static)["closed"]:  # top-k maps at t = 1/2: level distances as diffusion_map's group_distances
            M = jnp.tile(jnp.eye(S, dtype=X.dtype), (1, K)) / K  # level s <- points k * S + s
            coords, pi, ok, res, dist = _maps(C.reshape(L, K * S, D), align[:, i].reshape(L, K * S), kb,
                                              eps_value, alpha, t_, energy, static, M,
                                              "symmetric" if symmetric else "markov")
        else:
            coords, pi, ok, res, _ = _maps(C.reshape(L, K * S, D), align[:, i].reshape(L, K * S), kb,
                                           eps_value, alpha, t_, energy, static)
            use = coords * jnp.sqrt(pi)[..., None] if symmetric else coords
            levels = jnp.mean(use.reshape(L, K, S, -1), axis=1)  # (L, S, k): mean over the slots
            dist = jnp.sqrt(jax.vmap(sq_distances)(levels))
        dc1 = coords[..., 0]
        dc1_sym = jnp.sqrt(pi) * dc1
        rho, r2 = _fits(snrs, dc1.reshape(L, K, S))
        rho_s, r2_s = _fits(snrs, dc1_sym.reshape(L, K, S))
        return {"rho": rho, "r2": r2, "rho_symmetric": rho_s, "r2_symmetric": r2_s,
                "level_distances": dist, "ok": jnp.all(ok), "max_residual": res}

    return _over_replicates(one, index, weights, ids, batched)


@partial(jax.jit, static_argnames=("static", "batched"))
def _intra_per_noise_replicates(X, index, weights, ids, align_pn, snrs, eps_value, alpha, t_, energy, key, *,
                                static, batched):
    """Per replicate: one map per (layer, slot) over its S SNR centroids."""
    L, K, S, U, D = X.shape
    snrs = snrs.astype(X.dtype)

    def one(args):
        i, w, b = args
        kb = jax.random.fold_in(key, b)
        C = jnp.einsum("ju,ljsud->ljsd", w.astype(X.dtype), X[:, i])
        pc, _, ok, res, _ = _maps(C.reshape(L * K, S, D), align_pn[:, i].reshape(L * K, S),
                               jax.random.fold_in(kb, 1), eps_value, alpha, t_, energy, static)
        rho_pn, r2_pn = _fits(snrs, pc[..., 0].reshape(L, K, S))
        return {"rho_per_noise_maps": rho_pn, "r2_per_noise_maps": r2_pn, "ok": jnp.all(ok), "max_residual": res}

    return _over_replicates(one, index, weights, ids, batched)


@partial(jax.jit, static_argnames=("static", "symmetric", "batched", "pool"))
def _inter_replicates(X, index, weights, ids, align, membership, eps_value, alpha, t_, energy, key, *,
                      static, symmetric, batched, pool):
    L, K, S, U, D = X.shape

    def one(args):
        i, w, b = args
        C = jnp.einsum("ju,ljsud->sljd", w.astype(X.dtype), X[:, i])  # (S, L, K, D)
        if pool:  # one point per layer: the mean over the (resampled) noise types
            cloud, a = jnp.mean(C, axis=2), align.reshape(S, L)
        else:
            cloud, a = C.reshape(S, L * K, D), align.reshape(S, L, K)[:, :, i].reshape(S, L * K)
        coords, pi, ok, res, _ = _maps(cloud, a, jax.random.fold_in(key, b), eps_value, alpha, t_, energy, static)
        use = coords * jnp.sqrt(pi)[..., None] if symmetric else coords
        groups = jnp.einsum("gn,snk->sgk", membership.astype(use.dtype), use)
        return {"group_distances": jnp.sqrt(jax.vmap(sq_distances)(groups)), "ok": jnp.all(ok),
                "max_residual": res}

    return _over_replicates(one, index, weights, ids, batched)


def _chunk(n_boot, per_replicate_bytes):
    return int(max(1, min(n_boot, CHUNK_BYTES // max(1, per_replicate_bytes))))


def _in_chunks(call, index, weights, chunk):
    """Run ``call(index, weights, ids)`` on consecutive chunks of ``chunk`` replicates, the last
    one padded with copies of replicate 0 (dropped), so one compiled function serves every
    chunk; memory stays bounded by the chunk. Returns the outputs stacked as numpy arrays."""
    index, weights = jnp.asarray(index), jnp.asarray(weights)
    B = int(index.shape[0])
    parts = []
    for start in range(0, B, chunk):
        ids = np.arange(start, start + chunk)
        ids = np.where(ids < B, ids, 0)
        out = jax.block_until_ready(call(index[ids], weights[ids], jnp.asarray(ids)))  # one program in flight
        parts.append(jax.tree_util.tree_map(np.asarray, out))
    return {k: np.concatenate([p[k] for p in parts])[:B] for k in parts[0]}


def _static(maps):
    """The full-data map's settings, as the hashable static argument of the replicate calls."""
    n, k = maps.coords.shape[-2:]
    return (("rule", None if maps.epsilon_rule == "fixed" else maps.epsilon_rule),
            ("k", int(k)), ("solver", maps.solver),
            ("use_energy", maps.energy is not None),
            # a top-k map at t = 1/2: replicates' level distances fall back on the closed form as the full data's do
            ("closed", bool(maps.t == 0.5 and k < n - 1)))


def _scalars(maps, dtype):
    eps = 1.0 if maps.epsilon_rule != "fixed" else float(np.ravel(np.asarray(maps.epsilon))[0])
    energy = 1.0 if maps.energy is None else maps.energy
    return tuple(jnp.asarray(v, dtype) for v in (eps, maps.alpha, maps.t, energy))


class IntraReplicates(NamedTuple):
    """Per replicate (B leading) statistics of the intra-layer maps of L layers and K slots."""

    rho: np.ndarray                 # (B, L, K) Spearman of DC1 vs SNR per slot, Markov coordinates
    r2: np.ndarray                  # (B, L, K)
    rho_symmetric: np.ndarray       # (B, L, K) the same with symmetric coordinates
    r2_symmetric: np.ndarray
    rho_per_noise_maps: np.ndarray  # (B, L, K) from one map per (layer, slot)
    r2_per_noise_maps: np.ndarray
    level_distances: np.ndarray     # (B, L, S, S)
    max_residual: float


def _check_design(X, index, weights, fn):
    """X (L, K, S, U, D) and a replicate design (B, K), (B, K, U); worded errors."""
    if X.ndim != 5:
        raise ValueError(f"The 'X' parameter of {fn} must have shape (L, K, S, U, D) (layers, noise types, SNRs, "
                         f"items, features); got shape {tuple(X.shape)}.")
    _, K, _, U, _ = X.shape
    index, weights = np.shape(index), np.shape(weights)
    if len(index) != 2 or index[1] != K or weights != (index[0], K, U):
        raise ValueError(f"The 'index' and 'weights' parameters of {fn} must have shapes (B, {K}) and (B, {K}, {U}) "
                         f"for X of shape {tuple(X.shape)} (see resample); got {index} and {weights}.")


def _finish(out, what):
    ok = np.asarray(out.pop("ok"))
    if not ok.all():
        raise FloatingPointError(
            f"{what}: {int((~ok).sum())} of {ok.size} bootstrap replicates gave a degenerate map (non-finite "
            "coordinates, a cloud of identical points or a zero bandwidth). Use more items or noise types, or "
            "design='noise'."
        )
    res = float(np.max(np.asarray(out.pop("max_residual"))))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}, res


def intra_replicates(X, index, weights, snrs, maps, maps_per_noise, *, key, symmetric=False) -> IntraReplicates:
    """Recompute the intra-layer maps (pooled and per noise type) in every replicate.

    Parameters
    ----------
    X : array of shape (L, K, S, U, D), items of L layers (pad narrower layers' features with
        zeros: distances, hence maps, are unchanged, and one compiled call serves all layers).
    index, weights : the replicate design of :func:`resample`, (B, K) and (B, K, U).
    snrs : array of shape (S,).
    maps : DiffusionMap of the full-data pooled clouds, batch (L,), n = K * S points
        (noise-major), signed with ``align_to`` = SNR; its settings are reused.
    maps_per_noise : DiffusionMap of the full-data per-noise clouds, batch (L, K), n = S.
    key : PRNG key (start blocks of the top-k solvers).
    symmetric : distances between levels in symmetric coordinates instead of Markov.
    """
    X = jnp.asarray(X)
    _check_design(X, index, weights, "intra_replicates")
    L, K, S, U, D = X.shape
    if np.shape(snrs) != (S,) or maps.coords.shape[:-1] != (L, K * S) or maps_per_noise.coords.shape[:-1] != (L, K, S):
        raise ValueError(
            f"The 'snrs', 'maps' and 'maps_per_noise' parameters of intra_replicates must match X of shape "
            f"{tuple(X.shape)}: snrs ({S},), maps of {L} clouds of {K * S} points, maps_per_noise of ({L}, {K}) clouds "
            f"of {S} points; got snrs {np.shape(snrs)}, maps coords {tuple(maps.coords.shape)}, maps_per_noise coords "
            f"{tuple(maps_per_noise.coords.shape)}.")
    B = int(index.shape[0])
    align = jnp.asarray(maps.coords[..., 0], X.dtype).reshape(L, K, S)
    align_pn = jnp.asarray(maps_per_noise.coords[..., 0], X.dtype).reshape(L, K, S)
    chunk = _chunk(B, L * K * S * (U + 1) * D * X.dtype.itemsize)
    scal, snrs = _scalars(maps, X.dtype), jnp.asarray(snrs)
    out = _in_chunks(lambda i, w, b: _intra_pooled_replicates(
        X, i, w, b, align, snrs, *scal, key, static=_static(maps), symmetric=bool(symmetric),
        batched=maps.solver == "eigh"), index, weights, chunk)
    out_pn = _in_chunks(lambda i, w, b: _intra_per_noise_replicates(
        X, i, w, b, align_pn, snrs, *_scalars(maps_per_noise, X.dtype), key, static=_static(maps_per_noise),
        batched=maps_per_noise.solver == "eigh"), index, weights, chunk)
    out["ok"] = out["ok"] & out_pn.pop("ok")
    out["max_residual"] = np.maximum(out["max_residual"], out_pn.pop("max_residual"))
    out.update(out_pn)
    arrays, res = _finish(out, "intra_replicates")
    return IntraReplicates(**arrays, max_residual=res)


def inter_replicates(X, index, weights, maps, membership, *, key, symmetric=False, pool_noises=False):
    """Recompute the inter-layer maps (one per SNR) in every replicate.

    Parameters
    ----------
    X : array of shape (L, K, S, U, D), items of the L layers of the inter-layer cloud.
    maps : DiffusionMap of the full-data clouds, batch (S,), n = L * K points (layer-major),
        or n = L with ``pool_noises`` (one point per layer: its centroid over noise types).
    membership : array of shape (G, n), rows summing to 1 (group averaging).

    Returns
    -------
    (group distances of shape (B, S, G, G), largest solver residual).
    """
    X = jnp.asarray(X)
    _check_design(X, index, weights, "inter_replicates")
    L, K, S, U, D = X.shape
    n = L if pool_noises else L * K
    if maps.coords.shape[:-1] != (S, n) or np.shape(membership)[-1:] != (n,):
        raise ValueError(
            f"The 'maps' and 'membership' parameters of inter_replicates must match X of shape {tuple(X.shape)}: "
            f"maps of {S} clouds of {n} points and membership (G, {n}); got maps coords {tuple(maps.coords.shape)} "
            f"and membership {np.shape(membership)}.")
    B = int(index.shape[0])
    chunk = _chunk(B, L * K * S * (U + 1) * D * X.dtype.itemsize)
    align, member, scal = jnp.asarray(maps.coords[..., 0], X.dtype), jnp.asarray(membership), _scalars(maps, X.dtype)
    out = _in_chunks(lambda i, w, b: _inter_replicates(
        X, i, w, b, align, member, *scal, key, static=_static(maps), symmetric=bool(symmetric),
        batched=maps.solver == "eigh", pool=bool(pool_noises)), index, weights, chunk)
    arrays, res = _finish(out, "inter_replicates")
    return arrays["group_distances"], res


def percentile(reps, level: float):
    """(B, ...) -> (low, high) percentile bounds over the replicate axis."""
    return percentile_interval(reps, level)
