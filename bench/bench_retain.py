"""What ``torch_bridge.runtime.retain_freed_memory()`` buys a MUSE forward pass, measured the only
way a process-wide allocator setting can be: in fresh processes, alternately without it (glibc's
defaults) and with it (as every ``jaxprobe`` CLI command now runs), so that a shared machine's
changing speed hits both alike.

Each child process loads the fast MUSE (``../shared/muse/g_best``), runs two warm-up windows of
the golden case at one torch thread, then times ``--windows`` windows: CPU seconds of the process
(user + sys, ``time.process_time``), system seconds and minor page faults (``getrusage``). The
parent reports medians over the rounds of each mode, and the median of the per-round ratios
(default / retained), which is the figure to quote. The outputs of both modes are checked to be
bit-identical (the setting changes no result).

    .venv/bin/python bench/bench_retain.py [--rounds 4] [--windows 8]

writes bench/results/retain_memory.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import loadavg, write_results  # noqa: E402

SHARED_MUSE = ROOT.parent / "shared" / "muse"
MODES = ("default", "retained")


def child(mode: str, windows: int) -> dict:
    """One process's measurement (see the module docstring); printed as JSON by ``--child``."""
    import numpy as np
    import torch

    accepted = None
    if mode == "retained":
        from torch_bridge.runtime import retain_freed_memory

        accepted = retain_freed_memory()
    from torch_bridge import load_muse

    torch.set_num_threads(1)
    model = load_muse(SHARED_MUSE / "g_best")
    gold = np.load(SHARED_MUSE / "golden_case1.npz")
    mag = torch.from_numpy(gold["stft_mag_c"]).float()[None]
    pha = torch.from_numpy(gold["stft_pha"]).float()[None]
    cpu, sys_s, faults = [], [], []
    with torch.inference_mode():
        for _ in range(2):
            out = model(mag, pha)
        for _ in range(windows):
            r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
            out = model(mag, pha)
            c1, r1 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
            cpu.append(c1 - c0)
            sys_s.append(r1.ru_stime - r0.ru_stime)
            faults.append(r1.ru_minflt - r0.ru_minflt)
    digest = hashlib.sha256(out[0].numpy().tobytes()).hexdigest()
    return {"mode": mode, "accepted": accepted, "cpu_s_per_window": statistics.median(cpu),
            "sys_s_per_window": statistics.median(sys_s), "minor_faults_per_window": statistics.median(faults),
            "est_mag_c_sha256": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.windows)))
        return
    if not (SHARED_MUSE / "g_best").is_file():
        raise SystemExit(f"bench_retain needs the MUSE checkpoint at {SHARED_MUSE / 'g_best'}.")
    load_start = loadavg()
    rounds = []
    for i in range(args.rounds):
        row = {}
        for mode in (MODES if i % 2 == 0 else MODES[::-1]):
            res = subprocess.run([sys.executable, __file__, "--child", mode, "--windows", str(args.windows)],
                                 capture_output=True, text=True, check=True)
            row[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        row["loadavg"] = loadavg()
        rounds.append(row)
        print(f"round {i}: " + "  ".join(
            f"{m} {row[m]['cpu_s_per_window']:.3f} s cpu ({row[m]['sys_s_per_window']:.3f} sys, "
            f"{row[m]['minor_faults_per_window']:.0f} faults)" for m in MODES) + f"  load {row['loadavg'][0]:.2f}", flush=True)
    identical = len({r[m]["est_mag_c_sha256"] for r in rounds for m in MODES}) == 1
    summary = {
        m: {k: statistics.median(r[m][k] for r in rounds)
            for k in ("cpu_s_per_window", "sys_s_per_window", "minor_faults_per_window")}
        for m in MODES
    }
    summary["default_over_retained_cpu"] = statistics.median(
        r["default"]["cpu_s_per_window"] / r["retained"]["cpu_s_per_window"] for r in rounds)
    summary["outputs_bit_identical"] = identical
    out = write_results("retain_memory", {
        "benchmark": "retain_memory",
        "what": "fast MUSE forward, one 1.92 s window, one torch thread, fresh process per mode and round "
                "(modes alternate); CPU = user + sys of the process",
        "baseline": "glibc's default allocator settings in the same rounds",
        "windows_per_process": args.windows, "load_start": load_start,
        "load_end": loadavg(), "summary": summary, "rounds": rounds,
    })
    print(f"retained freed memory: {summary['retained']['cpu_s_per_window']:.3f} vs "
          f"{summary['default']['cpu_s_per_window']:.3f} s CPU per window ({summary['default_over_retained_cpu']:.3f}x), "
          f"{summary['retained']['minor_faults_per_window']:.0f} vs {summary['default']['minor_faults_per_window']:.0f} "
          f"minor faults; outputs bit-identical: {identical} -> {out}", flush=True)
    if not identical:
        raise SystemExit("the retained-memory setting changed MUSE's output")


if __name__ == "__main__":
    main()
