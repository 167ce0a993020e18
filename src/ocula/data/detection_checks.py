"""Checks shared by the COCO and YOLO readers (`data.detection`, `data.detection_yolo`): one box, one image.

Each answers (value or None, reason or None), the reason starting with its kind (`data.detection.KINDS`).
"""
from __future__ import annotations

import math
import os

from PIL import Image

from ocula.errors import one_line


def check_box(x1, y1, x2, y2, width, height):
    """(normalised box or None, reason or None) for a box in pixels on a width x height image."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None, "malformed box (not a finite number)"
    if x2 <= x1 or y2 <= y1:
        return None, f"box of zero area (w={x2 - x1:g}, h={y2 - y1:g})"
    for bad, text in ((x1 >= width, f"x={x1:g} >= width {width}"), (y1 >= height, f"y={y1:g} >= height {height}"),
                      (x2 <= 0, f"x2={x2:g} <= 0"), (y2 <= 0, f"y2={y2:g} <= 0")):
        if bad:
            return None, f"box outside the image ({text})"
    box = (max(x1, 0) / width, max(y1, 0) / height, min(x2, width) / width, min(y2, height) / height)
    over = max(-x1, -y1, x2 - width, y2 - height)
    if over > 1:  # up to a pixel over the edge is rounding: clipped without a word
        return box, f"box partly outside the image (by {over:g} px of {width}x{height}), clipped"
    return box, None


def image_size(path: str):
    """((width, height) or None, reason or None) from the header: existence, then PIL's verify."""
    if not os.path.isfile(path):
        return None, "missing image" + (" (not a file)" if os.path.exists(path) else "")
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except Exception as e:  # PIL raises many kinds on a hostile file; each only means unreadable
        return None, f"unreadable image ({type(e).__name__}: {one_line(e).replace(path, '…')})"
    return size, None
