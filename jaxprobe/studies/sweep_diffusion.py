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
* Inter-layer: one map per SNR over the centroids (K per layer) of the first layer of
  each block, latent excluded (different dimension); distances between the layers'
  mean diffusion coordinates (Fig. 5).
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.bootstrap import bootstrap_mean
from jaxprobe.diffusion_analysis import inter_layer, intra_layer, intra_layer_by_name
from jaxprobe.stats import linregress, spearman


def centroids(noisy: dict) -> dict:
    """layer -> (K, S, C*F) float32 centroids over the items axis of (K, S, U, C, F)."""
    out = {}
    for name, a in noisy.items():
        c = np.asarray(a, np.float32).mean(axis=2)
        out[name] = c.reshape(c.shape[0], c.shape[1], -1)
    return out


def analyze_diffusion(noisy: dict, layers: list, snrs, noises, dcfg: dict, *, seed: int = 0, n_boot: int = 1000,
                      level: float = 0.95) -> dict:
    """Intra- and inter-layer diffusion analyses -> the ``diffusion`` part of results.json."""
    snrs = np.asarray(snrs, np.float64)
    K, S = len(noises), len(snrs)
    key = jax.random.key(seed)
    cent = centroids(noisy)
    names = [l["name"] for l in layers]
    block_of = {l["name"]: l["block"] for l in layers}
    eps = dcfg["epsilon"]
    common = dict(epsilon=eps, alpha=float(dcfg["alpha"]), energy=float(dcfg["energy"]) if dcfg["energy"] else None)

    # ---- intra-layer: one cloud of K*S points per layer
    point_snr = np.tile(snrs, K)  # points ordered noise-major: (k, s) -> k * S + s
    clouds = {nm: cent[nm].reshape(K * S, -1) for nm in names}
    intra = intra_layer_by_name(clouds, point_snr, t=float(dcfg["t_intra"]), key=jax.random.fold_in(key, 1), **common)
    dc1 = np.stack([np.asarray(intra[nm].dc1, np.float64).reshape(K, S) for nm in names])  # (L, K, S)
    x = jnp.asarray(snrs)
    rho = np.asarray(spearman(x, jnp.asarray(dc1)), np.float64)  # (L, K)
    r2 = np.asarray(linregress(x, jnp.asarray(dc1)).r2, np.float64)
    intra_out = {}
    for i, nm in enumerate(names):
        res = intra[nm]
        intra_out[nm] = {
            "block": block_of[nm],
            "snrs": snrs.tolist(),
            "dc1": {"pooled": dc1[i].mean(axis=0).tolist(), **{n: dc1[i, k].tolist() for k, n in enumerate(noises)}},
            "distances": np.asarray(res.level_distances, np.float64).tolist(),
            "dist_to_clean": np.asarray(res.distance_to_clean, np.float64).tolist(),
            "spearman_all_points": float(res.spearman), "r2_all_points": float(res.r2),
            "spearman_per_noise": rho[i].tolist(), "r2_per_noise": r2[i].tolist(),
            "n_components": int(np.asarray(res.maps.n_kept)) if hasattr(res.maps, "n_kept") else None,
            "epsilon": float(np.asarray(res.maps.epsilon)),
        }
    blocks = list(dict.fromkeys(block_of[nm] for nm in names))

    def block_table(rho_of, r2_of, salt):
        """Per block: rho and R^2 per noise type averaged over the block's layers, then over
        noise types, with percentile intervals from resampling noise types."""
        out = []
        for b_i, b in enumerate(blocks):
            rows = [nm for nm in names if block_of[nm] == b]
            rb = np.mean([rho_of[nm] for nm in rows], axis=0)
            qb = np.mean([r2_of[nm] for nm in rows], axis=0)
            rec = {"block": b, "spearman": float(rb.mean()), "r2": float(qb.mean()), "n_layers": len(rows), "n_noises": K}
            if K >= 2:
                bt = bootstrap_mean(np.stack([rb, qb]), key=jax.random.fold_in(key, salt + b_i), n_boot=n_boot, level=level)
                rec.update(spearman_low=float(bt.low[0]), spearman_high=float(bt.high[0]),
                           r2_low=float(bt.low[1]), r2_high=float(bt.high[1]))
            out.append(rec)
        return out

    table1 = block_table({nm: rho[i] for i, nm in enumerate(names)}, {nm: r2[i] for i, nm in enumerate(names)}, 100)

    # ---- alternative reading: one map per (layer, noise type) over its S SNR centroids
    by_shape: dict = {}
    for nm in names:
        by_shape.setdefault(cent[nm].shape, []).append(nm)
    rho_pn, r2_pn = {}, {}
    for grp in by_shape.values():
        res = intra_layer(np.stack([cent[nm] for nm in grp]), snrs, t=float(dcfg["t_intra"]),
                          key=jax.random.fold_in(key, 3), **common)  # (Lg, K, S, d): Lg*K maps in one call
        for i, nm in enumerate(grp):
            rho_pn[nm] = np.asarray(res.spearman[i], np.float64)
            r2_pn[nm] = np.asarray(res.r2[i], np.float64)
            intra_out[nm]["spearman_per_noise_maps"] = rho_pn[nm].tolist()
            intra_out[nm]["r2_per_noise_maps"] = r2_pn[nm].tolist()
    table1_pn = block_table(rho_pn, r2_pn, 200)

    # ---- inter-layer: per SNR, the first layer of every block (K centroids each)
    firsts = []
    for b in blocks:
        first = next(nm for nm in names if block_of[nm] == b)
        firsts.append(first)
    inter_in = {nm: np.moveaxis(cent[nm], 0, 1) for nm in firsts}  # (S, K, d)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inter = inter_layer(inter_in, blocks={nm: block_of[nm] for nm in firsts}, t=float(dcfg["t_inter"]),
                            key=jax.random.fold_in(key, 2), **common)
    notes = [str(w.message) for w in caught]
    gd = np.asarray(inter.group_distances, np.float64)
    inter_out = {}
    for s_i, s in enumerate(snrs):
        inter_out[f"{s:g}"] = {"layers": list(inter.layers), "blocks": list(inter.groups), "matrix": gd[s_i].tolist()}
    return {
        "table1": table1,
        "table1_per_noise_maps": table1_pn,
        "intra_layer": intra_out,
        "inter_layer": inter_out,
        "inter_layer_excluded": list(inter.excluded),
        "notes": notes,
        "settings": {**dcfg, "points_intra": "K x S (noise, SNR) centroids per layer", "points_inter": "K noise centroids per first layer of each block"},
    }
