"""Device-parallel analyses: bootstrap replicates, CKA batches and diffusion maps over a mesh.

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

import numbers
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["initialize", "make_mesh", "sharded_cka", "sharded_diffusion_map"]

AXIS = "data"


# ----------------------------------------------------------------------------- meshes

def make_mesh(devices="all", *, axis_name: str = AXIS) -> Mesh:
    """A one-axis device mesh for the data-parallel analyses.

    Parameters
    ----------
    devices : "all", int N >= 1, a sequence of devices, or a ``jax.sharding.Mesh``
        "all": every device of every process (``jax.devices()``); N: the first N of them.
        A Mesh is returned as given.
    axis_name : name of the mesh axis.

    Returns
    -------
    jax.sharding.Mesh with one axis of ``len(devices)`` devices (axis type Auto, so XLA
    partitions the batched calls that are not written with ``shard_map``).
    """
    if isinstance(devices, Mesh):
        return devices
    avail = jax.devices()
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"The 'devices' parameter of make_mesh must be 'all', an int >= 1, a list of devices or a Mesh. Got {devices!r} instead.")
        devs = avail
    elif isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(avail):
            raise ValueError(
                f"The 'devices' parameter of make_mesh must be an int in [1, {len(avail)}] (the devices JAX sees: "
                f"{len(avail)} {avail[0].platform}). Got {devices!r} instead. On CPU, set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax to get N host devices."
            )
        devs = avail[: int(devices)]
    else:
        try:
            devs = list(devices)
        except TypeError:
            raise TypeError(f"The 'devices' parameter of make_mesh must be 'all', an int, a list of devices or a Mesh. Got {type(devices).__name__}.") from None
        if not devs:
            raise ValueError("The 'devices' parameter of make_mesh is an empty list; give at least one device.")
    return Mesh(np.asarray(devs, dtype=object), (axis_name,), axis_types=(AxisType.Auto,))


def as_mesh(mesh, fn: str = "this function") -> Mesh | None:
    """``None`` -> None (single-device path); Mesh, "all", N or device list -> Mesh."""
    if mesh is None:
        return None
    try:
        return make_mesh(mesh)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"The 'mesh' parameter of {fn}: {exc}") from None


def initialize(coordinator_address: str, num_processes: int, process_id: int, **kwargs) -> None:
    """Join a multi-process (multi-host) JAX run: ``jax.distributed.initialize`` as is.

    Call it first thing in every process, with the same coordinator ``host:port`` and
    ``num_processes`` and a distinct ``process_id`` in [0, num_processes). Afterwards
    ``make_mesh("all")`` spans all processes' devices. On managed clusters (SLURM, Cloud
    TPU) ``jax.distributed.initialize()`` without arguments detects these itself.
    """
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **kwargs)


# ----------------------------------------------------------------------------- plumbing

def _spec(mesh: Mesh) -> P:
    """Leading axis split over every axis of the mesh."""
    return P(tuple(mesh.axis_names))


def _put(x, mesh: Mesh, spec: P):
    """A global array with ``spec`` from a host value every process holds in full."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda idx: x[idx])


def _fetch(a, n: int):
    """First n rows of a sharded result, as an array every process can read."""
    if not a.is_fully_addressable:  # multi-process: gather every process's shards
        from jax.experimental import multihost_utils

        return jnp.asarray(multihost_utils.process_allgather(a, tiled=True)[:n])
    return a[:n]


def _padded(n: int, mesh: Mesh) -> int:
    return -(-n // mesh.size) * mesh.size


@lru_cache(maxsize=64)
def _compiled(body, mesh: Mesh, n_rep: int, statics: tuple):
    """jit(shard_map(body)): first argument sharded on the leading axis, ``n_rep`` more
    replicated; cached so equal calls do not retrace."""
    spec = _spec(mesh)
    f = partial(body, **dict(statics))
    return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(spec,) + (P(),) * n_rep, out_specs=spec,
                                 check_vma=False))


def _key_parts(key):
    """(raw key data, impl name or None): PRNG keys cross shard_map as plain uint32."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), str(jax.random.key_impl(key))
    return jnp.asarray(key), None


def _rewrap(kd, impl):
    return jax.random.wrap_key_data(kd, impl=impl) if impl is not None else kd


# ----------------------------------------------------------------------------- replicates

def _design_parts(design):
    """Static kind and replicated arrays of a bootstrap._Design."""
    if design.labels is None:
        return ("iid", design.n, 0), (np.zeros(1, np.int32), np.zeros((1, 1), np.int32), np.zeros(1, np.int32))
    kind = "hier" if design.hierarchical else "cluster"
    return (kind, design.n, design.n_groups), (design.labels, design.members, design.sizes)


def _local_counts(ids, kd, labels, members, sizes, *, impl, kind, n, n_groups):
    from jaxprobe.bootstrap import _cluster_counts, _hier_counts, _iid_counts

    key = _rewrap(kd, impl)
    if kind == "iid":
        return _iid_counts(key, ids, n)
    if kind == "cluster":
        return _cluster_counts(key, ids, labels, n_groups)
    return _hier_counts(key, ids, members, sizes, n)


def _cka_body(ids, kd, labels, members, sizes, K, L, *, impl, kind, n, n_groups, debiased, chunk):
    from jaxprobe.bootstrap import _boot_cka_from_grams

    C = _local_counts(ids, kd, labels, members, sizes, impl=impl, kind=kind, n=n, n_groups=n_groups)
    return _boot_cka_from_grams(K, L, C, debiased=debiased, chunk=chunk)


def _run_replicates(body, mesh, design, key, n_boot, arrays, **statics):
    mesh = as_mesh(mesh)
    (kind, n, n_groups), parts = _design_parts(design)
    kd, impl = _key_parts(key)
    total = _padded(n_boot, mesh)
    ids = _put(np.arange(total, dtype=np.int32), mesh, _spec(mesh))
    rep = [_put(a, mesh, P()) for a in (kd, *parts, *arrays)]
    st = tuple(sorted(dict(statics, impl=impl, kind=kind, n=n, n_groups=n_groups).items()))
    out = _compiled(body, mesh, len(rep), st)(ids, *rep)
    return jax.tree_util.tree_map(lambda a: _fetch(a, n_boot), out)


def sharded_bootstrap_cka_terms(K, L, design, key, n_boot, *, mesh, debiased, chunk):
    """HSIC terms (kl, kk, ll), each (n_boot, ...), with replicates split over ``mesh``.

    K, L : (..., n, n) Grams, replicated; ``design`` a ``bootstrap._Design``. Every device
    draws its own replicates' count rows from ``fold_in(key, b)``.
    """
    per_device = _padded(n_boot, as_mesh(mesh)) // as_mesh(mesh).size
    return _run_replicates(_cka_body, mesh, design, key, n_boot, (K, L),
                           debiased=bool(debiased), chunk=int(min(chunk, per_device)))


def _counts_body(ids, kd, labels, members, sizes, *, impl, kind, n, n_groups):
    return _local_counts(ids, kd, labels, members, sizes, impl=impl, kind=kind, n=n, n_groups=n_groups)


def sharded_counts(design, key, n_boot, *, mesh):
    """The (n_boot, n) int32 count matrix of ``design``, its rows drawn over ``mesh``
    (row b from ``fold_in(key, b)``: equal to ``design.counts(key, n_boot)``)."""
    return np.asarray(_run_replicates(_counts_body, mesh, design, key, n_boot, ()))


def sharded_weighted_means(values, design, key, n_boot, *, mesh):
    """Count-weighted means (n_boot, k) of ``values`` (n, k), replicates split over ``mesh``.

    The count rows are drawn on the mesh's devices; the weighted means (one GEMM) are then
    taken by the same single-device call as without a mesh, so the result is bit-identical
    to ``mesh=None`` on any number of devices (a GEMM split by rows may round differently).
    """
    from kernels import resample as _resample

    C = jnp.asarray(sharded_counts(design, key, n_boot, mesh=mesh))
    return _resample.bootstrap_weighted_means(jnp.asarray(values), C)


# ----------------------------------------------------------------------------- CKA batches

def _cka_block(X, Y, sx, sy, *, kernel, debiased, features, scaled):
    from jaxprobe._cka import _linear_cka_batched, _rbf_cka_batched

    if kernel == "linear":
        return _linear_cka_batched(X, Y, debiased=debiased, features=features, scaled=scaled)
    return _rbf_cka_batched(X, Y, sx, sy, debiased=debiased)


@lru_cache(maxsize=64)
def _compiled_cka(mesh: Mesh, statics: tuple):
    """X, Y, sx, sy: split "x" (X side sharded, Y side replicated), "y", or "both"."""
    spec = _spec(mesh)
    split = dict(statics)["split"]
    x_spec = spec if split in ("x", "both") else P()
    y_spec = spec if split in ("y", "both") else P()
    f = partial(_cka_block, **{k: v for k, v in statics if k != "split"})
    return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(x_spec, y_spec, x_spec, y_spec), out_specs=(spec, spec, spec),
                                 check_vma=False))


def _pad_rows(a, total):
    a = np.asarray(a)
    if total > a.shape[0]:  # copies of item 0 (finite, valid), trimmed afterwards
        a = np.concatenate([a, np.repeat(a[:1], total - a.shape[0], axis=0)])
    return a


def sharded_cka(X, Y, sx, sy, *, mesh, kernel, debiased, features, scaled=False):
    """CKA of validated, dtype-matched X (..., n, d1), Y (..., n, d2) split over ``mesh``;
    sx, sy are the RBF bandwidths (shape X.shape[:-2], Y.shape[:-2]; ignored for the
    linear kernel). Returns (cka, rx, ry), each of the broadcast batch shape (...): rx, ry
    are the constant-representation statistics of each pair's X and Y item.

    When one side lacks leading batch axes (e.g. noisy (K, S, U, C, F) against clean
    (U, C, F)), those outer axes are flattened and split while the other side is
    replicated, so each device still builds every clean Gram once; otherwise the whole
    broadcast batch is flattened and split pair by pair. Called by
    ``jaxprobe.cka(..., mesh=...)``, which validates the inputs first.
    """
    mesh = as_mesh(mesh, "cka")
    batch = tuple(jnp.broadcast_shapes(X.shape[:-2], Y.shape[:-2]))
    sx = jnp.broadcast_to(jnp.asarray(sx, X.dtype), X.shape[:-2])
    sy = jnp.broadcast_to(jnp.asarray(sy, X.dtype), Y.shape[:-2])
    kx, ky, nb = X.ndim - 2, Y.ndim - 2, len(batch)
    if kx == nb and ky < nb and X.shape[nb - ky:-2] == Y.shape[:-2]:
        split, outer = "x", batch[: nb - ky]
    elif ky == nb and kx < nb and Y.shape[nb - kx:-2] == X.shape[:-2]:
        split, outer = "y", batch[: nb - kx]
    else:
        split, outer = "both", batch
    B = int(np.prod(outer, dtype=np.int64))
    total = _padded(B, mesh)
    spec = _spec(mesh)

    def lead(a, k):  # flatten the outer axes of a sharded operand, pad them
        return _put(_pad_rows(np.asarray(a).reshape((B,) + a.shape[k:]), total), mesh, spec)

    if split == "x":
        args = (lead(X, len(outer)), _put(Y, mesh, P()), lead(sx, len(outer)), _put(sy, mesh, P()))
    elif split == "y":
        args = (_put(X, mesh, P()), lead(Y, len(outer)), _put(sx, mesh, P()), lead(sy, len(outer)))
    else:
        args = (lead(jnp.broadcast_to(X, batch + X.shape[-2:]), nb), lead(jnp.broadcast_to(Y, batch + Y.shape[-2:]), nb),
                lead(jnp.broadcast_to(sx, batch), nb), lead(jnp.broadcast_to(sy, batch), nb))
    st = tuple(sorted(dict(kernel=kernel, debiased=bool(debiased), features=bool(features), split=split,
                        scaled=bool(scaled)).items()))
    out = _compiled_cka(mesh, st)(*args)
    return tuple(_fetch(o, B).reshape(batch) for o in out)


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
    from jaxprobe.diffusion import _check_clouds, diffusion_map

    mesh = as_mesh(mesh, "sharded_diffusion_map")
    if any(t != AxisType.Auto for t in mesh.axis_types):
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    X = _check_clouds(X, "X", "sharded_diffusion_map")
    batch, n = X.shape[:-2], X.shape[-2]
    B = int(np.prod(batch, dtype=np.int64))
    total = _padded(B, mesh)
    Xf = np.asarray(X).reshape((B,) + X.shape[-2:])
    if total > B:
        Xf = np.concatenate([Xf, np.repeat(Xf[:1], total - B, axis=0)])
    if align_to is not None:
        a = np.asarray(align_to)
        a = np.broadcast_to(a, batch + (n,)).reshape(B, n) if a.ndim > 1 else np.broadcast_to(a, (B, n))
        if total > B:
            a = np.concatenate([a, np.repeat(a[:1], total - B, axis=0)])
        align_to = _put(np.ascontiguousarray(a), mesh, _spec(mesh))
    res = diffusion_map(_put(Xf, mesh, _spec(mesh)), align_to=align_to, **kwargs)
    return jax.tree_util.tree_map(lambda v: _fetch(v, B).reshape(batch + v.shape[1:]), res)
