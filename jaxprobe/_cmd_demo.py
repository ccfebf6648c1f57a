"""`jaxprobe demo`: the main job on the embedded default (= `jaxprobe sweep --config demo`)."""
from __future__ import annotations


DESCRIPTION = """Run the main job on the embedded default: the SNR-sweep study of the MUSE enhancement model
(4 real utterances x 4 noise types x 9 SNRs), the same as `jaxprobe sweep --config demo`.
About 3 minutes on a 2-core CPU; the MUSE checkpoint is taken from --checkpoint,
$JAXPROBE_MUSE_CHECKPOINT, the cache, or downloaded once and verified."""

EPILOG = """example:
  jaxprobe demo --out runs/demo

outputs (in --out):
  report.html, report.md   the report: summary of findings first, settings in the appendix
  results.json             every number of the report, with the settings that made it
  cka.csv, regression.csv, table1.csv, trends.csv, cka_values.npz, figures/*.png|pdf
  store/<fingerprint>/     the activation store (resumable; a re-run reuses it)"""


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--checkpoint", default=None, help="MUSE g_best path")


def main(args) -> int:
    from jaxprobe._cmd_sweep import print_outputs
    from jaxprobe.studies.sweep import run

    print_outputs(run("demo", args.out, checkpoint=args.checkpoint))
    return 0
