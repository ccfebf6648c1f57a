"""Re-render a study's report from its results.json: ``python -m jaxprobe.report RESULTS [--out DIR]``.

Useful after changing only presentation: no analysis is re-run. Exit status 2 with the
offending key named when the results lack something the report needs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxprobe.report._results import ResultsError
from jaxprobe.report.html import write_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxprobe.report", description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="results.json written by a study")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the folder of RESULTS)")
    ap.add_argument("--no-pdf", action="store_true", help="write PNG figures only")
    args = ap.parse_args(argv)
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    from jaxprobe.report.hear import HearResultsError, is_hear_results, write_hear_report

    formats = ("png",) if args.no_pdf else ("png", "pdf")
    try:
        if isinstance(results, dict) and "cross_cka" in results:  # `jaxprobe compare`
            from jaxprobe.report.compare import write_compare_report

            paths = write_compare_report(results, args.out or args.results.parent, formats=formats)
        elif is_hear_results(results):  # `jaxprobe hear`
            paths = write_hear_report(results, args.out or args.results.parent, formats=formats,
                                      source=args.results.parent)
        else:  # `jaxprobe sweep`
            paths = write_report(results, args.out or args.results.parent, formats=formats)
    except (ResultsError, HearResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(paths["html"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
