"""The sweep analysis gives bit-identical results on 1, 2, 4 and all host devices (and with
no mesh): every per-item CKA piece and the bootstrap means run the same compiled program
whatever the device split. Run in a subprocess, since the host device count is fixed when
JAX starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os
import numpy as np, jax
import jaxprobe.studies.sweep.analysis as SA
from jaxprobe.distributed import make_mesh
from jaxprobe.bootstrap import bootstrap_mean

assert jax.device_count() == 4, jax.devices()
K, S, U, C, F, L = 3, 5, 4, 8, 16, 3
per_cell = U * C * F * 4
SA._CELL_BYTES = 2 * per_cell  # 2 cells per map step: 15 cells in pieces of 16, 8 + 8, 4 + 4 + 4 + 4
rng = np.random.default_rng(0)
layers = [{"name": f"l{i}", "block": f"B{i // 2}"} for i in range(L)]
noisy, clean = {}, {}
for l in layers:
    base = rng.standard_normal((U, C, F)).astype(np.float32)
    clean[l["name"]] = base
    scale = np.linspace(0.2, 2.0, S, dtype=np.float32)[None, :, None, None, None]
    noisy[l["name"]] = base[None, None] + rng.standard_normal((K, S, U, C, F)).astype(np.float32) * scale
settings = SA.CkaSettings(n_boot=64, designs=("noise", "hierarchical"))

def numbers(r):
    vals = [v for sec in ("cka", "regression", "trends") for rec in r[sec] for v in rec.values()
            if isinstance(v, float)]
    vals += [float(x) for k in sorted(r["arrays"]) for x in np.asarray(r["arrays"][k]).ravel()]
    return vals

out = {}
for dev in ("none", "1", "2", "4", "all"):
    mesh = None if dev == "none" else make_mesh("all" if dev == "all" else int(dev))
    r = SA.analyze_cka(noisy, clean, layers, np.linspace(-10, 30, S), ["a", "b", "c"], settings, mesh=mesh)
    vals = np.asarray(numbers(r), np.float64)
    groups = np.repeat(np.arange(4), 5)
    v = rng.standard_normal((7, 20)).astype(np.float32) if dev == "none" else np.asarray(out["values"])
    if dev == "none":
        out["values"] = v.tolist()
    b = bootstrap_mean(v, key=jax.random.key(3), n_boot=50, groups=groups, hierarchical=True, mesh=mesh)
    out[dev] = {"analysis": vals.tobytes().hex(), "n": int(vals.size),
                "boot": np.asarray(b.replicates, np.float64).tobytes().hex()}
print("RESULT" + json.dumps(out))
"""


def test_sweep_analysis_bit_identical_on_1_2_4_all_devices(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    ref = res["none"]
    assert ref["n"] > 500
    for dev in ("1", "2", "4", "all"):
        assert res[dev]["analysis"] == ref["analysis"], f"--devices {dev} differs from one device"
        assert res[dev]["boot"] == ref["boot"], f"bootstrap_mean on {dev} devices differs from one device"
