"""`jaxprobe store verify DIR [--rehash] [--quick]`: check an activation store.

Exit status 0: every chunk committed and intact. 1: something is wrong (damaged, missing or
not-yet-written chunks, or a store from before checksums), listed one file per line with how
to fix it. Reads the store with numpy only (no torch)."""
from __future__ import annotations

import argparse

DESCRIPTION = """Check an activation store (what `jaxprobe dump` and `jaxprobe sweep` write). Every chunk's
meta.json records the size and xxh3_64 checksum of each layer file when it was committed;
`verify` checks them all and lists each damaged, truncated or missing file and the chunks not
written yet, with how to repair them (re-run the dump that made the store: it recomputes only
those chunks)."""

EPILOG = """examples:
  jaxprobe store verify runs/demo/muse/store/<fingerprint>
  jaxprobe store verify --quick store/          # sizes and meta.json only, no hashing
  jaxprobe store verify --rehash old_store/     # a store from before checksums (version 1)

outputs:
  none; a report on stdout. Exit status 0: intact and complete; 1: something is wrong (listed);
  2: not a store. --rehash rewrites each chunk's meta.json and the manifest (version 2)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check every chunk of a store against the sizes and checksums recorded "
                       "when it was written; exit 0 when intact and complete, 1 otherwise",
                       description="Check every committed chunk of an activation store: its meta.json, and each "
                       "layer file's size and xxh3_64 checksum as recorded at commit. Lists each damaged or "
                       "missing file and the chunks not written yet. Exit status 0: intact and complete; 1: not.")
    v.add_argument("store", metavar="DIR", help="the store folder (the one holding manifest.json)")
    v.add_argument("--quick", action="store_true", help="check file sizes and meta.json only, not the checksums")
    v.add_argument("--rehash", action="store_true",
                   help="upgrade a store written before checksums (version 1): record the checksums of its files "
                   "as they are now (this trusts them), then verify")


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def main(args: argparse.Namespace) -> int:
    import sys

    from torch_bridge.store import rehash_store, verify_store

    if args.rehash:
        try:
            done = rehash_store(args.store)
        except ValueError as exc:  # already version 2: nothing to trust blindly
            print(f"jaxprobe store verify: error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.store}: recorded checksums of {done.checked} chunk(s) ({_size(done.n_bytes)}) "
              f"in {done.seconds:.2f} s; the store is now version 2.")
    from tqdm.auto import tqdm

    with tqdm(unit="chunk", desc="verify", disable=None, leave=False, file=sys.stderr) as bar:  # off when not a terminal
        check = verify_store(args.store, hash=not args.quick, progress=lambda _k: bar.update())
    lines = []
    for path, what in check.store_problems:
        lines.append(f"  {path}: {what}")
    for k in sorted(check.problems):
        lines += [f"  {path}: {what}" for path, what in check.problems[k]]
    if check.legacy:
        print(f"{args.store}: written by an older jaxprobe (store version 1): it records no checksums, so its "
              f"contents cannot be verified. To upgrade, trusting the files as they are now: "
              f"`jaxprobe store verify --rehash {args.store}`; or delete it and re-run the dump.")
    how = "hashed" if not args.quick else "size-checked"
    print(f"{args.store}: {check.checked} of {check.n_chunks} chunk(s) checked, {_size(check.n_bytes)} {how} "
          f"in {check.seconds:.2f} s.")
    if lines:
        n_bad = len(check.problems)
        print(f"{len(lines)} problem(s)" + (f" in {n_bad} chunk(s)" if n_bad else "") + ":")
        print("\n".join(lines))
    if check.missing:
        print(f"{len(check.missing)} chunk(s) not written yet (first: {check.missing[:8]}).")
    if check.problems or check.missing:
        print("To repair: re-run the `jaxprobe dump` (or `jaxprobe sweep`) that made this store; it recomputes "
              "damaged and missing chunks and keeps the intact ones.")
    if check.store_problems:
        print("The manifest or plan is damaged: they cannot be rebuilt from the chunks; delete the folder and "
              "re-run the dump.")
    if check.ok:
        print("intact and complete.")
    return 0 if check.ok else 1
