"""`jaxprobe enhance [--model muse|gtcrn|gtcrn:dns3] IN.wav OUT.wav`: denoise a file with MUSE
(default) or GTCRN (vctk or dns3 weights), each through its official inference pipeline.

Reads with soundfile; multichannel input is averaged to mono; any sample rate is accepted and
resampled to 16 kHz and back with torchaudio's sinc resampler. The output keeps the input's
sample rate and (MUSE) length; GTCRN's official pipeline drops the last L mod 256 samples at
16 kHz. It is written as 16-bit PCM (like the official scripts) unless ``--subtype`` says
otherwise; PCM output is clipped to [-1, 1].
"""
from __future__ import annotations

import argparse


DESCRIPTION = """Denoise a speech recording with MUSE (default) or GTCRN, through the model's official inference pipeline. Any sample
rate is accepted (resampled to 16 kHz and back); multichannel input is averaged to mono.
The output path is checked before the model runs."""

EPILOG = """example:
  jaxprobe enhance noisy.wav clean.wav --checkpoint ../shared/muse/g_best
  jaxprobe enhance noisy.wav clean.wav --model gtcrn:dns3

outputs:
  OUT (same sample rate and length as IN; 16-bit PCM unless --subtype says otherwise)"""

MODELS = ("muse", "gtcrn", "gtcrn:vctk", "gtcrn:dns3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="noisy audio file (any rate, mono or multichannel)")
    parser.add_argument("output", help="enhanced audio file to write")
    parser.add_argument("--model", default="muse", choices=MODELS, help="enhancement model (default: muse)")
    parser.add_argument("--checkpoint", default=None,
                        help="weights file (default: $JAXPROBE_MUSE_CHECKPOINT / $JAXPROBE_GTCRN_CHECKPOINT / "
                             "$JAXPROBE_GTCRN_DNS3_CHECKPOINT, the cache, or the verified download)")
    parser.add_argument("--subtype", default="PCM_16", help="soundfile subtype of the output, e.g. PCM_16 or FLOAT")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _check_output(path: str, subtype: str) -> None:
    """The output file can be written in that format, checked before the model runs."""
    import os
    from pathlib import Path

    import soundfile as sf

    from jaxprobe.errors import OutputPathError

    out = Path(path)
    if out.is_dir():
        raise OutputPathError(f"Cannot write {path!r}: it is a folder; give a file name such as {path}/enhanced.wav.")
    fmt = out.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise OutputPathError(f"Cannot write {path!r}: its extension {out.suffix or '(none)'!r} is not an audio "
                              "format soundfile writes; use .wav, .flac or .ogg.")
    if not sf.check_format(fmt, subtype.upper()):
        raise OutputPathError(f"--subtype {subtype!r} cannot be written as {fmt}; e.g. PCM_16, PCM_24 or FLOAT "
                              f"for WAV (see soundfile.available_subtypes({fmt!r})).")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"Cannot write {path!r}: the folder {str(parent)!r} does not exist.")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise OutputPathError(f"Cannot write {path!r}: permission denied.")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import soundfile as sf

    from jaxprobe.errors import ConfigError, DataError

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be an int >= 1; got {args.threads}.")
    try:
        audio, rate = sf.read(args.input, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        if not Path(args.input).exists():
            raise FileNotFoundError(f"Input file {args.input!r} does not exist.") from None
        raise DataError(f"Cannot read {args.input!r} as audio: {exc}. Give a wav, flac or ogg file.") from None
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if mono.size == 0 or not np.any(mono):
        raise DataError(f"{args.input!r} is empty or silent; nothing to enhance.")
    if not np.all(np.isfinite(mono)):
        raise DataError(f"{args.input!r} holds NaN or infinite samples; repair the file first.")
    _check_output(args.output, args.subtype)
    import torch

    from torch_bridge.muse_inference import enhance, load_muse

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.model.startswith("gtcrn"):
        from torch_bridge.models.gtcrn import gtcrn_enhance, load_gtcrn

        out = gtcrn_enhance(load_gtcrn(args.checkpoint, variant=args.model), mono, sample_rate=int(rate))
    else:
        out = enhance(load_muse(args.checkpoint), mono, sample_rate=int(rate))
    if args.subtype.upper().startswith("PCM"):
        out = np.clip(out, -1.0, 1.0)
    sf.write(args.output, out, rate, subtype=args.subtype)
    print(f"wrote {args.output} ({len(out) / rate:.2f} s at {rate} Hz)")
    return 0
