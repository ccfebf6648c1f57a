"""The quality stage's cost per item (one 1.92 s MUSE window), against the dump's per-item cost
measured in the same run.

Per round, interleaved so that a shared machine slows them alike:
  * baseline: one MUSE forward on the window (what the dump stage spends per item);
  * enhance: the quality stage's extra forward and the iSTFT reconstruction of the output;
  * metrics: PESQ (wide band), STOI and SI-SDR of the noisy and the enhanced window;
  * rir: rir_at_c50 for one (utterance, level) of the c50 axis, caches cleared (a new room).
Reported: medians over rounds and the median per-round ratio to the baseline. Before timing,
the enhanced window is checked against the official inference pipeline
(``torch_bridge.muse_inference.enhance`` on the same window) and PESQ against the pesq package.
Writes bench/results/quality_stage.json.

    python bench/bench_quality.py [--rounds 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import write_results  # noqa: E402

SHARED_MUSE = ROOT.parent / "shared" / "muse"
SR = 16000


def _loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _window(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A speech-like clean window and a noisy version of it (30,700 samples)."""
    from torch_bridge.muse_inference import SEGMENT_SIZE

    rng = np.random.default_rng(seed)
    t = np.arange(SEGMENT_SIZE) / SR
    env = np.sin(2 * np.pi * 2.3 * t) ** 2 * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.9 * t)
    clean = env * sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 12))
    clean = (0.1 * clean / np.max(np.abs(clean))).astype(np.float32)
    noisy = (clean + 0.02 * rng.standard_normal(clean.shape)).astype(np.float32)
    return clean, noisy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = SHARED_MUSE / "g_best"
    if not ckpt.exists():
        print(f"needs {ckpt}", file=sys.stderr)
        return 2
    from pesq import pesq

    from jaxprobe.quality import item_quality
    from torch_bridge import degrade
    from torch_bridge.degrade_dump import muse_enhance_windows
    from torch_bridge.muse_inference import enhance, load_muse, muse_forward_inputs, muse_normalise

    model = load_muse(str(ckpt))
    clean, noisy = _window(0)
    norm, c = muse_normalise(noisy)

    def forward():
        with torch.inference_mode():
            mag_c, pha = muse_forward_inputs(norm[None])
            model(mag_c, pha)

    def enh():
        return muse_enhance_windows(model, norm[None])[0] / np.float32(c)

    def metrics():
        return item_quality(np.stack([clean, clean]), np.stack([noisy, out]))

    seeds = iter(range(10_000, 20_000))

    def rir():
        degrade._room_rir.cache_clear()
        degrade._images.cache_clear()
        return degrade.room_rir_at_c50(8.0, seed=next(seeds))

    # checks before timing
    out = enh()
    official = enhance(model, noisy, SR)
    enh_err = float(np.max(np.abs(out - official)) / np.max(np.abs(official)))
    q = metrics()
    pesq_err = float(abs(q["pesq"][1] - pesq(SR, clean.astype(np.float64), out.astype(np.float64), "wb")))
    assert enh_err < 1e-5, enh_err
    assert pesq_err < 1e-6, pesq_err
    print(f"enhanced vs official pipeline: {enh_err:.2e} (max rel); PESQ vs pesq package: {pesq_err:.1e}")
    forward(), metrics()  # warm-up (STOI compiles)
    rows = {k: [] for k in ("forward", "enhance", "metrics", "rir")}
    load_before = _loadavg()
    for r in range(args.rounds):
        for name, fn in (("forward", forward), ("enhance", enh), ("metrics", metrics), ("rir", rir)):
            t0 = time.perf_counter()
            fn()
            rows[name].append(time.perf_counter() - t0)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in rows.items()), flush=True)
    load_after = _loadavg()
    med = {k: statistics.median(v) for k, v in rows.items()}
    ratio = {k: statistics.median([a / b for a, b in zip(rows[k], rows["forward"])]) for k in ("enhance", "metrics", "rir")}
    per_item = ratio["enhance"] + ratio["metrics"]
    print(f"baseline (one MUSE forward, the dump's cost per item): {med['forward']:.3f} s")
    for k in ("enhance", "metrics", "rir"):
        print(f"{k}: {med[k]:.3f} s = {ratio[k]:.2f}x the baseline")
    print(f"quality stage per item: {per_item:.2f}x the dump's per-item cost; load {load_before} -> {load_after}")
    path = write_results("quality_stage", {
        "rounds": args.rounds, "threads": args.threads, "load_before": load_before, "load_after": load_after,
        "seconds": rows, "median_s": med, "ratio_to_forward": ratio, "quality_stage_per_item_ratio": per_item,
        "checks": {"enhanced_vs_official_max_rel": enh_err, "pesq_vs_package_abs": pesq_err},
    })
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
