"""`jaxprobe dump`: mixing -> model -> capture -> activation store (resumable, shardable).

Parses arguments and calls ``torch_bridge.dump.run_dump``; torch is imported only here,
inside ``main``, so ``import jaxprobe`` and ``jaxprobe --help`` never import it."""
from __future__ import annotations

import argparse


DESCRIPTION = """Run a model over an SNR sweep (clean speech x noise types x SNRs, mixed reproducibly) and
write its probed layers' pooled activations into an activation store: one folder of plain
.npy chunks, committed atomically, so an interrupted dump resumes where it stopped and
several --shard writers can fill one store."""

EPILOG = """examples:
  jaxprobe dump --out store/ --snrs=-10:30:5 --utterances 8
  jaxprobe dump --data my_speech/ --noises my_noises/ --snrs=-5,0,5 --out store/ --shard 0/2
  jaxprobe dump --model gtcrn --out store_gtcrn/ --snrs=-5,0,5 --utterances 4
  jaxprobe dump --model mypkg.models:build --layers 'encoder.*' --out store_mine/ --snrs=0,10

outputs (in --out):
  manifest.json (model, checkpoint sha256, layer map, mixing settings, plan), plan/*.npy,
  chunks/NNNNNNN/<layer>.npy"""


def _snrs(text: str) -> list[float]:
    """'-10:30' (inclusive, step 1), '-10:30:5', or a comma list '-5,0,5'."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0):
                raise ValueError
            start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1.0
            n = int(round((stop - start) / step)) + 1
            values = [start + i * step for i in range(n) if start + i * step <= stop + 1e-9]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--snrs must be START:STOP[:STEP] (inclusive) or a comma list such as -5,0,5; got {text!r}."
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"--snrs gave no SNR; got {text!r}.")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise argparse.ArgumentTypeError(f"--snrs must not repeat an SNR; {dup} appear more than once in {text!r}.")
    return [int(v) if float(v).is_integer() else v for v in values]


def _count(low: int):
    """argparse type: an int >= low, the message naming what was expected and what arrived."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}.")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0; got {text!r}.")
    return v


def _shard(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 0 <= int(parts[0]) < int(parts[1]):
        raise argparse.ArgumentTypeError(f"--shard must be i/n with 0 <= i < n, e.g. 0/4; got {text!r}.")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="muse", help="model to run: muse (default), gtcrn, gtcrn:dns3, ctc:vgg_lstm, "
                   "ctc:lstm, wav2vec2_base, hubert_base, wavlm_base, a name registered under the jaxprobe.models "
                   "entry points, or package.module:function (docs/models.md)")
    p.add_argument("--checkpoint", help="model weights (MUSE/GTCRN default: $JAXPROBE_MUSE_CHECKPOINT / "
                   "$JAXPROBE_GTCRN_CHECKPOINT, the cache, then the verified download; required for ctc:* and SSL)")
    p.add_argument("--layers", nargs="+", metavar="GLOB", help="probe the modules whose named_modules() paths match "
                   "these glob patterns instead of the model's canonical layers")
    p.add_argument("--data", default="embedded", help="folder of clean speech files (wav/flac/ogg, searched "
                   "recursively), or 'embedded' for the embedded corpus (default)")
    p.add_argument("--split", choices=["train", "dev", "test", "real"], default="test",
                   help="embedded corpus split: synthetic train/dev/test, or 'real' (human prompts); default test")
    p.add_argument("--noises", help="folder of noise recordings (one noise type per file) or a DEMAND tree "
                   "(default: the embedded corpus noises)")
    p.add_argument("--noise-types", help="comma list of noise ids to use (default: all)")
    p.add_argument("--snrs", type=_snrs, default=_snrs("-10:30"), help="SNRs in dB: START:STOP[:STEP] (inclusive) or a comma list; write --snrs=-10:30 when the value starts with a minus sign (default -10:30)")
    p.add_argument("--utterances", type=_count(1), help="use the first N >= 1 utterances (default: all)")
    p.add_argument("--seed", type=int, default=0, help="mixing seed (default 0)")
    p.add_argument("--duration", type=_positive_float, default=10.0, help="center-trim utterances to this many seconds (default 10)")
    p.add_argument("--short", choices=["keep", "pad", "skip"], default="keep", help="policy for shorter utterances")
    p.add_argument("--windows", choices=["first", "center", "all"], default="center", help="model windows per mixture")
    p.add_argument("--hop", type=_count(1), help="hop in samples for --windows all (default: the window length)")
    p.add_argument("--no-clean", action="store_true", help="do not dump the clean reference")
    p.add_argument("--out", required=True, help="store folder (created, or resumed when it exists)")
    p.add_argument("--shard", type=_shard, default="0/1", help="do shard i of n (chunks k with k %% n == i)")
    p.add_argument("--batch-size", type=_count(1), default=1, help="windows per forward pass (default 1, the fastest "
                   "per window for MUSE on a CPU; use 8 or more on a GPU)")
    p.add_argument("--device", default="cpu", help="torch device of the model, e.g. cpu or cuda (default cpu)")
    p.add_argument("--chunk-size", type=_count(1), help="windows per committed chunk (default: the existing store's, else 16)")
    p.add_argument("--threads", type=_count(1), help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from jaxprobe.studies._common import ensure_writable_dir

    ensure_writable_dir(args.out, "--out")  # before the data, the model or any mixture
    from torch_bridge.dump import run_dump

    report = run_dump(
        model=args.model, checkpoint=args.checkpoint, layers=args.layers, data=args.data, split=args.split, noises=args.noises,
        noise_types=args.noise_types.split(",") if args.noise_types else None, snrs=args.snrs,
        utterances=args.utterances, seed=args.seed, duration=args.duration, short=args.short,
        window_mode=args.windows, hop=args.hop, include_clean=not args.no_clean, out=args.out,
        shard=args.shard, batch_size=args.batch_size, chunk_size=args.chunk_size,
        threads=args.threads, device=args.device, progress=not args.quiet,
    )
    print(f"{report.store}: shard {report.shard[0]}/{report.shard[1]}: wrote {report.chunks_written} chunk(s) "
          f"({report.items_written} windows) in {report.seconds:.1f} s; {report.chunks_skipped} already done.")
    return 0
