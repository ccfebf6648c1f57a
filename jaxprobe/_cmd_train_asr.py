"""`jaxprobe train-asr`: train a CTC recogniser (VGG-LSTM or pure-LSTM) on the embedded corpus.

Only parses arguments; torch_bridge is imported inside main so `jaxprobe --help` never imports torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


DESCRIPTION = """Train one CTC character recogniser of the hear study (VGG-LSTM or pure-LSTM) on the
embedded corpus, clean (baseline) or with noise mixed at random SNRs (robust). Checkpoints
are atomic and training resumes from the last one."""

EPILOG = """example:
  jaxprobe train-asr --model lstm --regime robust --out runs/asr-lstm-robust --max-minutes 10

outputs (in --out):
  checkpoint.pt, metrics.json (held-out CER/WER, examples); prints the metrics as JSON"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("vgg_lstm", "lstm"), default="vgg_lstm", help="architecture (default vgg_lstm)")
    parser.add_argument("--regime", choices=("baseline", "robust"), default="baseline",
                        help="baseline: clean speech; robust: noise mixed at random SNRs (default baseline)")
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and metrics.json")
    parser.add_argument("--size", choices=("default", "small", "tiny"), default="default", help="corpus size")
    parser.add_argument("--cache-dir", type=Path, default=None, help="corpus base folder")
    parser.add_argument("--max-steps", type=int, default=3000, help="optimiser steps (default 3000)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-3 vgg_lstm, 3e-3 lstm)")
    parser.add_argument("--hidden", type=int, default=64, help="LSTM units per direction (default 64)")
    parser.add_argument("--channels", type=int, nargs=4, default=(8, 8, 16, 16), help="VGG conv widths (default 8 8 16 16)")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between held-out evaluations (0: end only)")
    parser.add_argument("--held-out", choices=("dev", "test"), default="dev", help="held-out split (default dev)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0: torch default)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from jaxprobe.studies._common import ensure_writable_dir

    ensure_writable_dir(args.out, "--out")  # before the corpus or any training
    from torch_bridge.models.asr import AsrConfig
    from torch_bridge.train_asr import TrainConfig, train_on_corpus

    asr = AsrConfig(model=args.model, hidden=args.hidden, channels=tuple(args.channels))
    cfg = TrainConfig(regime=args.regime, batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
                      max_minutes=args.max_minutes, eval_every=args.eval_every, seed=args.seed, threads=args.threads or None)
    res = train_on_corpus(args.out, model=args.model, regime=args.regime, size=args.size, asr_config=asr,
                          config=cfg, held_out_split=args.held_out, cache_dir=args.cache_dir,
                          resume=not args.no_resume, progress=not args.quiet, log=print)
    print(json.dumps({k: v for k, v in res.metrics.items() if k != "examples"}))
    for ex in res.metrics["examples"]:
        print(f"  ref: {ex['ref']}\n  hyp: {ex['hyp']}")
    return 0
