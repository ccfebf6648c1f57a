"""The data-parallel training step: each step's blocks split over a mesh with ``shard_map``, one
``psum`` of the gradients per step (see "Data-parallel" in :mod:`jaxprobe.probe.train`). Device
plumbing in :mod:`jaxprobe._mesh`.
"""
from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import optax

from jaxprobe._mesh import leading_spec
from jaxprobe.probe.data import ProbeConfig
from jaxprobe.probe.step import Layout, eval_sums, forward, run_steps, select_layers


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
        pred = forward(p, bx, lay, probe)
        err = jnp.mean(jnp.abs(pred - by.reshape(1, -1, by.shape[-1])), axis=-1)  # (L, b*block)
        per = (err @ wf) / frames
        return jnp.sum(per), per

    (_, per), grads = jax.value_and_grad(total, has_aux=True)(params)
    return jax.lax.psum((grads, per), axes)


def _shard_eval(params, xs, y, idx, w, *, lay, probe, axes):
    bx = {g: x[:, idx] for g, x in xs.items()}
    return jax.lax.psum(eval_sums(params, bx, y[idx], w.astype(y.dtype), lay=lay, probe=probe), axes)


@lru_cache(maxsize=32)
def sharded_steps(mesh, lay: Layout, probe: ProbeConfig, batch_blocks: int, block: int,
                   tx: optax.GradientTransformation, n: int):
    """jit of ``n`` data-parallel steps: the state and the frames replicated (in and out), the padded
    mini-batch of each step split over ``mesh`` by ``shard_map``; cached like ``run_steps``."""
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
            new = select_layers(state["active"], new, state["params"], lay)
            return {**state, "params": new, "opt": opt, "step": step + 1, "last": per}

        return jax.lax.fori_loop(0, n, one_step, state)

    return jax.jit(run, in_shardings=(rep, rep, rep, rep), out_shardings=rep)


@lru_cache(maxsize=32)
def sharded_eval(mesh, lay: Layout, probe: ProbeConfig):
    from jax.sharding import PartitionSpec as P

    spec = leading_spec(mesh)
    return jax.jit(jax.shard_map(partial(_shard_eval, lay=lay, probe=probe, axes=spec[0]), mesh=mesh,
                                 in_specs=(P(), P(), P(), spec, spec), out_specs=P(), check_vma=False))


