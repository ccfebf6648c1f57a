"""The hear study's runner: the jobs of stage 1 (each with a settings key and a folder), stages 2-3 per
recogniser with their caches, and ``run``, which assembles results.json and the report (the stages:
:mod:`jaxprobe.studies.hear`)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from jaxprobe.studies._config import fingerprint
from jaxprobe.distributed import mesh_from_config
from jaxprobe.studies._common import atomic_json as _atomic_json
from jaxprobe.studies._common import locks_output_folder
from jaxprobe.studies._common import enable_compilation_cache, stage_logger
from jaxprobe.studies.hear.config import CACHE_VERSION, load_hear_config
from jaxprobe.studies.hear.contrasts import regime_contrasts
from jaxprobe.studies.hear.listen_stage import CLEAN, HUMAN_NOTE, LISTEN_VERSION, judge_on_human, listen
from jaxprobe.studies.hear.probes import probe_layers, train_layer_probes

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
                               "dump": dump_key, **_data_key(cfg), "v": CACHE_VERSION})
            jobs.append({"kind": "recogniser", "label": tag, "model": model, "regime": regime, "cfg": cfg,
                         "threads": a["threads"], "checkpoint": ckpt, "dir": str(out / "recognisers" / f"{tag}-{key[:10]}"),
                         "key": key})
    return jobs


def probe_and_listen(rec: dict, speaker: dict, cfg: dict, data, out: Path, *, mesh=None, pool=None,
                     measured: dict | None = None) -> tuple[dict, dict | None]:
    """Stages 2-3 for one recogniser (``rec``: its train + dump job's result): its probes, then the
    listening of the synthetic voices and (when ``data.listen_human``) of the human speakers, each
    cached in ``out/listen`` under a key of the settings it depends on. Returns (synthetic, human or
    None); the records carry no model/regime (the caller adds them). Independent per recogniser, so
    recognisers may be processed by separate processes before ``run`` assembles them from the caches.
    ``pool``, ``measured``: PESQ's worker processes and the reference rows' measures shared across
    calls (see :func:`jaxprobe.studies.hear.listen_stage.listen`; the numbers do not depend on them)."""
    from torch_bridge.hear import judge_info

    tag = f"{rec['model']}-{rec['regime']}"
    listen_key = {k: v for k, v in cfg["listen"].items() if k != "workers"}  # how, not what: keeps the caches
    key = fingerprint({"job": Path(rec["dir"]).name, "probe": cfg["probe"], "listen": listen_key,
                       "speaker": speaker.get("job_key", speaker["path"]), "trials": cfg["speaker"]["trials_per_class"],
                       "judge": judge_info()["name"],
                       "v": CACHE_VERSION, "listen_v": LISTEN_VERSION})
    cache = out / "listen" / f"{tag}.json"
    probes = None
    if cache.is_file() and json.loads(cache.read_text()).get("key") == key and (out / "listen" / f"{tag}-items.npz").is_file():
        got = json.loads(cache.read_text())
        _log(f"{tag}: probes and listening cached")
    else:
        _log(f"{tag}: training the probes of {len(probe_layers(rec['layers']))} layers in one jitted step")
        probes, info = train_layer_probes(rec, cfg, data, out, mesh=mesh)
        _log(f"{tag}: probes done in {info['seconds']} s ({info['steps']} steps); listening")
        t1 = time.perf_counter()
        got = {"key": key, "probe_training": info,
               **listen(rec, probes, cfg, data, speaker["path"], out, pool=pool, measured=measured)}
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
    hgot = {"key": hkey, **listen(rec, probes, cfg, data, speaker["path"], out, part="human", pool=pool,
                                  measured=measured)}
    hgot["listen_seconds"] = round(time.perf_counter() - t1, 1)
    _atomic_json(hcache, hgot)
    return got, hgot


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
    from jaxprobe.audio.pesq import pesq_pool
    from jaxprobe.studies._common import auto_workers

    pesq_workers = cfg["listen"]["workers"] or auto_workers()  # decided once, at the load before listening
    _log(f"listening: PESQ in {pesq_workers} process(es)" + ("" if cfg["listen"]["workers"] else
                                                             " (listen.workers = 0: the cores the load leaves idle)"))
    measured: dict = {}  # the reference rows' measures, shared by the recognisers (listen's ``measured``)
    with pesq_pool(pesq_workers) as pool:  # its processes start only if something is listened to
        for rec in recognisers:
            tag = f"{rec['model']}-{rec['regime']}"
            m = rec["metrics"]
            asr_recs.append({"model": rec["model"], "regime": rec["regime"], "cer": m["cer"], "wer": m["wer"],
                             "n_held_out": m.get("n"), "steps": m.get("step"), "train_seconds": m.get("train_seconds"),
                             "n_params": m.get("n_params"), "listen": m.get("listen", {})})
            got, hgot = probe_and_listen(rec, speaker, cfg, data, out, mesh=mesh, pool=pool, measured=measured)
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
        "layers": {f"{r['model']}": [{k: e[k] for k in ("label", "r", "width", "kind")} for e in probe_layers(r["layers"])]
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
