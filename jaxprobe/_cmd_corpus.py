"""`jaxprobe corpus build|verify`: the embedded default corpus (torch_bridge.corpus).

Only parses arguments; torch_bridge is imported inside main so `import jaxprobe` and
`jaxprobe --help` never import torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """Build (or repair) the embedded default corpus: synthetic and real speech in train/dev/test
splits and 14 noise types, made locally from Debian packages (about a minute), or verify its
files against the manifest's checksums. Studies build it on demand."""

EPILOG = """examples:
  jaxprobe corpus build                  # -> ~/.cache/jaxprobe/corpus (or $JAXPROBE_CACHE/corpus)
  jaxprobe corpus verify --size tiny

outputs:
  manifest.json (ids, speakers, texts, durations, licences, checksums), speech/ and noise/ wavs;
  build prints a JSON line with what was built and kept"""


SIZES = ("default", "small", "tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("build", "verify"),
                        help="build: create or repair the corpus; verify: check files against the manifest")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="base folder (default $JAXPROBE_CACHE/corpus or ~/.cache/jaxprobe/corpus)")
    parser.add_argument("--size", choices=SIZES, default="default", help="corpus size (default: default)")
    parser.add_argument("--workers", type=int, default=None, help="parallel threads (default: CPU count)")
    parser.add_argument("--force", action="store_true", help="regenerate every file")


def main(args: argparse.Namespace) -> int:
    from torch_bridge.corpus import build as corpus_build

    if args.action == "build":
        report = corpus_build.build_corpus(args.cache_dir, size=args.size, workers=args.workers,
                                           force=args.force, log=print)
        kinds: dict[str, int] = {}
        for it in report.manifest["items"]:
            kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
        print(json.dumps({"root": str(report.root), "built": report.built, "kept": report.kept,
                          "seconds": round(report.seconds, 1), "items": kinds}))
        return 0
    root = corpus_build.corpus_root(args.cache_dir, args.size)
    manifest = corpus_build.read_manifest(root)
    if manifest is None:
        print(f"no manifest at {root}; run `jaxprobe corpus build --size {args.size}`")
        return 1
    bad = corpus_build.verify(root, manifest)
    print(f"{root}: {len(manifest['items'])} files, {len(bad)} missing or corrupt" +
          (f": {', '.join(bad[:10])}" if bad else ""))
    return 1 if bad else 0
