"""Shared helpers for the benchmarks: timing, machine description, atomic JSON output."""
from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

# $JAXPROBE_BENCH_RESULTS redirects the JSON files (the GPU script writes them under $OUT there).
RESULTS = Path(os.environ.get("JAXPROBE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_total_kb"] = int(f.readline().split()[1])
    except OSError:
        pass
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception:
        pass
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except Exception:
        pass
    return info


def timeit(fn, *, repeat=5, min_time=0.0):
    """Best-of-`repeat` wall time of fn() in seconds (fn must block until done)."""
    best = float("inf")
    t_total = 0.0
    runs = 0
    while runs < repeat or t_total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        t_total += dt
        runs += 1
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    out = RESULTS / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, out)
    return out


def process_cpu() -> float:
    """User + system CPU seconds of every thread of this process (not its children)."""
    t = os.times()
    return t.user + t.system


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages (/proc/loadavg); [] where there is none."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []
