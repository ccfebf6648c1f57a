"""`jaxprobe demo`: the main job on the embedded default — the SNR-sweep study of MUSE and of
GTCRN (= `jaxprobe sweep --config demo --model muse|gtcrn`), then their comparison
(= `jaxprobe compare`)."""
from __future__ import annotations


DESCRIPTION = """Run the main job on the embedded default: the SNR-sweep study of two speech-enhancement
models, MUSE and GTCRN (4 real utterances x 4 noise types x 9 SNRs each; the same as
`jaxprobe sweep --config demo --model muse|gtcrn`), then the comparison report of the two
(`jaxprobe compare`). About 4-5 minutes on a 2-core CPU, most of it MUSE; the models run in
parallel workers, one per CPU core the load average leaves idle (--workers). Checkpoints are
taken from --checkpoint / --gtcrn-checkpoint, $JAXPROBE_MUSE_CHECKPOINT /
$JAXPROBE_GTCRN_CHECKPOINT, the cache, or downloaded once and verified."""

EPILOG = """example:
  jaxprobe demo --out runs/demo

outputs (in --out):
  muse/, gtcrn/      one sweep run each: report.html, report.md, results.json, CSV tables,
                     figures/, store/<fingerprint>/ (the activation store; a re-run reuses it)
  compare/           the comparison: report.html, report.md, results.json, profile.csv,
                     curves.csv, blocks.csv, trends.csv, cross_cka.csv, figures/"""

MODELS = ("muse", "gtcrn")


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--checkpoint", default=None, help="MUSE g_best path")
    p.add_argument("--gtcrn-checkpoint", default=None, help="GTCRN checkpoint (model_trained_on_vctk.tar)")
    p.add_argument("--workers", type=int, default=0,
                   help="parallel model workers of the dumps, one torch thread each (default 0: the CPU cores "
                        "the load average leaves idle, at least 1)")


def main(args) -> int:
    import os
    import time
    from pathlib import Path

    from jaxprobe._cmd_sweep import print_outputs
    from jaxprobe.errors import ConfigError
    from jaxprobe.studies import compare, sweep
    from jaxprobe.studies._common import auto_workers, guard_xla_threads

    if args.workers < 0:
        raise ConfigError(f"--workers must be an int >= 0 (0 = automatic); got {args.workers}.")
    out = Path(args.out)
    seconds = {}
    # dump workers chosen once, before this run loads the machine itself (the config's 0 = auto)
    workers = args.workers or auto_workers()
    xla_one = guard_xla_threads(workers)  # a busy machine: XLA on one thread too
    print(f"demo: {workers} dump worker(s), one torch thread each; XLA on {'one thread' if xla_one else 'its default threads'} "
          f"(load {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} cores)", flush=True)
    for name, ckpt in zip(MODELS, (args.checkpoint, args.gtcrn_checkpoint)):
        t0 = time.perf_counter()
        print(f"demo: the SNR sweep of {name} -> {out / name}", flush=True)
        print_outputs(sweep.run("demo", out / name, checkpoint=ckpt, model=name, workers=workers))
        seconds[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    print(f"demo: comparing {' and '.join(MODELS)} -> {out / 'compare'}", flush=True)
    print_outputs(compare.run([out / m for m in MODELS], out / "compare", inputs=("clean", "all")))
    seconds["compare"] = time.perf_counter() - t0
    print("demo: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
          + f"; total {sum(seconds.values()):.0f} s", flush=True)
    return 0
