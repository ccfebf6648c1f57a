"""The dump pipeline: inputs -> model -> capture -> activation store, resumable and shardable.

``dump`` is generic over a model, a layer list and a sequence of items (what to run, in a
fixed order) plus a ``load(item)`` function that makes each item's input on demand (e.g.
mixing a clean utterance with noise at an SNR and cutting one window). Work is done chunk
by chunk; a committed chunk is never recomputed, so re-running a killed dump finishes it,
and ``shard=(i, n)`` lets n processes fill one store concurrently.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .capture import PoolingSpec, capture
from .store import Plan, StoreWriter

__all__ = ["DumpReport", "Item", "dump", "parse_shard"]


@dataclass(frozen=True)
class Item:
    """One unit of work: a condition (e.g. ``{"noise": "pink", "snr": 5}``; the clean
    reference is a condition too), an utterance id and a window number."""

    condition: Mapping[str, Any]
    utterance: str
    window: int = 0


@dataclass(frozen=True)
class DumpReport:
    store: str
    shard: tuple[int, int]
    chunks_written: int
    chunks_skipped: int
    items_written: int
    seconds: float


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ValueError(f"The 'shard' parameter must look like i/n, e.g. 0/4. Got {text!r} instead.") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"The 'shard' parameter i/n needs 0 <= i < n. Got {text!r} instead.")
    return i, n


def _layer_entry(layer: Any) -> dict[str, Any]:
    if isinstance(layer, str):
        return {"name": layer}
    if dataclasses.is_dataclass(layer) and not isinstance(layer, type):
        entry = dataclasses.asdict(layer)
    elif hasattr(layer, "_asdict"):
        entry = dict(layer._asdict())
    elif isinstance(layer, Mapping):
        entry = dict(layer)
    else:
        entry = {k: v for k, v in vars(layer).items() if not k.startswith("_")}
    if not isinstance(entry.get("name"), str):
        raise TypeError(f"A layer must be a module path or a record with a 'name'; got {layer!r}.")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in entry.items()}


def _describe(spec: Any) -> Any:
    if isinstance(spec, Mapping):
        return {k: _describe(v) for k, v in spec.items()}
    if callable(spec):
        return f"callable:{getattr(spec, '__module__', '?')}.{getattr(spec, '__qualname__', repr(spec))}"
    return spec


def dump(
    model: torch.nn.Module,
    layers: Sequence[Any],
    items: Sequence[Item],
    load: Callable[[Item], np.ndarray | tuple[np.ndarray, Mapping[str, Any]]],
    out: str,
    *,
    forward: Callable[[torch.nn.Module, torch.Tensor], Any] | None = None,
    pooling: PoolingSpec | Mapping[str, PoolingSpec] = "time_mean",
    side: str | Mapping[str, str] = "output",
    select: int | str | None = 0,
    batch_size: int = 4,
    chunk_size: int | None = None,
    shard: tuple[int, int] | str = (0, 1),
    model_info: Mapping[str, Any] | None = None,
    mixing: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    threads: int | None = None,
    progress: bool = True,
    durable: bool = True,
) -> DumpReport:
    """Run ``model`` on every item of this shard that the store at ``out`` lacks and commit
    the pooled activations of ``layers``.

    Parameters
    ----------
    model : torch.nn.Module (put it in eval mode yourself)
    layers : module paths or layer records (e.g. ``MUSE_LAYERS``); records go to the manifest
    items : sequence of Item, the plan; must be identical for every run and shard of a store
    load : item -> waveform (np.ndarray of shape (S,)) or (waveform, info dict); the info
        (e.g. mixing metadata) is stored per item
    forward : (model, batch tensor (B, S)) -> anything; default ``model(batch)``
    pooling, side, select : as in ``capture``
    batch_size : items per forward pass
    chunk_size : items per committed chunk (default ``4 * batch_size``)
    shard : (i, n) or "i/n": do chunks k with k % n == i
    model_info, mixing, extra : recorded in the manifest (model name, checkpoint sha256, ...)
    """
    if isinstance(shard, str):
        shard = parse_shard(shard)
    shard_i, n_shards = shard
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter of dump must be an int in [1, inf). Got {batch_size!r} instead.")
    chunk_size = 4 * batch_size if chunk_size is None else chunk_size
    entries = [_layer_entry(layer) for layer in layers]
    names = [e["name"] for e in entries]
    plan = Plan.from_items(items)
    writer = StoreWriter(
        out,
        plan=plan,
        layers=entries,
        chunk_size=chunk_size,
        model=model_info or {"class": type(model).__name__},
        capture={"pooling": _describe(pooling), "side": _describe(side), "select": select},
        mixing=mixing,
        extra=extra,
        durable=durable,
    )
    mine = writer.shard_chunks(shard_i, n_shards)
    writer.clean_temporaries(mine)
    todo = [k for k in mine if not writer.is_done(k)]
    pending = set(todo)
    done_items = sum(len(writer.chunk_items(k)) for k in mine if k not in pending)
    total_items = sum(len(writer.chunk_items(k)) for k in mine)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_items, initial=done_items, unit="seg", disable=not progress,
               desc=f"dump {shard_i}/{n_shards}", dynamic_ncols=True)
    call = forward or (lambda m, b: m(b))
    t0 = time.perf_counter()
    written = skipped = n_written_items = 0
    try:
        with capture(model, names, pooling, side, select=select, threads=threads) as acts:
            for k in todo:
                r = writer.chunk_items(k)
                acts.clear()
                infos: list[dict] = []
                for start in range(r.start, r.stop, batch_size):
                    batch, batch_info = [], []
                    for pos in range(start, min(start + batch_size, r.stop)):
                        got = load(items[pos])
                        wave, info = got if isinstance(got, tuple) else (got, {})
                        batch.append(np.asarray(wave, dtype=np.float32))
                        batch_info.append(dict(info))
                    if len({b.shape for b in batch}) > 1:
                        raise ValueError(
                            f"Items {start}..{start + len(batch) - 1} have inputs of different shapes "
                            f"{sorted({b.shape for b in batch})}; cut them to one window length or use batch_size=1."
                        )
                    call(model, torch.from_numpy(np.stack(batch)))
                    infos.extend(batch_info)
                    bar.update(len(batch))
                arrays = {}
                for name in names:
                    a = acts[name]
                    if a.shape[0] != len(r):
                        raise RuntimeError(
                            f"Layer {name!r} produced {a.shape[0]} rows for {len(r)} items: its module ran "
                            f"{acts.n_calls(name)} times for {-(-len(r) // batch_size)} batches. Capture a module that "
                            "runs once per forward pass."
                        )
                    arrays[name] = a
                if writer.write_chunk(k, arrays, infos):
                    written += 1
                    n_written_items += len(r)
                else:
                    skipped += 1
    finally:
        bar.close()
    return DumpReport(str(out), (shard_i, n_shards), written, len(mine) - len(todo) + skipped,
                      n_written_items, time.perf_counter() - t0)
