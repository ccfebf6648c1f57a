"""The SNR-sweep analysis at the paper's shape: jaxprobe vs a straightforward numpy/scipy
implementation of the same steps, in one run.

Shape: 24 MUSE layers ((16,128) x 12, (32,64) x 8, (48,32) x 4) x 41 SNRs x 18 noise types x
50 utterances of pooled (C, F) activations (synthetic, with an SNR-dependent noise term).
Steps: per-utterance CKA (biased and debiased) for every cell, 1000-replicate bootstrap
across noise types of the (layer, SNR) means, CKA-vs-SNR fits inside every replicate, and
intra-layer diffusion maps (one per layer over its 18 x 41 centroids).

The baseline is a per-call CKA loop, a Python-loop bootstrap and per-layer scipy eigh
diffusion maps. Its CKA loop is timed on `--baseline-layers` layers (default 3, one of each
shape) and scaled to 24 (stated in the output); its agreement with jaxprobe is checked on
those layers.

    .venv/bin/python bench/bench_sweep.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write_results  # noqa: E402

SHAPES = [(16, 128)] * 8 + [(32, 64)] * 4 + [(48, 32)] * 4 + [(32, 64)] * 4 + [(16, 128)] * 4
BLOCKS = ["Enc1"] * 4 + ["Enc2"] * 4 + ["Latent"] * 4 + ["Dec2"] * 4 + ["Dec1"] * 4 + ["Refine"] * 4
# order the shapes as MUSE's blocks: Enc1 (16,128), Enc2 (32,64), Latent (48,32), Dec2 (32,64), Dec1 (16,128), Refine (16,128)
SHAPES = [(16, 128)] * 4 + [(32, 64)] * 4 + [(48, 32)] * 4 + [(32, 64)] * 4 + [(16, 128)] * 8


def make_data(K, S, U, seed=0):
    rng = np.random.default_rng(seed)
    snrs = np.linspace(-10, 30, S)
    layers, noisy, clean = [], {}, {}
    for i, ((C, F), block) in enumerate(zip(SHAPES, BLOCKS)):
        name = f"{block}.{i % 4}"
        layers.append({"name": name, "block": block, "index": i % 4, "shape": [C, F], "skip": None})
        cl = rng.standard_normal((U, C, F), dtype=np.float32)
        w = (0.3 + 0.1 * (i // 4)) / (1 + np.exp(snrs / 8.0)).astype(np.float32)
        nz = rng.standard_normal((K, S, U, C, F), dtype=np.float32)
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


def baseline_bootstrap(values, snrs, n_boot, seed=0):
    """values (L, K, S, U): resample noise types; mean; fit a line per layer per replicate."""
    rng = np.random.default_rng(seed)
    L, K, S, U = values.shape
    slopes = np.empty((n_boot, L))
    means = np.empty((n_boot, L, S))
    for b in range(n_boot):
        ks = rng.integers(0, K, K)
        m = values[:, ks].mean(axis=(1, 3))
        means[b] = m
        for l in range(L):
            slopes[b, l] = np.polyfit(snrs, m[l], 1)[0]
    return np.quantile(means, [0.025, 0.975], axis=0), np.quantile(slopes, [0.025, 0.975], axis=0)


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


# ----------------------------------------------------------------------------- main

def main(argv=None):
    import scipy.spatial  # noqa: F401

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="K=6, U=10 instead of 18 x 50")
    p.add_argument("--baseline-layers", type=int, default=3)
    p.add_argument("--n-boot", type=int, default=1000)
    a = p.parse_args(argv)
    K, S, U = (6, 41, 10) if a.quick else (18, 41, 50)
    t0 = time.perf_counter()
    layers, noisy, clean, snrs, noises = make_data(K, S, U)
    print(f"data: 24 layers x {K} noises x {S} SNRs x {U} utterances generated in {time.perf_counter() - t0:.1f} s")

    import jax

    from jaxprobe.config import SWEEP_DEFAULTS
    from jaxprobe.studies.sweep_analysis import CkaSettings, analyze_cka
    from jaxprobe.studies.sweep_diffusion import analyze_diffusion

    settings = CkaSettings(protocols=("utterance",), estimators=("biased", "debiased"), designs=("noise",),
                           n_boot=a.n_boot)
    dcfg = dict(SWEEP_DEFAULTS["diffusion"])

    def ours():
        r = analyze_cka(noisy, clean, layers, snrs, noises, settings)
        d = analyze_diffusion(noisy, layers, snrs, noises, dcfg, n_boot=a.n_boot)
        return r, d

    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    r, d = ours()
    t_ours = time.perf_counter() - t0
    print(f"jaxprobe: complete analysis {t_ours:.2f} s (first call incl. compilation {first:.2f} s)")

    # baseline on a subset of layers for the CKA loop, all layers for the rest
    pick = [0, 4, 8][: a.baseline_layers]
    names = [layers[i]["name"] for i in pick]
    t0 = time.perf_counter()
    vb = baseline_cka(noisy, clean, names, False)
    vd = baseline_cka(noisy, clean, names, True)
    t_cka_sub = time.perf_counter() - t0
    t_cka = t_cka_sub * len(layers) / len(names)
    ours_vals = r["arrays"]["utterance/biased"]
    ours_deb = r["arrays"]["utterance/debiased"]
    diff = max(float(np.max(np.abs(ours_vals[i] - vb[nm]))) for i, nm in zip(pick, names))
    diff_d = max(float(np.max(np.abs(ours_deb[i] - vd[nm]))) for i, nm in zip(pick, names))
    all_vals = np.asarray(ours_vals, np.float64)  # (L, K, S, U); the baseline bootstrap runs on these values
    t0 = time.perf_counter()
    baseline_bootstrap(all_vals, snrs, a.n_boot)
    baseline_bootstrap(np.asarray(ours_deb, np.float64), snrs, a.n_boot)
    t_boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    eig_diff = 0.0
    for i, l in enumerate(layers):
        cent = noisy[l["name"]].mean(axis=2).reshape(K * S, -1).astype(np.float64)
        w, _ = baseline_diffusion(cent)
    t_diff = time.perf_counter() - t0
    t_base = t_cka + t_boot + t_diff
    print(f"baseline: CKA loop {t_cka:.1f} s (measured {t_cka_sub:.1f} s on {len(names)} layers, scaled to 24), "
          f"bootstrap loop {t_boot:.1f} s, diffusion {t_diff:.1f} s; total {t_base:.1f} s")
    print(f"ratio baseline/jaxprobe: {t_base / t_ours:.1f}x | max |diff| CKA biased {diff:.1e}, debiased {diff_d:.1e}")
    out = write_results("sweep", {
        "quick": a.quick, "shape": {"layers": 24, "noises": K, "snrs": S, "utterances": U},
        "n_boot": a.n_boot,
        "jaxprobe_s": t_ours, "jaxprobe_first_call_s": first,
        "baseline_s": t_base, "baseline_parts_s": {"cka_loop_scaled": t_cka, "cka_loop_measured": t_cka_sub,
                                                   "cka_loop_layers": len(names), "bootstrap": t_boot, "diffusion": t_diff},
        "ratio": t_base / t_ours, "max_abs_diff_cka": max(diff, diff_d),
        "peak_rss_mb": peak_rss_mb(), "target_ratio": 50, "target_agreement": 1e-5,
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
