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

On a CPU the noisy items go instead to the native kernel (``jaxprobe.native``, an XLA FFI
call inside the same jitted program: ``item_cka(..., native=True)``), which centres each
item's data in L1 and needs no raw-Gram guard; the callers pick it with
``jaxprobe.native.usable`` (float32, one CPU device, library built). Everywhere else, and for
the scaled recomputation of out-of-range Grams, this module's XLA program runs.
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


# The sweep's layers share compiled programs: items of layers whose (samples, features) shapes
# differ are zero-padded to a common bucket when the padding costs at most this much work
# (multiply-add equivalents, ``item_cost``: ~30-45 ms of one core here). A cold XLA cache spends
# ~1-1.5 s of CPU compiling each distinct per-item program; a warm one still ~0.1 s tracing,
# lowering and loading it, more than the padding a merge may add.
MERGE_BUDGET = 1 << 30


def item_cost(n, d, items):
    """Work of ``items`` per-item CKAs on (n, d) items, in multiply-add equivalents: the Gram
    product (n^2 d) plus the ~256 elementwise operations per Gram entry of the centring,
    both estimators and the normalisation (fitted to bench timings: n = 16..257, d = 2..129)."""
    return items * n * n * (d + 256)


def item_buckets(shapes, items, budget=MERGE_BUDGET):
    """The padded (n, d) item shape of each distinct (n, d) in ``shapes``: the shapes sorted by
    n form groups of consecutive sizes, each padded to (max n, max d) of its group, a shape
    joining the group before it while the group's extra work (``item_cost`` padded minus
    unpadded, ``items`` items per layer, every layer counted) stays within ``budget``.

    Returns a dict {(n, d): (N, D)}. Padding features with zeros leaves a linear Gram
    unchanged; padded samples are masked (``item_cka``'s ``n_valid``)."""
    count = {}
    for s in shapes:
        count[tuple(s)] = count.get(tuple(s), 0) + 1
    order = sorted(count)
    groups = []
    for s in order:
        if groups:
            cand = groups[-1] + [s]
            N, D = max(n for n, _ in cand), max(d for _, d in cand)
            extra = sum(count[c] * (item_cost(N, D, items) - item_cost(c[0], c[1], items)) for c in cand)
            if extra <= budget:
                groups[-1] = cand
                continue
        groups.append([s])
    out = {}
    for g in groups:
        N, D = max(n for n, _ in g), max(d for _, d in g)
        out.update({s: (N, D) for s in g})
    return out


def pad_items(A, n, d):
    """A (..., a, b) zero-padded at the end of its last two axes to (..., n, d) (numpy or jax)."""
    a, b = A.shape[-2:]
    if (a, b) == (n, d):
        return A
    widths = [(0, 0)] * (A.ndim - 2) + [(0, n - a), (0, d - b)]
    return jnp.pad(A, widths) if isinstance(A, jax.Array) else np.pad(A, widths)


def cells_for(cell_shape, dtype, n_cells, cell_bytes=CELL_BYTES) -> int:
    """Leading indices per loop step: a power of two whose items fill about ``cell_bytes``."""
    per_cell = int(np.prod(cell_shape)) * np.dtype(dtype).itemsize
    cells = 1 << max(0, int(np.floor(np.log2(max(1, cell_bytes // max(1, per_cell))))))
    return max(1, min(cells, n_cells))


def unit_grams(A, debiased_flags, scaled, n=None):
    """Centred linear Grams of every (n, d) item of A (..., n, d), one per estimator, each
    scaled to unit Frobenius norm, and the items' constant statistics (...) (the rule of
    every CKA path, ``jaxprobe._cka._ratio``). One Gram product serves both estimators: the
    debiased (U-centred) Gram of the column-centred data equals that of the raw data, since
    U-centring removes the a_i + a_j terms a shift of the features adds.

    ``n`` (traced, optional): only the first n rows are samples, the rest zero padding
    (:func:`item_buckets`); means are taken over the n rows and the padded rows and
    columns of every Gram are exactly zero, so each value is that of the unpadded item."""
    if scaled:
        A = A * jax.vmap(_pow2_scale)(A.reshape((-1,) + A.shape[-2:])).reshape(A.shape[:-2] + (1, 1))
    if n is None:
        m = jnp.mean(A, axis=-2, keepdims=True)
        Ac = A - m
        nf = A.shape[-2]
    else:
        w, nf = _row_mask(A, n)
        m = jnp.sum(A, axis=-2, keepdims=True) * (1 / nf)
        Ac = (A - m) * w[:, None]
    G = jnp.einsum("...cf,...df->...cd", Ac, Ac)
    g2 = jnp.sum(G * G, axis=(-2, -1))
    r = _ratio(g2, nf * jnp.sum(m * m, axis=(-2, -1)), scaled)
    return _unit(G, debiased_flags, n), r


def unit_grams_raw(A, debiased_flags, scaled, n=None):
    """As :func:`unit_grams`, from the Gram of A as it is (one batched product reading A in
    place, no centred copy), centred afterwards: H G H = G - row means - column means +
    mean, and n ||mean_rows(A)||^2 = sum(G) / n. Exact in exact arithmetic; in floating point
    accurate only where the constant statistic is not small (``RAW_MIN_RATIO``). ``n``: as
    in :func:`unit_grams` (the padded rows of A must be zero)."""
    if scaled:
        A = A * jax.vmap(_pow2_scale)(A.reshape((-1,) + A.shape[-2:])).reshape(A.shape[:-2] + (1, 1))
    G = jnp.einsum("...cf,...df->...cd", A, A)
    if n is None:
        nf = A.shape[-2]
        mean_ss = jnp.sum(G, axis=(-2, -1)) / nf
        G = G - jnp.mean(G, axis=-1, keepdims=True) - jnp.mean(G, axis=-2, keepdims=True) \
            + jnp.mean(G, axis=(-2, -1), keepdims=True)
    else:
        w, nf = _row_mask(A, n)
        inv = 1 / nf
        mean_ss = jnp.sum(G, axis=(-2, -1)) * inv
        G = (G - jnp.sum(G, axis=-1, keepdims=True) * inv - jnp.sum(G, axis=-2, keepdims=True) * inv
             + jnp.sum(G, axis=(-2, -1), keepdims=True) * (1 / (nf * nf))) * (w[:, None] * w[None, :])
    g2 = jnp.sum(G * G, axis=(-2, -1))
    return _unit(G, debiased_flags, n), _ratio(g2, mean_ss, scaled)


def _row_mask(A, n):
    """(N,) 1/0 mask of the first n of A's N rows, and n as A's float dtype. (The masked
    formulas divide by n as ``x * (1 / n)``, which is what XLA makes of a division by a
    constant: an unpadded item gets the bits of the unmasked program.)"""
    w = (jnp.arange(A.shape[-2]) < n).astype(A.dtype)
    return w, jnp.asarray(n, A.dtype)


def _center_gram_unbiased_masked(K, n):
    """``kernels.gram.center_gram_unbiased`` of the leading n x n block of K (N, N), zero
    outside it (K's padded rows and columns are zero)."""
    w, nf = _row_mask(K, n)
    off = (1.0 - jnp.eye(K.shape[0], dtype=K.dtype)) * (w[:, None] * w[None, :])
    Kt = K * off
    r = jnp.sum(Kt, axis=0) * (1 / (nf - 2))
    r = r - jnp.sum(r) * (1 / (2 * (nf - 1)))
    return (Kt - r[None, :] - r[:, None]) * off


def _unit(G, debiased_flags, n=None):
    out = []
    for deb in debiased_flags:
        g = G
        if deb:
            flat = G.reshape((-1,) + G.shape[-2:])
            if n is None:
                g = jax.vmap(center_gram_unbiased)(flat).reshape(G.shape)
            else:
                g = jax.vmap(_center_gram_unbiased_masked, in_axes=(0, None))(flat, n).reshape(G.shape)
        out.append(g / jnp.sqrt(jnp.sum(g * g, axis=(-2, -1), keepdims=True)))
    return out


@partial(jax.jit, static_argnames=("debiased_flags", "orientation", "cells", "scaled", "native"))
def item_cka(X, Y, n_valid=None, *, debiased_flags, orientation="channels", cells, scaled=False, native=False):
    """X (..., U, C, F) items, Y (U, C, F) their references -> (E, ..., U) CKA (one row per
    estimator of ``debiased_flags``), the constant statistics of the X items (..., U) and
    of the Y items (U,).

    ``n_valid`` (an int, traced: one program serves every value): only the first n_valid
    samples (rows after ``orientation``) of every item are real, the rest zero padding
    (:func:`pad_items`); the padded samples take no part in any value.

    The P = prod(...) leading cells are read ``cells`` at a time by a loop of dynamic
    slices of X (X itself is the loop's input: no padded or sliced copy); when ``cells``
    does not divide P the last step re-reads the last ``cells`` cells and keeps the new
    ones. Every item is computed by the same loop body, so values do not depend on P or
    on where an item sits (the sweep's device pieces rely on this). Needs P >= cells.

    ``native`` (static; only where ``jaxprobe.native.usable(X, scaled=scaled)``): the noisy
    items go to the native CPU kernel instead (one pass per item over its centred data,
    every item by the same instructions too; ``cells`` is then unused)."""
    bshape, (U, n, d) = X.shape[:-3], X.shape[-3:]
    P = math.prod(bshape)
    E = len(debiased_flags)
    if not 1 <= cells <= P:
        raise ValueError(f"item_cka needs 1 <= cells <= {P} leading cells; got cells={cells}.")
    Xf = X.reshape((P, U, n, d))
    n = None if n_valid is None else jnp.asarray(n_valid, jnp.int32)
    gy, ry = unit_grams(orient(Y, orientation), debiased_flags, scaled, n)  # the references' Grams once
    if native:
        from jaxprobe import native as _native

        out, rx = _native.cka_items(X, jnp.stack(gy), n, debiased_flags=debiased_flags,
                                    trans=orientation != "channels")
        return out, rx, ry

    def cka_of(grams):
        gx, rx = grams
        return jnp.stack([jnp.einsum("pucd,ucd->pu", g, h) for g, h in zip(gx, gy)]), rx

    def step(carry, start):  # (cells, U, C, F) -> (E, cells, U), (cells, U)
        x = orient(jax.lax.dynamic_slice_in_dim(Xf, start, cells, axis=0), orientation)
        o, rx = cka_of(unit_grams_raw(x, debiased_flags, scaled, n))
        ok = rx >= RAW_MIN_RATIO  # False for a NaN or a sentinel -1 too

        def centred(_):  # items with ok False take the centred-data values; an item's value never depends on its step
            oc, rc = cka_of(unit_grams(x, debiased_flags, scaled, n))
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
