"""The `jaxprobe` command. It parses arguments and calls the library; nothing more.

Each subcommand lives in its own module and is imported only when it runs, so
`jaxprobe --help` stays fast and never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, help). The module defines `add_arguments(parser)` and `main(args) -> int`.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jaxprobe._cmd_demo", "Run the main job (the SNR-sweep study of MUSE) on the embedded default."),
    "sweep": ("jaxprobe._cmd_sweep", "The SNR-sweep probing study of MUSE, end to end, with its report."),
    "hear": ("jaxprobe._cmd_hear", "What does a layer hear? Recognisers, per-layer Highway probes, listening (Table 2, Figs. 2-4)."),
    "dump": ("jaxprobe._cmd_dump", "Dump a model's pooled activations over an SNR sweep into a resumable store."),
    "corpus": ("jaxprobe._cmd_corpus", "Build or verify the embedded default corpus (speech and noise)."),
    "enhance": ("jaxprobe._cmd_enhance", "Denoise a speech file with MUSE (official inference pipeline)."),
    "train-asr": ("jaxprobe._cmd_train_asr", "Train a CTC recogniser (VGG-LSTM or pure-LSTM, baseline or robust) on the embedded corpus."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxprobe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module)
        mod = importlib.import_module(module)
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    mod = importlib.import_module(args._module)
    from jaxprobe.config import ConfigError

    try:
        return int(mod.main(args) or 0)
    except (ConfigError, ConnectionError, FileNotFoundError) as exc:
        if os.environ.get("JAXPROBE_DEBUG"):
            raise
        print(f"jaxprobe {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
