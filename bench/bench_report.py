"""Where the "report + figures" stage of `jaxprobe demo` spends its CPU: the MUSE and GTCRN sweep
reports and the comparison report re-rendered from a finished demo folder's results.json files
(no JAX, no analysis), every figure function timed in process CPU seconds (user + sys) and wall.

    .venv/bin/python bench/bench_report.py --demo DIR [--tag NAME] [--profile FILE] [--keep OUT]

DIR is a finished demo output (DIR/muse, DIR/gtcrn, DIR/compare with results.json). The reports
are written into a fresh temporary folder (or OUT/<study>, emptied first), so the figure cache is empty, so every figure
is drawn. Writes bench/results/report[_TAG].json. The baseline is the same script run on the
code before a change (e.g. PYTHONPATH pointing at another checkout) in the same period: CPU
seconds per figure and per report, with /proc/loadavg recorded.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402

STUDIES = ("muse", "gtcrn", "compare")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _load() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", required=True, type=Path, help="a finished demo output folder")
    ap.add_argument("--tag", default="", help="results file suffix: bench/results/report_TAG.json")
    ap.add_argument("--profile", default=None, help="write a cProfile of the three reports to this file")
    ap.add_argument("--keep", default=None, type=Path, help="write the reports here (default: a temp folder)")
    args = ap.parse_args(argv)
    load0 = _load()
    out = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))

    c0, w0 = _cpu(), time.perf_counter()
    import matplotlib  # noqa: F401  (timed on its own: the first import builds nothing, the font cache is on disk)

    import jaxprobe.report as report_pkg
    import jaxprobe.report.compare as compare_mod
    import jaxprobe.report.figures as figures_mod
    import jaxprobe.report.quality_figures as quality_mod
    imports = {"cpu_s": _cpu() - c0, "wall_s": time.perf_counter() - w0}

    per_fig: list[dict] = []
    current = [""]

    def timed(mod, name):
        fn = getattr(mod, name)

        @functools.wraps(fn)
        def wrapper(*a, **k):
            c, w = _cpu(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                extra = {kk: k[kk] for kk in ("protocol", "estimator") if kk in k}
                if name == "fig_cross":
                    extra = {"inputs": a[1]["inputs"]}
                per_fig.append({"report": current[0], "figure": name, **extra,
                                "cpu_s": round(_cpu() - c, 3), "wall_s": round(time.perf_counter() - w, 3)})

        setattr(mod, name, wrapper)

    for name in ("fig_cka_heatmap", "fig_regression", "fig_diffusion_snr", "fig_inter_layer", "fig_cka_curves",
                 "fig_dc1"):
        timed(figures_mod, name)
    for name in ("fig_quality", "fig_correlations"):
        timed(quality_mod, name)
    for name in ("fig_curves", "fig_profile", "fig_cross"):
        timed(compare_mod, name)

    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
    reports = {}
    for study in STUDIES:
        results = json.loads((args.demo / study / "results.json").read_text(encoding="utf-8"))
        current[0] = study
        dest = out / study
        if dest.exists():  # an earlier run's figure cache would skip the drawing
            shutil.rmtree(dest)
        c, w = _cpu(), time.perf_counter()
        if prof:
            prof.enable()
        if study == "compare":
            compare_mod.write_compare_report(results, dest)
        else:
            report_pkg.write_report(results, dest)
        if prof:
            prof.disable()
        reports[study] = {"cpu_s": round(_cpu() - c, 2), "wall_s": round(time.perf_counter() - w, 2)}
    if prof:
        prof.dump_stats(args.profile)

    res = {"benchmark": "report", "what": "the demo's three reports re-rendered from results.json, figures drawn",
           "load_start": load0, "load_end": _load(), "imports": {k: round(v, 2) for k, v in imports.items()},
           "reports": reports, "total_cpu_s": round(sum(r["cpu_s"] for r in reports.values()), 2),
           "figures": per_fig, "machine": machine()}
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / f"report{'_' + args.tag if args.tag else ''}.json"
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, dest)
    print(f"{'report':8s} {'figure':20s} {'variant':24s} {'CPU s':>7s} {'wall s':>7s}")
    for f in per_fig:
        var = "/".join(str(f[k]) for k in ("protocol", "estimator", "inputs") if k in f)
        print(f"{f['report']:8s} {f['figure']:20s} {var:24s} {f['cpu_s']:7.2f} {f['wall_s']:7.2f}")
    for k, v in reports.items():
        print(f"{k:8s} {'(whole report)':20s} {'':24s} {v['cpu_s']:7.2f} {v['wall_s']:7.2f}")
    print(f"imports CPU {imports['cpu_s']:.2f} s; reports CPU {res['total_cpu_s']:.2f} s; "
          f"load {load0} -> {res['load_end']} -> {dest} (reports in {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
