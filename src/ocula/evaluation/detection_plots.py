"""Pictures of detections: PR curves per class (matplotlib), boxes drawn on images and a grid of
examples for the run report (Pillow only).

Boxes are drawn with Pillow's own font (`ImageFont.load_default(size=...)`, Pillow ≥ 10.1; older ones
get the fixed bitmap font): nothing is fetched. Line width and text size follow the image's short side,
so a label stays readable from 64 px to 1024 px images.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ocula.data.images import open_image
from ocula.errors import OculaError
from ocula.evaluation.detection import DEFAULT_SIZE
from ocula.evaluation.metrics import to_numpy
from ocula.evaluation.plots import _figure, _save
from ocula.evaluation.report import PathLike
from ocula.io import atomic_path

# 20 colours far enough apart to tell classes (matplotlib's tab10 then its darker/lighter partners)
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79"]
GRID_CELL = 320  # pixels: the side each example is fitted into in `detection_grid`
GRID_COLUMNS = 4
LEGEND_HEIGHT = 24  # pixels of the strip above the grid that says solid = predicted, dashed = truth


def class_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


# ----------------------------------------------------------------------------- PR curves


def plot_pr_curves(pr: dict, classes: Sequence[str], path: PathLike) -> Optional[str]:
    """Precision against recall per class at pr['iou'] (from `evaluation.detection.pr_curve`), AP in the
    legend; each curve stops at the class's best recall. Returns the path, or None without matplotlib."""
    fig = _figure((6.5, 5))
    if fig is None:
        return None
    ax = fig.subplots()
    recall = np.asarray(pr["recall"])
    drawn = 0
    for row in pr["per_class"]:
        k = int(row["class"])
        name = str(classes[k]) if 0 <= k < len(classes) else str(k)
        if row["precision"] is None:
            continue  # detections of a class the split has no box of: nothing to recall
        keep = recall <= row["max_recall"] + 1e-9
        ax.plot(recall[keep], np.asarray(row["precision"])[keep], lw=1.4, color=class_colour(k),
                label=f"{name} (AP{round(pr['iou'] * 100)} {row['AP']:.3f})")
        drawn += 1
    iou = f"{pr['iou']:.2f}".rstrip("0").rstrip(".")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"precision-recall per class at IoU {iou}")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="lower left", ncol=1 + drawn // 12)
    else:
        ax.text(0.5, 0.5, "no ground-truth boxes", ha="center", va="center")
    return _save(fig, path)


# ----------------------------------------------------------------------------- boxes on images


def _font(size: int):
    from PIL import ImageFont  # Pillow loads with the first picture, not with ocula.evaluation

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one small bitmap font
        return ImageFont.load_default()


def _ink(colour: str) -> str:
    """Black or white text, whichever reads on `colour` (relative luminance)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white"


def _dashed_rectangle(draw, box, colour: str, width: int) -> None:
    x1, y1, x2, y2 = box
    dash = max(3, 3 * width)
    for a, b, horizontal, fixed in ((x1, x2, True, y1), (x1, x2, True, y2), (y1, y2, False, x1), (y1, y2, False, x2)):
        for start in np.arange(a, b, 2 * dash):
            end = min(start + dash, b)
            line = [(start, fixed), (end, fixed)] if horizontal else [(fixed, start), (fixed, end)]
            draw.line(line, fill=colour, width=width)


def draw_detections(image, boxes_px, labels: Sequence[str], scores=None, *, color_by: str = "class",
                    classes: Optional[Sequence[str]] = None, dashed: bool = False,
                    width: Optional[int] = None):
    """A copy of `image` (PIL) with each box (pixels, x1 y1 x2 y2) outlined and tagged "label 0.87".

    Colours: color_by="class" gives every label one colour (its index in `classes` when given, so a class
    keeps its colour across images; else its order of first appearance), color_by="box" one per box.
    `scores` None draws labels alone (ground truth); `dashed` draws dashed outlines.
    """
    from PIL import ImageDraw  # Pillow loads with the first picture, not with ocula.evaluation

    if color_by not in ("class", "box"):
        raise OculaError(f"color_by must be 'class' or 'box'; got {color_by!r}")
    boxes = to_numpy(boxes_px).astype(np.float64).reshape(-1, 4)
    labels = [str(s) for s in labels]
    if len(labels) != len(boxes) or (scores is not None and len(to_numpy(scores).reshape(-1)) != len(boxes)):
        raise OculaError(f"{len(boxes)} boxes need as many labels and scores; got {len(labels)} labels")
    scores = None if scores is None else to_numpy(scores).astype(np.float64).reshape(-1)
    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    short = min(out.size)
    width = width or max(1, round(short / 220))  # 1 px at 64-329 px, 5 px at 1024
    font = _font(max(9, round(short / 32)))  # 9 px text at 64 px, 32 px at 1024
    order = {name: i for i, name in enumerate(classes)} if classes is not None else {}
    draw = ImageDraw.Draw(out)
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels)):
        if color_by == "box":
            colour = class_colour(i)
        else:
            colour = class_colour(order.setdefault(label, len(order)))
        if dashed:
            _dashed_rectangle(draw, box, colour, width)
        else:
            draw.rectangle(box, outline=colour, width=width)
        text = label if scores is None else f"{label} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * width, bottom - top + 2 * width
        x = min(max(box[0], 0), max(out.size[0] - tw, 0))
        y = box[1] - th if box[1] - th >= 0 else max(box[1], 0)  # above the box, or inside its top
        draw.rectangle([x, y, x + tw, y + th], fill=colour)
        draw.text((x + width - left, y + width - top), text, fill=_ink(colour), font=font)
    return out


def _fit(image, side: int):
    from PIL import Image

    image = image.convert("RGB")
    scale = side / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(size, Image.BILINEAR)


def _rows(x, width: int) -> np.ndarray:
    a = to_numpy(x).astype(np.float64)
    return a.reshape(-1, width) if a.size else np.zeros((0, width))


def detection_grid(images, dets, gts, classes: Sequence[str], path: PathLike, n: int = 12,
                   score_thresh: float = 0.3) -> str:
    """The first n images, each fitted into GRID_CELL px, with predicted boxes (score ≥ score_thresh)
    solid and ground-truth boxes dashed, GRID_COLUMNS a row, under a one-line legend; PNG.

    images: PIL images; dets: per image (D, 6) normalised x1 y1 x2 y2 score class; gts: per image
    (M, 5) class x1 y1 x2 y2, or None. Rows of class < 0 are padding. The PNG is
    min(n, N, GRID_COLUMNS) · GRID_CELL wide and rows · GRID_CELL + LEGEND_HEIGHT high.
    """
    from PIL import Image, ImageDraw

    count = min(n, len(images))
    if count == 0:
        raise OculaError("no images for the detection grid")
    classes = [str(c) for c in classes]
    cols = min(count, GRID_COLUMNS)
    rows = -(-count // cols)
    sheet = Image.new("RGB", (cols * GRID_CELL, rows * GRID_CELL + LEGEND_HEIGHT), "white")
    ImageDraw.Draw(sheet).text((6, 4), f"predicted (score >= {score_thresh:g}): solid    ground truth: dashed",
                               fill="black", font=_font(14))
    name = (lambda k: classes[k] if 0 <= k < len(classes) else str(k))
    for i in range(count):
        cell = _fit(images[i], GRID_CELL)
        scale = np.tile(cell.size, 2)
        if gts is not None:
            g = _rows(gts[i], 5)
            g = g[g[:, 0] >= 0]
            cell = draw_detections(cell, g[:, 1:5] * scale, [name(int(c)) for c in g[:, 0]], None,
                                   classes=classes, dashed=True, width=1)
        d = _rows(dets[i], 6)
        d = d[(d[:, 5] >= 0) & (d[:, 4] >= score_thresh)]
        cell = draw_detections(cell, d[:, :4] * scale, [name(int(c)) for c in d[:, 5]], d[:, 4],
                               classes=classes, width=2)
        x = (i % cols) * GRID_CELL + (GRID_CELL - cell.size[0]) // 2
        y = (i // cols) * GRID_CELL + LEGEND_HEIGHT + (GRID_CELL - cell.size[1]) // 2
        sheet.paste(cell, (x, y))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return str(path)


def boxes_to_pixels(boxes, size=DEFAULT_SIZE) -> np.ndarray:
    """(K, 4) normalised x1 y1 x2 y2 → pixels of an image of `size` (width, height)."""
    return _rows(boxes, 4) * np.tile(np.asarray(size, np.float64), 2)


def draw_predictions(preds: Sequence[dict], out_dir: PathLike) -> int:
    """`ocula predict --draw DIR`: each readable image of `preds` (Prediction.to_dict with "boxes") with its
    boxes drawn, as DIR/<name>.jpg (numbered when two inputs share a name) → how many were written."""
    os.makedirs(out_dir, exist_ok=True)
    written, used = 0, set()
    for p in preds:
        if p.get("error") or p.get("boxes") is None:
            continue
        image = open_image(p["source"], channels=3)
        boxes = [b["box"] for b in p["boxes"]]
        drawn = draw_detections(image, boxes, [b["label"] for b in p["boxes"]], [b["score"] for b in p["boxes"]])
        stem = os.path.splitext(os.path.basename(p["source"]))[0] or "image"
        name, n = f"{stem}.jpg", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.jpg"
        used.add(name)
        with atomic_path(os.path.join(out_dir, name)) as tmp:
            drawn.convert("RGB").save(tmp, format="JPEG", quality=92)
        written += 1
    return written
