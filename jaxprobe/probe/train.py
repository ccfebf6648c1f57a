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
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe._validate import check_int
from jaxprobe._mesh import as_mesh, leading_spec, padded_size, put
from jaxprobe.probe.data import ProbeConfig, ProbeData, TrainConfig
from jaxprobe.probe.step import (Layout, ProbeResult, check_config, default_optimizer, eval_sums, grouped_inputs,
                                 init_params, run_steps, select_layers_jit, unstack_params)
from jaxprobe.probe.sharded import sharded_eval, sharded_steps

_FN = "train_probes"


class Trainer:
    """The training engine behind :func:`train_probes` (not part of ``jaxprobe.probe``'s public API):
    holds the placed data, the compiled step and the optimiser for one run. The benches
    (bench/bench_probe.py, bench/bench_scale.py) drive it directly to time single steps."""

    def __init__(self, data: ProbeData, valid: ProbeData | None, config: TrainConfig, probe: ProbeConfig,
                 tx: optax.GradientTransformation, key, mesh=None):
        self.data, self.valid, self.config, self.probe, self.tx = data, valid, config, probe, tx
        self.lay = Layout.of(data, config.fuse)
        self.key = key
        self.mesh = mesh
        self.xs = grouped_inputs(data, self.lay)
        self.vxs = None if valid is None else grouped_inputs(valid, self.lay)
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
        params = init_params(jax.random.fold_in(self.key, 0), self.data, self.lay, self.probe)
        L = len(self.data.names)
        dt = self.data.target.dtype
        state = {"params": params, "opt": self.tx.init(params), "best": params,
                 "best_loss": jnp.full((L,), jnp.inf, dt), "bad": jnp.zeros((L,), jnp.int32),
                 "active": jnp.ones((L,), bool), "step": jnp.zeros((), jnp.int32), "last": jnp.zeros((L,), dt)}
        return state if self.mesh is None else self.replicated(state)

    def run(self, state, n: int):
        batch_key = jax.random.fold_in(self.key, 1)
        if self.mesh is not None:
            f = sharded_steps(self.mesh, self.lay, self.probe, self.config.batch_blocks, self.data.block, self.tx, n)
            return f(self.replicated(state), self.xs, self.y, self.replicated(batch_key))
        return run_steps(state, self.xs, self.y, batch_key, lay=self.lay,
                          probe=self.probe, batch_blocks=self.config.batch_blocks, tx=self.tx, n=n)

    def select(self, mask, a, b):
        return select_layers_jit(mask, a, b, lay=self.lay)

    def evaluate(self, params, xs, y) -> np.ndarray:
        """Mean L1 per layer (body order) over all blocks of (xs, y), in fixed-size chunks (with a mesh,
        chunks padded to a multiple of the device count and split over the devices)."""
        nb = int(y.shape[0])
        size = min(self.config.eval_blocks, nb)
        total = np.zeros(len(self.data.names))
        if self.mesh is not None:
            size = padded_size(size, self.mesh)
            f = sharded_eval(self.mesh, self.lay, self.probe)
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
            total += np.asarray(eval_sums(params, bx, y[idx], jnp.asarray(w), lay=self.lay, probe=self.probe),
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
    check_config(config)
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
