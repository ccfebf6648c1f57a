"""The model contract: what a study needs to know about a model, in one record.

A :class:`ModelSpec` is what :func:`torch_bridge.load_model` returns for every model, built in
or brought by a user. Studies read blocks, depth order, skip roles, pooling and the meaning of
the CKA axes from it, never from parsing module names.

Contract
--------
``spec.model``
    The ``torch.nn.Module``, in eval mode, on the requested device.
``spec.layers``
    The canonical probe layers in depth (forward) order, each a :class:`LayerSpec`: ``name``
    (its ``named_modules()`` path), ``block``, ``index`` within the block, ``skip`` role
    (``"input"``: the layer receives a skip connection; ``"output"``: its block output leaves on
    one; ``None``), the pooled ``shape`` of one item, its ``pooling`` and a display ``label``.
``spec.sample_rate``
    Input rate in Hz (16,000 for every built-in model).
``spec.window``
    Samples per model window (MUSE: 30,700), or ``None`` for a whole-utterance model (GTCRN):
    the study then feeds each mixture whole.
``spec.cka_samples`` / ``spec.cka_features``
    What the rows (samples) and columns (features) of one item's pooled activation are, i.e.
    what per-utterance CKA compares. MUSE and GTCRN: time mean -> ``(C, F)``, channels are
    the samples and frequency positions the features. Frame models (SSL, CTC, plain modules):
    ``(T, H)``, frames are the samples and hidden units the features.
``spec.forward(waveforms)``
    Runs the model on a batch of windows, a float32 tensor ``(B, samples)`` at
    ``sample_rate`` (all rows the same length; the dump never pads: it groups items of equal
    length into one forward pass, so no padding reaches an activation).
``spec.enhance(waveform) -> waveform``
    Enhancement models only (else ``None``): the official inference pipeline on one waveform
    ``(L,)`` at ``sample_rate``.
``spec.prepare(signal) -> (signal, info)``
    Optional: applied to each whole mixture before it is cut into windows (MUSE: the official
    energy normalisation), ``info`` goes to the store per item.
``spec.dump_batch_size``
    Items per forward pass when a dump is asked for "the model's own" batch size (the sweep's
    ``model.batch_size = 0``): what measured fastest per item on a CPU with one torch thread
    (MUSE 1: its batches are slower per window; GTCRN 8: its GRUs step frame by frame, so a
    batch shares the per-step overhead; ``bench/bench_gtcrn.py``). Default 1.
``spec.info``
    What the activation store's manifest records about the model (name, checkpoint sha256).
"""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from torch_bridge.errors import UserError

__all__ = ["LayerSpec", "ModelError", "ModelSpec", "SKIP_ROLES", "select_layers"]


class ModelError(UserError, ValueError):
    """A model name, checkpoint, layer pattern or user model that cannot be used (the CLI
    reports it as one line)."""


SKIP_ROLES = ("input", "output", None)
Pooling = str | Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayerSpec:
    """One probe layer of a model.

    Attributes
    ----------
    name : str
        Module path in ``model.named_modules()``.
    block : str
        The block the layer belongs to (e.g. "Enc1", "Encoder", "Transformer").
    index : int
        Position within the block, from 0, in depth order.
    skip : "input", "output" or None
        "input": the layer receives a skip connection; "output": its block's output leaves on
        one; None: neither.
    shape : tuple of int or None
        Shape of one item's pooled activation (e.g. ``(C, F)`` or ``(T, H)``); None when it
        depends on the input length (whole-utterance frame models).
    pooling : str or callable
        A ``torch_bridge.capture`` pooling spec ("time_mean", "frames", ...) or a callable
        ``tensor -> tensor`` keeping the batch axis first.
    select : int, str or None
        Which element of a tuple/dict output the hook keeps (``capture``'s ``select``).
    label : str or None
        Display label in figures and tables (default ``"{block}.{index}"``).
    skip_partner : str or None
        The module at the other end of the skip, where known.
    """

    name: str
    block: str
    index: int
    skip: str | None = None
    shape: tuple[int, ...] | None = None
    pooling: Pooling = "time_mean"
    select: int | str | None = 0
    label: str | None = None
    skip_partner: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"The 'name' of a LayerSpec must be a module path (str); got {self.name!r}.")
        if self.skip not in SKIP_ROLES:
            raise ValueError(f"The 'skip' of layer {self.name!r} must be 'input', 'output' or None; got {self.skip!r}.")
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"The 'index' of layer {self.name!r} must be an int >= 0; got {self.index!r}.")
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.label is None:
            object.__setattr__(self, "label", f"{self.block}.{self.index}")

    def record(self) -> dict[str, Any]:
        """A JSON-ready description (what the store's manifest and results.json hold): name,
        block, index, skip, shape, plus label and skip_partner where they say more than the
        default. Pooling and select are recorded in the manifest's capture section. (MUSE's
        records are exactly those of stores written before the model contract, so those stores
        stay valid.)"""
        rec = {"name": self.name, "block": self.block, "index": self.index, "skip": self.skip,
               "shape": list(self.shape) if self.shape is not None else None}
        if self.label != f"{self.block}.{self.index}":
            rec["label"] = self.label
        if self.skip_partner is not None:
            rec["skip_partner"] = self.skip_partner
        return rec


@dataclass(frozen=True)
class ModelSpec:
    """A model and everything a probing study needs to know about it (module docstring).

    Build one with :func:`torch_bridge.load_model` (names, ``module:function``, entry points)
    or directly; :meth:`from_module` wraps a plain ``nn.Module`` taking ``(B, samples)``.
    """

    name: str
    model: torch.nn.Module
    layers: tuple[LayerSpec, ...]
    forward_fn: Callable[[torch.nn.Module, torch.Tensor], Any]
    sample_rate: int = 16000
    window: int | None = None
    cka_samples: str = "frames"
    cka_features: str = "hidden units"
    enhance_fn: Callable[[torch.nn.Module, np.ndarray], np.ndarray] | None = None
    prepare: Callable[[np.ndarray], tuple[np.ndarray, dict]] | None = None
    kind: str = "custom"
    info: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    dump_batch_size: int = 1

    def __post_init__(self):
        if not isinstance(self.model, torch.nn.Module):
            raise TypeError(f"The 'model' of ModelSpec {self.name!r} must be a torch.nn.Module; got {type(self.model).__name__}.")
        layers = tuple(self.layers)
        if not layers:
            raise ValueError(f"ModelSpec {self.name!r} has no probe layers; give at least one LayerSpec.")
        if not all(isinstance(lay, LayerSpec) for lay in layers):
            raise TypeError(f"The 'layers' of ModelSpec {self.name!r} must be LayerSpec records.")
        names = [lay.name for lay in layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"ModelSpec {self.name!r} lists layer(s) {dup} more than once.")
        object.__setattr__(self, "layers", layers)
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1):
            raise ValueError(f"The 'window' of ModelSpec {self.name!r} must be a positive int or None; got {self.window!r}.")
        if isinstance(self.dump_batch_size, bool) or not isinstance(self.dump_batch_size, int) or self.dump_batch_size < 1:
            raise ValueError(f"The 'dump_batch_size' of ModelSpec {self.name!r} must be an int >= 1; "
                             f"got {self.dump_batch_size!r}.")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) or self.sample_rate < 1:
            raise ValueError(f"The 'sample_rate' of ModelSpec {self.name!r} must be a positive int; got {self.sample_rate!r}.")
        self.model.eval()

    # ---------------------------------------------------------------- the calls
    def forward(self, waveforms) -> Any:
        """Run the model on a batch of windows ``(B, samples)`` (float32, ``sample_rate``)."""
        x = torch.as_tensor(np.asarray(waveforms, np.float32) if not isinstance(waveforms, torch.Tensor) else waveforms)
        if x.ndim != 2:
            raise ValueError(f"The 'waveforms' parameter of {self.name}.forward must have shape (B, samples); "
                             f"got {tuple(x.shape)}. Stack equal-length windows into one 2-D batch.")
        with torch.inference_mode():
            return self.forward_fn(self.model, x.to(torch.float32))

    @property
    def enhances(self) -> bool:
        """True for enhancement models (``enhance`` is available)."""
        return self.enhance_fn is not None

    def enhance(self, waveform) -> np.ndarray:
        """The model's official inference pipeline: waveform ``(L,)`` -> enhanced waveform."""
        if self.enhance_fn is None:
            raise TypeError(f"Model {self.name!r} ({self.kind}) is not an enhancement model; it has no enhance().")
        return self.enhance_fn(self.model, waveform)

    # ---------------------------------------------------------------- layer map
    @property
    def blocks(self) -> tuple[str, ...]:
        """Block names in depth order (first appearance)."""
        return tuple(dict.fromkeys(lay.block for lay in self.layers))

    @property
    def pooling(self) -> dict[str, Pooling]:
        """layer name -> pooling spec (for ``torch_bridge.capture``)."""
        return {lay.name: lay.pooling for lay in self.layers}

    @property
    def select(self) -> dict[str, int | str | None]:
        return {lay.name: lay.select for lay in self.layers}

    def layer_records(self) -> list[dict[str, Any]]:
        """JSON-ready layer map (depth order)."""
        return [lay.record() for lay in self.layers]

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: name, kind, rate, window, the CKA axes and the layer map."""
        return {"name": self.name, "kind": self.kind, "sample_rate": self.sample_rate, "window": self.window,
                "cka_samples": self.cka_samples, "cka_features": self.cka_features, "enhances": self.enhances,
                "layers": self.layer_records(), **{k: v for k, v in self.info.items() if k != "name"}}

    def with_layers(self, patterns: Sequence[str] | None) -> "ModelSpec":
        """This spec probing the modules whose paths match any glob in ``patterns``
        (canonical records are kept for canonical layers; see :func:`select_layers`)."""
        if not patterns:
            return self
        return dataclasses.replace(self, layers=select_layers(self, patterns))

    @classmethod
    def from_module(cls, module: torch.nn.Module, *, name: str = "custom", window: int | None = 30700,
                    sample_rate: int = 16000, layers: Sequence[str] | None = None) -> "ModelSpec":
        """Wrap a plain module taking ``(B, samples)`` waveforms: the default layers are its
        immediate children in forward order (each its own block), whose outputs ``(B, T, H)``
        are kept frame by frame (frames are the samples of per-utterance CKA). Pooled shapes
        are measured by one forward pass on a ``window``-sample probe signal."""
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"Model {name!r}: expected a ModelSpec or a torch.nn.Module; got {type(module).__name__}.")
        module.eval()
        paths = list(layers) if layers is not None else _children_in_order(module, window or sample_rate)
        if not paths:
            raise ModelError(f"Model {name!r} ({type(module).__name__}) has no child modules to probe; "
                             "return a ModelSpec with explicit layers instead.")
        recs = tuple(LayerSpec(p, block=p, index=0, pooling="frames") for p in paths)
        spec = cls(name=name, model=module, layers=recs, forward_fn=_call_module, sample_rate=sample_rate,
                   window=window, cka_samples="frames", cka_features="hidden units", kind="custom",
                   info={"name": name, "class": type(module).__name__})
        return dataclasses.replace(spec, layers=measure_shapes(spec, spec.layers))


def _call_module(model: torch.nn.Module, x: torch.Tensor):
    p = next(model.parameters(), None)
    return model(x.to(p.device) if p is not None else x)


def _probe_signal(n: int) -> torch.Tensor:
    """A fixed, deterministic test signal (white noise, seed 0) of n samples."""
    g = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(1, n, generator=g)


def _children_in_order(module: torch.nn.Module, n: int) -> list[str]:
    """Immediate children in the order they run (one probe forward), never-run ones dropped."""
    children = [(nm, m) for nm, m in module.named_children()]
    order: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, nm=nm: order.append(nm) if nm not in order else None)
               for nm, m in children]
    try:
        with torch.inference_mode():
            _call_module(module, _probe_signal(n))
    finally:
        for h in handles:
            h.remove()
    return order


def measure_shapes(spec: ModelSpec, layers: Sequence[LayerSpec]) -> tuple[LayerSpec, ...]:
    """``layers`` with their pooled per-item shapes measured by one forward pass of
    ``spec.window`` samples (1 s when the model has no window)."""
    from torch_bridge.hooks import capture

    names = [lay.name for lay in layers]
    n = spec.window or spec.sample_rate
    with capture(spec.model, names, {lay.name: lay.pooling for lay in layers},
                 select={lay.name: lay.select for lay in layers}) as acts:
        spec.forward(_probe_signal(n))
    return tuple(dataclasses.replace(lay, shape=tuple(acts[lay.name].shape[1:])) for lay in layers)


def select_layers(spec: ModelSpec, patterns: Sequence[str]) -> tuple[LayerSpec, ...]:
    """The probe layers for glob ``patterns`` over module paths (``fnmatch``: ``*`` also
    crosses dots), in ``named_modules()`` order. A canonical layer keeps its record; another
    module gets block = its top-level path component, index = its rank in that block, no
    skip role, the spec's most common pooling and a measured shape. Raises ValueError when a
    pattern matches nothing, naming the closest paths."""
    import difflib

    if isinstance(patterns, str):
        patterns = [patterns]
    paths = [n for n, _ in spec.model.named_modules() if n]
    canon = {lay.name: lay for lay in spec.layers}
    chosen: list[str] = []
    for pat in patterns:
        hits = [p for p in paths if fnmatch.fnmatchcase(p, pat)]
        if not hits:
            close = difflib.get_close_matches(pat, paths, n=5, cutoff=0.5)
            hint = f" Closest paths: {', '.join(close)}." if close else ""
            raise ModelError(f"The --layers pattern {pat!r} matches no module path of model {spec.name!r} "
                             f"({len(paths)} modules).{hint} Canonical layers: "
                             f"{', '.join(lay.name for lay in spec.layers[:6])}{' ...' if len(spec.layers) > 6 else ''}.")
        chosen += [p for p in hits if p not in chosen]
    chosen.sort(key=paths.index)
    pools = [lay.pooling for lay in spec.layers]
    default_pool = max(set(map(repr, pools)), key=[repr(p) for p in pools].count)
    default_pool = next(p for p in pools if repr(p) == default_pool)
    out: list[LayerSpec] = []
    new: list[LayerSpec] = []
    rank: dict[str, int] = {}
    for p in chosen:
        if p in canon:
            out.append(canon[p])
            continue
        block = p.split(".")[0]
        rank[block] = rank.get(block, -1) + 1
        rec = LayerSpec(p, block=block, index=rank[block], pooling=default_pool)
        out.append(rec)
        new.append(rec)
    if new:
        measured = {lay.name: lay for lay in measure_shapes(spec, new)}
        out = [measured.get(lay.name, lay) for lay in out]
    return tuple(out)
