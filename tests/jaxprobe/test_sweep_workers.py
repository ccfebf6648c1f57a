"""The sweep's parallel dump (model.workers): the store it writes equals a one-worker dump's,
and the automatic worker count keeps to the cores the load leaves idle."""
from __future__ import annotations

import numpy as np
import pytest

from jaxprobe.studies._common import auto_workers
from jaxprobe.studies.sweep.config import ConfigError, load_sweep_config
from tests.conftest import SHARED

GTCRN_CKPT = SHARED / "gtcrn" / "model_trained_on_vctk.tar"


@pytest.mark.parametrize("cpus, load, want", [
    (2, 0.0, 2), (2, 0.6, 2), (2, 1.4, 2), (2, 1.99, 2), (2, 2.0, 1), (2, 14.0, 1),  # the guard: a full machine gets 1
    (8, 0.0, 8), (8, 3.2, 6), (8, 7.6, 2), (8, 8.0, 1), (1, 0.0, 1), (1, 0.5, 1),
])
def test_auto_workers_counts_the_idle_cores(cpus, load, want):
    assert auto_workers(cpus, load) == want


def test_workers_must_be_a_count():
    assert load_sweep_config("demo")["model"]["workers"] == 0  # the demo: automatic
    with pytest.raises(ConfigError, match="model.workers"):
        load_sweep_config("demo", model={"workers": -1})


@pytest.mark.slow
@pytest.mark.shared
def test_two_workers_write_the_store_one_worker_writes(tmp_path, monkeypatch, capsys):
    if not GTCRN_CKPT.exists():
        pytest.skip(f"needs {GTCRN_CKPT} (../shared is absent on this machine)")
    from torch_bridge.store import open_store

    from jaxprobe.studies.sweep import runner

    monkeypatch.setenv("JAXPROBE_CACHE", str(tmp_path / "cache"))
    stores = {}
    for workers in (1, 2):
        # 2 utterances x (clean + 2 noises x 9 SNRs) = 38 items: 3 chunks of 16, shared by the workers
        cfg = load_sweep_config({"name": "w", "model": {"name": "gtcrn", "threads": 1, "workers": workers},
                                 "data": {"corpus_size": "tiny", "speech_split": "all", "utterances": 2,
                                          "noises": ["pink", "babble"]},
                                 "sweep": {"snrs": [-10, -5, 0, 5, 10, 15, 20, 25, 30]}})
        store_dir, _, _ = runner._dump_stage(cfg, tmp_path / f"w{workers}", str(GTCRN_CKPT))
        stores[workers] = open_store(store_dir)
    per_worker = [ln for ln in capsys.readouterr().out.splitlines() if "items per worker" in ln]
    assert len(per_worker) == 1 and all(int(n) > 0 for n in per_worker[0].split("worker ")[1].split(", "))
    one, two = stores[1], stores[2]
    two.require_complete()
    assert one.n_chunks == two.n_chunks >= 3
    layers = [e["name"] for e in one.manifest["layers"]]
    rows = np.arange(len(one.index()))
    for name in layers:
        np.testing.assert_array_equal(one.read(name, rows), two.read(name, rows), err_msg=name)


def test_demo_refuses_a_negative_worker_count(tmp_path, capsys):
    from jaxprobe import cli

    assert cli.main(["demo", "--workers", "-1", "--out", str(tmp_path / "d")]) == 2
    assert "--workers must be an int >= 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_xla_one_thread_guard_applies_before_jax_starts_only():
    import os
    import subprocess
    import sys
    from pathlib import Path

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU core: the guard never applies")
    script = ("import os\nfrom jaxprobe.studies._common import guard_xla_threads as g\n"
              "a, b = g(2), g(1)\nimport jax.numpy as jnp\nv = float(jnp.arange(4.0).sum())\n"
              "print(a, b, os.environ['XLA_FLAGS'], v, g(1))")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**env, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"})
    assert p.returncode == 0, p.stderr[-2000:]
    # two workers: no guard; one worker of 2+ cores: XLA on one thread; once JAX runs: no effect
    assert p.stdout.split() == ["False", "True", "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1",
                                "6.0", "False"]


def test_demo_side_sweep_failure_is_the_demos_with_its_log(tmp_path):
    """The demo's GTCRN sweep runs in a child process when cores are spare; its failure is
    raised by the demo with the end of the child's log."""
    from jaxprobe._cmd_demo import _finish_sweep_process, _start_sweep_process

    child = _start_sweep_process("gtcrm", tmp_path / "g", None)
    with pytest.raises(RuntimeError, match="(?s)failed with exit status 1.*Unknown model 'gtcrm'"):
        _finish_sweep_process(child)
    assert child.log == tmp_path / "g.log" and child.log.stat().st_size > 0


def test_parallel_dump_stops_the_other_workers_when_one_fails(monkeypatch):
    """One worker's error ends the others at their next forward pass (their stop event), and is
    the error raised: not a wait for their whole share, not their DumpStopped."""
    import threading
    import time

    from torch_bridge.dump import DumpStopped
    from torch_bridge.models import registry

    from jaxprobe.studies.sweep import runner

    monkeypatch.setattr(registry, "load_model", lambda *a, **k: "second")
    passes, started = [], threading.Barrier(2, timeout=30)

    def fake_dump(spec, sweep, out, *, threads, stop, progress, **kw):
        started.wait()
        if spec == "first":
            raise ValueError("worker one broke")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:  # a long share of items, one "forward pass" per 10 ms
            if stop.is_set():
                raise DumpStopped("stopped")
            passes.append(1)
            time.sleep(0.01)
        raise AssertionError("the stop event was never set")

    cfg = {"model": {"name": "x", "checkpoint": "", "layers": [], "threads": 1}}
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="worker one broke"):
        runner._parallel_dump(fake_dump, "first", None, "store", 2, cfg, None, {})
    assert time.monotonic() - t0 < 20 and len(passes) < 2000
