"""How a store tells intact from damaged: the checksum of a file (``file_digest``) and the
seal of a ``meta.json``, the errors that name what is wrong and how to repair it, and
``StoreCheck``, the report of a whole-store check."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from ..errors import UserError
from .format import CHECKSUM, canonical


def _repair_hint(root: Path) -> str:
    return (f"Run `jaxprobe store verify {root}` to list every problem, then re-run the `jaxprobe dump` "
            "(or `jaxprobe sweep`) that made this store: it recomputes damaged and missing chunks.")


class StoreIntegrityError(UserError, ValueError):
    """Files of a store do not match what was recorded when they were committed.

    ``problems`` : list of (path, what is wrong) pairs; ``store`` : the store folder;
    ``chunks`` : ids of the damaged chunks (recomputable), empty when the manifest or plan is."""

    def __init__(self, store: Path, problems: Sequence[tuple[str, str]], hint: str | None = None):
        self.store, self.problems = Path(store), list(problems)
        self.chunks = sorted({int(Path(p).parent.name) for p, _ in self.problems
                              if Path(p).parent.name.isdigit() and Path(p).parent.parent.name == "chunks"})
        lines = "\n".join(f"  {p}: {w}" for p, w in self.problems[:10])
        more = f"\n  ... and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
        super().__init__(f"Store {store} is damaged ({len(self.problems)} problem(s)):\n{lines}{more}\n"
                         f"{hint or _repair_hint(Path(store))}")


class StoreSettingsError(UserError, ValueError):
    """A store folder holds activations made with other settings than the ones asked for now
    (a user's choice of --out, not a bug: the CLI reports it in one line)."""


class LegacyStoreError(StoreIntegrityError):
    """A store written before checksums were recorded (version 1): its content cannot be verified."""

    def __init__(self, store: Path):
        store = Path(store)
        super().__init__(store, [(str(store / "manifest.json"), "store version 1 records no checksums")],
                         "It was written by an older jaxprobe, so nothing can tell whether its files are intact. "
                         f"Either record checksums of the files as they are now (this trusts them): "
                         f"`jaxprobe store verify --rehash {store}`; or delete the folder and re-run the dump.")


_BLOCK = 8 << 20


def file_digest(path: str | os.PathLike) -> tuple[int, str]:
    """(size in bytes, xxh3_64 hex digest) of a file, read in blocks of 8 MB (one read call
    for a chunk file: cheaper than an mmap per small file)."""
    h = xxhash.xxh3_64()
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        view = memoryview(bytearray(max(1, min(size, _BLOCK))))
        while n := f.readinto(view):
            h.update(view[:n])
    return size, h.hexdigest()


def seal(meta: dict) -> dict:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return {**body, "checksum": {CHECKSUM: xxhash.xxh3_64_hexdigest(canonical(body).encode())}}


def seal_ok(meta: dict) -> bool:
    return isinstance(meta.get("checksum"), dict) and seal(meta)["checksum"] == meta["checksum"]


@dataclass
class StoreCheck:
    """What ``verify_store`` found. ``problems``: chunk id -> list of (path, what);
    ``missing``: chunks not committed yet; ``legacy``: a version-1 store (no checksums)."""

    path: Path
    n_chunks: int
    checked: int = 0
    n_bytes: int = 0
    seconds: float = 0.0
    problems: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    legacy: bool = False
    store_problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.problems or self.missing or self.legacy or self.store_problems)
