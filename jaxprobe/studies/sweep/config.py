"""The sweep's configuration (`jaxprobe sweep`): TOML files merged over documented defaults
(``SWEEP_DEFAULTS``), validated once.

Unknown keys are errors (a typo must not silently fall back to a default); every
error names the key path, what was expected and what arrived.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from jaxprobe.errors import ConfigError  # re-exported: jaxprobe.studies.sweep.config.ConfigError
from jaxprobe.studies._config import given_keys, merge_tables, read_toml
from torch_bridge.models.muse.layers import MUSE_SAMPLE_RATE, MUSE_WINDOW  # torch-free: MUSE's spec module

__all__ = ["AXIS_UNITS", "ConfigError", "MIN_DURATION_S", "SWEEP_DEFAULTS", "level_grid", "load_sweep_config", "snr_grid"]

SWEEP_DEFAULTS: dict[str, Any] = {
    "name": "sweep",
    "model": {
        "name": "muse",  # any torch_bridge.load_model name: muse, gtcrn, wav2vec2_base, package.module:function, ...
        "checkpoint": "",  # empty: --checkpoint, then $JAXPROBE_MUSE_CHECKPOINT, then cache, then download
        "layers": [],  # glob patterns over module paths; empty = the model's canonical probe layers
        "threads": 0,  # torch threads (per dump worker); 0 = torch's default (1 when workers > 1)
        "workers": 1,  # parallel dump workers, a model copy each; 0 = auto: idle cores + 1, 1 when the load fills them
        "batch_size": 0,  # items (windows or whole mixtures) per forward pass; 0 = the model's own, what measured
        # fastest per item on CPU (torch_bridge ModelSpec.dump_batch_size): MUSE 1, GTCRN 8, other models 1
    },
    "data": {
        "source": "embedded",  # "embedded" or "voicebank_demand"
        "corpus_size": "default",  # embedded corpus size: default | small | tiny
        "cache_dir": "",  # embedded corpus cache; empty = $JAXPROBE_CACHE/corpus or ~/.cache/jaxprobe/corpus
        "voicebank": "",  # folder of VoiceBank clean test wavs (source = voicebank_demand)
        "demand": "",  # DEMAND root (one folder per environment with ch01.wav ...)
        "utterances": 4,  # number of clean utterances (0 = all)
        "speech_split": "test",  # embedded corpus: train | dev | test | all (synthetic) or real (human prompts)
        "noises": [],  # noise types; empty = all available
        "duration": 10.0,  # center-trim length in seconds (the paper: 10 s)
        "short": "keep",  # utterances shorter than duration: keep | pad | skip
        "window": "center",  # MUSE 30,700-sample window: first | center | all
        "hop": 0,  # hop for window = "all" (0 = window size)
        "target_lufs": -23.0,
    },
    "sweep": {
        "axis": "snr",  # the degradation swept: "snr" (additive noise), "c50" (reverberation), "clipping"
        "values": [],  # the levels of the c50 axis (dB, in [3, 40]) or the clipping axis (threshold / peak, in
        # (0, 1]); the snr axis uses snrs / snr_min..snr_max below
        "noise_snr": 30.0,  # c50 and clipping axes: every noise type is added at this SNR (dB) after the degradation
        "reference": "direct",  # c50 axis: clean reference "direct" (clean through the RIR's direct path) or "dry"
        "snrs": [],  # explicit SNR list in dB (distinct); leave the key out for range(snr_min, snr_max + 1, snr_step)
        "snr_min": -10,
        "snr_max": 30,
        "snr_step": 1,
        "seed": 0,
    },
    "cka": {
        "protocols": ["utterance", "centroid"],
        "estimators": ["biased", "debiased"],
        "orientation": "channels",  # rows = C channels, features = F bins (the authors' code); "bins" transposes
        "n_boot": 1000,
        "level": 0.95,
        "method": "percentile",  # percentile | bca
        "designs": ["noise", "hierarchical"],  # the first one gives the headline intervals
        "poor_fit_r2": 0.9,  # flag a CKA-vs-SNR fit with R^2 below this (in [0, 1])
    },
    "diffusion": {
        "epsilon": "median",  # median of squared distances between distinct points, or a number
        "alpha": 0.0,
        "t_intra": 0.5,
        "t_inter": 5.0,
        "energy": 0.99,
        "inter_snrs": [-10, -5, 0, 10, 20, 30],  # SNRs drawn in Fig. 5, each on the SNR grid (when the key is
        # left out: these six where on the grid, else six spread over it)
        "coordinates": "markov",  # markov (Coifman-Lafon) | symmetric (eigenvectors of D^-1/2 K D^-1/2, the SE authors')
        "inter_layers": "authors",  # authors (all layers of Enc1, Enc2, Dec2, Dec1) | first_of_block | [module paths]
        "n_boot": 200,  # bootstrap replicates of the geometry (centroids and every map recomputed)
        "level": 0.95,
        "design": "hierarchical",  # hierarchical (noise types, then items) | noise (noise types only)
    },
    "quality": {
        "enabled": False,  # enhance every mixture and score noisy and enhanced (PESQ, STOI, SI-SDR) against the
        # clean reference, and correlate per-item CKA with it per layer (one more model pass per mixture)
    },
    "report": {"formats": ["png", "pdf"]},  # png is always needed (the HTML report embeds it)
    "compute": {"devices": "1"},  # JAX devices for the analysis: "1", "all" or a count (see jaxprobe.distributed)
}

_CHOICES = {
    ("data", "source"): ("embedded", "voicebank_demand"),
    ("data", "corpus_size"): ("default", "small", "tiny"),
    ("data", "short"): ("keep", "pad", "skip"),
    ("data", "window"): ("first", "center", "all"),
    ("data", "speech_split"): ("train", "dev", "test", "all", "real"),
    ("cka", "orientation"): ("channels", "bins"),
    ("sweep", "axis"): ("snr", "c50", "clipping"),
    ("sweep", "reference"): ("direct", "dry"),
    ("cka", "method"): ("percentile", "bca"),
    ("diffusion", "coordinates"): ("markov", "symmetric"),
    ("diffusion", "design"): ("hierarchical", "noise"),
}
_SUBSETS = {
    ("cka", "protocols"): ("utterance", "centroid"),
    ("cka", "estimators"): ("biased", "debiased"),
    ("cka", "designs"): ("noise", "hierarchical"),
    ("report", "formats"): ("png", "pdf"),
}



#: per axis: (name in prose, unit, axis label of figures)
AXIS_UNITS = {"snr": ("SNR", "dB", "Input SNR (dB)"), "c50": ("C50", "dB", "C50 (dB)"),
              "clipping": ("clipping level", "× peak", "Clipping threshold (× peak)")}
#: C50 targets every room of torch_bridge.degrade reaches (dB)
C50_RANGE = (3.0, 40.0)


def _fail(key: str, expected: str, got) -> ConfigError:
    return ConfigError(f"Configuration key '{key}' must be {expected}; got {got!r}.")


def _distinct(key: str, vals: list) -> None:
    dup = sorted({repr(v) for v in vals if vals.count(v) > 1})
    if dup:
        raise ConfigError(f"Configuration key '{key}' must not repeat a value; {', '.join(dup)} appear(s) "
                          f"more than once in {vals!r}.")


# (section, key): (lowest, highest, low_open, what) for plain numbers
_NUMBERS = {
    ("model", "threads"): (0, None, False, "an int >= 0 (0 = torch's default)"),
    ("model", "workers"): (0, None, False, "an int >= 0 (0 = auto: the CPU cores the load leaves idle)"),
    ("model", "batch_size"): (0, None, False, "an int >= 0 (0 = the model's own)"),
    ("data", "utterances"): (0, None, False, "an int >= 0 (0 = all)"),
    ("data", "hop"): (0, None, False, "an int >= 0 (0 = the window length)"),
    ("data", "target_lufs"): (-70.0, 0.0, False, "a loudness in LUFS in [-70, 0]"),
    ("sweep", "snr_step"): (1, None, False, "an int >= 1"),
    ("sweep", "seed"): (0, None, False, "an int >= 0"),
    ("cka", "n_boot"): (1, None, False, "an int >= 1"),
    ("cka", "poor_fit_r2"): (0.0, 1.0, False, "an R^2 threshold in [0, 1]"),
    ("diffusion", "alpha"): (0.0, 1.0, False, "a number in [0, 1]"),
    ("diffusion", "t_intra"): (0.0, None, True, "a diffusion time > 0"),
    ("diffusion", "t_inter"): (0.0, None, True, "a diffusion time > 0"),
    ("diffusion", "energy"): (0.0, 1.0, False, "an energy fraction in (0, 1] (0 = keep every component)"),
}
#: the shortest data.duration that holds one MUSE window (30,700 samples at 16 kHz)
MIN_DURATION_S = MUSE_WINDOW / MUSE_SAMPLE_RATE


def _validate(cfg: dict) -> dict:
    """Every value's kind and range, and how the values fit together; raises ConfigError
    naming the key, what it expects and what it got. Runs before any work (no data read)."""
    for (sec, key), choices in _CHOICES.items():
        if cfg[sec][key] not in choices:
            raise ConfigError(f"Configuration key '{sec}.{key}' must be one of {list(choices)}; got {cfg[sec][key]!r}.")
    for (sec, key), choices in _SUBSETS.items():
        vals = cfg[sec][key]
        bad = [v for v in vals if v not in choices]
        if bad or not vals:
            raise ConfigError(f"Configuration key '{sec}.{key}' must be a non-empty list drawn from {list(choices)}; got {vals!r}.")
        _distinct(f"{sec}.{key}", vals)
    if "png" not in cfg["report"]["formats"]:
        raise _fail("report.formats", "a list that includes 'png' (the HTML report embeds it)", cfg["report"]["formats"])
    for (sec, key), (lo, hi, open_lo, what) in _NUMBERS.items():
        v = cfg[sec][key]
        ok = (v > lo if open_lo else v >= lo) and (hi is None or v <= hi)
        if not ok:
            raise _fail(f"{sec}.{key}", what, v)
    if not cfg["model"]["name"].strip():
        raise _fail("model.name", "a model name (muse, gtcrn, ..., or package.module:function)", cfg["model"]["name"])
    _distinct("model.layers", cfg["model"]["layers"])
    c = cfg["cka"]
    if not 0 < c["level"] < 1:
        raise ConfigError(f"Configuration key 'cka.level' must be in (0, 1); got {c['level']!r}.")
    d = cfg["data"]
    if not (math.isfinite(d["duration"]) and d["duration"] >= MIN_DURATION_S):
        raise _fail("data.duration", f"a length in seconds >= {MIN_DURATION_S:.3f} (one MUSE window)", d["duration"])
    if d["source"] == "voicebank_demand":
        for k in ("voicebank", "demand"):
            if not d[k]:
                raise ConfigError(f"Configuration key 'data.{k}' must name a folder when data.source = 'voicebank_demand'.")
    if d["window"] != "all" and d["hop"]:
        raise _fail("data.hop", "0 unless data.window = 'all' (the hop between windows)", d["hop"])
    _distinct("data.noises", d["noises"])
    sw = cfg["sweep"]
    if not sw["snrs"] and sw["snr_min"] > sw["snr_max"]:
        raise ConfigError(f"Configuration keys 'sweep.snr_min' <= 'sweep.snr_max' expected; got "
                          f"{sw['snr_min']!r} > {sw['snr_max']!r}.")
    _distinct("sweep.snrs", sw["snrs"])
    _distinct("sweep.values", sw["values"])
    if sw["axis"] == "snr" and sw["values"]:
        raise _fail("sweep.values", "empty on the snr axis (set the SNRs with 'sweep.snrs' or snr_min..snr_max)",
                    sw["values"])
    if sw["axis"] != "snr":
        if not sw["values"]:
            raise _fail("sweep.values", f"a non-empty list of levels on the {sw['axis']} axis", sw["values"])
        lo, hi = C50_RANGE if sw["axis"] == "c50" else (0.0, 1.0)
        bad = [v for v in sw["values"] if not (lo <= v <= hi if sw["axis"] == "c50" else lo < v <= hi)]
        if bad:
            what = (f"C50 values in dB within [{lo:g}, {hi:g}] (what every generated room reaches)" if sw["axis"] == "c50"
                    else "clipping thresholds relative to the speech's peak, in (0, 1]")
            raise _fail("sweep.values", what + f" ({bad} out of range)", sw["values"])
    if not math.isfinite(sw["noise_snr"]):
        raise _fail("sweep.noise_snr", "a finite SNR in dB", sw["noise_snr"])
    grid = level_grid(cfg)
    if not grid:
        raise ConfigError("The SNR grid is empty: set 'sweep.snrs' or a valid snr_min <= snr_max with snr_step > 0.")
    inter = cfg["diffusion"]["inter_snrs"]
    _distinct("diffusion.inter_snrs", inter)
    off = [s for s in inter if not any(abs(float(s) - g) < 1e-9 for g in grid)]
    if not inter or off:
        raise ConfigError(f"Configuration key 'diffusion.inter_snrs' must be a non-empty list of levels on the "
                          f"sweep's grid {[f'{g:g}' for g in grid]}; got {inter!r}"
                          + (f" ({off} not on the grid)." if off else "."))
    if cfg["quality"]["enabled"] and "utterance" not in c["protocols"]:
        raise _fail("cka.protocols", "a list with 'utterance' when quality.enabled = true (the correlations use "
                    "per-item CKA)", c["protocols"])
    dev = cfg["compute"]["devices"]
    if dev != "all" and not (dev.isdigit() and int(dev) >= 1):
        raise ConfigError(f"Configuration key 'compute.devices' must be 'all' or a device count >= 1; got {dev!r}.")
    dd = cfg["diffusion"]
    if isinstance(dd["epsilon"], str) and dd["epsilon"] not in ("median", "bgh"):
        raise ConfigError(f"Configuration key 'diffusion.epsilon' must be 'median', 'bgh' or a number > 0; got {dd['epsilon']!r}.")
    if not isinstance(dd["epsilon"], str) and not (dd["epsilon"] > 0 and math.isfinite(dd["epsilon"])):
        raise ConfigError(f"Configuration key 'diffusion.epsilon' must be a finite number > 0; got {dd['epsilon']!r}.")
    il = dd["inter_layers"]
    if not (il in ("authors", "first_of_block") or (isinstance(il, list) and il and all(isinstance(x, str) for x in il))):
        raise ConfigError("Configuration key 'diffusion.inter_layers' must be 'authors', 'first_of_block' or a non-empty "
                          f"list of module paths; got {il!r}.")
    if not (isinstance(dd["n_boot"], int) and dd["n_boot"] >= 2):
        raise ConfigError(f"Configuration key 'diffusion.n_boot' must be an int >= 2; got {dd['n_boot']!r}.")
    if not 0 < dd["level"] < 1:
        raise ConfigError(f"Configuration key 'diffusion.level' must be in (0, 1); got {dd['level']!r}.")
    return cfg


def level_grid(cfg: dict) -> list[float]:
    """The levels of the sweep's axis: the SNR grid, or ``sweep.values`` on the c50 / clipping axes."""
    if cfg["sweep"].get("axis", "snr") != "snr":
        return [float(v) for v in cfg["sweep"]["values"]]
    return snr_grid(cfg)


def snr_grid(cfg: dict) -> list[float]:
    s = cfg["sweep"]
    if s["snrs"]:
        return [float(v) for v in s["snrs"]]
    if s["snr_step"] <= 0 or s["snr_min"] > s["snr_max"]:
        return []
    return [float(v) for v in range(int(s["snr_min"]), int(s["snr_max"]) + 1, int(s["snr_step"]))]


def load_sweep_config(source: str | Path | dict | None = None, **overrides) -> dict:
    """Defaults <- TOML file (or dict) <- keyword overrides ({"section": {...}})."""
    cfg = copy.deepcopy(SWEEP_DEFAULTS)
    given: set[str] = set()
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            shipped = Path(__file__).resolve().parents[2] / "configs" / f"{source}.toml"
            if shipped.exists():
                path = shipped
            else:
                raise ConfigError(f"Config file {str(source)!r} not found (and no shipped config of that name).")
        tables = read_toml(path)
        cfg, given = merge_tables(cfg, tables, ""), given_keys(tables)
    elif isinstance(source, dict):
        cfg, given = merge_tables(cfg, source, ""), given_keys(source)
    elif source is not None:
        raise ConfigError(f"A sweep config must be a path, a shipped name or a dict; got {type(source).__name__}.")
    if overrides:
        cfg, given = merge_tables(cfg, overrides, ""), given | given_keys(overrides)
    if "diffusion.inter_snrs" not in given:  # the default: the paper's Fig. 5 SNRs that are on this grid
        grid = level_grid(cfg)
        on = [s for s in cfg["diffusion"]["inter_snrs"] if any(abs(s - g) < 1e-9 for g in grid)]
        if cfg["sweep"]["axis"] != "snr":  # the paper's SNRs mean nothing on another axis
            on = []
        if not on and grid:  # none of them: up to six spread over the grid
            idx = sorted({round(i * (len(grid) - 1) / 5) for i in range(6)})
            on = [grid[i] for i in idx]
        cfg["diffusion"]["inter_snrs"] = [int(v) if float(v).is_integer() else v for v in on]
    return _validate(cfg)
