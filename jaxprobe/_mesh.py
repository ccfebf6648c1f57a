"""Device plumbing shared by the analyses' sharded paths; imports no analysis.

Building a mesh (:func:`make_mesh`, :func:`as_mesh` for the ``mesh=`` / ``devices=`` options),
joining a multi-host run (:func:`initialize`), and the small pieces every sharded path uses:
placing a host value on the mesh (:func:`put`), the leading-axis spec, padding an axis to a
multiple of the device count and trimming/gathering it again (:func:`padded_size`,
:func:`pad_rows`, :func:`fetch`), a cached ``jit(shard_map(...))`` and PRNG keys crossing a
shard_map. Each analysis owns its sharded path (``jaxprobe._cka.sharded_cka``,
``jaxprobe.bootstrap.sharded_*``, ``jaxprobe.diffusion.sharded_diffusion_map``) and imports
this module; this module imports none of them, so there is no import circle.
"""
from __future__ import annotations

import numbers
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["AXIS", "as_mesh", "auto_axes", "compiled_shard_map", "fetch", "initialize", "key_parts", "leading_spec",
           "make_mesh", "mesh_from_config", "pad_rows", "padded_size", "put", "rewrap_key"]

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


def mesh_from_config(devices) -> Mesh | None:
    """The mesh a study's ``compute.devices`` setting asks for: None for "1" (the single-device
    path), else ``make_mesh("all")`` or ``make_mesh(N)``. The value is checked against the devices
    JAX sees before any work (``check_devices`` of the study's configuration)."""
    devices = str(devices)
    if devices == "1":
        return None
    return make_mesh("all" if devices == "all" else int(devices))


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

def leading_spec(mesh: Mesh) -> P:
    """Leading axis split over every axis of the mesh."""
    return P(tuple(mesh.axis_names))


def put(x, mesh: Mesh, spec: P):
    """A global array with ``spec`` from a host value every process holds in full."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda idx: x[idx])


def fetch(a, n: int):
    """First n rows of a sharded result, as an array every process can read."""
    if not a.is_fully_addressable:  # multi-process: gather every process's shards
        from jax.experimental import multihost_utils

        return jnp.asarray(multihost_utils.process_allgather(a, tiled=True)[:n])
    return a[:n]


def padded_size(n: int, mesh: Mesh) -> int:
    """n rounded up to a multiple of the mesh's device count."""
    return -(-n // mesh.size) * mesh.size


@lru_cache(maxsize=64)
def compiled_shard_map(body, mesh: Mesh, n_rep: int, statics: tuple):
    """jit(shard_map(body)): first argument sharded on the leading axis, ``n_rep`` more
    replicated; cached so equal calls do not retrace."""
    spec = leading_spec(mesh)
    f = partial(body, **dict(statics))
    return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(spec,) + (P(),) * n_rep, out_specs=spec,
                                 check_vma=False))


def key_parts(key):
    """(raw key data, impl name or None): PRNG keys cross shard_map as plain uint32."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), str(jax.random.key_impl(key))
    return jnp.asarray(key), None


def rewrap_key(kd, impl):
    """Inverse of :func:`key_parts` inside a shard_map body."""
    return jax.random.wrap_key_data(kd, impl=impl) if impl is not None else kd


def pad_rows(a, total: int):
    """Host array ``a`` with its leading axis padded to ``total`` by copies of row 0 (finite and
    valid whatever row 0 is; the padded results are trimmed by :func:`fetch`)."""
    a = np.asarray(a)
    if total > a.shape[0]:
        a = np.concatenate([a, np.repeat(a[:1], total - a.shape[0], axis=0)])
    return a


def auto_axes(mesh: Mesh) -> Mesh:
    """The same devices with every axis of type Auto (XLA partitions jitted batched calls)."""
    if any(t != AxisType.Auto for t in mesh.axis_types):
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    return mesh
