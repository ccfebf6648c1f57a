"""`jaxprobe demo`: the main job on the embedded default (= `jaxprobe sweep --config demo`)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--checkpoint", default=None, help="MUSE g_best path")


def main(args) -> int:
    from jaxprobe._cmd_sweep import print_outputs
    from jaxprobe.studies.sweep import run

    print_outputs(run("demo", args.out, checkpoint=args.checkpoint))
    return 0
