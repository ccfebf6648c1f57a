"""Geometry bootstrap at the paper's shape: replicates of the 24 intra-layer diffusion maps.

    .venv/bin/python bench/bench_diffusion_bootstrap.py [--replicates 1000] [--items 4] [--quick]

Workload: 24 layers x 18 noise types x 41 SNRs x U items x 2048 features (synthetic
activations on a smooth SNR x noise manifold). Every replicate resamples noise types and
items (hierarchical), recomputes the 24 x 738 centroids, the 24 pooled 738-point maps (plus
the 24 x 18 per-noise 41-point maps), aligns signs to the full-data maps and recomputes
DC1-vs-SNR fits and the 41 x 41 level distances: ``jaxprobe.diffusion.bootstrap.intra_replicates``,
the code path of the sweep. The pooled maps keep the top 10 components (block Krylov):
Table 1 needs DC1 only and the distances the leading components.

Baseline, same run: the same replicates with every eigenpair (``eigh`` of each 738 x 738
matrix, what a full decomposition costs), on a few replicates, scaled to the full count.
Bounds, same run: the batched affinity Gram of one replicate's 24 clouds (24 x 738^2 x 2048
multiply-adds: the floor of any exact method that rebuilds the affinities) and the
centroid recomputation (a pass over the activations), each times the replicate count.

Writes bench/results/diffusion_bootstrap.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write_results  # noqa: E402

from jaxprobe.diffusion import bootstrap as DB  # noqa: E402
from jaxprobe.diffusion import intra_layer  # noqa: E402
from jaxprobe_kernels.gram import sq_distances  # noqa: E402

L, K, S, D = 24, 18, 41, 2048
TOP_K = 10


def study_items(U, seed=0):
    """(L, K, S, U, D) float32: per layer a smooth SNR x noise manifold embedded in D dims, items scattered."""
    rng = np.random.default_rng(seed)
    s = np.linspace(-1.0, 1.0, S)
    out = np.empty((L, K, S, U, D), np.float32)
    for layer in range(L):
        ang = rng.uniform(0, 2 * np.pi, K)
        z = np.stack([np.broadcast_to(s, (K, S)), np.cos(ang)[:, None] * (1 - s) / 2,
                      np.sin(ang)[:, None] * (1 - s) / 2], -1)
        W1, W2 = rng.normal(size=(3, 32)).astype(np.float32), (rng.normal(size=(32, D)) / 8).astype(np.float32)
        base = np.tanh(z @ W1) @ W2  # (K, S, D)
        out[layer] = base[:, :, None, :] + 0.05 * rng.standard_normal((K, S, U, D), dtype=np.float32)
    return out


def run(X, n_boot, solver_k, key):
    Lx, Kx, Sx, U, Dx = X.shape
    snrs = np.linspace(-10, 30, Sx)
    C = np.asarray(X).mean(axis=3)
    maps = intra_layer(C.reshape(Lx, Kx * Sx, Dx), np.tile(snrs, Kx), t=0.5, energy=0.99,
                       n_components=solver_k).maps
    pn = intra_layer(C, snrs, t=0.5, energy=0.99).maps
    idx, w = DB.resample(key, n_boot, Kx, U)
    t0 = time.perf_counter()
    rep = DB.intra_replicates(X, idx, w, snrs, maps, pn, key=key)
    return time.perf_counter() - t0, rep, maps.solver


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--items", type=int, default=4, help="items (utterances) per (noise, SNR) cell")
    ap.add_argument("--baseline-replicates", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="20 replicates, 2 for the baseline")
    args = ap.parse_args()
    B = 20 if args.quick else args.replicates
    Bb = 2 if args.quick else args.baseline_replicates
    payload = {"load_average_at_start": list(os.getloadavg()), "shape": [L, K, S, args.items, D],
               "replicates": B, "top_k": TOP_K}
    X = jnp.asarray(study_items(args.items))
    key = jax.random.key(0)

    # warm-up on a few replicates: compile time, reported apart from steady state
    first, _, solver = run(X, Bb, TOP_K, key)
    steady_small, _, _ = run(X, Bb, TOP_K, key)
    payload["solver"] = solver
    payload["compile_s_est"] = first - steady_small
    print(f"top-{TOP_K} ({solver}): first call {first:.1f} s, then {steady_small:.2f} s for {Bb} replicates",
          flush=True)
    t, rep, _ = run(X, B, TOP_K, key)
    payload["topk_s"] = t
    payload["topk_s_per_replicate"] = t / B
    payload["topk_maps_per_s"] = B * L / t
    payload["topk_max_residual"] = rep.max_residual
    payload["rho_median"] = float(np.median(rep.rho))
    print(f"{B} replicates x {L} maps of {K * S} points: {t:.1f} s ({t / B * 1e3:.0f} ms per replicate, "
          f"{B * L / t:.0f} maps/s); max residual {rep.max_residual:.1e}", flush=True)

    # baseline: every eigenpair (eigh) on a few replicates, scaled
    run(X, 1, None, key)  # compile
    tb, rep_b, _ = run(X, Bb, None, key)
    payload["eigh_s_per_replicate"] = tb / Bb
    payload["eigh_s_scaled_to_replicates"] = tb / Bb * B
    payload["ratio_eigh_over_topk"] = (tb / Bb) / (t / B)
    print(f"baseline all eigenpairs (eigh): {tb / Bb:.2f} s per replicate -> {tb / Bb * B:.0f} s for {B}; "
          f"ratio {payload['ratio_eigh_over_topk']:.1f}x", flush=True)

    # bounds: the affinity Gram of one replicate's 24 clouds, and the centroid pass
    clouds = jnp.asarray(np.asarray(X).mean(axis=3).reshape(L, K * S, D))
    gram = jax.jit(jax.vmap(sq_distances))
    gram(clouds).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(3):
        gram(clouds).block_until_ready()
    tg = (time.perf_counter() - t0) / 3
    i0, w0 = DB.resample(key, 1, K, args.items)
    cen = jax.jit(lambda X, i, w: jnp.einsum("ju,ljsud->ljsd", w, X[:, i]))
    cen(X, i0[0], w0[0]).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(3):
        cen(X, i0[0], w0[0]).block_until_ready()
    tc = (time.perf_counter() - t0) / 3
    flops = 2.0 * L * (K * S) ** 2 * D
    payload.update({
        "gram_s_per_replicate": tg, "gram_gflops": flops / tg / 1e9, "gram_s_scaled": tg * B,
        "centroids_s_per_replicate": tc, "centroids_s_scaled": tc * B,
        "gram_share_of_topk": tg * B / t, "centroids_share_of_topk": tc * B / t,
    })
    print(f"bounds: affinity Grams {tg * 1e3:.0f} ms per replicate ({flops / tg / 1e9:.0f} GFLOP/s) -> "
          f"{tg * B:.0f} s ({100 * tg * B / t:.0f}% of the top-k run); centroid pass {tc * 1e3:.0f} ms -> "
          f"{tc * B:.0f} s ({100 * tc * B / t:.0f}%)", flush=True)
    payload["peak_rss_mb"] = peak_rss_mb()
    payload["load_average_at_end"] = list(os.getloadavg())
    out = write_results("diffusion_bootstrap" + ("_quick" if args.quick else ""), payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
