"""`jaxprobe sweep --config CONFIG [--model NAME_OR_SPEC] [--checkpoint PATH] [--layers GLOB ...] [--out DIR]`."""
from __future__ import annotations


DESCRIPTION = """The SNR-sweep probing study of a speech model (MUSE by default), end to end: mix clean speech
with noise at every SNR, run the model and store its probed layers' pooled activations, then CKA against the clean
input (per utterance and per centroid, biased and debiased) with bootstrap intervals,
CKA-vs-SNR fits and depth trends, intra- and inter-layer diffusion maps, figures and a
report. The whole configuration is checked before any work starts; every stage is cached,
so a re-run recomputes only what changed and an interrupted run resumes."""

EPILOG = """examples:
  jaxprobe sweep --config demo --out runs/demo
  jaxprobe sweep --config my.toml --devices all       # keys and defaults: jaxprobe/studies/sweep/config.py
  jaxprobe sweep --config demo --model gtcrn --out runs/demo_gtcrn
  jaxprobe sweep --config demo --model mypkg.models:build --layers 'encoder.*' --out runs/mine
  XLA_FLAGS=--xla_force_host_platform_device_count=4 jaxprobe sweep --config demo --devices 4

outputs (in --out, default runs/<config name>):
  report.html, report.md   summary of findings first, figures, tables, settings in the appendix
  results.json             settings, data, layers, cka, regression, trends, diffusion
  cka.csv, regression.csv, table1.csv, trends.csv, cka_values.npz, figures/*.png|pdf
  config.json              the validated configuration; store/<fingerprint>/ the activation store

Results are bit-identical for --devices 1, 2, 4 and all."""


def add_arguments(p):
    p.add_argument("--config", default="demo",
                   help="TOML config file, or a shipped name: demo, paper, reverb-demo (default: demo)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--model", default=None,
                   help="model to probe (default: model.name of the config, muse): muse, gtcrn, gtcrn:dns3, "
                   "ctc:vgg_lstm, ctc:lstm, wav2vec2_base, hubert_base, wavlm_base, an entry-point name, or "
                   "package.module:function (docs/models.md)")
    p.add_argument("--checkpoint", default=None,
                   help="model weights (MUSE: else $JAXPROBE_MUSE_CHECKPOINT, the cache, the verified download; "
                   "GTCRN likewise; required for ctc:* and the SSL models)")
    p.add_argument("--layers", nargs="+", default=None, metavar="GLOB",
                   help="probe the modules whose named_modules() paths match these glob patterns (model.layers)")
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
    print_outputs(run(args.config, out, checkpoint=args.checkpoint, devices=args.devices, model=args.model,
                      layers=args.layers))
    return 0
