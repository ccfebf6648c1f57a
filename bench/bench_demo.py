"""Where `jaxprobe demo` spends its time: the demo's three steps (the MUSE sweep, the GTCRN
sweep, `jaxprobe compare`) run in one process as `jaxprobe demo` runs them, with every stage
timed in wall AND process CPU seconds (user + sys of every thread of the process; on a shared
machine wall time is inflated by other jobs, CPU time much less), and every XLA compilation
counted (name, seconds, persistent-cache hit or miss).

Stages are timed exclusively (a stage nested in another is subtracted from its parent), so
the rows add up to the total. The JAX persistent compilation cache is pointed at
``--xla-cache`` (default: a fresh empty folder, i.e. a cold first run; give the same folder
twice for a warm one). ``--reuse-store`` keeps the activation stores of an earlier run in
``--out`` (the dump stages then only check them) and recomputes everything else: the way to
measure the analysis, compile and report stages without re-running the models.

The machine's load (/proc/loadavg) is recorded at the start and end, and the threads used.

    .venv/bin/python bench/bench_demo.py [--out DIR] [--xla-cache DIR] [--reuse-store] [--tag NAME]

writes bench/results/demo[_TAG].json.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, loadavg, machine, process_cpu  # noqa: E402


_cpu, _load = process_cpu, loadavg


class Stages:
    """Exclusive wall/CPU time per stage name; compile events go to the innermost stage."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self.stack: list[list] = []  # [name, wall0, cpu0, child_wall, child_cpu]
        self.prefix = ""
        self.compiles: list[dict] = []

    def row(self, name):
        return self.rows.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0, "compiles": 0,
                                           "compile_s": 0.0, "cache_hits": 0})

    def current(self):
        return self.stack[-1][0] if self.stack else (self.prefix + "other").lstrip("/")

    def enter(self, name):
        self.stack.append([f"{self.prefix}{name}", time.perf_counter(), _cpu(), 0.0, 0.0])

    def exit(self):
        name, w0, c0, cw, cc = self.stack.pop()
        w, c = time.perf_counter() - w0, _cpu() - c0
        r = self.row(name)
        r["wall_s"] += w - cw
        r["cpu_s"] += c - cc
        r["calls"] += 1
        if self.stack:
            self.stack[-1][3] += w
            self.stack[-1][4] += c

    def wrap(self, module: str, attr: str, name: str):
        mod = importlib.import_module(module)
        fn = getattr(mod, attr)

        @functools.wraps(fn)
        def timed(*a, **k):
            self.enter(name)
            try:
                return fn(*a, **k)
            finally:
                self.exit()

        setattr(mod, attr, timed)

    def on_duration(self, event, secs, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            st = self.current()
            self.compiles.append({"stage": st, "fun": str(kw.get("fun_name", "?")), "s": secs, "hit": False})
            r = self.row(st)
            r["compiles"] += 1
            r["compile_s"] += secs

    def on_event(self, event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            self.row(self.current())["cache_hits"] += 1
            self._hit_pending = True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="demo output folder (default: a fresh temporary folder)")
    ap.add_argument("--xla-cache", default=None, help="persistent XLA cache folder (default: fresh, i.e. cold)")
    ap.add_argument("--reuse-store", action="store_true", help="keep the stores in --out; recompute the rest")
    ap.add_argument("--workers", type=int, default=0, help="dump workers (default 0: automatic, as the demo)")
    ap.add_argument("--cli", action="store_true",
                    help="time the real `jaxprobe demo` command end to end instead (a child process: wall, and "
                         "the CPU of it and its children), into the 'cli' entry of the results file")
    ap.add_argument("--tag", default="", help="results file suffix: bench/results/demo_TAG.json")
    args = ap.parse_args(argv)

    if args.cli:
        return _cli(args)
    load0 = _load()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-demo-"))
    if out.exists() and args.reuse_store:
        for sub in ("muse", "gtcrn", "compare"):
            d = out / sub
            if d.is_dir():
                for p in d.iterdir():
                    if p.name != "store":
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif out.exists() and any(out.iterdir()):
        sys.exit(f"--out {out} is not empty; give --reuse-store or an empty folder")
    xla_cache = Path(args.xla_cache or tempfile.mkdtemp(prefix="bench-demo-xla-"))
    cold = not (xla_cache.exists() and any(xla_cache.rglob("*")))

    import jax
    import jax.monitoring as mon

    S = Stages()
    mon.register_event_duration_secs_listener(S.on_duration)
    mon.register_event_listener(S.on_event)

    from jaxprobe.studies import _common as C

    def _cache():  # the study's own setting, pointed at this run's folder
        jax.config.update("jax_compilation_cache_dir", str(xla_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_secs)

    min_secs = C.COMPILE_CACHE_MIN_SECS if hasattr(C, "COMPILE_CACHE_MIN_SECS") else 0.5
    import jaxprobe.studies.sweep.runner as runner

    runner._enable_compilation_cache = _cache
    S.wrap("torch_bridge.corpus", "load_corpus", "corpus")
    S.wrap("torch_bridge.models.registry", "load_model", "model load")
    S.wrap("torch_bridge.dump", "dump_spec_sweep", "dump (mix + forward + store)")
    S.wrap("jaxprobe.studies.sweep.runner", "load_sweep_arrays", "store read")
    S.wrap("jaxprobe.studies.sweep.analysis", "analyze_cka", "CKA other")
    S.wrap("jaxprobe.studies.sweep.analysis", "per_item_cka_all", "CKA per item")
    S.wrap("jaxprobe.studies.sweep.analysis", "centroid_cka", "CKA centroids")
    S.wrap("jaxprobe.studies.sweep.analysis", "bootstrap_mean", "CKA bootstrap")
    S.wrap("jaxprobe.studies.sweep.analysis", "replicate_statistics", "CKA fits in replicates")
    S.wrap("jaxprobe.studies.sweep.diffusion", "analyze_diffusion", "diffusion other")
    S.wrap("jaxprobe.studies.sweep.diffusion", "intra_layer", "diffusion maps")
    S.wrap("jaxprobe.studies.sweep.diffusion", "inter_layer", "diffusion maps")
    S.wrap("jaxprobe.diffusion.bootstrap", "intra_replicates", "geometry bootstrap")
    S.wrap("jaxprobe.diffusion.bootstrap", "inter_replicates", "geometry bootstrap")
    S.wrap("jaxprobe.studies.sweep.runner", "_analysis_stage", "analysis other (results write)")
    S.wrap("jaxprobe.report", "write_report", "report + figures")
    S.wrap("jaxprobe.studies.compare", "input_activations", "store read")
    S.wrap("jaxprobe.studies.compare", "cross_model_cka", "cross-model CKA")
    S.wrap("jaxprobe.report.compare", "write_compare_report", "report + figures")

    from jaxprobe._cmd_demo import MODELS
    from jaxprobe.studies import compare, sweep

    threads = {}
    run_kw = {}
    try:
        from jaxprobe.studies._common import auto_workers

        threads["dump_workers"] = run_kw["workers"] = args.workers or auto_workers()
        from jaxprobe.studies._common import guard_xla_threads

        threads["xla_one_thread"] = guard_xla_threads(run_kw["workers"])
    except ImportError:  # the code before dump workers existed (the baseline)
        threads["dump_workers"] = 1
    t_start, c_start = time.perf_counter(), _cpu()
    for name in MODELS:
        S.prefix = f"{name}/"
        S.enter("sweep other")
        sweep.run("demo", out / name, model=name, **run_kw)
        S.exit()
        import torch

        threads[f"torch_after_{name}"] = torch.get_num_threads()
    S.prefix = "compare/"
    S.enter("compare other")
    compare.run([out / m for m in MODELS], out / "compare", inputs=("clean", "all"))
    S.exit()
    total = {"wall_s": time.perf_counter() - t_start, "cpu_s": _cpu() - c_start}

    by_fun: dict[str, dict] = {}
    for c in S.compiles:
        f = by_fun.setdefault(c["fun"], {"n": 0, "s": 0.0})
        f["n"] += 1
        f["s"] += c["s"]
    rows = {k: {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()}
            for k, v in S.rows.items()}
    res = {
        "benchmark": "demo",
        "what": "jaxprobe demo (MUSE sweep, GTCRN sweep, compare) in one process, stages timed exclusively",
        "cold_xla_cache": cold,
        "load_start": load0, "load_end": _load(),
        "threads": {**threads, "os_cpu_count": os.cpu_count(),
                    "sched_affinity": len(os.sched_getaffinity(0)),
                    "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")},
        "total": {k: round(v, 2) for k, v in total.items()},
        "stages": rows,
        "compiles": {"count": len(S.compiles), "distinct_functions": len(by_fun),
                     "backend_compile_s": round(sum(c["s"] for c in S.compiles), 2),
                     "persistent_cache_hits": sum(r["cache_hits"] for r in S.rows.values()),
                     "by_function": dict(sorted(((k, {"n": v["n"], "s": round(v["s"], 3)}) for k, v in by_fun.items()),
                                                key=lambda kv: -kv[1]["s"]))},
        "machine": machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / f"demo{'_' + args.tag if args.tag else ''}.json"
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, dest)
    print(f"\n{'stage':48s} {'wall s':>8s} {'CPU s':>8s} {'compiles':>8s} {'compile s':>9s}")
    for k, v in sorted(S.rows.items(), key=lambda kv: kv[0]):
        print(f"{k:48s} {v['wall_s']:8.1f} {v['cpu_s']:8.1f} {v['compiles']:8d} {v['compile_s']:9.1f}")
    print(f"{'total':48s} {total['wall_s']:8.1f} {total['cpu_s']:8.1f} {len(S.compiles):8d} "
          f"{res['compiles']['backend_compile_s']:9.1f}")
    print(f"load {load0} -> {res['load_end']}; cold cache: {cold}; {len(by_fun)} distinct jitted functions; "
          f"{res['compiles']['persistent_cache_hits']} persistent-cache hits -> {dest}")
    return 0


def _cli(args) -> int:
    """`jaxprobe demo` as a user runs it (its GTCRN sweep may be a grandchild process)."""
    import resource
    import subprocess

    out = Path(args.out or tempfile.mkdtemp(prefix="bench-demo-cli-"))
    if out.exists() and any(out.iterdir()):
        sys.exit(f"--out {out} is not empty; the CLI timing needs a fresh run folder")
    env = dict(os.environ)
    if args.xla_cache:
        env["JAXPROBE_XLA_CACHE"] = str(args.xla_cache)
    cmd = [sys.executable, "-m", "jaxprobe.cli", "demo", "--out", str(out)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    load0 = _load()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    (out / "demo.log").write_text(p.stdout + p.stderr)  # its timestamped stage lines: the timeline
    if p.returncode != 0:
        sys.exit(f"jaxprobe demo failed ({p.returncode}):\n{p.stderr[-3000:]}")
    said = [ln for ln in p.stdout.splitlines() if ln.startswith("demo:")]
    rec = {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1),
           "cpu_s": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 1),
           "load_start": load0, "load_end": _load(), "printed": said}
    dest = RESULTS / f"demo{'_' + args.tag if args.tag else ''}.json"
    res = json.loads(dest.read_text()) if dest.exists() else {"benchmark": "demo", "machine": machine()}
    res["cli"] = rec
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, dest)
    print("\n".join(said))
    print(f"jaxprobe demo: wall {wall:.1f} s, CPU {rec['cpu_s']:.1f} s (with its children); load {load0} -> "
          f"{rec['load_end']} -> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
