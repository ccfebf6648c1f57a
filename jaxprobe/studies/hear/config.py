"""Configuration of `jaxprobe hear`: TOML merged over documented defaults, validated once.

Same rules as the sweep's (:mod:`jaxprobe.studies.sweep.config`): unknown keys are errors, every error names the
key path, what was expected and what arrived. Shipped configs: ``demo`` (``hear-demo.toml``) and
``paper`` (``hear-paper.toml``); a path to any TOML file works too.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from jaxprobe.studies._config import ConfigError, given_keys as _given, merge_tables as _merge, read_toml

# the version of every stage's cache key: raising it recomputes recognisers, probes and listening
CACHE_VERSION = 1

HEAR_DEFAULTS: dict[str, Any] = {
    "name": "hear",
    "seed": 0,
    "data": {
        "source": "embedded",  # "embedded" or "librispeech" (LibriSpeech + MUSAN folders)
        "corpus_size": "default",  # embedded corpus: default | small | tiny
        "cache_dir": "",  # embedded corpus cache; empty = $JAXPROBE_CACHE/corpus or ~/.cache/jaxprobe/corpus
        "librispeech_train": "",  # e.g. .../LibriSpeech/train-clean-100
        "librispeech_dev": "",  # e.g. .../LibriSpeech/dev-clean (ASR held-out, probe validation)
        "librispeech_test": "",  # e.g. .../LibriSpeech/test-clean (the listening set)
        "musan": "",  # MUSAN root (its noise/ part is used)
        "window_seconds": 2.0,  # every item is one centred window of this length (zero-padded if shorter)
        "probe_train_utterances": 400,  # training utterances whose activations train the probes (0 = all)
        "probe_valid_utterances": 48,  # held-out utterances for the probes' early stopping
        "eval_per_speaker": 6,  # listening set: utterances per speaker (held out from ASR and probe training)
        "eval_speakers": 0,  # listening set: number of speakers (0 = all of the held-out split)
        "human_per_speaker": 6,  # embedded corpus: held-out human prompts per human speaker added to the listening
        # set and reported apart from the synthetic voices (0 = none, else >= 2; LibriSpeech: unused)
        "asr_held_out": 120,  # utterances for the recognisers' clean CER/WER (0 = the whole held-out split)
    },
    "conditions": {
        "snrs": [20.0, 10.0, 0.0],  # noisy listening conditions (dB); "clean" is always evaluated too
        "noises": [],  # noise types mixed into the listening set (round-robin over utterances); empty = all
    },
    "asr": {
        "models": ["vgg_lstm", "lstm"],
        "regimes": ["baseline", "robust"],
        "hidden": 64,  # LSTM units per direction
        "channels": [8, 8, 16, 16],  # VGG conv widths (the paper: 64 64 128 128)
        "batch_size": 8,
        "lr": 0.0,  # 0 = the model's measured default (torch_bridge.train_asr.DEFAULT_LR)
        "max_steps": 3000,
        "steps_per_model": {},  # per-model max_steps, e.g. {lstm = 2000} (pure-LSTM steps cost ~2x VGG-LSTM's)
        "max_minutes": 0.0,  # training-time budget per recogniser (0 = none; max_steps decides)
        "snr_range": [0.0, 20.0],  # robust regime: SNRs drawn uniformly from this range
        "p_noise": 0.8,  # robust regime: probability that a training utterance is noisy
        "workers": 2,  # recognisers (and the speaker model) trained in parallel processes
        "threads": 1,  # torch threads per worker
        "checkpoints": {},  # optional pre-trained recognisers: {"vgg_lstm-baseline" = "path/checkpoint.pt"}
    },
    "speaker": {
        "steps": 300,  # x-vector training steps on the training speakers
        "batch_size": 32,
        "checkpoint": "",  # optional pre-trained speaker model (xvector.pt)
        "trials_per_class": 0,  # 0 = every pair of the listening set; else that many target + non-target pairs
    },
    "probe": {
        "train_mix": "augmented",  # "augmented": probe inputs are noisy with probability p_noise; "clean"
        "p_noise": 0.5,
        "snr_range": [0.0, 20.0],
        "target": "input",  # "input": the log-mel the recogniser received; "clean": the clean log-mel
        "steps": 2000,
        "batch_blocks": 64,
        "learning_rate": 2e-3,
        "warmup_steps": 100,
        "eval_every": 100,
        "patience": 5,
        "n_highway": 4,
    },
    "listen": {
        "griffin_lim_iters": 32,
        "mel_inversion": "pinv",  # "pinv" (the paper) or "nnls"
        "wav_examples": 2,  # listening-set utterances whose reconstructions are written as wavs (> 0: also two
        # utterances of each of the first two speakers, and the listening test page built from them)
        "n_boot": 1000,  # bootstrap replicates (over utterances) for the STOI / L1 intervals
        "level": 0.95,
        "workers": 0,  # processes scoring PESQ beside the rest of the listening (0 = the cores the load leaves
        # idle, jaxprobe.studies._common.auto_workers; 1 = all in the main process); the numbers do not depend on it
    },
    "report": {
        "formats": ["png", "pdf"],
        "fig3_model": "vgg_lstm",
        "fig3_layers": ["blstm1", "blstm3", "blstm5"],
        "fig3_snr": 0.0,
    },
    "compute": {"devices": "1"},  # JAX devices for probe training: "1", "all" or a count
}

_CHOICES = {
    ("data", "source"): ("embedded", "librispeech"),
    ("data", "corpus_size"): ("default", "small", "tiny"),
    ("probe", "train_mix"): ("augmented", "clean"),
    ("probe", "target"): ("input", "clean"),
    ("listen", "mel_inversion"): ("pinv", "nnls"),
}
_SUBSETS = {
    ("asr", "models"): ("vgg_lstm", "lstm"),
    ("asr", "regimes"): ("baseline", "robust"),
    ("report", "formats"): ("png", "pdf"),
}
_INTS = {  # (section, key): lowest allowed value
    ("data", "probe_train_utterances"): 0, ("data", "probe_valid_utterances"): 1,
    ("data", "eval_per_speaker"): 2, ("data", "eval_speakers"): 0, ("data", "human_per_speaker"): 0, ("data", "asr_held_out"): 0,
    ("asr", "hidden"): 1, ("asr", "batch_size"): 1, ("asr", "max_steps"): 1, ("asr", "workers"): 1,
    ("asr", "threads"): 0, ("speaker", "steps"): 1, ("speaker", "batch_size"): 2,
    ("speaker", "trials_per_class"): 0, ("probe", "steps"): 1, ("probe", "batch_blocks"): 1,
    ("probe", "warmup_steps"): 0, ("probe", "eval_every"): 1, ("probe", "patience"): 1,
    ("probe", "n_highway"): 1, ("listen", "griffin_lim_iters"): 1, ("listen", "wav_examples"): 0,
    ("listen", "n_boot"): 1, ("listen", "workers"): 0,
}


def _fail(key: str, expected: str, got) -> ConfigError:
    return ConfigError(f"Configuration key '{key}' must be {expected}; got {got!r}.")


def _range(cfg: dict, sec: str, key: str, low: float, high: float) -> None:
    v = cfg[sec][key]
    if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) \
            or not low <= v[0] <= v[1] <= high:
        raise _fail(f"{sec}.{key}", f"[low, high] with {low} <= low <= high <= {high}", v)


def _validate(cfg: dict, given: frozenset = frozenset()) -> dict:
    for (sec, key), choices in _CHOICES.items():
        if cfg[sec][key] not in choices:
            raise _fail(f"{sec}.{key}", f"one of {list(choices)}", cfg[sec][key])
    for (sec, key), choices in _SUBSETS.items():
        vals = cfg[sec][key]
        if not vals or any(v not in choices for v in vals) or len(set(vals)) != len(vals):
            raise _fail(f"{sec}.{key}", f"a non-empty list of distinct values from {list(choices)}", vals)
    for (sec, key), low in _INTS.items():
        v = cfg[sec][key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise _fail(f"{sec}.{key}", f"an int >= {low}", v)
    d = cfg["data"]
    if d["human_per_speaker"] == 1:
        raise _fail("data.human_per_speaker", "0 (no human speakers) or an int >= 2 (verification needs two "
                    "utterances of a speaker)", 1)
    if not d["window_seconds"] >= 0.5:
        raise _fail("data.window_seconds", "a length in seconds >= 0.5 (STOI needs ~0.4 s of speech)", d["window_seconds"])
    if d["source"] == "librispeech":
        for k in ("librispeech_train", "librispeech_dev", "librispeech_test", "musan"):
            if not d[k]:
                raise ConfigError(f"Configuration key 'data.{k}' must name a folder when data.source = 'librispeech'.")
    snrs = cfg["conditions"]["snrs"]
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) for s in snrs) \
            or len(set(snrs)) != len(snrs):
        raise _fail("conditions.snrs", "a list of distinct SNRs in dB", snrs)
    cfg["conditions"]["snrs"] = [float(s) for s in snrs]
    a = cfg["asr"]
    if len(a["channels"]) != 4 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in a["channels"]):
        raise _fail("asr.channels", "four positive ints", a["channels"])
    for k in ("lr", "max_minutes"):
        if not a[k] >= 0:
            raise _fail(f"asr.{k}", "a number >= 0 (0 = default / none)", a[k])
    if not 0 <= a["p_noise"] <= 1:
        raise _fail("asr.p_noise", "a probability in [0, 1]", a["p_noise"])
    _range(cfg, "asr", "snr_range", -30.0, 60.0)
    for k, v in a["steps_per_model"].items():
        if k not in ("vgg_lstm", "lstm") or isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(f"asr.steps_per_model.{k}", "an int >= 1 under 'vgg_lstm' or 'lstm'", v)
    for k, path in a["checkpoints"].items():
        model, _, regime = k.partition("-")
        if model not in ("vgg_lstm", "lstm") or regime not in ("baseline", "robust") or not isinstance(path, str):
            raise _fail(f"asr.checkpoints.{k}", "a path string under a key like 'vgg_lstm-baseline'", path)
    p = cfg["probe"]
    if not 0 <= p["p_noise"] <= 1:
        raise _fail("probe.p_noise", "a probability in [0, 1]", p["p_noise"])
    _range(cfg, "probe", "snr_range", -30.0, 60.0)
    if not p["learning_rate"] > 0:
        raise _fail("probe.learning_rate", "a number > 0", p["learning_rate"])
    if not 0 < cfg["listen"]["level"] < 1:
        raise _fail("listen.level", "a number in (0, 1)", cfg["listen"]["level"])
    noises = cfg["conditions"]["noises"]
    if any(not isinstance(n, str) for n in noises) or len(set(noises)) != len(noises):
        raise _fail("conditions.noises", "a list of distinct noise-type names (empty = all)", noises)
    for k in ("window_seconds",):
        if not math.isfinite(d[k]):
            raise _fail(f"data.{k}", "a finite number", d[k])
    r = cfg["report"]
    if r["fig3_model"] not in ("vgg_lstm", "lstm"):
        raise _fail("report.fig3_model", "'vgg_lstm' or 'lstm'", r["fig3_model"])
    if "png" not in r["formats"]:
        raise _fail("report.formats", "a list that includes 'png' (the HTML report embeds it)", r["formats"])
    # given explicitly, Fig. 3's choices must exist (left out, the report picks what the run has)
    if "report.fig3_model" in given and r["fig3_model"] not in a["models"]:
        raise _fail("report.fig3_model", f"one of asr.models {a['models']}", r["fig3_model"])
    if "report.fig3_snr" in given and r["fig3_snr"] not in cfg["conditions"]["snrs"]:
        raise _fail("report.fig3_snr", f"one of conditions.snrs {cfg['conditions']['snrs']}", r["fig3_snr"])
    if not r["fig3_layers"] or any(not isinstance(x, str) for x in r["fig3_layers"]):
        raise _fail("report.fig3_layers", "a non-empty list of layer names", r["fig3_layers"])
    dev = cfg["compute"]["devices"]
    if dev != "all" and not (dev.isdigit() and int(dev) >= 1):
        raise _fail("compute.devices", "'all' or a device count >= 1", dev)
    return cfg


def _merge_loose(base: dict, over: dict, path: str) -> dict:
    """:func:`jaxprobe.studies._config.merge_tables`, except that free-form tables (empty-dict defaults such as
    ``asr.checkpoints``) accept any keys."""
    free = {k: over.pop(k) for k in list(over) if isinstance(base.get(k), dict) and not base[k]}
    nested = {k: over.pop(k) for k in list(over) if isinstance(base.get(k), dict) and base[k]}
    out = _merge(base, over, path)
    for k, v in free.items():
        if not isinstance(v, dict):
            raise ConfigError(f"Configuration key '{path + '.' if path else ''}{k}' must be a table; got {type(v).__name__}.")
        out[k] = dict(v)
    for k, v in nested.items():
        if not isinstance(v, dict):
            raise ConfigError(f"Configuration key '{path + '.' if path else ''}{k}' must be a table; got {type(v).__name__}.")
        out[k] = _merge_loose(base[k], dict(v), f"{path}.{k}" if path else k)
    return out


def shipped_config(name: str) -> Path | None:
    """``jaxprobe/configs/hear-<name>.toml`` (``name`` may carry the ``hear-`` prefix), if shipped."""
    stem = name if name.startswith("hear-") else f"hear-{name}"
    path = Path(__file__).resolve().parents[2] / "configs" / f"{stem}.toml"
    return path if path.is_file() else None


def load_hear_config(source: str | Path | dict | None = None, **overrides) -> dict:
    """Defaults <- TOML file (a path, or a shipped name: demo, paper) or dict <- overrides."""
    cfg = copy.deepcopy(HEAR_DEFAULTS)
    given: set[str] = set()
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            path = shipped_config(str(source))
            if path is None:
                raise ConfigError(f"Config file {str(source)!r} not found (shipped hear configs: demo, paper).")
        tables = read_toml(path)
        given = _given(tables)
        cfg = _merge_loose(cfg, tables, "")
    elif isinstance(source, dict):
        given = _given(source)
        cfg = _merge_loose(cfg, copy.deepcopy(source), "")
    elif source is not None:
        raise ConfigError(f"A hear config must be a path, a shipped name or a dict; got {type(source).__name__}.")
    for sec, vals in overrides.items():
        given |= _given({sec: vals})
        cfg = _merge_loose(cfg, {sec: copy.deepcopy(vals)}, "")
    return _validate(cfg, frozenset(given))
