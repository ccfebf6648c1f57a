"""`jaxprobe hear --config CONFIG [--out DIR] [--devices all|N]`."""
from __future__ import annotations


DESCRIPTION = """What does a layer hear? (Li et al.) Train CTC recognisers (VGG-LSTM and pure-LSTM, clean
and noise-robust) and a speaker model, dump every layer's activations, train a Highway probe
per layer that reconstructs the log-mel, resynthesise speech with Griffin-Lim and measure
STOI and speaker-verification EER per layer and condition. The configuration is checked
before any work starts; every stage is cached and resumable."""

EPILOG = """examples:
  jaxprobe hear --config demo                       # -> runs/hear-demo
  jaxprobe hear --config my.toml --out runs/mine    # keys and defaults: jaxprobe/studies/hear/config.py

outputs (in --out):
  report.html, report.md, results.json (asr, probe, reference, contrasts), CSV tables,
  figures/, wavs/ (reconstructions of two utterances per layer and condition)"""


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
