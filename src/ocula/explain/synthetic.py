"""A dataset where the truth of "where is the evidence" is known: the pointing game's ground truth.

Each image is a noisy, cluttered background with ONE small class-defining object (a saturated
shape: red circle, green square, blue triangle, yellow cross, …) at a random position. The clutter
is the same kinds of shapes in washed-out colours, so a model must find the object to classify the
image, and a faithful saliency map must peak on it. The object's box is recorded per image.

    make_pointing_dataset("synth/train", per_class=300, seed=0)   # class folders + boxes.csv
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ocula.io import write_text

CLASSES = {  # name: (shape, RGB)
    "red_circle": ("circle", (230, 30, 30)),
    "green_square": ("square", (30, 200, 40)),
    "blue_triangle": ("triangle", (40, 60, 240)),
    "yellow_cross": ("cross", (240, 220, 20)),
}


def make_pointing_dataset(root, per_class: int = 300, size: int = 64, object_size: int = 14, clutter: int = 6,
                          seed: int = 0) -> list[dict]:
    """Write `root/<class>/<i>.png` and `root/boxes.csv` (path, label, x0, y0, x1, y1; x1, y1 exclusive).
    → the rows of boxes.csv."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img, box = draw_image(rng, name, size, object_size, clutter)
            path = root / name / f"{i:04d}.png"
            img.save(path)
            rows.append({"path": str(path.relative_to(root)), "label": name, "x0": box[0], "y0": box[1],
                         "x1": box[2], "y1": box[3]})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(root / "boxes.csv", buf.getvalue())
    return rows


def read_boxes(root) -> list[dict]:
    with open(Path(root) / "boxes.csv", newline="") as f:
        return [{**r, **{k: int(r[k]) for k in ("x0", "y0", "x1", "y1")}} for r in csv.DictReader(f)]


def draw_image(rng: np.random.Generator, name: str, size: int, object_size: int, clutter: int):
    """→ (PIL image, (x0, y0, x1, y1) of the class-defining object)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rng.integers(0, 90, (size, size, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    shapes = [s for s, _ in CLASSES.values()]
    for _ in range(clutter):  # distractors: the same shapes, washed out (low saturation)
        s = int(rng.integers(object_size // 2, object_size + 4))
        x, y = (int(v) for v in rng.integers(0, size - s, 2))
        grey = int(rng.integers(90, 200))
        tint = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.integers(-25, 26, 3))
        _shape(draw, shapes[int(rng.integers(len(shapes)))], (x, y, x + s, y + s), tint)
    shape, colour = CLASSES[name]
    x, y = (int(v) for v in rng.integers(1, size - object_size - 1, 2))
    box = (x, y, x + object_size, y + object_size)
    _shape(draw, shape, box, colour)
    return img, box


def _shape(draw, shape: str, box, colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif shape == "square":
        draw.rectangle([x0 + 1, y0 + 1, x1 - 2, y1 - 2], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, y1 - 1), ((x0 + x1) // 2, y0), (x1 - 1, y1 - 1)], fill=colour)
    else:  # cross
        t = max(2, (x1 - x0) // 4)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle([x0, cy - t // 2, x1 - 1, cy + t // 2], fill=colour)
        draw.rectangle([cx - t // 2, y0, cx + t // 2, y1 - 1], fill=colour)
