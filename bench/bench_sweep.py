"""The SNR-sweep analysis at the paper's shape: jaxprobe vs a straightforward numpy/scipy
implementation of the same steps, in one run.

Shape: 24 MUSE layers ((16,128) x 4, (32,64) x 4, (48,32) x 4, (32,64) x 4, (16,128) x 8) x
41 SNRs x 18 noise types x 50 utterances of pooled (C, F) activations (synthetic, with an
SNR-dependent noise term; 6.5 GiB of float32, held 64-byte aligned as the sweep's
store loader returns them).
Steps, on both sides: per-utterance CKA (biased and debiased) for every cell; a
1000-replicate bootstrap across noise types of the (layer, SNR) means with, inside every
replicate, the CKA-vs-SNR line per layer, the Spearman rho of slope and of intercept
against depth and the block means, then percentile intervals; diffusion maps: one
intra-layer map per layer over its 18 x 41 centroids (DC1 vs SNR per noise type), one
per (layer, noise type) over its 41 centroids, and one inter-layer map per SNR over the
first layer of each block (latent excluded); and the geometry bootstrap: in each of
`--n-boot-maps` replicates (default: the sweep's `diffusion.n_boot`, 200) the noise types and,
within each, the utterances are redrawn, the centroids recomputed, and every map above with its
statistics recomputed.

jaxprobe runs `analyze_cka` and `analyze_diffusion` as the sweep does (which also write the
records, Table 1 with its bootstrap, and the diffusion distances). The baseline is a
per-call CKA loop, a Python-loop bootstrap (np.polyfit and scipy.stats.spearmanr per
replicate) and per-map scipy.linalg.eigh diffusion maps, and a per-replicate loop of the same
for the geometry bootstrap. The baseline CKA loop runs in full unless `--baseline-layers N`
(N < 24) is given: then it runs on N layers and is scaled linearly to 24, which the output
says ("cka_loop_extrapolated"). The baseline geometry bootstrap runs `--baseline-map-reps`
replicates (default 3: ~10 s each here) and is scaled linearly to `--n-boot-maps`
("geometry_bootstrap_extrapolated"); every replicate is the same work on other draws.

jaxprobe is timed on a first call (including compilation) and then best of `--repeat`
calls; the baseline once. The machine's load average is recorded around each part (the
machine is shared; a loaded machine slows both sides, unevenly).

OpenBLAS threads: unless OPENBLAS_NUM_THREADS is set, the script sets it to 1 for both
sides (it is recorded in the output). Both scipy's eigh and the LAPACK eigh behind
jax's CPU eigh run on OpenBLAS here; on this 2-core machine shared with other jobs (load
average 4-5), 20 jax eighs of 738 x 738 took 1.9-45 s over repeated runs with OpenBLAS's
default threads and a steady 0.63 s with one thread.

    .venv/bin/python bench/bench_sweep.py [--quick] [--baseline-layers N] [--n-boot-maps B]
        [--baseline-map-reps N] [--repeat R]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

BLAS_THREADS = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import scipy.spatial.distance  # noqa: E402
import scipy.stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write_results  # noqa: E402

BLOCKS = ["Enc1"] * 4 + ["Enc2"] * 4 + ["Latent"] * 4 + ["Dec2"] * 4 + ["Dec1"] * 4 + ["Refine"] * 4
# MUSE's blocks: Enc1 (16,128), Enc2 (32,64), Latent (48,32), Dec2 (32,64), Dec1 (16,128), Refine (16,128)
SHAPES = [(16, 128)] * 4 + [(32, 64)] * 4 + [(48, 32)] * 4 + [(32, 64)] * 4 + [(16, 128)] * 8


def aligned_empty(shape, dtype=np.float32, align=64):
    """An uninitialised C-contiguous array whose data start on an ``align``-byte boundary,
    as jaxprobe.studies.sweep.load_sweep_arrays returns the activations (numpy's large
    allocations start 16 bytes into a page; JAX copies such a buffer instead of using it)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(n + align, np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off:off + n].view(dtype).reshape(shape)


def make_data(K, S, U, seed=0):
    rng = np.random.default_rng(seed)
    snrs = np.linspace(-10, 30, S)
    layers, noisy, clean = [], {}, {}
    for i, ((C, F), block) in enumerate(zip(SHAPES, BLOCKS)):
        name = f"{block}.{i % 4}"
        layers.append({"name": name, "block": block, "index": i % 4, "shape": [C, F], "skip": None})
        cl = rng.standard_normal((U, C, F), dtype=np.float32)
        w = (0.3 + 0.1 * (i // 4)) / (1 + np.exp(snrs / 8.0)).astype(np.float32)
        nz = rng.standard_normal(dtype=np.float32, out=aligned_empty((K, S, U, C, F)))
        nz *= w[None, :, None, None, None]
        nz += cl[None, None]
        noisy[name], clean[name] = nz, cl
    return layers, noisy, clean, snrs, [f"noise{k}" for k in range(K)]


# ----------------------------------------------------------------------------- baseline

def np_cka(X, Y, debiased=False):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    K, L = X @ X.T, Y @ Y.T
    if debiased:
        n = K.shape[0]

        def u(G):
            G = G.copy()
            np.fill_diagonal(G, 0)
            m = G.sum(0) / (n - 2)
            m -= m.sum() / (2 * (n - 1))
            G -= m[:, None] + m[None, :]
            np.fill_diagonal(G, 0)
            return G

        K, L = u(K), u(L)
    return (K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum())


def baseline_cka(noisy, clean, names, debiased):
    out = {}
    for nm in names:
        a, c = noisy[nm], clean[nm]
        K, S, U = a.shape[:3]
        v = np.empty((K, S, U))
        for k in range(K):
            for s in range(S):
                for u in range(U):
                    v[k, s, u] = np_cka(a[k, s, u], c[u], debiased)
        out[nm] = v
    return out


def baseline_bootstrap(values, snrs, blocks, n_boot, seed=0, level=0.95):
    """values (L, K, S, U): resample noise types; mean over noise types and utterances; inside
    every replicate a line per layer, Spearman rho of slope / intercept vs depth, block means;
    percentile intervals of all of them."""
    rng = np.random.default_rng(seed)
    L, K, S, U = values.shape
    depth = np.arange(L)
    names = list(dict.fromkeys(blocks))
    members = [np.flatnonzero(np.asarray(blocks) == b) for b in names]
    s0, s_low = int(np.argmin(np.abs(snrs))), int(np.argmin(snrs))
    means = np.empty((n_boot, L, S))
    fits = np.empty((n_boot, L, 2))
    trends = np.empty((n_boot, 2))
    block_stats = np.empty((n_boot, len(names), 4))
    for b in range(n_boot):
        ks = rng.integers(0, K, K)
        m = values[:, ks].mean(axis=(1, 3))
        means[b] = m
        for l in range(L):
            fits[b, l] = np.polyfit(snrs, m[l], 1)  # slope, intercept
        trends[b, 0] = scipy.stats.spearmanr(depth, fits[b, :, 0]).statistic
        trends[b, 1] = scipy.stats.spearmanr(depth, fits[b, :, 1]).statistic
        for g, idx in enumerate(members):
            block_stats[b, g] = (m[idx, s0].mean(), m[idx, s_low].mean(), fits[b, idx, 0].mean(), fits[b, idx, 1].mean())
    a = (1 - level) / 2
    q = lambda v: np.quantile(v, [a, 1 - a], axis=0)  # noqa: E731
    return q(means), q(fits), q(trends), q(block_stats)


def point_trends(values, snrs):
    """Spearman rho of slope and of intercept vs depth of the mean curves (no resampling)."""
    m = values.mean(axis=(1, 3))
    fit = np.array([np.polyfit(snrs, row, 1) for row in m])
    depth = np.arange(len(m))
    return (scipy.stats.spearmanr(depth, fit[:, 0]).statistic, scipy.stats.spearmanr(depth, fit[:, 1]).statistic)


def baseline_diffusion(cloud, t=0.5):
    D2 = scipy.spatial.distance.cdist(cloud, cloud, "sqeuclidean")
    iu = np.triu_indices(len(cloud), 1)
    eps = np.median(D2[iu])
    Kk = np.exp(-D2 / (2 * eps))
    d = Kk.sum(1)
    Ms = Kk / np.sqrt(np.outer(d, d))
    w, V = scipy.linalg.eigh(Ms)
    w, V = w[::-1], V[:, ::-1]
    psi = V / V[:, :1]
    return w[1:], psi[:, 1:] * np.abs(w[1:]) ** t


def full_centroids(noisy, layers, K, S):
    """The full-data centroids: per layer, the mean over utterances, (K, S, D) float64."""
    return {l["name"]: noisy[l["name"]].mean(axis=2).reshape(K, S, -1).astype(np.float64) for l in layers}


def replicate_centroids(noisy, layers, ks, w):
    """One replicate's centroids: slot j holds noise type ks[j], its utterances weighted by w[j] (U,)."""
    out = {}
    for l in layers:
        a = noisy[l["name"]]
        K, S, U = a.shape[:3]
        c = np.empty((K, S, a[0, 0, 0].size))
        for j, k in enumerate(ks):
            c[j] = np.matmul(w[j], a[k].reshape(S, U, -1))  # (U,) @ (S, U, D) -> (S, D)
        out[l["name"]] = c
    return out


def baseline_diffusion_all(cents, layers, snrs, K, S, t_intra=0.5, t_inter=5.0):
    """The three diffusion analyses of the sweep on one set of centroids, one scipy eigh per map:
    DC1 vs SNR per noise type and the distances between SNR levels of each layer's K x S map, one
    map per (layer, noise type) over its S centroids, and per SNR one inter-layer map over the
    first layer of each block (latent excluded) with the distances between the layers."""
    for l in layers:  # intra-layer: one map over the K x S centroids
        _, coords = baseline_diffusion(cents[l["name"]].reshape(K * S, -1), t_intra)
        dc1 = coords[:, 0].reshape(K, S)
        for k in range(K):
            scipy.stats.spearmanr(snrs, dc1[k])
            scipy.stats.linregress(snrs, dc1[k])
        levels = coords.reshape(K, S, -1).mean(axis=0)
        scipy.spatial.distance.cdist(levels, levels)
    for l in layers:  # one map per (layer, noise type) over its S centroids
        for k in range(K):
            _, coords = baseline_diffusion(cents[l["name"]][k], t_intra)
            scipy.stats.spearmanr(snrs, coords[:, 0])
            scipy.stats.linregress(snrs, coords[:, 0])
    firsts = [l["name"] for l in layers if l["index"] == 0 and l["block"] != "Latent"]
    for s in range(S):  # inter-layer: per SNR, the K centroids of the first layer of each block
        cloud = np.concatenate([cents[nm][:, s] for nm in firsts])
        _, coords = baseline_diffusion(cloud, t_inter)
        g = coords.reshape(len(firsts), K, -1).mean(axis=1)
        scipy.spatial.distance.cdist(g, g)


def baseline_geometry_bootstrap(noisy, layers, snrs, K, S, n_reps, t_intra=0.5, t_inter=5.0, seed=0):
    """The geometry bootstrap, replicate by replicate: draw K noise types with replacement and, per
    slot, the utterances with replacement (the "hierarchical" design), recompute the centroids,
    then every map and statistic as for the full data."""
    rng = np.random.default_rng(seed)
    U = next(iter(noisy.values())).shape[2]
    for _ in range(n_reps):
        ks = rng.integers(0, K, K)
        w = np.stack([np.bincount(rng.integers(0, U, U), minlength=U) for _ in range(K)]).astype(np.float32) / U
        baseline_diffusion_all(replicate_centroids(noisy, layers, ks, w), layers, snrs, K, S, t_intra, t_inter)


# ----------------------------------------------------------------------------- main

def _load():
    return round(os.getloadavg()[0], 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="K=6, U=10 instead of 18 x 50")
    p.add_argument("--baseline-layers", type=int, default=24,
                   help="layers of the baseline CKA loop (< 24: scaled linearly to 24, and said so)")
    p.add_argument("--n-boot", type=int, default=1000, help="replicates of the CKA bootstrap")
    p.add_argument("--n-boot-maps", type=int, default=None,
                   help="replicates of the geometry bootstrap (default: the sweep's, diffusion.n_boot)")
    p.add_argument("--baseline-map-reps", type=int, default=3,
                   help="geometry-bootstrap replicates the baseline runs (< --n-boot-maps: scaled linearly, and said so)")
    p.add_argument("--repeat", type=int, default=1, help="timed jaxprobe calls after the first (best is kept)")
    a = p.parse_args(argv)
    K, S, U = (6, 41, 10) if a.quick else (18, 41, 50)
    t0 = time.perf_counter()
    layers, noisy, clean, snrs, noises = make_data(K, S, U)
    gb = sum(v.nbytes for v in noisy.values()) / 2**30
    print(f"data: 24 layers x {K} noises x {S} SNRs x {U} utterances ({gb:.1f} GiB) generated in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    from jaxprobe.studies.sweep.config import SWEEP_DEFAULTS
    from jaxprobe.studies.sweep.analysis import CkaSettings, analyze_cka
    from jaxprobe.studies.sweep.diffusion import analyze_diffusion

    settings = CkaSettings(protocols=("utterance",), estimators=("biased", "debiased"), designs=("noise",),
                           n_boot=a.n_boot)
    dcfg = dict(SWEEP_DEFAULTS["diffusion"])
    n_maps = int(dcfg["n_boot"] if a.n_boot_maps is None else a.n_boot_maps)
    parts = {}

    def ours():
        u0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        r = analyze_cka(noisy, clean, layers, snrs, noises, settings)
        u1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        d = analyze_diffusion(noisy, layers, snrs, noises, dcfg, n_boot=n_maps)
        u2, t2 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        # kernel time and minor page faults per stage: fresh XLA buffers are faulted in
        parts.update(cka=t1 - t0, diffusion=t2 - t1,
                     cka_sys_s=u1.ru_stime - u0.ru_stime, diffusion_sys_s=u2.ru_stime - u1.ru_stime,
                     cka_minor_faults=u1.ru_minflt - u0.ru_minflt, diffusion_minor_faults=u2.ru_minflt - u1.ru_minflt)
        return r, d

    load = {"start": _load()}
    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    runs, run_parts = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        r, d = ours()
        runs.append(time.perf_counter() - t0)
        run_parts.append(dict(parts))
    t_ours = min(runs)
    ours_parts = run_parts[int(np.argmin(runs))]
    load["after_jaxprobe"] = _load()
    print(f"jaxprobe: complete analysis {t_ours:.2f} s (best of {a.repeat}: {', '.join(f'{x:.2f}' for x in runs)}; "
          f"CKA stage {ours_parts['cka']:.2f} s, diffusion stage {ours_parts['diffusion']:.2f} s "
          f"(kernel time {ours_parts['cka_sys_s']:.2f} / {ours_parts['diffusion_sys_s']:.2f} s); "
          f"first call incl. compilation {first:.2f} s)", flush=True)

    # baseline: CKA loop (all layers unless told otherwise), bootstrap loop, diffusion maps
    n_base = min(a.baseline_layers, len(layers))
    pick = list(range(len(layers))) if n_base == len(layers) else \
        sorted({round(i * (len(layers) - 1) / max(n_base - 1, 1)) for i in range(n_base)})
    names = [layers[i]["name"] for i in pick]
    t0 = time.perf_counter()
    vb = baseline_cka(noisy, clean, names, False)
    vd = baseline_cka(noisy, clean, names, True)
    t_cka_sub = time.perf_counter() - t0
    t_cka = t_cka_sub * len(layers) / len(names)
    load["after_baseline_cka"] = _load()
    print(f"baseline CKA loop: {t_cka_sub:.1f} s on {len(names)} layers"
          + ("" if len(names) == len(layers) else f", scaled to 24: {t_cka:.1f} s"), flush=True)
    ours_vals = r["arrays"]["utterance/biased"]
    ours_deb = r["arrays"]["utterance/debiased"]
    diff = max(float(np.max(np.abs(ours_vals[i] - vb[nm]))) for i, nm in zip(pick, names))
    diff_d = max(float(np.max(np.abs(ours_deb[i] - vd[nm]))) for i, nm in zip(pick, names))
    # the bootstrap runs on the baseline's own CKA values where it has them all, else on ours
    full = len(names) == len(layers)
    vals_b = np.stack([vb[nm] for nm in names]) if full else np.asarray(ours_vals, np.float64)
    vals_d = np.stack([vd[nm] for nm in names]) if full else np.asarray(ours_deb, np.float64)
    blocks = [l["block"] for l in layers]
    t0 = time.perf_counter()
    baseline_bootstrap(vals_b, snrs, blocks, a.n_boot)
    baseline_bootstrap(vals_d, snrs, blocks, a.n_boot)
    t_boot = time.perf_counter() - t0
    load["after_baseline_bootstrap"] = _load()
    base_rho = point_trends(vals_b, snrs)
    ours_rho = {t["statistic"]: t["estimate"] for t in r["trends"]
                if t["estimator"] == "biased" and t["statistic"].startswith("spearman")}
    trend_diff = max(abs(base_rho[0] - ours_rho["spearman_slope_depth"]),
                     abs(base_rho[1] - ours_rho["spearman_intercept_depth"]))
    t0 = time.perf_counter()
    baseline_diffusion_all(full_centroids(noisy, layers, K, S), layers, snrs, K, S, dcfg["t_intra"], dcfg["t_inter"])
    t_diff = time.perf_counter() - t0
    load["after_baseline_diffusion"] = _load()
    n_geo = min(a.baseline_map_reps, n_maps)
    t0 = time.perf_counter()
    baseline_geometry_bootstrap(noisy, layers, snrs, K, S, n_geo, dcfg["t_intra"], dcfg["t_inter"])
    t_geo_sub = time.perf_counter() - t0
    t_geo = t_geo_sub * n_maps / max(n_geo, 1)
    load["end"] = _load()
    t_base = t_cka + t_boot + t_diff + t_geo
    print(f"baseline: CKA loop {t_cka:.1f} s, bootstrap loop {t_boot:.1f} s, diffusion {t_diff:.1f} s, geometry "
          f"bootstrap {t_geo:.1f} s ({t_geo_sub:.1f} s for {n_geo} replicates"
          + (f", scaled to {n_maps}" if n_geo < n_maps else "") + f"); total {t_base:.1f} s", flush=True)
    print(f"ratio baseline/jaxprobe: {t_base / t_ours:.1f}x (target 50x) | max |diff| CKA biased {diff:.1e}, "
          f"debiased {diff_d:.1e}; depth-trend rho {trend_diff:.1e} | load average {load}")
    out = write_results("sweep", {
        "quick": a.quick, "shape": {"layers": 24, "noises": K, "snrs": S, "utterances": U},
        "activations_gib": gb, "n_boot": a.n_boot, "n_boot_maps": n_maps,
        "jaxprobe_s": t_ours, "jaxprobe_runs_s": runs, "jaxprobe_parts_s": ours_parts,
        "jaxprobe_first_call_s": first,
        "baseline_s": t_base,
        "baseline_parts_s": {"cka_loop": t_cka, "cka_loop_measured": t_cka_sub, "cka_loop_layers": len(names),
                             "cka_loop_extrapolated": not full, "bootstrap": t_boot, "diffusion": t_diff,
                             "geometry_bootstrap": t_geo, "geometry_bootstrap_measured": t_geo_sub,
                             "geometry_bootstrap_replicates": n_geo,
                             "geometry_bootstrap_extrapolated": n_geo < n_maps},
        "ratio": t_base / t_ours, "max_abs_diff_cka": max(diff, diff_d), "max_abs_diff_depth_trend_rho": trend_diff,
        "load_average_1min": load, "openblas_num_threads": BLAS_THREADS, "peak_rss_mb": peak_rss_mb(), "target_ratio": 50, "target_agreement": 1e-5,
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
