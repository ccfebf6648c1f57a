"""Stage 3 of the hear study, listening: every probed layer's reconstructions of the listening set
(probe -> log-mel -> waveform), measured by STOI, wide-band PESQ and two speaker judges, with wavs
of a few utterances; and the judges on the corpus's held-out human speech."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from jaxprobe.studies._common import stage_logger
from jaxprobe.studies.hear.probes import INPUT, clean_targets, mel_config, probe_layers, store_arrays
from jaxprobe.studies.hear.scoring import ci_mean, eer_ci, min_dcf_ci, pesq_ci

CLEAN = "clean"
REFERENCES = ("audio", "mel")
LISTEN_VERSION = 7  # 2: EER intervals, 3: embeddings kept for paired EER contrasts, 4: minDCF, 5: PESQ,
# 6: the pretrained GE2E judge (x-vector second), 7: wavs of the listening test's utterances
# (older caches are recomputed)

_log = stage_logger("hear")
PESQ_IN_FLIGHT = 3  # layers whose PESQ may be pending in the pool at once (their waveforms stay in memory)


PARTS = ("synthetic", "human")  # the listening set's two parts, reported apart
HUMAN_NOTE = (
    "The recognisers, their probes and the x-vector were trained on synthetic English voices only; the human "
    "speakers (studio prompts, five languages) are outside everything they learned. The human rows therefore "
    "measure what layers keep of voices unlike any in training, read through probes fitted to synthetic-voice "
    "activations: a high EER or a low STOI there mixes what the layer discarded with how badly the recogniser and "
    "its probe generalise, so they are not comparable one to one with the synthetic rows (only the pretrained "
    "judge, trained on real human speech, is in its own domain there).")


def part_suffix(part: str) -> str:
    """'' for the synthetic voices (the original file names), '-human' for the human speakers."""
    if part not in PARTS:
        raise ValueError(f"The 'part' parameter must be one of {list(PARTS)}; got {part!r}.")
    return "" if part == "synthetic" else f"-{part}"


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


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _file_id(path: str) -> tuple:
    st = os.stat(path)
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


def listen(job_result: dict, probes, cfg: dict, data, speaker_path: str, out: Path, *, part: str = "synthetic",
           pool=None, measured: dict | None = None) -> dict:
    """Every layer's reconstructions of the listening set, measured (see :mod:`jaxprobe.studies.hear`).
    ``part``: 'synthetic' (the listening voices; wavs/, listen/<tag>-items.npz) or 'human' (the
    held-out human speakers, ``data.listen_human``; wavs-human/, listen/<tag>-human-items.npz).

    ``pool``: an executor of :func:`jaxprobe.audio.pesq.pesq_pool`: PESQ, most of this stage's
    time, is scored in its worker processes while this process goes on with the next layer's
    Griffin-Lim, STOI and judges (at most :data:`PESQ_IN_FLIGHT` layers pending, which bounds the
    memory); None: each layer in turn, here. ``measured``: a dict kept across calls (the runner
    passes one per run) of the per-item measures of the two reference rows ('audio', 'mel'), keyed
    by a digest of the waveforms, the clean references and the x-vector file: they are the same
    waveforms for every recogniser with the same front end, so they are measured once per run.
    Either way the numbers are the same computations on the same inputs."""
    import jax.numpy as jnp

    from jaxprobe.audio.pesq import PendingPesq, wideband_pesq, wideband_pesq_async
    from jaxprobe.audio._stoi import stoi
    from torch_bridge.dump import Item
    from torch_bridge.hear import item_audio, judge_embeddings, listening_conditions, speaker_embeddings

    tag = f"{job_result['model']}-{job_result['regime']}"
    layers = probe_layers(job_result["layers"])
    mel_cfg = mel_config(job_result["mel"])
    names = [e["name"] for e in layers]
    sfx = part_suffix(part)
    listen_set = data.listen if part == "synthetic" else data.listen_human
    arrays, items = store_arrays(job_result["stores"]["listen" if part == "synthetic" else "listen_human"],
                                  names + [INPUT])
    n = int(round(cfg["data"]["window_seconds"] * 16000))
    records = {r.id: r for r in listen_set}
    audio = [item_audio(Item(c, u), records, data.noises["all"], n, cfg["seed"]) for u, c in items]
    noisy_w = np.stack([a[0] for a in audio])
    clean_w = np.stack([a[1] for a in audio])
    mel_in = arrays[INPUT].astype(np.float32)
    target = mel_in if cfg["probe"]["target"] == "input" else clean_targets(items, data, cfg, mel_cfg)
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

    pending: list = []  # each measured layer's finish(), oldest first, while its PESQ may be pending in the pool
    ref_id = (_digest(clean_w), _file_id(speaker_path))
    threads = max(cfg["asr"]["threads"], 1)

    def measure(label: str, wav: np.ndarray, mel: np.ndarray | None, key_int: int, done, *, reuse: bool = False) -> None:
        """Measure one layer's (or reference's) waveforms: STOI, PESQ (a PesqResult, or a PendingPesq
        from the pool) and both judges' embeddings; ``done(records)`` gets its records once PESQ is
        in (at once without a pool). ``reuse``: look the measures up in / keep them in ``measured``."""
        key = (_digest(wav), *ref_id) if reuse and measured is not None else None
        if key is not None and key in measured:
            st, pq, emb, xemb = measured[key]
        else:
            st = stoi(clean_w, wav)
            pq = wideband_pesq(clean_w, wav) if pool is None else wideband_pesq_async(clean_w, wav, pool)
            emb = judge_embeddings(list(wav), threads=threads)  # the pretrained judge: 'eer', 'min_dcf_*'
            xemb = speaker_embeddings(speaker_path, list(wav), threads=threads)  # the second judge: 'eer_xvector'
        per_item[f"stoi|{label}"] = st
        per_item[f"pesq|{label}"] = None  # filled in by finish (the items file keeps this order)
        per_item[f"emb|{label}"] = emb
        per_item[f"xemb|{label}"] = xemb

        def finish() -> None:
            res = pq.result() if isinstance(pq, PendingPesq) else pq  # a PendingPesq waits; a PesqResult is here
            per_item[f"pesq|{label}"] = res.scores
            if key is not None:
                measured[key] = (st, res, emb, xemb)
            if res.n_excluded:  # reported, never silent: the records count them per condition
                reasons = sorted({r.split(":", 1)[0] for r in res.failures.values()})
                _log(f"{tag} {label}: PESQ could not score {res.n_excluded} of {len(wav)} items ({', '.join(reasons)}); "
                     "excluded from the PESQ means")
            done(records(label, st, res, emb, xemb, mel, key_int))

        pending.append(finish)
        while len(pending) > (PESQ_IN_FLIGHT if pool is not None else 0):
            pending.pop(0)()

    def records(label, st, pq, emb, xemb, mel, key_int) -> list[dict]:
        recs = []
        for ci, cond in enumerate(conds):
            sel = np.flatnonzero(cond_of == cond)
            order = sel[np.argsort(utt_of[sel])]
            e_est, e_lo, e_hi = eer_ci(emb[order], [spk[u] for u in utt_of[order]], key_int * 97 + ci + 25, cfg)
            x_est, x_lo, x_hi = eer_ci(xemb[order], [spk[u] for u in utt_of[order]], key_int * 97 + ci + 25, cfg)
            s_est, s_lo, s_hi = ci_mean(st[order], key_int * 97 + ci, cfg)
            rec = {"layer": label, "condition": cond, "snr": None if cond == CLEAN else float(cond),
                   "eer": e_est, "eer_low": e_lo, "eer_high": e_hi,
                   "eer_xvector": x_est, "eer_xvector_low": x_lo, "eer_xvector_high": x_hi,
                   **min_dcf_ci(emb[order], [spk[u] for u in utt_of[order]], key_int * 97 + ci + 25, cfg),
                   "stoi": float(s_est), "stoi_low": float(s_lo), "stoi_high": float(s_hi),
                   **pesq_ci(pq.scores[order], key_int * 97 + ci + 75, cfg),
                   "n_items": int(order.size)}
            if mel is not None:
                l1 = np.mean(np.abs(mel[order] - target[order]), axis=(1, 2))
                e, lo, hi = ci_mean(l1, key_int * 97 + ci + 50, cfg)
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

    refs: list[dict] = []
    measure("audio", noisy_w, None, 1, refs.extend, reuse=True)
    save_examples("audio", noisy_w)
    mel_wav = _waveforms(mel_in, mel_cfg, cfg, n)
    measure("mel", mel_wav, mel_in, 2, refs.extend, reuse=True)
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
        measure(label, wav, pred, 10 + li,
                lambda got, li=li, e=e: recs.extend({**rec, "layer_index": li + 1, "r": int(e["r"]), "kind": e["kind"]}
                                                    for rec in got))
        save_examples(label, wav)
        mels_for_fig[label] = pred[ex_rows]
    while pending:  # the layers whose PESQ is still being scored, in order
        pending.pop(0)()
    fig_items = [(items[i][0], items[i][1]["condition"]) for i in ex_rows]
    spk_of = np.array([spk[u] for u in utt_of])
    np.savez_compressed(out / "listen" / f".{tag}{sfx}.items.tmp.npz", utterance=utt_of, condition=cond_of,
                        speaker=spk_of, **per_item)
    os.replace(out / "listen" / f".{tag}{sfx}.items.tmp.npz", out / "listen" / f"{tag}{sfx}-items.npz")
    np.savez_compressed(out / "listen" / f".{tag}{sfx}.tmp.npz", **{k.replace(".", "_"): v for k, v in mels_for_fig.items()})
    os.replace(out / "listen" / f".{tag}{sfx}.tmp.npz", out / "listen" / f"{tag}{sfx}-mels.npz")
    return {"probe": recs, "reference": refs, "mel_examples": {"file": f"listen/{tag}{sfx}-mels.npz",
                                                               "items": fig_items, "hop_length": mel_cfg.hop_length}}


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
        e, lo, hi = eer_ci(emb, spk, 7, cfg)
        out.update({f"eer_human{name}": e, f"eer_human{name}_low": lo, f"eer_human{name}_high": hi})
    return out

