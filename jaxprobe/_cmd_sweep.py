"""`jaxprobe sweep --config CONFIG [--out DIR] [--checkpoint PATH]`."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--config", default="demo",
                   help="TOML config file, or a shipped name: demo, paper (default: demo)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--checkpoint", default=None,
                   help="MUSE g_best path (else $JAXPROBE_MUSE_CHECKPOINT, the cache, the verified download)")
    p.add_argument("--devices", default=None,
                   help="JAX devices for the analysis: 1 (default), all, or a count; results do not depend on it")


def print_outputs(paths: dict) -> None:
    """The report files one per line, the figures as a count."""
    from pathlib import Path

    figs = [v for k, v in paths.items() if k.startswith("figures/")]
    print("outputs:")
    for k, v in paths.items():
        if not k.startswith("figures/"):
            print(f"  {k:15s} {v}")
    if figs:
        print(f"  {'figures':15s} {len(figs)} files in {Path(figs[0]).parent}")


def main(args) -> int:
    from pathlib import Path

    from jaxprobe.studies.sweep import run

    out = args.out or str(Path("runs") / Path(str(args.config)).stem)
    print_outputs(run(args.config, out, checkpoint=args.checkpoint, devices=args.devices))
    return 0
