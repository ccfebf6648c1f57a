"""Dumping and enhancing sweeps on any degradation axis (torch side of the c50/clipping sweeps
and of the quality stage).

* :func:`dump_degradation_sweep` — the activation store of a :class:`~torch_bridge.degrade.DegradationSweep`,
  items as :func:`torch_bridge.dump.dump_snr_sweep` makes them, the level stored under the
  axis's condition name (``{"noise": "pink", "c50": 10.0}``; the clean reference
  ``{"noise": "clean", "c50": None}``).
* :func:`enhance_sweep` — for every utterance, its clean-reference, noisy and enhanced model
  windows (the windows the activations were captured on, the enhanced output as the
  model's official pipeline reconstructs it), one ``.npz`` per utterance written under a
  temporary name and renamed, so a killed run resumes and never reads a torn file.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dump import CLEAN, DumpReport, Item, mixture_length, dump
from .mixing import mix_at_snr, window_starts, windows

__all__ = ["degradation_items", "dump_degradation_sweep", "dump_spec_degradation_sweep", "enhance_sweep", "sweep_levels",
           "sweep_mixture"]


def sweep_levels(sweep) -> tuple[str, list[float]]:
    """(condition field, levels) of an SNR sweep or a degradation sweep."""
    if hasattr(sweep, "levels"):
        return sweep.field, list(sweep.levels)
    return "snr", list(sweep.snrs)


def sweep_mixture(sweep, uid: str, nid: str, level: float):
    """The mixture of (utterance, noise type, level) of either kind of sweep."""
    if hasattr(sweep, "mixture"):
        return sweep.mixture(uid, nid, level)
    return mix_at_snr(sweep.utterances[uid], sweep.noises[nid], level, seed=sweep.seed, **sweep.mix_kwargs)


def _cut(signal, window: int | None, mode: str, hop: int | None) -> np.ndarray:
    """The model windows of a signal (n, window), or the whole signal as one item (``window=None``:
    whole-utterance models)."""
    if window is None:
        return np.asarray(signal, np.float32)[None]
    return windows(signal, size=window, mode=mode, hop=hop)


def degradation_items(sweep, *, window: int | None, window_mode: str = "center", hop: int | None = None) -> list[Item]:
    """Per utterance: the clean reference, then every (noise type, level), cut into windows."""
    field, levels = sweep_levels(sweep)
    items: list[Item] = []
    for uid, rec in sweep.utterances.items():
        n_win = 1 if window is None else len(window_starts(
            mixture_length(rec.waveform.shape[0], sweep.mix_kwargs), size=window, mode=window_mode, hop=hop))
        conds = [{"noise": CLEAN, field: None}] + [{"noise": t, field: v} for t in sweep.noises for v in levels]
        items.extend(Item(c, uid, w) for c in conds for w in range(n_win))
    return items


class _Loader:
    def __init__(self, sweep, *, window, window_mode, hop, prepare):
        self.sweep, self.window, self.mode, self.hop, self.prepare = sweep, window, window_mode, hop, prepare
        self.field = sweep_levels(sweep)[0]
        self._key, self._cuts, self._info = None, None, {}

    def __call__(self, item: Item):
        noise, level = item.condition["noise"], item.condition[self.field]
        key = (item.utterance, noise, level)
        if key != self._key:
            sw = self.sweep
            _, levels = sweep_levels(sw)
            if noise == CLEAN:  # the reference depends on the utterance (and its room) only
                mix = sweep_mixture(sw, item.utterance, next(iter(sw.noises)), levels[0])
                signal, info = mix.clean, {"utterance_id": item.utterance, "reference": "clean",
                                           "target_lufs": mix.info.get("lufs_target")}
            else:
                mix = sweep_mixture(sw, item.utterance, noise, level)
                signal, info = mix.noisy, {k: v for k, v in mix.info.items() if k != "degradations"}
            if self.prepare is not None:
                signal, extra = self.prepare(signal)
                info.update(extra)
            self._cuts = _cut(signal, self.window, self.mode, self.hop)
            self._key, self._info = key, info
        if item.window >= self._cuts.shape[0]:
            raise RuntimeError(f"{item}: the mixture has {self._cuts.shape[0]} windows; the plan expected more.")
        return self._cuts[item.window], dict(self._info, window=item.window)


def dump_degradation_sweep(model: torch.nn.Module, layers: Sequence[Any], sweep, out: str, *, window: int | None,
                           window_mode: str = "center", hop: int | None = None,
                           forward: Callable | None = None, prepare: Callable | None = None,
                           model_info: Mapping[str, Any] | None = None, **kwargs: Any) -> DumpReport:
    """Dump a degradation sweep (``torch_bridge.degradation_sweep(...)``) into a store; the
    keyword arguments are those of :func:`torch_bridge.dump.dump`."""
    if CLEAN in sweep.noises:
        raise ValueError(f"A noise type is named {CLEAN!r}, which the sweep uses for the clean reference; rename it.")
    field, levels = sweep_levels(sweep)
    items = degradation_items(sweep, window=window, window_mode=window_mode, hop=hop)
    mixing = {
        "axis": field, "levels": levels, "seed": sweep.seed, "noises": list(sweep.noises),
        "utterances": len(sweep.utterances), "noise_snr": getattr(sweep, "noise_snr", None),
        "reference": getattr(sweep, "reference", None),
        "mix_kwargs": {k: (v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                       for k, v in sweep.mix_kwargs.items()},
        "window": {"size": window, "mode": window_mode, "hop": hop}, "clean_reference": True,
    }
    load = _Loader(sweep, window=window, window_mode=window_mode, hop=hop, prepare=prepare)
    return dump(model, layers, items, load, out, forward=forward, model_info=model_info, mixing=mixing, **kwargs)


def dump_spec_degradation_sweep(spec, sweep, out: str, *, window_mode: str = "center", hop: int | None = None,
                                extra: Mapping[str, Any] | None = None, batch_size: int | None = None,
                                **kwargs: Any) -> DumpReport:
    """:func:`dump_degradation_sweep` of a ``torch_bridge.ModelSpec`` (as ``dump_spec_sweep`` does
    for SNR sweeps): its layer records, pooling and ``select``, window, forward and preparation;
    ``batch_size`` 0 or None: the model's own (``spec.dump_batch_size``)."""
    from .dump import spec_batch_size, uniform_value, spec_model_info

    return dump_degradation_sweep(
        spec.model, spec.layer_records(), sweep, out, window=spec.window, window_mode=window_mode, hop=hop,
        forward=spec.forward_fn, prepare=spec.prepare, model_info=dict(spec.info),
        pooling=uniform_value(spec.pooling), select=uniform_value(spec.select),
        extra={**spec.source, "model_spec": spec_model_info(spec), **(extra or {})},
        batch_size=spec_batch_size(spec, batch_size), **kwargs,
    )


def muse_enhance_windows(model: torch.nn.Module, cuts: np.ndarray) -> np.ndarray:
    """MUSE on normalised windows (n, 30700) -> normalised enhanced windows (n, 30700)."""
    from .muse_inference import muse_forward_inputs, muse_reconstruct

    dev = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for w in cuts:
            mag_c, pha = muse_forward_inputs(w[None])
            est_mag_c, est_pha, _ = model(mag_c.to(dev), pha.to(dev))
            out.append(muse_reconstruct(est_mag_c.cpu(), est_pha.cpu()).numpy()[0])
    return np.stack(out)


#: Models whose activations are captured on prepared windows and whose official pipeline can be
#: run on exactly those windows: the quality stage scores the output of the input the activations
#: saw. MUSE: the whole-mixture energy normalisation, then STFT, generator and iSTFT per window
#: (equal to ``muse_inference.enhance`` when a mixture is one window). Every other enhancement
#: model is enhanced by its ``spec.enhance`` (its official pipeline) on each window, or on the
#: whole mixture for whole-utterance models (``window=None``, e.g. GTCRN).
WINDOW_ENHANCERS: dict[str, Callable[[torch.nn.Module, np.ndarray], np.ndarray]] = {"muse": muse_enhance_windows}


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad the last axis of y to n samples."""
    if y.shape[-1] >= n:
        return y[..., :n]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])])


def enhance_sweep(spec, sweep, out_dir, *, window_mode: str = "center", hop: int | None = None,
                  threads: int | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Enhance every mixture of ``sweep`` with the enhancement model ``spec`` (a
    ``torch_bridge.ModelSpec`` with ``enhance``); write per utterance ``<index>.npz`` with
    ``clean`` (n_win, W), ``noisy`` and ``enhanced`` (K, S, n_win, W) (noise types and levels in
    the sweep's order) into ``out_dir``; finished files are kept.

    The windows are those the dump captures (``spec.window``; ``None``: the whole mixture as one
    item). MUSE enhances its prepared windows (:data:`WINDOW_ENHANCERS`); other models run
    ``spec.enhance`` (the official pipeline) on each window or on the whole mixture. An output
    shorter than its input (GTCRN drops ``L mod 256`` samples) is scored on its own length: the
    clean and noisy windows are cropped to it. Returns ``out_dir``."""
    from tqdm.auto import tqdm

    if not getattr(spec, "enhances", False):
        raise ValueError(f"The quality stage needs an enhancement model (a ModelSpec with enhance()); "
                         f"model {spec.name!r} ({getattr(spec, 'kind', '?')}) has none.")
    base = spec.name.split(":", 1)[0]
    window, prepare = spec.window, spec.prepare
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, levels = sweep_levels(sweep)
    uids = list(sweep.utterances)
    todo = [i for i in range(len(uids)) if not (out / f"{i:05d}.npz").is_file()]
    if log:
        log(f"quality: enhancing {len(todo)} of {len(uids)} utterances x {len(sweep.noises)} noises x "
            f"{len(levels)} levels ({len(uids) - len(todo)} done before)")

    def run(signal: np.ndarray) -> np.ndarray:
        if base in WINDOW_ENHANCERS and window is not None:
            sig, info = prepare(signal) if prepare is not None else (signal, {})
            factor = np.float32(info.get("muse_norm_factor", 1.0))
            return WINDOW_ENHANCERS[base](spec.model, _cut(sig, window, window_mode, hop)) / factor
        cuts = _cut(signal, window, window_mode, hop)
        return np.stack([np.asarray(spec.enhance(c), np.float32) for c in cuts])

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        bar = tqdm(total=len(todo) * len(sweep.noises) * len(levels), unit="mix", desc="enhance", dynamic_ncols=True)
        for i in todo:
            uid = uids[i]
            first = sweep_mixture(sweep, uid, next(iter(sweep.noises)), levels[0])
            clean = _cut(first.clean, window, window_mode, hop)
            noisy = np.empty((len(sweep.noises), len(levels)) + clean.shape, np.float32)
            enhanced = np.zeros_like(noisy)
            n_out = clean.shape[-1]
            for k, nid in enumerate(sweep.noises):
                for s, lv in enumerate(levels):
                    mix = sweep_mixture(sweep, uid, nid, lv)
                    noisy[k, s] = _cut(mix.noisy, window, window_mode, hop)
                    y = run(mix.noisy)
                    if y.shape[:-1] != clean.shape[:-1] or y.shape[-1] > clean.shape[-1]:
                        raise RuntimeError(f"{spec.name}'s enhance() returned {y.shape} for input windows "
                                           f"{clean.shape}; expected the same windows, at most as long.")
                    n_out = min(n_out, y.shape[-1])
                    enhanced[k, s] = _fit(y, clean.shape[-1])
                    bar.update(1)
            tmp = out / f".{i:05d}.tmp.npz"
            np.savez(tmp, clean=clean[..., :n_out], noisy=noisy[..., :n_out], enhanced=enhanced[..., :n_out],
                     utterance=np.array(uid), noises=np.array(list(sweep.noises)),
                     levels=np.array(levels, np.float64))
            os.replace(tmp, out / f"{i:05d}.npz")
        bar.close()
    finally:
        torch.set_num_threads(old)
    return out
