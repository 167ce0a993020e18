"""The shipped recipes, trained by two versions of ocula side by side: same accuracy on the test set?

Issue 24 rewrote the seams (task, modality, resolution, run directory) without meaning to change a
single number. This trains each recipe with the source tree of an older commit and with this one, one
after the other on the same machine, and scores both on Fashion-MNIST's 10,000 test images (never
trained on; note the recipes themselves were chosen on that test set, see docs/benchmarks.md §1).

    git worktree add /tmp/ocula-before 030f2ef
    python bench/recipes_unchanged.py --before /tmp/ocula-before/src --recipes seed-cnn,fmnist-fast \\
        --json docs/bench/recipes_unchanged_issue24.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

HERE_SRC = Path(__file__).resolve().parents[1] / "src"


def train_and_score(src: Path, recipe: str, out: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ocula", "train", "fashion-mnist", "--recipe", recipe, "--out", str(out),
                    "--quiet"] + extra, check=True, env=env)
    train_s = time.perf_counter() - start
    report = out / "test-report.json"
    subprocess.run([sys.executable, "-m", "ocula", "evaluate", str(out), "fashion-mnist", "--split", "test",
                    "--json", str(report)], check=True, env=env, stdout=subprocess.DEVNULL)
    scored = json.loads(report.read_text())
    curve = [line.split(",")[:5] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    return {"src": str(src), "recipe": recipe, "overrides": extra, "accuracy": scored["accuracy"],
            "wall_s": round(train_s, 1), "metrics_rows": curve, "scored_on": "fashion-mnist test split, 10,000 images"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, type=Path, help="src/ folder of the older ocula")
    ap.add_argument("--recipes", default="seed-cnn,fmnist-fast")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ocula-recipes-unchanged"))
    ap.add_argument("--epochs", type=int, help="fewer epochs than the recipe's: a cheaper check that the same "
                    "training gives the same numbers (metrics.csv rows compared)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = {"machine": print_machine(), "rows": []}
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    for recipe in args.recipes.split(","):
        pair = []
        for label, src in (("before", args.before), ("now", HERE_SRC)):
            row = {"version": label, **train_and_score(src, recipe, args.work / f"{recipe}-{label}", extra)}
            print(json.dumps(row), flush=True)
            result["rows"].append(row)
            pair.append(row)
            if args.json:  # after every row: a long run keeps what it measured
                args.json.write_text(json.dumps(result, indent=2) + "\n")
        same = pair[0]["metrics_rows"] == pair[1]["metrics_rows"] and pair[0]["accuracy"] == pair[1]["accuracy"]
        print(f"{recipe}: {'the same numbers' if same else 'DIFFERENT numbers'} before and now", flush=True)


if __name__ == "__main__":
    main()
