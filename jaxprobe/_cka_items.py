"""Per-item linear CKA of many items against one shared reference per item: the one
implementation behind ``jaxprobe.cka(clean, noisy)`` when the clean (U, n, d) broadcasts
against the noisy (..., U, n, d), and behind the sweep's per-utterance CKA
(``jaxprobe.studies.sweep.analysis.per_item_cka_all``).

The clean Grams are computed once (never one per noisy item), the noisy array is read in
place (no padding, no reshaped or sliced copy outside the jitted program), and the
noisy items are processed ``cells`` leading indices at a time by a sequential loop:
XLA on CPU runs one huge batch of small matrix products several times slower than
cache-sized steps (bench/bench_seprobe.py measures both).
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe_kernels.gram import constant_ratio as _ratio, pow2_scale as _pow2_scale
from jaxprobe_kernels.gram import center_gram_unbiased

CELL_BYTES = 1 << 20  # noisy activations per loop step: about 1 MiB (L2-sized on common CPUs)


def orient(a, orientation):
    return a if orientation == "channels" else jnp.swapaxes(a, -1, -2)


def cells_for(cell_shape, dtype, n_cells, cell_bytes=CELL_BYTES) -> int:
    """Leading indices per loop step: a power of two whose items fill about ``cell_bytes``."""
    per_cell = int(np.prod(cell_shape)) * np.dtype(dtype).itemsize
    cells = 1 << max(0, int(np.floor(np.log2(max(1, cell_bytes // max(1, per_cell))))))
    return max(1, min(cells, n_cells))


def unit_grams(A, debiased_flags, scaled):
    """Centred linear Grams of every (n, d) item of A (..., n, d), one per estimator, each
    scaled to unit Frobenius norm, and the items' constant statistics (...) (the rule of
    every CKA path, ``jaxprobe._cka._ratio``). One Gram product serves both estimators: the
    debiased (U-centred) Gram of the column-centred data equals that of the raw data, since
    U-centring removes the a_i + a_j terms a shift of the features adds."""
    if scaled:
        A = A * jax.vmap(_pow2_scale)(A.reshape((-1,) + A.shape[-2:])).reshape(A.shape[:-2] + (1, 1))
    m = jnp.mean(A, axis=-2, keepdims=True)
    Ac = A - m
    G = jnp.einsum("...cf,...df->...cd", Ac, Ac)
    g2 = jnp.sum(G * G, axis=(-2, -1))
    r = _ratio(g2, A.shape[-2] * jnp.sum(m * m, axis=(-2, -1)), scaled)
    out = []
    for deb in debiased_flags:
        g = G
        if deb:
            flat = G.reshape((-1,) + G.shape[-2:])
            g = jax.vmap(center_gram_unbiased)(flat).reshape(G.shape)
        out.append(g / jnp.sqrt(jnp.sum(g * g, axis=(-2, -1), keepdims=True)))
    return out, r


@partial(jax.jit, static_argnames=("debiased_flags", "orientation", "cells", "scaled"))
def item_cka(X, Y, *, debiased_flags, orientation="channels", cells, scaled=False):
    """X (..., U, C, F) items, Y (U, C, F) their references -> (E, ..., U) CKA (one row per
    estimator of ``debiased_flags``), the constant statistics of the X items (..., U) and
    of the Y items (U,).

    The P = prod(...) leading cells are read ``cells`` at a time by a loop of dynamic
    slices of X (X itself is the loop's input: no padded or sliced copy); when ``cells``
    does not divide P the last step re-reads the last ``cells`` cells and keeps the new
    ones. Every item is computed by the same loop body, so values do not depend on P or
    on where an item sits (the sweep's device pieces rely on this). Needs P >= cells."""
    bshape, (U, n, d) = X.shape[:-3], X.shape[-3:]
    P = math.prod(bshape)
    E = len(debiased_flags)
    if not 1 <= cells <= P:
        raise ValueError(f"item_cka needs 1 <= cells <= {P} leading cells; got cells={cells}.")
    Xf = X.reshape((P, U, n, d))
    gy, ry = unit_grams(orient(Y, orientation), debiased_flags, scaled)  # the references' Grams once

    def step(carry, start):  # (cells, U, C, F) -> (E, cells, U), (cells, U)
        x = jax.lax.dynamic_slice_in_dim(Xf, start, cells, axis=0)
        gx, rx = unit_grams(orient(x, orientation), debiased_flags, scaled)
        return carry, (jnp.stack([jnp.einsum("pucd,ucd->pu", g, h) for g, h in zip(gx, gy)]), rx)

    full, rem = divmod(P, cells)
    starts = np.arange(full) * cells
    if rem:
        starts = np.append(starts, P - cells)
    _, (o, r) = jax.lax.scan(step, None, jnp.asarray(starts, jnp.int32))  # (steps, E, cells, U), (steps, cells, U)
    out = jnp.moveaxis(o[:full], 1, 0).reshape(E, full * cells, U)
    rx = r[:full].reshape(full * cells, U)
    if rem:
        out = jnp.concatenate([out, o[full][:, cells - rem:]], axis=1)
        rx = jnp.concatenate([rx, r[full][cells - rem:]], axis=0)
    return out.reshape((E,) + bshape + (U,)), rx.reshape(bshape + (U,)), ry
