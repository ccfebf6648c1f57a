"""Distances between diffusion coordinates and the out-of-sample (Nystrom) extension of a map.

Conventions as in :mod:`jaxprobe.diffusion.map`: with all ``n - 1`` components at time t,
Euclidean distances between ``coordinates="markov"`` coordinates are diffusion distances.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_finite
from jaxprobe.diffusion.map import DiffusionMap
from jaxprobe_kernels.affinity import cross_affinity
from jaxprobe_kernels.gram import sq_distances


@jax.jit
def _pairwise_distances(coords):
    return jnp.sqrt(sq_distances(coords))


def diffusion_distances(coords):
    """Pairwise diffusion distances: Euclidean distances between diffusion coordinates.

    With all ``n - 1`` components of a map at time t, these equal
    ``||p_t(x_i, .) - p_t(x_j, .)||_{1/pi}`` (Coifman & Lafon 2006).

    Parameters
    ----------
    coords : array of shape (..., n, k), e.g. ``diffusion_map(X).coords``.

    Returns
    -------
    D : array of shape (..., n, n), symmetric, zero diagonal.
    """
    coords = as_float_array(coords, "coords", fn="diffusion_distances", min_ndim=2)
    check_finite(coords, "coords", fn="diffusion_distances")
    batch, (n, k) = coords.shape[:-2], coords.shape[-2:]
    flat = coords.reshape((-1, n, k))
    return jax.vmap(_pairwise_distances)(flat).reshape(batch + (n, n))


@jax.jit
def _nystrom_one(Y, X, eps, q, alpha, lam, psi, t, mask):
    Ky = cross_affinity(Y, X, eps)
    qa_y = jnp.sum(Ky, axis=1) ** (-alpha)
    Ka = Ky * qa_y[:, None] * (q ** (-alpha))[None, :]
    Py = Ka / jnp.sum(Ka, axis=1, keepdims=True)
    lam = jnp.maximum(lam, 0.0)
    # psi(y) = (P_y psi) / lambda, coords = lambda^t psi(y); lambda = 0 columns give 0
    safe = jnp.where(lam > 0, lam, 1.0)
    w = jnp.where((lam > 0) & mask, lam ** t / safe, 0.0)
    return (Py @ psi) * w[None, :]


def diffusion_nystrom(dmap: DiffusionMap, X, Y):
    """Out-of-sample (Nystrom) extension of new points into an existing map.

    For a new point y, ``psi_k(y) = (1 / lambda_k) sum_j p(y, x_j) psi_k(x_j)`` with
    ``p(y, .)`` the row of the Markov matrix built with the map's epsilon, alpha and
    densities; extending the map's own points reproduces ``dmap.coords``.

    Parameters
    ----------
    dmap : DiffusionMap of clouds ``X``.
    X : array of shape (..., n, d), the clouds the map was built from.
    Y : array of shape (..., m, d), new points (same leading axes as X).

    Returns
    -------
    coords : array of shape (..., m, k). Memory is O(m n) per cloud.
    """
    fn = "diffusion_nystrom"
    if getattr(dmap, "coordinates", "markov") != "markov":
        raise ValueError(
            f"The 'dmap' parameter of {fn} must be a map with coordinates='markov' (the extension formula is "
            f"for right eigenvectors of P); got coordinates={dmap.coordinates!r}. Recompute the map with "
            "coordinates='markov'."
        )
    X = as_float_array(X, "X", fn=fn, min_ndim=2)
    Y = as_float_array(Y, "Y", fn=fn, min_ndim=2)
    check_finite(Y, "Y", fn=fn)
    batch = dmap.coords.shape[:-2]
    n, k = dmap.coords.shape[-2:]
    if X.shape[:-2] != batch or X.shape[-2] != n:
        raise ValueError(
            f"The 'X' parameter of {fn} must be the clouds the map was built from, shape {batch + (n,)} + (d,); "
            f"got {tuple(X.shape)}."
        )
    if Y.shape[:-2] != batch or Y.shape[-1] != X.shape[-1]:
        raise ValueError(
            f"The 'Y' parameter of {fn} must have shape {batch} + (m, {X.shape[-1]}) (same batch and features "
            f"as X); got {tuple(Y.shape)}."
        )
    B = int(np.prod(batch, dtype=np.int64))
    dtype = jnp.result_type(X.dtype, Y.dtype)
    flat = lambda a, tail: jnp.asarray(a).reshape((B,) + tail)  # noqa: E731
    out = jax.vmap(_nystrom_one, in_axes=(0, 0, 0, 0, None, 0, 0, None, 0))(
        flat(Y, Y.shape[-2:]).astype(dtype), flat(X, X.shape[-2:]).astype(dtype),
        flat(dmap.epsilon, ()), flat(dmap.density, (n,)), jnp.asarray(dmap.alpha, dtype),
        flat(dmap.eigenvalues, (k,)), flat(dmap.eigenvectors, (n, k)), jnp.asarray(dmap.t, dtype),
        flat(dmap.mask, (k,)),
    )
    return out.reshape(batch + out.shape[1:])
