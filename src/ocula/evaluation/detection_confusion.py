"""The detection confusion matrix Ultralytics users read after `val`: which class each object was detected as,
which objects were missed, and which detections match no object.

Per image, the detections scoring ≥ `min_score` are paired one-to-one with the ground-truth boxes at IoU ≥ `iou`
whatever their classes, the best overlap first (Ultralytics' ConfusionMatrix: conf 0.25, IoU 0.45). Rows are
the true class, columns the predicted one, as ocula's classification matrix; the last row and column are
"background": a true box no detection covered counts in its row's background column (a miss), a detection
that covers no true box in the background row (a false positive). The background/background cell is 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ocula.evaluation.detection import _per_image, box_iou, greedy_pairs

MIN_SCORE = 0.25
IOU = 0.45
BACKGROUND = "background"


def box_confusion(targets, detections, classes: Sequence[str], min_score: float = MIN_SCORE,
                  iou: float = IOU) -> dict:
    """{matrix ((K+1) × (K+1) counts, rows true, columns predicted), names (classes + background), iou,
    min_score}; targets (N, M, 5) / detections (N, D, 6) normalised, batched or per-image lists."""
    k = len(classes)
    matrix = np.zeros((k + 1, k + 1), np.int64)
    for truth, found in zip(_per_image(targets, 5, "targets"), _per_image(detections, 6, "detections")):
        truth = truth[truth[:, 0] >= 0]
        found = found[(found[:, 5] >= 0) & (found[:, 4] >= min_score)]
        true_class, found_class = truth[:, 0].astype(int), found[:, 5].astype(int)
        pairs = greedy_pairs(box_iou(truth[:, 1:5], found[:, :4]), iou)
        covered, used = {t for t, _, _ in pairs}, {d for _, d, _ in pairs}
        for t, d, _ in pairs:
            matrix[true_class[t], found_class[d]] += 1
        for t in set(range(len(truth))) - covered:
            matrix[true_class[t], k] += 1
        for d in set(range(len(found))) - used:
            matrix[k, found_class[d]] += 1
    return {"matrix": matrix.tolist(), "names": [str(c) for c in classes] + [BACKGROUND], "iou": iou,
            "min_score": min_score}
