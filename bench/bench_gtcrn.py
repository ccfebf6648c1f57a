"""GTCRN on 2 s windows at 16 kHz, one torch thread: windows per second and real-time factor.

Two ways to run the same windows through the official pipeline (STFT -> model -> iSTFT):
one window per forward pass (the baseline, what a streaming caller does) and all of them in one
batch. They run interleaved in rounds, so a machine shared with other jobs slows both alike; the
ratio is the median of the per-round ratios. Before timing, the batched output is checked against
the per-window one and, where ../shared/gtcrn exists, the first window (the golden input)
against the official enhanced waveform. Writes bench/results/gtcrn.json.

    python bench/bench_gtcrn.py [--rounds 5] [--windows 16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import peak_rss_mb, write_results  # noqa: E402

SHARED_GTCRN = ROOT.parent / "shared" / "gtcrn"
WINDOW = 32000  # 2 s at 16 kHz


def _windows(n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """n windows: the golden input first where ../shared has it, then seeded noisy tones."""
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW) / 16000
    out = [
        (0.2 * np.sin(2 * np.pi * (150 + 20 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(WINDOW))
        for i in range(n)
    ]
    golden = None
    if (SHARED_GTCRN / "golden_case1.npz").exists():
        with np.load(SHARED_GTCRN / "golden_case1.npz") as g:
            out[0], golden = g["wave"], g["enhanced"]
    return np.stack(out).astype(np.float32), golden


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from torch_bridge.models.gtcrn import gtcrn_enhance, load_gtcrn, parameter_counts

    load_start = list(os.getloadavg())
    model = load_gtcrn()  # JAXPROBE_GTCRN_CHECKPOINT, the cache, or the verified download
    x, golden = _windows(args.windows)

    def per_window():
        return np.stack([gtcrn_enhance(model, w) for w in x])

    def batched():
        return gtcrn_enhance(model, x)

    t0 = time.perf_counter()
    ref = per_window()
    first_call_s = time.perf_counter() - t0
    got = batched()
    check = {"batched_vs_per_window_max_relative": float(np.abs(got - ref).max() / np.abs(ref).max())}
    if golden is not None:
        check["golden_enhanced_max_relative"] = float(np.abs(ref[0] - golden).max() / np.abs(golden).max())
    bad = {k: v for k, v in check.items() if v > 1e-4}
    if bad:
        raise SystemExit(f"GTCRN output check failed (tolerance 1e-4): {bad}")

    times: dict[str, list[float]] = {"per_window": [], "batched": []}
    for _ in range(args.rounds):
        for name, fn in (("per_window", per_window), ("batched", batched)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    audio_s = args.windows * WINDOW / 16000
    result = {
        "benchmark": "gtcrn",
        "workload": {
            "model": "GTCRN (official vctk weights), official pipeline STFT -> model -> iSTFT",
            "window_samples": WINDOW,
            "windows": args.windows,
            "rounds": args.rounds,
            "torch_threads": 1,
            "torch": torch.__version__,
            "parameters": parameter_counts(model),
        },
        "check": {**check, "tolerance": 1e-4},
        "first_call_s": first_call_s,
        "windows_per_second": {k: args.windows / statistics.median(v) for k, v in times.items()},
        "real_time_factor": {k: statistics.median(v) / audio_s for k, v in times.items()},
        "speedup_batched_over_per_window": statistics.median(
            p / b for p, b in zip(times["per_window"], times["batched"])
        ),
        "seconds_per_round": times,
        "peak_rss_mb": peak_rss_mb(),
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
    }
    path = write_results("gtcrn", result)
    wps, rtf = result["windows_per_second"], result["real_time_factor"]
    print(f"GTCRN, 2 s windows, 1 thread (load {load_start[0]:.2f}):")
    for k in times:
        print(f"  {k:10s} {wps[k]:7.2f} windows/s   real-time factor {rtf[k]:.4f}")
    print(f"  batched / per-window speed-up: {result['speedup_batched_over_per_window']:.2f}x   checks {check}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
