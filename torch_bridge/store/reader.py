"""Reading a store: ``ActivationStore`` (lazy, memory-mapped, every file checked on first
read), ``open_store``, and the two whole-store operations that open a store in the reader's
legacy mode, ``verify_store`` and ``rehash_store`` (``jaxprobe store verify [--rehash]``)."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import xxhash

from .format import (CHECKSUM, CHUNK_DIGITS, FORMAT, IDENTITY, VERSION, Chunk, Plan, StoreIndex, canonical, fsync_dir,
                     jsonable, layer_file, save_json, tmp_name)
from .integrity import LegacyStoreError, StoreCheck, StoreIntegrityError, file_digest, seal, seal_ok


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
        return self.path / "chunks" / f"{chunk:0{CHUNK_DIGITS}d}"

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
        path = self.chunk_dir(chunk) / layer_file(layer)
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
        path = self.chunk_dir(chunk) / layer_file(layer)
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
        if not seal_ok(meta):
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
        name = layer_file(layer)
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
                return probs + [(str(self.chunk_dir(k) / layer_file(layer)), "missing") for layer in self.layers
                                if not (self.chunk_dir(k) / layer_file(layer)).is_file()]
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
        h = hashlib.sha256(canonical({k: self.manifest.get(k) for k in IDENTITY}).encode())
        for k in self.done_chunks():
            meta = self.chunk_meta(k)
            h.update(canonical([k, meta["items"], meta["files"], meta["info"]]).encode())
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
            f = store.chunk_dir(k) / layer_file(layer)
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
        tmp = store.chunk_dir(k) / tmp_name("meta")
        save_json(tmp, seal(jsonable({**meta, "files": files})), durable)
        os.replace(tmp, store.chunk_dir(k) / "meta.json")
    tmp = root / tmp_name("manifest")
    save_json(tmp, {**store.manifest, "version": VERSION, "rehashed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, durable)
    os.replace(tmp, root / "manifest.json")
    if durable:
        fsync_dir(root)
    check.seconds = time.perf_counter() - t0
    return check
