"""Train a CTC recogniser (VGG-LSTM or pure-LSTM) in one of two regimes, with exact resume.

Regimes (the ASR paper, 3.1):

``"baseline"``  clean utterances only.
``"robust"``    each training utterance is, with probability ``p_noise``, mixed with a random
                segment of a random noise recording at an SNR drawn uniformly from
                ``snr_range`` dB (:func:`add_noise`), roughly following the x-vector recipe.

:func:`add_noise` is a light training-time mixer (no loudness normalisation, unlike
:func:`torch_bridge.mix_at_snr`): SNR by plain mean-square power over the whole utterance,
the noise read circularly from a random offset, the mixture scaled down only if its peak
exceeds 0.99. Every random choice comes from a ``numpy.random.Generator`` seeded by
``(seed, step, item-in-batch)``, and the batch order of epoch ``e`` from ``(seed, e)``, so the
data a step sees depends on the step number alone: a resumed run replays exactly the batches
of a straight run.

Checkpoints (``<out_dir>/checkpoint.pt``) hold the model, the Adam state, the step, the torch
RNG state, both configs and the history; they are written to a temporary file and renamed
into place. ``train_asr`` resumes from one when it exists (``resume=True``) and refuses one
made with different settings. Held-out CER/WER use greedy CTC decoding and jiwer on
:func:`~torch_bridge.models.asr.normalise_text` transcripts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models.asr import (
    AsrConfig,
    CTCRecogniser,
    encode_text,
    fit_normaliser,
    greedy_decode,
    normalise_text,
)

REGIMES = ("baseline", "robust")
#: Adam learning rates used when TrainConfig.lr is None (see TrainConfig).
DEFAULT_LR = {"vgg_lstm": 2e-3, "lstm": 3e-3}
CHECKPOINT = "checkpoint.pt"
_FORMAT = 1
_PEAK = 0.99


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings (the model sizes live in :class:`AsrConfig`).

    regime : "baseline" or "robust".
    lr : Adam learning rate; None: the measured default of the model (:data:`DEFAULT_LR`:
        2e-3 for VGG-LSTM — it stayed on the CTC plateau for 2000 steps at 3e-3, and in
        `jaxprobe hear --config demo` (2500 steps) reached held-out CER 30 % baseline / 42 % robust
        at 2e-3 against 37 % / 66 % at 1e-3 — and 3e-3 for pure-LSTM, which learned at that rate).
    max_steps : optimiser steps in all; ``max_minutes`` stops earlier (at a step boundary).
    eval_every : steps between held-out CER/WER evaluations (0: only at the end).
    checkpoint_every : steps between checkpoints (one is always written at the end).
    snr_range, p_noise : the robust regime's SNR interval (dB) and mixing probability.
    max_seconds : training utterances are center-trimmed to this length (bounds padding).
    threads : torch intra-op threads while training (None: leave torch's setting). Default 1:
        on the shared, oversubscribed 2-core CPU one thread ran about 0.4 s per default
        VGG-LSTM step where two took 4-18 s (threads wait on each other when the cores are
        busy); try None on a quiet many-core machine.
    """

    regime: str = "baseline"
    batch_size: int = 8
    lr: float | None = None
    max_steps: int = 3000
    max_minutes: float | None = None
    eval_every: int = 0
    checkpoint_every: int = 50
    grad_clip: float = 5.0
    seed: int = 0
    snr_range: tuple[float, float] = (0.0, 20.0)
    p_noise: float = 0.8
    max_seconds: float = 6.0
    threads: int | None = 1

    def __post_init__(self):
        if self.regime not in REGIMES:
            raise ValueError(f"The 'regime' parameter of TrainConfig must be one of {REGIMES}. Got {self.regime!r} instead.")
        for name, low in (("batch_size", 1), ("max_steps", 1), ("eval_every", 0), ("checkpoint_every", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"The '{name}' parameter of TrainConfig must be an int in [{low}, inf). Got {v!r} instead.")
        lo, hi = self.snr_range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"The 'snr_range' parameter of TrainConfig must be (low, high) dB with low <= high. Got {self.snr_range!r} instead.")
        object.__setattr__(self, "snr_range", (float(lo), float(hi)))
        if not 0.0 <= self.p_noise <= 1.0:
            raise ValueError(f"The 'p_noise' parameter of TrainConfig must be in [0, 1]. Got {self.p_noise!r} instead.")
        if (self.lr is not None and not self.lr > 0) or not self.max_seconds > 0:
            raise ValueError(f"TrainConfig needs lr > 0 and max_seconds > 0; got lr={self.lr!r}, max_seconds={self.max_seconds!r}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"The 'max_minutes' parameter of TrainConfig must be > 0 or None. Got {self.max_minutes!r} instead.")

    def replay_key(self) -> dict:
        """The settings a resumed run must share with the run that wrote the checkpoint."""
        d = dataclasses.asdict(self)
        for k in ("max_steps", "max_minutes", "eval_every", "checkpoint_every", "threads"):
            d.pop(k)
        d["snr_range"] = list(d["snr_range"])
        return d


@dataclasses.dataclass
class TrainResult:
    model: CTCRecogniser
    step: int
    metrics: dict[str, Any]
    history: list[dict]
    checkpoint: Path


# ----------------------------------------------------------------------------- mixing
def add_noise(clean: np.ndarray, noise: np.ndarray, snr_db: float, *, rng: np.random.Generator) -> np.ndarray:
    """Add a random segment of ``noise`` to ``clean`` at ``snr_db`` (plain power), float32.

    clean : array of shape (n,); noise : array of shape (m,), read circularly from an offset
    drawn from ``rng``. The mixture is scaled down (not clipped) if its peak exceeds 0.99.
    """
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if clean.ndim != 1 or noise.ndim != 1 or clean.size == 0 or noise.size == 0:
        raise ValueError(f"add_noise expects 1-D non-empty clean and noise; got shapes {clean.shape} and {noise.shape}.")
    start = int(rng.integers(0, noise.size))
    seg = noise[(start + np.arange(clean.size)) % noise.size]
    p_s, p_n = float(np.mean(clean ** 2)), float(np.mean(seg ** 2))
    if p_s <= 0 or p_n <= 0:
        raise ValueError("add_noise: clean speech or the noise segment is digitally silent; the SNR is undefined.")
    mix = clean + seg * np.sqrt(p_s / (p_n * 10.0 ** (snr_db / 10.0)))
    peak = float(np.max(np.abs(mix)))
    if peak > _PEAK:
        mix *= _PEAK / peak
    return mix.astype(np.float32)


# ----------------------------------------------------------------------------- data
def _trim(x: np.ndarray, n_max: int) -> np.ndarray:
    if x.shape[0] <= n_max:
        return x
    start = (x.shape[0] - n_max) // 2
    return x[start:start + n_max]


def _batch(waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : w.shape[0]] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return out, lengths


def step_items(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the training items of optimiser step ``step`` (0-based): epoch
    ``step // (n // batch_size)`` is a permutation seeded by ``(seed, epoch)``; the last
    partial batch of an epoch is dropped."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size]


def _training_batch(step, utts, targets, noises, cfg: TrainConfig, n_max):
    idx = step_items(step, len(utts), cfg.batch_size, cfg.seed)
    waves = []
    for j, i in enumerate(idx):
        w = _trim(utts[i].waveform, n_max)
        if cfg.regime == "robust":
            rng = np.random.default_rng([cfg.seed, step, j, 7])
            if rng.random() < cfg.p_noise:
                noise = noises[int(rng.integers(0, len(noises)))]
                w = add_noise(w, noise, float(rng.uniform(*cfg.snr_range)), rng=rng)
        waves.append(w)
    x, lengths = _batch(waves)
    tgt = [targets[i] for i in idx]
    return x, lengths, torch.cat([torch.tensor(t) for t in tgt]), torch.tensor([len(t) for t in tgt])


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_asr(model: CTCRecogniser, utterances: Sequence, *, batch_size: int = 8,
             waveforms: Sequence[np.ndarray] | None = None, n_examples: int = 3) -> dict[str, Any]:
    """Greedy-decoding CER and WER (jiwer) of ``model`` on ``utterances`` (records with
    ``transcript``); ``waveforms`` replaces their audio (e.g. noisy versions)."""
    import jiwer

    if not utterances:
        raise ValueError("evaluate_asr needs at least one utterance.")
    waves = list(waveforms) if waveforms is not None else [u.waveform for u in utterances]
    if len(waves) != len(utterances):
        raise ValueError(f"evaluate_asr got {len(waves)} waveforms for {len(utterances)} utterances.")
    was_training = model.training
    model.eval()
    order = np.argsort([w.shape[0] for w in waves])  # similar lengths together: less padding
    hyps: dict[int, str] = {}
    for s in range(0, len(order), batch_size):
        ids = order[s:s + batch_size]
        x, lengths = _batch([waves[i] for i in ids])
        out = model(x, lengths)
        for i, h in zip(ids, greedy_decode(out.log_probs, out.lengths)):
            hyps[int(i)] = h
    model.train(was_training)
    refs = [normalise_text(u.transcript) for u in utterances]
    hyp = [hyps[i] for i in range(len(utterances))]
    return {"cer": float(jiwer.cer(refs, hyp)), "wer": float(jiwer.wer(refs, hyp)), "n": len(refs),
            "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyp))[:n_examples]]}


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(dict(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_recogniser(path: str | os.PathLike, *, map_location: str = "cpu") -> CTCRecogniser:
    """The trained recogniser stored in a checkpoint file (or a folder holding ``checkpoint.pt``), in eval mode."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"No recogniser checkpoint at {path}; train one with `jaxprobe train-asr`.")
    state = torch.load(path, map_location=map_location, weights_only=False)
    model = CTCRecogniser(AsrConfig.from_dict(state["asr_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


# ----------------------------------------------------------------------------- training
def train_asr(
    train: Sequence,
    held_out: Sequence,
    out_dir: str | os.PathLike,
    *,
    asr_config: AsrConfig | None = None,
    config: TrainConfig | None = None,
    noises: Sequence[np.ndarray] = (),
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a recogniser on ``train`` and report CER/WER on ``held_out``.

    Parameters
    ----------
    train, held_out : sequences of AudioRecord (16 kHz waveform, ``transcript``).
    out_dir : folder for ``checkpoint.pt`` and ``metrics.json``.
    asr_config : model sizes (default ``AsrConfig()``, VGG-LSTM).
    config : training settings (default ``TrainConfig()``).
    noises : 1-D float waveforms mixed in by the robust regime (required for it).
    resume : continue from ``out_dir/checkpoint.pt`` when present (settings must match).

    Returns
    -------
    TrainResult with the model (eval mode), the final step, held-out metrics and history.
    """
    asr_config = asr_config or AsrConfig()
    config = config or TrainConfig()
    if config.lr is None:
        config = dataclasses.replace(config, lr=DEFAULT_LR[asr_config.model])
    say = log or (lambda s: None)
    if not train or not held_out:
        raise ValueError(f"train_asr needs training and held-out utterances; got {len(train)} and {len(held_out)}.")
    if len(train) < config.batch_size:
        raise ValueError(f"train_asr got {len(train)} training utterances for batch_size={config.batch_size}; "
                         "lower batch_size or pass more utterances.")
    noises = [np.asarray(n, dtype=np.float32) for n in noises]
    if config.regime == "robust" and not noises:
        raise ValueError("The robust regime mixes noise into the training speech; pass noises=[...] (1-D waveforms).")
    targets = [encode_text(u.transcript or "") for u in train]
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT
    n_max = int(config.max_seconds * 16000)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        model = CTCRecogniser(asr_config)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        step, history = 0, []
        if resume and ckpt_path.is_file():
            state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            mine = {"asr_config": asr_config.to_dict(), "train_config": config.replay_key(),
                    "train_ids": [u.id for u in train]}
            for k, v in mine.items():
                if state.get(k) != v:
                    raise ValueError(f"The checkpoint {ckpt_path} was written with a different {k} "
                                     f"({state.get(k) if k != 'train_ids' else '...'}); use another out_dir or resume=False.")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            step, history = int(state["step"]), list(state["history"])
            say(f"resumed {ckpt_path} at step {step}")
        else:
            fit_normaliser(model, [_trim(u.waveform, n_max) for u in train[:: max(len(train) // 200, 1)]])

        def checkpoint() -> None:
            save_checkpoint(ckpt_path, {
                "format": _FORMAT, "asr_config": asr_config.to_dict(), "train_config": config.replay_key(),
                "train_ids": [u.id for u in train], "model": model.state_dict(), "optimizer": opt.state_dict(),
                "torch_rng": torch.get_rng_state(), "step": step, "history": history})

        ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
        model.train()
        t0, c0 = time.monotonic(), time.process_time()
        cpu_before = float(history[-1].get("cpu_seconds", 0.0)) if history else 0.0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=config.max_steps, initial=step, desc=f"{asr_config.model}/{config.regime}", leave=False)
        while step < config.max_steps:
            if config.max_minutes is not None and time.monotonic() - t0 > 60.0 * config.max_minutes:
                say(f"time budget of {config.max_minutes} min reached at step {step}")
                break
            x, lengths, tgt, tgt_len = _training_batch(step, train, targets, noises, config, n_max)
            out = model(x, lengths)
            loss = ctc(out.log_probs.transpose(0, 1), tgt, out.lengths, tgt_len)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            step += 1
            loss = float(loss.detach())
            history.append({"step": step, "loss": loss, "seconds": round(time.monotonic() - t0, 2),
                            "cpu_seconds": round(cpu_before + time.process_time() - c0, 2)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            if config.eval_every and step % config.eval_every == 0:
                m = evaluate_asr(model, held_out)
                history[-1].update(cer=m["cer"], wer=m["wer"])
                say(f"step {step}: loss {loss:.3f}  held-out CER {m['cer']:.3f}  WER {m['wer']:.3f}")
            if step % config.checkpoint_every == 0:
                checkpoint()
        if bar is not None:
            bar.close()
        checkpoint()
        metrics = evaluate_asr(model, held_out)
        metrics.update(step=step, train_seconds=round(time.monotonic() - t0, 1),
                       train_cpu_seconds=history[-1]["cpu_seconds"] if history else 0.0,
                       model=asr_config.model, regime=config.regime)
        (out_dir / "metrics.json").write_text(json.dumps(
            {**metrics, "asr_config": asr_config.to_dict(), "train_config": dataclasses.asdict(config)}, indent=1))
        model.eval()
        return TrainResult(model=model, step=step, metrics=metrics, history=history, checkpoint=ckpt_path)
    finally:
        torch.set_num_threads(old_threads)


def train_on_corpus(out_dir, *, model: str = "vgg_lstm", regime: str = "baseline", size: str = "default",
                    asr_config: AsrConfig | None = None, config: TrainConfig | None = None,
                    held_out_split: str = "dev", max_held_out: int | None = None, cache_dir=None,
                    **kwargs) -> TrainResult:
    """:func:`train_asr` on the embedded corpus: 'train' split, held-out ``held_out_split``
    ('dev': seen speakers, unseen sentences; 'test': unseen speakers and sentences), noises
    from the corpus noise set for the robust regime."""
    from .corpus import load_corpus

    corpus = load_corpus(cache_dir, size=size)
    held = corpus.split(held_out_split)
    if max_held_out:
        held = held[:: max(len(held) // max_held_out, 1)][:max_held_out]
    config = config or TrainConfig(regime=regime)
    if config.regime != regime:
        config = dataclasses.replace(config, regime=regime)
    return train_asr(corpus.split("train"), held, out_dir, asr_config=asr_config or AsrConfig(model=model),
                     config=config, noises=[n.waveform for n in corpus.noises.values()], **kwargs)


#: The package-level name of :func:`train_asr` (``torch_bridge.train_asr`` is this module).
train_recogniser = train_asr
