"""Device-parallel analyses: bootstrap replicates, CKA batches and diffusion maps over a mesh.

Each analysis owns its sharded path (``jaxprobe._cka.sharded_cka``, ``jaxprobe.bootstrap.sharded_*``,
the probe's ``jaxprobe.probe.train``); the device plumbing they share lives in ``jaxprobe._mesh``,
which imports no analysis. This module is the public face: it re-exports the mesh helpers and
:func:`sharded_cka`, and holds :func:`sharded_diffusion_map`.

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

import jax
import numpy as np

from jaxprobe._cka import sharded_cka
from jaxprobe._mesh import (AXIS, as_mesh, auto_axes, fetch, initialize, leading_spec, make_mesh, pad_rows, padded_size,
                            put)

__all__ = ["AXIS", "as_mesh", "initialize", "make_mesh", "sharded_cka", "sharded_diffusion_map"]


# ----------------------------------------------------------------------------- diffusion maps

def sharded_diffusion_map(X, *, mesh, align_to=None, **kwargs):
    """:func:`jaxprobe.diffusion.diffusion_map` of a batch of clouds split over ``mesh``.

    Parameters
    ----------
    X : array of shape (..., n, d), the leading axes a batch of clouds.
    mesh : Mesh, "all" or N.
    align_to : as in ``diffusion_map``, shape (n,) or (..., n).
    **kwargs : every other ``diffusion_map`` setting (n_components, epsilon, solver, key, ...).

    Returns
    -------
    DiffusionMap with the same batch shape as ``X``; cloud i (flattened index) uses
    ``fold_in(key, i)`` as on one device, so results do not depend on the device count.

    Notes
    -----
    The flattened cloud axis is padded to a multiple of the device count with copies of
    cloud 0, placed with a ``NamedSharding`` over the mesh, and the batched solver is
    partitioned by XLA (each device solves its clouds; no collectives); padding is trimmed.
    """
    from jaxprobe.diffusion import check_clouds, diffusion_map

    mesh = auto_axes(as_mesh(mesh, "sharded_diffusion_map"))
    X = check_clouds(X, "X", "sharded_diffusion_map")
    batch, n = X.shape[:-2], X.shape[-2]
    B = int(np.prod(batch, dtype=np.int64))
    total = padded_size(B, mesh)
    Xf = pad_rows(np.asarray(X).reshape((B,) + X.shape[-2:]), total)
    if align_to is not None:
        a = np.asarray(align_to)
        a = np.broadcast_to(a, batch + (n,)).reshape(B, n) if a.ndim > 1 else np.broadcast_to(a, (B, n))
        align_to = put(np.ascontiguousarray(pad_rows(a, total)), mesh, leading_spec(mesh))
    res = diffusion_map(put(Xf, mesh, leading_spec(mesh)), align_to=align_to, **kwargs)
    return jax.tree_util.tree_map(lambda v: fetch(v, B).reshape(batch + v.shape[1:]), res)
