"""Train the reconstruction probes of all layers of a model at once.

One jitted step updates every layer's probe. Layers differ in width ``H`` and in downsampling rate
``r``, so the step is cut in two:

* **Up-sampling** (``Dense(H -> r*width)``): layers are *grouped* by ``(r, H)`` and each group is one
  ``jax.vmap`` over its stacked parameters. Grouping, not padding: padding ``H`` to the widest layer
  would multiply the work of narrow layers (a VGG-LSTM's flattened CNN maps are ~5x wider than its
  LSTM states), and padding ``r`` would waste ``r_max / r`` of the up-sampling matmul.
* **Highway body + output** (the bulk of the FLOPs): after up-sampling every layer sits on the same
  mel frames at the same width, so all layers run as *one* ``jax.vmap`` over stacked parameters.

Both parts live in one XLA program; consecutive steps run inside a ``lax.fori_loop``.

Mini-batches are drawn over *blocks* of ``block`` consecutive mel frames (``block`` = the largest
rate, so that every layer sees whole activation frames of the same audio): the block indices of step
``s`` come from ``fold_in(key, s)`` and are shared by all layers. A layer's parameters start from
``fold_in(key, crc32(layer name))``. Both make the vmapped run of many layers equal the run of any
one of them alone (tested), and make a resumed run equal an uninterrupted one.

The loss is the L1 distance to the target mel frames (mean over frames and bins), summed over layers:
the layers' parameters are disjoint, so each gets exactly its own gradient. The default optimiser is
Adam on a warm-up + cosine schedule; any element-wise optax transformation keeps the layers
independent (a *global*-norm clip would couple them; use a per-layer clip if you need one).

**Data-parallel** (``mesh=``): step ``s`` draws the same ``batch_blocks`` block indices from
``fold_in(key, s)`` as on one device; they are padded to a multiple of the device count with block 0
at weight 0 and split over the mesh (``shard_map``). Each device gathers its blocks, computes its
part of the loss (weighted L1 sums divided by the *global* ``batch_blocks * block`` frames) and its
gradient; one ``psum`` per step sums them, so every device holds the gradient of the global-batch
mean and applies the same optimiser update to replicated parameters and optimiser state. The
result equals the one-device run up to float summation order, whatever the device count.
The training (and held-out) frames are *replicated* on every device: random mini-batches touch
blocks anywhere in the set, so sharding the frames by blocks would need a cross-device gather of
every mini-batch (or per-device sampling streams, which would make results depend on the device
count); each device holds what the one-device path holds. Held-out evaluation splits its chunks
of ``eval_blocks`` over the devices the same way.
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe._validate import check_choice, check_finite, check_int, check_positive
from jaxprobe._mesh import as_mesh, leading_spec, padded_size, put
from jaxprobe.probe.highway import HighwayBody, Upsample, apply_probe, init_probe

_FN = "train_probes"


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


# ---------------------------------------------------------------------------------------------
# stacked layout


def layer_key(key, name: str):
    """The PRNG key of one layer's probe initialisation (independent of which other layers train)."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


@dataclass(frozen=True)
class _Layout:
    groups: tuple  # ((rate, hidden, (data indices...)), ...)
    order: tuple  # body index -> data index
    fuse: str = "vmap"  # how the layers' matmuls are laid out inside the one jitted step

    @staticmethod
    def of(data: ProbeData, fuse: str = "vmap") -> "_Layout":
        keys: dict = {}
        for i, (r, h) in enumerate(zip(data.rates, data.hidden)):
            keys.setdefault((r, h), []).append(i)
        groups = tuple((r, h, tuple(ix)) for (r, h), ix in keys.items())
        return _Layout(groups, tuple(i for g in groups for i in g[2]), resolve_fuse(fuse))


def resolve_fuse(fuse: str) -> str:
    """``"auto"`` -> ``"unroll"`` on CPU backends, ``"vmap"`` elsewhere (see :class:`TrainConfig`)."""
    check_choice(fuse, "fuse", ("auto", "vmap", "unroll"), fn=_FN)
    if fuse != "auto":
        return fuse
    return "unroll" if jax.default_backend() == "cpu" else "vmap"


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _init_params(key, data: ProbeData, lay: _Layout, probe: ProbeConfig):
    keys = jnp.stack([layer_key(key, n) for n in data.names])
    return _init_stacked(keys, lay, data.hidden, probe, data.target.dtype)


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init_stacked(keys, lay: _Layout, hidden, probe: ProbeConfig, dtype):
    """One vmapped ``init_probe`` per group; layer i gets keys[i] whatever else is trained."""
    up, bodies = {}, []
    for g, (r, h, ix) in enumerate(lay.groups):
        p = jax.vmap(lambda k: init_probe(k, h, rate=r, dtype=dtype, **dataclasses.asdict(probe)))(keys[np.array(ix)])
        up[f"g{g}"] = p["up"]
        bodies.append(p["body"])
    body = jax.tree.map(lambda *a: jnp.concatenate(a), *bodies)
    return {"up": up, "body": body}


def unstack_params(params, lay: _Layout, names):
    """Stacked tree -> {name: per-layer params}."""
    out = {}
    b = 0
    for g, (_, _, ix) in enumerate(lay.groups):
        for j, i in enumerate(ix):
            out[names[i]] = {"up": jax.tree.map(lambda a: a[j], params["up"][f"g{g}"]),
                             "body": jax.tree.map(lambda a: a[b], params["body"])}
            b += 1
    return out


def _grouped_inputs(data: ProbeData, lay: _Layout):
    return {f"g{g}": jnp.stack([data.inputs[i] for i in ix]) for g, (_, _, ix) in enumerate(lay.groups)}


def _forward(params, xs, lay: _Layout, probe: ProbeConfig):
    """xs[g] : (Lg, B, block//r, H) -> predictions (L, B*block, n_mels) in body order."""
    if lay.fuse == "unroll":
        return jnp.stack(_forward_unrolled(params, xs, lay, probe))
    ups = []
    for g, (r, _, _) in enumerate(lay.groups):
        up = Upsample(r, probe.width)
        z = jax.vmap(lambda p, x: up.apply({"params": p}, x))(params["up"][f"g{g}"], xs[f"g{g}"])
        ups.append(z.reshape(z.shape[0], -1, probe.width))
    body = HighwayBody(probe.width, probe.n_mels, probe.n_highway, probe.gate_bias)
    z = jnp.concatenate(ups, axis=0)
    return jax.vmap(lambda p, x: body.apply({"params": p}, x))(params["body"], z)


def _forward_unrolled(params, xs, lay: _Layout, probe: ProbeConfig):
    """:func:`_forward` (as a list, body order) with one plain matmul chain per layer instead of batched (vmapped) matmuls:
    the same parameters and the same math, laid out for XLA:CPU, whose batched dot of many small
    (frames x 80) @ (80 x 80) products runs slower than the separate products (bench_probe)."""
    body = HighwayBody(probe.width, probe.n_mels, probe.n_highway, probe.gate_bias)
    outs, b = [], 0
    for g, (r, _, ix) in enumerate(lay.groups):
        up = Upsample(r, probe.width)
        for j in range(len(ix)):
            pu = jax.tree.map(lambda a: a[j], params["up"][f"g{g}"])
            z = up.apply({"params": pu}, xs[f"g{g}"][j]).reshape(-1, probe.width)
            pb = jax.tree.map(lambda a: a[b], params["body"])
            outs.append(_body_fused(pb, z, probe.n_highway))
            b += 1
    del body
    return outs


def _body_fused(p, x, n_highway: int):
    """:class:`HighwayBody` on its own parameters, with each Highway layer's transform and gate
    Dense fused into one (frames x 80) @ (80 x 160) product: the same dot products, one larger
    matmul for XLA:CPU instead of two small ones."""
    for i in range(n_highway):
        t, g = p[f"highway_{i}"]["transform"], p[f"highway_{i}"]["gate"]
        w = jnp.concatenate([t["kernel"], g["kernel"]], axis=1)
        bias = jnp.concatenate([t["bias"], g["bias"]])
        h = x @ w + bias
        tr, gt = jnp.split(h, 2, axis=-1)
        gate = jax.nn.sigmoid(gt)
        x = x + gate * (jax.nn.relu(tr) - x)  # = g*relu(W_h x) + (1-g)*x, one multiply fewer
    return x @ p["out"]["kernel"] + p["out"]["bias"]


def _layer_mask(mask, params, lay: _Layout):
    """Per-layer bool (L,) in body order -> a tree of broadcastable masks like ``params``."""
    up = {}
    off = 0
    for g, (_, _, ix) in enumerate(lay.groups):
        m = mask[off: off + len(ix)]
        up[f"g{g}"] = jax.tree.map(lambda a: m.reshape((-1,) + (1,) * (a.ndim - 1)), params["up"][f"g{g}"])
        off += len(ix)
    body = jax.tree.map(lambda a: mask.reshape((-1,) + (1,) * (a.ndim - 1)), params["body"])
    return {"up": up, "body": body}


def _select(mask, a, b, lay):
    m = _layer_mask(mask, a, lay)
    return jax.tree.map(jnp.where, m, a, b)


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class ProbeResult:
    """What :func:`train_probes` returns.

    params : {layer name: probe parameters} (the best held-out parameters when validation data was
    given, else the last).  history : list of {"step", "train_l1": {name: float} (the last
    mini-batch before the evaluation), "valid_l1": {name: float} (all held-out frames)}.  stopped : {name: step at which early stopping froze the layer, or None}.
    step : steps done.  finished : False when ``stop_at_step`` interrupted the run.
    """

    names: tuple
    rates: dict
    params: dict
    probe: ProbeConfig
    history: list = field(default_factory=list)
    stopped: dict = field(default_factory=dict)
    step: int = 0
    finished: bool = True

    def predict(self, name: str, h):
        """Reconstruct mel frames from one layer's activations.

        h : array of shape (..., T, H) -> array of shape (..., T * rate, n_mels).
        """
        if name not in self.params:
            raise ValueError(f"No probe for layer {name!r}; trained layers are {list(self.names)}.")
        return predict(self.params[name], h, rate=self.rates[name], probe=self.probe)


def predict(params, h, *, rate: int, probe: ProbeConfig = ProbeConfig()):
    """One layer's probe on activations ``h`` of shape (..., T, H) -> (..., T * rate, n_mels)."""
    h = jnp.asarray(h)
    hidden = params["up"]["dense"]["kernel"].shape[0]
    if h.ndim < 2 or h.shape[-1] != hidden:
        raise ValueError(f"The 'h' parameter of predict must have shape (..., T, {hidden}); got {tuple(h.shape)}.")
    return _predict_jit(params, h, rate, probe)


@partial(jax.jit, static_argnums=(2, 3))
def _predict_jit(params, h, rate, probe):
    return apply_probe(params, h, rate=rate, **dataclasses.asdict(probe))


def _check_config(config: TrainConfig):
    check_int(config.steps, "steps", fn="TrainConfig", low=1)
    check_int(config.batch_blocks, "batch_blocks", fn="TrainConfig", low=1)
    check_positive(config.learning_rate, "learning_rate", fn="TrainConfig")
    check_int(config.warmup_steps, "warmup_steps", fn="TrainConfig", low=0)
    check_choice(config.schedule, "schedule", ("cosine", "constant"), fn="TrainConfig")
    check_int(config.eval_every, "eval_every", fn="TrainConfig", low=1)
    check_int(config.patience, "patience", fn="TrainConfig", low=1)
    check_int(config.eval_blocks, "eval_blocks", fn="TrainConfig", low=1)
    check_int(config.max_to_keep, "max_to_keep", fn="TrainConfig", low=1)


@lru_cache(maxsize=32)
def default_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam on a linear warm-up followed by a cosine decay (or a constant rate).

    Cached per config: the same object comes back, so a second :func:`train_probes` run with the
    same shapes and settings reuses the compiled step.
    """
    if config.schedule == "constant":
        lr = optax.schedules.join_schedules(
            [optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1)),
             optax.constant_schedule(config.learning_rate)], [config.warmup_steps])
    else:
        lr = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, config.warmup_steps, max(config.steps, config.warmup_steps + 1),
            config.learning_rate * config.end_lr_ratio)
    return optax.adam(lr)


def _losses(params, xs, y, lay, probe):
    if lay.fuse == "unroll":  # per layer, without materialising the stacked predictions
        yy = y.reshape(-1, y.shape[-1])
        return jnp.stack([jnp.mean(jnp.abs(p - yy)) for p in _forward_unrolled(params, xs, lay, probe)])
    pred = _forward(params, xs, lay, probe)
    return jnp.mean(jnp.abs(pred - y.reshape(1, -1, y.shape[-1])), axis=(1, 2))


@partial(jax.jit, static_argnames=("lay", "probe", "batch_blocks", "tx", "n"))
def _run_steps(state, xs, y, batch_key, *, lay, probe, batch_blocks, tx, n):
    """``n`` optimiser steps of all layers (module-level and static-keyed: a second run with the same
    shapes and settings reuses the compiled program)."""

    def one_step(_, state):
        step = state["step"]
        idx = jax.random.randint(jax.random.fold_in(batch_key, step), (batch_blocks,), 0, y.shape[0])
        bx = {g: x[:, idx] for g, x in xs.items()}
        by = y[idx]

        def total(p):
            per = _losses(p, bx, by, lay, probe)
            return jnp.sum(per), per

        (_, per), grads = jax.value_and_grad(total, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        new = optax.apply_updates(state["params"], updates)
        new = _select(state["active"], new, state["params"], lay)
        return {**state, "params": new, "opt": opt, "step": step + 1, "last": per}

    return jax.lax.fori_loop(0, n, one_step, state)


@partial(jax.jit, static_argnames=("lay", "probe"))
def _eval_sums(params, xs, y, w, *, lay, probe):
    """Per layer, the w-weighted sum over blocks of the mean-over-bins L1 of every frame: (L,)."""
    pred = _forward(params, xs, lay, probe)
    err = jnp.mean(jnp.abs(pred - y.reshape(1, -1, y.shape[-1])), axis=-1)  # (L, B*block)
    return err @ jnp.repeat(w, y.shape[1])


@partial(jax.jit, static_argnames=("lay",))
def _select_jit(mask, a, b, *, lay):
    return _select(mask, a, b, lay)


# ---------------------------------------------------------------------------------------------
# data-parallel over a mesh


def _padded_batch(idx, n_dev: int):
    """(B,) block indices -> (Bp,) indices and (Bp,) 0/1 weights, Bp the next multiple of n_dev; the
    padding is block 0 at weight 0 (a real, finite block, so no NaN can leak into the gradient)."""
    extra = -idx.shape[0] % n_dev
    w = jnp.concatenate([jnp.ones(idx.shape[0], jnp.float32), jnp.zeros(extra, jnp.float32)])
    return jnp.concatenate([idx, jnp.zeros(extra, idx.dtype)]), w


def _shard_grads(params, xs, y, idx, w, *, lay, probe, axes, frames):
    """One device's share of a step: its blocks ``idx`` (weights ``w``) of the replicated frames;
    per-layer L1 sums over its frames divided by the global ``frames``, psummed with their gradient."""
    bx = {g: x[:, idx] for g, x in xs.items()}
    by = y[idx]
    wf = jnp.repeat(w.astype(y.dtype), y.shape[1])

    def total(p):
        pred = _forward(p, bx, lay, probe)
        err = jnp.mean(jnp.abs(pred - by.reshape(1, -1, by.shape[-1])), axis=-1)  # (L, b*block)
        per = (err @ wf) / frames
        return jnp.sum(per), per

    (_, per), grads = jax.value_and_grad(total, has_aux=True)(params)
    return jax.lax.psum((grads, per), axes)


def _shard_eval(params, xs, y, idx, w, *, lay, probe, axes):
    bx = {g: x[:, idx] for g, x in xs.items()}
    return jax.lax.psum(_eval_sums(params, bx, y[idx], w.astype(y.dtype), lay=lay, probe=probe), axes)


@lru_cache(maxsize=32)
def _sharded_steps(mesh, lay: _Layout, probe: ProbeConfig, batch_blocks: int, block: int,
                   tx: optax.GradientTransformation, n: int):
    """jit of ``n`` data-parallel steps: the state and the frames replicated (in and out), the padded
    mini-batch of each step split over ``mesh`` by ``shard_map``; cached like ``_run_steps``."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    spec, rep = leading_spec(mesh), NamedSharding(mesh, P())
    grads_fn = jax.shard_map(
        partial(_shard_grads, lay=lay, probe=probe, axes=spec[0], frames=batch_blocks * block),
        mesh=mesh, in_specs=(P(), P(), P(), spec, spec), out_specs=P(), check_vma=False)

    def run(state, xs, y, batch_key):
        def one_step(_, state):
            step = state["step"]
            # the same indices as the one-device path, then padded and split over the devices
            idx = jax.random.randint(jax.random.fold_in(batch_key, step), (batch_blocks,), 0, y.shape[0])
            idx, w = _padded_batch(idx, mesh.size)
            grads, per = grads_fn(state["params"], xs, y, idx, w)
            updates, opt = tx.update(grads, state["opt"], state["params"])
            new = optax.apply_updates(state["params"], updates)
            new = _select(state["active"], new, state["params"], lay)
            return {**state, "params": new, "opt": opt, "step": step + 1, "last": per}

        return jax.lax.fori_loop(0, n, one_step, state)

    return jax.jit(run, in_shardings=(rep, rep, rep, rep), out_shardings=rep)


@lru_cache(maxsize=32)
def _sharded_eval(mesh, lay: _Layout, probe: ProbeConfig):
    from jax.sharding import PartitionSpec as P

    spec = leading_spec(mesh)
    return jax.jit(jax.shard_map(partial(_shard_eval, lay=lay, probe=probe, axes=spec[0]), mesh=mesh,
                                 in_specs=(P(), P(), P(), spec, spec), out_specs=P(), check_vma=False))


class Trainer:
    """The training engine behind :func:`train_probes` (not part of ``jaxprobe.probe``'s public API):
    holds the placed data, the compiled step and the optimiser for one run. The benches
    (bench/bench_probe.py, bench/bench_scale.py) drive it directly to time single steps."""

    def __init__(self, data: ProbeData, valid: ProbeData | None, config: TrainConfig, probe: ProbeConfig,
                 tx: optax.GradientTransformation, key, mesh=None):
        self.data, self.valid, self.config, self.probe, self.tx = data, valid, config, probe, tx
        self.lay = _Layout.of(data, config.fuse)
        self.key = key
        self.mesh = mesh
        self.xs = _grouped_inputs(data, self.lay)
        self.vxs = None if valid is None else _grouped_inputs(valid, self.lay)
        self.y, self.vy = data.target, None if valid is None else valid.target
        if mesh is not None:  # every device holds all frames (see the module notes)
            self.xs, self.y = self.replicated((self.xs, self.y), host=True)
            if valid is not None:
                self.vxs, self.vy = self.replicated((self.vxs, self.vy), host=True)

    def replicated(self, tree, host=False):
        """``tree`` with every leaf replicated over the mesh (a no-op for leaves already so placed)."""
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        if host:  # from host copies every process holds in full (multi-process safe)
            return jax.tree.map(lambda a: put(a, self.mesh, P()), tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def init_state(self):
        params = _init_params(jax.random.fold_in(self.key, 0), self.data, self.lay, self.probe)
        L = len(self.data.names)
        dt = self.data.target.dtype
        state = {"params": params, "opt": self.tx.init(params), "best": params,
                 "best_loss": jnp.full((L,), jnp.inf, dt), "bad": jnp.zeros((L,), jnp.int32),
                 "active": jnp.ones((L,), bool), "step": jnp.zeros((), jnp.int32), "last": jnp.zeros((L,), dt)}
        return state if self.mesh is None else self.replicated(state)

    def run(self, state, n: int):
        batch_key = jax.random.fold_in(self.key, 1)
        if self.mesh is not None:
            f = _sharded_steps(self.mesh, self.lay, self.probe, self.config.batch_blocks, self.data.block, self.tx, n)
            return f(self.replicated(state), self.xs, self.y, self.replicated(batch_key))
        return _run_steps(state, self.xs, self.y, batch_key, lay=self.lay,
                          probe=self.probe, batch_blocks=self.config.batch_blocks, tx=self.tx, n=n)

    def select(self, mask, a, b):
        return _select_jit(mask, a, b, lay=self.lay)

    def evaluate(self, params, xs, y) -> np.ndarray:
        """Mean L1 per layer (body order) over all blocks of (xs, y), in fixed-size chunks (with a mesh,
        chunks padded to a multiple of the device count and split over the devices)."""
        nb = int(y.shape[0])
        size = min(self.config.eval_blocks, nb)
        total = np.zeros(len(self.data.names))
        if self.mesh is not None:
            size = padded_size(size, self.mesh)
            f = _sharded_eval(self.mesh, self.lay, self.probe)
            for s in range(0, nb, size):
                idx = np.arange(s, s + size) % nb
                w = (np.arange(s, s + size) < nb).astype(np.float32)
                total += np.asarray(f(params, xs, y, put(idx.astype(np.int32), self.mesh, leading_spec(self.mesh)),
                                      put(w, self.mesh, leading_spec(self.mesh))), dtype=np.float64)
            return total / (nb * y.shape[1])
        for s in range(0, nb, size):
            idx = np.arange(s, s + size) % nb
            w = (np.arange(s, s + size) < nb).astype(y.dtype)
            bx = {g: x[:, idx] for g, x in xs.items()}
            total += np.asarray(_eval_sums(params, bx, y[idx], jnp.asarray(w), lay=self.lay, probe=self.probe),
                                dtype=np.float64)
        return total / (nb * y.shape[1])


def _fingerprint(data: ProbeData, config: TrainConfig, probe: ProbeConfig, valid, key):
    return {"key": np.asarray(jax.random.key_data(key)).tolist(), "names": list(data.names), "rates": list(data.rates), "hidden": list(data.hidden),
            "block": data.block, "n_blocks": data.n_blocks, "dtype": str(data.target.dtype),
            "valid_blocks": None if valid is None else valid.n_blocks,
            "config": dataclasses.asdict(config), "probe": dataclasses.asdict(probe)}


def train_probes(data: ProbeData, *, key, valid: ProbeData | None = None, config: TrainConfig = TrainConfig(),
                 probe: ProbeConfig = ProbeConfig(), optimizer: optax.GradientTransformation | None = None,
                 checkpoint_dir: str | Path | None = None, stop_at_step: int | None = None,
                 verbose: bool = False, mesh=None) -> ProbeResult:
    """Train one reconstruction probe per layer, all layers in one jitted step.

    Parameters
    ----------
    data : ProbeData
        Training frames (from :func:`probe_frames`).
    key : jax PRNG key
        Seeds the initialisation (per layer, from its name) and the mini-batches (per step).
    valid : ProbeData, optional
        Held-out frames of the same layers; enables per-layer early stopping and best-parameter
        selection (without it the last parameters are returned).
    config : TrainConfig
    probe : ProbeConfig
    optimizer : optax.GradientTransformation, optional
        Default :func:`default_optimizer` (config). Must act element-wise for layers to stay independent.
    checkpoint_dir : path, optional
        Orbax checkpoints every ``config.eval_every`` steps. If the folder holds a checkpoint of the
        same run (same layers, shapes and settings), training resumes from the latest one and ends
        exactly where an uninterrupted run would have.
    stop_at_step : int, optional
        Stop (after checkpointing) once this many steps are done; call again to resume.
    verbose : print the losses at every evaluation.
    mesh : None (one device), or a ``jax.sharding.Mesh``, "all" or N: data-parallel training. Each
        step's mini-batch (the same blocks as on one device) is split over the devices, padded with
        zero-weight blocks when ``batch_blocks`` is not a multiple of the device count; parameters,
        optimiser state and the frames are replicated and the gradients summed over the devices (the
        gradient of the global-batch mean). Held-out evaluation is split the same way. Results equal
        the one-device run up to float summation order, for any device count; a checkpoint resumes
        on any mesh (or none).

    Returns
    -------
    ProbeResult
    """
    if not isinstance(data, ProbeData):
        raise TypeError(f"The 'data' parameter of {_FN} must be a ProbeData (see probe_frames); "
                        f"got {type(data).__name__}.")
    _check_config(config)
    if valid is not None:
        if not isinstance(valid, ProbeData):
            raise TypeError(f"The 'valid' parameter of {_FN} must be a ProbeData or None; got {type(valid).__name__}.")
        if (valid.names, valid.rates, valid.hidden, valid.block) != (data.names, data.rates, data.hidden, data.block) \
                or valid.target.shape[-1] != data.target.shape[-1]:
            raise ValueError(f"The 'valid' parameter of {_FN} must hold the same layers, rates, widths, block "
                             f"and mel bins as 'data'; got {valid.names}/{valid.rates}/{valid.hidden}/{valid.block} "
                             f"vs {data.names}/{data.rates}/{data.hidden}/{data.block}.")
    if data.target.shape[-1] != probe.n_mels:
        raise ValueError(f"The targets have {data.target.shape[-1]} mel bins but probe.n_mels is {probe.n_mels}; "
                         f"use ProbeConfig(n_mels={data.target.shape[-1]}).")
    if stop_at_step is not None:
        stop_at_step = check_int(stop_at_step, "stop_at_step", fn=_FN, low=0)
    tx = optimizer if optimizer is not None else default_optimizer(config)
    mesh = as_mesh(mesh, _FN)
    tr = Trainer(data, valid, config, probe, tx, key, mesh)
    state = tr.init_state()
    history: list = []
    stopped = [None] * len(data.names)
    lay = tr.lay
    names_body = [data.names[i] for i in lay.order]
    fp = _fingerprint(data, config, probe, valid, key)
    mngr = None
    if checkpoint_dir is not None:
        import orbax.checkpoint as ocp

        mngr = ocp.CheckpointManager(Path(checkpoint_dir).absolute(),
                                     options=ocp.CheckpointManagerOptions(max_to_keep=config.max_to_keep))
        latest = mngr.latest_step()
        if latest is not None:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
            got = mngr.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                               meta=ocp.args.JsonRestore()))
            meta = got["meta"]
            if meta["fingerprint"] != json.loads(json.dumps(fp)):
                raise ValueError(f"The checkpoint in {checkpoint_dir} is of a different run (layers, shapes or "
                                 "settings differ); use a new checkpoint_dir or delete the old one.")
            state, history, stopped = got["state"], meta["history"], meta["stopped"]

    def save():
        if mngr is not None:
            mngr.save(int(state["step"]), args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({"fingerprint": fp, "history": history, "stopped": stopped})), force=True)
            mngr.wait_until_finished()

    end = config.steps if stop_at_step is None else min(config.steps, stop_at_step)
    step = int(state["step"])
    while step < end and bool(np.any(np.asarray(state["active"]))):
        n = min(config.eval_every - step % config.eval_every, end - step)
        state = tr.run(state, n)
        step += n
        if step % config.eval_every == 0 or step == config.steps:
            rec = {"step": step, "train_l1": dict(zip(names_body, map(float, np.asarray(state["last"]))))}
            if valid is not None:
                v = tr.evaluate(state["params"], tr.vxs, tr.vy)
                rec["valid_l1"] = dict(zip(names_body, map(float, v)))
                active = np.asarray(state["active"])
                best = np.asarray(state["best_loss"], dtype=np.float64)
                improved = active & (v < best - config.min_delta)
                bad = np.where(improved, 0, np.asarray(state["bad"]) + active)
                new_active = active & (bad < config.patience)
                for j in np.flatnonzero(active & ~new_active):
                    stopped[lay.order[j]] = step
                dt = state["best_loss"].dtype
                state = {**state,
                         "best": tr.select(jnp.asarray(improved), state["params"], state["best"]),
                         "best_loss": jnp.asarray(np.where(improved, v, best), dt),
                         "bad": jnp.asarray(bad, jnp.int32), "active": jnp.asarray(new_active)}
                if mesh is not None:
                    state = tr.replicated(state)
            history.append(rec)
            if verbose:
                print(f"step {step}: " + " ".join(f"{k}={x:.4f}" for k, x in rec.get("valid_l1", rec["train_l1"]).items()))
            save()
    if mngr is not None and int(state["step"]) != (mngr.latest_step() or 0):
        save()
    final = state["best"] if valid is not None else state["params"]
    if mesh is not None:  # plain default-device arrays, as from the one-device path
        final = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), final)
    finished = step >= config.steps or not bool(np.any(np.asarray(state["active"])))
    if mngr is not None:
        mngr.close()
    return ProbeResult(names=data.names, rates=dict(zip(data.names, data.rates)),
                       params=unstack_params(final, lay, data.names), probe=probe, history=history,
                       stopped=dict(zip(data.names, stopped)), step=step, finished=finished)


def evaluate_probes(result: ProbeResult, data: ProbeData) -> dict:
    """Mean L1 reconstruction error per layer of ``result``'s probes on ``data``: {name: float}."""
    out = {}
    for n, x in zip(data.names, data.inputs):
        if n not in result.params:
            raise ValueError(f"No probe for layer {n!r}; trained layers are {list(result.names)}.")
        pred = result.predict(n, x)  # (N, block, n_mels)
        out[n] = float(jnp.mean(jnp.abs(pred - data.target)))
    return out
