"""`jaxprobe hear --config CONFIG [--out DIR] [--devices all|N]`."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--config", default="demo",
                   help="TOML config file, or a shipped name: demo, paper (default: demo)")
    p.add_argument("--out", default=None, help="output folder (default: runs/hear-<config name>)")
    p.add_argument("--devices", default=None,
                   help="JAX devices for probe training: 1 (default), all, or a count")


def main(args) -> int:
    from pathlib import Path

    from jaxprobe._cmd_sweep import print_outputs
    from jaxprobe.studies.hear import run

    stem = Path(str(args.config)).stem
    out = args.out or str(Path("runs") / (stem if stem.startswith("hear") else f"hear-{stem}"))
    print_outputs(run(args.config, out, devices=args.devices))
    return 0
