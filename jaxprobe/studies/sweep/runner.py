"""`jaxprobe sweep`: the SNR-sweep probing study of a speech model (MUSE by default), end to end.

Stages, each cached in the output folder under a fingerprint of the settings it
depends on, so a re-run recomputes only what changed and a killed run resumes:

1. data      corpus / folders -> the utterances and noise recordings (torch_bridge)
2. dump      mixtures -> the model (``torch_bridge.load_model``) -> its pooled probe layers
             -> activation store (resumable, torch_bridge)
3. analysis  store -> CKA tables, bootstraps, regressions, diffusion maps -> results.json, CSV
4. report    results -> figures (PNG, PDF), report.md, report.html

torch is imported only inside the data and dump stages, through torch_bridge.
"""
from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import numpy as np

from jaxprobe._validate import aligned_view
from jaxprobe.studies._config import check_devices, fingerprint
from jaxprobe.studies.sweep.config import AXIS_UNITS, ConfigError, level_grid, load_sweep_config
from jaxprobe.distributed import mesh_from_config
from jaxprobe.errors import DataError
from torch_bridge.models.muse.layers import MUSE_SAMPLE_RATE, MUSE_WINDOW  # torch-free: MUSE's spec module
from jaxprobe.studies._common import atomic_json as _atomic_json
from jaxprobe.studies._common import enable_compilation_cache as _enable_compilation_cache
from jaxprobe.studies._common import auto_workers, check_embedded_noises, ensure_writable_dir
from jaxprobe.studies._common import (invalidate_stage, locks_output_folder, stage_logger, stage_outputs_intact,
                                      store_content_key, write_stage_manifest)

CLEAN = "clean"


_log = stage_logger("sweep")


# ----------------------------------------------------------------------------- data + dump

def select_utterances(records, n: int, min_seconds: float, seconds=None):
    """Deterministic choice: long enough for one model window, round-robin over speakers.
    ``seconds`` measures a record (default ``record.duration``: a corpus record knows its
    length from the manifest, unread)."""
    seconds = seconds or (lambda r: r.duration)
    ok = [r for r in records if seconds(r) >= min_seconds]
    by_spk: dict[str, list] = {}
    for r in sorted(ok, key=lambda r: r.id):
        by_spk.setdefault(str(r.speaker), []).append(r)
    out, i = [], 0
    while (n == 0 or len(out) < n) and any(by_spk.values()):
        spk = sorted(by_spk)[i % len(by_spk)]
        if by_spk[spk]:
            out.append(by_spk[spk].pop(0))
        i += 1
        if all(not v for v in by_spk.values()):
            break
    return out


#: Utterances are selected by a rule of the data, not of the model, so that runs of different
#: models on one config get the same utterances (`jaxprobe compare` refuses runs that differ):
#: long enough for one MUSE window (30,700 samples) plus 0.1 s, or for the model's own window
#: where that is longer. Whole-utterance models (no window) get the same utterances as MUSE.
SELECT_WINDOW_S = MUSE_WINDOW / MUSE_SAMPLE_RATE


_CORPUS_MEMO: dict = {}


def embedded_corpus(cache_dir: str, size: str):
    """The embedded corpus (built first if missing), read and checksummed once per process:
    one process running several sweeps on it (the demo: MUSE, then GTCRN) reads it once. The
    last corpus only is kept."""
    from torch_bridge.corpus import default_cache_dir, load_corpus

    key = (str(cache_dir or default_cache_dir()), size)
    if key not in _CORPUS_MEMO:
        _CORPUS_MEMO.clear()
        _CORPUS_MEMO[key] = load_corpus(cache_dir or None, size=size, log=_log)
    return _CORPUS_MEMO[key]


def _load_data(cfg: dict, window: int | None = MUSE_WINDOW):
    d = cfg["data"]
    window_s = max(window / MUSE_SAMPLE_RATE if window else 0.0, SELECT_WINDOW_S)
    if d["source"] == "embedded":
        corpus = embedded_corpus(d["cache_dir"], d["corpus_size"])
        split = d["speech_split"]
        if split == "real":
            pool = corpus.real_speech
        else:
            pool = [u for u in corpus.utterances if split == "all" or u.meta.get("split") == split]
        n_pool = len(pool)
        if not pool:
            raise DataError(f"Configuration key 'data.speech_split' = {split!r} selects no utterance of the "
                            f"embedded corpus ({d['corpus_size']}); use train, dev, test, all or real.")
        utts = select_utterances(pool, d["utterances"], window_s + 0.1)
        noises = corpus.noises
        desc = f"embedded corpus ({d['corpus_size']}, {corpus.root})"
    else:
        from torch_bridge.data import Demand, VoiceBank

        pool = list(VoiceBank(d["voicebank"]))
        n_pool = len(pool)
        utts = select_utterances(pool, d["utterances"], window_s + 0.1)
        noises = {r.id: r for r in Demand(d["demand"])}
        desc = f"VoiceBank {d['voicebank']} + DEMAND {d['demand']}"
    noise_map = noises if isinstance(noises, dict) else {r.id: r for r in noises}
    wanted = d["noises"] or sorted(noise_map)
    unknown = [w for w in wanted if w not in noise_map]
    if unknown:
        raise DataError(f"Configuration key 'data.noises' names noise type(s) {unknown} that {desc} does not "
                        f"have; available: {sorted(noise_map)}.")
    if not utts:
        where = f"data.speech_split = {d['speech_split']!r}" if d["source"] == "embedded" else f"data.voicebank = {d['voicebank']!r}"
        raise DataError(f"No utterance of {where} is long enough for one {window_s + 0.1:.2f} s model window "
                        f"({n_pool} utterance(s) there); choose a split or folder with longer recordings.")
    return utts, {k: noise_map[k] for k in wanted}, desc


def _store_key(cfg: dict) -> str:
    m = cfg["model"]
    what = {"data": cfg["data"], "sweep": cfg["sweep"], "model": m["name"]}
    if m["layers"]:  # canonical layers keep the key of stores made before layers could be chosen
        what["layers"] = list(m["layers"])
    return fingerprint(what)


def _dump_stage(cfg: dict, out: Path, checkpoint: str | None, recompute=()):
    from torch_bridge.dump import dump_spec_sweep
    from torch_bridge.models import registry

    d, m, sw = cfg["data"], cfg["model"], cfg["sweep"]
    key = _store_key(cfg)
    store_dir = out / "store" / key
    spec = registry.load_model(m["name"], checkpoint or (m["checkpoint"] or None), layers=m["layers"] or None)
    if cfg["quality"]["enabled"] and not spec.enhances:
        raise ConfigError(f"Configuration key 'quality.enabled' = true needs an enhancement model (one with an "
                          f"official enhance() pipeline: muse, gtcrn, ...); got model {spec.name!r} ({spec.kind}).")
    utts, noises, desc = _load_data(cfg, spec.window)
    levels = level_grid(cfg)
    mix_kwargs = dict(duration=d["duration"], short=d["short"], target_lufs=d["target_lufs"])
    if sw["axis"] == "snr":
        from torch_bridge.mixing import snr_sweep

        sweep = snr_sweep(utts, list(noises.values()), levels, seed=sw["seed"], **mix_kwargs)
        dump_fn = dump_spec_sweep
    else:
        from torch_bridge.degrade import degradation_sweep
        from torch_bridge.degrade_dump import dump_spec_degradation_sweep

        sweep = degradation_sweep(utts, list(noises.values()), sw["axis"], levels, seed=sw["seed"],
                                  noise_snr=sw["noise_snr"], reference=sw["reference"], **mix_kwargs)
        dump_fn = dump_spec_degradation_sweep
    n_items = len(utts) * (1 + len(noises) * len(levels))
    _log(f"dump: {spec.name}, {len(spec.layers)} layers in {len(spec.blocks)} blocks; {len(utts)} utterances x "
         f"{len(noises)} noises x {len(levels)} {AXIS_UNITS[sw['axis']][0]} levels (+ clean) = {n_items} mixtures "
         f"-> {store_dir}")
    kwargs = dict(window_mode=d["window"], hop=d["hop"] or None, extra={"data": desc}, batch_size=m["batch_size"],
                  log=_log, check="quick", recompute=recompute)  # the analysis checksums every file it reads
    workers = m["workers"] or auto_workers()
    if workers == 1:
        report = dump_fn(spec, sweep, str(store_dir), threads=m["threads"] or None, **kwargs)
        written, seconds = report.items_written, report.seconds
    else:
        written, seconds = _parallel_dump(dump_fn, spec, sweep, store_dir, workers, cfg, checkpoint, kwargs)
    _log(f"dump: {written} new items in {seconds:.1f} s")
    if cfg["quality"]["enabled"]:
        from jaxprobe.studies.sweep.quality import enhance_stage

        t0 = time.perf_counter()
        enhance_stage(spec, sweep, cfg, out / "quality" / key, _log)
        _log(f"quality: enhanced outputs ready in {time.perf_counter() - t0:.1f} s")
    return store_dir, desc, [u.id for u in utts]


def _parallel_dump(dump_fn, spec, sweep, store_dir: Path, workers: int, cfg: dict, checkpoint, kwargs):
    """The dump by ``workers`` threads, each with its own copy of the model at
    ``model.threads`` torch threads (default 1) on the same store: each takes the next chunk
    no other holds (the store's chunk locks), so they share the work without a fixed split.
    Independent one-thread workers use the cores without OpenMP's spin-waits, which stall
    a multi-threaded forward pass when the machine is shared. Every item's activations are
    those of a one-worker dump (each window is its own forward pass)."""
    import threading
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    from torch_bridge.dump import DumpStopped
    from torch_bridge.models import registry

    m = cfg["model"]
    specs = [spec] + [registry.load_model(m["name"], checkpoint or (m["checkpoint"] or None),
                                          layers=m["layers"] or None) for _ in range(workers - 1)]
    _log(f"dump: {workers} workers, {m['threads'] or 1} torch thread(s) each")
    import torch

    # Ctrl-C here, or one worker's failure, stops the others at their next forward pass (their
    # committed chunks stay) instead of after their whole share of the items.
    stop = threading.Event()
    old_threads, t0 = torch.get_num_threads(), time.perf_counter()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="dump") as pool:
            futures = [pool.submit(dump_fn, s, sweep, str(store_dir), threads=m["threads"] or 1, stop=stop,
                                   **{**kwargs, "progress": i == 0}) for i, s in enumerate(specs)]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            finally:
                if not all(f.done() and f.exception() is None for f in futures):
                    stop.set()
            failed = [f.exception() for f in futures if f.exception() is not None]
            first = next((e for e in failed if not isinstance(e, DumpStopped)), failed[0] if failed else None)
            if first is not None:
                raise first
            reports = [f.result() for f in futures]
    finally:  # each worker's capture() restores the count it found, which may be another's
        torch.set_num_threads(old_threads)
    _log("dump: items per worker " + ", ".join(str(r.items_written) for r in reports))
    return sum(r.items_written for r in reports), time.perf_counter() - t0


# ----------------------------------------------------------------------------- store -> arrays

def load_sweep_arrays(store_dir: Path, snrs: list[float], field: str = "snr"):
    """Read a complete sweep store into per-layer arrays (``snrs``: the levels of the condition
    ``field``, "snr", "c50" or "clipping").

    Returns
    -------
    layers : list of layer records (dicts) from the manifest, in depth order
    noisy : dict layer -> float32 array (K, S, U, C, F), items = (utterance, window)
    clean : dict layer -> float32 array (U, C, F)
    noises : list of K noise names; items : list of U (utterance id, window)
    """
    from torch_bridge.store import open_store

    store = open_store(store_dir)
    store.require_complete()
    idx = store.index()
    noise = idx.condition_field("noise")
    snr = idx.condition_field(field)
    utt = idx.utterance_ids()
    win = np.asarray(idx.window)
    items = sorted({(u, int(w)) for u, w in zip(utt, win)})
    item_pos = {it: i for i, it in enumerate(items)}
    noises = sorted({str(n) for n in noise if n != CLEAN})
    K, S, U = len(noises), len(snrs), len(items)
    snr_pos = {float(s): i for i, s in enumerate(snrs)}
    rows_noisy = np.full((K, S, U), -1, np.int64)
    rows_clean = np.full(U, -1, np.int64)
    for r in range(len(idx)):
        it = item_pos[(utt[r], int(win[r]))]
        if noise[r] == CLEAN:
            rows_clean[it] = idx.item[r]
        else:
            rows_noisy[noises.index(str(noise[r])), snr_pos[float(snr[r])], it] = idx.item[r]
    if (rows_noisy < 0).any() or (rows_clean < 0).any():
        raise RuntimeError(f"Store {store_dir} lacks some (noise, {field}, item) cells of the requested grid.")
    layers = store.manifest["layers"]
    noisy, clean = {}, {}
    for entry in layers:
        name = entry["name"]
        # 64-byte aligned, so the analysis hands each layer to JAX without a copy (an unaligned
        # (K, S, U, C, F) layer is copied into fresh memory at every call: 2.5-3.5x the CKA time)
        noisy[name] = aligned_view(store.read(name, rows_noisy.reshape(-1))).reshape((K, S, U) + store.layer_shape(name))
        clean[name] = aligned_view(store.read(name, rows_clean))
    return layers, noisy, clean, noises, items


# ----------------------------------------------------------------------------- analysis

def _model_record(store_dir: Path) -> dict:
    """The model as the store's manifest records it: name, kind, window, what the samples and
    features of per-utterance CKA are (``torch_bridge.ModelSpec``), checkpoint sha256."""
    manifest = json.loads((Path(store_dir) / "manifest.json").read_text())
    return {**(manifest.get("model") or {}), **((manifest.get("extra") or {}).get("model_spec") or {})}


def _analysis_stage(cfg, store_dir: Path, out: Path, data_desc: str, *, side_by_side: bool = False,
                    early_figures: dict | None = None) -> dict:
    """The analysis stage (cached). ``side_by_side``: the diffusion maps are computed in a
    thread beside the CKA (XLA releases the GIL; the CKA holds no eigen-solver program, so the
    diffusion's one-solver-in-flight rule stands), and, when ``early_figures`` is a dict, the
    report's CKA figures are drawn into it while the maps still compute
    (``jaxprobe.report.html.draw_cka_figures``; without quality results): the same values and
    files, in about the longer of the two times on two idle cores. Else one after the other."""
    from jaxprobe.bootstrap import n_distinct_resamples
    from jaxprobe.studies.sweep.analysis import (
        MIN_DISTINCT_RESAMPLES, CkaSettings, analyze_cka, resampling_summary,
    )
    from jaxprobe.studies.sweep.diffusion import analyze_diffusion

    snrs = level_grid(cfg)
    axis = cfg["sweep"]["axis"]
    qdir = out / "quality" / store_dir.name
    quality_on = cfg["quality"]["enabled"]
    # keyed on what the store holds (its checksums), not its name; reused only while every
    # output of the stage is intact (see write_stage_manifest below)
    parts = {"store": store_content_key(store_dir), "cka": cfg["cka"], "diffusion": cfg["diffusion"],
             "seed": cfg["sweep"]["seed"], "v": 4}
    if axis != "snr" or quality_on:  # SNR runs without quality keep their cache key
        from jaxprobe.studies.sweep.quality import quality_content_key

        parts.update(axis=axis, quality=quality_content_key(qdir) if quality_on else None, v=5)
    key = fingerprint(parts)
    res_path = out / "results.json"
    cached, why = stage_outputs_intact(out, "analysis", key)
    if cached:
        _log("analysis: cached (store content, settings and outputs unchanged)")
        return json.loads(res_path.read_text())
    if res_path.exists():
        _log(f"analysis: recomputing: {why}")
    invalidate_stage(out, "analysis")
    t0 = time.perf_counter()
    layers, noisy, clean, noises, items = load_sweep_arrays(store_dir, snrs, field=axis)
    _log(f"analysis: {len(layers)} layers, {len(noises)} noises x {len(snrs)} {AXIS_UNITS[axis][0]} levels x "
         f"{len(items)} items loaded "
         f"in {time.perf_counter() - t0:.1f} s")
    c = cfg["cka"]
    settings = CkaSettings(
        protocols=tuple(c["protocols"]), estimators=tuple(c["estimators"]), orientation=c["orientation"],
        n_boot=c["n_boot"], level=c["level"], method=c["method"], designs=tuple(c["designs"]),
        poor_fit_r2=c["poor_fit_r2"], seed=cfg["sweep"]["seed"],
    )
    mesh = mesh_from_config(cfg["compute"]["devices"])
    if mesh is not None:
        _log(f"analysis: {len(mesh.devices.flat)} devices")
    _log(f"analysis: CKA of {len(layers)} layers x {len(noises) * len(snrs) * len(items)} noisy items "
         f"({', '.join(settings.protocols)}; {', '.join(settings.estimators)})")
    resampling, warnings = resampling_summary(len(noises), len(items), settings)
    # the geometry bootstrap's "hierarchical" design also resamples items within each noise type
    # (millions of distinct resamples even for 4 noise types x 4 items); "noise" alone does not
    if (cfg["diffusion"]["design"] == "noise" and len(noises) >= 2
            and n_distinct_resamples(len(noises)) < MIN_DISTINCT_RESAMPLES):
        warnings.append(f"Diffusion intervals (design 'noise') resample {len(noises)} noise types: only "
                        f"{n_distinct_resamples(len(noises))} distinct resamples exist; they mean little.")
    import jax

    def assemble(cka_part, diff_part, quality_part, timings):
        return {
            "settings": {
                **cfg,
                "analysis_fingerprint": key,
                # relative to the run folder (plus its fingerprint), so a copied run folder stays valid
                "store": os.path.relpath(store_dir, out),
                "versions": {"jax": jax.__version__, "numpy": np.__version__},
                "timings_s": timings,
            },
            "data": {
                "corpus": data_desc, "n_utterances": len({u for u, _ in items}), "n_items": len(items),
                "noises": noises, **({"snrs": snrs} if axis == "snr" else {}), "axis": axis, "levels": snrs,
                "level_unit": AXIS_UNITS[axis][1], "n_windows": max(w for _, w in items) + 1,
                "utterance_ids": sorted({u for u, _ in items}),
            },
            "model": _model_record(store_dir),
            "layers": layers,
            "cka": cka_part["cka"],
            "regression": cka_part["regression"],
            "trends": cka_part["trends"],
            "diffusion": diff_part,
            "bootstrap": {"designs": resampling, "min_distinct_resamples": MIN_DISTINCT_RESAMPLES},
            "warnings": warnings,
            **quality_part,
        }

    def cka_figures(cka_part):  # in this thread while the maps compute in the other
        _tag_axis(cka_part, axis)
        if early_figures is not None and not quality_on:
            from jaxprobe.report.html import draw_cka_figures

            early_figures.update(draw_cka_figures(assemble(cka_part, {}, {}, {}), out,
                                                  formats=tuple(cfg["report"]["formats"])))
            _log(f"report: {len(early_figures)} CKA figures drawn beside the diffusion maps")

    diffusion = functools.partial(analyze_diffusion, noisy, layers, snrs, noises, cfg["diffusion"],
                                  seed=cfg["sweep"]["seed"])
    if side_by_side:
        _log(f"analysis: diffusion maps of {len(layers)} layers ({len(noises) * len(snrs)} centroids each) "
             f"beside the CKA ...")
        cka_part, t1, diff_part, t2 = _cka_beside_diffusion(
            lambda: analyze_cka(noisy, clean, layers, snrs, noises, settings, mesh=mesh, log=_log), diffusion,
            then=cka_figures)
        _log(f"analysis: CKA and bootstraps {t1 - t0:.1f} s; diffusion maps {t2 - t1:.1f} s after the CKA")
    else:
        cka_part = analyze_cka(noisy, clean, layers, snrs, noises, settings, mesh=mesh, log=_log)
        _tag_axis(cka_part, axis)
        t1 = time.perf_counter()
        _log(f"analysis: CKA and bootstraps {t1 - t0:.1f} s; diffusion maps of {len(layers)} layers "
             f"({len(noises) * len(snrs)} centroids each) ...")
        diff_part = diffusion()
        t2 = time.perf_counter()
    quality_part, quality_arrays = {}, {}
    if quality_on:
        import jax

        from jaxprobe.studies.sweep.quality import analyze_quality

        per_item = cka_part["arrays"].get(f"utterance/{settings.estimators[0]}")
        quality_part, quality_arrays = analyze_quality(
            qdir, model=cfg["model"]["name"], axis=axis, levels=snrs, noises=noises, items=items, layers=layers,
            cka_items=per_item, key=jax.random.fold_in(jax.random.key(settings.seed), 18), n_boot=settings.n_boot,
            level=settings.level, log=_log)
        quality_part["correlations_cka"] = {"protocol": "utterance", "estimator": settings.estimators[0]}
    t3 = time.perf_counter()
    for w in warnings:
        _log(f"analysis: warning: {w}")
    results = assemble(cka_part, diff_part, quality_part, {"cka": t1 - t0, "diffusion": t2 - t1, "quality": t3 - t2})
    _atomic_json(res_path, results)
    arrays = {k.replace("/", "__"): v for k, v in cka_part["arrays"].items()}
    tmp = out / ".cka_values.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out / "cka_values.npz")
    outputs = ["results.json", "cka_values.npz"]
    if quality_arrays:
        tmp = out / ".quality_values.tmp.npz"
        np.savez_compressed(tmp, **quality_arrays)
        os.replace(tmp, out / "quality_values.npz")
        outputs.append("quality_values.npz")
    write_stage_manifest(out, "analysis", key, outputs)
    _log(f"analysis: CKA {t1 - t0:.1f} s, diffusion {t2 - t1:.1f} s -> {res_path}")
    return results


def _cka_beside_diffusion(cka, diffusion, then=None):
    """``cka()`` in this thread while ``diffusion()`` runs in another, then ``then(cka result)``
    (optional) in this thread while it still runs; returns (cka result, the CKA's end time,
    diffusion result, its end time, not before the CKA's). A failure of any is
    raised as it was raised (the CKA's when both fail), after both have ended; an interrupt
    (Ctrl-C) is raised at once (the diffusion thread is a daemon: it ends with the process)."""
    import threading

    box: dict = {}

    def side():
        try:
            box["out"] = diffusion()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc
        box["t"] = time.perf_counter()

    thread = threading.Thread(target=side, name="diffusion", daemon=True)
    thread.start()
    try:
        cka_part = cka()
        t1 = time.perf_counter()
        if then is not None:
            then(cka_part)
    except KeyboardInterrupt:
        raise
    except BaseException:
        thread.join()
        raise
    thread.join()
    if "error" in box:
        raise box["error"]
    return cka_part, t1, box["out"], max(t1, box["t"])


def _tag_axis(cka_part: dict, axis: str) -> None:
    """Every CKA and regression record names its axis and level (records of the SNR axis keep
    ``snr`` too; on the other axes the level is the axis's value and ``snr`` is dropped)."""
    for r in cka_part["cka"]:
        r["axis"], r["level"] = axis, r["snr"]
        if axis != "snr":
            del r["snr"]
    for r in cka_part["regression"]:
        r["axis"], r["level"] = axis, "all"  # a fit over every level of the axis
    for r in cka_part["trends"]:
        r["axis"] = axis


def _analyse_repairing(cfg, out: Path, checkpoint: str | None, store_dir: Path, desc: str, *,
                       side_by_side: bool = False, early_figures: dict | None = None) -> dict:
    """The analysis stage. The dump stage checks the store's sizes and seals only; every file is
    checksummed when the analysis first reads it, so damage found there is repaired here: the
    whole store is verified, its damaged chunks recomputed by the dump stage, and the analysis
    run again."""
    from torch_bridge.store import StoreIntegrityError, verify_store

    try:
        return _analysis_stage(cfg, store_dir, out, desc, side_by_side=side_by_side, early_figures=early_figures)
    except StoreIntegrityError as exc:
        if not exc.chunks:
            raise
        _log(f"analysis: the store is damaged ({exc.problems[0][0]}: {exc.problems[0][1]}); verifying it")
        bad = sorted(set(exc.chunks) | set(verify_store(store_dir).problems))
        store_dir, desc, _ = _dump_stage(cfg, out, checkpoint, recompute=bad)
        return _analysis_stage(cfg, store_dir, out, desc, side_by_side=side_by_side, early_figures=early_figures)


# ----------------------------------------------------------------------------- entry point

def _preflight(cfg: dict, out_dir, checkpoint: str | None) -> Path:
    """What can be checked before any work, beyond the config's own values: the devices JAX
    sees, the data folders and the checkpoint exist, the output folder can be written."""
    check_devices(cfg["compute"]["devices"])
    d = cfg["data"]
    if d["source"] == "embedded":
        check_embedded_noises(d["noises"], d["corpus_size"], "data.noises")
    if d["source"] == "voicebank_demand":
        for k in ("voicebank", "demand"):
            if not Path(d[k]).expanduser().is_dir():
                raise ConfigError(f"Configuration key 'data.{k}' must name an existing folder; got {d[k]!r}.")
    from torch_bridge.models.registry import resolve_model

    resolve_model(cfg["model"]["name"])  # an unknown model name fails before any work
    ckpt = checkpoint or cfg["model"]["checkpoint"]
    if ckpt and not Path(ckpt).expanduser().is_file():
        raise ConfigError(f"The model checkpoint ({'--checkpoint' if checkpoint else 'model.checkpoint'}) must be "
                          f"an existing file; got {str(ckpt)!r}.")
    return ensure_writable_dir(out_dir, "--out")


@locks_output_folder("sweep")
def run(config, out_dir, *, checkpoint: str | None = None, devices: str | None = None, model: str | None = None,
        layers=None, workers: int | None = None, on_results=None) -> dict:
    """Run (or resume) the sweep study. ``config``: a path, a shipped name ("demo",
    "paper") or a dict; ``model`` / ``layers`` override ``model.name`` / ``model.layers``
    (any ``torch_bridge.load_model`` name; glob patterns over module paths); ``workers``
    overrides ``model.workers`` (parallel dump workers; 0 = auto). ``on_results``: optional
    ``on_results(results)``, called once results.json is written, before the report (the demo
    starts its comparison there). Returns the paths of the outputs."""
    over: dict = {"compute": {"devices": str(devices)}} if devices else {}
    if model:
        over["model"] = {"name": str(model)}
    if layers:
        over.setdefault("model", {})["layers"] = [str(x) for x in layers]
    if workers is not None:
        over.setdefault("model", {})["workers"] = workers
    cfg = load_sweep_config(config, **over)
    out = _preflight(cfg, out_dir, checkpoint)
    _enable_compilation_cache()
    _atomic_json(out / "config.json", cfg)
    # two or more workers (chosen before this run loads the machine): the analysis's independent
    # parts side by side too; one worker (a loaded machine): one after the other
    side_by_side = (cfg["model"]["workers"] or auto_workers()) > 1
    store_dir, desc, _ = _dump_stage(cfg, out, checkpoint)
    early: dict = {}  # the CKA figures, drawn beside the diffusion maps when side by side
    results = _analyse_repairing(cfg, out, checkpoint, store_dir, desc, side_by_side=side_by_side,
                                 early_figures=early)
    if on_results is not None:
        on_results(results)
    from jaxprobe.report import write_report

    t0 = time.perf_counter()
    paths = write_report(results, out, formats=tuple(cfg["report"]["formats"]), log=_log, drawn=early)
    _log(f"report: {paths.get('html', out / 'report.html')} in {time.perf_counter() - t0:.1f} s")
    return {"results": str(out / "results.json"), **{k: str(v) for k, v in paths.items()}}
