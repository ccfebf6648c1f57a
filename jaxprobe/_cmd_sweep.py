"""`jaxprobe sweep --config CONFIG [--out DIR] [--checkpoint PATH]`."""
from __future__ import annotations


DESCRIPTION = """The SNR-sweep probing study of MUSE, end to end: mix clean speech with noise at every SNR,
run MUSE and store the 24 probed layers' pooled activations, then CKA against the clean
input (per utterance and per centroid, biased and debiased) with bootstrap intervals,
CKA-vs-SNR fits and depth trends, intra- and inter-layer diffusion maps, figures and a
report. The whole configuration is checked before any work starts; every stage is cached,
so a re-run recomputes only what changed and an interrupted run resumes."""

EPILOG = """examples:
  jaxprobe sweep --config demo --out runs/demo
  jaxprobe sweep --config my.toml --devices all       # keys and defaults: jaxprobe/config.py
  XLA_FLAGS=--xla_force_host_platform_device_count=4 jaxprobe sweep --config demo --devices 4

outputs (in --out, default runs/<config name>):
  report.html, report.md   summary of findings first, figures, tables, settings in the appendix
  results.json             settings, data, layers, cka, regression, trends, diffusion
  cka.csv, regression.csv, table1.csv, trends.csv, cka_values.npz, figures/*.png|pdf
  config.json              the validated configuration; store/<fingerprint>/ the activation store

Results are bit-identical for --devices 1, 2, 4 and all."""


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
