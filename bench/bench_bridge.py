"""MUSE segments per second on this CPU: plain forward, forward + capture of the 24 canonical
layers, the same capture with its pass stopped after the last captured layer (``Captured.run``,
as the dump runs every pass after its first), and the end-to-end dump (mixing + forward +
capture + store write; one pass per dump here, which runs whole).

The three workloads run interleaved in rounds (plain, capture, dump, plain, ...) so that a
machine shared with other jobs slows them alike; the ratios are medians of per-round ratios.
Before timing, the capture is checked against the official code's golden norm1 means.
Writes bench/results/bridge.json.

    python bench/bench_bridge.py [--rounds 5] [--batch 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_MUSE = ROOT.parent / "shared" / "muse"


def _machine(threads: int) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "load_average_start": list(os.getloadavg()),
    }


def _check_against_golden(model, layers) -> float:
    """Largest relative (Frobenius) difference of the captured norm1 time means to the
    official code's, on the golden file's own model inputs (its STFT magnitude and phase; our
    STFT of the waveform can flip the phase's sign at the +-pi branch cut where a bin is real,
    depending on the FFT code path, as tests/torch_bridge/test_muse.py explains); raises if
    above 1e-4."""
    from torch_bridge import capture

    with np.load(SHARED_MUSE / "golden_case1.npz") as f:
        gold = {k: f[k] for k in f.files if k.startswith(("norm1_mean", "stft_"))}
    stages = {"Enc1": "encoder_level1", "Enc2": "encoder_level2", "Latent": "latent",
              "Dec2": "decoder_level2", "Dec1": "decoder_level1", "Refine": "mag_refinement"}
    with capture(model, layers) as acts:
        model(torch.from_numpy(gold["stft_mag_c"])[None], torch.from_numpy(gold["stft_pha"])[None])
    worst = 0.0
    for layer in layers:
        want = gold[f"norm1_mean.{stages[layer.block]}.{layer.index}"]
        worst = max(worst, float(np.linalg.norm(acts[layer.name][0] - want) / np.linalg.norm(want)))
    if worst > 1e-4:
        raise SystemExit(f"capture disagrees with the golden norm1 means: {worst:.2e} relative")
    return worst


def _hook_cost(layers, batch: int, threads: int, plain_s_per_segment: float) -> dict:
    """Time the work the 24 hooks add, alone: time-mean pooling of each layer's [B, C, T, F]
    output and the copy to numpy, on tensors of MUSE's shapes (best of 20)."""
    from torch_bridge.hooks import POOL_FNS, pooled_to_numpy

    frames = {16: 308, 32: 154, 48: 77}
    xs = [torch.randn(batch, c, frames[c], f) for c, f in (tuple(layer.shape) for layer in layers)]
    pool = POOL_FNS["time_mean"]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(20):
            t0 = time.perf_counter()
            for x in xs:
                pooled_to_numpy(pool(x), x)
            best = min(best, time.perf_counter() - t0)
    per_segment = best / batch
    return {"seconds_per_segment": per_segment, "fraction_of_best_plain_forward": per_segment / plain_s_per_segment}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2, help="segments per forward pass and per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bridge.json"))
    args = ap.parse_args()

    from torch_bridge import capture, dump_snr_sweep, snr_sweep
    from torch_bridge.dump import muse_dump_model
    from torch_bridge.muse_inference import SEGMENT_SIZE

    torch.set_num_threads(args.threads)
    machine = _machine(args.threads)
    ckpt = os.environ.get("JAXPROBE_MUSE_CHECKPOINT") or (SHARED_MUSE / "g_best")
    spec = muse_dump_model(str(ckpt))
    model, layers = spec.model, list(spec.layers)
    golden_rel = _check_against_golden(model, layers)

    # Inputs: the golden sentence mixed with seeded noise at `batch` SNRs; one segment each.
    with np.load(SHARED_MUSE / "golden_case1.npz") as f:
        clean = f["clean"]
    noise = np.random.default_rng(0).standard_normal(4 * SEGMENT_SIZE).astype(np.float32)
    snrs = list(range(0, 5 * args.batch, 5))
    sweep = snr_sweep({"case1": clean}, {"white": noise}, snrs, seed=0, duration=None)
    segs = np.stack([spec.prepare(sweep[i].noisy)[0] for i in range(len(sweep))])
    batch = torch.from_numpy(segs)

    def plain():
        with torch.inference_mode():
            spec.forward(model, batch)

    def captured():
        with capture(model, layers) as acts:
            spec.forward(model, batch)
        assert acts[layers[0].name].shape == (args.batch, 16, 128)

    def captured_early_stop():
        """The timed part is the second pass: the first pass through ``run`` runs whole and
        decides that later ones may stop (every layer ran once)."""
        with capture(model, layers) as acts:
            acts.run(spec.forward, model, batch[:1])
            t0, c0 = time.perf_counter(), time.process_time()
            acts.run(spec.forward, model, batch)
            spent = time.perf_counter() - t0, time.process_time() - c0
        assert acts.stops_early and acts[layers[-1].name].shape == (1 + args.batch, 16, 128)
        return spent

    tmp = Path(tempfile.mkdtemp(prefix="bench_bridge_"))

    def end_to_end(r):
        rep = dump_snr_sweep(model, layers, sweep, tmp / f"store{r}", window=spec.window, include_clean=False,
                             forward=spec.forward, prepare=spec.prepare, model_info=spec.info,
                             batch_size=args.batch, chunk_size=args.batch, progress=False)
        assert rep.items_written == args.batch

    plain()  # warm-up: allocator, oneDNN primitive caches, pyloudnorm filters
    captured()
    captured_early_stop()
    end_to_end(-1)
    names = ("plain", "capture", "capture_early_stop", "end_to_end")
    times = {k: [] for k in names}
    cpu = {k: [] for k in names}
    try:
        for r in range(args.rounds):
            for name, fn in (("plain", plain), ("capture", captured), ("capture_early_stop", captured_early_stop),
                             ("end_to_end", lambda: end_to_end(r))):
                t0, c0 = time.perf_counter(), time.process_time()
                spent = fn()
                wall, used = spent if spent else (time.perf_counter() - t0, time.process_time() - c0)
                times[name].append(wall)
                cpu[name].append(used)
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.batch
    hook = _hook_cost(layers, n, args.threads, min(times["plain"]) / n)
    overhead = [c / p for c, p in zip(times["capture"], times["plain"])]
    efficiency = [p / e for p, e in zip(times["plain"], times["end_to_end"])]
    result = {
        "benchmark": "bridge",
        "workload": {"model": "MUSE (official g_best)", "segment_samples": SEGMENT_SIZE, "batch": n,
                     "layers_captured": len(layers), "pooling": "time_mean", "rounds": args.rounds,
                     "end_to_end": "mixing (exact SNR, -23 LUFS) + energy norm + STFT + forward + capture + store write (fsync)"},
        "check": {"golden_norm1_max_relative_frobenius": golden_rel, "tolerance": 1e-4},
        "segments_per_second": {k: n / statistics.median(v) for k, v in times.items()},
        "segments_per_second_best": {k: n / min(v) for k, v in times.items()},
        "seconds_per_round": times,
        "cpu_seconds_per_round": cpu,
        "ratios": {
            "capture_over_plain_median": statistics.median(overhead),
            "capture_overhead_percent": 100 * (statistics.median(overhead) - 1),
            "capture_over_plain_cpu_time": statistics.median(cpu["capture"]) / statistics.median(cpu["plain"]),
            "end_to_end_efficiency_median": statistics.median(efficiency),
            "end_to_end_efficiency_cpu_time": statistics.median(cpu["plain"]) / statistics.median(cpu["end_to_end"]),
            # best (least disturbed) round of each workload, as timeit recommends on a busy machine
            "capture_over_plain_best": min(times["capture"]) / min(times["plain"]),
            # what stopping each pass after the last captured layer saves (MUSE: the phase
            # refinement, the tail of the last magnitude-refinement layer and both decoders)
            "capture_over_early_stop_median": statistics.median(
                [c / e for c, e in zip(times["capture"], times["capture_early_stop"])]),
            "capture_over_early_stop_cpu_time": statistics.median(cpu["capture"]) / statistics.median(cpu["capture_early_stop"]),
            "end_to_end_efficiency_best": min(times["plain"]) / min(times["end_to_end"]),
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "hook_cost": hook,
        "machine": {**machine, "load_average_end": list(os.getloadavg())},
        "note": "Ratios are medians of per-round ratios (the three workloads alternate within a round), "
                "CPU-time ratios, and ratios of the best rounds. The CPU is shared with other jobs; see "
                "load_average_* and the per-round times. hook_cost times the hooks' own work alone.",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    r = result["ratios"]
    print(f"plain {result['segments_per_second']['plain']:.3f} seg/s (best {result['segments_per_second_best']['plain']:.3f}), "
          f"capture overhead {r['capture_overhead_percent']:+.1f}% (best-round ratio {r['capture_over_plain_best']:.3f}, "
          f"hooks alone {100 * hook['fraction_of_best_plain_forward']:.2f}%), early stop "
          f"{r['capture_over_early_stop_median']:.2f}x faster than the whole-pass capture "
          f"(CPU time {r['capture_over_early_stop_cpu_time']:.2f}x), end-to-end efficiency "
          f"{r['end_to_end_efficiency_median']:.3f} (best-round {r['end_to_end_efficiency_best']:.3f}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
