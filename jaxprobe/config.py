"""Study configuration: TOML files merged over documented defaults, validated once.

Unknown keys are errors (a typo must not silently fall back to a default); every
error names the key path, what was expected and what arrived.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

SWEEP_DEFAULTS: dict[str, Any] = {
    "name": "sweep",
    "model": {
        "name": "muse",
        "checkpoint": "",  # empty: --checkpoint, then $JAXPROBE_MUSE_CHECKPOINT, then cache, then download
        "threads": 0,  # torch threads; 0 = torch's default
        "batch_size": 1,  # windows per MUSE forward; 1 is fastest per window on CPU
    },
    "data": {
        "source": "embedded",  # "embedded" or "voicebank_demand"
        "corpus_size": "default",  # embedded corpus size: default | small | tiny
        "cache_dir": "",  # embedded corpus cache; empty = $JAXPROBE_CACHE/corpus or ~/.cache/jaxprobe/corpus
        "voicebank": "",  # folder of VoiceBank clean test wavs (source = voicebank_demand)
        "demand": "",  # DEMAND root (one folder per environment with ch01.wav ...)
        "utterances": 4,  # number of clean utterances (0 = all)
        "speech_split": "test",  # embedded corpus: which utterances to use (see torch_bridge.corpus)
        "noises": [],  # noise types; empty = all available
        "duration": 10.0,  # center-trim length in seconds (the paper: 10 s)
        "short": "keep",  # utterances shorter than duration: keep | pad | skip
        "window": "center",  # MUSE 30,700-sample window: first | center | all
        "hop": 0,  # hop for window = "all" (0 = window size)
        "target_lufs": -23.0,
    },
    "sweep": {
        "snrs": [],  # explicit SNR list in dB; empty = range(snr_min, snr_max + 1, snr_step)
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
        "poor_fit_r2": 0.9,
    },
    "diffusion": {
        "epsilon": "median",  # median of squared distances between distinct points, or a number
        "alpha": 0.0,
        "t_intra": 0.5,
        "t_inter": 5.0,
        "energy": 0.99,
        "inter_snrs": [-10, -5, 0, 10, 20, 30],
    },
    "report": {"formats": ["png", "pdf"]},
    "compute": {"devices": "1"},  # JAX devices for the analysis: "1", "all" or a count (see jaxprobe.distributed)
}

_CHOICES = {
    ("model", "name"): ("muse",),
    ("data", "source"): ("embedded", "voicebank_demand"),
    ("data", "corpus_size"): ("default", "small", "tiny"),
    ("data", "short"): ("keep", "pad", "skip"),
    ("data", "window"): ("first", "center", "all"),
    ("cka", "orientation"): ("channels", "bins"),
    ("cka", "method"): ("percentile", "bca"),
}
_SUBSETS = {
    ("cka", "protocols"): ("utterance", "centroid"),
    ("cka", "estimators"): ("biased", "debiased"),
    ("cka", "designs"): ("noise", "hierarchical"),
    ("report", "formats"): ("png", "pdf"),
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong kind."""


def _merge(base: dict, over: dict, path: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        where = f"{path}.{k}" if path else k
        if k not in base:
            raise ConfigError(f"Unknown configuration key '{where}'. Known keys here: {', '.join(sorted(base))}.")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"Configuration key '{where}' must be a table; got {type(v).__name__}.")
            out[k] = _merge(base[k], v, where)
        else:
            d = base[k]
            ok = (
                isinstance(v, type(d))
                or (isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool))
                or (k == "epsilon" and isinstance(v, (int, float)))
            )
            if not ok or (isinstance(v, bool) != isinstance(d, bool)):
                raise ConfigError(
                    f"Configuration key '{where}' must be {type(d).__name__}; got {v!r} ({type(v).__name__})."
                )
            out[k] = v
    return out


def _validate(cfg: dict) -> dict:
    for (sec, key), choices in _CHOICES.items():
        if cfg[sec][key] not in choices:
            raise ConfigError(f"Configuration key '{sec}.{key}' must be one of {list(choices)}; got {cfg[sec][key]!r}.")
    for (sec, key), choices in _SUBSETS.items():
        vals = cfg[sec][key]
        bad = [v for v in vals if v not in choices]
        if bad or not vals:
            raise ConfigError(f"Configuration key '{sec}.{key}' must be a non-empty list drawn from {list(choices)}; got {vals!r}.")
    c = cfg["cka"]
    if not (isinstance(c["n_boot"], int) and c["n_boot"] >= 1):
        raise ConfigError(f"Configuration key 'cka.n_boot' must be an int >= 1; got {c['n_boot']!r}.")
    if not 0 < c["level"] < 1:
        raise ConfigError(f"Configuration key 'cka.level' must be in (0, 1); got {c['level']!r}.")
    if cfg["data"]["source"] == "voicebank_demand":
        for k in ("voicebank", "demand"):
            if not cfg["data"][k]:
                raise ConfigError(f"Configuration key 'data.{k}' must name a folder when data.source = 'voicebank_demand'.")
    if not snr_grid(cfg):
        raise ConfigError("The SNR grid is empty: set 'sweep.snrs' or a valid snr_min <= snr_max with snr_step > 0.")
    dev = cfg["compute"]["devices"]
    if dev != "all" and not (dev.isdigit() and int(dev) >= 1):
        raise ConfigError(f"Configuration key 'compute.devices' must be 'all' or a device count >= 1; got {dev!r}.")
    d = cfg["diffusion"]
    if isinstance(d["epsilon"], str) and d["epsilon"] not in ("median", "bgh"):
        raise ConfigError(f"Configuration key 'diffusion.epsilon' must be 'median', 'bgh' or a number > 0; got {d['epsilon']!r}.")
    if not isinstance(d["epsilon"], str) and not d["epsilon"] > 0:
        raise ConfigError(f"Configuration key 'diffusion.epsilon' must be > 0; got {d['epsilon']!r}.")
    return cfg


def snr_grid(cfg: dict) -> list[float]:
    s = cfg["sweep"]
    if s["snrs"]:
        return [float(v) for v in s["snrs"]]
    if s["snr_step"] <= 0 or s["snr_min"] > s["snr_max"]:
        return []
    return [float(v) for v in range(int(s["snr_min"]), int(s["snr_max"]) + 1, int(s["snr_step"]))]


def read_toml(path: Path) -> dict:
    """A config file's tables; invalid TOML is a ConfigError naming the file."""
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_sweep_config(source: str | Path | dict | None = None, **overrides) -> dict:
    """Defaults <- TOML file (or dict) <- keyword overrides ({"section": {...}})."""
    cfg = copy.deepcopy(SWEEP_DEFAULTS)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            shipped = Path(__file__).resolve().parent / "configs" / f"{source}.toml"
            if shipped.exists():
                path = shipped
            else:
                raise ConfigError(f"Config file {str(source)!r} not found (and no shipped config of that name).")
        cfg = _merge(cfg, read_toml(path), "")
    elif isinstance(source, dict):
        cfg = _merge(cfg, source, "")
    if overrides:
        cfg = _merge(cfg, overrides, "")
    return _validate(cfg)


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (stage cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
