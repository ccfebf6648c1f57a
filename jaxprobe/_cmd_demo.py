"""`jaxprobe demo`: the main job on the embedded default — the SNR-sweep study of MUSE and of
GTCRN (= `jaxprobe sweep --config demo --model muse|gtcrn`), then their comparison
(= `jaxprobe compare`)."""
from __future__ import annotations


DESCRIPTION = """Run the main job on the embedded default: the SNR-sweep study of two speech-enhancement
models, MUSE and GTCRN (4 real utterances x 4 noise types x 9 SNRs each; the same as
`jaxprobe sweep --config demo --model muse|gtcrn`), then the comparison report of the two
(`jaxprobe compare`). About 80 s on a 2-core CPU (72-83 s measured, cold XLA cache, with MUSE's C
kernels; 104-123 s without them), most of it MUSE; the models run in parallel workers, one per CPU core the load average leaves idle
(--workers), and with two or more the GTCRN sweep runs beside MUSE's in a child process
(its log: OUT/gtcrn.log), which then runs the comparison beside MUSE's report (OUT/compare.log); MUSE's
diffusion maps run beside its CKA and CKA figures. Checkpoints are
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
COMPARE_INPUTS = ("clean", "all")


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
    if workers > 1:  # cores to spare: the GTCRN sweep runs beside MUSE's, in its own process, then the comparison
        from jaxprobe.studies.sweep.config import load_sweep_config

        d = load_sweep_config("demo")["data"]
        if not _corpus_built(d["cache_dir"], d["corpus_size"]):
            from jaxprobe.studies.sweep.runner import embedded_corpus

            embedded_corpus(d["cache_dir"], d["corpus_size"])  # built here, once, before two readers
        # started first thing: its corpus read and imports overlap the parent's
        child = _start_sweep_process("gtcrn", out / "gtcrn", ckpts["gtcrn"],
                                     compare=([out / m for m in MODELS], out / "compare"))
    t_all = time.perf_counter()
    t_compare = None

    def compare_in_child(_results):  # MUSE's results.json is written: the child may compare (after GTCRN's sweep)
        nonlocal t_compare
        t_compare = time.perf_counter()
        _tell(child, "compare")
        print(f"demo: comparing {' and '.join(MODELS)} -> {out / 'compare'} in the side process, beside MUSE's "
              f"report (log: {child.compare_log})", flush=True)

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
            print_outputs(sweep.run("demo", out / name, checkpoint=ckpts[name], model=name, workers=workers,
                                    on_results=compare_in_child if child is not None else None))
            seconds[name] = time.perf_counter() - t0
    finally:
        if child is not None and child.poll() is None:  # interrupted: stop the child too (it resumes next time)
            child.terminate()
            child.wait()
    if child is not None:  # compared in the child, beside MUSE's report
        print(Path(child.compare_log).read_text(errors="replace"), end="", flush=True)
        print_outputs(json.loads((out / "compare" / ".demo-outputs.json").read_text()))
        seconds["compare"] = time.perf_counter() - t_compare
    else:
        t0 = time.perf_counter()
        print(f"demo: comparing {' and '.join(MODELS)} -> {out / 'compare'}", flush=True)
        print_outputs(compare.run([out / m for m in MODELS], out / "compare", inputs=COMPARE_INPUTS))
        seconds["compare"] = time.perf_counter() - t0
    print("demo: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
          + f"{' (side by side)' if child is not None else ''}; total {time.perf_counter() - t_all:.0f} s", flush=True)
    return 0


def _corpus_built(cache_dir, size) -> bool:
    """Whether the embedded corpus has its manifest (read, not checksummed: each reader verifies
    the files it reads, and repairs them with atomic writes)."""
    from torch_bridge.corpus.build import corpus_root, read_manifest  # plain Python; no torch

    return read_manifest(corpus_root(cache_dir or None, size)) is not None


def _start_sweep_process(model: str, out, checkpoint, *, compare=None):
    """``jaxprobe sweep --config demo --model MODEL`` in a child process at one dump worker,
    its output in ``out``.log; the outputs' paths go to ``out``/.demo-outputs.json.

    ``compare``: optional (run folders, output folder): after its sweep the child waits for the
    word "compare" on its stdin (:func:`_tell`; the parent says it once the other runs' results
    are written) and then runs ``jaxprobe compare`` of the run folders into the output folder
    (its log: the output folder's ``.log``; its outputs' paths: OUT/.demo-outputs.json); at the
    end of its stdin it stops without comparing."""
    import subprocess
    import sys
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(out), checkpoint or "", model]
    if compare is not None:
        runs, cmp_out = compare
        argv += [str(Path(cmp_out)), *map(str, runs)]
        Path(cmp_out, ".demo-outputs.json").unlink(missing_ok=True)
    (out / ".demo-outputs.json").unlink(missing_ok=True)
    code = "import sys; from jaxprobe._cmd_demo import _side_main; sys.exit(_side_main(sys.argv[1:]))"
    log = out.with_suffix(".log")
    fh = open(log, "w")
    child = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.PIPE if compare is not None else subprocess.DEVNULL, text=True)
    fh.close()
    child.log = log
    child.out = out
    child.compare_log = Path(compare[1]).with_suffix(".log") if compare is not None else None
    return child


def _tell(child, word: str) -> None:
    """Say ``word`` to a child of :func:`_start_sweep_process` (it reads it after its sweep)."""
    try:
        child.stdin.write(word + "\n")
        child.stdin.flush()
    except (BrokenPipeError, OSError):  # it has ended already: _finish_sweep_process says why
        pass


def _side_main(argv) -> int:
    """The child of :func:`_start_sweep_process`: OUT CHECKPOINT MODEL [COMPARE_OUT RUN_DIR...]."""
    import contextlib
    import json
    import sys
    from pathlib import Path

    from jaxprobe.studies.sweep import run
    from torch_bridge.runtime import retain_freed_memory

    retain_freed_memory()  # as jaxprobe.cli.main does for the parent (no torch imported by it)
    out, checkpoint, model, *rest = argv
    p = run("demo", out, checkpoint=checkpoint or None, model=model, workers=1)
    Path(out, ".demo-outputs.json").write_text(json.dumps(p))
    if not rest:
        return 0
    cmp_out, *runs = rest
    print("demo: sweep done; the comparison waits for the other runs' results", flush=True)
    if sys.stdin.readline().strip() != "compare":  # the parent ended without them (interrupted or failed)
        print("demo: no comparison asked for; stopping", flush=True)
        return 0
    from jaxprobe.studies import compare

    Path(cmp_out).mkdir(parents=True, exist_ok=True)
    with open(Path(cmp_out).with_suffix(".log"), "w") as fh, contextlib.redirect_stdout(fh):
        try:
            print(f"demo: comparing {' and '.join(Path(r).name for r in runs)} -> {cmp_out}", flush=True)
            q = compare.run(runs, cmp_out, inputs=COMPARE_INPUTS)
        except BaseException:
            import traceback

            traceback.print_exc(file=fh)
            fh.flush()
            raise
    Path(cmp_out, ".demo-outputs.json").write_text(json.dumps(q))
    return 0


def _finish_sweep_process(child) -> None:
    """Wait for the child sweep; its failure is this command's, with the end of its log (the
    comparison's log when the sweep had finished and the comparison failed)."""
    if child.stdin is not None:
        child.stdin.close()  # nothing more to say: a child still waiting for "compare" stops
    if child.wait() != 0:
        from pathlib import Path

        swept = (Path(child.out) / ".demo-outputs.json").is_file() if getattr(child, "out", None) else False
        log = child.compare_log if swept and child.compare_log is not None else child.log
        what = ("The comparison (run in the GTCRN sweep's child process after its sweep)" if log != child.log
                else "The GTCRN sweep (a child process)")
        text = Path(log).read_text(errors="replace").replace("\r", "\n") if Path(log).is_file() else ""
        tail = "".join(text.splitlines(True)[-15:])
        raise RuntimeError(f"{what} failed with exit status {child.returncode}; the end of its log {log}:\n{tail}")
