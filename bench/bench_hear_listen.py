"""The hear study's listening stage (stage 3: every layer's reconstructions -> STOI, PESQ, the two
speaker judges, wavs), before and after the parallel path, in the same run.

Setup: a small hear study (four tiny recognisers trained a few steps, the test suite's size; or
``--size demo``: the demo's 2 s windows, 6 utterances per speaker and 32 Griffin-Lim iterations
on the small corpus) is run once into ``--cache`` (a re-run reuses it), so its activation stores
and probe checkpoints exist. Then the listening stage of all four recognisers, synthetic and human
parts (what ``jaxprobe hear`` runs after the probes), twice:

  * before: ``listen(..., pool=None, measured=None)``: every layer in turn in this process, PESQ
    one pair at a time, every recogniser's reference rows measured again (the old path);
  * after: ``listen(..., pool=pesq_pool(W), measured={})``: PESQ in W spawned processes while this
    process goes on with the next layer, the reference rows measured once per run.

The order alternates per round (before first in odd rounds), so a machine shared with other jobs
slows both alike; the ratio is the median of per-round ratios. Every round checks the two paths'
outputs are equal: the records (exact), and the per-item STOI, PESQ and embeddings (exact: the same
computations on the same inputs). CPU seconds (this process and the pool's, once shut
down) are recorded next to wall time: the CPU ratio is the work saved, which a loaded machine sees;
the wall ratio adds the pool's parallelism, which needs idle cores. Load averages are recorded at
start and end (W defaults to what the study picks, ``auto_workers``, at the bench's start).
Writes bench/results/hear_listen.json (``--workers W``: hear_listen_wW.json).

    python bench/bench_hear_listen.py [--rounds 1] [--workers 0] [--size tiny|demo] [--cache DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import write_results  # noqa: E402
from tests.jaxprobe.test_hear import TINY as _TEST_TINY  # noqa: E402

# The test suite's end-to-end configuration, from its one definition; the bench sets PESQ's
# processes itself (--workers), so the test's pool setting is dropped.
TINY = {**_TEST_TINY, "name": "hear-bench",
        "listen": {k: v for k, v in _TEST_TINY["listen"].items() if k != "workers"}}
DEMO_SIZED = {**TINY, "data": {**TINY["data"], "window_seconds": 2.0, "eval_per_speaker": 6, "human_per_speaker": 6},
              "conditions": {"snrs": [20.0, 10.0, 0.0], "noises": ["babble", "pink"]},
              "listen": {**TINY["listen"], "griffin_lim_iters": 32, "n_boot": 200}}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the pool's, once shut down)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _prepare(cfg_dict: dict, cache: Path):
    """Run the study once into ``cache`` (reused), then what stage 3 needs per recogniser."""
    from jaxprobe.studies.hear import run
    from jaxprobe.studies.hear.config import load_hear_config
    from jaxprobe.studies.hear.probes import train_layer_probes
    from jaxprobe.studies.hear.runner import plan_jobs
    from torch_bridge.hear import load_hear_data, run_jobs

    t0 = time.perf_counter()
    run(cfg_dict, cache)
    print(f"setup: the study in {cache} ({time.perf_counter() - t0:.0f} s; reused when cached)", flush=True)
    cfg = load_hear_config(cfg_dict)
    done = run_jobs(plan_jobs(cfg, cache), workers=1)
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    recs = [(rec, train_layer_probes(rec, cfg, data, cache)[0]) for rec in done[1:]]
    return cfg, data, done[0]["path"], recs


def _listen_all(cfg, data, speaker_path, recs, out: Path, *, pool, measured) -> tuple[float, list]:
    from jaxprobe.studies.hear import listen

    (out / "listen").mkdir(parents=True, exist_ok=True)
    got = []
    t0 = time.perf_counter()
    for rec, probes in recs:
        for part in ("synthetic", "human"):
            got.append(listen(rec, probes, cfg, data, speaker_path, out, part=part, pool=pool, measured=measured))
    return time.perf_counter() - t0, got


def _check_equal(a_dir: Path, b_dir: Path, a: list, b: list) -> int:
    """The two paths' records and per-item arrays are equal; returns how many arrays were compared."""
    assert a == b, "the listening records differ between the two paths"
    n = 0
    for fa in sorted((a_dir / "listen").glob("*-items.npz")):
        za, zb = np.load(fa), np.load(b_dir / "listen" / fa.name)
        assert sorted(za.files) == sorted(zb.files), fa.name
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{fa.name}: {k}")
            n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="PESQ processes of the new path (0: auto_workers())")
    ap.add_argument("--size", choices=("tiny", "demo"), default="tiny")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "jaxprobe-bench-hear-listen"))
    args = ap.parse_args(argv)

    from jaxprobe.audio.pesq import pesq_pool
    from jaxprobe.studies._common import auto_workers

    load_start = _loadavg()
    workers = args.workers or auto_workers()
    cfg_dict = TINY if args.size == "tiny" else DEMO_SIZED
    cfg, data, speaker_path, recs = _prepare(cfg_dict, Path(args.cache) / args.size)
    load_timed = _loadavg()
    n_items = {"synthetic": len(data.listen) * (1 + len(cfg["conditions"]["snrs"])),
               "human": len(data.listen_human) * (1 + len(cfg["conditions"]["snrs"]))}
    print(f"listening: {len(recs)} recognisers x (synthetic {n_items['synthetic']} + human {n_items['human']} items); "
          f"new path: PESQ in {workers} process(es); load {load_timed}", flush=True)
    rounds, compared = [], 0
    for r in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="bench-hear-listen-"))
        times, cpu, outs = {}, {}, {}
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            d = work / name
            c0 = _cpu()
            if name == "before":
                times[name], outs[name] = _listen_all(cfg, data, speaker_path, recs, d, pool=None, measured=None)
            else:
                with pesq_pool(workers) as pool:  # the pool's start-up (spawned processes) is inside the time
                    t0 = time.perf_counter()
                    _, outs[name] = _listen_all(cfg, data, speaker_path, recs, d, pool=pool, measured={})
                    times[name] = time.perf_counter() - t0
            cpu[name] = _cpu() - c0
            print(f"round {r + 1}: {name}: {times[name]:.1f} s wall, {cpu[name]:.1f} s CPU (load {_loadavg()[0]:.2f})",
                  flush=True)
        compared += _check_equal(work / "before", work / "after", outs["before"], outs["after"])
        shutil.rmtree(work)
        rounds.append({**{k: round(v, 2) for k, v in times.items()}, "ratio": round(times["before"] / times["after"], 3),
                       **{f"{k}_cpu_s": round(v, 2) for k, v in cpu.items()},
                       "cpu_ratio": round(cpu["before"] / cpu["after"], 3),
                       "load_after_round": _loadavg()})
    ratio = statistics.median(x["ratio"] for x in rounds)
    print(f"listening stage: before {statistics.median(x['before'] for x in rounds):.1f} s, after "
          f"{statistics.median(x['after'] for x in rounds):.1f} s: {ratio:.2f}x wall, "
          f"{statistics.median(x['cpu_ratio'] for x in rounds):.2f}x CPU (median of {len(rounds)} round(s)); "
          f"outputs equal ({compared} per-item arrays compared)")
    name = ("hear_listen" if args.size == "tiny" else "hear_listen_demo_sized") + (f"_w{args.workers}" if args.workers else "")
    write_results(name, {
        "what": "the hear study's listening stage (4 recognisers, synthetic + human parts): before = listen(pool=None, "
                "measured=None), after = listen(pool=pesq_pool(workers), measured={}); equal outputs checked",
        "size": args.size, "items_per_listen_call": n_items, "pesq_workers": workers,
        "workers_argument": args.workers, "cpus_usable": len(os.sched_getaffinity(0)),
        "rounds": rounds, "ratio_median": ratio, "cpu_ratio_median": statistics.median(x["cpu_ratio"] for x in rounds), "per_item_arrays_compared_equal": compared,
        "load_average_start": load_start, "load_average_before_timing": load_timed, "load_average_end": _loadavg(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
