"""Input preparation of the demo's sweep, old way against new way, in one run: load the embedded
corpus, select the demo's utterances and noises, and compute the 148 signals the dump feeds a
model (per utterance its clean reference, then every noise x SNR mixture).

"old" is the code of ``--baseline`` (default: the commit before the lazy corpus and the
filter-once loudness), read with ``git show`` and imported beside the working tree's modules:
``load_corpus`` decoding every recording, and ``mix_at_snr`` running pyloudnorm at every
trial gain and re-normalising each utterance's clean reference for every item. "new" is the
working tree. The two alternate in rounds (old, new, old, ...) so that a shared machine slows
them alike; the speed-ups are medians of per-round ratios. CPU seconds are this process's.
Both ways must give the same 148 signals: the largest absolute difference and the number of
items whose ``info`` differs are written too (a non-zero one fails the run).

pyloudnorm (and scipy.signal under it) is imported before the rounds; its import time is
reported on its own (``import_s``, measured in a fresh interpreter).

    python bench/bench_mixing.py [--rounds 3] [--config demo] [--baseline REV]

Writes bench/results/mixing.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import process_cpu, write_results  # noqa: E402

BASELINE = "3e398e3"  # main before s9-inputs: eager corpus, pyloudnorm per trial gain


def _module_at(rev: str, path: str, name: str):
    """The file ``path`` at git revision ``rev`` imported as module ``name`` (inside its package,
    so its relative imports resolve to the working tree's modules)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True,
                         check=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None, origin=f"{rev}:{path}")
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = name.rsplit(".", 1)[0]
    sys.modules[name] = mod
    exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
    return mod


def _prepare(load_corpus, mix_at_snr, cfg, by_duration: bool = False, phases: dict | None = None):
    """The demo's signals in the dump's order; ``phases`` gets the CPU seconds of the corpus load +
    selection and of the mixing."""
    from jaxprobe.studies.sweep.config import level_grid
    from jaxprobe.studies.sweep.runner import SELECT_WINDOW_S, select_utterances

    d, sw = cfg["data"], cfg["sweep"]
    c0 = process_cpu()
    corpus = load_corpus(d["cache_dir"] or None, size=d["corpus_size"], build=False)
    split = d["speech_split"]
    pool = (corpus.real_speech if split == "real" else
            [u for u in corpus.utterances if split == "all" or u.meta.get("split") == split])
    utts = select_utterances(pool, d["utterances"], SELECT_WINDOW_S + 0.1,
                   (lambda r: r.duration) if by_duration else (lambda r: r.waveform.shape[0] / r.sample_rate))
    noises = [corpus.noises[k] for k in (d["noises"] or sorted(corpus.noises))]
    snrs = level_grid(cfg)
    kw = dict(duration=d["duration"], short=d["short"], target_lufs=d["target_lufs"], seed=sw["seed"])
    c1 = process_cpu()
    out = []
    for u in utts:  # the dump's order: clean reference, then noise x SNR
        m = mix_at_snr(u, noises[0], snrs[0], **kw)
        out.append((m.clean, {"clean_gain": m.info["clean_gain"], "clean_lufs_before": m.info["clean_lufs_before"],
                              "clean_lufs_after": m.info["clean_lufs_after"]}))
        for nz in noises:
            for s in snrs:
                m = mix_at_snr(u, nz, s, **kw)
                out.append((m.noisy, m.info))
    if phases is not None:
        phases.update(corpus_cpu_s=c1 - c0, mixing_cpu_s=process_cpu() - c1)
    return out


def _import_seconds() -> float:
    code = ("import time, numpy, torch; t = time.perf_counter(); import pyloudnorm; "
            "print(time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--config", default="demo")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old code (default %(default)s)")
    ap.add_argument("--tag", default="mixing")
    args = ap.parse_args()

    import pyloudnorm  # noqa: F401  (both ways need it; timed apart)

    import torch_bridge.mixing as new_mix
    from jaxprobe.studies.sweep.config import load_sweep_config
    from torch_bridge.corpus import build as new_build

    old_mix = _module_at(args.baseline, "torch_bridge/mixing.py", "torch_bridge._bench_old_mixing")
    old_build = _module_at(args.baseline, "torch_bridge/corpus/build.py", "torch_bridge.corpus._bench_old_build")
    cfg = load_sweep_config(args.config)
    ways = {"old": (old_build.load_corpus, old_mix.mix_at_snr, False),
            "new": (new_build.load_corpus, new_mix.mix_at_snr, False),
            "new_duration": (new_build.load_corpus, new_mix.mix_at_snr, True)}
    load0 = os.getloadavg()
    times: dict[str, list[dict]] = {w: [] for w in ways}
    results = {}
    for r in range(args.rounds):
        for way, (load, mix, by_duration) in ways.items():
            new_mix._CLEAN_MEMO.clear()  # every round starts cold (the old code has no memo)
            w0, c0 = time.perf_counter(), process_cpu()
            phases: dict = {}
            results[way] = _prepare(load, mix, cfg, by_duration, phases)
            times[way].append({"wall_s": time.perf_counter() - w0, "cpu_s": process_cpu() - c0, **phases})
            print(f"round {r}: {way} {len(results[way])} items {times[way][-1]['wall_s']:.2f} s wall "
                  f"{times[way][-1]['cpu_s']:.2f} s CPU", flush=True)
    old, new = results["old"], results["new"]
    assert len(old) == len(new) == len(results["new_duration"]) and len(new) > 0
    pairs = [(a, b) for w in ("new", "new_duration") for a, b in zip(old, results[w])]
    max_diff = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for (a, _), (b, _) in pairs)
    identical = sum(a.dtype == b.dtype and np.array_equal(a, b) for (a, _), (b, _) in pairs) // 2
    info_diff = sum(ia != ib for (_, ia), (_, ib) in pairs)
    med = {w: {k: statistics.median(t[k] for t in times[w])
               for k in ("wall_s", "cpu_s", "corpus_cpu_s", "mixing_cpu_s")} for w in times}

    def speedup(way, key):
        return statistics.median(o[key] / n[key] for o, n in zip(times["old"], times[way]))

    payload = {
        "what": f"demo input preparation ({args.config}): load_corpus + {len(new)} signals (clean refs + mixtures)",
        "baseline_rev": args.baseline, "rounds": args.rounds, "items": len(new),
        "ways": {"old": "baseline code", "new": "this tree, utterances selected by decoded waveform length (the runner before it read record.duration)",
                 "new_duration": "this tree, selection by record.duration (the runner's rule now)"},
        **{w: med[w] for w in med}, "per_round": times,
        "speedup_wall_median": speedup("new", "wall_s"), "speedup_cpu_median": speedup("new", "cpu_s"),
        "speedup_wall_median_duration": speedup("new_duration", "wall_s"),
        "speedup_cpu_median_duration": speedup("new_duration", "cpu_s"),
        "cpu_saved_s": med["old"]["cpu_s"] - med["new"]["cpu_s"],
        "cpu_saved_s_duration": med["old"]["cpu_s"] - med["new_duration"]["cpu_s"],
        "max_abs_difference": max_diff, "bit_identical_items": identical, "info_differs_items": info_diff,
        "pyloudnorm_import_s": _import_seconds(),
        "load_average_start": list(load0), "load_average_end": list(os.getloadavg()),
    }
    out = write_results(args.tag, payload)
    print(f"old {med['old']['wall_s']:.2f} s wall / {med['old']['cpu_s']:.2f} s CPU, new {med['new']['wall_s']:.2f} s"
          f" / {med['new']['cpu_s']:.2f} s: x{payload['speedup_wall_median']:.2f} wall, "
          f"x{payload['speedup_cpu_median']:.2f} CPU; new_duration {med['new_duration']['wall_s']:.2f} s / "
          f"{med['new_duration']['cpu_s']:.2f} s: x{payload['speedup_wall_median_duration']:.2f} wall, "
          f"x{payload['speedup_cpu_median_duration']:.2f} CPU "
          f"(CPU corpus/mixing: old {med['old']['corpus_cpu_s']:.2f}/{med['old']['mixing_cpu_s']:.2f}, new "
          f"{med['new']['corpus_cpu_s']:.2f}/{med['new']['mixing_cpu_s']:.2f}, new_duration "
          f"{med['new_duration']['corpus_cpu_s']:.2f}/{med['new_duration']['mixing_cpu_s']:.2f}); "
          f"max |diff| {max_diff:g}, {identical}/{len(new)} bit-identical, "
          f"{info_diff} info differ; pyloudnorm import {payload['pyloudnorm_import_s']:.2f} s; load {load0} -> {out}")
    if max_diff != 0.0 or info_diff:
        sys.exit("the new way changed the signals")


if __name__ == "__main__":
    main()
