"""A synthetic results dictionary with the shape of a real SNR-sweep study of MUSE.

Plausible, not real: 24 layers in six blocks with MUSE's module paths, shapes and skip
roles; CKA that falls with depth at low SNR and recovers in the refinement block,
linear in SNR (one layer saturates so that its fit is flagged poor); diffusion
coordinates that track SNR; inter-layer distances that grow under noise. Deterministic
for a given seed. Used by tests/jaxprobe/test_report.py and to render example reports.
"""
from __future__ import annotations

import numpy as np

BLOCKS = {  # block -> (stage module, (C, F), per-dB CKA sensitivity of layers 0..3)
    "Enc1": ("encoder_level1", (16, 128), (0.0010, 0.0012, 0.0014, 0.0016)),
    "Enc2": ("encoder_level2", (32, 64), (0.0020, 0.0024, 0.0028, 0.0030)),
    "Latent": ("latent", (48, 32), (0.0090, 0.0100, 0.0110, 0.0115)),
    "Dec2": ("decoder_level2", (32, 64), (0.0160, 0.0120, 0.0125, 0.0130)),
    "Dec1": ("decoder_level1", (16, 128), (0.0170, 0.0130, 0.0135, 0.0140)),
    "Refine": ("mag_refinement", (16, 128), (0.0080, 0.0070, 0.0060, 0.0055)),
}
SKIPS = {("Enc1", 3): "output", ("Enc2", 3): "output", ("Dec2", 0): "input", ("Dec1", 0): "input"}
NOISES = ("DKITCHEN", "NPARK", "OOFFICE", "STRAFFIC", "TMETRO")
POOR_FIT_LAYER = ("Latent", 3)


def layer_name(stage: str, index: int) -> str:
    return f"TCFTransformer.{stage}.mhca_blks.0.transformer_layers.{index}.norm1"


def _spearman(x, y):
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def make_results(*, snrs=None, noises=NOISES, seed: int = 0, combos=(("utterance", "biased"),
                 ("utterance", "debiased"), ("centroid", "biased")), n_utterances: int = 12,
                 inter_snrs=None) -> dict:
    """Build the synthetic results dict (the results.json contract)."""
    rng = np.random.default_rng(seed)
    snrs = np.arange(-10.0, 31.0, 5.0) if snrs is None else np.asarray(snrs, dtype=float)
    layers, sens = [], []
    for block, (stage, shape, s) in BLOCKS.items():
        for i in range(4):
            layers.append({"name": layer_name(stage, i), "block": block, "index": i,
                           "shape": list(shape), "skip": SKIPS.get((block, i))})
            sens.append(s[i])
    sens = np.asarray(sens)

    cka, regression = [], []
    for c, (protocol, estimator) in enumerate(combos):
        shift = 0.02 * c
        for j, layer in enumerate(layers):
            curve = np.clip(0.99 - shift - sens[j] * (30.0 - snrs), 0.02, 1.0)
            if (layer["block"], layer["index"]) == POOR_FIT_LAYER:
                curve = 0.99 - shift - 0.55 * np.exp(-(snrs - snrs.min()) / 6.0)  # saturating: poor linear fit
            curve = curve + rng.normal(0, 0.004, snrs.size)
            half = 0.01 + 0.4 * sens[j] + rng.uniform(0, 0.005, snrs.size)
            for s, e, h in zip(snrs, curve, half):
                cka.append({"layer": layer["name"], "block": layer["block"], "snr": float(s),
                            "protocol": protocol, "estimator": estimator,
                            "estimate": float(e), "low": float(e - h), "high": float(e + 0.8 * h)})
            slope, intercept = np.polyfit(snrs, curve, 1)
            resid = curve - (slope * snrs + intercept)
            r2 = 1.0 - resid.var() / curve.var()
            ds, di = 0.08 * abs(slope) + 1e-4, 0.01 + 0.3 * sens[j]
            regression.append({
                "layer": layer["name"], "block": layer["block"], "protocol": protocol, "estimator": estimator,
                "slope": float(slope), "intercept": float(intercept), "r2": float(r2),
                "slope_low": float(slope - ds), "slope_high": float(slope + ds),
                "intercept_low": float(intercept - di), "intercept_high": float(intercept + di),
                "r2_low": float(max(r2 - 0.02, 0.0)), "r2_high": float(min(r2 + 0.005, 1.0)),
                "poor_fit": bool(r2 < 0.95)})

    intra = {}
    z = (snrs - snrs.mean()) / snrs.std()
    for j, layer in enumerate(layers):
        scale = 20.0 * sens[j]
        dc1 = {n: scale * (z + 0.15 * np.tanh(z) * (k - 2) / 2) + rng.normal(0, 0.01 * scale, snrs.size)
               for k, n in enumerate(noises)}
        pooled = np.mean(list(dc1.values()), axis=0)
        dist = np.abs(pooled[:, None] - pooled[None, :]) + 0.02 * scale * (1 - np.eye(snrs.size))
        intra[layer["name"]] = {"snrs": snrs.tolist(), "dc1": {"pooled": pooled.tolist(),
                                **{n: v.tolist() for n, v in dc1.items()}},
                                "distances": dist.tolist(), "dist_to_clean": dist[:, -1].tolist()}

    table1 = []
    for block in BLOCKS:
        names = [lay["name"] for lay in layers if lay["block"] == block]
        rho = np.mean([_spearman(snrs, intra[n]["dc1"]["pooled"]) for n in names]) - rng.uniform(0, 0.01)
        r2 = 0.99 - rng.uniform(0, 0.03)
        table1.append({"block": block, "spearman": float(rho), "r2": float(r2),
                       "spearman_low": float(rho - 0.02), "spearman_high": float(min(rho + 0.005, 1.0)),
                       "r2_low": float(r2 - 0.03), "r2_high": float(min(r2 + 0.01, 1.0))})

    firsts = [lay for lay in layers if lay["index"] == 0 and lay["block"] != "Latent"]
    pos = np.array([0.0, 0.4, 1.6, 1.2, 0.6])  # Enc1, Enc2, Dec2, Dec1, Refine along one axis
    inter = {}
    inter_snrs = snrs if inter_snrs is None else inter_snrs
    for s in inter_snrs:
        spread = 1.0 + 3.0 * (snrs.max() - s) / (snrs.max() - snrs.min())
        p = pos * spread + rng.normal(0, 0.05, pos.size)
        m = np.abs(p[:, None] - p[None, :])
        inter[str(float(s))] = {"layers": [lay["name"] for lay in firsts], "matrix": m.tolist()}

    return {
        "settings": {
            "model": {"name": "MUSE", "checkpoint": "synthetic"},
            "cka": {"protocol": "utterance", "estimator": "biased", "orientation": "channels-as-samples"},
            "bootstrap": {"scheme": "noise-types", "n_boot": 1000, "interval": "percentile", "level": 0.95,
                          "seed": seed},
            "regression": {"poor_fit_r2": 0.95},
            "diffusion": {"epsilon": "median", "alpha": 0.0, "t_intra": 0.5, "t_inter": 5.0, "energy": 0.99},
        },
        "data": {"n_utterances": n_utterances, "noises": list(noises), "snrs": snrs.tolist(),
                 "n_windows": 1, "corpus": "synthetic (tests/jaxprobe/report_fixtures.py)"},
        "layers": layers,
        "cka": cka,
        "regression": regression,
        "diffusion": {"table1": table1, "intra_layer": intra, "inter_layer": inter},
    }
