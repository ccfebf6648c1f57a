"""Where the "report + figures" stage of `jaxprobe demo` spends its CPU, and what the report's own
figure saving (`jaxprobe.report._style.save`) saves against matplotlib's plain one.

The MUSE and GTCRN sweep reports and the comparison report are re-rendered from a finished demo
folder's results.json files (no JAX, no analysis), twice per study, in turns: with the baseline
save — what the report did before: ``savefig(bbox_inches="tight")`` for the PNG, then again for
the PDF (layout kept, a second measuring draw), matplotlib's own font subsets — and with the
report's save (layout solved and measured once, one draw per file, PDF font subsets kept and
lean). Every figure function is timed in process CPU seconds (user + sys) and wall; the two
runs' PNG, CSV, markdown and HTML files are compared byte for byte.

    .venv/bin/python bench/bench_report.py [--demo runs/demo] [--tag NAME] [--profile FILE] [--keep OUT]

DIR is a finished demo output (DIR/muse, DIR/gtcrn, DIR/compare with results.json; `make demo`
writes runs/demo). Reports go to a fresh temporary folder (or OUT/{baseline,report}/<study>,
emptied first), so the figure cache is empty and every figure is drawn. Writes
bench/results/report[_TAG].json; /proc/loadavg is recorded.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, loadavg, machine, process_cpu  # noqa: E402

STUDIES = ("muse", "gtcrn", "compare")
ROOT = Path(__file__).resolve().parents[1]
FIGURE_FUNCTIONS = {
    "jaxprobe.report.figures": ("fig_cka_heatmap", "fig_regression", "fig_diffusion_snr", "fig_inter_layer",
                                "fig_cka_curves", "fig_dc1"),
    "jaxprobe.report.quality_figures": ("fig_quality", "fig_correlations"),
    "jaxprobe.report.compare": ("fig_curves", "fig_profile", "fig_cross"),
}


_cpu, _load = process_cpu, loadavg


def baseline_save(fig, out_dir, stem: str, formats=("png", "pdf")):
    """The report's save before this benchmark's change: two tight-box saves, matplotlib's fonts."""
    from jaxprobe.report._style import DPI

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
    fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.02)
    if "pdf" not in formats:
        return png, None
    fig.set_layout_engine("none")
    fig.savefig(pdf, format="pdf", dpi=DPI, bbox_inches="tight", pad_inches=0.02)
    return png, pdf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo", help="a finished demo output folder")
    ap.add_argument("--tag", default="", help="results file suffix: bench/results/report_TAG.json")
    ap.add_argument("--profile", default=None, help="write a cProfile of the report's own runs to this file")
    ap.add_argument("--keep", default=None, type=Path, help="write the reports here (default: a temp folder)")
    args = ap.parse_args(argv)
    if not all((args.demo / s / "results.json").is_file() for s in STUDIES):
        print(f"bench_report: no finished demo in {args.demo} (muse/, gtcrn/, compare/ with results.json); "
              "run `make demo` or give --demo DIR. Nothing measured.")
        return 0
    load0 = _load()
    out = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))

    c0, w0 = _cpu(), time.perf_counter()
    import importlib

    import jaxprobe.report as report_pkg
    import jaxprobe.report._style as style_mod
    import jaxprobe.report.compare as compare_mod
    imports = {"cpu_s": _cpu() - c0, "wall_s": time.perf_counter() - w0}

    per_fig: list[dict] = []
    current = {"report": "", "save": ""}
    modules = {name: importlib.import_module(name) for name in FIGURE_FUNCTIONS}

    def timed(mod, name):
        fn = getattr(mod, name)

        @functools.wraps(fn)
        def wrapper(*a, **k):
            c, w = _cpu(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                variant = "/".join(str(k[kk]) for kk in ("protocol", "estimator") if kk in k)
                if name == "fig_cross":
                    variant = a[1]["inputs"]
                per_fig.append({**current, "figure": name, "variant": variant,
                                "cpu_s": round(_cpu() - c, 3), "wall_s": round(time.perf_counter() - w, 3)})

        setattr(mod, name, wrapper)

    for mod_name, names in FIGURE_FUNCTIONS.items():
        for name in names:
            timed(modules[mod_name], name)

    @contextlib.contextmanager
    def saving_with(which):
        current["save"] = which
        fn = baseline_save if which == "baseline" else style_mod.save
        old = {m: m.save for m in modules.values()}
        for m in modules.values():
            m.save = fn
        try:
            yield
        finally:
            for m, f in old.items():
                m.save = f

    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
    reports: dict[str, dict] = {"baseline": {}, "report": {}}
    for study in STUDIES:
        results = json.loads((args.demo / study / "results.json").read_text(encoding="utf-8"))
        current["report"] = study
        for which in ("baseline", "report"):  # in turns, so both see the same machine load
            dest = out / which / study
            if dest.exists():  # an earlier run's figure cache would skip the drawing
                shutil.rmtree(dest)
            c, w = _cpu(), time.perf_counter()
            with saving_with(which):
                if prof and which == "report":
                    prof.enable()
                if study == "compare":
                    compare_mod.write_compare_report(results, dest)
                else:
                    report_pkg.write_report(results, dest)
                if prof:
                    prof.disable()
            reports[which][study] = {"cpu_s": round(_cpu() - c, 2), "wall_s": round(time.perf_counter() - w, 2)}
    if prof:
        prof.dump_stats(args.profile)

    differ = []
    for study in STUDIES:
        a, b = out / "baseline" / study, out / "report" / study
        for p in sorted(a.rglob("*")):
            if p.is_file() and p.suffix != ".pdf" and p.name != ".figure_cache.json":
                q = b / p.relative_to(a)
                if not q.is_file() or q.read_bytes() != p.read_bytes():
                    differ.append(str(p.relative_to(out / "baseline")))

    totals = {w: round(sum(r["cpu_s"] for r in reports[w].values()), 2) for w in reports}
    res = {"benchmark": "report", "what": "the demo's three reports re-rendered from results.json, every figure "
           "drawn, with the baseline save and with the report's save, in turns",
           "demo": str(args.demo), "load_start": load0, "load_end": _load(),
           "imports": {k: round(v, 2) for k, v in imports.items()}, "reports": reports, "total_cpu_s": totals,
           "speedup_cpu": round(totals["baseline"] / totals["report"], 3),
           "identical_png_csv_md_html": not differ, "differing_files": differ,
           "figures": per_fig, "machine": machine()}
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / f"report{'_' + args.tag if args.tag else ''}.json"
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, dest)

    base = {(f["report"], f["figure"], f["variant"]): f["cpu_s"] for f in per_fig if f["save"] == "baseline"}
    print(f"{'report':8s} {'figure':18s} {'variant':20s} {'base CPU':>8s} {'CPU s':>7s} {'ratio':>6s}")
    for f in per_fig:
        if f["save"] == "report":
            b = base.get((f["report"], f["figure"], f["variant"]), float("nan"))
            print(f"{f['report']:8s} {f['figure']:18s} {f['variant']:20s} {b:8.2f} {f['cpu_s']:7.2f} "
                  f"{b / max(f['cpu_s'], 1e-9):5.2f}x")
    for study in STUDIES:
        b, r = reports["baseline"][study]["cpu_s"], reports["report"][study]["cpu_s"]
        print(f"{study:8s} {'(whole report)':18s} {'':20s} {b:8.2f} {r:7.2f} {b / r:5.2f}x")
    print(f"all three: {totals['baseline']:.2f} -> {totals['report']:.2f} s CPU, {res['speedup_cpu']:.2f}x; "
          f"PNG/CSV/MD/HTML {'identical' if not differ else 'DIFFER: ' + ', '.join(differ[:5])}; "
          f"load {load0} -> {res['load_end']} -> {dest} (reports in {out})")
    return 0 if not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
