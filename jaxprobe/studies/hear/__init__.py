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

The study side by side: its configuration (``config``: keys and defaults), the stage runner
(``runner``: jobs, caches, results.json), the probes (``probes``: store reading, targets, training),
the listening stage (``listen_stage``: waveforms, measures, wavs), the statistics with intervals
(``scoring``: EER, minDCF, STOI/L1/PESQ means) and the paired regime contrasts (``contrasts``).
``from jaxprobe.studies.hear import run`` stays the entry point (the CLI calls it).
"""
from jaxprobe.studies.hear.config import HEAR_DEFAULTS, load_hear_config
from jaxprobe.studies.hear.contrasts import regime_contrasts
from jaxprobe.studies.hear.listen_stage import CLEAN, HUMAN_NOTE, PARTS, REFERENCES, judge_on_human, listen
from jaxprobe.studies.hear.probes import INPUT, train_layer_probes
from jaxprobe.studies.hear.runner import plan_jobs, probe_and_listen, run
from jaxprobe.studies.hear.scoring import dcf_key

__all__ = ["CLEAN", "HEAR_DEFAULTS", "HUMAN_NOTE", "INPUT", "PARTS", "REFERENCES", "dcf_key", "judge_on_human",
           "listen", "load_hear_config", "plan_jobs", "probe_and_listen", "regime_contrasts", "run",
           "train_layer_probes"]
