"""`jaxprobe enhance IN.wav OUT.wav`: denoise a file with MUSE (the official inference pipeline).

Reads with soundfile; multichannel input is averaged to mono; any sample rate is accepted and
resampled to 16 kHz and back with torchaudio's sinc resampler. The output keeps the input's
sample rate and length and is written as 16-bit PCM (like the official script) unless
``--subtype`` says otherwise; PCM output is clipped to [-1, 1].
"""
from __future__ import annotations

import argparse
import sys


DESCRIPTION = """Denoise a speech recording with MUSE, through the official inference pipeline. Any sample
rate is accepted (resampled to 16 kHz and back); multichannel input is averaged to mono.
The output path is checked before the model runs."""

EPILOG = """example:
  jaxprobe enhance noisy.wav clean.wav --checkpoint ../shared/muse/g_best

outputs:
  OUT (same sample rate and length as IN; 16-bit PCM unless --subtype says otherwise)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="noisy audio file (any rate, mono or multichannel)")
    parser.add_argument("output", help="enhanced audio file to write")
    parser.add_argument("--checkpoint", default=None,
                        help="MUSE g_best file (default: $JAXPROBE_MUSE_CHECKPOINT, the cache, or the verified download)")
    parser.add_argument("--subtype", default="PCM_16", help="soundfile subtype of the output, e.g. PCM_16 or FLOAT")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile as sf
    import torch

    from torch_bridge.enhance import enhance, load_muse

    if args.threads is not None:
        if args.threads < 1:
            print(f"jaxprobe enhance: --threads must be >= 1; got {args.threads}.", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        audio, rate = sf.read(args.input, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        print(f"jaxprobe enhance: cannot read {args.input!r}: {exc}", file=sys.stderr)
        return 2
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if mono.size == 0 or not np.any(mono):
        print(f"jaxprobe enhance: {args.input!r} is empty or silent; nothing to enhance.", file=sys.stderr)
        return 2
    model = load_muse(args.checkpoint)
    out = enhance(model, mono, sample_rate=int(rate))
    if args.subtype.upper().startswith("PCM"):
        out = np.clip(out, -1.0, 1.0)
    sf.write(args.output, out, rate, subtype=args.subtype)
    print(f"wrote {args.output} ({len(out) / rate:.2f} s at {rate} Hz)")
    return 0
