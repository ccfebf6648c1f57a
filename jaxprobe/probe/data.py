"""Probe training inputs: the probe and training settings and the frames (:func:`probe_frames`).

Part of :mod:`jaxprobe.probe.train` (the method is described there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import check_finite, check_int


@dataclass(frozen=True)
class ProbeConfig:
    """Probe architecture (see :class:`jaxprobe.probe.highway.HighwayProbe`)."""

    width: int = 80
    n_mels: int = 80
    n_highway: int = 4
    gate_bias: float = -1.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`train_probes`.

    steps : total optimiser steps.  batch_blocks : blocks per step (mel frames per step =
    ``batch_blocks * block``).  learning_rate, warmup_steps, schedule ("cosine" decays to
    ``end_lr_ratio * learning_rate`` at ``steps``; "constant").  eval_every : steps between held-out
    evaluations (and checkpoints).  patience : evaluations without an improvement of more than
    ``min_delta`` after which a layer stops (its best parameters are kept).  eval_blocks : blocks per
    evaluation batch.  max_to_keep : checkpoints kept.  fuse : how the layers share the one jitted
    step: "vmap" (stacked parameters, batched matmuls), "unroll" (the same stacked parameters, one
    matmul chain per layer in the same XLA program) or "auto" (unroll on CPU, vmap elsewhere; on
    XLA:CPU batched small matmuls ran slower than separate ones, see bench/bench_probe.py).
    Results agree to float tolerance whatever the choice.
    """

    steps: int = 2000
    batch_blocks: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    schedule: str = "cosine"
    end_lr_ratio: float = 0.1
    eval_every: int = 100
    patience: int = 5
    min_delta: float = 0.0
    eval_blocks: int = 512
    max_to_keep: int = 2
    fuse: str = "auto"


@dataclass(frozen=True)
class ProbeData:
    """Aligned training frames for the probes of several layers.

    names : layer names.  rates : their downsampling factors.
    inputs : per layer an array of shape (N, block // rate, H).
    target : array of shape (N, block, n_mels), the mel frames the probes reconstruct.
    Build it with :func:`probe_frames`.
    """

    names: tuple
    rates: tuple
    inputs: tuple
    target: Any
    block: int

    @property
    def n_blocks(self) -> int:
        return int(self.target.shape[0])

    @property
    def hidden(self) -> tuple:
        return tuple(int(x.shape[-1]) for x in self.inputs)

    def subset(self, names: Sequence[str]) -> "ProbeData":
        """The same frames (and the same ``block``) for a subset of the layers."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"Unknown layer(s) {missing}; this ProbeData holds {list(self.names)}.")
        idx = [self.names.index(n) for n in names]
        return ProbeData(tuple(names), tuple(self.rates[i] for i in idx), tuple(self.inputs[i] for i in idx),
                         self.target, self.block)


def probe_frames(activations: Mapping[str, Sequence], targets: Sequence, rates: Mapping[str, int], *,
                 block: int | None = None, dtype=None) -> ProbeData:
    """Cut utterances into aligned blocks of frames for :func:`train_probes`.

    Parameters
    ----------
    activations : mapping layer name -> sequence (one per utterance) of arrays of shape (T_l, H_l)
        Frame-level activations; ``T_l * rates[name]`` must be within ``2 * rate`` frames of the
        utterance's mel length (floor or ceil downsampling both fit).
    targets : sequence of arrays of shape (T, n_mels)
        The mel frames to reconstruct, one per utterance (the input log-mel, or the clean log-mel
        when the activations came from noisy input).
    rates : mapping layer name -> int
        Each layer's time-downsampling factor ``r`` (1, 2, 4, 8, ...).
    block : int, optional
        Mel frames per block; a multiple of every rate. Default: the least common multiple of
        the rates. Each utterance contributes its first ``floor(T' / block)`` whole blocks, where
        ``T'`` is the shortest of its mel length and ``T_l * r_l``; the tail is dropped.
    dtype : optional float dtype (default: that of the targets; float64 only with jax x64 enabled).

    Returns
    -------
    ProbeData
    """
    fn = "probe_frames"
    if not isinstance(activations, Mapping) or not activations:
        raise TypeError(f"The 'activations' parameter of {fn} must be a non-empty mapping layer name -> "
                        f"list of (T, H) arrays; got {type(activations).__name__}.")
    names = tuple(activations)
    missing = [n for n in names if n not in rates]
    if missing:
        raise ValueError(f"The 'rates' parameter of {fn} has no rate for layer(s) {missing}; "
                         f"give every layer its time-downsampling factor, e.g. {{'{missing[0]}': 1}}.")
    r = tuple(check_int(rates[n], f"rates['{n}']", fn=fn, low=1) for n in names)
    lcm = int(np.lcm.reduce(np.array(r)))
    block = lcm if block is None else check_int(block, "block", fn=fn, low=1)
    if any(block % ri for ri in r):
        raise ValueError(f"The 'block' parameter of {fn} must be a multiple of every rate {sorted(set(r))}. "
                         f"Got {block} instead; use a multiple of {lcm}.")
    targets = list(targets)
    n_utt = len(targets)
    if n_utt == 0:
        raise ValueError(f"The 'targets' parameter of {fn} is empty; give one (T, n_mels) mel array per utterance.")
    ys = []
    for u, y in enumerate(targets):
        y = np.asarray(y)
        if y.ndim != 2 or y.dtype.kind != "f":
            raise ValueError(f"targets[{u}] of {fn} must be a float array of shape (T, n_mels); got "
                             f"shape {y.shape} dtype {y.dtype}.")
        check_finite(y, f"targets[{u}]", fn=fn)
        ys.append(y)
    n_mels = ys[0].shape[1]
    if any(y.shape[1] != n_mels for y in ys):
        raise ValueError(f"All targets of {fn} must have the same number of mel bins; got "
                         f"{sorted({y.shape[1] for y in ys})}.")
    dtype = np.dtype(dtype) if dtype is not None else ys[0].dtype
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        dtype = np.dtype(np.float32)  # what JAX would silently do; done here explicitly
    hs = {}
    for n, ri in zip(names, r):
        seq = list(activations[n])
        if len(seq) != n_utt:
            raise ValueError(f"activations['{n}'] of {fn} has {len(seq)} utterances but targets has {n_utt}; "
                             "give one activation array per target utterance, in the same order.")
        arrs = []
        for u, h in enumerate(seq):
            h = np.asarray(h)
            if h.ndim != 2:
                raise ValueError(f"activations['{n}'][{u}] of {fn} must have shape (T, H); got {h.shape}. "
                                 "Squeeze the batch axis or split utterances first.")
            if abs(h.shape[0] * ri - ys[u].shape[0]) >= 2 * ri:
                raise ValueError(f"activations['{n}'][{u}] has {h.shape[0]} frames at rate {ri} = "
                                 f"{h.shape[0] * ri} mel frames, but targets[{u}] has {ys[u].shape[0]}; "
                                 "check the layer's downsampling factor in 'rates'.")
            check_finite(h, f"activations['{n}'][{u}]", fn=fn)
            arrs.append(h)
        widths = {a.shape[1] for a in arrs}
        if len(widths) != 1:
            raise ValueError(f"activations['{n}'] of {fn} changes width across utterances: {sorted(widths)}.")
        hs[n] = arrs
    xs = {n: [] for n in names}
    yb = []
    for u in range(n_utt):
        t = min([ys[u].shape[0]] + [hs[n][u].shape[0] * ri for n, ri in zip(names, r)])
        nb = t // block
        if nb == 0:
            continue
        yb.append(ys[u][: nb * block].reshape(nb, block, n_mels))
        for n, ri in zip(names, r):
            h = hs[n][u]
            xs[n].append(h[: nb * block // ri].reshape(nb, block // ri, h.shape[1]))
    if not yb:
        raise ValueError(f"No utterance of {fn} is at least one block ({block} mel frames) long; "
                         "give longer utterances or a smaller 'block'.")
    target = jnp.asarray(np.concatenate(yb).astype(dtype))
    inputs = tuple(jnp.asarray(np.concatenate(xs[n]).astype(dtype)) for n in names)
    return ProbeData(names, r, inputs, target, block)


