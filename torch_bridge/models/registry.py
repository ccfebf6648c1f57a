"""``load_model``: every way to name a model, resolved to a :class:`ModelSpec`.

Names, in the order they are tried:

1. a :class:`ModelSpec` or an ``nn.Module`` object (wrapped with ``ModelSpec.from_module``);
2. a built-in name: ``muse``, ``gtcrn`` (= ``gtcrn:vctk``), ``gtcrn:dns3``, ``ctc:vgg_lstm``,
   ``ctc:lstm``, ``wav2vec2_base``, ``hubert_base``, ``wavlm_base``;
3. a name registered by an installed package in the ``jaxprobe.models`` entry-point group,
   e.g. in its ``pyproject.toml``::

       [project.entry-points."jaxprobe.models"]
       mymodel = "mypackage.probing:make_model"

4. ``"package.module:function"``: the function is imported and called (``function()``, or
   ``function(checkpoint=PATH)`` when a checkpoint is given) and returns a ModelSpec or a
   plain ``nn.Module`` taking ``(B, samples)`` waveforms at 16 kHz.

Anything else raises ``ValueError`` listing the names that exist and the closest one.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Sequence
from importlib import metadata

import torch

from torch_bridge.models.spec import ModelError, ModelSpec

__all__ = ["BUILTIN_MODELS", "ENTRY_POINT_GROUP", "ModelError", "available_models", "load_model", "resolve_model"]

ENTRY_POINT_GROUP = "jaxprobe.models"


def _builtin() -> dict[str, Callable[[object, str], ModelSpec]]:
    from torch_bridge.models.builtin import ctc_spec, gtcrn_spec, muse_spec
    from torch_bridge.models.ssl import SSL_MODELS, ssl_spec

    table: dict[str, Callable[[object, str], ModelSpec]] = {
        "muse": lambda ck, dev: muse_spec(None, ck, dev),
        "gtcrn": lambda ck, dev: gtcrn_spec("vctk", ck, dev),
        "gtcrn:vctk": lambda ck, dev: gtcrn_spec("vctk", ck, dev),
        "gtcrn:dns3": lambda ck, dev: gtcrn_spec("dns3", ck, dev),
        "ctc:vgg_lstm": lambda ck, dev: ctc_spec("vgg_lstm", ck, dev),
        "ctc:lstm": lambda ck, dev: ctc_spec("lstm", ck, dev),
    }
    for name in SSL_MODELS:
        table[name] = lambda ck, dev, name=name: ssl_spec(name, ck, dev)
    return table


BUILTIN_MODELS: tuple[str, ...] = ("muse", "gtcrn", "gtcrn:vctk", "gtcrn:dns3", "ctc:vgg_lstm", "ctc:lstm",
                                   "wav2vec2_base", "hubert_base", "wavlm_base")


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_models() -> list[str]:
    """Built-in names, then the names installed packages register under ``jaxprobe.models``."""
    return list(BUILTIN_MODELS) + sorted(n for n in _entry_points() if n not in BUILTIN_MODELS)


def _unknown(name: str) -> ModelError:
    names = available_models()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ModelError(
        f"Unknown model {name!r}.{hint} Known models: {', '.join(names)}; or give 'package.module:function' "
        f"returning a ModelSpec or an nn.Module, or register one under the {ENTRY_POINT_GROUP!r} entry-point group.")


def _call_user(fn: Callable, origin: str, checkpoint) -> object:
    if not callable(fn):
        raise ModelError(f"Model {origin!r} must name a function returning a ModelSpec or an nn.Module; "
                        f"it names a {type(fn).__name__}.")
    return fn() if checkpoint is None else fn(checkpoint=checkpoint)


def _import_target(text: str):
    mod_name, _, attr = text.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"A model given as 'package.module:function' needs both parts; got {text!r}.")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"Model {text!r}: cannot import module {mod_name!r} ({exc}). Is it on PYTHONPATH "
                         "or installed?") from exc
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)))
            close = difflib.get_close_matches(attr, public, n=1)
            hint = f" Did you mean {mod_name}:{close[0]}?" if close else ""
            raise ModelError(f"Model {text!r}: module {mod_name!r} has no attribute {attr!r}.{hint}")
        obj = getattr(obj, part)
    return obj


def _as_spec(obj, origin: str, device: str) -> ModelSpec:
    if isinstance(obj, ModelSpec):
        obj.model.to(device)
        unknown = [lay for lay in obj.layers if lay.shape is None]
        if unknown and obj.window:  # a fixed window fixes every pooled shape: measure the missing ones
            from torch_bridge.models.spec import measure_shapes

            got = {lay.name: lay for lay in measure_shapes(obj, unknown)}
            obj = dataclasses.replace(obj, layers=tuple(got.get(lay.name, lay) for lay in obj.layers))
        return obj
    if isinstance(obj, torch.nn.Module):
        return ModelSpec.from_module(obj.to(device), name=origin)
    raise ModelError(f"Model {origin!r} returned a {type(obj).__name__}; expected a torch_bridge.ModelSpec or a "
                    "torch.nn.Module taking (B, samples) waveforms at 16 kHz.")


def load_model(name_or_spec, checkpoint=None, device: str = "cpu", *,
               layers: Sequence[str] | None = None) -> ModelSpec:
    """Resolve a model name (module docstring) to a :class:`ModelSpec`, in eval mode on ``device``.

    Parameters
    ----------
    name_or_spec : str, ModelSpec or torch.nn.Module
        A built-in name, an entry-point name, ``"package.module:function"``, or an object.
    checkpoint : path, optional
        The weights: MUSE and GTCRN resolve it as ``load_muse`` / ``load_gtcrn`` do (then the
        environment variable, the cache, the verified download); required for ``ctc:*`` and the
        SSL architectures (a local file, nothing is downloaded); passed on to user functions.
    device : str
        torch device of the model.
    layers : sequence of glob patterns, optional
        Probe the modules whose ``named_modules()`` paths match instead of the canonical layers
        (``ModelSpec.with_layers``).

    Returns
    -------
    ModelSpec
    """
    if isinstance(name_or_spec, (ModelSpec, torch.nn.Module)):
        spec = _as_spec(name_or_spec, getattr(name_or_spec, "name", type(name_or_spec).__name__), device)
    else:
        spec = resolve_model(name_or_spec)(checkpoint, device)
    spec.model.eval()
    return spec.with_layers(layers)


def resolve_model(name: str) -> Callable[[object, str], ModelSpec]:
    """The builder ``(checkpoint, device) -> ModelSpec`` behind a model name, found without
    building anything (a ``module:function`` is imported): call it first to reject an unknown
    name before any data is read. Raises ModelError for an unknown name."""
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"The model must be a name (muse, gtcrn, ..., or package.module:function); got {name!r}.")
    name = name.strip()
    builtin = _builtin()
    if name in builtin:
        return builtin[name]
    eps = _entry_points()
    if name in eps:
        return lambda ck, dev: _as_spec(_call_user(eps[name].load(), name, ck), name, dev)
    if ":" in name and name.partition(":")[0] not in ("gtcrn", "ctc"):
        fn = _import_target(name)
        return lambda ck, dev: _as_spec(_call_user(fn, name, ck), name, dev)
    raise _unknown(name)
