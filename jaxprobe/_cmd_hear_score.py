"""`jaxprobe hear-score`: human error rate per layer from listening-test answers.

Only parses arguments; the scorer is imported inside main."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """Score the answers of the hear study's listening test (one or more CSV files, columns
listener, triplet, model, regime, layer, condition, answer, truth; answer/truth A or B): the human
error rate of each (model, regime, layer, condition) cell with a 95 % bootstrap interval that
resamples listeners and triplets together, as a table and a figure beside the judge's EER (with
--results)."""

EPILOG = """example:
  jaxprobe hear-score answers-ann.csv answers-bob.csv --results runs/hear-demo/results.json --out runs/hear-score

outputs (in --out):
  human_error.csv, human_error.md, human_error_per_layer.png"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("answers", nargs="+", type=Path, help="answers CSV file(s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--results", type=Path, default=None, help="the study's results.json (the judge's EER)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from jaxprobe.report.hear_score import read_answers, score_answers, write_scores

    results = json.loads(args.results.read_text()) if args.results else None
    recs = score_answers(read_answers(args.answers), seed=args.seed, n_boot=args.n_boot)
    paths = write_scores(recs, args.out, results)
    print(paths["md"].read_text(), end="")
    return 0
