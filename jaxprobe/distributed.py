"""Device-parallel analyses: bootstrap replicates, CKA batches and diffusion maps over a mesh.

Each analysis owns its sharded path (``jaxprobe._cka.sharded_cka``, ``jaxprobe.bootstrap.sharded_*``,
the probe's ``jaxprobe.probe.train``); the device plumbing they share lives in ``jaxprobe._mesh``,
which imports no analysis. This module is the public face: it re-exports the mesh helpers,
:func:`sharded_cka` and :func:`sharded_diffusion_map` (``jaxprobe.diffusion.sharded``).

One option picks the devices: ``mesh=`` on the API (``None`` = the single-device path, the
default), or ``devices="all" | N`` turned into a mesh by :func:`make_mesh`. Every heavy call
splits one axis across all devices of the mesh:

* bootstrap replicates (``bootstrap_cka`` / ``bootstrap_mean`` with ``mesh=``): each device
  receives the replicate ids it owns and draws their count rows itself from
  ``fold_in(key, b)``; the Gram matrices or item values are replicated. Replicate b is the
  same count row on any device count, so results do not depend on the mesh;
* per-item CKA (``cka(X, Y, mesh=...)`` or :func:`sharded_cka`): the broadcast leading
  batch is flattened and split; no randomness is involved;
* diffusion maps over many clouds (:func:`sharded_diffusion_map`): the cloud axis is split
  and XLA partitions the batched solver; cloud i keeps its key ``fold_in(key, i)``.
* probe training (``jaxprobe.probe.train_probes(..., mesh=...)``): each step's mini-batch
  (the blocks drawn from ``fold_in(key, step)``, as on one device) is split with
  ``shard_map``; parameters, optimiser state and the frames are replicated and the
  gradients summed with one ``psum`` per step.

An axis whose length is not a multiple of the device count is padded (replicate ids past
the end, copies of the first item, or zero-weight blocks) and trimmed afterwards, so any
batch size works.

Multi-host: start every process with ``jax.distributed.initialize(...)`` before anything
else touches JAX (:func:`initialize` wraps it); ``make_mesh("all")`` then spans the devices
of every process, every process passes the same (replicated) inputs, and the sharded
results are gathered back to every process (``process_allgather``). The same code runs on
one host, several hosts, CPUs and GPUs.
"""
from __future__ import annotations

from jaxprobe._cka import sharded_cka
from jaxprobe._mesh import AXIS, as_mesh, initialize, make_mesh, mesh_from_config
from jaxprobe.diffusion.sharded import sharded_diffusion_map

__all__ = ["AXIS", "as_mesh", "initialize", "make_mesh", "mesh_from_config", "sharded_cka", "sharded_diffusion_map"]
