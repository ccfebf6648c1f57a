"""The activation store: pooled activations on disk, per layer, in committed chunks.

Layout (a folder; every file is plain ``.npy`` or JSON)::

    store/
      manifest.json              written once, atomically; the store's identity
      plan/condition.npy         (n_items,) int32  row of manifest["plan"]["conditions"]
      plan/utterance.npy         (n_items,) int32  row of manifest["plan"]["utterances"]
      plan/window.npy            (n_items,) int32  window number within the utterance
      chunks/0000012/            chunk 12 = plan items [12·chunk_size, 13·chunk_size)
        <layer path>.npy         (n_chunk_items, *pooled shape), e.g. (8, 16, 128)
        meta.json                item range, per-item metadata (mixing info), and the size
                                 and xxh3_64 checksum of every layer file; sealed by a
                                 checksum of its own content
      locks/                     per-chunk writer locks (transient)

The plan (the full list of (condition, utterance, window) items, in order) is fixed when the
store is created; chunk ``k`` always holds the same items, so a chunk is either absent or
complete. A chunk is written into a temporary folder (``chunks/.tmp-…``) and committed by one
``rename`` of that folder, which POSIX makes atomic; a rename onto an existing chunk fails, so
two writers can never both commit one chunk. A killed writer leaves at most a temporary
folder, which readers ignore and the next writer of that chunk removes. Writers of disjoint
shards (chunk ``k`` belongs to shard ``k % n``) fill one store concurrently.

Reads are memory-mapped (``np.load(..., mmap_mode="r")``), so an analysis can stream a store
larger than RAM chunk by chunk (``iter_chunks``) or gather the rows it needs (``read``).

Integrity. The store never trusts what is on disk: each layer file is checked against the
size and checksum recorded at commit the first time a reader touches it, and a chunk's
``meta.json`` must match its own seal. A file not read yet is read once, whole, hashed and used
from that buffer, so checking adds no pass over the data (``bench/bench_store.py``: the checked
read path is no slower than the unchecked memory-mapped one; hashing alone costs about half a
warm read). A damaged, truncated or missing file raises
``StoreIntegrityError`` naming the file and how to repair it; ``verify`` (``jaxprobe store
verify DIR``) lists every problem; ``dump`` recomputes damaged chunks of its shard.
``content_key()`` digests every recorded checksum: results cached on a store are keyed on it.
Stores of version 1 (before checksums) are refused with how to upgrade (``rehash``).
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .errors import UserError

__all__ = ["ActivationStore", "Chunk", "LegacyStoreError", "Plan", "StoreCheck", "StoreIndex",
           "StoreIntegrityError", "StoreWriter", "open_store", "rehash_store", "verify_store"]

FORMAT = "jaxprobe-activation-store"
VERSION = 2  # 2: every chunk file's size and xxh3_64 checksum in meta.json
CHECKSUM = "xxh3_64"
_CHUNK_DIGITS = 7
# Manifest fields that define what the store holds; a writer that reopens a store must agree.
_IDENTITY = ("format", "version", "model", "layers", "capture", "mixing", "chunk_size", "n_items", "plan")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_json_value(v: Any, where: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{where} holds the non-finite value {v!r}; JSON cannot store it. Use None or a string.")
    if v is not None and not isinstance(v, (str, int, float, bool)):
        raise TypeError(f"{where} must hold str, int, float, bool or None values; got {type(v).__name__} ({v!r}).")


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Plan:
    """Every item of a study in a fixed order: ``(condition, utterance, window)``.

    conditions : list of dict, the distinct conditions (e.g. ``{"noise": "pink", "snr": 5}``)
    utterances : list of str, the distinct utterance ids
    condition, utterance, window : int32 arrays of shape (n_items,) (codes into the tables)
    """

    conditions: list[dict]
    utterances: list[str]
    condition: np.ndarray
    utterance: np.ndarray
    window: np.ndarray

    @classmethod
    def from_items(cls, items: Sequence[Any]) -> "Plan":
        """Build from items with ``condition`` (mapping), ``utterance`` (str) and ``window``
        (int) attributes (e.g. ``torch_bridge.dump.Item``), in the order given."""
        cond_code: dict[str, int] = {}
        utt_code: dict[str, int] = {}
        conditions, utterances, c, u, w, seen = [], [], [], [], [], set()
        for i, it in enumerate(items):
            cond = dict(it.condition)
            for k, v in cond.items():
                if not isinstance(k, str):
                    raise TypeError(f"Item {i}: condition keys must be str; got {k!r}.")
                _check_json_value(v, f"Item {i} condition {k!r}")
            key = _canonical(cond)
            if key not in cond_code:
                cond_code[key] = len(conditions)
                conditions.append(cond)
            if not isinstance(it.utterance, str):
                raise TypeError(f"Item {i}: utterance must be a str id; got {it.utterance!r}.")
            if it.utterance not in utt_code:
                utt_code[it.utterance] = len(utterances)
                utterances.append(it.utterance)
            win = int(it.window)
            triple = (cond_code[key], utt_code[it.utterance], win)
            if triple in seen:
                raise ValueError(f"Item {i} repeats (condition {cond}, utterance {it.utterance!r}, window {win}); items must be unique.")
            seen.add(triple)
            c.append(triple[0])
            u.append(triple[1])
            w.append(win)
        if not c:
            raise ValueError("A store plan needs at least one item; got none.")
        as32 = lambda a: np.asarray(a, dtype=np.int32)  # noqa: E731
        return cls(conditions, utterances, as32(c), as32(u), as32(w))

    def __len__(self) -> int:
        return int(self.condition.shape[0])

    def sha256(self) -> str:
        h = hashlib.sha256()
        h.update(_canonical({"conditions": self.conditions, "utterances": self.utterances}).encode())
        for a in (self.condition, self.utterance, self.window):
            h.update(np.ascontiguousarray(a, dtype="<i4").tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class StoreIndex:
    """Which items rows refer to. All arrays have shape (n,), aligned with the rows.

    item : int64, position in the plan
    condition, utterance : int32 codes into ``conditions`` / ``utterances``
    window : int32
    """

    item: np.ndarray
    condition: np.ndarray
    utterance: np.ndarray
    window: np.ndarray
    conditions: list[dict] = field(repr=False)
    utterances: list[str] = field(repr=False)

    def condition_field(self, name: str) -> np.ndarray:
        """The value of one condition field per row (e.g. ``"snr"``, ``"noise"``); object
        array where values are mixed, None where a condition lacks the field."""
        table = np.array([c.get(name) for c in self.conditions], dtype=object)
        values = table[self.condition]
        kinds = {type(v) for v in table}
        if kinds <= {int, float} and kinds:
            return values.astype(np.float64)
        if kinds == {str}:
            return values.astype(str)
        return values

    def utterance_ids(self) -> np.ndarray:
        return np.asarray(self.utterances, dtype=str)[self.utterance]

    def __len__(self) -> int:
        return int(self.item.shape[0])


@dataclass(frozen=True)
class Chunk:
    """One committed chunk: ``arrays[layer]`` has shape (n, *pooled shape), rows aligned
    with ``index`` (memory-mapped unless read with ``mmap=False``)."""

    id: int
    index: StoreIndex
    arrays: dict[str, np.ndarray]


# ----------------------------------------------------------------------------- files
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_npy(path: Path, array: np.ndarray, durable: bool) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to Python; non-finite floats to the strings 'inf', '-inf', 'nan'
    (JSON has no such numbers) so metadata such as a LUFS of -inf is kept, not lost."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _save_json(path: Path, obj: Any, durable: bool) -> None:
    with open(path, "w") as f:
        json.dump(_jsonable(obj), f, indent=1, sort_keys=True, allow_nan=False)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _tmp_name(prefix: str) -> str:
    return f".tmp-{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _layer_file(layer: str) -> str:
    if not layer or "/" in layer or layer.startswith(".") or "\0" in layer:
        raise ValueError(f"Layer name {layer!r} cannot be used as a file name in the store.")
    return layer + ".npy"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from importlib.metadata import version

        for pkg in ("torch", "torchaudio", "jaxprobe"):
            try:
                out[pkg] = version(pkg)
            except Exception:  # noqa: BLE001 - a missing package is simply not listed
                pass
    except ImportError:  # pragma: no cover
        pass
    return out


# ----------------------------------------------------------------------------- integrity
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


def _npy_from_bytes(buf: bytearray, path: Path) -> np.ndarray:
    """The array of a whole .npy file held in ``buf``, without a copy."""
    import io

    f = io.BytesIO(memoryview(buf)[:1 << 16])  # the header only (BytesIO copies what it is given)
    fmt = np.lib.format
    version = fmt.read_magic(f)
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects; the store holds numbers only.")
    a = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape)), offset=f.tell())
    return a.reshape(shape, order="F" if fortran else "C")


def _seal(meta: dict) -> dict:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return {**body, "checksum": {CHECKSUM: xxhash.xxh3_64_hexdigest(_canonical(body).encode())}}


def _seal_ok(meta: dict) -> bool:
    return isinstance(meta.get("checksum"), dict) and _seal(meta)["checksum"] == meta["checksum"]


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


# ----------------------------------------------------------------------------- reader
class ActivationStore:
    """Read-only, lazy view of a store folder (safe to open while writers are running).

    Every layer file is checked against its recorded size and checksum the first time this
    object reads it; a mismatch raises StoreIntegrityError naming the file."""

    def __init__(self, path: str | os.PathLike, *, _legacy_ok: bool = False):
        self.path = Path(path)
        self._metas: dict[int, dict] = {}
        self._verified: set[tuple[int, str]] = set()
        self._bytes_hashed = 0
        self._count_lock = threading.Lock()
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(
                f"{self.path} is not an activation store (no manifest.json). Create one with "
                "`jaxprobe dump` or torch_bridge.dump.dump()."
            )
        try:
            with open(mpath) as f:
                self.manifest: dict = json.load(f)
        except ValueError as exc:
            raise StoreIntegrityError(self.path, [(str(mpath), f"not valid JSON ({exc})")],
                                      "The manifest cannot be rebuilt from the chunks: delete the folder and re-run the dump.") from None
        self.legacy = self.manifest.get("format") == FORMAT and self.manifest.get("version") == 1
        if self.legacy and not _legacy_ok:
            raise LegacyStoreError(self.path)
        if self.manifest.get("format") != FORMAT or (self.manifest.get("version") != VERSION and not self.legacy):
            raise ValueError(
                f"{mpath} is format {self.manifest.get('format')!r} version {self.manifest.get('version')!r}; "
                f"this reader understands {FORMAT!r} version {VERSION}."
            )
        p = self.manifest["plan"]
        arrays = {}
        for k in ("condition", "utterance", "window"):
            ppath = self.path / "plan" / f"{k}.npy"
            try:
                arrays[k] = np.load(ppath, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise StoreIntegrityError(self.path, [(str(ppath), f"unreadable ({exc})")],
                                          "The plan is fixed by the manifest: delete the folder and re-run the dump.") from None
        self.plan = Plan(p["conditions"], p["utterances"], arrays["condition"], arrays["utterance"], arrays["window"])
        if self.plan.sha256() != p["sha256"]:
            raise StoreIntegrityError(self.path, [(str(self.path / "plan"), "the plan files do not match manifest.json (sha256 differs)")],
                                      "The plan is fixed by the manifest: delete the folder and re-run the dump.")
        self.layers: list[str] = [entry["name"] for entry in self.manifest["layers"]]
        self.chunk_size: int = int(self.manifest["chunk_size"])
        self.n_items: int = int(self.manifest["n_items"])
        self.n_chunks: int = -(-self.n_items // self.chunk_size)

    # -- structure
    def chunk_items(self, chunk: int) -> range:
        """Plan positions held by chunk ``chunk``."""
        if not 0 <= chunk < self.n_chunks:
            raise IndexError(f"Chunk {chunk} is out of range [0, {self.n_chunks}).")
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n_items))

    def chunk_dir(self, chunk: int) -> Path:
        return self.path / "chunks" / f"{chunk:0{_CHUNK_DIGITS}d}"

    def done_chunks(self) -> list[int]:
        """Ids of the committed chunks, ascending (temporary folders are ignored)."""
        d = self.path / "chunks"
        if not d.is_dir():
            return []
        ids = [int(n) for n in os.listdir(d) if n.isdigit()]
        return sorted(i for i in ids if i < self.n_chunks)

    def missing_chunks(self) -> list[int]:
        done = set(self.done_chunks())
        return [k for k in range(self.n_chunks) if k not in done]

    def is_complete(self) -> bool:
        return len(self.done_chunks()) == self.n_chunks

    def require_complete(self) -> None:
        missing = self.missing_chunks()
        if missing:
            raise RuntimeError(
                f"Store {self.path} is incomplete: {len(missing)} of {self.n_chunks} chunks missing "
                f"(first: {missing[:5]}). Re-run the same `jaxprobe dump` command to finish it."
            )

    # -- index
    def _index_for(self, items: np.ndarray) -> StoreIndex:
        items = np.asarray(items, dtype=np.int64)
        return StoreIndex(
            item=items,
            condition=self.plan.condition[items],
            utterance=self.plan.utterance[items],
            window=self.plan.window[items],
            conditions=self.plan.conditions,
            utterances=self.plan.utterances,
        )

    def index(self, *, complete_only: bool = False) -> StoreIndex:
        """The (condition, utterance, window) index of the committed items, in plan order
        (``complete_only=True``: raise unless every chunk is there)."""
        if complete_only:
            self.require_complete()
        chunks = self.done_chunks()
        items = [np.arange(r.start, r.stop) for r in map(self.chunk_items, chunks)]
        return self._index_for(np.concatenate(items) if items else np.zeros(0, np.int64))

    def plan_index(self) -> StoreIndex:
        """The index of every planned item, whether written yet or not."""
        return self._index_for(np.arange(self.n_items))

    # -- arrays
    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            import difflib

            close = difflib.get_close_matches(layer, self.layers, n=3)
            raise KeyError(f"Layer {layer!r} is not in store {self.path}. Closest: {close}; all layers: store.layers.")

    def chunk(self, chunk: int, layer: str, *, mmap: bool = True) -> np.ndarray:
        """The array of one layer in one committed chunk: shape (n, *pooled shape), checked
        against its recorded size and checksum on first use."""
        self._check_layer(layer)
        path = self.chunk_dir(chunk) / _layer_file(layer)
        if not self.chunk_dir(chunk).is_dir():
            raise FileNotFoundError(f"Chunk {chunk} of {self.path} is not committed yet (no folder {self.chunk_dir(chunk)}).")
        if not mmap or (chunk, layer) not in self._verified:
            buf = self._checked_bytes(chunk, layer)
            if not mmap:
                try:
                    return _npy_from_bytes(buf, path)
                except ValueError as exc:
                    raise StoreIntegrityError(self.path, [(str(path), f"unreadable ({exc})")]) from None
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StoreIntegrityError(self.path, [(str(path), f"unreadable ({exc})")]) from None

    def _checked_bytes(self, chunk: int, layer: str) -> bytearray:
        """The bytes of one layer file, read once and checked against meta.json (size and
        checksum); raises StoreIntegrityError naming the file."""
        problems = self._file_problems(chunk, layer, hash=False)
        if problems:
            raise StoreIntegrityError(self.path, problems)
        path = self.chunk_dir(chunk) / _layer_file(layer)
        rec = self.chunk_meta(chunk)["files"][path.name]
        buf = bytearray(rec["bytes"])
        with open(path, "rb", buffering=0) as f:
            n = f.readinto(buf)
        got = xxhash.xxh3_64_hexdigest(buf)
        if n != len(buf) or got != rec[CHECKSUM]:
            raise StoreIntegrityError(self.path, [(str(path), f"content changed since commit ({CHECKSUM} {got}, recorded {rec[CHECKSUM]})")])
        self._bytes_hashed += n
        self._verified.add((chunk, layer))
        return buf

    def _read_meta(self, chunk: int) -> tuple[dict | None, list[tuple[str, str]]]:
        path = self.chunk_dir(chunk) / "meta.json"
        try:
            with open(path) as f:
                meta = json.load(f)
        except FileNotFoundError:
            return None, [(str(path), "missing (the chunk folder exists, so its commit was damaged)")]
        except (OSError, ValueError) as exc:
            return None, [(str(path), f"unreadable ({exc})")]
        if not isinstance(meta, dict):
            return None, [(str(path), "not a JSON object")]
        if self.legacy:
            return meta, []
        if not _seal_ok(meta):
            return None, [(str(path), "its content does not match its recorded checksum")]
        if meta.get("chunk") != chunk or not isinstance(meta.get("files"), dict):
            return None, [(str(path), f"describes chunk {meta.get('chunk')!r}, not {chunk}, or lists no files")]
        return meta, []

    def chunk_meta(self, chunk: int) -> dict:
        """A committed chunk's meta.json (checked against its seal)."""
        if chunk not in self._metas:
            meta, problems = self._read_meta(chunk)
            if problems:
                raise StoreIntegrityError(self.path, problems)
            self._metas[chunk] = meta
        return self._metas[chunk]

    def _file_problems(self, chunk: int, layer: str, *, hash: bool) -> list[tuple[str, str]]:
        meta = self.chunk_meta(chunk)
        name = _layer_file(layer)
        path = self.chunk_dir(chunk) / name
        rec = meta["files"].get(name)
        if not isinstance(rec, dict) or CHECKSUM not in rec:
            return [(str(path), f"meta.json records no {CHECKSUM} checksum for it")]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return [(str(path), "missing")]
        if size != rec["bytes"]:
            return [(str(path), f"{size} bytes; {rec['bytes']} were committed (truncated or overwritten)")]
        if hash:
            got = file_digest(path)[1]
            with self._count_lock:
                self._bytes_hashed += size
            if got != rec[CHECKSUM]:
                return [(str(path), f"content changed since commit ({CHECKSUM} {got}, recorded {rec[CHECKSUM]})")]
        return []

    def chunk_problems(self, chunk: int, *, hash: bool = True) -> list[tuple[str, str]]:
        """What is wrong with committed chunk ``chunk`` (empty: intact): its meta.json and
        every layer file (size, and with ``hash`` the checksum)."""
        self._metas.pop(chunk, None)
        meta, problems = self._read_meta(chunk)
        if problems:
            return problems
        self._metas[chunk] = meta
        out = []
        for layer in self.layers:
            got = self._file_problems(chunk, layer, hash=hash)
            out += got
            if not got and hash:
                self._verified.add((chunk, layer))
        return out

    def verify(self, *, hash: bool = True, chunks: Sequence[int] | None = None,
               progress: Callable[[int], None] | None = None) -> StoreCheck:
        """Check every committed chunk (or ``chunks``); see StoreCheck."""
        t0 = time.perf_counter()
        rep = StoreCheck(self.path, self.n_chunks, legacy=self.legacy)
        done = self.done_chunks()
        rep.missing = [k for k in range(self.n_chunks) if k not in set(done)] if chunks is None else []
        b0 = self._bytes_hashed

        def check(k: int) -> list[tuple[str, str]]:
            if self.legacy:
                probs = self._read_meta(k)[1]
                return probs + [(str(self.chunk_dir(k) / _layer_file(layer)), "missing") for layer in self.layers
                                if not (self.chunk_dir(k) / _layer_file(layer)).is_file()]
            return self.chunk_problems(k, hash=hash)

        # reading and hashing release the GIL: a few threads overlap the per-file system calls
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for k, probs in zip(todo := list(done if chunks is None else chunks), pool.map(check, todo)):
                if probs:
                    rep.problems[k] = probs
                rep.checked += 1
                if progress is not None:
                    progress(k)
        rep.n_bytes = self._bytes_hashed - b0
        rep.seconds = time.perf_counter() - t0
        return rep

    def content_key(self) -> str:
        """sha256 over the store's identity and every committed chunk's recorded checksums,
        item range and item metadata: it changes whenever what the store holds changes (a
        chunk added, recomputed with other values, or replaced). Reads only the meta.json
        files (cheap); raises StoreIntegrityError when one is damaged."""
        if self.legacy:
            raise LegacyStoreError(self.path)
        h = hashlib.sha256(_canonical({k: self.manifest.get(k) for k in _IDENTITY}).encode())
        for k in self.done_chunks():
            meta = self.chunk_meta(k)
            h.update(_canonical([k, meta["items"], meta["files"], meta["info"]]).encode())
        return h.hexdigest()

    def layer_shape(self, layer: str) -> tuple[int, ...]:
        """Pooled shape of one item (without the item axis)."""
        done = self.done_chunks()
        if not done:
            raise RuntimeError(f"Store {self.path} has no committed chunk yet.")
        return tuple(self.chunk(done[0], layer).shape[1:])

    def iter_chunks(self, layers: Sequence[str] | None = None, *, mmap: bool = True) -> Iterator[Chunk]:
        """Yield the committed chunks in plan order with memory-mapped arrays."""
        layers = list(self.layers if layers is None else layers)
        for layer in layers:
            self._check_layer(layer)
        for k in self.done_chunks():
            r = self.chunk_items(k)
            arrays = {layer: self.chunk(k, layer, mmap=mmap) for layer in layers}
            yield Chunk(k, self._index_for(np.arange(r.start, r.stop)), arrays)

    def read(self, layer: str, items: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Rows of ``layer`` for plan positions ``items`` (default: every committed item, in
        plan order), gathered into one in-memory array of shape (len(items), *pooled)."""
        self._check_layer(layer)
        if items is None:
            items = self.index().item
        items = np.asarray(items, dtype=np.int64)
        if items.ndim != 1 or (items.size and (items.min() < 0 or items.max() >= self.n_items)):
            raise IndexError(f"'items' must be a 1-D array of plan positions in [0, {self.n_items}).")
        shape = self.layer_shape(layer)
        first = self.chunk(self.done_chunks()[0], layer)
        out = np.empty((items.size, *shape), dtype=first.dtype)
        chunk_of = items // self.chunk_size
        for k in np.unique(chunk_of):
            rows = np.nonzero(chunk_of == k)[0]
            # a file not read yet is read once, whole, and checked; a checked one is mapped
            a = self.chunk(int(k), layer, mmap=(int(k), layer) in self._verified)
            out[rows] = a[items[rows] - k * self.chunk_size]
        return out

    def info(self, items: Sequence[int] | np.ndarray | None = None) -> list[dict]:
        """Per-item metadata (e.g. the mixing info) for plan positions ``items``."""
        if items is None:
            items = self.index().item
        out, cache = [], {}
        for i in np.asarray(items, dtype=np.int64):
            k = int(i) // self.chunk_size
            if k not in cache:
                cache[k] = self.chunk_meta(k)["info"]
            out.append(cache[k][int(i) - k * self.chunk_size])
        return out

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, layers={len(self.layers)}, items={self.n_items}, chunks={len(self.done_chunks())}/{self.n_chunks})"


def open_store(path: str | os.PathLike) -> ActivationStore:
    """Open a store folder for lazy, memory-mapped reading (each file verified on first read)."""
    return ActivationStore(path)


def verify_store(path: str | os.PathLike, *, hash: bool = True,
                 progress: Callable[[int], None] | None = None) -> StoreCheck:
    """Check a whole store: every committed chunk's meta.json and layer files (sizes, and
    with ``hash`` the checksums), and which chunks are missing. A version-1 store is
    checked for missing files only and reported as ``legacy``."""
    try:
        store = ActivationStore(path, _legacy_ok=True)
    except StoreIntegrityError as exc:
        check = StoreCheck(Path(path), 0)
        check.store_problems = exc.problems
        return check
    return store.verify(hash=hash, progress=progress)


def rehash_store(path: str | os.PathLike, *, durable: bool = True) -> StoreCheck:
    """Upgrade a version-1 store (no checksums) in place: record the size and checksum of
    every chunk file as it is now, seal each meta.json, then mark the manifest version 2.
    This trusts the current bytes; chunks that are structurally broken (no meta.json, a
    missing file) are left as they are and reported, so a re-run of the dump recomputes them."""
    root = Path(path)
    store = ActivationStore(root, _legacy_ok=True)
    if not store.legacy:
        raise ValueError(f"Store {root} already records checksums (version {VERSION}); nothing to rehash. "
                         f"Use `jaxprobe store verify {root}` to check it.")
    t0 = time.perf_counter()
    check = StoreCheck(root, store.n_chunks, missing=store.missing_chunks())
    for k in store.done_chunks():
        meta, probs = store._read_meta(k)
        files = {}
        for layer in store.layers:
            f = store.chunk_dir(k) / _layer_file(layer)
            if not f.is_file():
                probs.append((str(f), "missing"))
                continue
            size, digest = file_digest(f)
            check.n_bytes += size
            files[f.name] = {"bytes": size, CHECKSUM: digest}
        check.checked += 1
        if probs:
            check.problems[k] = probs
            continue
        tmp = store.chunk_dir(k) / _tmp_name("meta")
        _save_json(tmp, _seal(_jsonable({**meta, "files": files})), durable)
        os.replace(tmp, store.chunk_dir(k) / "meta.json")
    tmp = root / _tmp_name("manifest")
    _save_json(tmp, {**store.manifest, "version": VERSION, "rehashed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, durable)
    os.replace(tmp, root / "manifest.json")
    if durable:
        _fsync_dir(root)
    check.seconds = time.perf_counter() - t0
    return check


# ----------------------------------------------------------------------------- writer
class StoreWriter(ActivationStore):
    """Creates a store (or reopens a compatible one) and commits chunks atomically.

    Parameters
    ----------
    path : folder of the store
    plan : Plan
    layers : sequence of dict, each with at least ``name`` (the module path); further keys
        (block, index, shape, skip) are kept in the manifest as the layer map
    chunk_size : items per chunk (fixed for the life of the store)
    model, capture, mixing : dicts recorded in the manifest (e.g. model name and checkpoint
        sha256; pooling and side; the mixing settings); part of the store's identity
    extra : dict recorded in the manifest but not part of the identity
    durable : fsync files and folders before each commit (survives power loss, not only kills)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        plan: Plan,
        layers: Sequence[Mapping[str, Any]],
        chunk_size: int,
        model: Mapping[str, Any] | None = None,
        capture: Mapping[str, Any] | None = None,
        mixing: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        durable: bool = True,
    ):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"The 'chunk_size' parameter of StoreWriter must be an int in [1, inf). Got {chunk_size!r} instead.")
        layer_map = [dict(entry) for entry in layers]
        for entry in layer_map:
            _layer_file(entry.get("name", ""))
        names = [e["name"] for e in layer_map]
        if len(set(names)) != len(names):
            raise ValueError(f"The 'layers' parameter of StoreWriter repeats names: {names}.")
        root = Path(path)
        self.durable = durable
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "model": dict(model or {}),
            "layers": layer_map,
            "capture": dict(capture or {}),
            "mixing": dict(mixing or {}),
            "chunk_size": chunk_size,
            "n_items": len(plan),
            "plan": {"sha256": plan.sha256(), "conditions": plan.conditions, "utterances": plan.utterances},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": _versions(),
            "extra": dict(extra or {}),
        }
        manifest = _jsonable(manifest)
        (root / "plan").mkdir(parents=True, exist_ok=True)
        (root / "chunks").mkdir(exist_ok=True)
        mpath = root / "manifest.json"
        if not mpath.exists():
            # Plan files first (identical bytes from any writer), then the manifest as the
            # commit point, created only if absent (link fails if another writer won).
            for key in ("condition", "utterance", "window"):
                tmp = root / "plan" / _tmp_name(key)
                _save_npy(tmp, getattr(plan, key), durable)
                os.replace(tmp, root / "plan" / f"{key}.npy")
            tmp = root / _tmp_name("manifest")
            _save_json(tmp, manifest, durable)
            try:
                os.link(tmp, mpath)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            if durable:
                _fsync_dir(root)
        super().__init__(root)
        theirs = {k: self.manifest.get(k) for k in _IDENTITY}
        ours = {k: manifest[k] for k in _IDENTITY}
        if _canonical(theirs) != _canonical(ours):
            diff = sorted(k for k in _IDENTITY if _canonical(theirs.get(k)) != _canonical(ours.get(k)))
            raise StoreSettingsError(
                f"Store {root} was created with different settings ({', '.join(diff)} differ). "
                "Write to a new --out folder, or delete the old store to start over."
            )

    def shard_chunks(self, shard: int = 0, num_shards: int = 1) -> list[int]:
        """Chunks that belong to shard ``shard`` of ``num_shards`` (chunk k -> shard k % n)."""
        if not (isinstance(num_shards, int) and num_shards >= 1 and isinstance(shard, int) and 0 <= shard < num_shards):
            raise ValueError(f"Shard must satisfy 0 <= shard < num_shards; got shard={shard!r}, num_shards={num_shards!r}.")
        return list(range(shard, self.n_chunks, num_shards))

    def clean_temporaries(self, chunks: Sequence[int]) -> int:
        """Remove temporary folders left by killed writers of ``chunks`` (call only for
        chunks no live writer is working on, i.e. your own shard). Returns how many."""
        d = self.path / "chunks"
        wanted = {f"{k:0{_CHUNK_DIGITS}d}" for k in chunks}
        n = 0
        for name in os.listdir(d):
            if name.startswith(".tmp-") and name[5:].split("-", 1)[0] in wanted:
                shutil.rmtree(d / name, ignore_errors=True)
                n += 1
        return n

    def is_done(self, chunk: int) -> bool:
        """Whether chunk ``chunk`` was committed (intact or not: see ``chunk_problems``)."""
        return self.chunk_dir(chunk).is_dir()

    def chunk_lock(self, chunk: int, *, wait: float = 0.0, log: Callable[[str], None] | None = None):
        """Context manager yielding True while this process is the one writer of ``chunk``
        (False: another live writer holds it after ``wait`` seconds; negative: wait for it).
        Writers sharing a store take chunks, not the whole store, so shards and repeated runs
        proceed side by side. A lock left by a killed writer is reported to ``log``."""
        from .locks import try_lock

        d = self.path / "locks"
        d.mkdir(exist_ok=True)
        return try_lock(d / f"{chunk:0{_CHUNK_DIGITS}d}.lock", purpose=f"dump of chunk {chunk}",
                        wait=wait, remove=True, log=log)

    def discard_chunk(self, chunk: int) -> None:
        """Remove committed chunk ``chunk`` (hold its ``chunk_lock``): renamed aside in one
        step, so readers see it either whole or absent, then deleted."""
        final = self.chunk_dir(chunk)
        aside = final.parent / _tmp_name(final.name)
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)
        self._metas.pop(chunk, None)
        self._verified = {v for v in self._verified if v[0] != chunk}

    def write_chunk(self, chunk: int, arrays: Mapping[str, np.ndarray], info: Sequence[Mapping[str, Any]] | None = None) -> bool:
        """Commit chunk ``chunk`` atomically. ``arrays[layer]`` has shape (n, ...) with n the
        chunk's item count; every store layer must be given. Returns False (and writes
        nothing) when the chunk was already committed."""
        r = self.chunk_items(chunk)
        n = len(r)
        missing = [layer for layer in self.layers if layer not in arrays]
        extra = [layer for layer in arrays if layer not in self.layers]
        if missing or extra:
            raise ValueError(f"write_chunk({chunk}) needs exactly the store layers; missing {missing}, unexpected {extra}.")
        for layer, a in arrays.items():
            if a.shape[:1] != (n,):
                raise ValueError(f"write_chunk({chunk}): layer {layer!r} has {a.shape[:1]} rows; the chunk holds {n} items.")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"write_chunk({chunk}): layer {layer!r} holds non-finite values; refusing to store them.")
        info = [dict(i) for i in info] if info is not None else [{} for _ in r]
        if len(info) != n:
            raise ValueError(f"write_chunk({chunk}): got {len(info)} info records for {n} items.")
        if self.is_done(chunk):
            return False
        final = self.chunk_dir(chunk)
        tmp = final.parent / _tmp_name(final.name)
        tmp.mkdir()
        try:
            files = {}
            for layer in self.layers:
                f = tmp / _layer_file(layer)
                _save_npy(f, arrays[layer], self.durable)
                size, digest = file_digest(f)
                files[f.name] = {"bytes": size, CHECKSUM: digest}
            meta = {"chunk": chunk, "items": [r.start, r.stop], "info": info, "files": files,
                    "writer": {"host": socket.gethostname(), "pid": os.getpid(),
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            _save_json(tmp / "meta.json", _seal(_jsonable(meta)), self.durable)
            if self.durable:
                _fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False  # another writer committed it first
                raise
            if self.durable:
                _fsync_dir(final.parent)
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
