"""Diffusion-map benchmark: jaxprobe batched vs a pydiffmap loop and a numpy/scipy loop,
same data, same run; eigenvalue agreement reported next to every time.

    .venv/bin/python bench/bench_diffusion.py [--quick] [--large]

Workloads
---------
* batched: 24 clouds of 738 x 2048 (float32), the shape of the SE study
  (layers x (18 noises x 41 SNRs)); 10 components, alpha = 0.5, median epsilon.
  jaxprobe's default top-k solver ("auto" -> block Krylov) is the headline; LOBPCG
  and the full eigh are timed as well.
* topk: one cloud of 5000 x 256, top 10 components.
* large (--large): one cloud of 20000 x 256, top 10, tiled affinities (jaxprobe only).

Matched settings. pydiffmap's kernel is exp(-d^2 / (4 eps_pd)); jaxprobe's is
exp(-d^2 / (2 eps)), so pydiffmap gets ``epsilon = eps / 2`` with jaxprobe's median
epsilon for the same cloud, ``k = n`` neighbours (a dense kernel, self included, as
in jaxprobe), the same alpha and ``n_evecs = 10``. pydiffmap returns eigenvalues of
its generator ``L = (P - I) / eps_pd``; they are mapped back by ``1 + eps_pd * ev``.
Agreement is measured against a float64 numpy/scipy solve of the same clouds.

Writes bench/results/diffusion.json; prints ratios (baseline time / jaxprobe time).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, timeit, write_results  # noqa: E402

from jaxprobe.diffusion import diffusion_map  # noqa: E402

K = 10
ALPHA = 0.5


def study_clouds(n_clouds, noises, snrs, d, seed=0):
    """Per layer: centroids on a smooth low-dimensional SNR x noise manifold, embedded
    nonlinearly in d dimensions, plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    s = np.linspace(-1.0, 1.0, snrs)
    out = []
    for _ in range(n_clouds):
        ang = rng.uniform(0, 2 * np.pi, noises)
        z = np.stack([
            np.broadcast_to(s, (noises, snrs)),
            np.cos(ang)[:, None] * (1 - s) / 2,
            np.sin(ang)[:, None] * (1 - s) / 2,
            np.broadcast_to(rng.normal(size=(noises, 1)) * 0.2, (noises, snrs)),
        ], -1).reshape(-1, 4)
        W1, W2 = rng.normal(size=(4, 64)), rng.normal(size=(64, d)) / 8
        out.append(np.tanh(z @ W1) @ W2 + 0.05 * rng.normal(size=(noises * snrs, d)))
    return np.stack(out).astype(np.float32)


def manifold_cloud(n, d, seed=1):
    rng = np.random.default_rng(seed)
    Z = rng.uniform(size=(n, 3))
    X = np.tanh(Z @ rng.normal(size=(3, 64))) @ rng.normal(size=(64, d)) / 8
    return (X + 0.01 * rng.normal(size=(n, d))).astype(np.float32)


def scipy_dmap(X, k, alpha, dtype):
    """Plain numpy/scipy: dense kernel, median epsilon, explicit normalisation, top-(k+1)
    eigenpairs of the symmetric conjugate with scipy.linalg.eigh(subset_by_index)."""
    X = np.asarray(X, dtype)
    Xc = X - X.mean(0)
    sq = (Xc * Xc).sum(1)
    D2 = np.maximum(sq[:, None] + sq[None, :] - 2 * Xc @ Xc.T, 0)
    np.fill_diagonal(D2, 0)
    n = len(X)
    eps = np.median(D2[np.triu_indices(n, 1)])
    Kmat = np.exp(-D2 / (2 * eps))
    q = Kmat.sum(1)
    Ka = Kmat / np.outer(q**alpha, q**alpha)
    deg = Ka.sum(1)
    S = Ka / np.sqrt(np.outer(deg, deg))
    w, V = scipy.linalg.eigh(S, subset_by_index=[n - k - 1, n - 1])
    return w[::-1][1:], eps


def pydiffmap_dmap(X, k, alpha, eps):
    from pydiffmap import diffusion_map as pdm

    n = len(X)
    m = pdm.DiffusionMap.from_sklearn(n_evecs=k, k=n, epsilon=eps / 2.0, alpha=alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(np.asarray(X, np.float64))
    return 1.0 + (eps / 2.0) * np.asarray(m.evals)


def ours(X, **kw):
    r = diffusion_map(X, n_components=K, alpha=ALPHA, **kw)
    r.coords.block_until_ready()
    return r


def timed_first(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def wall_and_cpu(fn):
    """(result, wall s, process CPU s). CPU time (all threads) is the contention-robust
    measure on a shared machine; wall time is what a user waits."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


PAUSE_S = 0.25  # idle time before each timed run of the alternating comparison


def bench_batched(n_clouds, repeat):
    X = study_clouds(n_clouds, 18, 41, 2048)
    out = {"shape": list(X.shape), "n_components": K, "alpha": ALPHA, "epsilon": "median",
           "pause_between_runs_s": PAUSE_S}
    for solver in ("krylov", "lobpcg", "eigh"):
        res, first = timed_first(lambda: ours(X, solver=solver))
        steady = timeit(lambda: ours(X, solver=solver), repeat=repeat)
        out[f"jaxprobe_{solver}"] = {"first_call_s": first, "steady_s": steady, "compile_s_est": first - steady,
                                     "max_residual": float(np.max(np.asarray(res.residuals)))}
        out[f"_w_{solver}"] = np.asarray(res.eigenvalues, np.float64)
        eps = np.asarray(res.epsilon, np.float64)
    out["default_solver"] = ours(X).solver  # what solver="auto" picks here (the alternating runs use it)
    out["peak_rss_mb_after_jaxprobe"] = peak_rss_mb()

    w_np32, out["numpy_scipy_f32_loop_s"], out["numpy_scipy_f32_loop_cpu_s"] = wall_and_cpu(
        lambda: np.stack([scipy_dmap(x, K, ALPHA, np.float32)[0] for x in X]))
    t0 = time.perf_counter()
    ref = [scipy_dmap(x, K, ALPHA, np.float64) for x in X]
    out["numpy_scipy_f64_loop_s"] = time.perf_counter() - t0
    w_ref = np.stack([r[0] for r in ref])
    eps_ref = np.array([r[1] for r in ref])

    # jaxprobe (its default solver) and the pydiffmap loop alternate, so both see the
    # same machine load; best of `repeat` for each, wall and CPU. Each run starts after
    # a short pause: a BLAS thread pool keeps spinning for a while after its last call
    # (OpenBLAS under numpy/scipy, Eigen under XLA), and on this 2-core machine the
    # spinning threads of one run measurably slow the next (jaxprobe 0.28 -> 0.32-0.60 s
    # right after a numpy matmul, 0.28 s after a 0.05 s pause).
    runs = {"jaxprobe": [], "pydiffmap": []}
    for _ in range(repeat):
        time.sleep(PAUSE_S)
        _, wall, cpu = wall_and_cpu(lambda: ours(X))
        runs["jaxprobe"].append((wall, cpu))
        time.sleep(PAUSE_S)
        w_pd, wall, cpu = wall_and_cpu(lambda: np.stack([pydiffmap_dmap(x, K, ALPHA, e) for x, e in zip(X, eps)]))
        runs["pydiffmap"].append((wall, cpu))
    out["alternating_runs_wall_cpu_s"] = runs
    out["pydiffmap_loop_s"] = min(w for w, _ in runs["pydiffmap"])
    out["pydiffmap_loop_cpu_s"] = min(c for _, c in runs["pydiffmap"])
    out["jaxprobe_alternating_s"] = min(w for w, _ in runs["jaxprobe"])
    out["jaxprobe_alternating_cpu_s"] = min(c for _, c in runs["jaxprobe"])

    out["epsilon_max_rel_diff_vs_f64"] = float(np.max(np.abs(eps - eps_ref) / eps_ref))
    agree = {"pydiffmap": w_pd, "numpy_scipy_f32": w_np32}
    for solver in ("krylov", "lobpcg", "eigh"):
        agree[f"jaxprobe_{solver}"] = out.pop(f"_w_{solver}")
    out["eigenvalue_max_abs_diff_vs_f64"] = {k: float(np.max(np.abs(v - w_ref))) for k, v in agree.items()}
    out["eigenvalue_range_f64"] = [float(w_ref.min()), float(w_ref.max())]
    best = out["jaxprobe_krylov"]["steady_s"]
    out["ratio_pydiffmap_over_jaxprobe"] = out["pydiffmap_loop_s"] / out["jaxprobe_alternating_s"]
    out["ratio_pydiffmap_over_jaxprobe_cpu"] = out["pydiffmap_loop_cpu_s"] / out["jaxprobe_alternating_cpu_s"]
    out["ratio_pydiffmap_over_jaxprobe_steady"] = out["pydiffmap_loop_s"] / best
    out["ratio_numpy_f32_over_jaxprobe"] = out["numpy_scipy_f32_loop_s"] / best
    out["ratio_numpy_f32_over_jaxprobe_cpu"] = (
        out["numpy_scipy_f32_loop_cpu_s"] / out["jaxprobe_alternating_cpu_s"])
    out["ratio_numpy_f64_over_jaxprobe"] = out["numpy_scipy_f64_loop_s"] / best
    out["ratio_pydiffmap_over_jaxprobe_lobpcg"] = out["pydiffmap_loop_s"] / out["jaxprobe_lobpcg"]["steady_s"]
    out["ratio_pydiffmap_over_jaxprobe_eigh"] = out["pydiffmap_loop_s"] / out["jaxprobe_eigh"]["steady_s"]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def bench_topk(n, d, repeat):
    X = manifold_cloud(n, d)
    out = {"shape": [n, d], "n_components": K, "alpha": ALPHA}
    key = jax.random.key(0)
    w_ref, eps_ref = scipy_dmap(X, K, ALPHA, np.float64)
    # the tiled path estimates the median rule on a 2048-point subsample; to compare
    # solvers on the same operator it gets the exact median as a number, and the
    # subsample estimate is reported on its own
    sub = diffusion_map(X, n_components=K, alpha=ALPHA, key=key, block_size=1024)
    out["tiled_subsample_epsilon_rel_diff"] = abs(float(sub.epsilon) - eps_ref) / eps_ref
    eps = None
    names = {"dense_affinity": {}, "tiled_affinity": {"block_size": 1024},
             "dense_affinity_lobpcg": {"solver": "lobpcg"}}
    for name, kw in names.items():
        if name == "tiled_affinity":
            kw["epsilon"] = eps
        res, first = timed_first(lambda: ours(X, key=key, **kw))
        steady = timeit(lambda: ours(X, key=key, **kw), repeat=repeat)
        out[f"jaxprobe_{name}"] = {"solver": res.solver, "first_call_s": first, "steady_s": steady,
                                   "compile_s_est": first - steady,
                                   "max_residual": float(np.max(np.asarray(res.residuals))),
                                   "_w": np.asarray(res.eigenvalues, np.float64)}
        eps = float(res.epsilon)
    time.sleep(PAUSE_S)
    w_pd, out["pydiffmap_s"], out["pydiffmap_cpu_s"] = wall_and_cpu(lambda: pydiffmap_dmap(X, K, ALPHA, eps))
    time.sleep(PAUSE_S)
    _, wall, cpu = wall_and_cpu(lambda: ours(X, key=key))
    out["jaxprobe_dense_affinity"]["after_pydiffmap_s"] = wall
    out["jaxprobe_dense_affinity"]["after_pydiffmap_cpu_s"] = cpu
    out["eigenvalue_max_abs_diff_vs_f64"] = {"pydiffmap": float(np.max(np.abs(w_pd - w_ref)))}
    for name in names:
        out["eigenvalue_max_abs_diff_vs_f64"][f"jaxprobe_{name}"] = float(
            np.max(np.abs(out[f"jaxprobe_{name}"].pop("_w") - w_ref)))
    out["epsilon_rel_diff_vs_f64"] = abs(eps - eps_ref) / eps_ref
    out["eigenvalues_f64"] = w_ref.tolist()
    jd = out["jaxprobe_dense_affinity"]
    out["ratio_pydiffmap_over_jaxprobe"] = out["pydiffmap_s"] / min(jd["steady_s"], jd["after_pydiffmap_s"])
    out["ratio_pydiffmap_over_jaxprobe_cpu"] = out["pydiffmap_cpu_s"] / jd["after_pydiffmap_cpu_s"]
    out["ratio_pydiffmap_over_jaxprobe_tiled"] = out["pydiffmap_s"] / out["jaxprobe_tiled_affinity"]["steady_s"]
    out["ratio_pydiffmap_over_jaxprobe_lobpcg"] = out["pydiffmap_s"] / out["jaxprobe_dense_affinity_lobpcg"]["steady_s"]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def bench_large_subprocess(n, d):
    """Run the large case in a fresh process so its peak RSS is its own."""
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--large-worker", str(n), str(d)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def vm_hwm_mb():
    """Peak resident memory of this process image (VmHWM). Unlike ru_maxrss, which
    Linux carries over fork and exec from the parent, it starts afresh in a new process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return peak_rss_mb()


def bench_large(n, d):
    X = manifold_cloud(n, d, seed=2)
    rss0 = vm_hwm_mb()  # the process after imports and data
    res, first = timed_first(lambda: ours(X, key=jax.random.key(0), block_size=2048))
    steady = timeit(lambda: ours(X, key=jax.random.key(0), block_size=2048), repeat=1)
    return {"shape": [n, d], "n_components": K, "block_size": 2048, "solver": res.solver,
            "first_call_s": first, "steady_s": steady,
            "max_residual": float(np.max(np.asarray(res.residuals))),
            "eigenvalues": np.asarray(res.eigenvalues, np.float64).tolist(),
            "peak_rss_mb_before": rss0, "peak_rss_mb": vm_hwm_mb(),
            "dense_float32_affinity_would_need_mb": n * n * 4 / 2**20}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 clouds, n = 2000 top-k, one repeat")
    ap.add_argument("--large", action="store_true", help="also run n = 20000 x 256 (minutes)")
    ap.add_argument("--large-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.large_worker:
        import json

        print(json.dumps(bench_large(*args.large_worker), default=float))
        return
    repeat = 1 if args.quick else 3
    payload = {"quick": args.quick, "load_average_at_start": list(os.getloadavg())}
    print("batched: clouds of 738 x 2048 ...", flush=True)
    payload["batched"] = b = bench_batched(4 if args.quick else 24, repeat)
    print(f"  jaxprobe ({b['default_solver']}) {b['jaxprobe_alternating_s']:.3f} s alternating, "
          f"{b['jaxprobe_krylov']['steady_s']:.3f} s steady (first {b['jaxprobe_krylov']['first_call_s']:.2f} s), "
          f"lobpcg {b['jaxprobe_lobpcg']['steady_s']:.3f} s, "
          f"eigh {b['jaxprobe_eigh']['steady_s']:.3f} s; pydiffmap loop {b['pydiffmap_loop_s']:.2f} s; "
          f"numpy/scipy f32 loop {b['numpy_scipy_f32_loop_s']:.2f} s, f64 {b['numpy_scipy_f64_loop_s']:.2f} s")
    print(f"  ratios: pydiffmap/jaxprobe {b['ratio_pydiffmap_over_jaxprobe']:.1f}x wall "
          f"({b['ratio_pydiffmap_over_jaxprobe_cpu']:.1f}x CPU time, alternating runs), "
          f"numpy-f32/jaxprobe {b['ratio_numpy_f32_over_jaxprobe']:.1f}x, "
          f"numpy-f64/jaxprobe {b['ratio_numpy_f64_over_jaxprobe']:.1f}x")
    print(f"  eigenvalue |diff| vs float64: {b['eigenvalue_max_abs_diff_vs_f64']}", flush=True)
    n = 2000 if args.quick else 5000
    print(f"topk: {n} x 256, top {K} ...", flush=True)
    payload["topk"] = tk = bench_topk(n, 256, repeat)
    print(f"  jaxprobe {tk['jaxprobe_dense_affinity']['steady_s']:.2f} s (tiled {tk['jaxprobe_tiled_affinity']['steady_s']:.2f} s, "
          f"lobpcg {tk['jaxprobe_dense_affinity_lobpcg']['steady_s']:.2f} s); "
          f"pydiffmap {tk['pydiffmap_s']:.2f} s; ratio {tk['ratio_pydiffmap_over_jaxprobe']:.1f}x "
          f"({tk['ratio_pydiffmap_over_jaxprobe_cpu']:.1f}x CPU) "
          f"(tiled {tk['ratio_pydiffmap_over_jaxprobe_tiled']:.1f}x)")
    print(f"  eigenvalue |diff| vs float64: {tk['eigenvalue_max_abs_diff_vs_f64']}; tiled subsample-median "
          f"epsilon rel. diff {tk['tiled_subsample_epsilon_rel_diff']:.3f}", flush=True)
    if args.large:
        print("large: 20000 x 256, top 10, tiled ...", flush=True)
        payload["large"] = lg = bench_large_subprocess(20000, 256)
        print(f"  {lg['steady_s']:.1f} s steady (first {lg['first_call_s']:.1f} s), peak RSS {lg['peak_rss_mb']:.0f} MB "
              f"(a dense float32 affinity alone: {lg['dense_float32_affinity_would_need_mb']:.0f} MB)")
    payload["settings_note"] = (
        "pydiffmap: from_sklearn(k=n, epsilon=eps/2, alpha=0.5, n_evecs=10) with eps = jaxprobe's median epsilon "
        "(its kernel is exp(-d^2/(4 eps_pd))); eigenvalues mapped from its generator by 1 + eps_pd * ev. "
        "numpy/scipy: dense kernel, scipy.linalg.eigh(subset_by_index) on the symmetric conjugate."
    )
    payload["load_average_at_end"] = list(os.getloadavg())
    out = write_results("diffusion", payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
