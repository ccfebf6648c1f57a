"""`jaxprobe demo`: the main job on the embedded default (= `jaxprobe sweep --config demo`)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--checkpoint", default=None, help="MUSE g_best path")


def main(args) -> int:
    from pathlib import Path

    from jaxprobe.studies.sweep import run

    paths = run("demo", args.out, checkpoint=args.checkpoint)
    figs = [v for k, v in paths.items() if k.startswith("figures/")]
    print("outputs:")
    for k, v in paths.items():
        if not k.startswith("figures/"):
            print(f"  {k:15s} {v}")
    if figs:
        print(f"  {'figures':15s} {len(figs)} files in {Path(figs[0]).parent}")
    return 0
