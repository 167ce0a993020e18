"""`ocula benchmark` over every backend for resnet18 at 224 px, 2 threads: the table users will see.

Uses the run bench/quantize_int8.py produced (its 224-px bundle with model.onnx and model.int8.onnx);
runs quantize_int8.py first if they are missing.

    .venv/bin/python bench/backends.py [--quick]
Writes docs/bench/backends.json (the CLI's own JSON) and prints the CLI's table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from export_models import BENCH_DIR  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 repeats, eager and onnx only")
    args = ap.parse_args()
    print_machine()
    steps = 30 if args.quick else 150
    run = BENCH_DIR / f"fmnist-resnet18-32px-{steps}steps-as-224px"
    if not (run / "model.int8.onnx").is_file():
        subprocess.run([sys.executable, str(Path(__file__).parent / "quantize_int8.py")]
                       + (["--quick"] if args.quick else []), check=True)
    target = Path(__file__).parents[1] / "docs" / "bench" / ("backends_quick.json" if args.quick else "backends.json")
    backends = "eager,onnx" if args.quick else "eager,compiled,onnx,onnx-int8"
    argv = ["benchmark", str(run), "--backends", backends, "--batch", "1,32", "--threads", "2",
            "--repeats", "3" if args.quick else "20", "--max-seconds", "30", "--json", str(target)]
    print("COMMAND ocula " + " ".join(argv), flush=True)
    from ocula.cli import main as ocula_main
    sys.exit(ocula_main(argv))


if __name__ == "__main__":
    main()
