"""The analysis stage of the SNR-sweep study: activations in, result tables out.

Inputs per layer (all numpy or jax arrays, float32):

* ``noisy[layer]`` of shape (K, S, U, C, F): K noise types, S SNRs, U items
  (utterance windows), and the (C, F) time-mean "frequency-token" matrix;
* ``clean[layer]`` of shape (U, C, F): the clean reference of each item.

Everything is computed in a handful of batched calls per layer shape: per-item CKA
for all K x S x U conditions (clean Grams reused across conditions), the paired
bootstrap of the means for every (layer, SNR) cell from one count matrix, the
CKA-vs-SNR line fitted inside every replicate, and the centroid protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.bootstrap import _interval, bootstrap_mean
from jaxprobe.cka import cka
from jaxprobe.stats import linregress

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


def _orient(a, orientation):
    return a if orientation == "channels" else jnp.swapaxes(a, -1, -2)


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
    X = _orient(jnp.asarray(noisy), orientation)
    Y = _orient(jnp.asarray(clean), orientation)
    return cka(X, Y, debiased=debiased, mesh=mesh)


def centroid_cka(noisy, clean, *, debiased, orientation="channels", mesh=None):
    """CKA of each (noise, SNR) centroid over items against the clean centroid.

    Returns
    -------
    array of shape (K, S)
    """
    cn = jnp.mean(jnp.asarray(noisy), axis=2)  # (K, S, C, F)
    cc = jnp.mean(jnp.asarray(clean), axis=0)  # (C, F)
    return cka(_orient(cn, orientation), _orient(cc, orientation), debiased=debiased, mesh=mesh)


def _fit_intervals(snrs, reps, level):
    """Line fits inside every replicate: reps (B, L, S) -> dict of (L,) low/high arrays."""
    fit = linregress(jnp.asarray(snrs, reps.dtype), reps)
    a = (1 - level) / 2
    out = {}
    for name in ("slope", "intercept", "r2"):
        v = np.asarray(getattr(fit, name), np.float64)
        out[f"{name}_low"], out[f"{name}_high"] = np.quantile(v, [a, 1 - a], axis=0)
    return out


def analyze_cka(noisy, clean, layers, snrs, noises, settings: CkaSettings, *, mesh=None):
    """All CKA tables of the sweep.

    Parameters
    ----------
    noisy, clean : dicts layer name -> arrays as in the module docstring.
    mesh : None (one device) or a mesh / "all" / N: per-item CKA batches and bootstrap
        replicates are split over its devices (same numbers, see jaxprobe.distributed).
    layers : sequence of dicts with at least "name" and "block", in depth order.
    snrs : sequence of S floats; noises : sequence of K names.

    Returns
    -------
    dict with "cka" (records) and "regression" (records), plus raw arrays under
    "arrays" (per-item CKA values, for caching and plotting).
    """
    key = jax.random.key(settings.seed)
    snrs = np.asarray(snrs, np.float64)
    K, S = len(noises), len(snrs)
    names = [l["name"] for l in layers]
    blocks = {l["name"]: l["block"] for l in layers}
    cka_records, reg_records, arrays = [], [], {}

    for est in settings.estimators:
        debiased = est == "debiased"
        for protocol in settings.protocols:
            vals = []
            for name in names:
                f = per_item_cka if protocol == "utterance" else centroid_cka
                vals.append(np.asarray(f(noisy[name], clean[name], debiased=debiased,
                                         orientation=settings.orientation, mesh=mesh)))
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
            fit = linregress(jnp.asarray(snrs), jnp.asarray(mean))
            fit = type(fit)(*(np.asarray(v, np.float64) for v in fit))
            ints = {d: _fit_intervals(snrs, b.replicates, settings.level) for d, b in boots.items()}
            for li, name in enumerate(names):
                rec = {
                    "layer": name, "block": blocks[name], "protocol": protocol, "estimator": est,
                    "slope": float(fit.slope[li]), "intercept": float(fit.intercept[li]), "r2": float(fit.r2[li]),
                    "poor_fit": bool(float(fit.r2[li]) < settings.poor_fit_r2),
                }
                prim = ints.get(settings.designs[0]) or next(iter(ints.values()), None)
                for k in ("slope_low", "slope_high", "intercept_low", "intercept_high", "r2_low", "r2_high"):
                    rec[k] = float(prim[k][li]) if prim else None
                for d, iv in ints.items():
                    for k in ("slope", "intercept"):
                        rec[f"{k}_low_{d}"] = float(iv[f"{k}_low"][li])
                        rec[f"{k}_high_{d}"] = float(iv[f"{k}_high"][li])
                reg_records.append(rec)
    return {"cka": cka_records, "regression": reg_records, "arrays": arrays}
