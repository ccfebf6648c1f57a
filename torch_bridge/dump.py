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

from .hooks import PoolingSpec, capture
from .store import Plan, StoreWriter

__all__ = ["DumpModel", "DumpReport", "DumpStopped", "Item", "dump", "dump_snr_sweep", "dump_spec_sweep", "muse_dump_model", "parse_shard",
           "run_dump", "spec_batch_size", "spec_model_info", "sweep_items"]


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


DEFAULT_CHUNK_SIZE = 16


def _existing_chunk_size(out) -> int | None:
    import json
    from pathlib import Path

    path = Path(out) / "manifest.json"
    if not path.is_file():
        return None
    with open(path) as f:
        return int(json.load(f)["chunk_size"])


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


class DumpStopped(RuntimeError):
    """A dump was asked to stop (its ``stop`` event was set) before it finished."""


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
    log: Callable[[str], None] | None = None,
    check: str = "full",
    recompute: Sequence[int] = (),
    stop: Any = None,
) -> DumpReport:
    """Run ``model`` on every item of this shard that the store at ``out`` lacks and commit
    the pooled activations of ``layers``. Committed chunks of the shard are checked first
    (``check``); a damaged one is named (``log``, default stderr) and recomputed.
    Each chunk is computed under its own lock, so several processes on one store (shards,
    or the same command twice) never compute a chunk twice and never block each other.

    Parameters
    ----------
    model : torch.nn.Module (put it in eval mode yourself)
    layers : module paths or layer records (e.g. ``MUSE_LAYERS``); records go to the manifest
    items : sequence of Item, the plan; must be identical for every run and shard of a store
    load : item -> waveform (np.ndarray of shape (S,)) or (waveform, info dict); the info
        (e.g. mixing metadata) is stored per item
    forward : (model, batch tensor (B, S) on the CPU) -> anything; default ``model(batch)``
        with the batch moved to the model's device
    pooling, side, select : as in ``capture``
    batch_size : items per forward pass
    chunk_size : items per committed chunk, fixed for the life of a store (default: the
        existing store's, else 16); independent of ``batch_size``, so a resumed dump may use
        another batch size
    shard : (i, n) or "i/n": do chunks k with k % n == i
    model_info, mixing, extra : recorded in the manifest (model name, checkpoint sha256, ...)
    check : how committed chunks of the shard are checked first: "full" (sizes, meta.json
        seals and checksums: every byte is read) or "quick" (sizes and seals; for callers that
        read every file next anyway, where each file is checksummed on first read)
    recompute : chunk ids to recompute even if they pass the check (e.g. the chunks named by
        a StoreIntegrityError raised while reading)
    stop : a ``threading.Event`` (or anything with ``is_set()``), optional: checked before every
        forward pass; once set, the dump raises :class:`DumpStopped` without committing the chunk
        in progress (committed chunks stay; a re-run resumes). Lets a caller stop worker threads
        promptly (Ctrl-C, or another worker's failure) instead of waiting for their whole share.
    """
    if isinstance(shard, str):
        shard = parse_shard(shard)
    shard_i, n_shards = shard
    if check not in ("full", "quick"):
        raise ValueError(f"The 'check' parameter of dump must be 'full' or 'quick'. Got {check!r} instead.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter of dump must be an int in [1, inf). Got {batch_size!r} instead.")
    if chunk_size is None:
        chunk_size = _existing_chunk_size(out) or DEFAULT_CHUNK_SIZE
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
    say = log or _stderr
    mine = writer.shard_chunks(shard_i, n_shards)
    checked = writer.verify(chunks=[k for k in mine if writer.is_done(k)], hash=check == "full")
    if checked.seconds > 2:
        say(f"store: checked {checked.checked} committed chunk(s) ({checked.n_bytes / 1e9:.2f} GB hashed) "
            f"in {checked.seconds:.1f} s")
    damaged = checked.problems
    for k in recompute:
        if k in mine and writer.is_done(k):
            damaged.setdefault(k, [(str(writer.chunk_dir(k)), "named for recomputation")])
    for k, problems in sorted(damaged.items()):
        say(f"store: chunk {k} is damaged, recomputing it: " + "; ".join(f"{p}: {w}" for p, w in problems[:3]))
    todo = [k for k in mine if not writer.is_done(k) or k in damaged]
    pending = set(todo)
    done_items = sum(len(writer.chunk_items(k)) for k in mine if k not in pending)
    total_items = sum(len(writer.chunk_items(k)) for k in mine)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_items, initial=done_items, unit="seg", disable=not progress,
               desc=f"dump {shard_i}/{n_shards}", dynamic_ncols=True)
    call = forward or _plain_forward
    t0 = time.perf_counter()
    written = skipped = n_written_items = 0

    def claim(k: int) -> bool:
        """Holding chunk k's lock: True when k still needs computing (a damaged or torn
        commit and any temporary of a killed writer are removed first)."""
        if writer.is_done(k):
            if k not in recompute and not writer.chunk_problems(k, hash=check == "full"):
                return False  # another writer committed it meanwhile
            writer.discard_chunk(k)
        writer.clean_temporaries([k])
        return True

    def compute(k: int, acts) -> bool:
        r = writer.chunk_items(k)
        acts.clear()
        infos: list[dict] = []
        order: list[int] = []
        for start in range(r.start, r.stop, batch_size):
            if stop is not None and stop.is_set():
                raise DumpStopped(f"Dump into {out} stopped before item {start} of {len(items)}; the chunks "
                                  "committed so far are kept and a re-run resumes after them.")
            batch, batch_info = [], []
            for pos in range(start, min(start + batch_size, r.stop)):
                got = load(items[pos])
                wave, info = got if isinstance(got, tuple) else (got, {})
                batch.append(np.asarray(wave, dtype=np.float32))
                batch_info.append(dict(info))
            # Inputs of different lengths (whole-utterance models) never share a forward pass:
            # each length runs as its own sub-batch, so no padding can reach an activation and
            # a batch gives the activations its items give alone.
            by_len: dict[tuple, list[int]] = {}
            for i, b in enumerate(batch):
                by_len.setdefault(b.shape, []).append(i)
            for group in by_len.values():
                acts.run(call, model, torch.from_numpy(np.stack([batch[i] for i in group])))
                order.extend(start - r.start + i for i in group)
            infos.extend(batch_info)
            bar.update(len(batch))
        rows = np.argsort(np.asarray(order), kind="stable")  # call order -> item order
        in_order = bool((rows == np.arange(len(rows))).all())
        arrays = {}
        for name in names:
            shapes = sorted({b.shape[1:] for b in acts.batches(name)})
            if len(shapes) > 1:
                raise ValueError(
                    f"Layer {name!r} gave pooled shapes {shapes} for inputs of different lengths, but a store "
                    "holds one shape per layer. Pool it over time (pooling='time_mean') or give the model a "
                    "fixed window (ModelSpec.window), so every item has the same frame count.")
            a = acts[name]
            if a.shape[0] != len(r):
                raise RuntimeError(
                    f"Layer {name!r} produced {a.shape[0]} rows for {len(r)} items: its module ran "
                    f"{acts.n_calls(name)} times for {-(-len(r) // batch_size)} batches. Capture a module that "
                    "runs once per forward pass."
                )
            arrays[name] = a if in_order else a[rows]
        return writer.write_chunk(k, arrays, infos)

    try:
        with capture(model, names, pooling, side, select=select, threads=threads) as acts:
            queue, busy = list(todo), []
            while queue or busy:
                # first every chunk no other live writer holds; then wait for the held ones
                k, wait = (queue.pop(0), 0.0) if queue else (busy.pop(0), -1.0)
                with writer.chunk_lock(k, wait=wait, log=say) as held:
                    if not held:
                        busy.append(k)
                        continue
                    claimed = claim(k)
                    ok = claimed and compute(k, acts)
                if ok:
                    written += 1
                    n_written_items += len(writer.chunk_items(k))
                else:
                    skipped += 1
                    if not claimed:  # done by another writer: its items count as done here too
                        bar.update(len(writer.chunk_items(k)))
    finally:
        bar.close()
    return DumpReport(str(out), (shard_i, n_shards), written, len(mine) - len(todo) + skipped,
                      n_written_items, time.perf_counter() - t0)


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- SNR sweeps
CLEAN = "clean"


def mixture_length(n: int, mix_kwargs: Mapping[str, Any]) -> int:
    """Length of ``mix_at_snr``'s output for an utterance of ``n`` samples."""
    sr = mix_kwargs.get("sample_rate", 16000)
    duration = mix_kwargs.get("duration", 10.0)
    if duration is None:
        return n
    target = int(round(duration * sr))
    if n >= target:
        return target
    return target if mix_kwargs.get("short", "keep") == "pad" else n


def sweep_items(sweep, *, window: int | None, window_mode: str = "center", hop: int | None = None,
                include_clean: bool = True) -> list[Item]:
    """The items of an ``SNRSweep`` (all shards of it): per utterance, the clean reference
    (condition ``{"noise": "clean", "snr": None}``) then every (noise, SNR), each cut into
    model windows (``window=None``: one item per mixture, the whole mixture). Ordered by
    utterance, so one utterance's items share chunks."""
    from .mixing import window_starts

    items: list[Item] = []
    for uid, rec in sweep.utterances.items():
        n_win = 1 if window is None else len(window_starts(
            mixture_length(rec.waveform.shape[0], sweep.mix_kwargs), size=window, mode=window_mode, hop=hop))
        conds = ([{"noise": CLEAN, "snr": None}] if include_clean else []) + [
            {"noise": t, "snr": s} for t in sweep.noises for s in sweep.snrs]
        items.extend(Item(c, uid, w) for c in conds for w in range(n_win))
    return items


class _SweepLoader:
    """item -> (window waveform, info); mixes each (utterance, noise, SNR) once and keeps the
    last mixture, since the items of one mixture (its windows) are consecutive."""

    def __init__(self, sweep, *, window: int, window_mode: str, hop: int | None,
                 prepare: Callable[[np.ndarray], tuple[np.ndarray, dict]] | None = None):
        self.sweep, self.window, self.mode, self.hop, self.prepare = sweep, window, window_mode, hop, prepare
        self._key = None
        self._cuts: np.ndarray | None = None
        self._info: dict = {}

    def __call__(self, item: Item):
        from .mixing import mix_at_snr, windows

        noise, snr = item.condition["noise"], item.condition["snr"]
        key = (item.utterance, noise, snr)
        if key != self._key:
            sw = self.sweep
            if noise == CLEAN:  # the clean reference does not depend on the noise or the SNR
                first = next(iter(sw.noises))
                mix = mix_at_snr(sw.utterances[item.utterance], sw.noises[first], sw.snrs[0], seed=sw.seed, **sw.mix_kwargs)
                signal, info = mix.clean, {"utterance_id": item.utterance, "reference": "clean",
                                           "target_lufs": mix.info.get("target_lufs")}
            else:
                mix = mix_at_snr(sw.utterances[item.utterance], sw.noises[noise], snr, seed=sw.seed, **sw.mix_kwargs)
                signal, info = mix.noisy, dict(mix.info)
            if self.prepare is not None:
                signal, extra = self.prepare(signal)
                info.update(extra)
            self._cuts = (np.asarray(signal, np.float32)[None] if self.window is None
                          else windows(signal, size=self.window, mode=self.mode, hop=self.hop))
            self._key, self._info = key, info
        if item.window >= self._cuts.shape[0]:
            raise RuntimeError(f"{item}: the mixture has {self._cuts.shape[0]} windows; the plan expected more.")
        return self._cuts[item.window], dict(self._info, window=item.window)


def dump_snr_sweep(
    model: torch.nn.Module,
    layers: Sequence[Any],
    sweep,
    out: str,
    *,
    window: int | None,
    window_mode: str = "center",
    hop: int | None = None,
    include_clean: bool = True,
    forward: Callable[[torch.nn.Module, torch.Tensor], Any] | None = None,
    prepare: Callable[[np.ndarray], tuple[np.ndarray, dict]] | None = None,
    model_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> DumpReport:
    """Dump an SNR sweep (``torch_bridge.snr_sweep(...)``, unsharded) into a store.

    Items are per utterance: the clean reference, then every (noise type, SNR) mixture,
    each cut into ``window``-sample windows (``window_mode`` first/center/all, see
    ``torch_bridge.windows``; ``window=None``: whole mixtures, for whole-utterance models). ``prepare(signal) -> (signal, info)`` runs on each whole
    mixture before it is cut (MUSE: the official energy normalisation). The mixing settings
    go to the manifest. ``shard=`` and the other keyword arguments are those of :func:`dump`.
    """
    if CLEAN in sweep.noises:
        raise ValueError(f"A noise type is named {CLEAN!r}, which dump_snr_sweep uses for the clean reference; rename it.")
    if getattr(sweep, "num_shards", 1) != 1:
        raise ValueError("Pass dump_snr_sweep the whole sweep (num_shards=1) and shard the dump with shard='i/n'.")
    items = sweep_items(sweep, window=window, window_mode=window_mode, hop=hop, include_clean=include_clean)
    mixing = {
        "seed": sweep.seed,
        "snrs": list(sweep.snrs),
        "noises": list(sweep.noises),
        "utterances": len(sweep.utterances),
        "skipped_utterances": list(sweep.skipped),
        "mix_kwargs": {k: (v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                       for k, v in sweep.mix_kwargs.items()},
        "window": {"size": window, "mode": window_mode, "hop": hop},
        "clean_reference": include_clean,
    }
    load = _SweepLoader(sweep, window=window, window_mode=window_mode, hop=hop, prepare=prepare)
    return dump(model, layers, items, load, out, forward=forward, model_info=model_info, mixing=mixing, **kwargs)


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class DumpModel:
    """What ``jaxprobe dump --model NAME`` runs: the module, its canonical layers, the call
    on a batch of windows, the whole-signal preparation, the window length and the manifest
    record."""

    model: torch.nn.Module
    layers: Sequence[Any]
    forward: Callable[[torch.nn.Module, torch.Tensor], Any]
    prepare: Callable[[np.ndarray], tuple[np.ndarray, dict]] | None
    window: int
    info: Mapping[str, Any]
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _plain_forward(model: torch.nn.Module, batch: torch.Tensor):
    return model(batch.to(_model_device(model)))


def muse_dump_model(checkpoint: str | None = None, *, layers: Sequence[Any] | None = None,
                    device: str = "cpu") -> DumpModel:
    """MUSE with the official weights (resolved as ``load_muse`` does) on ``device``, its 24
    canonical ``norm1`` layers (``MUSE_LAYERS``), the STFT front end and 30,700-sample windows."""
    from .muse_inference import SEGMENT_SIZE, load_muse, muse_dump_forward, muse_energy_norm
    from .weights import resolve_muse_checkpoint, sha256_file

    path = resolve_muse_checkpoint(checkpoint)
    if layers is None:
        from .models.muse.layers import MUSE_LAYERS

        layers = MUSE_LAYERS
    return DumpModel(
        model=load_muse(path).to(device),
        layers=layers,
        forward=muse_dump_forward,
        prepare=muse_energy_norm,
        window=SEGMENT_SIZE,
        info={"name": "muse", "checkpoint_sha256": sha256_file(path)},
        source={"checkpoint_path": str(path)},
    )


def spec_model_info(spec) -> dict[str, Any]:
    """What a store's manifest records about a ``ModelSpec`` beyond its identity (``spec.info``:
    name, checkpoint sha256): kind, rate, window and what the samples and features of
    per-utterance CKA are. It goes to the manifest's ``extra["model_spec"]``, outside the store's
    identity, so describing a model better never invalidates a store."""
    return {"name": spec.name, "kind": spec.kind, "sample_rate": spec.sample_rate, "window": spec.window,
            "cka_samples": spec.cka_samples, "cka_features": spec.cka_features}


def uniform_value(per_layer: Mapping[str, Any]) -> Any:
    """One value when every layer has the same one (as stores before the model contract
    recorded it), else the mapping."""
    values = list(per_layer.values())
    if all(isinstance(v, (str, int, type(None))) for v in values) and len({repr(v) for v in values}) == 1:
        return values[0]
    return dict(per_layer)


def spec_batch_size(spec, batch_size: int | None) -> int:
    """Items per forward pass for a dump of ``spec``: ``batch_size``, or the model's own
    (``spec.dump_batch_size``) when it is 0 or None."""
    if batch_size is None or (batch_size == 0 and not isinstance(batch_size, bool)):
        return spec.dump_batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"The 'batch_size' parameter of a model dump must be an int >= 0 (0 = the model's own, "
                         f"{spec.dump_batch_size} for {spec.name!r}). Got {batch_size!r} instead.")
    return batch_size


def dump_spec_sweep(spec, sweep, out: str, *, window_mode: str = "center", hop: int | None = None,
                    include_clean: bool = True, extra: Mapping[str, Any] | None = None,
                    batch_size: int | None = None, **kwargs: Any) -> DumpReport:
    """:func:`dump_snr_sweep` of a ``torch_bridge.ModelSpec``: its layer map (records go to the
    manifest), per-layer pooling and ``select``, window (None: whole mixtures), forward call
    and preparation. ``batch_size`` 0 or None: the model's own (``spec.dump_batch_size``).
    Other keyword arguments are those of :func:`dump`."""
    return dump_snr_sweep(
        spec.model, spec.layer_records(), sweep, out, window=spec.window, window_mode=window_mode, hop=hop,
        include_clean=include_clean, forward=spec.forward_fn, prepare=spec.prepare,
        model_info=dict(spec.info), pooling=uniform_value(spec.pooling), select=uniform_value(spec.select),
        extra={**spec.source, "model_spec": spec_model_info(spec), **(extra or {})},
        batch_size=spec_batch_size(spec, batch_size), **kwargs,
    )


def _read_speech(data: str, split: str):
    if data == "embedded":
        from .corpus.build import load_corpus

        corpus = load_corpus()
        return corpus.real_speech if split == "real" else corpus.split(split)
    from .data.folder import AudioFolder

    return list(AudioFolder(data))


def _read_noises(noises: str | None):
    from pathlib import Path

    if noises is None or noises == "embedded":
        from .corpus.build import load_corpus

        return list(load_corpus().noises.values())
    from .data.demand import Demand
    from .data.folder import AudioFolder

    root = Path(noises)
    ds = Demand(root) if root.is_dir() and any(root.rglob("ch01.wav")) else AudioFolder(root)
    return list(ds)


def run_dump(
    *,
    model: str,
    data: str,
    out: str,
    snrs: Sequence[float],
    noises: str | None = None,
    split: str = "test",
    checkpoint: str | None = None,
    layers: Sequence[str] | None = None,
    noise_types: Sequence[str] | None = None,
    utterances: int | None = None,
    seed: int = 0,
    duration: float | None = 10.0,
    short: str = "keep",
    window_mode: str = "center",
    hop: int | None = None,
    include_clean: bool = True,
    shard: str | tuple[int, int] = (0, 1),
    batch_size: int = 4,
    chunk_size: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> DumpReport:
    """``jaxprobe dump``: read clean speech (``data``: a folder of audio files, or
    ``"embedded"`` for the embedded corpus, whose ``split`` train/dev/test/real is used) and
    noise recordings (``noises``: a folder of files, one noise type each, a DEMAND tree, or
    None / ``"embedded"`` for the corpus noises), take the first ``utterances`` utterances,
    build the SNR sweep, and dump ``model``'s canonical layers (or those matching the glob
    patterns ``layers``) into the store ``out`` (this shard's part). ``model`` is any name
    ``torch_bridge.load_model`` accepts."""
    from .mixing import snr_sweep

    from .data.record import check_int
    from .models import registry

    registry.resolve_model(model)  # an unknown name fails before any data is read

    if utterances is not None:  # a count, never a Python slice bound (-1 would drop the last one)
        utterances = check_int(utterances, "utterances", fn="run_dump", low=1)
    # the data, the noise names and the SNR grid are checked before the model is loaded
    speech = _read_speech(data, split)
    if utterances is not None:
        speech = speech[:utterances]
    sweep = snr_sweep(speech, _read_noises(noises), list(snrs), seed=seed,
                      noise_types=noise_types, duration=duration, short=short)
    spec = registry.load_model(model, checkpoint, device, layers=layers)
    return dump_spec_sweep(
        spec, sweep, out, window_mode=window_mode, hop=hop, include_clean=include_clean,
        extra={"data": str(data), "split": split, "noises": str(noises)}, shard=shard,
        batch_size=batch_size, chunk_size=chunk_size, threads=threads, progress=progress,
    )
