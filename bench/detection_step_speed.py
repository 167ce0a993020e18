"""Issue 25's speed bar at equal work: training images per second of `ocula train` and of the plain torchvision
loop (bench/detection_torchvision_loop.py) on the same model, the same images, the same input size, one after
the other on this machine.

    python bench/detection_step_speed.py --data /tmp/det-s6/data/coco --epochs 4 --threads 2 --json out.json

ocula trains --epochs epochs at full size (`--progressive 1`: the default's smaller first half would be less
work per image, not a faster engine), with its default model (DEFAULT_BACKBONE, FPN, head) and everything else
default; its rate is every training image it stepped over the training time it reports (validation, probe and
saving are outside it). The loop then trains the same model for that many seconds of training time (decoding in
its two DataLoader workers included, as in its own timing). Both use --threads torch threads (default: this
machine's cores, what either does untold). The order is ocula first, so a machine that slows with heat favours
the loop. Speed only: what each learns is measured by detection_peers.py.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from common import print_machine  # noqa: E402


def ocula_rate(data: Path, out: Path, epochs: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "ocula", "train", str(data), "--out", str(out), "--progressive", "1",
           "--epochs", str(epochs), "--threads", str(threads)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    train_images = json.loads((out / "split.json").read_text())["counts"]["train"]
    seconds = float(rows[-1]["elapsed_train_s"])
    return {"command": " ".join(cmd[1:]), "epochs": len(rows), "train_images": train_images,
            "train_s": seconds, "train_images_per_s": len(rows) * train_images / seconds,
            "per_epoch_images_per_s": [float(r["train_img_per_s"]) for r in rows]}


def loop_rate(data: Path, budget_s: float, threads: int, work: Path) -> dict:
    from ocula.models.detection import DEFAULT_BACKBONE, DEFAULT_FPN_CHANNELS, DEFAULT_HEAD_CONVS

    out = work / "loop.json"
    cmd = [sys.executable, str(HERE / "detection_torchvision_loop.py"), "--data", str(data), "--budget-s",
           f"{budget_s:.1f}", "--threads", str(threads), "--img-size", "160", "--backbone", DEFAULT_BACKBONE,
           "--fpn-channels", str(DEFAULT_FPN_CHANNELS), "--head-convs", str(DEFAULT_HEAD_CONVS), "--json", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    result = json.loads(out.read_text())["result"]
    return {"command": " ".join(cmd[1:]), **{k: result[k] for k in
                                             ("train_s", "images_seen", "epochs", "train_images_per_s")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="COCO layout, as detection_peers.py writes it")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    info = print_machine()
    with tempfile.TemporaryDirectory(prefix="ocula-step-speed-") as tmp:
        work = Path(tmp)
        ocula = ocula_rate(args.data, work / "ocula", args.epochs, args.threads)
        loop = loop_rate(args.data, ocula["train_s"], args.threads, work)
    ratio = ocula["train_images_per_s"] / loop["train_images_per_s"]
    result = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "ocula": ocula, "loop": loop,
              "ocula_over_loop": ratio}
    print(f"RESULT ocula {ocula['train_images_per_s']:.2f} img/s | loop {loop['train_images_per_s']:.2f} img/s | "
          f"{ratio:.2f}x", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
