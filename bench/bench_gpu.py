"""MUSE on a GPU (issue 19, target 4): windows per second at batch 1 and batch 64, for the fast
path (``torch_bridge.models.muse``, tuned for the CPU) and the reference path (the first, plainly
batched implementation), after checking both against the official implementation's golden case.

Run it where a GPU is, in one go with the paper-shape analysis, through ``scripts/gpu_check.sh``
(which also runs ``bench_seprobe.py --torch-device cuda``). Alone:

    python bench/bench_gpu.py [--muse DIR] [--device cuda] [--batches 1,64] [--seconds 8] [--tag NAME]

``--muse DIR`` holds ``g_best`` and ``golden_case1.npz`` (default ``../shared/muse``; on a device
machine, where ``../shared`` does not travel, a git-excluded copy inside the checkout).

Per path and batch: two warm-up calls, then calls until ``--seconds`` have passed (at least 3),
each followed by a device synchronisation; windows/s = batch x calls / elapsed wall time, and the
peak device memory. ``torch.backends.cudnn.benchmark`` is on (fixed shapes). A path that fails at
a batch (out of memory, say) is recorded with its error and the others go on. The golden check:
max |a - b| / max |b| of est_mag_c against the official output at batch 1 (GOLDEN.md: the official
code itself moves it by up to 2e-5 between 1 and 2 CPU threads). Runs on the CPU as well (a
check of the script, not a figure to quote: ``bench_muse.py`` is the CPU bench).

Writes bench/results/muse_gpu[_TAG].json (or under $JAXPROBE_BENCH_RESULTS).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import write_results  # noqa: E402


def _smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--muse", default=str(ROOT.parent / "shared" / "muse"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per path and batch")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    import torch

    from torch_bridge import load_muse
    from torch_bridge.models.muse.reference import MUSEReference

    muse_dir = Path(args.muse)
    for name in ("g_best", "golden_case1.npz"):
        if not (muse_dir / name).is_file():
            raise SystemExit(f"bench_gpu needs {name} in --muse {muse_dir} (copy it from ../shared/muse).")
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: --device cuda but torch sees no GPU; never guess GPU numbers.")
    torch.backends.cudnn.benchmark = True
    batches = [int(b) for b in args.batches.split(",")]
    fast = load_muse(muse_dir / "g_best").to(dev).eval()
    ref = MUSEReference().eval()
    ref.load_state_dict(fast.state_dict())
    ref = ref.to(dev)
    gold = np.load(muse_dir / "golden_case1.npz")
    mag = torch.from_numpy(gold["stft_mag_c"]).float()[None].to(dev)
    pha = torch.from_numpy(gold["stft_pha"]).float()[None].to(dev)
    want = torch.from_numpy(gold["est_mag_c"]).double()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    info = {"torch": torch.__version__, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "nvidia_smi": _smi() if dev.type == "cuda" else "", "cudnn_benchmark": True}
    print(f"bench_gpu: {info}", flush=True)
    golden, rows = {}, {}
    paths = {"fast": fast, "reference": ref}
    with torch.inference_mode():
        for name, model in list(paths.items()):
            try:
                got = model(mag, pha)[0][0].double().cpu()
                golden[name] = float((got - want).abs().max() / want.abs().max())
            except RuntimeError as exc:  # a path that cannot run on this device: say so, time the other
                golden[name] = " ".join(str(exc).split())[:300]
                del paths[name]
        print(f"est_mag_c vs the official golden output (max rel): {golden}", flush=True)
        for b in batches:
            mb, pb = mag.expand(b, -1, -1).contiguous(), pha.expand(b, -1, -1).contiguous()
            for name, model in paths.items():
                key = f"{name}_batch{b}"
                try:
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(dev)
                    for _ in range(2):
                        model(mb, pb)
                    sync()
                    calls, t0 = 0, time.perf_counter()
                    while calls < 3 or time.perf_counter() - t0 < args.seconds:
                        model(mb, pb)
                        sync()
                        calls += 1
                    wall = time.perf_counter() - t0
                    rows[key] = {"batch": b, "calls": calls, "wall_s": wall, "windows_per_s": b * calls / wall,
                                 "s_per_call": wall / calls,
                                 "peak_mem_gb": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}
                except RuntimeError as exc:  # out of memory and the like: keep the other rows
                    rows[key] = {"batch": b, "error": " ".join(str(exc).split())[:300]}
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                print(f"{key}: {rows[key]}", flush=True)
    out = write_results("muse_gpu" + (f"_{args.tag}" if args.tag else ""), {
        "benchmark": "muse_gpu", "what": "MUSE windows (1.92 s, 308 frames) per second on one device, "
        "fast and reference paths, batch " + args.batches, "info": info,
        "est_mag_c_vs_golden_max_rel": golden, "rows": rows,
        "seconds_per_measurement": args.seconds,
    })
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
