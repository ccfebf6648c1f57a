"""Centered Kernel Alignment (Kornblith et al. 2019), batched.

``cka(X, Y)`` compares two representations of the same n samples (rows matched).
Leading batch axes are supported and broadcast, and each distinct representation's
centered Gram matrix is computed once: comparing 41 SNRs x 18 noises of noisy
activations against one clean activation per utterance builds the clean Grams once,
not 738 times.
"""
from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxprobe._validate import (as_float_array, check_bool, check_choice, check_finite, check_not_constant, check_positive,
                                constant_threshold)
from jaxprobe import _mesh
from jaxprobe_kernels import gram as _gram

KERNELS = ("linear", "rbf")


def _use_features(n: int, d1: int, d2: int) -> bool:
    """Feature-space linear CKA costs n(d1 d2 + d1^2 + d2^2); the Gram form n^2 (d1 + d2)."""
    return n * (d1 * d2 + d1 * d1 + d2 * d2) < n * n * (d1 + d2)


def validate_pair(X, Y, fn, debiased):
    debiased = check_bool(debiased, "debiased", fn=fn)
    X = as_float_array(X, "X", fn=fn, min_ndim=2, transient=True, integers=False)
    Y = as_float_array(Y, "Y", fn=fn, min_ndim=2, transient=True, integers=False)
    if X.shape[-2] != Y.shape[-2]:
        raise ValueError(
            f"The 'X' and 'Y' parameters of {fn} must have the same number of samples n on "
            f"axis -2 (rows are matched samples); got X {tuple(X.shape)} and Y {tuple(Y.shape)}."
        )
    try:
        batch = jnp.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
    except ValueError:
        raise ValueError(
            f"The leading batch axes of 'X' {tuple(X.shape[:-2])} and 'Y' {tuple(Y.shape[:-2])} "
            f"of {fn} do not broadcast."
        ) from None
    n = X.shape[-2]
    min_n = 4 if debiased else 2
    if n < min_n:
        why = "the debiased (unbiased HSIC) estimator needs n >= 4" if debiased else "CKA needs n >= 2"
        raise ValueError(f"{fn} got n = {n} samples; {why}.")
    dtype = jnp.result_type(X.dtype, Y.dtype)
    return X.astype(dtype), Y.astype(dtype), batch


@jax.jit
def _all_finite(A):
    return jnp.all(jnp.isfinite(A))


def needs_rescue(out, *ratios, dtype) -> bool:
    """True when a fast (unscaled) result cannot be trusted as is: a non-finite value, or
    a ratio at or below the constant threshold (the -1 sentinel included)."""
    tol = constant_threshold(dtype)
    if isinstance(out, np.ndarray) and all(isinstance(r, np.ndarray) for r in ratios):  # host results: no programs
        return not (bool(np.all(np.isfinite(out))) and all(bool(np.all(r > tol)) for r in ratios))
    return not bool(_trusted(out, ratios, tol=tol))


@partial(jax.jit, static_argnames=("tol",))
def _trusted(out, ratios, *, tol):
    """Every value finite and every ratio above ``tol``: one program and one host read per call
    (three eager programs and reads cost ~1 ms per ``jaxprobe.cka`` call at the SE paper's layer
    shape, ~5 % of the call)."""
    ok = jnp.all(jnp.isfinite(out))
    for r in ratios:
        ok = ok & jnp.all(r > tol)
    return ok


def raise_constants(rx, ry, X, Y, fn, xname="X", yname="Y"):
    """The constant-representation check of every CKA path: ``rx``, ``ry`` are the
    per-item ratios computed alongside the result, broadcast to the result's batch."""
    check_not_constant(rx, xname, fn=fn, dtype=X.dtype, own_shape=tuple(X.shape[:-2]))
    check_not_constant(ry, yname, fn=fn, dtype=Y.dtype, own_shape=tuple(Y.shape[:-2]))


def _vmapped(fn, nbatch):
    for _ in range(nbatch):
        fn = jax.vmap(fn)
    return fn


def _features_one(X, Y, *, debiased, scaled):
    """Feature-space linear CKA of one pair (``kernels.hsic.cka_linear_features``, with the
    self-products shared with the constant statistics: ``||Ac Ac^T||_F = ||Ac^T Ac||_F``)."""
    Xc, mx = _gram.centred_columns(X, scaled)
    Yc, my = _gram.centred_columns(Y, scaled)
    n = X.shape[0]
    sxy = jnp.sum((Xc.T @ Yc) ** 2)
    sxx = jnp.sum((Xc.T @ Xc) ** 2)
    syy = jnp.sum((Yc.T @ Yc) ** 2)
    rx, ry = _gram.constant_ratio(sxx, mx, scaled), _gram.constant_ratio(syy, my, scaled)
    if debiased:
        a, b = jnp.sum(Xc * Xc, axis=1), jnp.sum(Yc * Yc, axis=1)

        def fix(s, u, v):
            return s - n / (n - 2) * jnp.dot(u, v) + jnp.sum(u) * jnp.sum(v) / ((n - 1) * (n - 2))

        sxy, sxx, syy = fix(sxy, a, b), fix(sxx, a, a), fix(syy, b, b)
    return sxy / jnp.sqrt(sxx * syy), rx, ry


@partial(jax.jit, static_argnames=("debiased", "features", "scaled"))
def _linear_cka_batched(X, Y, *, debiased, features, scaled=False):
    """-> (cka, rx, ry), each of the broadcast batch shape; rx, ry are the constant
    statistics of the X and Y item of each pair (``_gram.constant_ratio``). ``scaled``: scale every
    item by a power of two first (the slow, overflow-proof path)."""
    bshape = jnp.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
    if features:
        Xb = jnp.broadcast_to(X, bshape + X.shape[-2:])
        Yb = jnp.broadcast_to(Y, bshape + Y.shape[-2:])
        return _vmapped(partial(_features_one, debiased=debiased, scaled=scaled), len(bshape))(Xb, Yb)
    if X.shape[:-2] == Y.shape[:-2] and X.ndim > 2:
        return _paired(X, Y, debiased=debiased, scaled=scaled)
    gx, rx = _chunked_normed_grams(X, debiased=debiased, scaled=scaled)
    gy, ry = _chunked_normed_grams(Y, debiased=debiased, scaled=scaled)
    return jnp.sum(gx * gy, axis=(-2, -1)), jnp.broadcast_to(rx, bshape), jnp.broadcast_to(ry, bshape)


_GRAM_CHUNK = 250


def _paired(X, Y, *, debiased, scaled):
    """Independent (X_b, Y_b) pairs: one fused kernel (centre, two Grams, three sums)
    mapped over cache-sized chunks; only 3 B scalars leave the loop."""
    bshape = X.shape[:-2]
    Xf = X.reshape((-1,) + X.shape[-2:])
    Yf = Y.reshape((-1,) + Y.shape[-2:])

    def one(xy):
        gx, rx = _gram.normalised_linear_gram(xy[0], debiased=debiased, scaled=scaled)
        gy, ry = _gram.normalised_linear_gram(xy[1], debiased=debiased, scaled=scaled)
        return jnp.sum(gx * gy), rx, ry

    out = jax.lax.map(one, (Xf, Yf), batch_size=min(_GRAM_CHUNK, Xf.shape[0]))
    return tuple(o.reshape(bshape) for o in out)


def _chunked_normed_grams(A, *, debiased, scaled=False):
    """Unit-norm centered Grams of every (n, d) item of A (..., n, d) -> (..., n, n), and
    the items' constant statistics (...).

    Each distinct item is done once (a broadcast partner is never expanded). XLA on CPU
    runs one huge batch of small matrix products poorly (~15 GFLOP/s); a sequential map
    over cache-sized chunks of a fused centre + Gram + normalise kernel keeps the
    working set in cache and is several times faster (bench/bench_cka.py).
    """
    bshape, (n, d) = A.shape[:-2], A.shape[-2:]
    if not bshape:
        return _gram.normalised_linear_gram(A, debiased=debiased, scaled=scaled)
    flat = A.reshape((-1, n, d))
    B = flat.shape[0]
    chunk = min(_GRAM_CHUNK, B)
    nchunk = -(-B // chunk)
    pad = nchunk * chunk - B
    if pad:  # pad with copies of the first item (finite), dropped below
        flat = jnp.concatenate([flat, jnp.broadcast_to(flat[:1], (pad, n, d))])
    g, r = jax.lax.map(jax.vmap(partial(_gram.normalised_linear_gram, debiased=debiased, scaled=scaled)), flat.reshape((nchunk, chunk, n, d)))
    return (g.reshape((nchunk * chunk, n, n))[:B].reshape(bshape + (n, n)),
            r.reshape(nchunk * chunk)[:B].reshape(bshape))


@partial(jax.jit, static_argnames=("debiased",))
def _rbf_cka_batched(X, Y, sx, sy, *, debiased):
    """-> (cka, rx, ry) of the broadcast batch shape, as ``_linear_cka_batched``."""
    bshape = jnp.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
    gx, rx = _vmapped(partial(_gram.normalised_rbf_gram, debiased=debiased), X.ndim - 2)(X, sx)
    gy, ry = _vmapped(partial(_gram.normalised_rbf_gram, debiased=debiased), Y.ndim - 2)(Y, sy)
    return jnp.sum(gx * gy, axis=(-2, -1)), jnp.broadcast_to(rx, bshape), jnp.broadcast_to(ry, bshape)


@partial(jax.jit, static_argnames=("include_diagonal",))
def _scaled_rbf_sigma(A, scale, *, include_diagonal):
    """The median-heuristic bandwidth computed on ``A`` scaled by a power of two (no
    overflow in the squared distances), scaled back."""
    s = _gram.pow2_scale(A)
    return _gram.rbf_sigma(A * s, scale, include_diagonal=include_diagonal) / s


SIGMA_RULES = ("median", "kornblith")


def resolve_sigma(A, sigma, fn):
    """Per-representation bandwidths of shape A.shape[:-2]."""
    if sigma is None or (isinstance(sigma, str) and sigma == "median"):
        sigma = ("median", 1.0)
    if isinstance(sigma, str):
        raise ValueError(f"The 'sigma' parameter of {fn} must be None, 'median', ('median', scale), "
                         f"('kornblith', threshold) or a number > 0 (or an array of them). Got {sigma!r} instead.")
    if isinstance(sigma, tuple) and len(sigma) == 2 and isinstance(sigma[0], str):
        rule = check_choice(sigma[0], "sigma[0] (bandwidth rule)", SIGMA_RULES, fn=fn)
        scale = check_positive(sigma[1], "sigma[1] (median scale)", fn=fn)
        f = partial(_scaled_rbf_sigma, include_diagonal=rule == "kornblith")
        return _vmapped(lambda a: f(a, jnp.asarray(scale, A.dtype)), A.ndim - 2)(A)
    try:
        s = np.asarray(sigma, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"The 'sigma' parameter of {fn} must be None, 'median', ('median', scale), "
                         f"('kornblith', threshold) or a number > 0 (or an array of them). Got {sigma!r} instead.") from None
    if isinstance(sigma, (bool, np.bool_)) or (s.ndim == 0 and not (np.isfinite(s) and s > 0)):
        raise ValueError(f"The 'sigma' parameter of {fn} must be a finite number > 0. Got {sigma!r} instead.")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"The 'sigma' parameter of {fn} must be > 0 and finite; got {sigma!r}.")
    return jnp.broadcast_to(jnp.asarray(s, dtype=A.dtype), A.shape[:-2])


def cka(X, Y, *, kernel="linear", sigma=None, debiased=False, mesh=None):
    """Centered Kernel Alignment between two representations of the same samples.

    Parameters
    ----------
    X : array of shape (..., n, d1)
    Y : array of shape (..., n, d2)
        Rows are matched samples. Leading batch axes broadcast against each other.
    kernel : {"linear", "rbf"}
        Linear: ``k(x, y) = x.y``. RBF: ``exp(-||x - y||^2 / (2 sigma^2))``.
    sigma : None, "median", ("median", scale), ("kornblith", threshold) or a number / array of shape (...)
        RBF bandwidth. ``None``/"median": the median heuristic of each representation
        (median over distinct pairs, see ``kernels.gram``); ``("median", s)`` scales it;
        ``("kornblith", t)`` is Kornblith et al.'s rule ``sigma^2 = t^2 * median`` over all
        n^2 squared distances, diagonal zeros included (their demo uses t = 0.5).
    debiased : bool
        Use the unbiased HSIC estimator of Song et al. (2012) (needs n >= 4). Its CKA
        can be negative; it is never clamped.
    mesh : None (one device), or a ``jax.sharding.Mesh``, "all" or N: the broadcast
        leading batch is split over the devices (``jaxprobe.distributed.sharded_cka``).

    Returns
    -------
    array of shape (...), broadcast leading shape; a scalar for 2-D inputs. Dtype
    follows the inputs (float32 by default; float64 when x64 is on and inputs are).

    Raises
    ------
    ValueError naming 'X' or 'Y' and the batch index for a constant item (zeros, ones, or a
    spread that is only rounding noise; the rule is ``jaxprobe._validate.CONSTANT_RULE``),
    for non-finite values, mismatched n, too few samples; TypeError for a non-bool
    ``debiased`` or non-float input (the dtype policy is ``jaxprobe._validate.DTYPE_POLICY``).

    Notes
    -----
    Inputs are scaled by powers of two where their Gram would overflow or underflow, so
    ``cka(X * 1e20, Y) == cka(X, Y)`` up to rounding.
    Linear CKA uses the feature-space formula ``||X^T Y||^2 / (||X^T X|| ||Y^T Y||)``
    when it is cheaper (roughly d < n), otherwise normalised centered Grams, computing
    each distinct representation's Gram once across broadcast axes.
    """
    fn = "cka"
    check_choice(kernel, "kernel", KERNELS, fn=fn)
    X, Y, _ = validate_pair(X, Y, fn, debiased)
    debiased = bool(debiased)
    out, rx, ry = _cka_dispatch(X, Y, kernel=kernel, sigma=sigma, debiased=debiased, mesh=mesh, fn=fn, scaled=False)
    # The constant check reads per-item statistics the kernels computed alongside the
    # result. Only when a result is non-finite or a statistic is at the threshold (or
    # flags a Gram norm outside the normal range) are the inputs examined and the call
    # redone with every item scaled by a power of two: valid calls pay nothing more.
    if needs_rescue(out, rx, ry, dtype=X.dtype):
        check_finite(X, "X", fn=fn)
        check_finite(Y, "Y", fn=fn)
        out, rx, ry = _cka_dispatch(X, Y, kernel=kernel, sigma=sigma, debiased=debiased, mesh=mesh, fn=fn, scaled=True)
        raise_constants(rx, ry, X, Y, fn)
        if not bool(_all_finite(out)):
            raise FloatingPointError(
                f"{fn} produced a non-finite value from finite, non-constant inputs"
                + (" (an RBF bandwidth of 0: more than half of the sample pairs of an item coincide; pass sigma= explicitly)"
                   if kernel == "rbf" else " (with debiased=True: a representation whose unbiased HSIC with itself is 0)")
                + "."
            )
    return out


def _cka_dispatch(X, Y, *, kernel, sigma, debiased, mesh, fn, scaled):
    if kernel == "linear":
        if sigma is not None:
            raise ValueError(f"The 'sigma' parameter of {fn} applies to kernel='rbf' only; got kernel='linear'.")
        n, d1, d2 = X.shape[-2], X.shape[-1], Y.shape[-1]
        features = _use_features(n, d1, d2)
        if mesh is not None:
            return sharded_cka(X, Y, 0.0, 0.0, mesh=mesh, kernel=kernel, debiased=debiased, features=features,
                               scaled=scaled)
        if not features:
            items = _items_against_references(X, Y, debiased=debiased, scaled=scaled)
            if items is None:
                items = _pairs_on_native_kernel(X, Y, debiased=debiased, scaled=scaled)
            if items is not None:
                return items
        return _linear_cka_batched(X, Y, debiased=debiased, features=features, scaled=scaled)
    sx = resolve_sigma(X, sigma, fn)
    sy = resolve_sigma(Y, sigma, fn)
    if mesh is not None:
        return sharded_cka(X, Y, sx, sy, mesh=mesh, kernel=kernel, debiased=debiased, features=False, scaled=scaled)
    return _rbf_cka_batched(X, Y, sx, sy, debiased=debiased)


def _items_against_references(X, Y, *, debiased, scaled):
    """Many items (..., U, n, d) against one reference per item (U, n, d), in either
    argument order: the shared per-item implementation (``jaxprobe._cka_items``, also the
    sweep's), the references' Grams once. None for other shapes."""
    from jaxprobe import _cka_items, native

    for A, B, swap in ((X, Y, False), (Y, X, True)):
        if B.ndim == 3 and A.ndim > 3 and A.shape[-3] == B.shape[0]:
            cells = _cka_items.cells_for(A.shape[-3:], A.dtype, int(np.prod(A.shape[:-3])))
            out, ra, rb = _cka_items.item_cka(A, B, debiased_flags=(debiased,), cells=cells, scaled=scaled,
                                              native=native.usable(A, scaled=scaled, n=A.shape[-2], d=A.shape[-1]))
            out = out[0]
            rb = jnp.broadcast_to(rb, out.shape)
            return (out, rb, ra) if swap else (out, ra, rb)
    return None


def _pairs_on_native_kernel(X, Y, *, debiased, scaled):
    """Independent (X_b, Y_b) pairs (..., n, d1) and (..., n, d2) of float32 CPU items on the
    native kernel (``jaxprobe.native``): the Y items' unit Grams, then each X item against its
    partner's. None where the kernel does not apply (the XLA programs run)."""
    from jaxprobe import native

    n = X.shape[-2]
    if X.ndim < 3 or X.shape[:-2] != Y.shape[:-2] or not (native.usable(X, scaled=scaled, n=n, d=X.shape[-1])
                                                            and native.usable(Y, scaled=scaled, n=n, d=Y.shape[-1])):
        return None
    return _native_pairs(X, Y, debiased=debiased)


@partial(jax.jit, static_argnames=("debiased",))
def _native_pairs(X, Y, *, debiased):
    from jaxprobe import native

    flags = (debiased,)
    gy, ry = native.unit_grams(Y, None, debiased_flags=flags, trans=False)
    out, rx = native.cka_items(X, gy.reshape((1, -1) + gy.shape[-2:]), None, debiased_flags=flags, trans=False)
    return out[0], rx, ry


def normed_grams(Xs, *, kernel="linear", sigma=None, debiased=False, name="Xs", fn="cka_matrix"):
    """Unit-norm centered Gram matrices of a list of (n, d_i) representations -> (L, n, n).

    Raises the constant-representation error (``_validate.CONSTANT_RULE``) naming
    ``name[i]``, from the statistic computed with each Gram."""
    if hasattr(Xs, "ndim") and getattr(Xs, "ndim", 0) == 3:
        Xs = list(Xs)
    if not isinstance(Xs, (list, tuple)) or len(Xs) == 0:
        raise TypeError(f"The '{name}' parameter of {fn} must be a non-empty sequence of (n, d) arrays or an (L, n, d) array.")
    out, n0, arrays = [], None, []
    for i, A in enumerate(Xs):
        A = as_float_array(A, f"{name}[{i}]", fn=fn, min_ndim=2, integers=False)
        if A.ndim != 2:
            raise ValueError(f"The '{name}[{i}]' parameter of {fn} must be 2-D (n, d); got shape {tuple(A.shape)}.")
        if n0 is None:
            n0 = A.shape[0]
        elif A.shape[0] != n0:
            raise ValueError(f"All representations given to {fn} must share n; '{name}[{i}]' has n = {A.shape[0]}, expected {n0}.")
        if n0 < (4 if debiased else 2):
            raise ValueError(f"{fn} got n = {n0} samples; the {'debiased' if debiased else 'biased'} estimator needs n >= {4 if debiased else 2}.")
        if kernel == "linear":
            g, r = _gram.normalised_linear_gram(A, debiased=debiased, scaled=True)
        else:
            g, r = _gram.normalised_rbf_gram(A, resolve_sigma(A, sigma, fn), debiased=debiased)
        if not bool(_all_finite(g)):
            check_finite(A, f"{name}[{i}]", fn=fn)
        check_not_constant(r, f"{name}[{i}]", fn=fn, dtype=A.dtype)
        out.append(g)
        arrays.append(A)
    dtype = jnp.result_type(*(A.dtype for A in arrays))
    return jnp.stack([g.astype(dtype) for g in out])


def cka_matrix(Xs, Ys=None, *, kernel="linear", sigma=None, debiased=False):
    """CKA for every pair of layers, e.g. noisy layers x clean layers, in one GEMM.

    Parameters
    ----------
    Xs : sequence of L1 arrays of shape (n, d_i), or an array (L1, n, d)
    Ys : sequence of L2 arrays of shape (n, e_j), or (L2, n, e); default ``Xs``
        All representations share the same n matched samples; widths may differ.
    kernel, sigma, debiased : as in :func:`cka`.

    Returns
    -------
    array of shape (L1, L2): entry (i, j) is ``cka(Xs[i], Ys[j])``.

    Raises
    ------
    ValueError naming ``Xs[i]`` / ``Ys[j]`` for a constant representation
    (``jaxprobe._validate.CONSTANT_RULE``, computed with each Gram).
    """
    fn = "cka_matrix"
    check_choice(kernel, "kernel", KERNELS, fn=fn)
    debiased = check_bool(debiased, "debiased", fn=fn)
    if kernel == "linear" and sigma is not None:
        raise ValueError(f"The 'sigma' parameter of {fn} applies to kernel='rbf' only; got kernel='linear'.")
    gx = normed_grams(Xs, kernel=kernel, sigma=sigma, debiased=debiased, name="Xs", fn=fn)
    gy = gx if Ys is None else normed_grams(Ys, kernel=kernel, sigma=sigma, debiased=debiased, name="Ys", fn=fn)
    if gx.shape[-1] != gy.shape[-1]:
        raise ValueError(f"'Xs' and 'Ys' of {fn} must share n; got {gx.shape[-1]} and {gy.shape[-1]}.")
    L1, n = gx.shape[0], gx.shape[-1]
    out = gx.reshape(L1, n * n) @ gy.reshape(gy.shape[0], n * n).T
    if not bool(_all_finite(out)):
        raise FloatingPointError(f"{fn} produced a non-finite value from finite, non-constant inputs"
                                 + (" (an RBF bandwidth of 0; pass sigma= explicitly)." if kernel == "rbf" else "."))
    return out


# ----------------------------------------------------------------------------- sharded batches
# cka(X, Y, mesh=...): the broadcast leading batch is split over the devices; plumbing in jaxprobe._mesh.

def _cka_block(X, Y, sx, sy, *, kernel, debiased, features, scaled):
    if kernel == "linear":
        return _linear_cka_batched(X, Y, debiased=debiased, features=features, scaled=scaled)
    return _rbf_cka_batched(X, Y, sx, sy, debiased=debiased)


@functools.lru_cache(maxsize=64)
def _compiled_cka(mesh: Mesh, statics: tuple):
    """X, Y, sx, sy: split "x" (X side sharded, Y side replicated), "y", or "both"."""
    spec = _mesh.leading_spec(mesh)
    split = dict(statics)["split"]
    x_spec = spec if split in ("x", "both") else P()
    y_spec = spec if split in ("y", "both") else P()
    f = functools.partial(_cka_block, **{k: v for k, v in statics if k != "split"})
    return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(x_spec, y_spec, x_spec, y_spec), out_specs=(spec, spec, spec),
                                 check_vma=False))


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
    mesh = _mesh.as_mesh(mesh, "cka")
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
    total = _mesh.padded_size(B, mesh)
    spec = _mesh.leading_spec(mesh)

    def lead(a, k):  # flatten the outer axes of a sharded operand, pad them
        return _mesh.put(_mesh.pad_rows(np.asarray(a).reshape((B,) + a.shape[k:]), total), mesh, spec)

    if split == "x":
        args = (lead(X, len(outer)), _mesh.put(Y, mesh, P()), lead(sx, len(outer)), _mesh.put(sy, mesh, P()))
    elif split == "y":
        args = (_mesh.put(X, mesh, P()), lead(Y, len(outer)), _mesh.put(sx, mesh, P()), lead(sy, len(outer)))
    else:
        args = (lead(jnp.broadcast_to(X, batch + X.shape[-2:]), nb), lead(jnp.broadcast_to(Y, batch + Y.shape[-2:]), nb),
                lead(jnp.broadcast_to(sx, batch), nb), lead(jnp.broadcast_to(sy, batch), nb))
    st = tuple(sorted(dict(kernel=kernel, debiased=bool(debiased), features=bool(features), split=split,
                        scaled=bool(scaled)).items()))
    out = _compiled_cka(mesh, st)(*args)
    return tuple(_mesh.fetch(o, B).reshape(batch) for o in out)
