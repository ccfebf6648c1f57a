"""The activation store: pooled activations on disk, per layer, in committed chunks.

Layout (a folder; every file is plain ``.npy`` or JSON)::

    store/
      manifest.json              written once, atomically; the store's identity
      plan/condition.npy         (n_items,) int32  row of manifest["plan"]["conditions"]
      plan/utterance.npy         (n_items,) int32  row of manifest["plan"]["utterances"]
      plan/window.npy            (n_items,) int32  window number within the utterance
      chunks/0000012/            chunk 12 = plan items [12·chunk_size, 13·chunk_size)
        <layer path>.npy         (n_chunk_items, *pooled shape), e.g. (8, 16, 128)
        meta.json                item range and per-item metadata (mixing info)

The plan (the full list of (condition, utterance, window) items, in order) is fixed when the
store is created; chunk ``k`` always holds the same items, so a chunk is either absent or
complete. A chunk is written into a temporary folder (``chunks/.tmp-…``) and committed by one
``rename`` of that folder, which POSIX makes atomic; a rename onto an existing chunk fails, so
two writers can never both commit one chunk. A killed writer leaves at most a temporary
folder, which readers ignore and the next writer of that chunk removes. Writers of disjoint
shards (chunk ``k`` belongs to shard ``k % n``) fill one store concurrently.

Reads are memory-mapped (``np.load(..., mmap_mode="r")``), so an analysis can stream a store
larger than RAM chunk by chunk (``iter_chunks``) or gather the rows it needs (``read``).
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
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ActivationStore", "Chunk", "Plan", "StoreIndex", "StoreWriter", "open_store"]

FORMAT = "jaxprobe-activation-store"
VERSION = 1
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


# ----------------------------------------------------------------------------- reader
class ActivationStore:
    """Read-only, lazy view of a store folder (safe to open while writers are running)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(
                f"{self.path} is not an activation store (no manifest.json). Create one with "
                "`jaxprobe dump` or torch_bridge.dump.dump()."
            )
        with open(mpath) as f:
            self.manifest: dict = json.load(f)
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise ValueError(
                f"{mpath} is format {self.manifest.get('format')!r} version {self.manifest.get('version')!r}; "
                f"this reader understands {FORMAT!r} version {VERSION}."
            )
        p = self.manifest["plan"]
        arrays = {k: np.load(self.path / "plan" / f"{k}.npy", allow_pickle=False) for k in ("condition", "utterance", "window")}
        self.plan = Plan(p["conditions"], p["utterances"], arrays["condition"], arrays["utterance"], arrays["window"])
        if self.plan.sha256() != p["sha256"]:
            raise ValueError(f"The plan files under {self.path / 'plan'} do not match manifest.json (sha256 differs); the store is damaged.")
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
        """The array of one layer in one committed chunk: shape (n, *pooled shape)."""
        self._check_layer(layer)
        path = self.chunk_dir(chunk) / _layer_file(layer)
        if not path.is_file():
            raise FileNotFoundError(f"Chunk {chunk} of {self.path} is not committed yet (no {path.name}).")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)

    def chunk_meta(self, chunk: int) -> dict:
        with open(self.chunk_dir(chunk) / "meta.json") as f:
            return json.load(f)

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
            out[rows] = self.chunk(int(k), layer)[items[rows] - k * self.chunk_size]
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
    """Open a store folder for lazy, memory-mapped reading."""
    return ActivationStore(path)


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
            raise ValueError(
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
        return (self.chunk_dir(chunk) / "meta.json").is_file()

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
            for layer in self.layers:
                _save_npy(tmp / _layer_file(layer), arrays[layer], self.durable)
            meta = {"chunk": chunk, "items": [r.start, r.stop], "info": info,
                    "writer": {"host": socket.gethostname(), "pid": os.getpid(),
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            _save_json(tmp / "meta.json", meta, self.durable)
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
