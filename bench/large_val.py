"""A small training folder handed a large validation split: no worse than before issue 23?

    git worktree add /tmp/ocula-6be 6be7fe2        # the tree before issues 23-25
    python bench/large_val.py --before /tmp/ocula-6be/src [--per-class 30] [--val 1000] [--json FILE]

Issue 23 changed what ocula decides on small data (cross-fitting, the batch rule, temperatures that must
beat T = 1 out of sample). A user who has a large validation split should lose nothing by it. This writes
the issue's fourth row as a user would have it: DIR/train/ with 30 Fashion-MNIST images a class, DIR/val/
with 1,000 other training-set images, DIR/test/ with 1,000 test images none of which any rule was tuned
on (the seeded test order's images 1,000-1,999, as `bench/transfer_lowdata.py --test-skip 1000`). Each tree
runs `ocula train DIR --model efficientnet_lite0 --pretrained FILE` (no other flag; ocula selects on val/)
in its own process, one after the other, and `ocula evaluate RUN DIR/test` scores it: accuracy, ECE with
the shipped temperature, the temperature, training time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402
from transfer_lowdata import lite0_file, write_folders  # noqa: E402


def write_data(work: Path, per_class: int, n_val: int) -> Path:
    """train/ and test/ from bench/transfer_lowdata.py, val/ from training images outside train/."""
    from PIL import Image

    from ocula.data.builtin import load_builtin

    data_dir = write_folders(work, per_class, 1000, test_skip=1000)
    taken = {int(p.stem) for p in (data_dir / "train").rglob("*.png")}
    data = load_builtin("fashion-mnist")
    order = [i for i in np.random.default_rng(7).permutation(len(data.train)) if int(i) not in taken][:n_val]
    for i in order:
        name = data.classes[int(data.train.labels[i])]
        (data_dir / "val" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.train.images[i, 0].numpy()).save(data_dir / "val" / name / f"{i}.png")
    return data_dir


def train_and_score(src: Path, data: Path, out: Path, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ocula", "train", str(data), "--model", "efficientnet_lite0",
                    "--pretrained", lite0_file(), "--threads", str(threads), "--out", str(out), "--quiet"],
                   check=True, env=env)
    train_s = time.perf_counter() - start
    report = out / "unseen-test.json"
    subprocess.run([sys.executable, "-m", "ocula", "evaluate", str(out), str(data / "test"), "--json", str(report)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    scored = json.loads(report.read_text())
    cal = scored.get("calibration", {})
    summary = json.loads((out / "summary.json").read_text())
    return {"src": str(src), "accuracy": scored["accuracy"], "ece": cal.get("after", {}).get("ece"),
            "ece_t1": cal.get("before", {}).get("ece"), "temperature": cal.get("temperature"),
            "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
            "train_s": round(train_s, 1), "scored_on": "1,000 Fashion-MNIST test images (seeded order 1,000-1,999)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="src/ of the older tree")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/ocula-large-val")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    info = print_machine()
    work = Path(args.work)
    data = write_data(work, args.per_class, args.val)
    results = {}
    for name, src in (("before", Path(args.before)), ("now", ROOT / "src")):
        results[name] = train_and_score(src, data, work / f"run-{name}", args.threads)
        r = results[name]
        print(f"RESULT tree={name} accuracy={r['accuracy']:.4f} ece={r['ece']} temperature={r['temperature']} "
              f"train_s={r['train_s']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
