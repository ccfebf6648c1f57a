"""The diffusion maps' median bandwidth rule: the native selection (``jaxprobe.native.upper_median``)
vs the XLA bisection it replaces on the CPU (``kernels.affinity.epsilon_median``), same distances,
same run, interleaved; the two results are compared bit for bit.

Data: the squared distances of 738 centroids of 2048 features (the SE paper's 18 noises x 41 SNRs,
built as in bench_seprobe.py: SNR-scaled noise with a per-noise pattern, averaged over 50
utterances), and of 5000 random points of 64 features (12.5 M pairs).

    PYTHONPATH=. .venv/bin/python bench/bench_median.py [--calls 30]

writes bench/results/median.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from jaxprobe import native  # noqa: E402
from jaxprobe_kernels.affinity import epsilon_median, symmetric_sq_distances  # noqa: E402


def centroids(rng, S=41, K=18, N=50, C=16, F=128):
    snr = np.linspace(-10, 30, S).astype(np.float32)
    a = (10 ** (-snr / 20)).astype(np.float32)
    pattern = rng.standard_normal((1, C, F), dtype=np.float32) + 0.5 * rng.standard_normal((K, C, F), dtype=np.float32)
    noise_mean = 0.6 * rng.standard_normal((S, K, C, F), dtype=np.float32) / np.sqrt(N)
    clean = rng.standard_normal((C, F), dtype=np.float32) / np.sqrt(N)
    return (clean + a[:, None, None, None] * (0.8 * pattern[None] + noise_mean)).reshape(S * K, C * F)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=30, help="timed calls of each (best and median kept)")
    args = ap.parse_args()
    native.library(required=True)
    rng = np.random.default_rng(0)
    clouds = {"738x2048": centroids(rng), "5000x64": rng.standard_normal((5000, 64), dtype=np.float32)}
    fns = {"native": jax.jit(native.upper_median), "xla_bisection": jax.jit(epsilon_median)}
    out = {}
    for name, X in clouds.items():
        D2 = jax.block_until_ready(jax.jit(symmetric_sq_distances)(X))
        vals = {k: np.asarray(f(D2)) for k, f in fns.items()}  # compiled and checked before timing
        same = vals["native"].view(np.int32) == vals["xla_bisection"].view(np.int32)
        t = {k: [] for k in fns}
        for _ in range(args.calls):
            for k, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(D2))
                t[k].append(time.perf_counter() - t0)
        row = {k: {"best_ms": min(v) * 1e3, "median_ms": float(np.median(v)) * 1e3} for k, v in t.items()}
        row["ratio_best"] = row["xla_bisection"]["best_ms"] / row["native"]["best_ms"]
        row["bit_identical"] = bool(same)
        row["median"] = float(vals["native"])
        out[name] = row
        print(f"{name}: native {row['native']['best_ms']:.3f} ms (median {row['native']['median_ms']:.3f}), "
              f"XLA bisection {row['xla_bisection']['best_ms']:.3f} ms (median {row['xla_bisection']['median_ms']:.3f}): "
              f"{row['ratio_best']:.1f}x; bit-identical {same}")
    print("wrote", write_results("median", {"command": "bench/bench_median.py", "calls": args.calls, "clouds": out}))


if __name__ == "__main__":
    main()
