"""Scaling beyond one device and beyond memory -> bench/results/scale.json.

1. Devices: the sweep analysis' heavy calls on 1, 2 and 4 host devices, each device count
   in its own subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=N must be set
   before jax is imported): the paired bootstrap of per-item CKA means (bootstrap_mean,
   hierarchical noise x item design, paper shape 24 layers x 41 SNRs x 18 noises x 50 items),
   bootstrap_cka (n = 400 Grams), and per-item CKA of one layer's (K, S, U, C, F) batch.
   Compile time (first call) and steady state (best of 3) are separate; every result is
   checked against the 1-device run. Scaling efficiency = t_1 / (N t_N).
   Caveat: the N host devices share this machine's cores (2 here), and XLA already uses
   both cores for one device's GEMMs, so efficiencies near 1/N are expected on CPU; the
   numbers show the overhead of the sharded path, not a speed-up.
2. Memory: peak resident memory (ru_maxrss of a fresh subprocess) of linear CKA between
   two layers of one activation store computed in memory (store.read + jaxprobe.cka) and
   out-of-core (jaxprobe.streaming.streaming_cka, feature-chunk Grams), same store.

Usage: python bench/bench_scale.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- workers

def _worker_devices(out_npz: str, quick: bool) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxprobe
    from bench._common import timeit

    mesh = None if len(jax.devices()) == 1 else "all"
    rng = np.random.default_rng(0)
    L, S, K, U = (6, 41, 18, 20) if quick else (24, 41, 18, 50)
    n_boot = 500 if quick else 2000
    items = rng.uniform(0.3, 1.0, size=(L, S, K * U)).astype(np.float32)
    groups = np.repeat(np.arange(K), U)
    n = 400
    X = rng.normal(size=(n, 256)).astype(np.float32)
    Y = (X[:, :64] + rng.normal(size=(n, 64))).astype(np.float32)
    Uc = 4 if quick else 10
    noisy = rng.normal(size=(K, S, Uc, 16, 128)).astype(np.float32)
    clean = rng.normal(size=(Uc, 16, 128)).astype(np.float32)
    key = jax.random.key(0)

    calls = {
        "bootstrap_mean_sweep": lambda: jaxprobe.bootstrap_mean(
            items, key=key, n_boot=n_boot, groups=groups, hierarchical=True, mesh=mesh).replicates,
        "bootstrap_cka_n400": lambda: jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=n_boot, mesh=mesh).replicates,
        "per_item_cka": lambda: jaxprobe.cka(noisy, clean, mesh=mesh),
    }
    res, arrays = {}, {}
    for name, f in calls.items():
        t0 = time.perf_counter()
        out = jax.block_until_ready(f())
        compile_s = time.perf_counter() - t0
        steady = timeit(lambda: jax.block_until_ready(f()), repeat=3)
        arrays[name] = np.asarray(out)
        res[name] = {"first_call_s": compile_s, "steady_s": steady, "shape": list(out.shape)}
    res["shapes"] = {"layers": L, "snrs": S, "noises": K, "items_per_noise": U, "n_boot": n_boot,
                     "bootstrap_cka_n": n, "per_item_pairs": K * S * Uc, "per_item_cf": [16, 128]}
    np.savez(out_npz, **arrays)
    return res


def _worker_memory(store_path: str, mode: str) -> dict:
    import resource

    import jax
    import jax.numpy as jnp

    from torch_bridge.store import open_store

    jax.jit(lambda a: a + 1)(jnp.ones(4)).block_until_ready()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = open_store(store_path)
    t0 = time.perf_counter()
    if mode == "in_memory":
        import jaxprobe

        X = store.read("a").reshape(store.n_items, -1)
        Y = store.read("b").reshape(store.n_items, -1)
        value = float(jaxprobe.cka(X, Y))
    else:
        from jaxprobe.streaming import streaming_cka

        value = streaming_cka(store, "a", "b", method="gram")
    wall = time.perf_counter() - t0
    return {"cka": value, "wall_s": wall, "baseline_rss_mb": rss0 / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _spawn(args: list[str], env_extra: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **env_extra)
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])


def _make_store(path: Path, n_items: int, shape: tuple) -> float:
    from torch_bridge.store import Plan, StoreWriter

    items = [SimpleNamespace(condition={"snr": float(i % 41)}, utterance=f"u{i // 41}", window=0) for i in range(n_items)]
    w = StoreWriter(path, plan=Plan.from_items(items), layers=[{"name": "a"}, {"name": "b"}], chunk_size=50, durable=False)
    rng = np.random.default_rng(1)
    d = int(np.prod(shape))
    Wa = rng.normal(size=(8, d)).astype(np.float32)
    Wb = rng.normal(size=(8, d)).astype(np.float32)
    for k in range(w.n_chunks):
        r = w.chunk_items(k)
        Z = rng.normal(size=(len(r), 8)).astype(np.float32)
        Zb = (Z + 0.7 * rng.normal(size=Z.shape)).astype(np.float32)
        w.write_chunk(k, {"a": (Z @ Wa).reshape((-1,) + shape), "b": (Zb @ Wb).reshape((-1,) + shape)})
    return sum(f.stat().st_size for f in (path / "chunks").rglob("*.npy")) / 2**20


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", choices=["devices", "memory"])
    ap.add_argument("--arg", nargs="*", default=[])
    a = ap.parse_args()
    if a.worker == "devices":
        print("RESULT " + json.dumps(_worker_devices(a.arg[0], a.quick)))
        return
    if a.worker == "memory":
        print("RESULT " + json.dumps(_worker_memory(*a.arg)))
        return

    out = {"quick": a.quick, "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        runs, arrays = {}, {}
        for nd in (1, 2, 4):
            npz = str(Path(tmp) / f"d{nd}.npz")
            extra = ["--quick"] if a.quick else []
            runs[nd] = _spawn(["--worker", "devices", "--arg", npz, *extra],
                              {"XLA_FLAGS": f"--xla_force_host_platform_device_count={nd}"})
            arrays[nd] = dict(np.load(npz))
            print(f"{nd} device(s): " + ", ".join(f"{k} {v['steady_s']:.3f}s" for k, v in runs[nd].items() if k != "shapes"), flush=True)
        scaling = {}
        for name in ("bootstrap_mean_sweep", "bootstrap_cka_n400", "per_item_cka"):
            t1 = runs[1][name]["steady_s"]
            scaling[name] = {
                str(nd): {
                    "first_call_s": runs[nd][name]["first_call_s"],
                    "steady_s": runs[nd][name]["steady_s"],
                    "speedup_vs_1": t1 / runs[nd][name]["steady_s"],
                    "efficiency": t1 / (nd * runs[nd][name]["steady_s"]),
                    "max_abs_diff_vs_1_device": float(np.max(np.abs(arrays[nd][name] - arrays[1][name]))),
                }
                for nd in (1, 2, 4)
            }
        out["devices"] = {"shapes": runs[1]["shapes"], "calls": scaling,
                          "caveat": "host devices share the machine's 2 cores (XLA uses both for one device's GEMMs); "
                                    "efficiency = t_1 / (N t_N); CPU host devices show the sharded path's overhead, not a speed-up"}

        n_items, shape = (600, (32, 1000)) if a.quick else (1600, (64, 1000))
        size_mb = _make_store(Path(tmp) / "store", n_items, shape)
        mem = {m: _spawn(["--worker", "memory", "--arg", str(Path(tmp) / "store"), m], {}) for m in ("in_memory", "streaming")}
        out["memory"] = {
            "store": {"items": n_items, "item_shape": list(shape), "layers": 2, "size_mb": size_mb},
            **mem,
            "peak_rss_ratio_streaming_over_in_memory": mem["streaming"]["peak_rss_mb"] / mem["in_memory"]["peak_rss_mb"],
            "growth_ratio_streaming_over_in_memory": (mem["streaming"]["peak_rss_mb"] - mem["streaming"]["baseline_rss_mb"])
            / (mem["in_memory"]["peak_rss_mb"] - mem["in_memory"]["baseline_rss_mb"]),
            "cka_abs_diff": abs(mem["streaming"]["cka"] - mem["in_memory"]["cka"]),
            "note": "ru_maxrss counts resident file-backed pages of the memory-mapped store too",
        }
        print(json.dumps(out["memory"], indent=1))
    out["load_average_end"] = os.getloadavg()
    path = write_results("scale", out)
    print("wrote", path)


if __name__ == "__main__":
    main()
