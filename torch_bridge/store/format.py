"""The store's on-disk format: its constants, what a store holds (``Plan``, ``StoreIndex``,
``Chunk``), canonical JSON, file names, and the durable writes every file of a store goes
through (a temporary name, fsync, then a rename by the caller). The layout itself is described
in the package docstring (``torch_bridge/store/__init__.py``)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "jaxprobe-activation-store"
VERSION = 2  # 2: every chunk file's size and xxh3_64 checksum in meta.json
CHECKSUM = "xxh3_64"
CHUNK_DIGITS = 7
# Manifest fields that define what the store holds; a writer that reopens a store must agree.
IDENTITY = ("format", "version", "model", "layers", "capture", "mixing", "chunk_size", "n_items", "plan")


def canonical(obj: Any) -> str:
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
            key = canonical(cond)
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
        h.update(canonical({"conditions": self.conditions, "utterances": self.utterances}).encode())
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
def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_npy(path: Path, array: np.ndarray, durable: bool) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to Python; non-finite floats to the strings 'inf', '-inf', 'nan'
    (JSON has no such numbers) so metadata such as a LUFS of -inf is kept, not lost."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def save_json(path: Path, obj: Any, durable: bool) -> None:
    with open(path, "w") as f:
        json.dump(jsonable(obj), f, indent=1, sort_keys=True, allow_nan=False)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def tmp_name(prefix: str) -> str:
    return f".tmp-{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def layer_file(layer: str) -> str:
    if not layer or "/" in layer or layer.startswith(".") or "\0" in layer:
        raise ValueError(f"Layer name {layer!r} cannot be used as a file name in the store.")
    return layer + ".npy"
