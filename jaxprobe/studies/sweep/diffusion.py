"""Diffusion-map stage of the SNR-sweep study (the SE paper's Sec. 4.3, Table 1, Figs. 4-5).

Centroids: for each (layer, noise type, SNR) the mean over items of the (C, F)
activation, flattened to C*F features (2048 for MUSE, 1536 in the latent block).

* Intra-layer: one map per layer over its K x S (noise, SNR) centroids together;
  DC1 is then read per noise type: Spearman rho and R^2 of DC1 against SNR per
  (layer, noise), averaged over the noise types and the layers of a block (Table 1),
  with percentile intervals from resampling noise types. Fig. 4: distances between the
  SNR levels (each level = the mean diffusion coordinates of its K points).
* The same fits from one map per (layer, noise type) over its S SNR centroids
  ("table1_per_noise_maps"): in one pooled map, different noise types can move away
  from the clean point in different directions, so DC1 may rise with SNR for some
  noise types and fall for others; separate maps align each with SNR.
* Inter-layer: one map per SNR over the centroids (K per layer) of a set of layers
  (``diffusion.inter_layers``): "authors" (default) = every layer of Enc1, Enc2, Dec2 and
  Dec1, as the SE authors' code (latent: different dimension; refinement left out);
  "first_of_block" = the first layer of each block (Latent excluded by its dimension);
  or a list of module paths. Distances between the layers' mean diffusion coordinates
  (Fig. 5; between blocks for "first_of_block"). Blocks come from the layer map. Points of
  one map must share a width, so the chosen points are split into maps by width
  (:func:`width_maps`: a block joins through its first layer of the map's width; MUSE's
  Latent alone), none dropped: "inter_layer" is the largest map (Fig. 5),
  "inter_layer_maps" lists them all. A model without MUSE's blocks gets "first_of_block"
  for the default "authors".
* Only what the results need: above ``TOP_K_ABOVE`` points at ``t_intra`` = 1/2 the pooled maps
  (full data and every replicate) compute DC1 by a top-``TOP_K`` solve, and the SNR-level
  distances come from the all-component closed form where those components hold less than the
  energy share (``jaxprobe.diffusion.map``: it exceeds the energy-truncated distance by the dropped
  tail only; "n_components" then records all K*S - 1 components). Smaller clouds keep the full eigh.
* Coordinates: ``diffusion.coordinates`` ("markov" | "symmetric") sets the convention of
  every distance; Table 1 is given in both ("table1" Markov, "table1_symmetric").
* Intervals: every number is bootstrapped by recomputing the maps
  (``jaxprobe.diffusion.bootstrap``): noise types, then items within each, are resampled,
  the centroids and every map recomputed, and each statistic taken per replicate; keys
  ending in "distances" get "<key>_low" and "<key>_high" of the same shape.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.diffusion import bootstrap as DB
from jaxprobe.diffusion import group_membership, inter_layer, intra_layer
from jaxprobe.stats import linregress, spearman

# Pooled intra-layer maps above this many points at t_intra = 1/2 compute only what the results need:
# DC1 (Table 1) by a top-k solve of TOP_K components and the level distances (Fig. 4) from the
# all-component closed form where those components hold less than the energy share (jaxprobe.diffusion.map).
TOP_K_ABOVE = 256
TOP_K = 8  # a block wider than the 3 read (DC1-DC3) converges where the leading eigenvalues cluster


def _pooled_components(n: int, t: float):
    """None (full eigh) for small clouds or t != 1/2 (no closed form); else TOP_K."""
    return TOP_K if t == 0.5 and n > TOP_K_ABOVE and 5 * (TOP_K + 2) < n else None


AUTHORS_BLOCKS = ("Enc1", "Enc2", "Dec2", "Dec1")  # the SE authors' inter-layer blocks (their code)
INTER_LAYER_SETS = ("authors", "first_of_block")


def centroids(noisy: dict) -> dict:
    """layer -> (K, S, C*F) float32 centroids over the items axis of (K, S, U, C, F)."""
    out = {}
    for name, a in noisy.items():
        c = np.asarray(a, np.float32).mean(axis=2)
        out[name] = c.reshape(c.shape[0], c.shape[1], -1)
    return out


def width_maps(names, block_of, width) -> list[tuple[int, list[str]]]:
    """Split the blocks into inter-layer maps whose points share a width, each block in one map.

    Greedy: the width that the most blocks still unassigned have a layer of (ties: the width of
    the earliest such layer) forms a map of each of those blocks' first layer of that width;
    repeat with the remaining blocks. MUSE: its five 2048-wide blocks, then the Latent alone (the
    SE paper's Fig. 5). Returns [(width, [layer per block in depth order])], the largest map first.
    """
    blocks = list(dict.fromkeys(block_of[nm] for nm in names))
    left = list(blocks)
    out = []
    while left:
        count: dict[int, list[str]] = {}
        for nm in names:
            b = block_of[nm]
            if b in left and b not in count.setdefault(width[nm], []):
                count[width[nm]].append(b)
        w = max(count, key=lambda k: len(count[k]))  # first inserted wins ties (depth order)
        reps = [next(nm for nm in names if block_of[nm] == b and width[nm] == w) for b in count[w]]
        reps.sort(key=names.index)
        out.append((w, reps))
        left = [b for b in left if b not in count[w]]
    return out


def inter_layer_set(layers: list, choice) -> tuple[list, str, str]:
    """The layers of the inter-layer maps, read from the layer map (``block`` of each record).

    Returns
    -------
    names : module paths in depth order; grouping : "layer" (one point per layer and SNR, its
    centroid over noise types and items, as in the authors' code; one row of Fig. 5 per
    layer) or "block" (K points per layer, one per noise type; distances between block
    means); description : a phrase for the report.
    """
    names = [l["name"] for l in layers]
    block_of = {l["name"]: l["block"] for l in layers}
    if isinstance(choice, str) and choice == "authors":
        chosen = [nm for nm in names if block_of[nm] in AUTHORS_BLOCKS]
        if not chosen and not any(b in AUTHORS_BLOCKS or b in ("Latent", "Refine") for b in block_of.values()):
            # another model than MUSE: the authors' set does not exist for it; one layer per block
            chosen, grouping, _ = inter_layer_set(layers, "first_of_block")
            return chosen, grouping, ("one layer per block (the default 'authors' set names MUSE's blocks, which "
                                      "this model does not have), one point per noise type")
        if not chosen:
            raise ValueError(
                f"The 'diffusion.inter_layers' setting 'authors' needs layers of the blocks {list(AUTHORS_BLOCKS)} in "
                f"the layer map; got blocks {sorted(set(block_of.values()))}. Use 'first_of_block' or a list of "
                "module paths."
            )
        found = [b for b in AUTHORS_BLOCKS if any(block_of[nm] == b for nm in chosen)]
        return chosen, "layer", (f"the SE authors' set: all {len(chosen)} layers of {', '.join(found)} "
                                 "(latent and refinement excluded), one point per layer (its centroid over "
                                 "noise types and utterances)")
    if isinstance(choice, str) and choice == "first_of_block":
        chosen = [next(nm for nm in names if block_of[nm] == b) for b in dict.fromkeys(block_of.values())]
        return chosen, "block", "the first layer of each block, one point per noise type"
    if isinstance(choice, (list, tuple)) and choice and all(isinstance(c, str) for c in choice):
        unknown = [c for c in choice if c not in block_of]
        if unknown:
            raise ValueError(
                f"The 'diffusion.inter_layers' setting must list module paths of the layer map; unknown: {unknown}. "
                f"Known (first 3): {names[:3]}."
            )
        chosen = [nm for nm in names if nm in set(choice)]
        return chosen, "layer", f"{len(chosen)} listed layers, one point per layer"
    raise ValueError(
        f"The 'diffusion.inter_layers' setting must be one of {list(INTER_LAYER_SETS)} or a non-empty list of module "
        f"paths; got {choice!r}."
    )


def _block_means(values, rows_of_block):
    """values (..., L, K) -> (..., G): mean over each block's layers and over the K slots."""
    return np.stack([values[..., rows, :].mean(axis=(-2, -1)) for rows in rows_of_block], axis=-1)


def _with_bounds(rec, key, est, reps, level):
    lo, hi = DB.percentile(reps, level)
    rec[key] = est.tolist() if isinstance(est, np.ndarray) else float(est)
    rec[f"{key}_low"] = lo.tolist() if isinstance(lo, np.ndarray) and lo.ndim else float(lo)
    rec[f"{key}_high"] = hi.tolist() if isinstance(hi, np.ndarray) and hi.ndim else float(hi)


def analyze_diffusion(noisy: dict, layers: list, snrs, noises, dcfg: dict, *, seed: int = 0, n_boot: int | None = None,
                      level: float | None = None) -> dict:
    """Intra- and inter-layer diffusion analyses -> the ``diffusion`` part of results.json.

    noisy : dict layer -> (K, S, U, C, F) activations; layers : layer-map records (name,
    block, ...) in depth order. ``dcfg``: the ``diffusion`` config table; ``n_boot`` /
    ``level`` override its ``n_boot`` / ``level``.
    """
    snrs = np.asarray(snrs, np.float64)
    K, S = len(noises), len(snrs)
    n_boot = int(dcfg.get("n_boot", 200) if n_boot is None else n_boot)
    level = float(dcfg.get("level", 0.95) if level is None else level)
    design = dcfg.get("design", "hierarchical")
    coordinates = dcfg.get("coordinates", "markov")
    symmetric = coordinates == "symmetric"
    key = jax.random.key(seed)
    names = [l["name"] for l in layers]
    block_of = {l["name"]: l["block"] for l in layers}
    blocks = list(dict.fromkeys(block_of[nm] for nm in names))
    eps = dcfg["epsilon"]
    common = dict(epsilon=eps, alpha=float(dcfg["alpha"]), energy=float(dcfg["energy"]) if dcfg["energy"] else None)
    t_intra, t_inter = float(dcfg["t_intra"]), float(dcfg["t_inter"])
    items = {nm: np.asarray(noisy[nm], np.float32) for nm in names}
    items = {nm: a.reshape(a.shape[:3] + (-1,)) for nm, a in items.items()}  # (K, S, U, D)
    U = next(iter(items.values())).shape[2]
    cent = {nm: a.mean(axis=2) for nm, a in items.items()}  # (K, S, D)
    index, weights = DB.resample(jax.random.fold_in(key, 7), n_boot, K, U, design)
    x = jnp.asarray(snrs)

    # ---- intra-layer, full data: one K*S-point map per layer (noise-major points: (k, s) -> k * S + s)
    # and one S-point map per (layer, noise type); then the replicates. Narrower layers (MUSE's latent
    # block) are zero-padded to the widest: distances, hence maps, are unchanged, and one compiled
    # call serves every layer. Both coordinate conventions come from one eigendecomposition:
    # symmetric coordinates are sqrt(pi) times the Markov ones (jaxprobe.diffusion).
    L = len(names)
    D = max(a.shape[-1] for a in items.values())
    pad = lambda a: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, D - a.shape[-1])])  # noqa: E731
    C = np.stack([pad(cent[nm]) for nm in names])  # (L, K, S, D)
    point_snr = np.tile(snrs, K)
    top_k = _pooled_components(K * S, t_intra)
    res = intra_layer(C.reshape(L, K * S, D), point_snr, t=t_intra, key=jax.random.fold_in(key, 1),
                      n_components=top_k, **common)
    if symmetric:
        res_used = intra_layer(C.reshape(L, K * S, D), point_snr, t=t_intra, coordinates="symmetric",
                               key=jax.random.fold_in(key, 1), n_components=top_k, **common)
    else:
        res_used = res
    pn = intra_layer(C, snrs, t=t_intra, key=jax.random.fold_in(key, 3), **common)  # L*K maps in one call
    root_pi = np.sqrt(np.asarray(res.maps.stationary, np.float64))
    dc1_m = np.asarray(res.dc1, np.float64)
    dc1 = {"markov": dc1_m.reshape(L, K, S), "symmetric": (root_pi * dc1_m).reshape(L, K, S)}
    rho = {c: np.asarray(spearman(x, jnp.asarray(v)), np.float64) for c, v in dc1.items()}
    r2 = {c: np.asarray(linregress(x, jnp.asarray(v)).r2, np.float64) for c, v in dc1.items()}
    rho_pn, r2_pn = np.asarray(pn.spearman, np.float64), np.asarray(pn.r2, np.float64)
    level_d = np.asarray(res_used.level_distances, np.float64)
    # components the level distances use: the kept ones, or all K*S - 1 where the closed form served
    n_kept = np.where(np.asarray(res_used.maps.group_closed), K * S - 1, np.asarray(res_used.maps.n_kept))
    epsilon = np.asarray(res.maps.epsilon)
    all_pts = np.stack([np.asarray(res_used.spearman), np.asarray(res_used.r2)], -1)
    X = DB.slot_items([items[nm] for nm in names])  # (L, K, S, U, D), narrower layers zero-padded
    rep = DB.intra_replicates(X, index, weights, snrs, res.maps, pn.maps, key=jax.random.fold_in(key, 10),
                              symmetric=symmetric)
    del X  # the items' replicate layout (7 GiB at the paper's shape) before the inter-layer maps build theirs
    reps = rep._asdict()
    residual = rep.max_residual
    pos = {nm: i for i, nm in enumerate(names)}

    intra_out = {}
    for i, nm in enumerate(names):
        rec = {
            "block": block_of[nm], "snrs": snrs.tolist(),
            "dc1": {"pooled": dc1[coordinates][i].mean(axis=0).tolist(),
                    **{n: dc1[coordinates][i, k].tolist() for k, n in enumerate(noises)}},
        }
        _with_bounds(rec, "distances", level_d[i], reps["level_distances"][:, i], level)
        _with_bounds(rec, "dist_to_clean", level_d[i, :, -1], reps["level_distances"][:, i, :, -1], level)
        rec.update({
            "spearman_all_points": float(all_pts[i, 0]), "r2_all_points": float(all_pts[i, 1]),
            "spearman_per_noise": rho["markov"][i].tolist(), "r2_per_noise": r2["markov"][i].tolist(),
            "spearman_per_noise_symmetric": rho["symmetric"][i].tolist(),
            "r2_per_noise_symmetric": r2["symmetric"][i].tolist(),
            "spearman_per_noise_maps": rho_pn[i].tolist(), "r2_per_noise_maps": r2_pn[i].tolist(),
            "n_components": int(n_kept[i]), "epsilon": float(epsilon[i]),
        })
        intra_out[nm] = rec
    rows_of_block = [[pos[nm] for nm in names if block_of[nm] == b] for b in blocks]

    def block_table(rho_lk, r2_lk, rho_reps, r2_reps):
        """Per block: rho and R^2 per noise type averaged over the block's layers and the noise
        types; intervals: the same average inside every replicate (recomputed maps)."""
        est = np.stack([_block_means(rho_lk, rows_of_block), _block_means(r2_lk, rows_of_block)])
        lo_rho, hi_rho = DB.percentile(_block_means(rho_reps, rows_of_block), level)
        lo_r2, hi_r2 = DB.percentile(_block_means(r2_reps, rows_of_block), level)
        return [{"block": b, "spearman": float(est[0, i]), "r2": float(est[1, i]),
                 "spearman_low": float(lo_rho[i]), "spearman_high": float(hi_rho[i]),
                 "r2_low": float(lo_r2[i]), "r2_high": float(hi_r2[i]),
                 "n_layers": len(rows_of_block[i]), "n_noises": K} for i, b in enumerate(blocks)]

    table1 = block_table(rho["markov"], r2["markov"], reps["rho"], reps["r2"])
    table1_sym = block_table(rho["symmetric"], r2["symmetric"], reps["rho_symmetric"], reps["r2_symmetric"])
    table1_pn = block_table(rho_pn, r2_pn, reps["rho_per_noise_maps"], reps["r2_per_noise_maps"])

    # block drift: mean over a block's layers of the distance from the lowest SNR to the cleanest
    low = int(np.argmin(snrs))
    drift = []
    for b, rows in zip(blocks, rows_of_block):
        rec = {"block": b, "snr_low": float(snrs[low]), "snr_clean": float(snrs[-1])}
        _with_bounds(rec, "distance", level_d[rows, low, -1].mean(), reps["level_distances"][:, rows, low, -1].mean(1),
                     level)
        drift.append(rec)

    # ---- inter-layer: per SNR, one map over the chosen layers (one point each, or K noise centroids each).
    # Points of one map must share a width: the chosen layers are split into maps by width
    # (width_maps), the largest is "inter_layer" (Fig. 5), every map is in "inter_layer_maps".
    chosen, grouping, described = inter_layer_set(layers, dcfg.get("inter_layers", "authors"))
    pool = grouping == "layer"  # one point per layer: its centroid over noise types and items
    width = {nm: int(cent[nm].shape[-1]) for nm in names}
    if grouping == "block":  # a block joins a map through its first layer of the map's width
        in_set = {block_of[nm] for nm in chosen}
        groups_by_width = width_maps([nm for nm in names if block_of[nm] in in_set], block_of, width)
    else:  # every chosen layer is a point: one map per width, the most populous first
        by_w: dict[int, list[str]] = {}
        for nm in chosen:
            by_w.setdefault(width[nm], []).append(nm)
        groups_by_width = sorted(by_w.items(), key=lambda kv: -len(kv[1]))
    notes: list[str] = []

    def one_map(members: list[str], salt: int):
        nonlocal residual
        inter_in = {nm: (cent[nm].mean(axis=0)[:, None, :] if pool else np.moveaxis(cent[nm], 0, 1)) for nm in members}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inter = inter_layer(inter_in, blocks={nm: block_of[nm] for nm in members} if grouping == "block" else None,
                                t=t_inter, coordinates=coordinates, key=jax.random.fold_in(key, salt), **common)
        notes.extend(str(w.message) for w in caught)
        gd = np.asarray(inter.group_distances, np.float64)
        m = 1 if pool else K
        labels = np.repeat([inter.groups.index(nm if grouping == "layer" else block_of[nm]) for nm in inter.layers], m)
        membership = group_membership(labels, len(inter.groups), jnp.float32)
        Xi = DB.slot_items([items[nm] for nm in inter.layers])  # (Li, K, S, U, D)
        gd_reps, res_i = DB.inter_replicates(Xi, index, weights, inter.maps, membership,
                                              key=jax.random.fold_in(key, salt + 18), symmetric=symmetric,
                                              pool_noises=pool)
        residual = max(residual, res_i)
        group_blocks = [g if grouping == "block" else block_of[g] for g in inter.groups]
        off = ~np.eye(len(inter.groups), dtype=bool)
        by_snr, means = {}, []
        for s_i, s in enumerate(snrs):
            rec = {"layers": list(inter.layers), "groups": list(inter.groups), "group_blocks": group_blocks,
                   "grouping": grouping}
            _with_bounds(rec, "distances", gd[s_i], gd_reps[:, s_i], level)
            by_snr[f"{s:g}"] = rec
            mrec = {"snr": float(s)}
            _with_bounds(mrec, "mean_off_diagonal", gd[s_i][off].mean() if off.any() else 0.0,
                         gd_reps[:, s_i][:, off].mean(-1) if off.any() else np.zeros(n_boot), level)
            means.append(mrec)
        return inter, by_snr, means

    maps_out, inter_out, inter_mean, main_layers = [], {}, [], []
    for m_i, (w, members) in enumerate(groups_by_width):
        rec = {"width": w, "layers": list(members), "blocks": list(dict.fromkeys(block_of[nm] for nm in members))}
        if len(members) < 2:
            rec["note"] = (f"{block_of[members[0]]} alone: no other chosen layer or block has width {w}, so it has no "
                           "inter-layer distances (its intra-layer maps are above)")
            notes.append(f"Inter-layer geometry: {rec['note']}.")
        else:
            inter, by_snr, means = one_map(list(members), 2 if m_i == 0 else 1000 + 30 * m_i)
            if not inter_out:  # the largest map: Fig. 5 and the summary
                inter_out, inter_mean, main_layers = by_snr, means, list(inter.layers)
            else:
                rec["by_snr"] = {k: {"distances": v["distances"], "distances_low": v["distances_low"],
                                     "distances_high": v["distances_high"], "groups": v["groups"]}
                                 for k, v in by_snr.items()}
        maps_out.append(rec)
    if residual > float(np.sqrt(np.finfo(np.float32).eps)):
        notes.append(f"Bootstrap maps: largest eigensolver residual {residual:.2e} (top-k solver not fully converged "
                     "in some replicate).")
    return {
        "table1": table1,
        "table1_symmetric": table1_sym,
        "table1_per_noise_maps": table1_pn,
        "intra_layer": intra_out,
        "block_drift": drift,
        "inter_layer": inter_out,
        "inter_layer_mean": inter_mean,
        "inter_layer_set": {"setting": dcfg.get("inter_layers", "authors"), "layers": main_layers,
                            "grouping": grouping, "description": described},
        "inter_layer_excluded": [nm for r in maps_out for nm in r["layers"] if nm not in main_layers],
        "inter_layer_maps": maps_out,
        "notes": notes,
        "bootstrap": {"n_boot": n_boot, "level": level, "design": design, "interval": "percentile",
                      "recomputed": "centroids and every diffusion map in every replicate"},
        "settings": {**dcfg, "points_intra": "K x S (noise, SNR) centroids per layer",
                     "points_inter": described},
    }
