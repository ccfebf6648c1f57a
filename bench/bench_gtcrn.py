"""GTCRN at 16 kHz, one torch thread: the model on 2 s windows, and the sweep's dump path.

Part ``windows``: two ways to run the same 2 s windows through the official pipeline (STFT ->
model -> iSTFT): one window per forward pass (the baseline, what a streaming caller does) and all
of them in one batch. Before timing, the batched output is checked against the per-window one
and, where ../shared/gtcrn exists, the first window (the golden input) against the official
enhanced waveform. Writes bench/results/gtcrn.json.

Part ``dump``: what the SNR sweep's dump does with GTCRN (``torch_bridge.dump`` with the spec's
14 layers, capture hooks and pooling, chunks of 16, store writes): whole mixtures, one item per
mixture, at batch 1 with the grouped GRUs run separately (the baseline: the code before the
merged-GRU path) and, merged, at batch 1 and each of ``--batches``. ``--items`` items of
``--seconds`` s (default 32 x 10 s), or with ``--demo`` the demo's 148 items: 4 utterances of
52,562 / 76,298 / 91,476 / 98,792 samples (the ``speech_split = "real"`` prompts are shorter than
``data.duration = 10``, so each mixture keeps its utterance's length) x 37 mixtures, in the
demo's order, so batches split at utterance changes as they do there. Signals are seeded noisy
tones. The stored activations of every variant are checked against the baseline's (max |diff| /
max |batch 1| per layer, tolerance 1e-4). Writes bench/results/gtcrn_dump.json (``--demo``:
gtcrn_dump_demo.json) with CPU seconds per item and for all items.

Every timed variant runs once per round, interleaved, so a machine shared with other jobs slows
them alike; ratios are medians of per-round ratios.

    python bench/bench_gtcrn.py [--part windows|dump|both] [--rounds 5] [--windows 16]
                                [--batches 4,8,16] [--items 32] [--seconds 10] [--demo]
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


#: the demo's items: (samples, mixtures) per utterance, in plan order (measured on the embedded
#: corpus's four "real" prompts with data.duration = 10, short = "keep")
DEMO_ITEMS = ((52562, 37), (76298, 37), (91476, 37), (98792, 37))


def _tone(n: int, i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    t = np.arange(n) / 16000
    return (0.2 * np.sin(2 * np.pi * (150 + 7 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.05 * rng.standard_normal(n)).astype(np.float32)


def bench_dump(args) -> dict:
    """The sweep's dump path at batch 1 and at each of ``args.batches`` (module docstring)."""
    import shutil
    import tempfile

    from torch_bridge import load_model
    from torch_bridge.dump import Item, dump
    from torch_bridge.store import open_store

    spec = load_model("gtcrn")  # JAXPROBE_GTCRN_CHECKPOINT, the cache, or the verified download
    lengths = ([n for n, k in DEMO_ITEMS for _ in range(k)] if args.demo
               else [int(round(args.seconds * 16000))] * args.items)
    waves = [_tone(n, i) for i, n in enumerate(lengths)]
    # one utterance id per length, as in a sweep (a mixture's length is its utterance's)
    items = [Item({"noise": "tone", "snr": i}, f"u{n}") for i, n in enumerate(lengths)]
    batches = [1] + [b for b in args.batches if b != 1]
    # the baseline: batch 1 with the grouped GRUs run as two GRUs each (as before the merged
    # path; a no-op hook on rnn1 makes GRNN take the separate path), then every batch merged
    variants = {"b1_separate": (1, False), **{f"b{b}": (b, True) for b in batches}}
    grnns = [m for m in spec.model.modules() if type(m).__name__ == "GRNN"]
    root = Path(tempfile.mkdtemp(prefix="bench_gtcrn_"))

    def run(name: str, keep: bool = False) -> tuple[float, float, dict | None]:
        b, merged = variants[name]
        out = root / name
        shutil.rmtree(out, ignore_errors=True)
        hooks = [] if merged else [g.rnn1.register_forward_pre_hook(lambda *a: None) for g in grnns]
        c0, t0 = time.process_time(), time.perf_counter()
        dump(spec.model, spec.layer_records(), items, lambda it: waves[it.condition["snr"]], str(out),
             forward=spec.forward_fn, pooling=spec.pooling, select=0, batch_size=b, chunk_size=16,
             progress=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        for h in hooks:
            h.remove()
        stored = None
        if keep:
            st = open_store(out)
            stored = {lay.name: st.read(lay.name) for lay in spec.layers}
        shutil.rmtree(out)
        return cpu, wall, stored

    try:
        ref = run("b1_separate", keep=True)[2]  # also the warm-up
        check = {}
        for name in list(variants)[1:]:
            got = run(name, keep=True)[2]
            check[name] = max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref)
        bad = {b: v for b, v in check.items() if v > 1e-4}
        if bad:
            raise SystemExit(f"GTCRN dump check failed (tolerance 1e-4, max relative difference to batch 1): {bad}")
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        wall: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name in variants:
                c, w, _ = run(name)
                cpu[name].append(c)
                wall[name].append(w)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = len(items)
    best = min(batches, key=lambda b: statistics.median(cpu[f"b{b}"]))
    return {
        "workload": {
            "what": "torch_bridge.dump of GTCRN's 14 spec layers (capture hooks, pooling, store), whole mixtures",
            "items": n, "item_samples": sorted(set(lengths)), "demo_items": bool(args.demo),
            "chunk_size": 16, "batches": batches, "rounds": args.rounds, "torch_threads": 1,
            "variants": {k: {"batch": b, "grouped_grus": "merged" if m else "separate (baseline)"}
                         for k, (b, m) in variants.items()},
        },
        "check_max_relative_to_baseline": check,
        "check_tolerance": 1e-4,
        "cpu_seconds_per_item": {k: statistics.median(v) / n for k, v in cpu.items()},
        "cpu_seconds_all_items": {k: statistics.median(v) for k, v in cpu.items()},
        "wall_seconds_all_items": {k: statistics.median(v) for k, v in wall.items()},
        "speedup_over_baseline_cpu": {k: statistics.median(p / q for p, q in zip(cpu["b1_separate"], cpu[k]))
                                      for k in list(variants)[1:]},
        "fastest_batch": best,
        "cpu_seconds_per_round": cpu,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("windows", "dump", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--demo", action="store_true", help="the dump part on the demo's 148 item lengths")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.part in ("dump", "both"):
        load_start = list(os.getloadavg())
        res = bench_dump(args)
        res = {"benchmark": "gtcrn_dump", **res, "peak_rss_mb": peak_rss_mb(),
               "load_average_start": load_start, "load_average_end": list(os.getloadavg())}
        path = write_results("gtcrn_dump_demo" if args.demo else "gtcrn_dump", res)
        w = res["workload"]
        print(f"GTCRN dump path, {w['items']} items of {w['item_samples']} samples, 1 thread "
              f"(load {load_start[0]:.2f}):")
        for k in w["variants"]:
            sp = res["speedup_over_baseline_cpu"].get(k)
            print(f"  {k:12s} {res['cpu_seconds_per_item'][k]:.4f} CPU s/item  "
                  f"{res['cpu_seconds_all_items'][k]:6.2f} CPU s all items"
                  + (f"  {sp:.2f}x baseline   max rel diff {res['check_max_relative_to_baseline'][k]:.1e}"
                     if sp else "  (baseline: batch 1, separate GRUs)"))
        print(f"wrote {path}")
        if args.part == "dump":
            return 0
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
