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

Replicates run one after another, each in three jitted calls (see "the programs of a replicate"
below): its centroids as one GEMM, its maps through the very program that computed the full-data
maps (same static settings, same shapes: the bootstrap compiles no solver program of its own),
its statistics. Random keys: replicate b uses ``fold_in(key, b)``.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import native
from jaxprobe.diffusion._checks import BLOCK_SIZE, DENSE_MAX_N
from jaxprobe.diffusion.map import diffusion_map_batched
from jaxprobe.stats import linregress_fields, percentile_interval, rankdata
from jaxprobe_kernels.gram import sq_distances
from jaxprobe_kernels.resample import INTEGER_PROGRAM

DESIGNS = ("hierarchical", "noise")


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
    idx, counts = _resample(key, n_boot=int(n_boot), n_noises=int(n_noises), n_items=int(n_items),
                            design=design)
    if design == "noise":
        return idx, jnp.asarray(np.full(counts.shape, 1.0 / n_items, np.float32))
    return idx, _weights(counts, n_items=int(n_items))


@partial(jax.jit, static_argnames=("n_items",))
def _weights(counts, *, n_items):
    """Item weights counts / U, in a default-level program: XLA divides by a constant divisor as the
    eager program of the same expression did (bit for bit; IEEE division on the host differs by an ulp)."""
    return counts.astype(jnp.float32) / n_items


@partial(jax.jit, static_argnames=("n_boot", "n_noises", "n_items", "design"), compiler_options=INTEGER_PROGRAM)
def _resample(key, *, n_boot, n_noises, n_items, design):
    """The design's draws as one integer-only program (noise type per slot, item counts per slot),
    compiled at LLVM level 1 like the CKA bootstrap's count programs (``kernels.resample``: the same
    bits, the unrolled hash rounds 2-3x cheaper to compile)."""

    def one(b):
        kn, ku = jax.random.split(jax.random.fold_in(key, b))
        idx = jax.random.randint(kn, (n_noises,), 0, n_noises)
        if design == "noise":
            return idx, jnp.zeros((n_noises, n_items), jnp.int32)
        draws = jax.random.randint(ku, (n_noises, n_items), 0, n_items)
        return idx, jnp.sum(jax.nn.one_hot(draws, n_items, dtype=jnp.int32), axis=1)

    return jax.vmap(one)(jnp.arange(n_boot))


def _spearman(x, y):
    """Spearman rho along the last axis, no host checks (NaN for a constant input)."""
    rx, ry = rankdata(jnp.broadcast_to(x, y.shape)), rankdata(y)
    dx = rx - jnp.mean(rx, axis=-1, keepdims=True)
    dy = ry - jnp.mean(ry, axis=-1, keepdims=True)
    return jnp.sum(dx * dy, axis=-1) / jnp.sqrt(jnp.sum(dx * dx, axis=-1) * jnp.sum(dy * dy, axis=-1))


def _fits(snrs, dc1):
    return _spearman(snrs, dc1), linregress_fields(jnp.broadcast_to(snrs, dc1.shape), dc1).r2


# ----------------------------------------------------------------------------- the programs of a replicate
# A replicate is three dispatches, none of them compiled for the bootstrap alone where it can be helped:
#
# 1. the centroids, computed for a chunk of up to R replicates at once (``_chunk_groups``, then ``_pick``
#    per replicate, in the layouts its map calls take, into reused buffers): the items
#    are laid out once as (K, U, L*S*D) (noise type, item, features), the chunk's slots are grouped by the
#    noise type they drew, and one batched GEMM over the noise types contracts each group's weights
#    (K, M, U) with its noise type's items. Each replicate reads the items once per chunk instead of once
#    per replicate, and does U multiply-adds per centroid value instead of the K * U of a one-hot
#    (K, K*U) GEMM (``_slot_centroids``, kept for the rare replicate that alone fills more than M slots
#    with one noise type). At the paper's shape (24 layers x 18 x 41 x 50 items of up to 2,048 features)
#    the one-hot GEMM took ~0.8 s a replicate, for the intra- and again for the inter-layer maps. The
#    chunk's shapes depend on the data only (R from CHUNK_BYTES, M = max(2R, 8)), so every chunk runs
#    one compiled program; every slot's centroid is its own GEMM row, the same whatever else the chunk
#    holds. The groups and each replicate's clouds are written into the previous ones' buffers (see
#    ``_chunk_groups``).
# 2. ``diffusion_map_batched`` with exactly the static settings and shapes of the full-data call that
#    made ``maps`` (``_map_call``): the replicate's maps reuse the full-data map's compiled program
#    instead of compiling their own.
# 3. a small jitted statistics step (fits of DC1 against SNR, distances between levels or groups).
#
# One LAPACK solver per compiled program, programs run one after another: jaxlib 0.10's CPU LAPACK
# kernels (eigh, qr, cholesky) split a batch over XLA's intra-op thread pool and block the calling pool
# thread until the pieces finish; two such calls in flight at once can occupy every pool thread on a
# small machine (2 here) while their pieces wait in the queue: a deadlock, seen as every thread asleep
# in ``BlockingCounter::Wait`` under ``lapack_ssyevd_ffi``. So every map call is waited for before the
# next is dispatched (the pooled maps before the per-noise maps; a replicate's statistics, fetched, before
# the next replicate), and the map program holds the only solver call (tests/jaxprobe/test_diffusion_bootstrap.py checks both programs' solver calls).


class SlotItems:
    """Items of L layers laid out for the replicates' centroid GEMMs: ``XT`` (K * U, L * S * D), rows
    (noise type, item), columns (layer, SNR, feature), for ``shape`` (L, K, S, U, D). Pass it where
    the replicate functions take X to skip their own layout copy (see :func:`slot_items`)."""

    ndim = 5

    def __init__(self, XT, shape):
        self.XT, self.shape = XT, tuple(int(v) for v in shape)

    @property
    def dtype(self):
        return self.XT.dtype


def slot_items(arrays) -> SlotItems:
    """L item arrays of shape (K, S, U, D_l) (numpy or JAX; narrower layers zero-padded to the widest)
    -> :class:`SlotItems`, written layer by layer into one 64-byte-aligned host buffer that the CPU
    backend then uses without a copy: one copy of the items in the replicate layout, where stacking
    them as (L, K, S, U, D) first holds two (7 GiB each at the SE paper's shape)."""
    arrays = list(arrays)
    if not arrays or any(np.ndim(a) != 4 or np.shape(a)[:3] != np.shape(arrays[0])[:3] for a in arrays):
        raise ValueError("The 'arrays' parameter of slot_items must be a non-empty list of (K, S, U, D) item arrays "
                         f"sharing K, S and U; got shapes {[np.shape(a) for a in arrays]}.")
    K, S, U = np.shape(arrays[0])[:3]
    L, D = len(arrays), max(np.shape(a)[3] for a in arrays)
    dtype = np.result_type(*[a.dtype for a in arrays])
    n = K * U * L * S * D * dtype.itemsize
    raw = np.empty(n + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    buf = raw[off:off + n].view(dtype).reshape(K, U, L, S, D)
    for l, a in enumerate(arrays):
        d = np.shape(a)[3]
        buf[:, :, l, :, :d] = np.swapaxes(np.asarray(a), 1, 2)
        buf[:, :, l, :, d:] = 0
    return SlotItems(jax.device_put(buf.reshape(K * U, L * S * D)), (L, K, S, U, D))


@jax.jit
def _items_by_slot(X):
    """(L, K, S, U, D) -> (K * U, L * S * D): the items of each noise type as the rows of one GEMM."""
    L, K, S, U, D = X.shape
    return jnp.transpose(X, (1, 3, 0, 2, 4)).reshape(K * U, L * S * D)


@partial(jax.jit, static_argnames=("L", "S", "D"))
def _slot_centroids(XT, index, weights, *, L, S, D):
    """Centroids (L, K, S, D) of one replicate: slot j holds noise type index[j], its items weighted by
    weights[j] (K, U) (``c[j, s] = sum_u w[j, u] x[index[j], s, u]``)."""
    K, U = weights.shape
    W = jax.nn.one_hot(index, K, dtype=XT.dtype)[:, :, None] * weights.astype(XT.dtype)[:, None, :]
    C = (W.reshape(K, K * U) @ XT).reshape(K, L, S, D)
    return jnp.transpose(C, (1, 0, 2, 3))


CHUNK_BYTES = 3 << 29  # sizes R: a chunk's (K, M, L*S*D) groups, M ~ 2R, plus slack, held at once
CHUNK_MAX = 16


def _chunk_shape(shape, dtype):
    """(R, M): replicates per chunk and slots per noise type of the chunk's GEMM, from the data's shape."""
    L, K, S, _, D = shape
    per = 3 * K * L * S * D * np.dtype(dtype).itemsize  # ~2 group rows per slot, and slack
    R = int(max(1, min(CHUNK_MAX, CHUNK_BYTES // per)))
    return R, max(2 * R, 8)


def _chunks(index, R: int, M: int):
    """Greedy runs [start, end) of at most R replicates in which no noise type fills more than M slots;
    a replicate that alone overfills one is a run of its own with ``fits`` False."""
    B, K = index.shape
    start = 0
    while start < B:
        counts, end = np.zeros(K, np.int64), start
        while end < B and end - start < R:
            c = counts + np.bincount(index[end], minlength=K)
            if c.max() > M:
                break
            counts, end = c, end + 1
        if end == start:
            yield start, start + 1, False
            start += 1
        else:
            yield start, end, True
            start = end


def _chunk_design(index, weights, R: int, M: int):
    """Host layout of one chunk (r < R replicates): group weights (K, M, U) and, for each of the R * K
    (replicate, slot) rows, its row in the flattened (K * M) groups."""
    r, K = index.shape
    U = weights.shape[-1]
    W = np.zeros((K, M, U), weights.dtype)
    fill = np.zeros(K, np.int64)
    pos = np.zeros(R * K, np.int32)  # rows of replicates r.. R-1 (a short last chunk): any row, discarded
    for b in range(r):
        for j in range(K):
            k = int(index[b, j])
            W[k, fill[k]] = weights[b, j]
            pos[b * K + j] = k * M + fill[k]
            fill[k] += 1
    return W, pos


# A chunk's groups and each replicate's centroids go into buffers that the next chunk and replicate
# reuse (donated): fresh multi-hundred-MB XLA buffers per call cost more in page faults than their
# arithmetic (at the paper's shape, 212 s of kernel time in a 306 s 200-replicate bootstrap).
@partial(jax.jit, donate_argnums=(2,), keep_unused=True)
def _chunk_groups(XT, W, into):
    """(K, M, L*S*D) group centroids of a chunk (see ``_chunk_design``), written into ``into``."""
    K, M, U = W.shape
    return jnp.einsum("kmu,kux->kmx", W.astype(XT.dtype), XT.reshape(K, U, -1))


def _layouts(C, layouts):
    """Centroids C (L, K, S, D) as the clouds of the replicate's map calls."""
    L, K, S, D = C.shape
    views = {"pooled": lambda: C.reshape(L, K * S, D),  # one cloud per layer, noise-major points
             "per_noise": lambda: C.reshape(L * K, S, D),  # one cloud per (layer, slot)
             "by_snr": lambda: jnp.transpose(C, (2, 0, 1, 3)).reshape(S, L * K, D),  # layer-major, per SNR
             "noise_mean": lambda: jnp.transpose(jnp.mean(C, axis=1), (1, 0, 2))}  # one point per layer, per SNR
    return tuple(views[name]() for name in layouts)


@partial(jax.jit, static_argnames=("L", "S", "D", "layout"), donate_argnums=(2,), keep_unused=True)
def _pick(G, rows, into, *, L, S, D, layout):
    """One replicate's centroids in one layout: its K slots' rows of the chunk's groups, written into
    ``into``. One layout per call: two outputs of one gather would hold the gather as a fresh temporary."""
    if layout == "noise_mean":  # summed row by row: a gather feeding the mean would be a fresh temporary
        flat = G.reshape(-1, L * S * D)
        total = jax.lax.fori_loop(0, rows.shape[0], lambda j, acc: acc + flat[rows[j]], jnp.zeros_like(flat[0]))
        return jnp.transpose((total / rows.shape[0]).reshape(L, S, D), (1, 0, 2))
    C = jnp.transpose(G.reshape(-1, L, S, D)[rows], (1, 0, 2, 3))
    return _layouts(C, (layout,))[0]


@partial(jax.jit, static_argnames=("layouts",))
def _layouts_of(C, *, layouts):
    return _layouts(C, layouts)


def _replicate_centroids(XT, index, weights, shape, layouts):
    """Yield (b, clouds) for every replicate b of the design, chunk by chunk: its centroids
    (L, K, S, D) in each of ``layouts`` (see ``_layouts``). A yielded replicate's arrays are reused
    for the next one: finish with them first."""
    L, K, S, U, D = shape
    R, M = _chunk_shape(shape, XT.dtype)
    G = out = None
    for start, end, fits in _chunks(index, R, M):
        if not fits:
            C = _slot_centroids(XT, index[start], weights[start], L=L, S=S, D=D)
            yield start, _layouts_of(C, layouts=layouts)
            continue
        W, pos = _chunk_design(index[start:end], weights[start:end], R, M)
        G = _chunk_groups(XT, W, jnp.zeros((K, M, L * S * D), XT.dtype) if G is None else G)
        for b in range(start, end):
            if out is None:
                out = tuple(jnp.zeros(v.shape, v.dtype) for v in
                            jax.eval_shape(lambda c: _layouts(c, layouts), jax.ShapeDtypeStruct((L, K, S, D), XT.dtype)))
            rows = pos[(b - start) * K:(b - start + 1) * K]
            out = tuple(_pick(G, rows, o, L=L, S=S, D=D, layout=name) for o, name in zip(out, layouts))
            yield b, out


def _map_call(maps, group_means: bool, closed=None):
    """The static settings of the ``diffusion_map_batched`` call that made ``maps`` (see
    ``diffusion_map``), so a replicate's call with the same shapes reuses its compiled program.
    ``closed`` overrides the closed-form convention (a replicate that needs the other convention)."""
    n, k = maps.coords.shape[-2:]
    block_size = BLOCK_SIZE if n > DENSE_MAX_N else None
    if closed is None and group_means and maps.t == 0.5:
        closed = maps.coordinates
    return dict(rule=None if maps.epsilon_rule == "fixed" else maps.epsilon_rule, k=int(k), solver=maps.solver,
                block_size=block_size, maxiter=0 if maps.solver == "eigh" else 100, tol=None,
                use_energy=maps.energy is not None, use_align=True, symmetric=maps.coordinates == "symmetric",
                closed=closed if group_means else None,
                sequential=maps.solver in ("lobpcg", "krylov") and (block_size is None or maps.solver == "krylov"),
                native_median=maps.epsilon_rule == "median" and native.median_usable(maps.coords))


def _scalars(maps, dtype):
    eps = 1.0 if maps.epsilon_rule != "fixed" else float(np.ravel(np.asarray(maps.epsilon))[0])
    energy = 1.0 if maps.energy is None else maps.energy
    return tuple(jnp.asarray(v, dtype) for v in (eps, maps.alpha, maps.t, energy))


def _health(out):
    """(ok, largest residual) of one ``diffusion_map_batched`` output: finite input, points not all
    identical, epsilon > 0 and finite coordinates in every cloud."""
    coords, _, _, eps, _, _, _, _, _, _, resid, finite, spread, _, _, _ = out
    ok = jnp.all(finite & spread & (eps > 0) & jnp.all(jnp.isfinite(coords), axis=(-2, -1)))
    return ok, jnp.max(resid)


@partial(jax.jit, static_argnames=("K", "S", "markov_in", "markov_pn", "need", "closed"))
def _intra_statistics(out, out_pn, snrs, *, K, S, markov_in, markov_pn, need, closed):
    """One replicate's intra-layer statistics from its pooled maps ``out`` (L clouds of K * S points,
    noise-major) and per-noise maps ``out_pn`` (L * K clouds of S points). ``markov_in``: the pooled
    coordinates are Markov (else symmetric); ``need``: the convention of the level distances;
    ``closed``: the map's group distances are in that convention (else they come from the coordinates);
    ``markov_pn``: the per-noise coordinates are Markov."""
    coords, pi, gd = out[0], out[4], out[14]
    L = coords.shape[0]
    snrs = snrs.astype(coords.dtype)
    root_pi = jnp.sqrt(pi)
    dc1 = coords[..., 0] if markov_in else coords[..., 0] / root_pi
    if closed:
        dist = gd
    else:
        if need == "symmetric":
            use = coords * root_pi[..., None] if markov_in else coords
        else:
            use = coords if markov_in else coords / root_pi[..., None]
        levels = jnp.mean(use.reshape(L, K, S, -1), axis=1)  # (L, S, k): mean over the slots
        dist = jnp.sqrt(jax.vmap(sq_distances)(levels))
    dc1_pn = out_pn[0][..., 0] if markov_pn else out_pn[0][..., 0] / jnp.sqrt(out_pn[4])
    # the three fits as one batched call: one ranking and one regression in the program, not three
    rho, r2 = _fits(snrs, jnp.stack([dc1.reshape(L, K, S), (root_pi * dc1).reshape(L, K, S),
                                     dc1_pn.reshape(L, K, S)]))
    ok, res = _health(out)
    ok_pn, res_pn = _health(out_pn)
    return {"rho": rho[0], "r2": r2[0], "rho_symmetric": rho[1], "r2_symmetric": r2[1], "level_distances": dist,
            "rho_per_noise_maps": rho[2], "r2_per_noise_maps": r2[2], "ok": ok & ok_pn,
            "max_residual": jnp.maximum(res, res_pn)}


@partial(jax.jit, static_argnames=("convert",))
def _inter_statistics(out, membership, *, convert):
    """Group distances (S, G, G) of one replicate's inter-layer maps; ``convert``: None, or "to_symmetric" /
    "to_markov" when the maps' coordinates are not those the distances need."""
    coords, pi = out[0], out[4]
    if convert == "to_symmetric":
        coords = coords * jnp.sqrt(pi)[..., None]
    elif convert == "to_markov":
        coords = coords / jnp.sqrt(pi)[..., None]
    groups = jnp.einsum("gn,snk->sgk", membership.astype(coords.dtype), coords)
    ok, res = _health(out)
    return {"group_distances": jnp.sqrt(jax.vmap(sq_distances)(groups)), "ok": ok, "max_residual": res}


def _stack(parts):
    return {k: np.stack([p[k] for p in parts]) for k in parts[0]}


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
        zeros: distances, hence maps, are unchanged, and one compiled call serves all layers), or
        the same as :class:`SlotItems` (:func:`slot_items`).
    index, weights : the replicate design of :func:`resample`, (B, K) and (B, K, U).
    snrs : array of shape (S,).
    maps : DiffusionMap of the full-data pooled clouds, batch (L,), n = K * S points
        (noise-major), signed with ``align_to`` = SNR; its settings are reused.
    maps_per_noise : DiffusionMap of the full-data per-noise clouds, batch (L, K), n = S.
    key : PRNG key (start blocks of the top-k solvers).
    symmetric : distances between levels in symmetric coordinates instead of Markov.
    """
    X = X if isinstance(X, SlotItems) else jnp.asarray(X)
    _check_design(X, index, weights, "intra_replicates")
    L, K, S, U, D = X.shape
    if np.shape(snrs) != (S,) or maps.coords.shape[:-1] != (L, K * S) or maps_per_noise.coords.shape[:-1] != (L, K, S):
        raise ValueError(
            f"The 'snrs', 'maps' and 'maps_per_noise' parameters of intra_replicates must match X of shape "
            f"{tuple(X.shape)}: snrs ({S},), maps of {L} clouds of {K * S} points, maps_per_noise of ({L}, {K}) clouds "
            f"of {S} points; got snrs {np.shape(snrs)}, maps coords {tuple(maps.coords.shape)}, maps_per_noise coords "
            f"{tuple(maps_per_noise.coords.shape)}.")
    index, weights = np.asarray(index), np.asarray(weights)
    need = "symmetric" if symmetric else "markov"
    n, k = maps.coords.shape[-2:]
    st, st_pn = _map_call(maps, True), _map_call(maps_per_noise, True)
    if maps.t == 0.5 and k < n - 1 and st["closed"] != need:
        # top-k maps: level distances from the closed form in the needed convention (a program of its own)
        st.update(closed=need, symmetric=False)
    stats = dict(K=K, S=S, markov_in=not st["symmetric"], need=need,
                 closed=st["closed"] == need and (need == "symmetric" or not st["symmetric"]))
    align = np.asarray(maps.coords, X.dtype)[..., 0].reshape(L, K, S)
    align_pn = np.asarray(maps_per_noise.coords, X.dtype)[..., 0].reshape(L, K, S)
    scal, scal_pn, snrs = _scalars(maps, X.dtype), _scalars(maps_per_noise, X.dtype), jnp.asarray(snrs)
    M = jnp.asarray(np.tile(np.eye(S), (1, K)) / K, X.dtype)  # level s <- points k * S + s (noise-major)
    M_pn = jnp.asarray(np.eye(S), X.dtype)
    XT = X.XT if isinstance(X, SlotItems) else _items_by_slot(X)
    parts = []
    for b, (pooled, per_noise) in _replicate_centroids(XT, index, weights, X.shape, ("pooled", "per_noise")):
        kb = jax.random.fold_in(key, b)
        out = jax.block_until_ready(diffusion_map_batched(  # waits: one solver program in flight
            pooled, *scal, align[:, index[b]].reshape(L, K * S), kb, M, **st))
        out_pn = diffusion_map_batched(per_noise, *scal_pn, align_pn[:, index[b]].reshape(L * K, S),
                                       jax.random.fold_in(kb, 1), M_pn, **st_pn)
        one = _intra_statistics(out, out_pn, snrs, markov_pn=not st_pn["symmetric"], **stats)
        parts.append(jax.tree_util.tree_map(np.asarray, one))  # waits: one solver program in flight
    arrays, res = _finish(_stack(parts), "intra_replicates")
    return IntraReplicates(**arrays, max_residual=res)


def inter_replicates(X, index, weights, maps, membership, *, key, symmetric=False, pool_noises=False):
    """Recompute the inter-layer maps (one per SNR) in every replicate.

    Parameters
    ----------
    X : array of shape (L, K, S, U, D), items of the L layers of the inter-layer cloud, or the same as
        :class:`SlotItems` (:func:`slot_items`).
    maps : DiffusionMap of the full-data clouds, batch (S,), n = L * K points (layer-major),
        or n = L with ``pool_noises`` (one point per layer: its centroid over noise types).
    membership : array of shape (G, n), rows summing to 1 (group averaging).

    Returns
    -------
    (group distances of shape (B, S, G, G), largest solver residual).
    """
    X = X if isinstance(X, SlotItems) else jnp.asarray(X)
    _check_design(X, index, weights, "inter_replicates")
    L, K, S, U, D = X.shape
    n = L if pool_noises else L * K
    if maps.coords.shape[:-1] != (S, n) or np.shape(membership)[-1:] != (n,):
        raise ValueError(
            f"The 'maps' and 'membership' parameters of inter_replicates must match X of shape {tuple(X.shape)}: "
            f"maps of {S} clouds of {n} points and membership (G, {n}); got maps coords {tuple(maps.coords.shape)} "
            f"and membership {np.shape(membership)}.")
    index, weights = np.asarray(index), np.asarray(weights)
    st = _map_call(maps, False)
    convert = None if st["symmetric"] == bool(symmetric) else "to_symmetric" if symmetric else "to_markov"
    align, member, scal = np.asarray(maps.coords, X.dtype)[..., 0], jnp.asarray(membership), _scalars(maps, X.dtype)
    XT = X.XT if isinstance(X, SlotItems) else _items_by_slot(X)
    parts = []
    layout = "noise_mean" if pool_noises else "by_snr"  # one point per layer (mean over the slots), or per (layer, slot)
    for b, (cloud,) in _replicate_centroids(XT, index, weights, X.shape, (layout,)):
        a = align.reshape(S, L) if pool_noises else align.reshape(S, L, K)[:, :, index[b]].reshape(S, L * K)
        out = diffusion_map_batched(cloud, *scal, a, jax.random.fold_in(key, b), None, **st)
        parts.append(jax.tree_util.tree_map(np.asarray, _inter_statistics(out, member, convert=convert)))
    arrays, res = _finish(_stack(parts), "inter_replicates")
    return arrays["group_distances"], res


def percentile(reps, level: float):
    """(B, ...) -> (low, high) percentile bounds over the replicate axis."""
    return percentile_interval(reps, level)
