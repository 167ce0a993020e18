"""Issue 25: how much COCO mAP a detector's lowest kept score changes, on saved ocula runs, no training.

COCO mAP averages precision over recall up to the last detection kept, so boxes under a threshold are recall
the scorer never sees. Ultralytics validates at conf 0.001 (bench/detection_yolo.py scores YOLO11n so);
torchvision's detectors keep boxes from 0.05. Each run's test images are predicted once per threshold and
scored by bench/detection_common.score (pycocotools), as bench/detection_peers.py scores its rows.

    python bench/detection_score_threshold.py --run /tmp/det-s2/ocula-default --coco /tmp/det-s2/data/coco \
        --thresholds 0.05,0.001 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from detection_common import read_coco_split, score  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))


def score_at(run: str, coco: str, thresholds: list[float]) -> list[dict]:
    import numpy as np

    import ocula
    from ocula.inference.scoring import predict_split
    from ocula.modality.sources import resolve_data

    clf = ocula.load(run)
    test = resolve_data(coco, val_fraction=0.0, require_train=False).test
    paths, targets, sizes, _ = read_coco_split(coco, "test")
    order = {os.path.realpath(p): i for i, p in enumerate(test.paths)}
    rows = []
    for t in thresholds:
        clf.model.score_thresh = t
        found = predict_split(clf, test, batch_size=32)
        dets = [np.asarray(found.probs[order[os.path.realpath(p)]]) for p in paths]
        rows.append({"run": run, "score_thresh": t, **score(targets, dets, sizes)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="a saved ocula detection run (repeatable)")
    ap.add_argument("--coco", action="append", required=True, help="its COCO folder, scored on its test split")
    ap.add_argument("--thresholds", default="0.05,0.001")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if len(args.run) != len(args.coco):
        raise SystemExit("give one --coco per --run")
    result = {"machine": print_machine(), "rows": []}
    for run, coco in zip(args.run, args.coco):
        result["rows"] += score_at(run, coco, [float(t) for t in args.thresholds.split(",")])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
