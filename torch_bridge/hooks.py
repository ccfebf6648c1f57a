"""Hook-based activation capture for any ``torch.nn.Module``.

``capture(model, layers)`` registers forward hooks on modules named by their
``named_modules()`` path, pools what they see on the fly (inside the hook, so only the
pooled tensor is kept) and always removes the hooks again, also when the forward pass
raises. After forward passes run inside the ``with`` block, the yielded object maps each
layer name to a numpy array, concatenated over the batches on the first axis::

    with capture(model, ["encoder.layers.3"], pooling="frames") as acts:
        model(batch_a)
        model(batch_b)
    acts["encoder.layers.3"]          # (B_a + B_b, T, H)

Pooling specs (``pooling=``, one for all layers or a mapping ``{layer: spec}``):

``"time_mean"``      4-D ``[B, C, T, F]`` (MUSE) → mean over T → ``(B, C, F)``;
                     3-D ``(B, T, H)`` (wav2vec2, ASR) → mean over T → ``(B, H)``.
``"time_mean_flat"`` as ``"time_mean"``, then flattened to ``(B, C·F)``.
``"frames"``         frame level: 3-D ``(B, T, H)`` kept; 4-D ``[B, C, T, F]`` →
                     ``(B, T, C·F)`` (channel-major features per frame).
``"flatten"``        everything but the batch axis flattened → ``(B, D)``.
``"none"``           the tensor as the module produced it.
a callable           ``f(tensor) -> tensor`` that keeps the batch axis first.

Modules that return tuples, lists or dicts (wav2vec2's encoder layers return a tuple)
hand on the element chosen by ``select`` (default ``0``; an int index or a dict key).
On the input side (``side="input"``) ``select`` picks the positional argument.

A forward pass run through ``captured.run(fn, ...)`` stops as soon as every captured layer
has run in it: what comes after the last captured layer cannot change what was captured, so
it is skipped (the dump does this; probing MUSE's 24 layers skips its phase refinement and
both decoders, ~27 % of a forward). The first pass run so runs whole and counts each layer's
calls; only when every layer ran exactly once are later passes cut short (a layer that runs
twice per pass keeps every pass whole, so its extra rows still show up).
"""
from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch

__all__ = ["Captured", "capture", "forward_batches", "resolve_modules", "to_jax"]

PoolingSpec = Union[str, Callable[[torch.Tensor], torch.Tensor]]
POOLINGS = ("time_mean", "time_mean_flat", "frames", "flatten", "none")
SIDES = ("output", "input")


# ----------------------------------------------------------------------------- pooling
def _time_mean(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 4:  # [B, C, T, F]
        return t.mean(dim=2)
    if t.ndim == 3:  # (B, T, H)
        return t.mean(dim=1)
    raise ValueError(
        f"pooling='time_mean' expects a 4-D [B, C, T, F] or 3-D (B, T, H) tensor; got shape "
        f"{tuple(t.shape)}. Pass pooling='none' or a callable for other layouts."
    )


def _frames(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 3:
        return t
    if t.ndim == 4:  # [B, C, T, F] -> (B, T, C*F)
        b, c, n, f = t.shape
        return t.permute(0, 2, 1, 3).reshape(b, n, c * f)
    raise ValueError(
        f"pooling='frames' expects a 3-D (B, T, H) or 4-D [B, C, T, F] tensor; got shape "
        f"{tuple(t.shape)}. Pass pooling='none' or a callable for other layouts."
    )


POOL_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "time_mean": _time_mean,
    "time_mean_flat": lambda t: _time_mean(t).flatten(1),
    "frames": _frames,
    "flatten": lambda t: t.flatten(1),
    "none": lambda t: t,
}


def _pool_fn(spec: PoolingSpec, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in POOL_FNS:
        return POOL_FNS[spec]
    opts = ", ".join(repr(p) for p in POOLINGS)
    raise ValueError(
        f"The 'pooling' parameter of capture (layer {layer!r}) must be one of {opts} or a "
        f"callable tensor -> tensor. Got {spec!r} instead."
    )


# ----------------------------------------------------------------------------- layers
def _layer_name(layer: Any) -> str:
    name = layer if isinstance(layer, str) else getattr(layer, "name", None)
    if not isinstance(name, str):
        raise TypeError(
            "The 'layers' parameter of capture must hold module paths (str) or records with a "
            f"'name' attribute (e.g. torch_bridge.MUSE_LAYERS); got {layer!r}."
        )
    return name


def resolve_modules(model: torch.nn.Module, names: Sequence[str]) -> dict[str, torch.nn.Module]:
    """Map each ``named_modules()`` path in ``names`` to its module.

    Raises ``KeyError`` for an unknown path, listing the closest existing paths.
    """
    table = dict(model.named_modules())
    out: dict[str, torch.nn.Module] = {}
    for name in names:
        if name not in table:
            candidates = [n for n in table if n]
            close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
            close += [n for n in candidates if n.endswith("." + name) and n not in close][:5]
            hint = (
                "Closest module paths: " + ", ".join(repr(c) for c in close)
                if close
                else f"The model has {len(candidates)} named modules; list them with "
                "[n for n, _ in model.named_modules()]"
            )
            raise KeyError(f"Layer {name!r} is not a module path of {type(model).__name__}. {hint}.")
        out[name] = table[name]
    return out


def _per_layer(value: Any, names: Sequence[str], what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(
                f"The '{what}' mapping of capture names layers that are not captured: {unknown}. "
                f"Its keys must be among the 'layers' argument."
            )
        default = {"pooling": "time_mean", "side": "output", "select": 0}[what]
        return {n: value.get(n, default) for n in names}
    return {n: value for n in names}


# ----------------------------------------------------------------------------- result
class _LayersDone(Exception):
    """Raised by a hook when every captured layer has run in a pass started by ``Captured.run``."""


class Captured(Mapping):
    """What ``capture`` collected: ``captured[layer]`` is a numpy array with the batches
    concatenated on axis 0 (the batch axis). ``batches(layer)`` gives the per-call list
    (use it when frame counts differ between batches)."""

    def __init__(self, names: Sequence[str]):
        self._names = list(names)
        self._parts: dict[str, list[np.ndarray]] = {n: [] for n in self._names}
        self._cache: dict[str, np.ndarray] = {}
        # Early stop of passes run through ``run``: None = not yet known (the first such pass
        # runs whole and decides), True = cut passes short, False = never.
        self._stop_ok: bool | None = None
        self._pass_calls: dict[str, int] | None = None  # calls per layer in the running pass

    def _append(self, name: str, array: np.ndarray) -> None:
        self._parts[name].append(array)
        self._cache.pop(name, None)
        calls = self._pass_calls
        if calls is not None:
            calls[name] = calls.get(name, 0) + 1
            if self._stop_ok and len(calls) == len(self._names):
                raise _LayersDone

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (a forward pass), stopped once every captured layer has run
        in it (see the module docstring). Returns ``fn``'s result, or None when the pass was
        cut short. Passes that raise propagate their error; the hooks stay registered."""
        self._pass_calls = {}
        try:
            out = fn(*args, **kwargs)
        except _LayersDone:
            return None
        finally:
            calls, self._pass_calls = self._pass_calls, None
            if self._stop_ok is None and calls is not None:
                self._stop_ok = len(calls) == len(self._names) and all(c == 1 for c in calls.values())
        return out

    @property
    def stops_early(self) -> bool:
        """Whether passes run through ``run`` are cut short after the last captured layer
        (decided by the first such pass)."""
        return bool(self._stop_ok)

    def batches(self, name: str) -> list[np.ndarray]:
        return list(self._parts[name])

    def n_calls(self, name: str) -> int:
        """How many times the layer's module ran (one entry per call)."""
        return len(self._parts[name])

    def clear(self) -> None:
        """Drop what has been collected (hooks stay registered)."""
        for parts in self._parts.values():
            parts.clear()
        self._cache.clear()

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._parts:
            raise KeyError(f"Layer {name!r} was not captured; captured layers: {self._names}.")
        if name not in self._cache:
            parts = self._parts[name]
            if not parts:
                raise ValueError(f"Layer {name!r} has not run yet: run the model inside the capture block.")
            shapes = {p.shape[1:] for p in parts}
            if len(shapes) > 1:
                raise ValueError(
                    f"Layer {name!r} gave per-item shapes {sorted(shapes)} in different calls, so they "
                    f"cannot be concatenated; read them with captured.batches({name!r})."
                )
            self._cache[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        calls = {n: len(p) for n, p in self._parts.items()}
        return f"Captured({calls})"


def _pick(value: Any, select: int | str | None, name: str, side: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if select is None:
        raise TypeError(f"Layer {name!r} {side} is a {type(value).__name__}, not a tensor, and select=None.")
    try:
        picked = value[select]
    except (IndexError, KeyError, TypeError) as exc:
        raise TypeError(
            f"Layer {name!r} {side} is a {type(value).__name__}; select={select!r} does not pick an "
            f"element of it. Pass select= an index or key of a tensor element."
        ) from exc
    if not isinstance(picked, torch.Tensor):
        raise TypeError(f"Layer {name!r} {side} element {select!r} is a {type(picked).__name__}, not a tensor.")
    return picked


def pooled_to_numpy(pooled: torch.Tensor, source: torch.Tensor) -> np.ndarray:
    pooled = pooled.detach()
    if pooled.device.type != "cpu":
        return pooled.cpu().numpy()
    # A view of the module's own output (pooling 'none'/'frames') may be changed in place
    # later in the forward pass (e.g. ReLU(inplace=True)); keep a private copy then.
    if pooled.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        pooled = pooled.clone()
    return pooled.numpy()


# ----------------------------------------------------------------------------- capture
@contextlib.contextmanager
def capture(
    model: torch.nn.Module,
    layers: str | Iterable[Any],
    pooling: PoolingSpec | Mapping[str, PoolingSpec] = "time_mean",
    side: str | Mapping[str, str] = "output",
    *,
    select: int | str | None | Mapping[str, int | str | None] = 0,
    inference: bool = True,
    threads: int | None = None,
) -> Iterator[Captured]:
    """Capture pooled activations of named modules while the ``with`` block runs.

    Parameters
    ----------
    model : torch.nn.Module
    layers : str or iterable of str or of records with a ``name`` attribute
        ``named_modules()`` paths, e.g. ``torch_bridge.MUSE_LAYERS`` or
        ``["encoder.transformer.layers.3"]``.
    pooling : str, callable, or mapping layer -> spec
        See the module docstring. Applied inside the hook.
    side : {"output", "input"} or mapping layer -> side
        Capture what the module returns or the argument it receives.
    select : int, str or None, or mapping layer -> select
        Element of a tuple/list/dict output (or positional argument on the input side).
    inference : bool
        Run the block under ``torch.inference_mode()`` (default True).
    threads : int, optional
        ``torch.set_num_threads`` inside the block, restored afterwards.

    Yields
    ------
    Captured
        Mapping layer -> numpy array of shape ``(batch, ...)`` (pooled shape).
    """
    if isinstance(layers, str):
        layers = [layers]
    names = [_layer_name(layer) for layer in layers]
    if not names:
        raise ValueError("The 'layers' parameter of capture must name at least one module; got none.")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"The 'layers' parameter of capture names layers more than once: {dupes}.")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"The 'threads' parameter of capture must be an int in [1, inf). Got {threads!r} instead.")
    modules = resolve_modules(model, names)
    pools = {n: _pool_fn(p, n) for n, p in _per_layer(pooling, names, "pooling").items()}
    sides = _per_layer(side, names, "side")
    for n, s in sides.items():
        if s not in SIDES:
            raise ValueError(f"The 'side' parameter of capture (layer {n!r}) must be 'output' or 'input'. Got {s!r} instead.")
    selects = _per_layer(select, names, "select")

    result = Captured(names)
    handles = []

    def make_hook(name: str):
        pool, sel, sd = pools[name], selects[name], sides[name]

        def record(value: Any) -> None:
            t = _pick(value, sel, name, sd)
            result._append(name, pooled_to_numpy(pool(t), t))

        if sd == "output":
            return lambda module, args, output: record(output)
        return lambda module, args: record(args)

    old_threads = torch.get_num_threads()
    stack = contextlib.ExitStack()
    try:
        for name in names:
            hook = make_hook(name)
            if sides[name] == "output":
                handles.append(modules[name].register_forward_hook(hook))
            else:
                handles.append(modules[name].register_forward_pre_hook(hook))
        if threads is not None:
            torch.set_num_threads(threads)
        if inference:
            stack.enter_context(torch.inference_mode())
        yield result
    finally:
        stack.close()
        for h in handles:
            h.remove()
        if threads is not None:
            torch.set_num_threads(old_threads)


def forward_batches(
    model: torch.nn.Module,
    inputs: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 8,
    forward: Callable[[torch.nn.Module, torch.Tensor], Any] | None = None,
) -> int:
    """Run ``model`` over ``inputs`` (items on axis 0) in batches under inference mode.

    ``forward(model, batch)`` replaces the plain ``model(batch)`` call (e.g. MUSE's STFT
    front end). Returns the number of batches run. Use inside ``capture``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter of forward_batches must be an int in [1, inf). Got {batch_size!r} instead.")
    x = torch.as_tensor(inputs)
    call = forward or (lambda m, b: m(b))
    n = 0
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            call(model, x[start:start + batch_size])
            n += 1
    return n


def to_jax(x: torch.Tensor | np.ndarray):
    """Hand a tensor (or numpy array) to JAX through DLPack.

    A contiguous CPU or CUDA torch tensor is shared, not copied, when the JAX backend is on the
    same device (its buffer must meet XLA's alignment; torch's allocator does). numpy arrays
    are handed over through DLPack too, but XLA may copy them when they are not aligned.
    The JAX array aliases the tensor: do not modify the tensor afterwards.
    """
    import jax.dlpack

    if isinstance(x, torch.Tensor):
        x = x.detach()
        if not x.is_contiguous():
            x = x.contiguous()
    return jax.dlpack.from_dlpack(x)
