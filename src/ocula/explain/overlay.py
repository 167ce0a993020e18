"""Heatmaps people can look at: a colour overlay beside the image the model saw, titled with the
explained label and its probability; a grid of those for a folder; a strip of frames for a clip.

The "image the model saw" is the eval geometry (resize + centre-crop) of the original, so map and
pixels line up exactly. Small inputs are enlarged with nearest-neighbour so pixels stay honest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ocula.io import atomic_path

MIN_SIDE = 160  # px: digits (8×8) and 64×64 inputs are unreadable at their own size
TITLE_H = 18  # px

# Jet-like colour ramp (blue → cyan → yellow → red) as (position, RGB) stops; no matplotlib needed.
_STOPS = np.array([0.0, 0.35, 0.6, 0.85, 1.0])
_COLOURS = np.array([[0, 0, 128], [0, 160, 255], [255, 255, 0], [255, 64, 0], [128, 0, 0]], dtype=np.float32)


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] → (H, W, 3) uint8."""
    h = np.clip(np.nan_to_num(heat), 0, 1)
    rgb = np.stack([np.interp(h, _STOPS, _COLOURS[:, i]) for i in range(3)], -1)
    return rgb.astype(np.uint8)


def blend(view: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Image (H, W, 3) uint8 and map (H, W) → overlay (H, W, 3) uint8."""
    return (view.astype(np.float32) * (1 - alpha) + colorize(heat).astype(np.float32) * alpha).astype(np.uint8)


def as_rgb(view) -> np.ndarray:
    """A uint8 array (H, W), (H, W, 1|3) or (C, H, W) → (H, W, 3)."""
    arr = np.asarray(view)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.repeat(arr, 3, -1) if arr.shape[-1] == 1 else arr


def panel(view, heat: np.ndarray, title: str = "", box=None) -> Image.Image:
    """The image and its overlay side by side, under a one-line title; `box` (x1, y1, x2, y2 in [0, 1]): a
    detection's box, drawn on both."""
    rgb = as_rgb(view)
    gap = max(1, rgb.shape[1] // 32)
    pair = Image.fromarray(np.concatenate([rgb, np.full((rgb.shape[0], gap, 3), 255, np.uint8), blend(rgb, heat)], 1))
    if box is not None:
        h, w = rgb.shape[:2]
        x1, y1, x2, y2 = (v * s for v, s in zip(box, (w, h, w, h)))
        draw = ImageDraw.Draw(pair)
        for dx in (0, w + gap):
            draw.rectangle([x1 + dx, y1, max(x1, x2 - 1) + dx, max(y1, y2 - 1)], outline=(0, 255, 0))
    return _titled(_enlarge(pair), title)


def clip_panel(views: Sequence, heats: np.ndarray, title: str = "") -> Image.Image:
    """One overlay per sampled frame, in a row, under a title."""
    frames = [blend(as_rgb(v), h) for v, h in zip(views, heats)]
    gap = np.full((frames[0].shape[0], max(1, frames[0].shape[1] // 32), 3), 255, np.uint8)
    row = np.concatenate([part for f in frames for part in (f, gap)][:-1], 1)
    return _titled(_enlarge(Image.fromarray(row)), title)


def sample_panel(views: Sequence, heats: Sequence, title: str = "", box=None) -> Image.Image:
    """One explained sample as its modality's stills (`Modality.stills`): a single still beside its overlay,
    several (a clip's frames) as a strip of overlays."""
    if len(views) == 1:
        return panel(views[0], heats[0], title, box)
    return clip_panel(views, np.stack(heats), title)


def grid(panels: Sequence[Image.Image], cols: int = 4, margin: int = 12) -> Image.Image:
    """Panels of possibly different sizes → one image, row-major, on white, `margin` px apart."""
    cols = max(1, min(cols, len(panels)))
    w = max(p.width for p in panels) + margin
    h = max(p.height for p in panels) + margin
    rows = (len(panels) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * w, (i // cols) * h))
    return sheet


def save_png(image: Image.Image, path) -> str:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return str(Path(path))


def _enlarge(img: Image.Image) -> Image.Image:
    scale = int(np.ceil(MIN_SIDE / img.height)) if img.height < MIN_SIDE else 1
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def _titled(img: Image.Image, title: str) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + TITLE_H), "white")
    out.paste(img, (0, TITLE_H))
    if title:
        ImageDraw.Draw(out).text((3, 3), _fit(title, img.width), fill="black", font=ImageFont.load_default())
    return out


def _fit(text: str, width: int) -> str:
    chars = max(8, width // 6)  # the default bitmap font is about 6 px per character
    return text if len(text) <= chars else text[:chars - 3] + "..."
