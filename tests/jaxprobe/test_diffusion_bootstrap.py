"""The geometry bootstrap: every replicate recomputes the centroids and the maps."""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.diffusion import bootstrap as DB
from jaxprobe.diffusion import diffusion_map, intra_layer
from jaxprobe.studies.sweep.config import ConfigError, load_sweep_config
from jaxprobe.studies.sweep.diffusion import analyze_diffusion, inter_layer_set
from tests.reference import diffusion_ref as ref

SNRS = np.array([-10.0, -5.0, 0.0, 10.0, 20.0, 30.0])


def _items(rng, L=2, K=3, U=4, D=12, dtype=np.float32):
    """(L, K, S, U, D): SNR moves every item along a layer-specific direction, noise types
    and items add scatter."""
    S = len(SNRS)
    drift = (1.0 / (1.0 + np.exp(SNRS / 8.0)))[None, None, :, None, None]
    d = rng.normal(size=(L, 1, 1, 1, D))
    X = drift * (d + 0.3 * rng.normal(size=(L, K, 1, 1, D))) + 0.05 * rng.normal(size=(L, K, S, U, D))
    return X.astype(dtype)


def _full_maps(X, energy):
    L, K, S, U, D = X.shape
    C = X.mean(axis=3)
    res = intra_layer(C.reshape(L, K * S, D), np.tile(SNRS, K), t=0.5, energy=energy)
    pn = intra_layer(C, SNRS, t=0.5, energy=energy)
    return res, pn


def test_resample_designs(rng):
    idx, w = DB.resample(jax.random.key(0), 50, 4, 5, "hierarchical")
    assert idx.shape == (50, 4) and w.shape == (50, 4, 5)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-6)
    assert np.all((np.asarray(w) * 5) == np.round(np.asarray(w) * 5))  # counts / U
    assert len(np.unique(np.asarray(idx))) == 4 and np.asarray(w).std() > 0
    _, wn = DB.resample(jax.random.key(0), 3, 4, 5, "noise")
    np.testing.assert_allclose(np.asarray(wn), 0.2)
    a, _ = DB.resample(jax.random.key(1), 7, 4, 5)
    b, _ = DB.resample(jax.random.key(1), 7, 4, 5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="'design'.*hierarchical"):
        DB.resample(jax.random.key(0), 2, 2, 2, "items")


@pytest.mark.parametrize("design", ["hierarchical", "noise"])
@pytest.mark.parametrize("U", [4, 7])
def test_resample_gives_the_bits_of_the_plain_formulation(design, U):
    """The design from its integer-only level-1 program equals, bit for bit, the same draws written
    as plain (eagerly run) JAX: the noise types, and the weights counts / U (U = 7: not a power of 2)."""
    key, K = jax.random.key(11), 5

    def one(b):
        kn, ku = jax.random.split(jax.random.fold_in(key, b))
        idx = jax.random.randint(kn, (K,), 0, K)
        if design == "noise":
            return idx, jnp.full((K, U), 1.0 / U, jnp.float32)
        draws = jax.random.randint(ku, (K, U), 0, U)
        return idx, jnp.sum(jax.nn.one_hot(draws, U, dtype=jnp.float32), axis=1) / U

    with jax.disable_jit():
        want = jax.vmap(one)(jnp.arange(30))
    got = DB.resample(key, 30, K, U, design)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_identity_replicate_reproduces_the_full_data_maps(rng):
    X = _items(rng)
    res, pn = _full_maps(X, 0.99)
    idx = jnp.tile(jnp.arange(3), (2, 1))
    w = jnp.full((2, 3, 4), 0.25)
    rep = DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    np.testing.assert_allclose(rep.level_distances[0], np.asarray(res.level_distances), atol=1e-5)
    dc1 = np.asarray(res.dc1).reshape(2, 3, -1)
    want = np.array([[np.corrcoef(np.argsort(np.argsort(v)), np.argsort(np.argsort(SNRS)))[0, 1] for v in lay]
                     for lay in dc1])
    np.testing.assert_allclose(rep.rho[0], want, atol=1e-6)


def test_replicate_equals_reference_on_its_own_centroids(x64, rng):
    """Replicate b against the float64 reference (tests/reference/diffusion_ref) run on centroids
    recomputed in numpy from b's design: level distances with all components (energy None), and
    DC1's |Spearman| per slot. Tolerance 1e-8 (float64)."""
    X = _items(rng, dtype=np.float64)
    L, K, S, U, D = X.shape
    res, pn = _full_maps(X, None)
    idx, w = DB.resample(jax.random.key(3), 4, K, U)
    rep = DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    idx, w = np.asarray(idx), np.asarray(w)
    for b in range(4):
        for layer in range(L):
            C = np.einsum("ju,jsud->jsd", w[b], X[layer][idx[b]]).reshape(K * S, D)
            eps = ref.median_epsilon(ref.sq_distance_matrix(C))
            _, _, coords, _, _ = ref.diffusion_map(C, eps, 0.0, 0.5)
            levels = coords.reshape(K, S, -1).mean(0)
            dist = np.sqrt(((levels[:, None] - levels[None]) ** 2).sum(-1))
            np.testing.assert_allclose(rep.level_distances[b, layer], dist, atol=1e-8)
            dc1 = coords[:, 0].reshape(K, S)
            rho = [np.corrcoef(np.argsort(np.argsort(v)), np.arange(S))[0, 1] for v in dc1]
            np.testing.assert_allclose(np.abs(rep.rho[b, layer]), np.abs(rho), atol=1e-8)


def test_bad_designs_are_named(rng):
    X = _items(rng)
    res, pn = _full_maps(X, 0.99)
    idx, w = DB.resample(jax.random.key(0), 2, 3, 4)
    with pytest.raises(ValueError, match="'X' parameter of intra_replicates must have shape"):
        DB.intra_replicates(X[0], idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"'index' and 'weights'.*\(B, 3\) and \(B, 3, 4\)"):
        DB.intra_replicates(X, idx, w[:, :, :2], SNRS, res.maps, pn.maps, key=jax.random.key(0))
    with pytest.raises(ValueError, match="'snrs', 'maps' and 'maps_per_noise'"):
        DB.intra_replicates(X, idx, w, SNRS[:4], res.maps, pn.maps, key=jax.random.key(0))


def test_a_degenerate_replicate_is_an_error(rng):
    """A replicate whose resampled centroids are all identical (every slot the same noise type, all
    weight on items that do not move with SNR) raises, naming the bootstrap, instead of giving NaN."""
    X = _items(rng)
    X[:, 0, :, 1:, :] = 0.5  # noise type 0: only item 0 moves with SNR
    res, pn = _full_maps(X, 0.99)
    idx = np.zeros((2, 3), np.int32)
    w = np.tile(np.array([0.0, 1 / 3, 1 / 3, 1 / 3], np.float32), (2, 3, 1))
    w[0] = 0.25  # replicate 0 is fine, replicate 1 degenerate
    with pytest.raises(FloatingPointError, match="intra_replicates: 1 of 2 bootstrap replicates gave a degenerate"):
        DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))


def test_signs_follow_the_full_data_map(rng):
    """DC1 of every replicate points the way of the full-data DC1: SNR-increasing data keep rho > 0."""
    X = _items(rng)
    res, pn = _full_maps(X, 0.99)
    assert np.all(np.asarray(res.spearman) > 0.5)
    idx, w = DB.resample(jax.random.key(5), 20, 3, 4)
    rep = DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    assert np.mean(rep.rho > 0) > 0.95


def test_replicate_does_not_depend_on_the_others(rng):
    """Replicates run one after another: a replicate's numbers are the same whatever other
    replicates run in the same call (eigh maps use no random start)."""
    X = _items(rng)
    res, pn = _full_maps(X, 0.99)
    idx, w = DB.resample(jax.random.key(2), 5, 3, 4)
    a = DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    b = DB.intra_replicates(X, idx[2:4], w[2:4], SNRS, res.maps, pn.maps, key=jax.random.key(0))
    np.testing.assert_array_equal(a.level_distances[2:4], b.level_distances)
    np.testing.assert_array_equal(a.r2_symmetric[2:4], b.r2_symmetric)
    np.testing.assert_array_equal(a.rho_per_noise_maps[2:4], b.rho_per_noise_maps)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_slot_centroids_are_the_resampled_means(rng, dtype, tol, request):
    """The one-GEMM centroids of a replicate against their definition c[j, s] = sum_u w[j, u] x[k_j, s, u]
    (numpy, float64), for odd shapes."""
    if dtype == np.float64:
        request.getfixturevalue("x64")
    L, K, S, U, D = 3, 5, 4, 3, 7
    X = rng.normal(size=(L, K, S, U, D)).astype(dtype)
    idx, w = DB.resample(jax.random.key(4), 2, K, U)
    XT = DB._items_by_slot(jnp.asarray(X))
    for b in range(2):
        got = np.asarray(DB._slot_centroids(XT, np.asarray(idx[b]), np.asarray(w[b]), L=L, S=S, D=D))
        want = np.einsum("ju,ljsud->ljsd", np.asarray(w[b], np.float64), X.astype(np.float64)[:, np.asarray(idx[b])])
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("chunk_max", [1, 2, 16])
def test_chunked_centroids_are_the_resampled_means(rng, x64, monkeypatch, chunk_max):
    """Every replicate's centroids from the chunked GEMM, in the four layouts the map calls take, against
    c[j, s] = sum_u w[j, u] x[k_j, s, u] in numpy float64 (to 1e-12), in chunks of 1, 2 or 16 replicates (M = 8, 8, 32 slots per noise type), one
    replicate drawing one noise type in all 10 slots: more than M = 8, so it then goes alone through the
    one-hot GEMM."""
    monkeypatch.setattr(DB, "CHUNK_MAX", chunk_max)
    L, K, S, U, D = 2, 10, 3, 4, 5
    X = rng.normal(size=(L, K, S, U, D))
    idx, w = DB.resample(jax.random.key(8), 7, K, U)
    idx, w = np.array(idx), np.asarray(w, np.float64)
    idx[3] = 6  # one noise type in every slot
    runs = list(DB._chunks(idx, *DB._chunk_shape(X.shape, X.dtype)))
    assert ((3, 4, False) in runs) == (chunk_max < 16) and sum(e - s for s, e, _ in runs) == 7
    assert max(e - s for s, e, _ in runs) <= chunk_max
    got = {}  # each replicate's arrays are reused for the next: copy them out
    for b, (pooled, per_noise, by_snr, noise_mean) in DB._replicate_centroids(
            DB._items_by_slot(jnp.asarray(X)), idx, w, X.shape, ("pooled", "per_noise", "by_snr", "noise_mean")):
        got[b] = [np.array(v) for v in (pooled, per_noise, by_snr, noise_mean)]
    assert sorted(got) == list(range(7))
    for b in range(7):
        want = np.einsum("ju,ljsud->ljsd", w[b], X[:, idx[b]])  # (L, K, S, D)
        for g, v in zip(got[b], (want.reshape(L, K * S, D), want.reshape(L * K, S, D),
                                 np.transpose(want, (2, 0, 1, 3)).reshape(S, L * K, D),
                                 np.transpose(want.mean(axis=1), (1, 0, 2)))):
            np.testing.assert_allclose(g, v, rtol=1e-12, atol=1e-12)


def test_replicates_write_into_reused_buffers(rng):
    """The chunk's groups and each replicate's clouds are written into the previous ones' buffers
    (donated): no fresh multi-hundred-MB buffer, hence no page faults, per replicate at the paper's
    shape. No layout's program holds the replicate's gathered (L, K, S, D) centroids as a temporary."""
    L, K, S, U, D = 2, 6, 5, 4, 64
    X = rng.normal(size=(L, K, S, U, D)).astype(np.float32)
    idx, w = DB.resample(jax.random.key(9), 9, K, U)
    layouts = ("pooled", "per_noise", "by_snr", "noise_mean")
    seen = set()
    for _, clouds in DB._replicate_centroids(DB._items_by_slot(jnp.asarray(X)), np.asarray(idx), np.asarray(w),
                                             X.shape, layouts):
        seen.add(tuple(c.unsafe_buffer_pointer() for c in clouds))
    assert len(seen) == 1, seen
    R, M = DB._chunk_shape(X.shape, X.dtype)
    G = jnp.zeros((K, M, L * S * D), jnp.float32)
    for name in layouts:
        into = DB._layouts(jnp.zeros((L, K, S, D), jnp.float32), (name,))[0]
        mem = DB._pick.lower(G, np.zeros(K, np.int32), into, L=L, S=S, D=D, layout=name).compile().memory_analysis()
        assert mem.alias_size_in_bytes == into.nbytes and mem.temp_size_in_bytes <= L * K * S * D * 4 // 4, name


def test_slot_items_give_the_replicates_of_the_stacked_items(rng):
    """Items handed over as ``slot_items`` of per-layer arrays of two widths (the narrower zero-padded)
    give bit for bit the replicates of the same items stacked as (L, K, S, U, D); bad input is named."""
    X = _items(rng, L=3)
    L, K, S, U, D = X.shape
    parts = [X[0], X[1, ..., : D - 3], X[2]]  # layer 1 narrower: its padding is zeros
    stacked = np.stack([X[0], np.concatenate([X[1, ..., : D - 3], np.zeros((K, S, U, 3), X.dtype)], -1), X[2]])
    res, pn = _full_maps(stacked, 0.99)
    idx, w = DB.resample(jax.random.key(6), 4, K, U)
    items = DB.slot_items(parts)
    assert items.shape == stacked.shape and items.dtype == stacked.dtype
    a = DB.intra_replicates(stacked, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    b = DB.intra_replicates(items, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    for f in a._fields:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    maps, member = _inter_full(stacked)
    ga, _ = DB.inter_replicates(stacked, idx, w, maps, member, key=jax.random.key(0))
    gb, _ = DB.inter_replicates(items, idx, w, maps, member, key=jax.random.key(0))
    np.testing.assert_array_equal(ga, gb)
    with pytest.raises(ValueError, match="'arrays' parameter of slot_items"):
        DB.slot_items([X[0], X[1, :2]])


def _inter_full(X):
    """Full-data inter-layer maps over the L x K (layer, noise) centroids of each SNR, and the
    per-layer membership."""
    L, K, S, U, D = X.shape
    clouds = np.transpose(X.mean(axis=3), (2, 0, 1, 3)).reshape(S, L * K, D)
    maps = diffusion_map(clouds, t=0.5, energy=0.99, align_to=np.repeat(np.arange(L, dtype=float), K))
    return maps, np.kron(np.eye(L), np.full((1, K), 1.0 / K))


@contextlib.contextmanager
def _compiles():
    """The names of the programs XLA compiles inside the block (jax.monitoring's compile events)."""
    names = []

    def on(event, secs, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kw.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(on)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(on)


def test_replicates_reuse_the_full_data_map_programs(rng):
    """The replicates' maps run through the programs that computed the full-data maps: the bootstrap
    compiles no map program of its own, and a second bootstrap (another number of replicates)
    compiles nothing at all."""
    X = _items(rng, U=5, D=11)  # shapes no other test compiles for
    res, pn = _full_maps(X, 0.99)
    maps, member = _inter_full(X)
    with _compiles() as first:
        idx, w = DB.resample(jax.random.key(2), 3, 3, 5)
        DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
        DB.inter_replicates(X, idx, w, maps, member, key=jax.random.key(0))
    # no map program (nor a replicate program holding one): only the small centroid and statistics steps
    assert {"jit(_chunk_groups)", "jit(_pick)"} <= set(first) and not [nm for nm in first if "diffusion_map" in nm
                                                   or "replicates" in nm], first
    idx, w = DB.resample(jax.random.key(3), 5, 3, 5)
    with _compiles() as second:
        DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
        DB.inter_replicates(X, idx, w, maps, member, key=jax.random.key(0))
    assert second == []


def _solver_calls(fn, args, kwargs):
    """Count LAPACK custom calls in the compiled program of a jitted function."""
    text = fn.lower(*args, **kwargs).compile().as_text()
    return text.count('custom_call_target="lapack_')


@pytest.mark.parametrize("which", ["intra", "inter"])
def test_each_replicate_program_holds_at_most_one_solver_call(rng, monkeypatch, which):
    """jaxlib 0.10's CPU LAPACK kernels block a pool thread while their batch pieces run on the
    same pool: two solver calls in flight at once deadlock a 2-core machine. Of the programs a
    replicate dispatches, the map program holds exactly one solver call (a batched eigh over the
    layers) and the others none."""
    X = _items(rng)
    res, pn = _full_maps(X, 0.99)
    idx, w = DB.resample(jax.random.key(2), 3, 3, 4)
    seen = {}
    names = ["diffusion_map_batched", "_items_by_slot", "_chunk_groups", "_pick", "_slot_centroids",
             "_layouts_of", "_intra_statistics", "_inter_statistics"]
    for name in names:
        real = getattr(DB, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.setdefault(_name, (_real, args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(DB, name, spy)
    if which == "intra":
        DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
        assert {"_chunk_groups", "_pick", "_intra_statistics"} <= set(seen)
    else:
        maps, member = _inter_full(X)
        DB.inter_replicates(X, idx, w, maps, member, key=jax.random.key(0))
        assert {"_chunk_groups", "_pick", "_inter_statistics"} <= set(seen)
    for name, (real, args, kwargs) in seen.items():
        assert _solver_calls(real, args, kwargs) == (1 if name == "diffusion_map_batched" else 0), name


def test_one_map_program_in_flight_at_a_time(rng, monkeypatch):
    """Each map call of the bootstrap is finished before the next is dispatched (the pooled maps
    before the per-noise maps, a replicate before the next): two LAPACK programs in flight can
    deadlock (see test_each_replicate_program_holds_at_most_one_solver_call)."""
    X = _items(rng)
    res, pn = _full_maps(X, 0.99)
    maps, member = _inter_full(X)
    idx, w = DB.resample(jax.random.key(2), 3, 3, 4)
    real, outs = DB.diffusion_map_batched, []

    def spy(*args, **kwargs):
        assert all(x.is_ready() for o in outs for x in jax.tree_util.tree_leaves(o))
        outs.append(real(*args, **kwargs))
        return outs[-1]

    monkeypatch.setattr(DB, "diffusion_map_batched", spy)
    DB.intra_replicates(X, idx, w, SNRS, res.maps, pn.maps, key=jax.random.key(0))
    DB.inter_replicates(X, idx, w, maps, member, key=jax.random.key(0))
    assert len(outs) == 3 * 3


def _layers_and_items(rng, blocks=("Enc1", "Enc2", "Latent", "Dec2", "Dec1", "Refine"), per_block=2, K=3, U=3):
    layers, noisy = [], {}
    for depth, block in enumerate(blocks):
        for i in range(per_block):
            C, F = (3, 4) if block == "Latent" else (4, 4)
            name = f"m.{block.lower()}.{i}"
            layers.append({"name": name, "block": block, "index": i, "shape": [C, F], "skip": None})
            X = _items(rng, L=1, K=K, U=U, D=C * F)[0] * (1 + depth)
            noisy[name] = X.reshape(K, len(SNRS), U, C, F)
    return layers, noisy, [f"n{k}" for k in range(K)]


def _walk(d, path=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _walk(v, f"{path}.{k}")
            if isinstance(k, str) and k.endswith("distances"):
                yield f"{path}.{k}", d, k


def test_every_distance_matrix_has_bounds_of_its_shape(rng):
    layers, noisy, noises = _layers_and_items(rng)
    dcfg = load_sweep_config({})["diffusion"]
    d = analyze_diffusion(noisy, layers, SNRS, noises, dcfg, n_boot=20)
    found = list(_walk(d))
    assert len(found) == len(layers) + len(SNRS)  # one per layer (Fig. 4) and per SNR (Fig. 5)
    for where, rec, k in found:
        est, lo, hi = (np.asarray(rec[k + s]) for s in ("", "_low", "_high"))
        assert lo.shape == est.shape == hi.shape, where
        assert np.all(lo <= hi + 1e-12), where
    # the authors' set: every layer of Enc1, Enc2, Dec2, Dec1, one row per layer, blocks from the layer map
    inter = d["inter_layer"]["-10"]
    assert inter["grouping"] == "layer" and len(inter["groups"]) == 8
    assert inter["group_blocks"] == ["Enc1"] * 2 + ["Enc2"] * 2 + ["Dec2"] * 2 + ["Dec1"] * 2
    for key in ("table1", "table1_symmetric", "table1_per_noise_maps"):
        for r in d[key]:
            assert r["spearman_low"] <= r["spearman_high"] and r["r2_low"] <= r["r2_high"]
    assert {r["block"] for r in d["table1_symmetric"]} == {l["block"] for l in layers}
    assert d["bootstrap"]["n_boot"] == 20
    for r in d["block_drift"] + d["inter_layer_mean"]:
        assert set(r) >= {"distance_low", "distance_high"} or set(r) >= {"mean_off_diagonal_low"}


def test_first_of_block_and_listed_sets(rng):
    layers, noisy, noises = _layers_and_items(rng)
    dcfg = load_sweep_config({"diffusion": {"inter_layers": "first_of_block"}})["diffusion"]
    d = analyze_diffusion(noisy, layers, SNRS, noises, dcfg, n_boot=10)
    inter = d["inter_layer"]["0"]
    assert inter["grouping"] == "block" and inter["groups"] == ["Enc1", "Enc2", "Dec2", "Dec1", "Refine"]
    assert d["inter_layer_excluded"] == ["m.latent.0"]
    names, grouping, _ = inter_layer_set(layers, ["m.dec1.1", "m.enc1.0"])
    assert names == ["m.enc1.0", "m.dec1.1"] and grouping == "layer"  # depth order
    with pytest.raises(ValueError, match="unknown: \\['nope'\\]"):
        inter_layer_set(layers, ["nope"])
    # another model than MUSE (issue 17): 'authors' names MUSE's blocks, so one layer per block, said so
    other = [{"name": "a", "block": "Conv"}, {"name": "b", "block": "Conv"}, {"name": "c", "block": "RNN"}]
    names, grouping, described = inter_layer_set(other, "authors")
    assert names == ["a", "c"] and grouping == "block" and "one layer per block" in described
    # a MUSE layer map without the authors' blocks (only latent and refinement) is an error, not a fallback
    with pytest.raises(ValueError, match="'authors' needs layers of the blocks"):
        inter_layer_set([{"name": "a", "block": "Latent"}, {"name": "b", "block": "Refine"}], "authors")
    with pytest.raises(ValueError, match="must be one of"):
        inter_layer_set(layers, "all")


def test_config_keys_of_the_geometry():
    cfg = load_sweep_config({"diffusion": {"coordinates": "symmetric", "inter_layers": ["a.b"], "n_boot": 50}})
    assert cfg["diffusion"]["inter_layers"] == ["a.b"]
    assert load_sweep_config({})["diffusion"]["inter_layers"] == "authors"
    with pytest.raises(ConfigError, match="'diffusion.coordinates' must be one of"):
        load_sweep_config({"diffusion": {"coordinates": "laplacian"}})
    with pytest.raises(ConfigError, match="'diffusion.inter_layers' must be"):
        load_sweep_config({"diffusion": {"inter_layers": "everything"}})
    with pytest.raises(ConfigError, match="'diffusion.n_boot' must be an int >= 2"):
        load_sweep_config({"diffusion": {"n_boot": 1}})
    with pytest.raises(ConfigError, match="'diffusion.design' must be one of"):
        load_sweep_config({"diffusion": {"design": "items"}})
