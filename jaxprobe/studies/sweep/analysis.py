"""The analysis stage of the SNR-sweep study: activations in, result tables out.

Inputs per layer (all numpy or jax arrays, float32):

* ``noisy[layer]`` of shape (K, S, U, C, F): K noise types, S SNRs, U items
  (utterance windows), and the (C, F) time-mean "frequency-token" matrix;
* ``clean[layer]`` of shape (U, C, F): the clean reference of each item.

Everything is computed in a handful of batched calls per layer shape: per-item CKA
for all K x S x U conditions and both estimators from one Gram per item (clean Grams
reused across conditions), the paired bootstrap of the means for every (layer, SNR)
cell from one count matrix, the CKA-vs-SNR line fitted inside every replicate together
with the depth trends of those fits and the block means (one jitted call over all
replicates), and the centroid protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_finite, check_not_constant
from jaxprobe.bootstrap import bootstrap_mean, n_distinct_resamples
from jaxprobe import _cka_items, native
from jaxprobe._cka import cka, needs_rescue
from jaxprobe.stats import linregress_fields, percentile_interval

PROTOCOLS = ("utterance", "centroid")
ESTIMATORS = ("biased", "debiased")
DESIGNS = ("noise", "hierarchical")


@dataclass(frozen=True)
class CkaSettings:
    """How CKA is computed and bootstrapped (the report states each of these).

    orientation: "channels" -> rows are the C channels (samples) and the F bins the
        features, as in the SE authors' code; "bins" transposes.
    designs: bootstrap designs; "noise" resamples noise types (the paper),
        "hierarchical" resamples noise types then items within each noise type.
    """

    protocols: tuple = PROTOCOLS
    estimators: tuple = ESTIMATORS
    orientation: str = "channels"
    n_boot: int = 1000
    level: float = 0.95
    method: str = "percentile"
    designs: tuple = DESIGNS
    poor_fit_r2: float = 0.9
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _progress(items, desc: str, unit: str, log):
    """``items`` wrapped in a tqdm bar on stderr when ``log`` is given (progress wanted)."""
    if log is None:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False, mininterval=1.0)


def _orient(a, orientation):
    return a if orientation == "channels" else jnp.swapaxes(a, -1, -2)


def _as_device(a):
    """A float array on the device; numpy input is handed over without a copy when aligned."""
    return as_float_array(a, "activations", fn="analyze_cka", min_ndim=3, transient=True, integers=False)


def per_item_cka(noisy, clean, *, debiased, orientation="channels", mesh=None):
    """CKA of every noisy item against its clean reference.

    Parameters
    ----------
    noisy : array of shape (K, S, U, C, F)
    clean : array of shape (U, C, F)

    Returns
    -------
    array of shape (K, S, U)
    """
    X = _orient(_as_device(noisy), orientation)
    Y = _orient(_as_device(clean), orientation)
    return cka(X, Y, debiased=debiased, mesh=mesh)


_CELL_BYTES = 1 << 20  # activations per map step: about 1 MiB (L2-sized on common CPUs)


def _local_devices(mesh):
    """The devices of ``mesh`` this process can address (all of them on one host)."""
    return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]


def per_item_cka_all(noisy, clean, *, estimators=ESTIMATORS, orientation="channels", mesh=None, bucket=None):
    """:func:`per_item_cka` for several estimators in one pass over the activations.

    ``bucket``: optional (N, D), the item shape (samples, features after ``orientation``)
    to zero-pad the items to, so that layers of different shapes share one compiled program
    (``jaxprobe._cka_items.item_buckets``); padded samples are masked, padded features are
    zero: the same values to float32 rounding.

    Returns
    -------
    dict estimator -> array of shape (K, S, U); the same values as one
    :func:`per_item_cka` call per estimator (to float rounding; that path also words the
    error when a value is not finite).

    Notes
    -----
    The (noise, SNR) cells are processed a fixed number at a time (``cells``, chosen from the
    activation size alone) by one compiled loop body; the cells are cut into one piece per
    device (the last padded to whole steps with copies of its first cell), each piece a call
    of that program on its device (dispatch is asynchronous, so the devices run in
    parallel). Every value is computed by the same instructions in the same order whatever
    the number of pieces: results are bit-identical for mesh=None, 1, 2, 4 or "all"
    devices (tests/jaxprobe/test_determinism.py). On several hosts each process computes
    every piece with its own devices.
    """
    X = noisy if isinstance(noisy, jax.Array) else np.asarray(noisy)
    Y = clean if isinstance(clean, jax.Array) else np.asarray(clean)
    if X.ndim != 5 or Y.shape != X.shape[2:]:
        raise ValueError(f"per_item_cka_all needs noisy (K, S, U, C, F) and clean (U, C, F); got "
                         f"{tuple(X.shape)} and {tuple(Y.shape)}.")
    n = X.shape[-2] if orientation == "channels" else X.shape[-1]
    if "debiased" in estimators and n < 4:  # let cka() word the error
        return {e: per_item_cka(noisy, clean, debiased=e == "debiased", orientation=orientation) for e in estimators}
    K, S, U = X.shape[:3]
    M = K * S
    n_valid, X0, Y0 = None, X, Y
    if bucket is not None:  # pad the samples and features (as stored): one program per bucket
        chan = orientation == "channels"
        n_valid = np.int32(X.shape[-2] if chan else X.shape[-1])
        X, Y = (_cka_items.pad_items(a, *(bucket if chan else bucket[::-1])) for a in (X, Y))
    cells = _cka_items.cells_for(X.shape[2:], X.dtype, M, cell_bytes=_CELL_BYTES)
    if mesh is not None:
        from jaxprobe.distributed import as_mesh

        mesh = as_mesh(mesh, "per_item_cka_all")
    devices = [None] if mesh is None else _local_devices(mesh)
    piece = cells * -(-(-(-M // cells)) // len(devices))  # whole map steps, one piece per device
    Yd = {None: _as_device(Y)} if mesh is None else {d: jax.device_put(Y, d) for d in devices}
    flags = tuple(e == "debiased" for e in estimators)
    n_items, d_items = X.shape[-2:] if orientation == "channels" else X.shape[-2:][::-1]  # after padding

    def on_kernel(x, scaled):
        return native.usable(x, scaled=scaled, n=n_items, d=d_items)

    def run(scaled):
        # One device: the whole (K, S, U, C, F) array is the loop's input, read in place
        # (jaxprobe._cka_items.item_cka: no padded, reshaped or sliced copy).
        if len(devices) == 1 and devices[0] is None:
            xd = _as_device(X)
            o, rx, ry = _cka_items.item_cka(xd, Yd[None], n_valid, debiased_flags=flags, orientation=orientation,
                                            cells=cells, scaled=scaled, native=on_kernel(xd, scaled))
            return np.asarray(o), np.asarray(rx), np.asarray(ry)
        flat = X.reshape((M,) + X.shape[2:])
        outs, rxs, ry = [], [], None
        for i, start in enumerate(range(0, M, piece)):
            x = flat[start:start + piece]
            short = cells - x.shape[0]  # a last piece smaller than one step: copies of its first cell, trimmed below
            if short > 0:
                lib = jnp if isinstance(x, jax.Array) else np
                x = lib.concatenate([x, lib.broadcast_to(x[:1], (short,) + x.shape[1:])])
            dev = devices[i % len(devices)]
            xd = _as_device(x) if dev is None else jax.device_put(x, dev)
            o, rx, ry = _cka_items.item_cka(xd, Yd[dev], n_valid, debiased_flags=flags, orientation=orientation,
                                            cells=cells, scaled=scaled, native=on_kernel(xd, scaled))
            outs.append(o)
            rxs.append(rx)
        out = np.concatenate([np.asarray(o) for o in outs], axis=1)[:, :M].reshape(len(flags), K, S, U)
        rx = np.concatenate([np.asarray(r) for r in rxs], axis=0)[:M].reshape(K, S, U)
        return out, rx, np.asarray(ry)

    out, rx, ry = run(False)
    if needs_rescue(out, rx, ry, dtype=out.dtype):  # as in jaxprobe.cka (numpy results: no eager programs)
        fn = "per_item_cka_all"
        check_finite(X0, "noisy", fn=fn)
        check_finite(Y0, "clean", fn=fn)
        out, rx, ry = run(True)
        check_not_constant(rx, "noisy", fn=fn, dtype=out.dtype)
        check_not_constant(ry, "clean", fn=fn, dtype=out.dtype)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"{fn} produced a non-finite CKA value from finite, non-constant activations.")
    return {e: jnp.asarray(out[i]) for i, e in enumerate(estimators)}


def centroid_cka(noisy, clean, *, debiased, orientation="channels", mesh=None):
    """CKA of each (noise, SNR) centroid over items against the clean centroid.

    Returns
    -------
    array of shape (K, S)
    """
    cn = jnp.mean(_as_device(noisy), axis=2)  # (K, S, C, F)
    cc = jnp.mean(_as_device(clean), axis=0)  # (C, F)
    return cka(_orient(cn, orientation), _orient(cc, orientation), debiased=debiased, mesh=mesh)


TREND_STATISTICS = {
    "spearman_slope_depth": "Spearman rho of the per-layer slope (CKA/dB) against layer depth",
    "spearman_intercept_depth": "Spearman rho of the per-layer intercept (CKA at 0 dB) against layer depth",
    "block_mean_slope": "mean over the block's layers of the slope (CKA/dB)",
    "block_mean_intercept": "mean over the block's layers of the intercept (CKA at 0 dB of the fit)",
    "block_mean_cka_0db": "mean over the block's layers of the CKA at the grid SNR nearest 0 dB",
    "block_mean_cka_lowest_snr": "mean over the block's layers of the CKA at the lowest SNR",
}


def _small_ranks(a):
    """``jaxprobe.stats.rankdata`` along a short last axis (the layers): the same tie-averaged
    ranks, (#smaller + #smaller-or-equal + 1) / 2, from all pairwise comparisons (O(n^2), for
    n of a few dozen), which compiles in a fraction of the time of the sort and searches."""
    lt = jnp.sum(a[..., None, :] < a[..., :, None], axis=-1)
    le = jnp.sum(a[..., None, :] <= a[..., :, None], axis=-1)
    return ((lt + le + 1) / 2.0).astype(jnp.result_type(a.dtype, jnp.float32))


def _masked_spearman(x, y):
    """Spearman rho along the last axis without host-side checks (NaN for a constant input)."""
    rx, ry = _small_ranks(x), _small_ranks(y)
    dx = rx - jnp.mean(rx, axis=-1, keepdims=True)
    dy = ry - jnp.mean(ry, axis=-1, keepdims=True)
    return jnp.sum(dx * dy, axis=-1) / jnp.sqrt(jnp.sum(dx * dx, axis=-1) * jnp.sum(dy * dy, axis=-1))


@jax.jit
def _replicate_statistics(x, curves, depth, avg, s0, s_low):
    """Everything fitted inside every replicate, in one batched call.

    x (S,) SNRs; curves (B, L, S) mean CKA per replicate; depth (L,) layer index;
    avg (L, G) block-averaging matrix (column g: 1/n_g on the block's layers);
    s0, s_low: SNR positions (nearest 0 dB, lowest).
    Returns a dict of (B, L) per-layer fits and (B,) / (B, G) trend statistics.
    """
    fit = linregress_fields(x.astype(curves.dtype), curves)
    d = jnp.broadcast_to(depth.astype(curves.dtype), fit.slope.shape)
    return {
        "slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2,
        "spearman_slope_depth": _masked_spearman(d, fit.slope),
        "spearman_intercept_depth": _masked_spearman(d, fit.intercept),
        "block_mean_slope": fit.slope @ avg,
        "block_mean_intercept": fit.intercept @ avg,
        "block_mean_cka_0db": curves[:, :, s0] @ avg,
        "block_mean_cka_lowest_snr": curves[:, :, s_low] @ avg,
    }


def _point_and_replicate_statistics(snrs, mean, boots, layer_blocks):
    """:func:`replicate_statistics` of the point curves ``mean`` (L, S) and of every design's
    replicates, one call per design with the point as its row 0: one compiled program,
    (1 + n_boot, L, S), serves every protocol, estimator and design (each row is fitted on
    its own, so the rows are those of separate calls). Returns (point, {design: stats},
    block names)."""
    point, rep_stats, names = None, {}, None
    for d, b in boots.items():
        reps = np.asarray(b.replicates)
        both, names = replicate_statistics(snrs, np.concatenate([mean[None].astype(reps.dtype), reps]), layer_blocks)
        point = point or {k: v[:1] for k, v in both.items()}
        rep_stats[d] = {k: v[1:] for k, v in both.items()}
    if point is None:  # no bootstrap (a single noise type)
        point, names = replicate_statistics(snrs, mean[None], layer_blocks)
    return point, rep_stats, names


#: the centroids join the per-item call of a layer (one compiled program fewer per bucket) when the
#: layer's noisy activations are at most this large: the copy that joins them costs ~1 ms per MiB
CENTROID_RIDE_BYTES = 16 << 20


def centroids_as_items(noisy, clean):
    """The (noise, SNR) centroids over items (K, S, 1, C, F) and the clean centroid (1, C, F),
    shaped as one item each for :func:`per_item_cka_all` (means in numpy: no compiled program
    per layer shape)."""
    X = np.asarray(noisy)
    Y = np.asarray(clean)
    return X.mean(axis=2, keepdims=True, dtype=X.dtype), Y.mean(axis=0, keepdims=True, dtype=Y.dtype)


def replicate_statistics(snrs, curves, layer_blocks):
    """Per-layer line fits and the depth trends for every replicate of the CKA curves.

    Parameters
    ----------
    snrs : (S,) SNR grid in dB.
    curves : array (B, L, S): mean CKA per layer and SNR, one row per bootstrap replicate
        (B = 1 for the point estimate).
    layer_blocks : sequence of L block names in depth order.

    Returns
    -------
    stats : dict name -> numpy array: "slope", "intercept", "r2" (B, L); the
        Spearman trends (B,) (absent for fewer than 3 layers); the block means (B, G).
    blocks : list of the G block names, in order of first appearance.
    """
    snrs = np.asarray(snrs, np.float64)
    blocks = list(dict.fromkeys(layer_blocks))
    lab = np.array([blocks.index(b) for b in layer_blocks])
    onehot = (lab[:, None] == np.arange(len(blocks))[None, :]).astype(np.float32)
    avg = onehot / onehot.sum(0, keepdims=True)
    s0, s_low = int(np.argmin(np.abs(snrs))), int(np.argmin(snrs))
    curves = jnp.asarray(curves)
    out = _replicate_statistics(snrs.astype(curves.dtype), curves, np.arange(len(layer_blocks), dtype=np.int32),
                                avg.astype(curves.dtype), s0, s_low)
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    if len(layer_blocks) < 3:
        out.pop("spearman_slope_depth")
        out.pop("spearman_intercept_depth")
    return out, blocks


def _percentile(reps, level):
    """(B, ...) -> low, high percentile bounds; None-filled where any replicate is NaN."""
    lo, hi = percentile_interval(reps, level)
    bad = np.isnan(reps).any(axis=0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def _num(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _trend_records(point, rep_stats, blocks, snrs, protocol, est, primary, level):
    """Records of the depth trends and block means: estimate from the mean curves, percentile
    bounds from the same statistic computed inside every replicate (one set per design)."""
    s0, s_low = float(snrs[int(np.argmin(np.abs(snrs)))]), float(np.min(snrs))
    bounds = {d: {k: _percentile(v, level) for k, v in st.items()} for d, st in rep_stats.items()}
    out = []
    for stat in TREND_STATISTICS:
        if stat not in point:
            continue
        per_block = stat.startswith("block_")
        for g in range(len(blocks) if per_block else 1):
            idx = (0, g) if per_block else (0,)
            rec = {"statistic": stat, "block": blocks[g] if per_block else None,
                   "protocol": protocol, "estimator": est, "estimate": _num(point[stat][idx]),
                   "low": None, "high": None,
                   "snr": s0 if stat == "block_mean_cka_0db" else s_low if stat == "block_mean_cka_lowest_snr" else None,
                   "interval": f"percentile, level {level:g}, statistic recomputed in every replicate",
                   "description": TREND_STATISTICS[stat]}
            for d, b in bounds.items():
                lo, hi = b[stat][0][idx[1:]], b[stat][1][idx[1:]]
                rec[f"low_{d}"], rec[f"high_{d}"] = _num(lo), _num(hi)
                if d == primary:
                    rec["low"], rec["high"] = _num(lo), _num(hi)
            out.append(rec)
    return out


#: fewer distinct resamples than this (or than n_boot) and a design's intervals are flagged
MIN_DISTINCT_RESAMPLES = 1000


def resampling_summary(K: int, U: int, settings: CkaSettings) -> tuple[list[dict], list[str]]:
    """How many distinct resamples each bootstrap design of the sweep can draw, and a
    warning for every design with too few to mean much (fewer than ``n_boot`` or than
    MIN_DISTINCT_RESAMPLES): its replicates repeat and its percentile bounds take only a
    few values (2 noise types resampled: 3 distinct resamples).

    Returns (records {protocol, design, unit, n_units, distinct_resamples, n_boot, too_few},
    warnings)."""
    records, warnings = [], []
    if K < 2:
        return records, [f"Only {K} noise type: no bootstrap intervals (resampling needs at least 2)."]
    groups = np.repeat(np.arange(K), U)
    for protocol in settings.protocols:
        for design in settings.designs:
            if protocol == "centroid" and design == "hierarchical":
                continue
            if protocol == "utterance":
                n = n_distinct_resamples(groups=groups, hierarchical=design == "hierarchical")
                unit = "noise types" if design == "noise" else f"noise types, then {U} items within each"
            else:
                n, unit = n_distinct_resamples(K), "noise types (centroids)"
            too_few = n < min(settings.n_boot, MIN_DISTINCT_RESAMPLES)
            records.append({"protocol": protocol, "design": design, "unit": unit, "n_units": K,
                            "distinct_resamples": n, "n_boot": settings.n_boot, "too_few": bool(too_few)})
            if too_few:
                warnings.append(
                    f"The '{design}' bootstrap of the {protocol} protocol resamples {K} noise types: only {n} "
                    f"distinct resamples exist for {settings.n_boot} replicates, so its intervals take few values "
                    f"and mean little (an interval may end at the estimate). Use more noise types"
                    + (" or the hierarchical design." if design == "noise" and "hierarchical" not in settings.designs
                       else "."))
    return records, warnings


def analyze_cka(noisy, clean, layers, snrs, noises, settings: CkaSettings, *, mesh=None, log=None):
    """All CKA tables of the sweep.

    Parameters
    ----------
    noisy, clean : dicts layer name -> arrays as in the module docstring.
    mesh : None (one device) or a mesh / "all" / N: per-item CKA pieces and bootstrap
        replicates are split over its devices; the results are bit-identical to one device's.
    log : optional ``log(msg)``; when given, stage lines and a tqdm bar over the layers.
    layers : sequence of dicts with at least "name" and "block", in depth order.
    snrs : sequence of S floats; noises : sequence of K names.

    Returns
    -------
    dict with "cka", "regression" and "trends" (records), plus raw arrays under
    "arrays" (per-item CKA values, for caching and plotting) and, under "replicates",
    per "protocol/estimator" and design the bootstrap replicates (B, ...) of the mean CKA
    curves ("cka", (B, L, S)) and of every statistic fitted inside them (see
    :func:`replicate_statistics`); these are not written to results.json.

    The "trends" records ({statistic, block, protocol, estimator, estimate, low, high,
    snr, ...}; see ``TREND_STATISTICS``) are the depth trends of the per-layer fits
    (Spearman rho of slope and of intercept against layer index) and per-block means
    (slope, intercept, CKA near 0 dB and at the lowest SNR). Each is computed on the mean
    curves (estimate) and inside every bootstrap replicate (percentile bounds per design;
    ``low``/``high`` from the first design).
    """
    key = jax.random.key(settings.seed)
    snrs = np.asarray(snrs, np.float64)
    K, S = len(noises), len(snrs)
    names = [l["name"] for l in layers]
    blocks = {l["name"]: l["block"] for l in layers}
    cka_records, reg_records, trend_records, arrays, replicates = [], [], [], {}, {}

    # One compiled per-item program per bucket of layer shapes (jaxprobe._cka_items.item_buckets).
    # On small sweeps the (noise, SNR) centroids ride along as one more item of every layer (with
    # their own clean centroid as reference) instead of a program of their own; on large ones
    # that copy of the activations would cost more than the program, and they keep their own call.
    utt, cen = "utterance" in settings.protocols, "centroid" in settings.protocols
    shape = {nm: tuple(noisy[nm].shape[-2:])[::1 if settings.orientation == "channels" else -1] for nm in names}
    U = noisy[names[0]].shape[2] if names else 0
    ride = utt and cen and max((math.prod(noisy[nm].shape) * np.dtype(noisy[nm].dtype).itemsize for nm in names),
                               default=0) <= CENTROID_RIDE_BYTES
    n_items = ((U + 1) if ride else U if utt else 1) * (K * S + 1)
    buckets = _cka_items.item_buckets(shape.values(), n_items)
    per_item, per_centroid = {}, {}
    for name in _progress(names, "per-item CKA", "layer", log):
        calls = []  # (noisy, clean, take the utterances, take the centroids)
        if ride:
            cX, cY = centroids_as_items(noisy[name], clean[name])
            calls.append((np.concatenate([np.asarray(noisy[name]), cX], axis=-3),
                          np.concatenate([np.asarray(clean[name]), cY], axis=-3), True, True))
        else:
            if utt:
                calls.append((noisy[name], clean[name], True, False))
            if cen:
                calls.append((*centroids_as_items(noisy[name], clean[name]), False, True))
        for X, Y, take_u, take_c in calls:  # centroids alone: small, and on one device the same for any mesh
            got = per_item_cka_all(X, Y, estimators=tuple(settings.estimators), orientation=settings.orientation,
                                   mesh=mesh if take_u else None, bucket=buckets[shape[name]])
            for est, v in got.items():
                v = np.asarray(v)
                if take_u:
                    per_item.setdefault(est, []).append(v[..., :-1] if take_c else v)
                if take_c:
                    per_centroid.setdefault(est, []).append(v[..., -1])
    if log:
        log(f"analysis: bootstrap of {len(settings.estimators) * len(settings.protocols)} protocol/estimator "
            f"combinations x {len(settings.designs)} designs, {settings.n_boot} replicates each")
    for est in settings.estimators:
        debiased = est == "debiased"
        for protocol in settings.protocols:
            if protocol == "utterance":
                vals = per_item[est]
            else:  # K x S centroids
                vals = per_centroid[est]
            V = np.stack(vals)  # (L, K, S, U) or (L, K, S)
            arrays[f"{protocol}/{est}"] = V
            if protocol == "utterance":
                U = V.shape[-1]
                items = np.moveaxis(V, 1, 2).reshape(len(names), S, K * U)  # (L, S, K*U), noise-major
                groups = np.repeat(np.arange(K), U)
            else:
                items = np.moveaxis(V, 1, 2)  # (L, S, K)
                groups = None  # items are the noise types themselves
            boots = {}
            for design in settings.designs:
                if protocol == "centroid" and design == "hierarchical":
                    continue  # centroids already average the items; see the report's notes
                if K < 2:
                    continue
                g = groups if protocol == "utterance" else None
                hier = design == "hierarchical"
                if design == "noise" and protocol == "utterance":
                    g, hier = groups, False
                # one stream per (estimator, protocol, design); the same resamples for all cells
                sub = jax.random.fold_in(key, 100 * ESTIMATORS.index(est) + 10 * PROTOCOLS.index(protocol) + DESIGNS.index(design))
                boots[design] = bootstrap_mean(
                    items, key=sub,
                    n_boot=settings.n_boot, groups=g, hierarchical=hier,
                    level=settings.level, method=settings.method, mesh=mesh,
                )
            mean = np.asarray(items.mean(-1), np.float64)  # (L, S)
            lohi = {d: (np.asarray(b.low, np.float64), np.asarray(b.high, np.float64)) for d, b in boots.items()}
            primary = lohi.get(settings.designs[0]) or next(iter(lohi.values()), None)
            for li, name in enumerate(names):
                for si, snr in enumerate(snrs):
                    rec = {
                        "layer": name, "block": blocks[name], "snr": float(snr), "protocol": protocol,
                        "estimator": est, "estimate": float(mean[li, si]),
                        "low": float(primary[0][li, si]) if primary else None,
                        "high": float(primary[1][li, si]) if primary else None,
                    }
                    for design, (lo, hi) in lohi.items():
                        rec[f"low_{design}"] = float(lo[li, si])
                        rec[f"high_{design}"] = float(hi[li, si])
                    cka_records.append(rec)
            # the point fits and, inside every replicate, the same fits plus the depth trends
            layer_blocks = [blocks[nm] for nm in names]
            point, rep_stats, block_names = _point_and_replicate_statistics(snrs, mean, boots, layer_blocks)
            primary_design = settings.designs[0] if settings.designs[0] in rep_stats else next(iter(rep_stats), None)
            trend_records += _trend_records(point, rep_stats, block_names, snrs, protocol, est, primary_design,
                                            settings.level)
            replicates[f"{protocol}/{est}"] = {d: {"cka": np.asarray(boots[d].replicates), **st}
                                               for d, st in rep_stats.items()}
            ints = {d: {k: _percentile(st[k], settings.level) for k in ("slope", "intercept", "r2")}
                    for d, st in rep_stats.items()}
            for li, name in enumerate(names):
                r2 = float(point["r2"][0, li])
                rec = {
                    "layer": name, "block": blocks[name], "protocol": protocol, "estimator": est,
                    "slope": float(point["slope"][0, li]), "intercept": float(point["intercept"][0, li]), "r2": r2,
                    "poor_fit": bool(r2 < settings.poor_fit_r2),
                }
                for k in ("slope", "intercept", "r2"):
                    lo_hi = ints[primary_design][k] if primary_design else None
                    rec[f"{k}_low"] = _num(lo_hi[0][li]) if lo_hi else None
                    rec[f"{k}_high"] = _num(lo_hi[1][li]) if lo_hi else None
                for d, iv in ints.items():
                    for k in ("slope", "intercept"):
                        rec[f"{k}_low_{d}"] = _num(iv[k][0][li])
                        rec[f"{k}_high_{d}"] = _num(iv[k][1][li])
                reg_records.append(rec)
    return {"cka": cka_records, "regression": reg_records, "trends": trend_records, "arrays": arrays,
            "replicates": replicates}
