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
3. Probe training (data-parallel, train_probes(mesh=...)) on 1, 2 and 4 host devices, each in
   its own subprocess: 8 layers of width 256 at rates 1, 1, 2, 2, 4, 4, 8, 8, 128 blocks of 8
   mel frames per step (bench_probe.py's workload). Throughput = mel frames per second of the
   optimiser steps alone (compiled, data already placed; best of 5 runs of 25 steps); "layer
   frames" multiply by the 8 layers. Parameters after the timed steps are checked against the
   1-device run. The same caveat as in 1. applies.

Usage: python bench/bench_scale.py [--quick] [--parts devices,memory,probe]
   (a subset of parts updates only those sections of an existing scale.json)
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
from bench._common import RESULTS, write_results  # noqa: E402

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


PROBE_RATES = (1, 1, 2, 2, 4, 4, 8, 8)


def _worker_probe(out_npz: str, quick: bool) -> dict:
    import jax
    import optax

    from bench._common import timeit
    from jaxprobe.distributed import as_mesh
    from jaxprobe.probe import ProbeConfig, TrainConfig, probe_frames
    from jaxprobe.probe.train import Trainer

    nd = len(jax.devices())
    mesh = None if nd == 1 else as_mesh("all")
    rng = np.random.default_rng(0)
    n_blocks, hidden, block = (500 if quick else 2000), 256, max(PROBE_RATES)
    batch_blocks, steps = 128, (10 if quick else 25)
    names = [f"layer{i}" for i in range(len(PROBE_RATES))]
    T = n_blocks * block
    mel = rng.standard_normal((T, 80)).astype(np.float32)
    acts = {n: [rng.standard_normal((T // r, hidden)).astype(np.float32)] for n, r in zip(names, PROBE_RATES)}
    data = probe_frames(acts, [mel], dict(zip(names, PROBE_RATES)))
    cfg = TrainConfig(steps=10 * steps, batch_blocks=batch_blocks, eval_every=steps)
    tx = optax.adam(1e-3)
    t0 = time.perf_counter()
    tr = Trainer(data, None, cfg, ProbeConfig(), tx, jax.random.key(0), mesh)  # places (replicates) the frames
    state = tr.init_state()
    place_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(tr.run(state, steps))
    first = time.perf_counter() - t0
    steady = timeit(lambda: jax.block_until_ready(tr.run(state, steps)), repeat=5)
    np.savez(out_npz, np.asarray(out["last"]), *[np.asarray(a) for a in jax.tree.leaves(out["params"])])
    frames = steps * batch_blocks * block
    return {"devices": nd, "place_and_init_s": place_s, "first_call_s": first, "steady_s": steady,
            "mel_frames_per_s": frames / steady, "layer_frames_per_s": frames * len(names) / steady,
            "shapes": {"layers": len(names), "rates": list(PROBE_RATES), "hidden": hidden, "n_blocks": n_blocks,
                       "block": block, "batch_blocks": batch_blocks, "steps_timed": steps}}


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


# ----------------------------------------------------------------------------- parts

CAVEAT = ("host devices share the machine's 2 cores (XLA uses both for one device's GEMMs); "
          "efficiency = t_1 / (N t_N); CPU host devices show the sharded path's overhead, not a speed-up")


def _bench_devices(tmp: Path, quick: bool) -> dict:
    runs, arrays = {}, {}
    for nd in (1, 2, 4):
        npz = str(tmp / f"d{nd}.npz")
        extra = ["--quick"] if quick else []
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
    return {"shapes": runs[1]["shapes"], "calls": scaling, "caveat": CAVEAT}


def _bench_memory(tmp: Path, quick: bool) -> dict:
    n_items, shape = (600, (32, 1000)) if quick else (1600, (64, 1000))
    size_mb = _make_store(tmp / "store", n_items, shape)
    mem = {m: _spawn(["--worker", "memory", "--arg", str(tmp / "store"), m], {}) for m in ("in_memory", "streaming")}
    return {
        "store": {"items": n_items, "item_shape": list(shape), "layers": 2, "size_mb": size_mb},
        **mem,
        "peak_rss_ratio_streaming_over_in_memory": mem["streaming"]["peak_rss_mb"] / mem["in_memory"]["peak_rss_mb"],
        "growth_ratio_streaming_over_in_memory": (mem["streaming"]["peak_rss_mb"] - mem["streaming"]["baseline_rss_mb"])
        / (mem["in_memory"]["peak_rss_mb"] - mem["in_memory"]["baseline_rss_mb"]),
        "cka_abs_diff": abs(mem["streaming"]["cka"] - mem["in_memory"]["cka"]),
        "note": "ru_maxrss counts resident file-backed pages of the memory-mapped store too",
    }


def _bench_probe(tmp: Path, quick: bool) -> dict:
    out = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick,
           "load_average_start": os.getloadavg()}
    runs, params = {}, {}
    for nd in (1, 2, 4):
        npz = str(tmp / f"p{nd}.npz")
        runs[nd] = _spawn(["--worker", "probe", "--arg", npz, *(["--quick"] if quick else [])],
                          {"XLA_FLAGS": f"--xla_force_host_platform_device_count={nd}"})
        params[nd] = list(np.load(npz).values())
        print(f"probe training, {nd} device(s): {runs[nd]['mel_frames_per_s']:,.0f} mel frames/s", flush=True)
    f1 = runs[1]["mel_frames_per_s"]
    out["shapes"] = runs[1]["shapes"]
    out["scaling"] = {
        str(nd): {k: runs[nd][k] for k in ("place_and_init_s", "first_call_s", "steady_s", "mel_frames_per_s",
                                           "layer_frames_per_s")}
        | {"speedup_vs_1": runs[nd]["mel_frames_per_s"] / f1,
           "efficiency": runs[nd]["mel_frames_per_s"] / (nd * f1),
           "last_step_l1_max_rel_diff_vs_1_device": float(np.max(np.abs(params[nd][0] / params[1][0] - 1))),
           "max_abs_param_diff_vs_1_device": max(float(np.max(np.abs(a - b))) for a, b in zip(params[nd][1:], params[1][1:]))}
        for nd in (1, 2, 4)
    }
    out["caveat"] = ("host devices share the machine's 2 cores, so no more than 2x over one device is possible "
                     "(efficiency = t_1 / (N t_N) <= 2 / N); a speed-up with 2 or 4 host devices means one device's "
                     "XLA program leaves a core idle at this batch size, not that devices add compute; other users' "
                     "load shows in load_average_*; throughput = mel frames of the timed optimiser steps per second "
                     "(x 8 layers = layer frames)")
    out["note"] = ("random (signal-free) data: many gradient entries are near 0, where Adam's first steps move a "
                   "parameter by about +-lr whatever the gradient's size, so float summation-order differences of "
                   "the psum show in the parameters up to ~lr; the per-layer losses agree to float32 round-off")
    out["load_average_end"] = os.getloadavg()
    return out


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", choices=["devices", "memory", "probe"])
    ap.add_argument("--parts", default="devices,memory,probe",
                    help="comma-separated subset of devices, memory, probe; a subset updates an existing scale.json")
    ap.add_argument("--arg", nargs="*", default=[])
    a = ap.parse_args()
    if a.worker == "devices":
        print("RESULT " + json.dumps(_worker_devices(a.arg[0], a.quick)))
        return
    if a.worker == "memory":
        print("RESULT " + json.dumps(_worker_memory(*a.arg)))
        return
    if a.worker == "probe":
        print("RESULT " + json.dumps(_worker_probe(a.arg[0], a.quick)))
        return

    parts = set(a.parts.split(","))
    if not parts or parts - {"devices", "memory", "probe"}:
        ap.error(f"--parts takes a comma-separated subset of devices, memory, probe; got {a.parts!r}")
    out = {}
    previous = RESULTS / "scale.json"
    if parts != {"devices", "memory", "probe"} and previous.exists():  # keep the sections not re-run
        out = {k: v for k, v in json.loads(previous.read_text()).items() if k != "machine"}
    with tempfile.TemporaryDirectory() as tmp:
        if "devices" in parts or "memory" in parts:
            out.update(quick=a.quick, load_average_start=os.getloadavg())
            out["time_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if "devices" in parts:
                out["devices"] = _bench_devices(Path(tmp), a.quick)
            if "memory" in parts:
                out["memory"] = _bench_memory(Path(tmp), a.quick)
                print(json.dumps(out["memory"], indent=1))
            out["load_average_end"] = os.getloadavg()
        if "probe" in parts:
            out["probe_training"] = _bench_probe(Path(tmp), a.quick)
            print(json.dumps(out["probe_training"]["scaling"], indent=1))
    path = write_results("scale", out)
    print("wrote", path)


if __name__ == "__main__":
    main()
