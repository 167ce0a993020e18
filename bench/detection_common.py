"""Shared by bench/detection_torchvision_loop.py and bench/detection_yolo.py (the two detection peers of
issue 25): read a COCO or YOLO split into one format, score detections with pycocotools, describe the machine.

Independent of ocula's own detection scorer on purpose: both peers are scored by the same small function
here, on the same ground truth, so a difference between them is the models', not the scorers'.

Formats (one numpy float32 array per image, coordinates normalised to [0, 1] by the image's width/height):
  targets     (M, 5): class, x1, y1, x2, y2       class = 0..K-1 in category-id order (COCO) / the YOLO id
  detections  (D, 6): x1, y1, x2, y2, score, class
  sizes       (width, height) in pixels per image

Needs numpy, pycocotools and Pillow only (torch only for the machine line), so it runs in ocula's venv
and in the separate Ultralytics venv alike.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# ---------------------------------------------------------------------------------------------- reading
def read_coco_split(root: str | Path, split: str) -> tuple[list[Path], list[np.ndarray], list[tuple[int, int]], list[str]]:
    """COCO layout `root/annotations/instances_{split}.json` + `root/images/{split}/`.
    Returns (paths, targets, sizes, class_names); crowd boxes are dropped, images without boxes kept."""
    root = Path(root)
    ann_file = root / "annotations" / f"instances_{split}.json"
    d = json.loads(ann_file.read_text())
    cats = sorted(d["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[int, list] = {}
    for a in d.get("annotations", []):
        if a.get("iscrowd", 0):
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    paths, targets, sizes = [], [], []
    for img in sorted(d["images"], key=lambda i: i["id"]):
        paths.append(_resolve_image(root, split, img["file_name"]))
        w, h = int(img["width"]), int(img["height"])
        rows = []
        for a in by_image.get(img["id"], []):
            x, y, bw, bh = a["bbox"]
            if bw <= 0 or bh <= 0:
                continue
            rows.append([cat_index[a["category_id"]], x / w, y / h, (x + bw) / w, (y + bh) / h])
        targets.append(np.asarray(rows, np.float32).reshape(-1, 5))
        sizes.append((w, h))
    return paths, targets, sizes, [c["name"] for c in cats]


def _resolve_image(root: Path, split: str, file_name: str) -> Path:
    for cand in (root / "images" / split / file_name, root / file_name, root / "images" / file_name,
                 root / split / file_name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"image {file_name!r} of split {split!r} not found under {root}")


def read_yolo_split(image_dir: str | Path) -> tuple[list[Path], list[np.ndarray], list[tuple[int, int]]]:
    """YOLO layout: images in `.../images/{split}`, labels `cls cx cy w h` (normalised) in the parallel
    `.../labels/{split}/*.txt` (Ultralytics' rule: the last `/images/` in the path becomes `/labels/`)."""
    from PIL import Image

    image_dir = Path(image_dir)
    paths = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    targets, sizes = [], []
    for p in paths:
        s = str(p)
        i = s.rfind("/images/")
        label = Path(s[:i] + "/labels/" + s[i + 8:]).with_suffix(".txt") if i >= 0 else p.with_suffix(".txt")
        rows = []
        if label.is_file():
            for line in label.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 5:  # segments (more than 5 numbers) are not used by these benchmarks
                    c, cx, cy, bw, bh = map(float, parts[:5])
                    rows.append([c, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        targets.append(np.clip(np.asarray(rows, np.float32).reshape(-1, 5), [0, 0, 0, 0, 0], [1e9, 1, 1, 1, 1]))
        with Image.open(p) as im:  # Ultralytics applies the EXIF rotation; so would we, but the sets have none
            sizes.append(im.size)
    return paths, targets, sizes


# ---------------------------------------------------------------------------------------------- scoring
def score(targets: list[np.ndarray], detections: list[np.ndarray], sizes: list[tuple[int, int]],
          num_classes: int | None = None) -> dict:
    """COCO box mAP@[.5:.95], mAP50, mAP75 (+ small/medium/large, AR@100) with pycocotools, in memory.
    Boxes are scaled back to pixels so COCO's area ranges mean what they usually mean."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    assert len(targets) == len(detections) == len(sizes), (len(targets), len(detections), len(sizes))
    if num_classes is None:
        num_classes = 1 + int(max([t[:, 0].max() for t in targets if len(t)] + [0]))
    images, anns, dets = [], [], []
    for i, (t, d, (w, h)) in enumerate(zip(targets, detections, sizes), start=1):
        images.append({"id": i, "width": int(w), "height": int(h)})
        scale = np.array([w, h, w, h], np.float64)
        for row in np.asarray(t, np.float64).reshape(-1, 5):
            x1, y1, x2, y2 = row[1:5] * scale
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(row[0]) + 1, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for row in np.asarray(d, np.float64).reshape(-1, 6):
            x1, y1, x2, y2 = row[:4] * scale
            dets.append({"image_id": i, "category_id": int(row[5]) + 1, "score": float(row[4]),
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})
    out = {"images": len(images), "gt_boxes": len(anns), "detections": len(dets)}
    keys = ["map", "map50", "map75", "map_small", "map_medium", "map_large", "mar1", "mar10", "mar100"]
    if not anns or not dets:
        return {**out, **{k: 0.0 if anns else float("nan") for k in keys}}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # stats: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl; -1 = no gt in that range
    return {**out, **{k: float(v) for k, v in zip(keys, ev.stats[:9])}}


def format_scores(s: dict) -> str:
    return (f"mAP {s['map']:.4f} | mAP50 {s['map50']:.4f} | mAP75 {s['map75']:.4f} | AR100 {s['mar100']:.4f} "
            f"| {s['images']} images, {s['gt_boxes']} boxes, {s['detections']} detections")


# ---------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    """The machine line of bench/common.py (CPU, cores, torch threads, load average, command), printed."""
    sys.path.insert(0, str(BENCH_DIR))
    from common import print_machine

    import os
    info = print_machine()
    info["load_avg"] = list(os.getloadavg())
    return info


def write_json(path: str | Path | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {path}")


def peer_parser(doc: str, data_help: str, batch_size: int) -> argparse.ArgumentParser:
    """The options both peers take, so one command line drives either: data, budget, size, batch, threads, seed."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help=data_help)
    ap.add_argument("--budget-s", type=float, required=True, help="training wall-clock budget, seconds")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the peer's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    return ap
