"""`jaxprobe demo`: the main job on the embedded default — the SNR-sweep study of MUSE and of
GTCRN (= `jaxprobe sweep --config demo --model muse|gtcrn`), then their comparison
(= `jaxprobe compare`)."""
from __future__ import annotations


DESCRIPTION = """Run the main job on the embedded default: the SNR-sweep study of two speech-enhancement
models, MUSE and GTCRN (4 real utterances x 4 noise types x 9 SNRs each; the same as
`jaxprobe sweep --config demo --model muse|gtcrn`), then the comparison report of the two
(`jaxprobe compare`). About 2 minutes on a 2-core CPU (112 s measured on an idle machine, cold XLA cache), most of
it MUSE; the models run in parallel workers, one per CPU core the load average leaves idle
(--workers), and with two or more the GTCRN sweep runs beside MUSE's in a child process
(its log: OUT/gtcrn.log). Checkpoints are
taken from --checkpoint / --gtcrn-checkpoint, $JAXPROBE_MUSE_CHECKPOINT /
$JAXPROBE_GTCRN_CHECKPOINT, the cache, or downloaded once and verified."""

EPILOG = """example:
  jaxprobe demo --out runs/demo

outputs (in --out):
  muse/, gtcrn/      one sweep run each: report.html, report.md, results.json, CSV tables,
                     figures/, store/<fingerprint>/ (the activation store; a re-run reuses it)
  compare/           the comparison: report.html, report.md, results.json, profile.csv,
                     curves.csv, blocks.csv, trends.csv, cross_cka.csv, figures/"""

MODELS = ("muse", "gtcrn")


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--checkpoint", default=None, help="MUSE g_best path")
    p.add_argument("--gtcrn-checkpoint", default=None, help="GTCRN checkpoint (model_trained_on_vctk.tar)")
    p.add_argument("--workers", type=int, default=0,
                   help="parallel model workers of the dumps, one torch thread each (default 0: the CPU cores "
                        "the load average leaves idle plus one; 1 when the load fills every core)")


def main(args) -> int:
    import json
    import os
    import time
    from pathlib import Path

    from jaxprobe._cmd_sweep import print_outputs
    from jaxprobe.errors import ConfigError
    from jaxprobe.studies import compare, sweep
    from jaxprobe.studies._common import auto_workers, guard_xla_threads

    if args.workers < 0:
        raise ConfigError(f"--workers must be an int >= 0 (0 = automatic); got {args.workers}.")
    out = Path(args.out)
    seconds = {}
    # dump workers chosen once, before this run loads the machine itself (the config's 0 = auto)
    workers = args.workers or auto_workers()
    xla_one = guard_xla_threads(workers)  # a busy machine: XLA on one thread too
    print(f"demo: {workers} dump worker(s), one torch thread each; XLA on {'one thread' if xla_one else 'its default threads'} "
          f"(load {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} cores)", flush=True)
    ckpts = dict(zip(MODELS, (args.checkpoint, args.gtcrn_checkpoint)))
    child = None
    if workers > 1:  # cores to spare: the GTCRN sweep runs beside MUSE's, in its own process
        from jaxprobe.studies.sweep.config import load_sweep_config
        from jaxprobe.studies.sweep.runner import embedded_corpus

        d = load_sweep_config("demo")["data"]
        embedded_corpus(d["cache_dir"], d["corpus_size"])  # built (if missing) here, once, before two readers
        child = _start_sweep_process("gtcrn", out / "gtcrn", ckpts["gtcrn"])
    t_all = time.perf_counter()
    try:
        for name in MODELS:
            t0 = time.perf_counter()
            if child is not None and name == "gtcrn":
                print(f"demo: waiting for the SNR sweep of gtcrn (log: {child.log})", flush=True)
                _finish_sweep_process(child)
                print_outputs(json.loads((out / "gtcrn" / ".demo-outputs.json").read_text()))
                seconds[name] = time.perf_counter() - t_all  # it ran beside the MUSE sweep
                continue
            print(f"demo: the SNR sweep of {name} -> {out / name}", flush=True)
            print_outputs(sweep.run("demo", out / name, checkpoint=ckpts[name], model=name, workers=workers))
            seconds[name] = time.perf_counter() - t0
    finally:
        if child is not None and child.poll() is None:  # interrupted: stop the child too (it resumes next time)
            child.terminate()
            child.wait()
    t0 = time.perf_counter()
    print(f"demo: comparing {' and '.join(MODELS)} -> {out / 'compare'}", flush=True)
    print_outputs(compare.run([out / m for m in MODELS], out / "compare", inputs=("clean", "all")))
    seconds["compare"] = time.perf_counter() - t0
    print("demo: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
          + f"{' (side by side)' if child is not None else ''}; total {time.perf_counter() - t_all:.0f} s", flush=True)
    return 0


def _start_sweep_process(model: str, out, checkpoint):
    """``jaxprobe sweep --config demo --model MODEL`` in a child process at one dump worker,
    its output in ``out``.log; the outputs' paths go to ``out``/.demo-outputs.json."""
    import subprocess
    import sys
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    code = ("import json, sys; from pathlib import Path; from jaxprobe.studies.sweep import run; "
            "p = run('demo', sys.argv[1], checkpoint=sys.argv[2] or None, model=sys.argv[3], workers=1); "
            "Path(sys.argv[1], '.demo-outputs.json').write_text(json.dumps(p))")
    log = out.with_suffix(".log")
    fh = open(log, "w")
    child = subprocess.Popen([sys.executable, "-c", code, str(out), checkpoint or "", model], stdout=fh,
                             stderr=subprocess.STDOUT)
    fh.close()
    child.log = log
    return child


def _finish_sweep_process(child) -> None:
    """Wait for the child sweep; its failure is this command's, with the end of its log."""
    if child.wait() != 0:
        from pathlib import Path

        text = Path(child.log).read_text(errors="replace").replace("\r", "\n")
        tail = "".join(text.splitlines(True)[-15:])
        raise RuntimeError(f"The GTCRN sweep (a child process) failed with exit status {child.returncode}; "
                           f"the end of its log {child.log}:\n{tail}")
