"""The one jitted training step of all layers: the stacked layout of the layers' parameters, the
forward pass, the loss, ``lax.fori_loop`` over steps and the held-out sums.

Part of :mod:`jaxprobe.probe.train` (the method is described there).
"""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe._validate import check_choice, check_int, check_positive
from jaxprobe.probe.data import ProbeConfig, ProbeData, TrainConfig
from jaxprobe.probe.highway import HighwayBody, Upsample, apply_probe, init_probe

_FN = "train_probes"


# ---------------------------------------------------------------------------------------------
# stacked layout


def layer_key(key, name: str):
    """The PRNG key of one layer's probe initialisation (independent of which other layers train)."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


@dataclass(frozen=True)
class Layout:
    groups: tuple  # ((rate, hidden, (data indices...)), ...)
    order: tuple  # body index -> data index
    fuse: str = "vmap"  # how the layers' matmuls are laid out inside the one jitted step

    @staticmethod
    def of(data: ProbeData, fuse: str = "vmap") -> "Layout":
        keys: dict = {}
        for i, (r, h) in enumerate(zip(data.rates, data.hidden)):
            keys.setdefault((r, h), []).append(i)
        groups = tuple((r, h, tuple(ix)) for (r, h), ix in keys.items())
        return Layout(groups, tuple(i for g in groups for i in g[2]), resolve_fuse(fuse))


def resolve_fuse(fuse: str) -> str:
    """``"auto"`` -> ``"unroll"`` on CPU backends, ``"vmap"`` elsewhere (see :class:`TrainConfig`)."""
    check_choice(fuse, "fuse", ("auto", "vmap", "unroll"), fn=_FN)
    if fuse != "auto":
        return fuse
    return "unroll" if jax.default_backend() == "cpu" else "vmap"


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def init_params(key, data: ProbeData, lay: Layout, probe: ProbeConfig):
    keys = jnp.stack([layer_key(key, n) for n in data.names])
    return _init_stacked(keys, lay, data.hidden, probe, data.target.dtype)


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init_stacked(keys, lay: Layout, hidden, probe: ProbeConfig, dtype):
    """One vmapped ``init_probe`` per group; layer i gets keys[i] whatever else is trained."""
    up, bodies = {}, []
    for g, (r, h, ix) in enumerate(lay.groups):
        p = jax.vmap(lambda k: init_probe(k, h, rate=r, dtype=dtype, **dataclasses.asdict(probe)))(keys[np.array(ix)])
        up[f"g{g}"] = p["up"]
        bodies.append(p["body"])
    body = jax.tree.map(lambda *a: jnp.concatenate(a), *bodies)
    return {"up": up, "body": body}


def unstack_params(params, lay: Layout, names):
    """Stacked tree -> {name: per-layer params}."""
    out = {}
    b = 0
    for g, (_, _, ix) in enumerate(lay.groups):
        for j, i in enumerate(ix):
            out[names[i]] = {"up": jax.tree.map(lambda a: a[j], params["up"][f"g{g}"]),
                             "body": jax.tree.map(lambda a: a[b], params["body"])}
            b += 1
    return out


def grouped_inputs(data: ProbeData, lay: Layout):
    return {f"g{g}": jnp.stack([data.inputs[i] for i in ix]) for g, (_, _, ix) in enumerate(lay.groups)}


def forward(params, xs, lay: Layout, probe: ProbeConfig):
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


def _forward_unrolled(params, xs, lay: Layout, probe: ProbeConfig):
    """:func:`forward` (as a list, body order) with one plain matmul chain per layer instead of batched (vmapped) matmuls:
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


def _layer_mask(mask, params, lay: Layout):
    """Per-layer bool (L,) in body order -> a tree of broadcastable masks like ``params``."""
    up = {}
    off = 0
    for g, (_, _, ix) in enumerate(lay.groups):
        m = mask[off: off + len(ix)]
        up[f"g{g}"] = jax.tree.map(lambda a: m.reshape((-1,) + (1,) * (a.ndim - 1)), params["up"][f"g{g}"])
        off += len(ix)
    body = jax.tree.map(lambda a: mask.reshape((-1,) + (1,) * (a.ndim - 1)), params["body"])
    return {"up": up, "body": body}


def select_layers(mask, a, b, lay):
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


def check_config(config: TrainConfig):
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
    pred = forward(params, xs, lay, probe)
    return jnp.mean(jnp.abs(pred - y.reshape(1, -1, y.shape[-1])), axis=(1, 2))


@partial(jax.jit, static_argnames=("lay", "probe", "batch_blocks", "tx", "n"))
def run_steps(state, xs, y, batch_key, *, lay, probe, batch_blocks, tx, n):
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
        new = select_layers(state["active"], new, state["params"], lay)
        return {**state, "params": new, "opt": opt, "step": step + 1, "last": per}

    return jax.lax.fori_loop(0, n, one_step, state)


@partial(jax.jit, static_argnames=("lay", "probe"))
def eval_sums(params, xs, y, w, *, lay, probe):
    """Per layer, the w-weighted sum over blocks of the mean-over-bins L1 of every frame: (L,)."""
    pred = forward(params, xs, lay, probe)
    err = jnp.mean(jnp.abs(pred - y.reshape(1, -1, y.shape[-1])), axis=-1)  # (L, B*block)
    return err @ jnp.repeat(w, y.shape[1])


@partial(jax.jit, static_argnames=("lay",))
def select_layers_jit(mask, a, b, *, lay):
    return select_layers(mask, a, b, lay)


