"""Detection metrics: COCO mAP through torchmetrics, an independent pycocotools cross-check, PR curves,
the agreement of two models' boxes, and the rows predict writes.

Ground truth per image is (M, 5): class (−1 pads), x1, y1, x2, y2 normalised to [0, 1]; detections per
image are (D, 6): x1, y1, x2, y2 normalised, score, class (score 0, class −1 pad). Either comes batched,
(N, M, 5) / (N, D, 6), or as a list of per-image arrays of any lengths. Rows of class < 0 are padding.

Boxes are scaled to pixels by `sizes` (N, 2) = (width, height) before scoring, because COCO's small /
medium / large ranges (32², 96²) are pixel areas; without `sizes` every image counts as 640 × 640.
COCO marks "no ground truth" with −1: here that is None (a class without boxes has no AP, not AP 0).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
from typing import Optional, Sequence

import numpy as np

from ocula.errors import OculaError
from ocula.evaluation.metrics import to_numpy

DEFAULT_SIZE = (640, 640)  # (width, height) in pixels of an image whose size is not given
# pycocotools' own float64 thresholds. torchmetrics' defaults come from a float32 torch.linspace
# (0.55 → 0.550000012): a recall landing exactly on k/100 then reads the next threshold's precision, and
# mAP75 moved by 2e-3 against pycocotools on a 40-image test set. Passing these makes them agree.
COCO_IOUS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)  # mAP@[.5:.95]
COCO_RECALLS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)  # COCO's detections per image for mAR1 / mAR10 / mAR100 (and every AP)


# ----------------------------------------------------------------------------- inputs


def _per_image(x, width: int, what: str) -> list[np.ndarray]:
    """A batch (N, K, width) or a list of (K_i, width) arrays → list of float64 arrays, padding kept."""
    if isinstance(x, (list, tuple)):
        images = [_rows(a, width, f"{what} of image {i}") for i, a in enumerate(x)]
    else:
        a = to_numpy(x).astype(np.float64)
        if a.ndim != 3 or a.shape[-1] != width:
            raise OculaError(f"{what} must be (N, M, {width}) or a list of (M, {width}) arrays; got {a.shape}")
        images = list(a)
    for i, a in enumerate(images):
        if not np.isfinite(a).all():
            raise OculaError(f"{what} of image {i} hold NaN or inf")
    return images


def _rows(a, width: int, what: str) -> np.ndarray:
    """(K, width) float64; an empty array of any shape is (0, width)."""
    a = to_numpy(a).astype(np.float64)
    if a.size == 0:
        return np.zeros((0, width))
    if a.shape[-1] != width:
        raise OculaError(f"{what} must have rows of {width} values; got shape {a.shape}")
    return a.reshape(-1, width)


def _sizes(sizes, n: int) -> np.ndarray:
    if sizes is None:
        return np.tile(np.asarray(DEFAULT_SIZE, np.float64), (n, 1))
    s = _rows(sizes, 2, "sizes")
    if len(s) != n or (s <= 0).any():
        raise OculaError(f"sizes must be (N, 2) positive (width, height) with N = {n}; got {np.shape(sizes)}")
    return s


def _scale(boxes: np.ndarray, size: np.ndarray) -> np.ndarray:
    return boxes * np.tile(size, 2)  # (K, 4) normalised x1, y1, x2, y2 → pixels


def _prepare(targets, detections, sizes) -> tuple[list, list]:
    """([(labels int64, boxes px)], [(labels int64, boxes px, scores)]) per image, padding dropped."""
    gts, dets = _per_image(targets, 5, "targets"), _per_image(detections, 6, "detections")
    if len(gts) != len(dets):
        raise OculaError(f"{len(gts)} images of ground truth but {len(dets)} of detections")
    if not gts:
        raise OculaError("no images to score: targets and detections are empty")
    size = _sizes(sizes, len(gts))
    gt_out, det_out = [], []
    for g, d, s in zip(gts, dets, size):
        g, d = g[g[:, 0] >= 0], d[d[:, 5] >= 0]
        gt_out.append((g[:, 0].astype(np.int64), _scale(g[:, 1:5], s)))
        det_out.append((d[:, 5].astype(np.int64), _scale(d[:, :4], s), d[:, 4]))
    return gt_out, det_out


def _coco_value(v) -> Optional[float]:
    v = float(v)
    return None if v < 0 else v  # COCO's −1: nothing to score (no ground truth in that class or range)


# ----------------------------------------------------------------------------- torchmetrics


def _backend() -> tuple[str, Optional[str]]:
    if importlib.util.find_spec("faster_coco_eval") is not None:
        return "faster_coco_eval", None
    if importlib.util.find_spec("pycocotools") is not None:
        return "pycocotools", "faster_coco_eval is not installed: scored with pycocotools (same numbers, slower)"
    raise OculaError("detection metrics need faster-coco-eval or pycocotools: pip install 'ocula[detection]'")


def _torchmetrics_eval(gts, dets) -> tuple[dict, str, Optional[str]]:
    # torch and torchmetrics load here: importing ocula.evaluation stays numpy-only
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    backend, note = _backend()
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True,
                                  iou_thresholds=COCO_IOUS.tolist(), rec_thresholds=COCO_RECALLS.tolist(),
                                  max_detection_thresholds=list(MAX_DETS), extended_summary=True,
                                  backend=backend)
    metric.warn_on_many_detections = False  # COCO keeps the 100 best per image, as it should
    preds = [{"boxes": torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4),
              "scores": torch.as_tensor(s, dtype=torch.float64), "labels": torch.as_tensor(c)}
             for c, b, s in dets]
    target = [{"boxes": torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4), "labels": torch.as_tensor(c)}
              for c, b in gts]
    metric.update(preds, target)
    return metric.compute(), backend, note


def score_detections(targets, detections, classes: Sequence[str], sizes=None) -> dict:
    """The COCO evaluation of a detection split, by torchmetrics' MeanAveragePrecision; JSON-serialisable.

    Keys: mAP (@[.5:.95]), mAP50, mAP75, mAP_small / medium / large, mAR1, mAR10, mAR100, per_class
    ([{class, AP, AP50, AR100, n_boxes, n_images}]), images, boxes (ground truth), detections, backend,
    sizes ("given" or "default 640x640"), loss (None: a box set has no likelihood), and note when the
    backend fell back to pycocotools. None where COCO has nothing to score (no ground truth there).
    Images without boxes count: their detections are false positives of every class they name.
    """
    classes = [str(c) for c in classes]
    gts, dets = _prepare(targets, detections, sizes)
    labels = np.concatenate([c for c, _ in gts]) if gts else np.zeros(0, np.int64)
    if labels.size and labels.max() >= len(classes):
        raise OculaError(f"ground truth names class {labels.max()} but there are {len(classes)} classes")
    result, backend, note = _torchmetrics_eval(gts, dets)
    key = {"mAP": "map", "mAP50": "map_50", "mAP75": "map_75", "mAP_small": "map_small",
           "mAP_medium": "map_medium", "mAP_large": "map_large", "mAR1": "mar_1", "mAR10": "mar_10",
           "mAR100": "mar_100"}
    report = {name: _coco_value(result[k]) for name, k in key.items()}
    present = [int(c) for c in to_numpy(result["classes"]).reshape(-1)]
    ap = dict(zip(present, to_numpy(result["map_per_class"]).reshape(-1).tolist()))
    ar = dict(zip(present, to_numpy(result["mar_100_per_class"]).reshape(-1).tolist()))
    ap50 = _per_class_ap50(result, present)
    rows = []
    for k, name in enumerate(classes):
        n_boxes = int((labels == k).sum())
        n_images = sum(int((c == k).any()) for c, _ in gts)
        has = n_boxes > 0
        rows.append({"class": name,
                     "AP": _coco_value(ap[k]) if has else None,
                     "AP50": _coco_value(ap50[k]) if has else None,
                     "AR100": _coco_value(ar[k]) if has else None,
                     "n_boxes": n_boxes, "n_images": n_images})
    report.update({"per_class": rows, "images": len(gts), "boxes": int(labels.size),
                   "detections": int(sum(len(c) for c, _, _ in dets)), "backend": backend,
                   "sizes": "given" if sizes is not None else "default {}x{}".format(*DEFAULT_SIZE),
                   "loss": None})
    if note:
        report["note"] = note
    return report


def _precision_curves(result: dict, iou: float) -> np.ndarray:
    """(R, K) COCO precision at each of the 101 recall thresholds per class (−1: no ground truth), all
    areas, 100 detections, at IoU `iou`; K follows result['classes']."""
    t = int(np.flatnonzero(np.isclose(COCO_IOUS, iou))[0])
    return to_numpy(result["precision"])[t, :, :, 0, -1]  # (T, R, K, A, M) → (R, K)


def _per_class_ap50(result: dict, present: list[int]) -> dict[int, float]:
    curves = _precision_curves(result, 0.5)
    out = {}
    for j, k in enumerate(present):
        p = curves[:, j]
        out[k] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return out


def pr_curve(targets, detections, iou: float = 0.5, sizes=None) -> dict:
    """Per-class precision-recall at one COCO IoU threshold, for plotting (`plot_pr_curves`).

    {iou, recall: the 101 recall thresholds, per_class: [{class (index), precision (101 values, COCO's
    interpolated envelope; 0 past the class's best recall), max_recall, AP}]}; a class that only has
    detections (no ground truth) has precision None and AP None.
    """
    if not np.isclose(COCO_IOUS, iou).any():
        raise OculaError(f"iou must be one of COCO's thresholds {COCO_IOUS.tolist()}; got {iou}")
    gts, dets = _prepare(targets, detections, sizes)
    result, _, _ = _torchmetrics_eval(gts, dets)
    recall = np.linspace(0.0, 1.0, 101)
    present = [int(c) for c in to_numpy(result["classes"]).reshape(-1)]
    curves = _precision_curves(result, iou)
    t = int(np.flatnonzero(np.isclose(COCO_IOUS, iou))[0])
    rows = []
    for j, k in enumerate(present):
        has_gt = any((c == k).any() for c, _ in gts)
        if not has_gt:
            rows.append({"class": k, "precision": None, "max_recall": None, "AP": None})
            continue
        p = curves[:, j]
        best = float(to_numpy(result["recall"])[t, j, 0, -1])
        rows.append({"class": k, "precision": np.maximum(p, 0).tolist(), "max_recall": best,
                     "AP": float(np.maximum(p, 0).mean())})
    return {"iou": float(iou), "recall": recall.tolist(), "per_class": rows}


# ----------------------------------------------------------------------------- pycocotools cross-check


def _coco_datasets(gts, dets) -> tuple[dict, list[dict]]:
    """The COCO ground-truth dataset and result list, image ids from 1, boxes [x, y, w, h] in pixels."""
    images, annotations, results = [], [], []
    cats = set()
    for i, ((gc, gb), (dc, db, ds)) in enumerate(zip(gts, dets), start=1):
        images.append({"id": i})
        for c, (x1, y1, x2, y2) in zip(gc.tolist(), gb.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": c,
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        for c, (x1, y1, x2, y2), s in zip(dc.tolist(), db.tolist(), ds.tolist()):
            results.append({"image_id": i, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
        cats.update(gc.tolist())
        cats.update(dc.tolist())
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": c, "name": str(c)} for c in sorted(cats)],
               "info": {"description": "ocula in-memory ground truth"}}
    return dataset, results


def pycocotools_map(targets, detections, sizes=None) -> dict:
    """{mAP, mAP50, mAP75} from pycocotools' own COCO / COCOeval, built in memory: the cross-check of
    `score_detections` that shares none of its conversion code. None without ground truth."""
    from pycocotools.coco import COCO  # pycocotools is optional (the detection extra)
    from pycocotools.cocoeval import COCOeval

    gts, dets = _prepare(targets, detections, sizes)
    dataset, results = _coco_datasets(gts, dets)
    if not dataset["annotations"]:
        return {"mAP": None, "mAP50": None, "mAP75": None}
    if not results:  # loadRes cannot take an empty list; COCO's answer is 0
        return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"mAP": _coco_value(stats[0]), "mAP50": _coco_value(stats[1]), "mAP75": _coco_value(stats[2])}


# ----------------------------------------------------------------------------- two models' boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(a: np.ndarray, b: np.ndarray, iou: float) -> list[tuple[int, int, float]]:
    """One-to-one greedy matching of rows of a to rows of b of the same class, best IoU first."""
    overlap = box_iou(a[:, :4], b[:, :4])
    overlap[a[:, 5][:, None] != b[:, 5][None, :]] = 0.0
    return greedy_pairs(overlap, iou)


def greedy_pairs(overlap: np.ndarray, iou: float) -> list[tuple[int, int, float]]:
    """One-to-one pairs (row, column, IoU) of an IoU matrix at IoU ≥ iou, the best overlap first."""
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        i, j = divmod(int(flat), overlap.shape[1])
        if overlap[i, j] < iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j, float(overlap[i, j])))
    return pairs


def box_agreement(dets_a, dets_b, iou: float = 0.5, score_thresh: float = 0.3) -> dict:
    """How well two models' detections of the same images agree (the export gate: PyTorch vs ONNX).

    A's confident boxes (score ≥ score_thresh) are matched one-to-one to any of B's boxes of the same
    class with IoU ≥ iou, and B's confident boxes to any of A's: a score just under the threshold on one
    side is not a disagreement. Keys: a_matched, b_matched (shares; 1.0 when there is nothing to match),
    agreement (the smaller), mean_iou and max_score_diff over A's matches (None without one), n_a, n_b,
    images. Boxes are compared as given (normalised), so the result does not depend on image size.
    """
    a_images, b_images = _per_image(dets_a, 6, "dets_a"), _per_image(dets_b, 6, "dets_b")
    if len(a_images) != len(b_images):
        raise OculaError(f"dets_a has {len(a_images)} images, dets_b {len(b_images)}")
    n_a = n_b = hit_a = hit_b = 0
    ious, diffs = [], []
    for a, b in zip(a_images, b_images):
        a, b = a[a[:, 5] >= 0], b[b[:, 5] >= 0]
        conf_a, conf_b = a[a[:, 4] >= score_thresh], b[b[:, 4] >= score_thresh]
        pairs = _match(conf_a, b, iou)
        n_a, hit_a = n_a + len(conf_a), hit_a + len(pairs)
        ious += [p[2] for p in pairs]
        diffs += [abs(conf_a[i, 4] - b[j, 4]) for i, j, _ in pairs]
        n_b, hit_b = n_b + len(conf_b), hit_b + len(_match(conf_b, a, iou))
    a_share = hit_a / n_a if n_a else 1.0
    b_share = hit_b / n_b if n_b else 1.0
    return {"a_matched": a_share, "b_matched": b_share, "agreement": min(a_share, b_share),
            "mean_iou": float(np.mean(ious)) if ious else None,
            "max_score_diff": float(np.max(diffs)) if diffs else None,
            "n_a": n_a, "n_b": n_b, "images": len(a_images), "iou": iou, "score_thresh": score_thresh}


# ----------------------------------------------------------------------------- predict's rows


def detections_table(detections, paths: Sequence[str], classes: Sequence[str], sizes=None,
                     score_thresh: float = 0.3) -> list[dict]:
    """Rows {path, class, score, x1, y1, x2, y2} (pixels, by `sizes` (N, 2) width, height, default
    640 × 640) of every detection with score ≥ score_thresh, each image's best first; for CSV / JSON."""
    images = _per_image(detections, 6, "detections")
    if len(paths) != len(images):
        raise OculaError(f"{len(paths)} paths for {len(images)} images of detections")
    size = _sizes(sizes, len(images))
    rows = []
    for path, d, s in zip(paths, images, size):
        d = d[(d[:, 5] >= 0) & (d[:, 4] >= score_thresh)]
        d = d[np.argsort(-d[:, 4], kind="stable")]
        for (x1, y1, x2, y2), score, c in zip(_scale(d[:, :4], s).tolist(), d[:, 4].tolist(), d[:, 5]):
            if int(c) >= len(classes):
                raise OculaError(f"a detection names class {int(c)} but there are {len(classes)} classes")
            rows.append({"path": str(path), "class": str(classes[int(c)]), "score": round(score, 4),
                         "x1": round(x1, 1), "y1": round(y1, 1), "x2": round(x2, 1), "y2": round(y2, 1)})
    return rows
