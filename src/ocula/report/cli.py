"""`ocula report RUN` and `ocula runs [DIR]`: thin shells over ocula.report (argparse only at import)."""
from __future__ import annotations

import argparse
import sys

from ocula.io import write_text


def register(sub) -> dict:
    p = sub.add_parser("report", help="one self-contained HTML page for a run: model card, curves, metrics, "
                       "calibration, errors, audit, export", description="Write RUN/report.html from the files "
                       "of the run (images inlined, no network). Sections whose inputs are missing are listed "
                       "as not run, with the command that fills them.")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", metavar="FILE", help="where to write the page (default: RUN/report.html)")
    p.add_argument("--eval", metavar="DIR", help="the evaluation to show (default: the run's newest eval-*/)")
    p.add_argument("--audit", metavar="DIR", help="an `ocula audit` folder (default: RUN/audit/, else ./audit/ "
                   "when it audited the run's data)")

    p = sub.add_parser("runs", help="table of the runs under a folder: data, model, epochs, metrics, export, "
                       "size, time", description="Compare runs: one row per run directory under DIR.")
    p.add_argument("dir", nargs="?", default="runs", help="folder holding runs (default: runs)")
    p.add_argument("--sort", metavar="COLUMN", help="sort by a column: run, data, model, epochs, best, eval_acc, "
                   "ece, ece_cal, export, size_mb, time_s, finished")
    p.add_argument("--reverse", action=argparse.BooleanOptionalAction, default=False, help="sort descending")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write the rows as JSON (to stdout "
                   "without PATH)")
    return {"report": cmd_report, "runs": cmd_runs}


def cmd_report(args) -> int:
    import time

    from ocula.report.render import write_report  # lazy: ocula --help imports no torch

    start = time.perf_counter()
    path = write_report(args.run, args.out, eval_dir=args.eval, audit_dir=args.audit)
    print(f"report: {path} ({time.perf_counter() - start:.2f} s)")
    return 0


def cmd_runs(args) -> int:
    from ocula.report.runs import format_runs, list_runs, runs_json  # lazy: ocula --help imports no torch

    rows = list_runs(args.dir, sort=args.sort, reverse=args.reverse)
    if args.json == "-":
        sys.stdout.write(runs_json(rows))
        return 0
    if args.json:
        write_text(args.json, runs_json(rows))
    if not rows:
        print(f"no runs under {args.dir}")
        return 0
    print(format_runs(rows))
    return 0
