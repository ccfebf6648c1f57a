"""CKA engine benchmark: bootstrap and per-utterance CKA vs user-style loops, and the
bootstrap engine's achieved FLOP/s against this machine's float32 matmul, in one run.

    .venv/bin/python bench/bench_cka.py [--quick]

Writes bench/results/cka.json and prints ratios (baseline time / jaxprobe time).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, timeit, write_results  # noqa: E402

import jaxprobe  # noqa: E402
from jaxprobe import bootstrap as jb  # noqa: E402


def numpy_linear_cka(X, Y):
    """A straightforward numpy linear CKA (centered Grams), as a user would write it."""
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    K, L = X @ X.T, Y @ Y.T
    return (K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum())


def bench_bootstrap(n, d, n_boot, rng, key, with_ckatorch=True):
    import torch
    from ckatorch import cka_base

    X = rng.standard_normal((n, d)).astype(np.float32)
    Y = (X @ rng.standard_normal((d, d)).astype(np.float32) / np.sqrt(d) + rng.standard_normal((n, d))).astype(np.float32)
    C = np.asarray(jaxprobe.resample_counts(key, n_boot, n))
    idx = [np.repeat(np.arange(n), c) for c in C]

    def ours():
        r = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=n_boot)
        r.replicates.block_until_ready()
        return r

    t0 = time.perf_counter()
    res = ours()
    first = time.perf_counter() - t0
    t_ours = timeit(ours, repeat=5)

    t0 = time.perf_counter()
    np_vals = np.array([numpy_linear_cka(X[i], Y[i]) for i in idx])
    t_np = time.perf_counter() - t0

    out = {
        "n": n, "d": d, "n_boot": n_boot,
        "jaxprobe_s": t_ours, "jaxprobe_first_call_s": first,
        "numpy_loop_s": t_np, "ratio_vs_numpy": t_np / t_ours,
        "max_abs_diff_vs_numpy": float(np.max(np.abs(np.asarray(res.replicates) - np_vals))),
    }
    if with_ckatorch:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        t0 = time.perf_counter()
        tv = np.array([float(cka_base(Xt[torch.from_numpy(i)], Yt[torch.from_numpy(i)])) for i in idx])
        t_ct = time.perf_counter() - t0
        out.update(ckatorch_loop_s=t_ct, ratio_vs_ckatorch=t_ct / t_ours,
                   max_abs_diff_vs_ckatorch=float(np.max(np.abs(np.asarray(res.replicates) - tv))))
    # useful FLOPs of the engine: two Grams + the (B, n) x (n, 5n) GEMM
    flops = 2 * (2.0 * n * n * d) + 2.0 * n_boot * n * 5 * n
    out["engine_gflops"] = flops / t_ours / 1e9
    return out


def bench_per_utterance(pairs, rng):
    C, F = 16, 128
    X = rng.standard_normal((pairs, C, F)).astype(np.float32)
    Y = (X + 0.5 * rng.standard_normal((pairs, C, F))).astype(np.float32)

    def ours():
        return jaxprobe.cka(X, Y).block_until_ready()

    t0 = time.perf_counter()
    v = ours()
    first = time.perf_counter() - t0
    t_ours = timeit(ours, repeat=5)
    t0 = time.perf_counter()
    ref = np.array([numpy_linear_cka(X[i], Y[i]) for i in range(pairs)])
    t_np = time.perf_counter() - t0
    return {
        "pairs": pairs, "shape": [C, F],
        "jaxprobe_s": t_ours, "jaxprobe_first_call_s": first,
        "numpy_loop_s": t_np, "ratio_vs_numpy": t_np / t_ours,
        "max_abs_diff": float(np.max(np.abs(np.asarray(v) - ref))),
    }


def machine_matmul_gflops(size=2048):
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    t = timeit(lambda: f(a, a).block_until_ready(), repeat=10)
    return 2.0 * size**3 / t / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    n_boot = 100 if a.quick else 1000
    pairs = 2000 if a.quick else 20000

    matmul = machine_matmul_gflops()
    print(f"machine float32 matmul (2048^2, XLA): {matmul:.1f} GFLOP/s")
    boots = []
    for n in (100, 400):
        r = bench_bootstrap(n, 2048, n_boot, rng, key)
        r["engine_fraction_of_matmul"] = r["engine_gflops"] / matmul
        boots.append(r)
        print(f"bootstrap n={n} d=2048 B={n_boot}: jaxprobe {r['jaxprobe_s']*1e3:.1f} ms | "
              f"ckatorch loop {r['ckatorch_loop_s']:.2f} s ({r['ratio_vs_ckatorch']:.0f}x) | "
              f"numpy loop {r['numpy_loop_s']:.2f} s ({r['ratio_vs_numpy']:.0f}x) | "
              f"engine {r['engine_gflops']:.0f} GFLOP/s = {100*r['engine_fraction_of_matmul']:.0f}% of matmul | "
              f"max |diff| vs ckatorch {r['max_abs_diff_vs_ckatorch']:.1e}")
    pu = bench_per_utterance(pairs, rng)
    print(f"per-utterance CKA, {pairs} pairs of (16,128): jaxprobe {pu['jaxprobe_s']*1e3:.1f} ms | "
          f"numpy loop {pu['numpy_loop_s']:.2f} s ({pu['ratio_vs_numpy']:.0f}x) | max |diff| {pu['max_abs_diff']:.1e}")
    out = write_results("cka", {
        "quick": a.quick,
        "matmul_gflops_float32": matmul,
        "bootstrap": boots,
        "per_utterance": pu,
        "peak_rss_mb": peak_rss_mb(),
        "targets": {"bootstrap_vs_ckatorch": 300, "per_utterance_vs_numpy": 20, "engine_fraction_of_matmul": 0.30},
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
