"""Writing a store: ``StoreWriter`` creates a store (or reopens a compatible one), takes
per-chunk locks and commits each chunk by one atomic folder rename."""
from __future__ import annotations

import errno
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .format import (CHECKSUM, CHUNK_DIGITS, FORMAT, IDENTITY, VERSION, Plan, canonical, fsync_dir, jsonable, layer_file,
                     save_json, save_npy, tmp_name)
from .integrity import StoreSettingsError, file_digest, seal
from .reader import ActivationStore


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
            layer_file(entry.get("name", ""))
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
        manifest = jsonable(manifest)
        (root / "plan").mkdir(parents=True, exist_ok=True)
        (root / "chunks").mkdir(exist_ok=True)
        mpath = root / "manifest.json"
        if not mpath.exists():
            # Plan files first (identical bytes from any writer), then the manifest as the
            # commit point, created only if absent (link fails if another writer won).
            for key in ("condition", "utterance", "window"):
                tmp = root / "plan" / tmp_name(key)
                save_npy(tmp, getattr(plan, key), durable)
                os.replace(tmp, root / "plan" / f"{key}.npy")
            tmp = root / tmp_name("manifest")
            save_json(tmp, manifest, durable)
            try:
                os.link(tmp, mpath)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            if durable:
                fsync_dir(root)
        super().__init__(root)
        theirs = {k: self.manifest.get(k) for k in IDENTITY}
        ours = {k: manifest[k] for k in IDENTITY}
        if canonical(theirs) != canonical(ours):
            diff = sorted(k for k in IDENTITY if canonical(theirs.get(k)) != canonical(ours.get(k)))
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
        wanted = {f"{k:0{CHUNK_DIGITS}d}" for k in chunks}
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
        from ..locks import try_lock

        d = self.path / "locks"
        d.mkdir(exist_ok=True)
        return try_lock(d / f"{chunk:0{CHUNK_DIGITS}d}.lock", purpose=f"dump of chunk {chunk}",
                        wait=wait, remove=True, log=log)

    def discard_chunk(self, chunk: int) -> None:
        """Remove committed chunk ``chunk`` (hold its ``chunk_lock``): renamed aside in one
        step, so readers see it either whole or absent, then deleted."""
        final = self.chunk_dir(chunk)
        aside = final.parent / tmp_name(final.name)
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
        tmp = final.parent / tmp_name(final.name)
        tmp.mkdir()
        try:
            files = {}
            for layer in self.layers:
                f = tmp / layer_file(layer)
                save_npy(f, arrays[layer], self.durable)
                size, digest = file_digest(f)
                files[f.name] = {"bytes": size, CHECKSUM: digest}
            meta = {"chunk": chunk, "items": [r.start, r.stop], "info": info, "files": files,
                    "writer": {"host": socket.gethostname(), "pid": os.getpid(),
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            save_json(tmp / "meta.json", seal(jsonable(meta)), self.durable)
            if self.durable:
                fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False  # another writer committed it first
                raise
            if self.durable:
                fsync_dir(final.parent)
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
