"""Boxes of a detection dataset (COCO or YOLO): what the reader skipped or clipped, and boxes that read well but
look wrong: tiny, huge, or two classes on one object.

One finding per reader problem, per suspicious box and per overlapping pair, naming the image (or the annotation
the reader could not place), the box in pixels and the reason. A box never drops its image from a clean list;
an image the reader could not open (missing, unreadable) does.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ocula.audit.findings import Finding, SampleRef
from ocula.audit.inventory import display_id
from ocula.evaluation.detection import box_iou

TINY_AREA = 0.001  # a box under this share of its image's area is tiny ...
TINY_SIDE = 4  # ... and so is one with a side under this many pixels
HUGE_AREA = 0.95  # a box over this share of its image's area is huge
OVERLAP_IOU = 0.7  # two boxes of different classes overlapping more than this label one object twice
IMAGE_KINDS = ("missing image", "unreadable image")  # reader problems that lose a whole image
OUTSIDE_KINDS = ("box outside the image", "box partly outside the image")  # skipped, or clipped to the image
NOT_RUN = "label and outlier checks not run: boxes: out-of-fold label checks need a detector per fold"


def problem_kind(reason: str) -> str:
    """The kind a reader's reason starts with ('box of zero area (w=0, h=10)' → 'box of zero area')."""
    return reason.split(" (")[0].split(",")[0]


def problem_findings(problems: list[tuple[str, str]], root: Optional[str]) -> list[Finding]:
    """The reader's (where, reason) problems (`data.detection.DetectionData.problems`), one finding each:
    a lost image is `unreadable` (dropped), a box off the image `outside-box`, anything else `annotation`."""
    findings = []
    for where, reason in problems:
        kind = problem_kind(reason)
        ref = SampleRef(display_id(where, root) if os.path.isabs(where) else where, "", None,
                        where if os.path.isfile(where) else None)
        category = "unreadable" if kind in IMAGE_KINDS else "outside-box" if kind in OUTSIDE_KINDS else "annotation"
        findings.append(Finding(category, [ref], f"{ref.id}: {reason}", details={"detail": reason, "kind": kind},
                                drop=[ref.id] if category == "unreadable" else []))
    return findings


def box_findings(refs: list[SampleRef], boxes: list[np.ndarray], sizes: list[tuple[int, int]],
                 classes: list[str]) -> list[Finding]:
    """Tiny and huge boxes, and pairs of boxes of different classes with IoU > OVERLAP_IOU, per image.

    boxes: per image (M, 5) class, x1, y1, x2, y2 normalised (no padding rows); sizes: (width, height) in
    pixels per image (0 where the image did not open: its boxes are not judged)."""
    findings = []
    for ref, rows, (width, height) in zip(refs, boxes, sizes):
        if not len(rows) or not (width and height):
            continue
        scale = np.array([width, height, width, height], np.float64)
        pixels = rows[:, 1:5].astype(np.float64) * scale
        sides = np.stack([pixels[:, 2] - pixels[:, 0], pixels[:, 3] - pixels[:, 1]], 1)
        share = sides.prod(1) / (width * height)
        for j in range(len(rows)):
            w, h = sides[j]
            size = f"{w:.0f}×{h:.0f} px, {100 * share[j]:.2g}% of the image"
            if share[j] < TINY_AREA or min(w, h) < TINY_SIDE:
                findings.append(_box_finding("tiny-box", ref, rows[j], pixels[j], classes, f"tiny ({size})",
                                             score=1 - share[j]))
            elif share[j] > HUGE_AREA:
                findings.append(_box_finding("huge-box", ref, rows[j], pixels[j], classes, f"huge ({size})",
                                             score=share[j]))
        findings += _overlaps(ref, rows, pixels, classes)
    return findings


def _overlaps(ref: SampleRef, rows: np.ndarray, pixels: np.ndarray, classes: list[str]) -> list[Finding]:
    iou = box_iou(rows[:, 1:5].astype(np.float64), rows[:, 1:5].astype(np.float64))
    found = []
    for j, k in zip(*np.nonzero(np.triu(iou > OVERLAP_IOU, 1))):
        if int(rows[j, 0]) == int(rows[k, 0]):
            continue  # one class twice is a duplicate box, not two names for one object
        a, b = _name(classes, rows[j, 0]), _name(classes, rows[k, 0])
        reason = f"boxes of '{a}' and '{b}' overlap (IoU {iou[j, k]:.2f} > {OVERLAP_IOU})"
        found.append(Finding("overlapping-boxes", [ref], f"{ref.id}: {reason}: {_px(pixels[j])} and {_px(pixels[k])}",
                             score=float(iou[j, k]),
                             details={"boxes": [_px(pixels[j]), _px(pixels[k])], "classes": [a, b],
                                      "iou": round(float(iou[j, k]), 4), "reason": reason}))
    return found


def _box_finding(category: str, ref: SampleRef, row: np.ndarray, pixels: np.ndarray, classes: list[str],
                 reason: str, score: float) -> Finding:
    name = _name(classes, row[0])
    return Finding(category, [ref], f"{ref.id}: '{name}' box {_px(pixels)}: {reason}", score=float(score),
                   details={"box": _px(pixels), "class": name, "reason": reason})


def _name(classes: list[str], k) -> str:
    k = int(k)
    return classes[k] if 0 <= k < len(classes) else str(k)


def _px(box) -> list[float]:
    """x1, y1, x2, y2 in pixels, to a tenth."""
    return [round(float(v), 1) for v in box]
