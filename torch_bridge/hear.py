"""The torch side of `jaxprobe hear` (the ASR paper): data, recognisers, activation dumps, speakers.

Everything here is torch and audio; the probes, the listening (mel -> waveform, STOI) and the
statistics live in :mod:`jaxprobe.studies.hear`, which calls these functions through a lazy import.

Items. Every utterance the study touches is cut to one centred window of ``window_seconds``
(zero-padded when shorter), so that activation stores hold fixed-shape items. A noisy item mixes the
*whole* utterance with a noise at an SNR (:func:`torch_bridge.train_asr.add_noise`: plain power,
the same mixer the robust regime trains with) and then cuts the window, so the SNR is the
utterance's. Every random choice comes from :func:`torch_bridge.mixing.item_rng` of the ids, so an
item's audio does not depend on which other items exist or on their order.

Jobs. :func:`run_jobs` trains the recognisers (and the speaker model) in parallel worker processes
(``spawn``; one torch thread each by default) and, in the same worker right after training, dumps
the recogniser's activations of the probe-training, probe-validation and listening items into three
activation stores. Finished work is kept: a recogniser whose ``metrics.json`` matches its settings is
not retrained, a complete store is not re-dumped, and a killed run resumes (checkpoints and store
chunks are committed atomically).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
CLEAN = "clean"


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class HearData:
    """The utterance sets of one study (lists of AudioRecord) and its noises {name: 1-D array}."""

    train: list
    held_out: list  # ASR CER/WER (clean)
    probe_train: list
    probe_valid: list
    listen: list
    noises: dict
    description: str
    human: list = dataclasses.field(default_factory=list)  # held-out human speech (the embedded corpus's prompts)
    listen_human: list = dataclasses.field(default_factory=list)  # the human part of the listening set (from human)


def by_speaker(records, per_speaker: int, n_speakers: int = 0, skip: set | None = None) -> list:
    """Deterministic selection: ``per_speaker`` utterances (sorted ids) of the first ``n_speakers``
    speakers (sorted; 0 = all), leaving out ids in ``skip``."""
    groups: dict[str, list] = {}
    for r in sorted(records, key=lambda r: r.id):
        if skip and r.id in skip:
            continue
        groups.setdefault(str(r.speaker), []).append(r)
    speakers = sorted(groups)[: n_speakers or None]
    return [r for s in speakers for r in groups[s][:per_speaker]]


def _spread(records, n: int) -> list:
    """``n`` records spread evenly over ``records`` sorted by id (0 = all)."""
    recs = sorted(records, key=lambda r: r.id)
    if not n or n >= len(recs):
        return recs
    idx = np.linspace(0, len(recs) - 1, n).round().astype(int)
    return [recs[i] for i in sorted(set(idx.tolist()))]


def load_hear_data(d: Mapping[str, Any], noise_names: Sequence[str] = (), log: Callable[[str], None] | None = None) -> HearData:
    """The study's utterance sets from the ``data`` settings of a hear config.

    Embedded corpus: recognisers and the speaker model train on 'train'; the ASR held-out set, the
    probes' validation set and the listening set are disjoint parts of 'dev' (the training voices,
    unseen sentences). LibriSpeech: train-clean-100 / dev-clean / test-clean (the paper's split;
    test-clean speakers are unseen by every model), MUSAN noise.
    """
    if d["source"] == "embedded":
        from .corpus import load_corpus

        corpus = load_corpus(d["cache_dir"] or None, size=d["corpus_size"], log=log)
        train, dev = corpus.split("train"), corpus.split("dev")
        noises = {k: r.waveform for k, r in corpus.noises.items()}
        desc = f"embedded corpus ({d['corpus_size']}, {corpus.root})"
        listen = by_speaker(dev, d["eval_per_speaker"], d["eval_speakers"])
        rest = [r for r in dev if r.id not in {u.id for u in listen}]
        valid = _spread(rest, d["probe_valid_utterances"])
        held_pool = rest
        human = list(corpus.real_speech)
        # the human speakers of the listening set, reported apart from the synthetic voices
        listen_human = by_speaker(human, d["human_per_speaker"]) if d["human_per_speaker"] else []
    else:
        from .data import LibriSpeech, Musan

        train = list(LibriSpeech(d["librispeech_train"]))
        dev = list(LibriSpeech(d["librispeech_dev"]))
        test = list(LibriSpeech(d["librispeech_test"]))
        noises = {r.id: r.waveform for r in Musan(d["musan"])}
        desc = (f"LibriSpeech {d['librispeech_train']} / {d['librispeech_dev']} / {d['librispeech_test']}"
                f" + MUSAN {d['musan']}")
        listen = by_speaker(test, d["eval_per_speaker"], d["eval_speakers"])
        valid = _spread(dev, d["probe_valid_utterances"])
        held_pool = dev
        human = []  # LibriSpeech is human speech throughout: the listening set itself
        listen_human = []
    if noise_names:
        unknown = [n for n in noise_names if n not in noises]
        if unknown:
            raise ValueError(f"Unknown noise type(s) {unknown} in conditions.noises; available: {sorted(noises)}.")
        listen_noises = {n: noises[n] for n in noise_names}
    else:
        listen_noises = dict(sorted(noises.items()))
    held = _spread(held_pool, d["asr_held_out"])
    probe_train = _spread(train, d["probe_train_utterances"])
    if len({str(r.speaker) for r in listen}) < 2:
        raise ValueError("The listening set needs utterances of at least 2 speakers for speaker verification; "
                         "raise data.eval_speakers or use a larger corpus.")
    return HearData(train=train, held_out=held, probe_train=probe_train, probe_valid=valid, listen=listen,
                    noises={"all": noises, "listen": listen_noises}, description=desc, human=human,
                    listen_human=listen_human)


# ----------------------------------------------------------------------------- items
def window(x: np.ndarray, n: int) -> np.ndarray:
    """The centred window of ``n`` samples (zero-padded on both sides when shorter)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] >= n:
        s = (x.shape[0] - n) // 2
        return x[s:s + n]
    left = (n - x.shape[0]) // 2
    return np.pad(x, (left, n - x.shape[0] - left))


def listening_conditions(snrs: Sequence[float]) -> list[str]:
    """Condition labels: 'clean' then the SNRs as written ('20', '0', '-5', '2.5')."""
    return [CLEAN] + [snr_label(s) for s in snrs]


def snr_label(snr: float) -> str:
    return f"{float(snr):g}"


def listen_items(records, snrs: Sequence[float], noise_names: Sequence[str]):
    """Items of the listening set: every utterance clean and at every SNR; utterance k gets noise
    type ``noise_names[k % K]`` (the same at every SNR, so SNR is the only thing that changes)."""
    from .dump import Item

    items = []
    for k, r in enumerate(records):
        items.append(Item({"condition": CLEAN}, r.id))
        nz = noise_names[k % len(noise_names)]
        for s in snrs:
            items.append(Item({"condition": snr_label(s), "noise": nz, "snr": float(s)}, r.id))
    return items


def training_items(records, noise_names: Sequence[str], *, p_noise: float, snr_range, seed: int, tag: str):
    """Probe-training (or validation) items: each utterance once, noisy with probability
    ``p_noise`` (random noise type and SNR in ``snr_range``), drawn from ids, not order."""
    from .dump import Item
    from .mixing import item_rng

    items = []
    for r in records:
        rng = item_rng(tag, r.id, seed=seed)
        if rng.random() < p_noise:
            nz = noise_names[int(rng.integers(0, len(noise_names)))]
            s = round(float(rng.uniform(*snr_range)), 3)
            items.append(Item({"condition": "noisy", "noise": nz, "snr": s}, r.id))
        else:
            items.append(Item({"condition": CLEAN}, r.id))
    return items


def item_audio(item, records: Mapping[str, Any], noises: Mapping[str, np.ndarray], n: int, seed: int):
    """(noisy window, clean window) of an item."""
    from .mixing import item_rng
    from .train_asr import add_noise

    clean = records[item.utterance].waveform
    cond = dict(item.condition)
    if cond["condition"] == CLEAN:
        w = window(clean, n)
        return w, w
    rng = item_rng(item.utterance, cond["noise"], cond["snr"], seed=seed)
    mix = add_noise(clean, noises[cond["noise"]], cond["snr"], rng=rng)
    return window(mix, n), window(clean, n)


# ----------------------------------------------------------------------------- jobs
def _json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def recogniser_job(job: Mapping[str, Any]) -> dict:
    """Train (or reuse) one recogniser, measure its CER/WER clean and per listening condition,
    and dump its activations of the probe and listening items. Runs in a worker process."""
    import torch

    from .dump import dump
    from .models.asr import AsrConfig, asr_dump_spec
    from .train_asr import TrainConfig, evaluate_asr, load_recogniser, train_asr

    cfg, out = job["cfg"], Path(job["dir"])
    out.mkdir(parents=True, exist_ok=True)
    threads = int(job["threads"]) or None  # 0: torch's default
    if threads:
        torch.set_num_threads(threads)
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    a = cfg["asr"]
    asr_cfg = AsrConfig(model=job["model"], hidden=a["hidden"], channels=tuple(a["channels"]))
    tcfg = TrainConfig(regime=job["regime"], batch_size=a["batch_size"], lr=a["lr"] or None,
                       max_steps=a["steps_per_model"].get(job["model"], a["max_steps"]),
                       max_minutes=a["max_minutes"] or None, snr_range=tuple(a["snr_range"]), p_noise=a["p_noise"],
                       seed=cfg["seed"], threads=threads)
    metrics_path = out / "metrics.json"
    given = job.get("checkpoint")
    if given:
        model = load_recogniser(given)
        metrics = {"model": job["model"], "regime": job["regime"], "checkpoint": str(given), "pretrained": True}
        metrics.update({k: v for k, v in evaluate_asr(model, data.held_out).items() if k != "examples"})
    elif metrics_path.is_file() and json.loads(metrics_path.read_text()).get("job_key") == job["key"]:
        model = load_recogniser(out)
        metrics = json.loads(metrics_path.read_text())
    else:
        noises = list(data.noises["all"].values())
        res = train_asr(data.train, data.held_out, out, asr_config=asr_cfg, config=tcfg, noises=noises,
                        progress=False, log=None)
        model = res.model
        metrics = {k: v for k, v in res.metrics.items() if k != "examples"}
    model.eval()
    # CER/WER on the listening utterances (whole utterances) in every condition
    per_cond = {}
    names = list(data.noises["listen"])
    for cond in listening_conditions(cfg["conditions"]["snrs"]):
        waves = []
        for k, r in enumerate(data.listen):
            if cond == CLEAN:
                waves.append(r.waveform)
            else:
                from .mixing import item_rng
                from .train_asr import add_noise

                nz, s = names[k % len(names)], float(cond)
                rng = item_rng(r.id, nz, s, seed=cfg["seed"])
                waves.append(add_noise(r.waveform, data.noises["listen"][nz], s, rng=rng))
        m = evaluate_asr(model, data.listen, waveforms=waves)
        per_cond[cond] = {"cer": m["cer"], "wer": m["wer"]}
    metrics["listen"] = per_cond
    metrics["job_key"] = job["key"]
    metrics["n_params"] = int(sum(p.numel() for p in model.parameters()))
    _json(metrics_path, metrics)
    # activation stores
    layers, pooling = asr_dump_spec(model)
    n = int(round(cfg["data"]["window_seconds"] * SAMPLE_RATE))
    p = cfg["probe"]
    sets = {
        "train": (data.probe_train, training_items(data.probe_train, list(data.noises["all"]),
                                                  p_noise=p["p_noise"] if p["train_mix"] == "augmented" else 0.0,
                                                  snr_range=p["snr_range"], seed=cfg["seed"], tag="probe-train")),
        "valid": (data.probe_valid, training_items(data.probe_valid, list(data.noises["all"]),
                                                  p_noise=p["p_noise"] if p["train_mix"] == "augmented" else 0.0,
                                                  snr_range=p["snr_range"], seed=cfg["seed"], tag="probe-valid")),
        "listen": (data.listen, listen_items(data.listen, cfg["conditions"]["snrs"], names)),
    }
    if data.listen_human:  # the human speakers, in the same conditions (no CER: the prompts are in 5 languages)
        sets[f"listen-human-{len(data.listen_human)}"] = (data.listen_human, listen_items(data.listen_human, cfg["conditions"]["snrs"], names))
    stores = {}
    for name, (records, items) in sets.items():
        by_id = {r.id: r for r in records}
        noises_all = data.noises["all"]

        def load(item, by_id=by_id, noises_all=noises_all):
            noisy, _ = item_audio(item, by_id, noises_all, n, cfg["seed"])
            return noisy, {}

        store = out / f"store-{name}"
        dump(model, layers, items, load, str(store), pooling=pooling, batch_size=8, chunk_size=64,
             model_info={"class": "CTCRecogniser", "model": job["model"], "regime": job["regime"],
                         "asr_config": asr_cfg.to_dict(), "mel": asr_cfg.mel_settings()},
             extra={"window_samples": n, "set": name}, threads=threads, progress=False)
        stores["listen_human" if name.startswith("listen-human") else name] = str(store)
    return {"model": job["model"], "regime": job["regime"], "dir": str(out), "metrics": metrics, "stores": stores,
            "layers": layers, "mel": asr_cfg.mel_settings()}


def speaker_job(job: Mapping[str, Any]) -> dict:
    """Train (or reuse) the x-vector speaker model on the training speakers; its clean EER on the
    listening set (whole utterances and the study's windows) is measured in the study."""
    import torch

    from .models.speaker import load_speaker_model, train_speaker_model

    cfg, out = job["cfg"], Path(job["dir"])
    out.mkdir(parents=True, exist_ok=True)
    if int(job["threads"]):
        torch.set_num_threads(int(job["threads"]))
    s = cfg["speaker"]
    if s["checkpoint"]:
        load_speaker_model(s["checkpoint"])
        return {"path": s["checkpoint"], "pretrained": True}
    path = out / "xvector.pt"
    meta = out / "meta.json"
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()).get("job_key") == job["key"]:
        return {"path": str(path), **json.loads(meta.read_text())}
    path.unlink(missing_ok=True)
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    import time

    t0 = time.monotonic()
    model = train_speaker_model(data.train, steps=s["steps"], batch_size=s["batch_size"], seed=cfg["seed"],
                                crop_seconds=min(2.0, cfg["data"]["window_seconds"]), out=path)
    info = {"job_key": job["key"], "steps": s["steps"], "speakers": model.speakers,
            "train_seconds": round(time.monotonic() - t0, 1)}
    _json(meta, info)
    return {"path": str(path), **info}


def _run(job):
    return (speaker_job if job["kind"] == "speaker" else recogniser_job)(job)


def run_jobs(jobs: Sequence[Mapping[str, Any]], *, workers: int = 1, log: Callable[[str], None] | None = None) -> list:
    """Run jobs (dicts with ``kind`` 'recogniser' or 'speaker') in ``workers`` spawned processes
    (in this process when ``workers == 1``); results in job order. A failed job raises after the
    others have finished, so their work is kept."""
    say = log or (lambda s: None)
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for j in jobs:
            say(f"{j['label']}: started")
            out.append(_run(j))
            say(f"{j['label']}: done")
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: list = [None] * len(jobs)
    errors = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_run, j): i for i, j in enumerate(jobs)}
        for f in as_completed(futs):
            i = futs[f]
            try:
                results[i] = f.result()
                say(f"{jobs[i]['label']}: done")
            except Exception as exc:  # keep the others' work, then report
                errors.append((jobs[i]["label"], exc))
                say(f"{jobs[i]['label']}: FAILED: {exc}")
    if errors:
        label, exc = errors[0]
        raise RuntimeError(f"{len(errors)} training job(s) failed; first: {label}: {exc}") from exc
    return results


# ----------------------------------------------------------------------------- speakers
@functools.lru_cache(maxsize=2)
def _speaker_model(path: str):
    """The speaker model at ``path``, loaded once per process (the study embeds every layer's audio)."""
    from .models.speaker import load_speaker_model

    return load_speaker_model(path)


def speaker_embeddings(path: str, waveforms: Sequence[np.ndarray], *, threads: int = 1) -> np.ndarray:
    """x-vector embeddings (n, e) of 16 kHz waveforms with the model saved at ``path``."""
    import torch

    from .models.speaker import speaker_embeddings as _emb

    old = torch.get_num_threads()
    torch.set_num_threads(max(threads, 1))
    try:
        return _emb(_speaker_model(str(path)), list(waveforms), batch_size=32)
    finally:
        torch.set_num_threads(old)


@functools.lru_cache(maxsize=1)
def _judge():
    from .models.ge2e import GE2EJudge

    return GE2EJudge()


def judge_info() -> dict:
    """Name, source, training data, licence and architecture of the study's pretrained judge."""
    from .models.ge2e import INFO

    return dict(INFO)


def judge_embeddings(waveforms: Sequence[np.ndarray], *, threads: int = 1) -> np.ndarray:
    """Embeddings (n, 256) of 16 kHz waveforms by the pretrained GE2E judge (Resemblyzer's weights)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(threads, 1))
    try:
        return _judge().embed(list(waveforms))
    finally:
        torch.set_num_threads(old)
