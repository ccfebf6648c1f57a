"""Per-item linear CKA of many items against one shared reference per item: the one
implementation behind ``jaxprobe.cka(clean, noisy)`` when the clean (U, n, d) broadcasts
against the noisy (..., U, n, d), and behind the sweep's per-utterance CKA
(``jaxprobe.studies.sweep.analysis.per_item_cka_all``).

The clean Grams are computed once (never one per noisy item), the noisy array is read in
place (no padding, no reshaped or sliced copy outside the jitted program), and the
noisy items are processed ``cells`` leading indices at a time by a sequential loop:
under load XLA on CPU runs one huge batch of small matrix products several times slower
than cache-sized steps; with a second core free the one batch is ~1.3x faster, at the
price of a centred copy of the whole input (bench/bench_seprobe.py measures both).

Each noisy item's Gram is the product of the item as read (no centred copy), centred
afterwards as H G H; an item whose constant statistic says its row mean dominates
(``RAW_MIN_RATIO``) is recomputed from its column-centred data, so every value keeps the
rounding of the centred formulation (bench/bench_seprobe.py times both).
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
# An item's Gram centred after the product (H A A^T H) loses about log10(1 / r) digits to
# cancellation, r its constant statistic ||Ac Ac^T|| / (||Ac Ac^T|| + n ||mean||^2): in float32 it
# matches the centred data's rounding (~1e-6 in CKA) down to r ~ 0.02 (tests/jaxprobe/test_cka_items.py).
# Items with r below this bound (an offset shared by the rows 3x their spread or more, constant or
# non-finite items) are recomputed from their centred data; real activations have r ~ 0.75-1.
RAW_MIN_RATIO = 0.125


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
    return _unit(G, debiased_flags), r


def unit_grams_raw(A, debiased_flags, scaled):
    """As :func:`unit_grams`, from the Gram of A as it is (one batched product reading A in
    place, no centred copy), centred afterwards: H G H = G - row means - column means +
    mean, and n ||mean_rows(A)||^2 = sum(G) / n. Exact in exact arithmetic; in floating point
    accurate only where the constant statistic is not small (``RAW_MIN_RATIO``)."""
    if scaled:
        A = A * jax.vmap(_pow2_scale)(A.reshape((-1,) + A.shape[-2:])).reshape(A.shape[:-2] + (1, 1))
    n = A.shape[-2]
    G = jnp.einsum("...cf,...df->...cd", A, A)
    mean_ss = jnp.sum(G, axis=(-2, -1)) / n
    G = G - jnp.mean(G, axis=-1, keepdims=True) - jnp.mean(G, axis=-2, keepdims=True) \
        + jnp.mean(G, axis=(-2, -1), keepdims=True)
    g2 = jnp.sum(G * G, axis=(-2, -1))
    return _unit(G, debiased_flags), _ratio(g2, mean_ss, scaled)


def _unit(G, debiased_flags):
    out = []
    for deb in debiased_flags:
        g = G
        if deb:
            flat = G.reshape((-1,) + G.shape[-2:])
            g = jax.vmap(center_gram_unbiased)(flat).reshape(G.shape)
        out.append(g / jnp.sqrt(jnp.sum(g * g, axis=(-2, -1), keepdims=True)))
    return out


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

    def cka_of(grams):
        gx, rx = grams
        return jnp.stack([jnp.einsum("pucd,ucd->pu", g, h) for g, h in zip(gx, gy)]), rx

    def step(carry, start):  # (cells, U, C, F) -> (E, cells, U), (cells, U)
        x = orient(jax.lax.dynamic_slice_in_dim(Xf, start, cells, axis=0), orientation)
        o, rx = cka_of(unit_grams_raw(x, debiased_flags, scaled))
        ok = rx >= RAW_MIN_RATIO  # False for a NaN or a sentinel -1 too

        def centred(_):  # items with ok False take the centred-data values; an item's value never depends on its step
            oc, rc = cka_of(unit_grams(x, debiased_flags, scaled))
            return jnp.where(ok, o, oc), jnp.where(ok, rx, rc)

        return carry, jax.lax.cond(jnp.all(ok), lambda _: (o, rx), centred, None)

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
