"""How long `ocula report RUN` takes: the whole command (a fresh process: imports, reading the run,
drawing missing charts, writing the page), `ocula --version` (the process start alone) and the
in-process render alone, warm.

    python bench/report_time.py runs/demo-fmnist --repeats 5 --json docs/bench/report_time.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_machine  # noqa: E402


def _stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times),
            "all_s": [round(t, 4) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    info = print_machine()
    ocula = Path(sys.executable).with_name("ocula")
    out = Path(tempfile.mkdtemp(prefix="report-time-")) / "report.html"
    cmd = [str(ocula), "report", args.run, "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up: file cache, .pyc
    cli, startup = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        cli.append(time.perf_counter() - start)
        start = time.perf_counter()  # the same process start with nothing to do: every command pays it
        subprocess.run([str(ocula), "--version"], check=True, capture_output=True)
        startup.append(time.perf_counter() - start)

    from ocula.report import write_report

    write_report(args.run, out)  # warm-up: imports (jinja2, matplotlib) done once
    warm = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        write_report(args.run, out)
        warm.append(time.perf_counter() - start)
    result = {"machine": info, "run": args.run, "page_bytes": out.stat().st_size,
              "command": " ".join(cmd[1:]), "cli": _stats(cli), "startup_ocula_version": _stats(startup),
              "in_process": _stats(warm)}
    print(f"ocula report {args.run}: whole command median {result['cli']['median_s']:.2f} s "
          f"(min {result['cli']['min_s']:.2f}, max {result['cli']['max_s']:.2f}, n={args.repeats}); "
          f"`ocula --version` alone {result['startup_ocula_version']['median_s']:.2f} s; "
          f"render in process {result['in_process']['median_s']:.3f} s; page {out.stat().st_size / 1e6:.2f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
