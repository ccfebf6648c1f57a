"""The hear study's probes: the layers to probe, their activations and targets read from a
recogniser's activation stores, and the training of one Flax Highway probe per layer (stage 2)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from jaxprobe.studies._config import fingerprint
from jaxprobe.studies.hear.config import CACHE_VERSION

INPUT = "frontend.mel"  # the store's input log-mel layer (torch_bridge.models.asr.INPUT_LAYER)


def store_arrays(path: str, names):
    """The arrays ``names`` of a complete activation store and its items as (utterance id, condition dict)."""
    from torch_bridge.store import open_store

    store = open_store(path)
    store.require_complete()
    idx = store.index()
    items = [(str(u), dict(idx.conditions[c])) for u, c in zip(idx.utterance_ids(), idx.condition)]
    return {n: store.read(n) for n in names}, items


def mel_config(mel: dict):
    """The recogniser's log-mel settings (a store manifest's ``mel``) as a :class:`jaxprobe.audio.mel.MelConfig`."""
    from jaxprobe.audio.mel import MelConfig

    return MelConfig.from_settings(mel)


def clean_targets(items, data, cfg, mel_cfg):
    """Clean log-mel of every item's clean window (for probe.target = 'clean')."""
    import jax.numpy as jnp

    from jaxprobe.audio.mel import log_mel_spectrogram
    from torch_bridge.hear import item_audio

    from torch_bridge.dump import Item

    records = {r.id: r for r in data.probe_train + data.probe_valid + data.listen + data.listen_human}
    n = int(round(cfg["data"]["window_seconds"] * 16000))
    cleans = np.stack([item_audio(Item(c, u), records, data.noises["all"], n, cfg["seed"])[1] for u, c in items])
    return np.asarray(log_mel_spectrogram(jnp.asarray(cleans), mel_cfg))


def probe_layers(layers: list[dict]) -> list[dict]:
    return [entry for entry in layers if entry["name"] != INPUT]


def _probe_data(store_path, layers, cfg, data, mel_cfg):
    from jaxprobe.probe import probe_frames

    names = [e["name"] for e in layers]
    arrays, items = store_arrays(store_path, names + [INPUT])
    target = arrays[INPUT] if cfg["probe"]["target"] == "input" else clean_targets(items, data, cfg, mel_cfg)
    acts = {e["label"]: arrays[e["name"]] for e in layers}
    return probe_frames(acts, target.astype(np.float32), {e["label"]: int(e["r"]) for e in layers})


# ----------------------------------------------------------------------------- stage 2: probes
def train_layer_probes(job_result: dict, cfg: dict, data, out: Path, *, mesh=None):
    """Train the probes of every layer of one recogniser (cached, resumable)."""
    import jax

    from jaxprobe.probe import ProbeConfig, TrainConfig, train_probes

    p = cfg["probe"]
    layers = probe_layers(job_result["layers"])
    mel_cfg = mel_config(job_result["mel"])
    train = _probe_data(job_result["stores"]["train"], layers, cfg, data, mel_cfg)
    valid = _probe_data(job_result["stores"]["valid"], layers, cfg, data, mel_cfg)
    tcfg = TrainConfig(steps=p["steps"], batch_blocks=p["batch_blocks"], learning_rate=p["learning_rate"],
                       warmup_steps=min(p["warmup_steps"], p["steps"] - 1), eval_every=p["eval_every"],
                       patience=p["patience"])
    key = fingerprint({"job": Path(job_result["dir"]).name, "probe": p, "v": CACHE_VERSION})
    ckpt = out / "probes" / f"{Path(job_result['dir']).name}-{key[:10]}"
    t0 = time.perf_counter()
    kwargs = {"mesh": mesh} if mesh is not None else {}
    result = train_probes(train, key=jax.random.key(cfg["seed"]), valid=valid, config=tcfg,
                          probe=ProbeConfig(n_highway=p["n_highway"]), checkpoint_dir=ckpt, **kwargs)
    info = {"frames": int(train.n_blocks * train.block), "valid_frames": int(valid.n_blocks * valid.block),
            "steps": result.step, "stopped": result.stopped, "seconds": round(time.perf_counter() - t0, 1),
            "checkpoint": str(ckpt), "key": key,
            "valid_l1": result.history[-1].get("valid_l1", {}) if result.history else {}}
    return result, info

