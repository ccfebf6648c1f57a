"""The SE paper's two diffusion-map analyses (Sec. 3.3 and 4.3), batched.

* Intra-layer (paper Fig. 4, Table 1): one diffusion map per layer over the cloud of
  centroids across the SNR grid; DC1 against SNR (least-squares R^2, Spearman rho);
  pairwise diffusion distances between SNR conditions; distance of every SNR to the
  cleanest one.
* Inter-layer (paper Fig. 5): one diffusion map per SNR over the points of all layers;
  pairwise diffusion distances between layer (or block) centroids. Layers whose
  feature dimension differs from the others (MUSE's latent block: 1536 vs 2048) cannot
  share a cloud; they are excluded with a warning and listed in the result.

Every map of an analysis is computed in one batched, jitted ``diffusion_map`` call
(layers, or SNRs, on the leading axis) and the fits are batched ``jaxprobe.stats``
calls. DC1 is signed with ``align_to`` so that it grows with SNR (intra-layer) or with
layer order (inter-layer), the same way for every layer, SNR and run.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_finite
from jaxprobe.diffusion.map import DiffusionMap, diffusion_map
from jaxprobe.stats import linregress, spearman
from jaxprobe_kernels.gram import sq_distances


class IntraLayerResult(NamedTuple):
    """Per-layer diffusion geometry across SNR; leading axes ``...`` as in the input.

    Attributes
    ----------
    maps : DiffusionMap, coords of shape (..., n, k)
    dc1 : array of shape (..., n), the first diffusion coordinate (grows with SNR).
    snr_levels : array of shape (S,), the distinct SNR values, increasing.
    slope, intercept, r2 : arrays of shape (...), least squares of DC1 on SNR over the n points.
    spearman : array of shape (...), Spearman rho of DC1 and SNR over the n points.
    level_coords : array of shape (..., S, k), mean diffusion coordinates per SNR level.
    level_distances : array of shape (..., S, S), diffusion distances between levels (Fig. 4).
    distance_to_clean : array of shape (..., S), distance of each level to the cleanest
        (highest) SNR level.
    """

    maps: DiffusionMap
    dc1: jax.Array
    snr_levels: jax.Array
    slope: jax.Array
    intercept: jax.Array
    r2: jax.Array
    spearman: jax.Array
    level_coords: jax.Array
    level_distances: jax.Array
    distance_to_clean: jax.Array


class InterLayerResult(NamedTuple):
    """Per-SNR diffusion geometry across layers.

    Attributes
    ----------
    maps : DiffusionMap, coords of shape (S, L * m, k): one map per SNR.
    layers : tuple of the L layer names used, in cloud order.
    groups : tuple of the G group names (blocks, or the layers themselves), in order.
    group_coords : array of shape (S, G, k), mean diffusion coordinates per group.
    group_distances : array of shape (S, G, G), diffusion distances between groups (Fig. 5).
    excluded : tuple of the layer names left out (different feature dimension).
    """

    maps: DiffusionMap
    layers: tuple
    groups: tuple
    group_coords: jax.Array
    group_distances: jax.Array
    excluded: tuple


@jax.jit
def _group_geometry(coords, membership):
    """coords (B, n, k), membership (G, n) rows summing to 1 -> (B, G, k), (B, G, G)."""
    centroids = jnp.einsum("gn,bnk->bgk", membership, coords)
    return centroids, jnp.sqrt(jax.vmap(sq_distances)(centroids))


@jax.jit
def _intra_outputs(coords, level_distances, membership):
    """DC1 (..., n), level coordinates (..., S, k) and distances to the cleanest level (..., S) of
    maps (..., n, k): one program instead of a handful of single-op ones."""
    return (coords[..., 0], jnp.einsum("gn,...nk->...gk", membership, coords), level_distances[..., -1])


def group_membership(labels, n_groups, dtype):
    onehot = (np.asarray(labels)[None, :] == np.arange(n_groups)[:, None]).astype(np.float64)
    return jnp.asarray(onehot / onehot.sum(axis=1, keepdims=True), dtype)


def intra_layer(X, snr, *, n_components=None, epsilon="median", alpha=0.0, t=1.0, energy=None,
                key=None, solver="auto", coordinates="markov") -> IntraLayerResult:
    """Intra-layer analysis: a diffusion map per layer over the SNR grid.

    Parameters
    ----------
    X : array of shape (..., n, d)
        One cloud per leading index, e.g. (layers, n, d) with n = 41 SNR centroids, or
        n = noises x SNRs (738) centroids, or (layers, noises, 41, d) for one map per
        layer and noise type (average the fits over the noise axis afterwards).
    snr : array of shape (n,), the SNR of each point; at least 3 distinct values.
    n_components, epsilon, alpha, t, energy, key, solver, coordinates : as in ``diffusion_map``
        (``align_to`` is the SNR, so DC1 grows with SNR).

    Returns
    -------
    IntraLayerResult. The fits use all n points of a cloud; ``level_coords`` average
    the points of each SNR level before distances are taken. ``level_distances`` are the
    map's ``group_distances`` over the levels: with a top-k map (``n_components``) at t = 1/2
    whose k components hold less than ``energy`` of the spectrum they come from the
    all-component closed form (``maps.group_closed``), so DC1 needs only a top-k solve and the
    distances no eigendecomposition (error against the energy-truncated ones: ``diffusion.map``).
    """
    fn = "intra_layer"
    X = as_float_array(X, "X", fn=fn, min_ndim=2)
    snr = np.asarray(snr, dtype=np.float64)
    if snr.shape != (X.shape[-2],):
        raise ValueError(
            f"The 'snr' parameter of {fn} must have shape (n,) = ({X.shape[-2]},), one SNR per point of each "
            f"cloud; got {snr.shape}."
        )
    check_finite(snr, "snr", fn=fn)
    levels, labels = np.unique(snr, return_inverse=True)
    if len(levels) < 3:
        raise ValueError(
            f"The 'snr' parameter of {fn} must hold at least 3 distinct values for a line fit; got {len(levels)}."
        )
    member = group_membership(labels, len(levels), X.dtype)
    maps = diffusion_map(X, n_components=n_components, epsilon=epsilon, alpha=alpha, t=t, energy=energy,
                         key=key, solver=solver, align_to=snr, coordinates=coordinates, group_means=member)
    dc1, lc, to_clean = _intra_outputs(maps.coords, maps.group_distances, member)
    snr_j = jnp.asarray(snr.astype(dc1.dtype))
    fit = linregress(snr_j, dc1)
    rho = spearman(snr_j, dc1)
    return IntraLayerResult(
        maps=maps, dc1=dc1, snr_levels=jnp.asarray(levels.astype(dc1.dtype)), slope=fit.slope,
        intercept=fit.intercept, r2=fit.r2, spearman=rho, level_coords=lc, level_distances=maps.group_distances,
        distance_to_clean=to_clean,
    )


def intra_layer_by_name(layers: Mapping, snr, **kwargs) -> dict:
    """``intra_layer`` for a mapping of layer name -> cloud (n, d) of mixed dimensions.

    Layers of equal shape are stacked and share one batched call (MUSE: one call for
    the 2048-wide layers, one for the 1536-wide latent block).

    Returns
    -------
    dict name -> IntraLayerResult with no leading axes.
    """
    fn = "intra_layer_by_name"
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(f"The 'layers' parameter of {fn} must be a non-empty mapping name -> array (n, d).")
    arrays = {name: as_float_array(a, f"layers[{name!r}]", fn=fn, min_ndim=2) for name, a in layers.items()}
    by_shape: dict = {}
    for name, a in arrays.items():
        if a.ndim != 2:
            raise ValueError(
                f"The 'layers[{name!r}]' parameter of {fn} must have shape (n, d); got {tuple(a.shape)}."
            )
        by_shape.setdefault(a.shape, []).append(name)
    out = {}
    for names in by_shape.values():
        res = intra_layer(jnp.stack([arrays[nm] for nm in names]), snr, **kwargs)
        for i, nm in enumerate(names):
            one = jax.tree_util.tree_map(lambda x, i=i: x[i], res._replace(snr_levels=None))
            out[nm] = one._replace(snr_levels=res.snr_levels)
    return {nm: out[nm] for nm in arrays}


def inter_layer(layers: Mapping, *, blocks: Mapping | None = None, n_components=None, epsilon="median",
                alpha=0.0, t=1.0, energy=None, key=None, solver="auto", coordinates="markov") -> InterLayerResult:
    """Inter-layer analysis: a diffusion map per SNR over the points of all layers.

    Parameters
    ----------
    layers : mapping layer name -> array of shape (S, m, d)
        For each layer, m points (e.g. one centroid per noise type, or m = 1) at each
        of S SNRs. All layers need the same S and m; a layer whose d differs from the
        most common d is excluded with a UserWarning (ties: the first layer's d wins).
    blocks : mapping layer name -> block name, optional
        Group the layers into blocks (from the layer map, never parsed from names);
        distances are between block centroids. None: every layer is its own group.
    n_components, epsilon, alpha, t, energy, key, solver, coordinates : as in ``diffusion_map``
        (``align_to`` is the layer position, so DC1 grows with depth).

    Returns
    -------
    InterLayerResult; the S maps are one batched call over clouds of L * m points.
    """
    fn = "inter_layer"
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(f"The 'layers' parameter of {fn} must be a non-empty mapping name -> array (S, m, d).")
    arrays = {}
    for name, a in layers.items():
        a = as_float_array(a, f"layers[{name!r}]", fn=fn, min_ndim=3)
        if a.ndim != 3:
            raise ValueError(
                f"The 'layers[{name!r}]' parameter of {fn} must have shape (S, m, d); got {tuple(a.shape)}."
            )
        arrays[name] = a
    dims = Counter(a.shape[-1] for a in arrays.values())
    top = max(dims.values())
    d = next(a.shape[-1] for a in arrays.values() if dims[a.shape[-1]] == top)
    excluded = tuple(nm for nm, a in arrays.items() if a.shape[-1] != d)
    if excluded:
        warnings.warn(
            f"{fn}: excluded {len(excluded)} layer(s) whose feature dimension differs from {d}: "
            + ", ".join(f"{nm} (d={arrays[nm].shape[-1]})" for nm in excluded)
            + ". Points of different dimension cannot share a diffusion map (the SE paper drops MUSE's latent "
            "block here too); analyse them with intra_layer.",
            stacklevel=2,
        )
    names = tuple(nm for nm in arrays if nm not in excluded)
    shapes = {arrays[nm].shape[:2] for nm in names}
    if len(shapes) != 1:
        raise ValueError(
            f"The 'layers' parameter of {fn} must give every layer the same (S, m) leading shape; got "
            + ", ".join(f"{nm}: {tuple(arrays[nm].shape)}" for nm in names) + "."
        )
    S, m = shapes.pop()
    if blocks is None:
        group_of = {nm: nm for nm in names}
    else:
        missing = [nm for nm in names if nm not in blocks]
        if missing:
            raise ValueError(
                f"The 'blocks' parameter of {fn} must name a block for every layer; missing: {missing}. "
                "Take blocks from the layer map."
            )
        group_of = {nm: blocks[nm] for nm in names}
    groups = tuple(dict.fromkeys(group_of[nm] for nm in names))
    cloud = jnp.concatenate([arrays[nm] for nm in names], axis=1)  # (S, L * m, d)
    depth = np.repeat(np.arange(len(names), dtype=np.float64), m)
    maps = diffusion_map(cloud, n_components=n_components, epsilon=epsilon, alpha=alpha, t=t, energy=energy,
                         key=key, solver=solver, align_to=depth, coordinates=coordinates)
    labels = np.repeat([groups.index(group_of[nm]) for nm in names], m)
    gc, gd = _group_geometry(maps.coords, group_membership(labels, len(groups), maps.coords.dtype))
    return InterLayerResult(maps=maps, layers=names, groups=groups, group_coords=gc, group_distances=gd,
                            excluded=excluded)
