"""Probe what the layers of a speech model represent: run a study end to end (model ->
activation store -> CKA, bootstrap intervals, diffusion maps -> report), or one of its stages.

Start with `jaxprobe demo` (the SNR-sweep study of the MUSE and GTCRN enhancement models on the
embedded corpus and their comparison; a few minutes on a quiet 2-core CPU; the reports land in
runs/demo/{muse,gtcrn,compare}/report.html), then
`jaxprobe COMMAND --help` for what each command does, an example and what it writes.

A mistake in what you asked for (a bad config value, a file that is not audio, a folder
that cannot be written) is reported as one line on stderr with exit code 2; anything else
is a bug and prints a traceback with a request to report it. JAXPROBE_DEBUG=1 prints the
traceback for every error.
"""
# Implementation note: each subcommand lives in its own module (jaxprobe/_cmd_*.py, with
# DESCRIPTION, EPILOG, add_arguments and main) imported when the parser is built; none imports
# torch or JAX at module level, so `jaxprobe --help` stays fast.
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# name -> (module, one-line help).
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jaxprobe._cmd_demo", "Run the main job (the SNR-sweep study of MUSE and GTCRN, and their comparison) on the embedded default."),
    "sweep": ("jaxprobe._cmd_sweep", "The SNR-sweep probing study of MUSE, end to end, with its report."),
    "compare": ("jaxprobe._cmd_compare", "Compare models run on the same data: one report across several sweep runs."),
    "hear": ("jaxprobe._cmd_hear", "What does a layer hear? Recognisers, per-layer Highway probes, listening (Table 2, Figs. 2-4)."),
    "hear-score": ("jaxprobe._cmd_hear_score", "Score a listening test: human error rate per layer with intervals over listeners and triplets."),
    "dump": ("jaxprobe._cmd_dump", "Dump a model's pooled activations over an SNR sweep into a resumable store."),
    "store": ("jaxprobe._cmd_store", "Check an activation store: `jaxprobe store verify DIR` (sizes, checksums, missing chunks)."),
    "corpus": ("jaxprobe._cmd_corpus", "Build or verify the embedded default corpus (speech and noise)."),
    "enhance": ("jaxprobe._cmd_enhance", "Denoise a speech file with MUSE (official inference pipeline)."),
    "train-asr": ("jaxprobe._cmd_train_asr", "Train a CTC recogniser (VGG-LSTM or pure-LSTM, baseline or robust) on the embedded corpus."),
}

REPORT_URL = "the project's issue tracker"


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="jaxprobe", description="\n\n".join(doc[:3]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=getattr(mod, "DESCRIPTION", help_text),
                           epilog=getattr(mod, "EPILOG", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
    return parser


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a mistake in the user's input (reported as one line) rather than a bug.

    jaxprobe's and torch_bridge's UserError types (config values, audio files, checksums,
    output paths), plus missing files and failed downloads."""
    from jaxprobe.errors import UserError

    if isinstance(exc, (UserError, FileNotFoundError, ConnectionError)):
        return True
    tb = sys.modules.get("torch_bridge.errors")  # loaded only when a torch stage ran
    return tb is not None and isinstance(exc, tb.UserError)


def _debug() -> bool:
    return os.environ.get("JAXPROBE_DEBUG", "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (line breaks and runs of spaces collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    mod = importlib.import_module(args._module)
    prog = f"jaxprobe {args.command}"
    # The CLI is the application, so it owns the process-wide allocator setting: glibc keeps
    # freed heap memory for reuse instead of trimming it, so the many multi-MB temporaries of a
    # model's forward pass are not page-faulted in anew each time (the process keeps its peak heap).
    # No result changes; a MUSE window costs 1.08x less CPU (bench/bench_retain.py). Plain
    # ctypes, no torch; a no-op off glibc.
    from torch_bridge.runtime import retain_freed_memory

    retain_freed_memory()
    try:
        return int(mod.main(args) or 0)
    except KeyboardInterrupt:
        if _debug():
            traceback.print_exc()
        print(f"{prog}: interrupted; finished stages and chunks are kept: run the same command again to resume.",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: classify every error once
        if is_user_error(exc):
            if _debug():
                traceback.print_exc()
            print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"{prog}: internal error ({type(exc).__name__}): this is a bug in jaxprobe, not in your input. "
              f"Please report it on {REPORT_URL} with the command line and the traceback above.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
