"""`jaxprobe hear`: what does a layer hear? (the ASR paper, end to end).

Stages, each cached in the output folder under a key of the settings it depends on, so a re-run
recomputes only what changed and a killed run resumes:

1. train + dump  (torch, :mod:`torch_bridge.hear`, parallel worker processes)
   four CTC recognisers (VGG-LSTM and pure-LSTM, baseline and robust) and an x-vector speaker
   model on the training speakers; CER/WER clean and in every listening condition; activations
   of every mapped layer (and the input log-mel) for the probe-training, probe-validation and
   listening items, in activation stores.
2. probes  (JAX) one Flax Highway probe per layer, all layers of a recogniser trained in one
   jitted step (:func:`jaxprobe.probe.train_probes`), early stopping on held-out L1, orbax
   checkpoints that resume exactly.
3. listen  (JAX + the torch speaker model) per layer and condition: probe output -> L1 against
   the target mel; mel -> linear (pseudo-inverse) -> Griffin-Lim -> waveform; STOI and wide-band
   PESQ against the clean window (items PESQ cannot score are counted and excluded); embeddings of the
   pretrained GE2E judge (Resemblyzer's weights; the x-vector trained here is a second judge) -> verification EER and normalised minDCF at P_target 0.01
   and 0.001 (intervals: utterances resampled, ``jaxprobe.bootstrap_eer`` / ``bootstrap_min_dcf``,
   the same resamples); wavs of a few utterances. The listening set has two parts, measured and
   reported apart: the synthetic voices (``probe``, ``reference``, ``contrasts``) and, for the
   embedded corpus, its held-out human speakers (``probe_human``, ``reference_human``,
   ``contrasts_human``; :data:`HUMAN_NOTE` says how to read them).
4. report  results.json, CSV tables, figures (Table 2, Figs. 2-4), report.md, report.html.

Two reference rows frame every layer's numbers: "audio" (the waveform the recogniser heard,
scored directly) and "mel" (Griffin-Lim from the recogniser's own input log-mel: the best any
probe can do through this vocoder).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from jaxprobe.studies._config import fingerprint
from jaxprobe.distributed import mesh_from_config
from jaxprobe.studies._common import atomic_json as _atomic_json
from jaxprobe.studies._common import locks_output_folder
from jaxprobe.studies._common import enable_compilation_cache, stage_logger
from jaxprobe.studies.hear_config import load_hear_config

CLEAN = "clean"
INPUT = "frontend.mel"  # the store's input log-mel layer (torch_bridge.models.asr.INPUT_LAYER)
REFERENCES = ("audio", "mel")
_VERSION = 1
_LISTEN_VERSION = 7  # 2: EER intervals, 3: embeddings kept for paired EER contrasts, 4: minDCF, 5: PESQ,
# 6: the pretrained GE2E judge (x-vector second), 7: wavs of the listening test's utterances
# (older caches are recomputed)


_log = stage_logger("hear")


# ----------------------------------------------------------------------------- stage 1: jobs
def _data_key(cfg) -> dict:
    # human_per_speaker only adds the human listening store (named by its size), so it retrains nothing
    data = {k: v for k, v in cfg["data"].items() if k != "human_per_speaker"}
    return {"data": data, "seed": cfg["seed"], "noises": cfg["conditions"]["noises"]}


def plan_jobs(cfg: dict, out: Path) -> list[dict]:
    """The speaker job and one job per (model, regime), each with a settings key and a folder."""
    a = cfg["asr"]
    asr_key = {k: a[k] for k in ("hidden", "channels", "batch_size", "lr", "max_minutes", "snr_range", "p_noise")}
    dump_key = {"probe": {k: cfg["probe"][k] for k in ("train_mix", "p_noise", "snr_range")},
                "snrs": cfg["conditions"]["snrs"]}
    spk_key = fingerprint({"speaker": {k: cfg["speaker"][k] for k in ("steps", "batch_size")}, **_data_key(cfg)})
    jobs = [{"kind": "speaker", "label": "speaker model", "cfg": cfg, "threads": a["threads"],
             "dir": str(out / "speaker" / spk_key[:10]), "key": spk_key}]
    for model in a["models"]:
        for regime in a["regimes"]:
            tag = f"{model}-{regime}"
            ckpt = a["checkpoints"].get(tag, "")
            steps = a["steps_per_model"].get(model, a["max_steps"])
            from torch_bridge.train_asr import DEFAULT_LR

            lr = a["lr"] or DEFAULT_LR[model]  # the rate actually used, so a changed default retrains
            key = fingerprint({"model": model, "regime": regime, "asr": asr_key, "max_steps": steps, "lr_used": lr, "checkpoint": ckpt,
                               "dump": dump_key, **_data_key(cfg), "v": _VERSION})
            jobs.append({"kind": "recogniser", "label": tag, "model": model, "regime": regime, "cfg": cfg,
                         "threads": a["threads"], "checkpoint": ckpt, "dir": str(out / "recognisers" / f"{tag}-{key[:10]}"),
                         "key": key})
    return jobs


# ----------------------------------------------------------------------------- helpers
def _store_arrays(path: str, names):
    from torch_bridge.store import open_store

    store = open_store(path)
    store.require_complete()
    idx = store.index()
    items = [(str(u), dict(idx.conditions[c])) for u, c in zip(idx.utterance_ids(), idx.condition)]
    return {n: store.read(n) for n in names}, items


def _mel_config(mel: dict):
    from jaxprobe.audio.mel import MelConfig

    return MelConfig.from_settings(mel)


def _clean_targets(items, data, cfg, mel_cfg):
    """Clean log-mel of every item's clean window (for probe.target = 'clean')."""
    import jax.numpy as jnp

    from jaxprobe.audio.mel import log_mel_spectrogram
    from torch_bridge.hear import item_audio

    from torch_bridge.dump import Item

    records = {r.id: r for r in data.probe_train + data.probe_valid + data.listen + data.listen_human}
    n = int(round(cfg["data"]["window_seconds"] * 16000))
    cleans = np.stack([item_audio(Item(c, u), records, data.noises["all"], n, cfg["seed"])[1] for u, c in items])
    return np.asarray(log_mel_spectrogram(jnp.asarray(cleans), mel_cfg))


def _probe_layers(layers: list[dict]) -> list[dict]:
    return [entry for entry in layers if entry["name"] != INPUT]


def _probe_data(store_path, layers, cfg, data, mel_cfg):
    from jaxprobe.probe import probe_frames

    names = [e["name"] for e in layers]
    arrays, items = _store_arrays(store_path, names + [INPUT])
    target = arrays[INPUT] if cfg["probe"]["target"] == "input" else _clean_targets(items, data, cfg, mel_cfg)
    acts = {e["label"]: arrays[e["name"]] for e in layers}
    return probe_frames(acts, target.astype(np.float32), {e["label"]: int(e["r"]) for e in layers})


# ----------------------------------------------------------------------------- stage 2: probes
def train_layer_probes(job_result: dict, cfg: dict, data, out: Path, *, mesh=None):
    """Train the probes of every layer of one recogniser (cached, resumable)."""
    import jax

    from jaxprobe.probe import ProbeConfig, TrainConfig, train_probes

    p = cfg["probe"]
    layers = _probe_layers(job_result["layers"])
    mel_cfg = _mel_config(job_result["mel"])
    train = _probe_data(job_result["stores"]["train"], layers, cfg, data, mel_cfg)
    valid = _probe_data(job_result["stores"]["valid"], layers, cfg, data, mel_cfg)
    tcfg = TrainConfig(steps=p["steps"], batch_blocks=p["batch_blocks"], learning_rate=p["learning_rate"],
                       warmup_steps=min(p["warmup_steps"], p["steps"] - 1), eval_every=p["eval_every"],
                       patience=p["patience"])
    key = fingerprint({"job": Path(job_result["dir"]).name, "probe": p, "v": _VERSION})
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


# ----------------------------------------------------------------------------- stage 3: listen
def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))


def _waveforms(logmel: np.ndarray, mel_cfg, cfg, n: int) -> np.ndarray:
    from jaxprobe.audio.griffinlim import mel_to_waveform

    lst = cfg["listen"]
    out = np.empty((logmel.shape[0], n), np.float32)
    for sl in _chunks(logmel.shape[0], 64):
        out[sl] = np.asarray(mel_to_waveform(logmel[sl], mel_cfg, method=lst["mel_inversion"],
                                             n_iter=lst["griffin_lim_iters"], length=n))
    return out


def _eer_boot(embs: list, speakers: list, key_int: int, cfg):
    """EERs of the verification trials among utterances, one per embedding set in ``embs``
    (the same utterances through different systems), bootstrapped together by resampling
    utterances (trials share utterances; see ``jaxprobe.bootstrap_eer``). Returns
    (estimates (k,) in %, the BootstrapResult in fractions, or None when too few resamples
    keep both trial classes, as in tiny sets)."""
    import jax

    from jaxprobe.bootstrap import TooFewResamplesError, bootstrap_eer
    from jaxprobe.stats import eer
    from torch_bridge.verification import cosine_scores, verification_trials

    lst = cfg["listen"]
    trials = cfg["speaker"]["trials_per_class"] or None
    pairs, labels = verification_trials(speakers, n_per_class=trials, seed=cfg["seed"])
    scores = np.stack([cosine_scores(e, pairs) for e in embs])
    try:
        r = bootstrap_eer(scores, labels, pairs, n_items=len(speakers), n_boot=lst["n_boot"], level=lst["level"],
                          key=jax.random.fold_in(jax.random.key(cfg["seed"]), key_int))
    except TooFewResamplesError:
        return 100.0 * np.array([float(eer(sc, labels)) for sc in scores]), None
    return 100.0 * np.asarray(r.estimate, np.float64), r


def _eer_ci(emb: np.ndarray, speakers: list, key_int: int, cfg) -> tuple[float, float | None, float | None]:
    """One system's EER (%) with its percentile interval (None, None for tiny sets)."""
    est, r = _eer_boot([emb], speakers, key_int, cfg)
    if r is None:
        return float(est[0]), None, None
    return float(est[0]), 100.0 * float(r.low[0]), 100.0 * float(r.high[0])


def dcf_key(p: float) -> str:
    """The record key of the minDCF at prior ``p`` ('min_dcf_0.01')."""
    return f"min_dcf_{p:g}"


def _min_dcf_ci(emb: np.ndarray, speakers: list, key_int: int, cfg) -> dict:
    """One system's normalised minDCF at each prior in ``jaxprobe.stats.P_TARGETS`` (C_miss = C_fa = 1)
    with percentile intervals from the same utterance resamples as its EER (``key_int`` as given to
    :func:`_eer_ci`); intervals None for tiny sets. Keys 'min_dcf_0.01', 'min_dcf_0.01_low', ..."""
    import jax

    from jaxprobe.bootstrap import TooFewResamplesError, bootstrap_min_dcf
    from jaxprobe.stats import P_TARGETS, min_dcf
    from torch_bridge.verification import cosine_scores, verification_trials

    lst = cfg["listen"]
    trials = cfg["speaker"]["trials_per_class"] or None
    pairs, labels = verification_trials(speakers, n_per_class=trials, seed=cfg["seed"])
    scores = cosine_scores(emb, pairs)
    try:
        r = bootstrap_min_dcf(scores, labels, pairs, p_target=P_TARGETS, n_items=len(speakers), n_boot=lst["n_boot"],
                              level=lst["level"], key=jax.random.fold_in(jax.random.key(cfg["seed"]), key_int))
        est, lo, hi = (np.asarray(a, np.float64) for a in (r.estimate, r.low, r.high))
    except TooFewResamplesError:
        est, lo, hi = np.asarray(min_dcf(scores, labels, P_TARGETS), np.float64), None, None
    out = {}
    for k, p in enumerate(P_TARGETS):
        out[dcf_key(p)] = float(est[k])
        out[dcf_key(p) + "_low"] = None if lo is None else float(lo[k])
        out[dcf_key(p) + "_high"] = None if hi is None else float(hi[k])
    return out


def _ci_mean(values: np.ndarray, key_int: int, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over items (last axis) with percentile bootstrap intervals over utterances."""
    import jax

    from jaxprobe.bootstrap import bootstrap_mean

    lst = cfg["listen"]
    r = bootstrap_mean(values, key=jax.random.fold_in(jax.random.key(cfg["seed"]), key_int),
                       n_boot=lst["n_boot"], level=lst["level"])
    return np.asarray(r.estimate), np.asarray(r.low), np.asarray(r.high)


def _pesq_ci(scores: np.ndarray, key_int: int, cfg) -> dict:
    """Mean wide-band PESQ over the items PESQ could score (NaN = excluded), with its percentile
    interval over utterances and the number excluded; None where fewer than 2 items remain."""
    ok = np.isfinite(scores)
    rec = {"pesq": None, "pesq_low": None, "pesq_high": None, "pesq_excluded": int((~ok).sum())}
    if ok.sum() >= 2:
        e, lo, hi = _ci_mean(scores[ok], key_int, cfg)
        rec.update(pesq=float(e), pesq_low=float(lo), pesq_high=float(hi))
    return rec


PARTS = ("synthetic", "human")  # the listening set's two parts, reported apart
HUMAN_NOTE = (
    "The recognisers, their probes and the x-vector were trained on synthetic English voices only; the human "
    "speakers (studio prompts, five languages) are outside everything they learned. The human rows therefore "
    "measure what layers keep of voices unlike any in training, read through probes fitted to synthetic-voice "
    "activations: a high EER or a low STOI there mixes what the layer discarded with how badly the recogniser and "
    "its probe generalise, so they are not comparable one to one with the synthetic rows (only the pretrained "
    "judge, trained on real human speech, is in its own domain there).")


def _part_suffix(part: str) -> str:
    """'' for the synthetic voices (the original file names), '-human' for the human speakers."""
    if part not in PARTS:
        raise ValueError(f"The 'part' parameter must be one of {list(PARTS)}; got {part!r}.")
    return "" if part == "synthetic" else f"-{part}"


def listen(job_result: dict, probes, cfg: dict, data, speaker_path: str, out: Path, *, part: str = "synthetic") -> dict:
    """Every layer's reconstructions of the listening set, measured (see the module docstring).
    ``part``: 'synthetic' (the listening voices; wavs/, listen/<tag>-items.npz) or 'human' (the
    held-out human speakers, ``data.listen_human``; wavs-human/, listen/<tag>-human-items.npz)."""
    import jax.numpy as jnp

    from jaxprobe.audio.pesq import wideband_pesq
    from jaxprobe.audio._stoi import stoi
    from torch_bridge.dump import Item
    from torch_bridge.hear import item_audio, judge_embeddings, listening_conditions, speaker_embeddings

    tag = f"{job_result['model']}-{job_result['regime']}"
    layers = _probe_layers(job_result["layers"])
    mel_cfg = _mel_config(job_result["mel"])
    names = [e["name"] for e in layers]
    sfx = _part_suffix(part)
    listen_set = data.listen if part == "synthetic" else data.listen_human
    arrays, items = _store_arrays(job_result["stores"]["listen" if part == "synthetic" else "listen_human"],
                                  names + [INPUT])
    n = int(round(cfg["data"]["window_seconds"] * 16000))
    records = {r.id: r for r in listen_set}
    audio = [item_audio(Item(c, u), records, data.noises["all"], n, cfg["seed"]) for u, c in items]
    noisy_w = np.stack([a[0] for a in audio])
    clean_w = np.stack([a[1] for a in audio])
    mel_in = arrays[INPUT].astype(np.float32)
    target = mel_in if cfg["probe"]["target"] == "input" else _clean_targets(items, data, cfg, mel_cfg)
    T = mel_in.shape[1]
    conds = listening_conditions(cfg["conditions"]["snrs"])
    cond_of = np.array([c["condition"] for _, c in items])
    utt_of = np.array([u for u, _ in items])
    spk = {r.id: str(r.speaker) for r in listen_set}
    by_spk: dict[str, list[str]] = {}
    for r in listen_set:
        by_spk.setdefault(str(r.speaker), []).append(r.id)
    if part == "synthetic":
        examples = [r.id for r in listen_set[: cfg["listen"]["wav_examples"]]]
        if examples:  # and the listening test's: two utterances of each of the first two speakers (triplets)
            examples += [u for s in list(by_spk)[:2] for u in by_spk[s][:2] if u not in examples]
    else:  # one utterance of each of the first wav_examples human speakers
        examples = [by_spk[s][0] for s in list(by_spk)[: cfg["listen"]["wav_examples"]]]
    ex_dir = out / ("wavs" + sfx) / tag
    mels_for_fig: dict[str, np.ndarray] = {}

    per_item: dict[str, np.ndarray] = {}

    def measure(label: str, wav: np.ndarray, mel: np.ndarray | None, key_int: int) -> list[dict]:
        st = stoi(clean_w, wav)
        per_item[f"stoi|{label}"] = st
        pq = wideband_pesq(clean_w, wav)
        per_item[f"pesq|{label}"] = pq.scores
        if pq.n_excluded:  # reported, never silent: the records count them per condition
            reasons = sorted({r.split(":", 1)[0] for r in pq.failures.values()})
            _log(f"{tag} {label}: PESQ could not score {pq.n_excluded} of {len(wav)} items ({', '.join(reasons)}); "
                 "excluded from the PESQ means")
        threads = max(cfg["asr"]["threads"], 1)
        emb = judge_embeddings(list(wav), threads=threads)  # the pretrained judge: 'eer', 'min_dcf_*'
        per_item[f"emb|{label}"] = emb
        xemb = speaker_embeddings(speaker_path, list(wav), threads=threads)  # the second judge: 'eer_xvector'
        per_item[f"xemb|{label}"] = xemb
        recs = []
        for ci, cond in enumerate(conds):
            sel = np.flatnonzero(cond_of == cond)
            order = sel[np.argsort(utt_of[sel])]
            e_est, e_lo, e_hi = _eer_ci(emb[order], [spk[u] for u in utt_of[order]], key_int * 97 + ci + 25, cfg)
            x_est, x_lo, x_hi = _eer_ci(xemb[order], [spk[u] for u in utt_of[order]], key_int * 97 + ci + 25, cfg)
            s_est, s_lo, s_hi = _ci_mean(st[order], key_int * 97 + ci, cfg)
            rec = {"layer": label, "condition": cond, "snr": None if cond == CLEAN else float(cond),
                   "eer": e_est, "eer_low": e_lo, "eer_high": e_hi,
                   "eer_xvector": x_est, "eer_xvector_low": x_lo, "eer_xvector_high": x_hi,
                   **_min_dcf_ci(emb[order], [spk[u] for u in utt_of[order]], key_int * 97 + ci + 25, cfg),
                   "stoi": float(s_est), "stoi_low": float(s_lo), "stoi_high": float(s_hi),
                   **_pesq_ci(pq.scores[order], key_int * 97 + ci + 75, cfg),
                   "n_items": int(order.size)}
            if mel is not None:
                l1 = np.mean(np.abs(mel[order] - target[order]), axis=(1, 2))
                e, lo, hi = _ci_mean(l1, key_int * 97 + ci + 50, cfg)
                rec.update(l1=float(e), l1_low=float(lo), l1_high=float(hi))
            recs.append(rec)
        return recs

    def save_examples(label: str, wav: np.ndarray) -> None:
        import soundfile as sf

        for i, (u, c) in enumerate(items):
            if u in examples:
                p = ex_dir / c["condition"] / f"{u}_{label}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_name(f".{p.name}.tmp.wav")
                peak = float(np.max(np.abs(wav[i]))) or 1.0
                sf.write(tmp, wav[i] / max(peak / 0.9, 1.0), 16000, subtype="PCM_16")
                os.replace(tmp, p)

    refs = measure("audio", noisy_w, None, 1)
    save_examples("audio", noisy_w)
    mel_wav = _waveforms(mel_in, mel_cfg, cfg, n)
    refs += measure("mel", mel_wav, mel_in, 2)
    save_examples("mel", mel_wav)
    ex_rows = np.array([i for i, (u, _) in enumerate(items) if u in examples[:1]])
    mels_for_fig["input"] = mel_in[ex_rows]
    mels_for_fig["target"] = target[ex_rows]
    recs = []
    for li, e in enumerate(layers):
        label = e["label"]
        pred = np.asarray(probes.predict(label, jnp.asarray(arrays[e["name"]], jnp.float32)))[:, :T]
        if pred.shape[1] < T:  # a layer with fewer frames than the mel: repeat its last frame
            pred = np.concatenate([pred, np.repeat(pred[:, -1:], T - pred.shape[1], axis=1)], axis=1)
        wav = _waveforms(pred, mel_cfg, cfg, n)
        for rec in measure(label, wav, pred, 10 + li):
            recs.append({**rec, "layer_index": li + 1, "r": int(e["r"]), "kind": e["kind"]})
        save_examples(label, wav)
        mels_for_fig[label] = pred[ex_rows]
    fig_items = [(items[i][0], items[i][1]["condition"]) for i in ex_rows]
    spk_of = np.array([spk[u] for u in utt_of])
    np.savez_compressed(out / "listen" / f".{tag}{sfx}.items.tmp.npz", utterance=utt_of, condition=cond_of,
                        speaker=spk_of, **per_item)
    os.replace(out / "listen" / f".{tag}{sfx}.items.tmp.npz", out / "listen" / f"{tag}{sfx}-items.npz")
    np.savez_compressed(out / "listen" / f".{tag}{sfx}.tmp.npz", **{k.replace(".", "_"): v for k, v in mels_for_fig.items()})
    os.replace(out / "listen" / f".{tag}{sfx}.tmp.npz", out / "listen" / f"{tag}{sfx}-mels.npz")
    return {"probe": recs, "reference": refs, "mel_examples": {"file": f"listen/{tag}{sfx}-mels.npz",
                                                               "items": fig_items, "hop_length": mel_cfg.hop_length}}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, the file closed again."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def regime_contrasts(out: Path, models, cfg, *, part: str = "synthetic") -> list[dict]:
    """Paired robust - baseline STOI, PESQ and EER differences per (model, layer, condition): the same
    listening items through both recognisers, so the bootstrap resamples utterances once for both
    (a tighter and more honest comparison than two separate intervals). ``part``: which part of the
    listening set (see :func:`listen`)."""
    from jaxprobe.bootstrap import bootstrap_interval

    sfx = _part_suffix(part)
    recs = []
    for mi, model in enumerate(models):
        paths = [out / "listen" / f"{model}-{g}{sfx}-items.npz" for g in ("baseline", "robust")]
        if not all(p.is_file() for p in paths):
            continue
        b, r = (_read_npz(p) for p in paths)
        if not (np.array_equal(b["utterance"], r["utterance"]) and np.array_equal(b["condition"], r["condition"])):
            raise RuntimeError(f"The baseline and robust {model} listening items differ; re-run the listen stage.")
        layers = [k.split("|", 1)[1] for k in b if k.startswith("stoi|") and k.split("|", 1)[1] not in REFERENCES]
        for li, layer in enumerate(layers):
            for ci, cond in enumerate(dict.fromkeys(b["condition"].tolist())):
                sel = np.flatnonzero(b["condition"] == cond)
                d = r[f"stoi|{layer}"][sel] - b[f"stoi|{layer}"][sel]
                e, lo, hi = _ci_mean(d, 10_000 + 1000 * mi + 10 * li + ci, cfg)
                recs.append({"model": model, "layer": layer, "condition": str(cond), "statistic": "stoi_robust_minus_baseline",
                             "estimate": float(e), "low": float(lo), "high": float(hi), "n_items": int(sel.size)})
                if f"pesq|{layer}" in b and f"pesq|{layer}" in r:  # items PESQ scored in both
                    d = r[f"pesq|{layer}"][sel] - b[f"pesq|{layer}"][sel]
                    ok = np.isfinite(d)
                    rec = {"model": model, "layer": layer, "condition": str(cond), "statistic": "pesq_robust_minus_baseline",
                           "estimate": None, "low": None, "high": None, "n_items": int(ok.sum()),
                           "n_excluded": int((~ok).sum())}
                    if ok.sum() >= 2:
                        e, lo, hi = _ci_mean(d[ok], 30_000 + 1000 * mi + 10 * li + ci, cfg)
                        rec.update(estimate=float(e), low=float(lo), high=float(hi))
                    recs.append(rec)
                if f"emb|{layer}" in b and f"emb|{layer}" in r:
                    order = sel[np.argsort(b["utterance"][sel])]  # the order listen() scored them in
                    est, boot = _eer_boot([b[f"emb|{layer}"][order], r[f"emb|{layer}"][order]],
                                          b["speaker"][order].tolist(), 20_000 + 1000 * mi + 10 * li + ci, cfg)
                    lo = hi = None
                    if boot is not None:  # percentile interval of the paired replicate differences
                        dl, dh = bootstrap_interval(boot.replicates[:, 1] - boot.replicates[:, 0], None, None,
                                           boot.level, "percentile")
                        lo, hi = 100.0 * float(dl), 100.0 * float(dh)
                    recs.append({"model": model, "layer": layer, "condition": str(cond),
                                 "statistic": "eer_robust_minus_baseline", "estimate": float(est[1] - est[0]),
                                 "low": lo, "high": hi, "n_items": int(sel.size)})
    return recs


def probe_and_listen(rec: dict, speaker: dict, cfg: dict, data, out: Path, *, mesh=None) -> tuple[dict, dict | None]:
    """Stages 2-3 for one recogniser (``rec``: its train + dump job's result): its probes, then the
    listening of the synthetic voices and (when ``data.listen_human``) of the human speakers, each
    cached in ``out/listen`` under a key of the settings it depends on. Returns (synthetic, human or
    None); the records carry no model/regime (the caller adds them). Independent per recogniser, so
    recognisers may be processed by separate processes before ``run`` assembles them from the caches."""
    from torch_bridge.hear import judge_info

    tag = f"{rec['model']}-{rec['regime']}"
    key = fingerprint({"job": Path(rec["dir"]).name, "probe": cfg["probe"], "listen": cfg["listen"],
                       "speaker": speaker.get("job_key", speaker["path"]), "trials": cfg["speaker"]["trials_per_class"],
                       "judge": judge_info()["name"],
                       "v": _VERSION, "listen_v": _LISTEN_VERSION})
    cache = out / "listen" / f"{tag}.json"
    probes = None
    if cache.is_file() and json.loads(cache.read_text()).get("key") == key and (out / "listen" / f"{tag}-items.npz").is_file():
        got = json.loads(cache.read_text())
        _log(f"{tag}: probes and listening cached")
    else:
        _log(f"{tag}: training the probes of {len(_probe_layers(rec['layers']))} layers in one jitted step")
        probes, info = train_layer_probes(rec, cfg, data, out, mesh=mesh)
        _log(f"{tag}: probes done in {info['seconds']} s ({info['steps']} steps); listening")
        t1 = time.perf_counter()
        got = {"key": key, "probe_training": info, **listen(rec, probes, cfg, data, speaker["path"], out)}
        got["listen_seconds"] = round(time.perf_counter() - t1, 1)
        _atomic_json(cache, got)
    if not data.listen_human:
        return got, None
    # the human speakers: the same probes, their own cache
    hkey = fingerprint({"synthetic": key, "human": [u.id for u in data.listen_human]})
    hcache = out / "listen" / f"{tag}-human.json"
    if hcache.is_file() and json.loads(hcache.read_text()).get("key") == hkey \
            and (out / "listen" / f"{tag}-human-items.npz").is_file():
        _log(f"{tag}: listening to the human speakers cached")
        return got, json.loads(hcache.read_text())
    if probes is None:  # resumes from the finished orbax checkpoint (no training steps)
        probes, _ = train_layer_probes(rec, cfg, data, out, mesh=mesh)
    _log(f"{tag}: listening to the {len(data.listen_human)} human utterances")
    t1 = time.perf_counter()
    hgot = {"key": hkey, **listen(rec, probes, cfg, data, speaker["path"], out, part="human")}
    hgot["listen_seconds"] = round(time.perf_counter() - t1, 1)
    _atomic_json(hcache, hgot)
    return got, hgot


def judge_on_human(cfg: dict, data, speaker_path: str, *, per_speaker: int = 30) -> dict:
    """Both judges' EER (%) on the held-out human speech, clean, in the study's windows (up to
    ``per_speaker`` utterances per speaker), with intervals from resampling utterances; {} when the
    corpus has none (LibriSpeech: the listening set is human speech)."""
    from torch_bridge.hear import by_speaker, judge_embeddings, speaker_embeddings, window

    recs = by_speaker(data.human, per_speaker)
    if len({str(r.speaker) for r in recs}) < 2:
        return {}
    n = int(round(cfg["data"]["window_seconds"] * 16000))
    wavs = [window(r.waveform, n) for r in recs]
    keep = [i for i, w in enumerate(wavs) if np.any(w)]
    wavs, spk = [wavs[i] for i in keep], [str(recs[i].speaker) for i in keep]
    threads = max(cfg["asr"]["threads"], 1)
    out = {"n_human_utterances": len(wavs), "human_speakers": sorted(set(spk))}
    for name, emb in (("", judge_embeddings(wavs, threads=threads)),
                      ("_xvector", speaker_embeddings(speaker_path, wavs, threads=threads))):
        e, lo, hi = _eer_ci(emb, spk, 7, cfg)
        out.update({f"eer_human{name}": e, f"eer_human{name}_low": lo, f"eer_human{name}_high": hi})
    return out


# ----------------------------------------------------------------------------- entry point
def _preflight(cfg: dict, out_dir) -> Path:
    """Checks that need more than the config's values, before any work: the devices JAX sees,
    noise names, data folders and checkpoints exist, the output folder can be written."""
    from jaxprobe.studies._config import ConfigError, check_devices
    from jaxprobe.studies._common import check_embedded_noises, ensure_writable_dir

    check_devices(cfg["compute"]["devices"])
    d = cfg["data"]
    if d["source"] == "embedded":
        check_embedded_noises(cfg["conditions"]["noises"], d["corpus_size"], "conditions.noises")
    else:
        for k in ("librispeech_train", "librispeech_dev", "librispeech_test", "musan"):
            if not Path(d[k]).expanduser().is_dir():
                raise ConfigError(f"Configuration key 'data.{k}' must name an existing folder; got {d[k]!r}.")
    files = {f"asr.checkpoints.{k}": v for k, v in cfg["asr"]["checkpoints"].items()}
    files["speaker.checkpoint"] = cfg["speaker"]["checkpoint"]
    for key, path in files.items():
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"Configuration key '{key}' must name an existing file; got {path!r}.")
    return ensure_writable_dir(out_dir, "--out")


@locks_output_folder("hear")
def run(config, out_dir, *, devices: str | None = None) -> dict:
    """Run (or resume) the hear study. ``config``: a path, a shipped name ("demo", "paper") or a
    dict. Returns the paths of the outputs."""
    over = {"compute": {"devices": str(devices)}} if devices else {}
    cfg = load_hear_config(config, **over)
    out = _preflight(cfg, out_dir)
    (out / "listen").mkdir(parents=True, exist_ok=True)
    enable_compilation_cache()
    _atomic_json(out / "config.json", cfg)
    t_start = time.perf_counter()
    from torch_bridge.hear import judge_info, load_hear_data, run_jobs

    jobs = plan_jobs(cfg, out)
    _log(f"train + dump: {len(jobs) - 1} recognisers and the speaker model on {cfg['asr']['workers']} worker(s)")
    t0 = time.perf_counter()
    done = run_jobs(jobs, workers=cfg["asr"]["workers"], log=_log)
    t_jobs = time.perf_counter() - t0
    speaker, recognisers = done[0], done[1:]
    data = load_hear_data(cfg["data"], cfg["conditions"]["noises"])
    mesh = mesh_from_config(cfg["compute"]["devices"])
    probe_recs, ref_recs, asr_recs, probe_info, mel_examples = [], [], [], {}, {}
    human_probe, human_ref = [], []
    for rec in recognisers:
        tag = f"{rec['model']}-{rec['regime']}"
        m = rec["metrics"]
        asr_recs.append({"model": rec["model"], "regime": rec["regime"], "cer": m["cer"], "wer": m["wer"],
                         "n_held_out": m.get("n"), "steps": m.get("step"), "train_seconds": m.get("train_seconds"),
                         "n_params": m.get("n_params"), "listen": m.get("listen", {})})
        got, hgot = probe_and_listen(rec, speaker, cfg, data, out, mesh=mesh)
        base = {"model": rec["model"], "regime": rec["regime"]}
        probe_recs += [{**base, "speakers": "synthetic", **r} for r in got["probe"]]
        ref_recs += [{**base, "speakers": "synthetic", **r} for r in got["reference"]]
        if hgot is not None:
            human_probe += [{**base, "speakers": "human", **r} for r in hgot["probe"]]
            human_ref += [{**base, "speakers": "human", **r} for r in hgot["reference"]]
        probe_info[tag] = {**got["probe_training"], "listen_seconds": got.get("listen_seconds")}
        mel_examples[tag] = got["mel_examples"]
    import jax

    human = judge_on_human(cfg, data, speaker["path"])  # percent, like every EER in the records
    clean_audio = [r for r in ref_recs if r["layer"] == "audio" and r["condition"] == CLEAN]
    pct = lambda v: None if v is None else v / 100.0  # noqa: E731  (the issue asks for fractions here)
    judge = {**judge_info(), "role": "the study's judge: 'eer' and 'min_dcf_*' in every record",
             "eer_human": pct(human.get("eer_human")), "eer_human_low": pct(human.get("eer_human_low")),
             "eer_human_high": pct(human.get("eer_human_high")), "n_human_utterances": human.get("n_human_utterances"),
             "human_speakers": human.get("human_speakers"),
             "eer_synthetic": pct(clean_audio[0]["eer"]) if clean_audio else None,
             "eer_synthetic_low": pct(clean_audio[0]["eer_low"]) if clean_audio else None,
             "eer_synthetic_high": pct(clean_audio[0]["eer_high"]) if clean_audio else None,
             "note": "EERs here are fractions; eer_synthetic: the clean listening windows (synthetic voices, unseen by "
                     "this judge)"}
    xvector = {**{k: v for k, v in speaker.items() if k != "job_key"},
               "name": "x-vector (TDNN + statistics pooling), trained here on the corpus's synthetic training voices",
               "source": "trained by this study (torch_bridge.models.speaker), or speaker.checkpoint when given",
               "training_data": f"the recognisers' training utterances ({len(data.train)}; {data.description})",
               "licence": "MIT (this project's code; the weights are made by the run)",
               "role": "second judge: 'eer_xvector' in every record",
               "eer_human": pct(human.get("eer_human_xvector")), "eer_human_low": pct(human.get("eer_human_xvector_low")),
               "eer_human_high": pct(human.get("eer_human_xvector_high")),
               "eer_synthetic": pct(clean_audio[0]["eer_xvector"]) if clean_audio else None,
               "eer_synthetic_low": pct(clean_audio[0]["eer_xvector_low"]) if clean_audio else None,
               "eer_synthetic_high": pct(clean_audio[0]["eer_xvector_high"]) if clean_audio else None}

    results = {
        "settings": {**cfg, "versions": {"jax": jax.__version__, "numpy": np.__version__},
                     "timings_s": {"train_and_dump": round(t_jobs, 1), "total": round(time.perf_counter() - t_start, 1)}},
        "data": {"corpus": data.description, "n_train": len(data.train), "n_held_out": len(data.held_out),
                 "n_probe_train": len(data.probe_train), "n_probe_valid": len(data.probe_valid),
                 "n_listen": len(data.listen), "listen_speakers": sorted({str(r.speaker) for r in data.listen}),
                 "n_listen_human": len(data.listen_human),
                 "listen_human_speakers": sorted({str(r.speaker) for r in data.listen_human}),
                 "listen_noises": list(data.noises["listen"]), "conditions": [CLEAN] + [f"{s:g}" for s in cfg["conditions"]["snrs"]],
                 "window_seconds": cfg["data"]["window_seconds"]},
        "layers": {f"{r['model']}": [{k: e[k] for k in ("label", "r", "width", "kind")} for e in _probe_layers(r["layers"])]
                   for r in recognisers},
        "asr": asr_recs,
        "speaker": {"judge": judge, "xvector": xvector},
        "probe": probe_recs,
        "reference": ref_recs,
        "contrasts": regime_contrasts(out, list(dict.fromkeys(r["model"] for r in recognisers)), cfg),
        # the held-out human speakers of the listening set, reported apart (HUMAN_NOTE says how to read them)
        "probe_human": human_probe,
        "reference_human": human_ref,
        "contrasts_human": regime_contrasts(out, list(dict.fromkeys(r["model"] for r in recognisers)), cfg,
                                            part="human") if human_probe else [],
        "human_note": HUMAN_NOTE if human_probe else None,
        "probe_training": probe_info,
        "mel_examples": mel_examples,
    }
    _atomic_json(out / "results.json", results)
    from jaxprobe.report.hear import write_hear_report

    paths = write_hear_report(results, out, formats=tuple(cfg["report"]["formats"]))
    if cfg["listen"]["wav_examples"] > 0:  # the human test (Fig. 2b) from the wavs just written
        from jaxprobe.report.listening import write_listening_test

        paths.update(write_listening_test(out, results))
    _log(f"report: {paths.get('html')}")
    return {"results": str(out / "results.json"), **{k: str(v) for k, v in paths.items()}}
