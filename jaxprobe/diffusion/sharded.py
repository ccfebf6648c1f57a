"""The diffusion map's own device-parallel path: a batch of clouds split over a mesh.

The device plumbing (mesh, placement, padding, gathering) is ``jaxprobe._mesh``; this module
only decides how the diffusion map uses it. ``jaxprobe.distributed`` re-exports
:func:`sharded_diffusion_map`.
"""
from __future__ import annotations

import jax
import numpy as np

from jaxprobe._mesh import as_mesh, auto_axes, fetch, leading_spec, pad_rows, padded_size, put
from jaxprobe.diffusion._checks import check_clouds
from jaxprobe.diffusion.map import diffusion_map


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
