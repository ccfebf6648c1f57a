"""`jaxprobe compare RUN_DIR RUN_DIR ... --out DIR`."""
from __future__ import annotations


DESCRIPTION = """Compare models run on the same data: one report across several `jaxprobe sweep` runs (one
per model) — the CKA-vs-SNR curves of every layer, the slope/intercept profile against
normalised depth with each run's bootstrap intervals, the block summaries side by side, and
the cross-model CKA of every layer pair over the same clean inputs (read from each run's
activation store) as a heatmap, with a permutation null. Runs whose data, SNR levels or seed
differ are refused, naming each difference."""

EPILOG = """example:
  jaxprobe sweep --config demo --model muse  --out runs/demo/muse
  jaxprobe sweep --config demo --model gtcrn --out runs/demo/gtcrn
  jaxprobe compare runs/demo/muse runs/demo/gtcrn --out runs/demo/compare    (what `jaxprobe demo` does)

outputs (in --out):
  report.html, report.md   summary of findings, the runs, figures, side-by-side tables
  results.json             every number of the report, with the settings that made it
  profile.csv, curves.csv, blocks.csv, trends.csv, cross_cka.csv, figures/*.png|pdf"""


def add_arguments(p):
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output folders of `jaxprobe sweep` (two or more)")
    p.add_argument("--out", required=True, help="output folder of the comparison")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one label per RUN_DIR (default: the model names, with the folder names if they repeat)")
    p.add_argument("--protocol", default=None, help="utterance or centroid (default: RUN_DIR 1's headline)")
    p.add_argument("--estimator", default=None, help="biased or debiased (default: RUN_DIR 1's headline)")
    p.add_argument("--inputs", nargs="+", default=["clean"], choices=("clean", "all"),
                   help="input sets of the cross-model CKA: clean (the clean utterances; default) and/or all "
                        "(every clean and noisy input); one heatmap per model pair and set")
    p.add_argument("--permutations", type=int, default=999,
                   help="random orderings of the permutation null when there are more than 7 inputs (default 999)")
    p.add_argument("--formats", default="png,pdf", help="figure files: png,pdf (default) or png")


def main(args) -> int:
    from jaxprobe._cmd_sweep import print_outputs
    from jaxprobe.studies.compare import run

    formats = tuple(f.strip() for f in str(args.formats).split(",") if f.strip())
    print_outputs(run(args.runs, args.out, labels=args.labels, protocol=args.protocol, estimator=args.estimator,
                      inputs=args.inputs, n_perm=args.permutations, formats=formats))
    return 0
