"""moving-shapes: short clips whose label lives only in the motion.

One shape (circle, square or triangle, random colour and size) moves over a noisy background. The
two classes of a motion are one trajectory played forwards or backwards:

    vertical    down | up         (default; a horizontal flip keeps the labels true)
    horizontal  left | right      (train with --hflip false)
    scale       grow | shrink

A clip of one class is built as the other class's clip reversed in time, so the *set* of frames has
the same distribution in both classes: any single frame, and any average over frames, is
compatible with every class. A frame-averaging model is therefore at chance by construction, and
only a model that reads the order of frames can learn the task. (Classes from different motions,
say `up` and `grow`, would differ in their frames, which is why a dataset uses one motion.)

    ocula datasets make moving-shapes out/            # H.264 .mp4 files in out/{train,test}/<class>/
    ocula train moving-shapes --model cnn_lstm ...    # the same generator, in memory
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ocula.data.builtin import register_builtin
from ocula.data.samples import DatasetSplits, TensorSamples
from ocula.errors import OculaError, did_you_mean
from ocula.io import write_json
from ocula.log import progress
from ocula.data.synth_clips import write_clip

MOTIONS = {"vertical": ("down", "up"), "horizontal": ("left", "right"), "scale": ("grow", "shrink")}
FORWARD = {"vertical": "down", "horizontal": "right", "scale": "grow"}  # the coordinate increases
SHAPES = ("circle", "square", "triangle")
BUILTIN = dict(motion="vertical", frames=16, size=32, train_per_class=500, test_per_class=200, seed=0)


def check_motion(motion: str) -> tuple[str, str]:
    if motion not in MOTIONS:
        raise OculaError(f"unknown motion '{motion}': choose {', '.join(MOTIONS)}{did_you_mean(motion, MOTIONS)}")
    return MOTIONS[motion]


def render_clip(rng: np.random.Generator, motion: str, frames: int, size: int) -> np.ndarray:
    """One forward clip, uint8 (T, H, W, 3): the tracked coordinate increases over time."""
    k = size / 32.0
    t = np.arange(frames, dtype=np.float32)
    if motion == "scale":
        r = np.linspace(2.5 * k, rng.uniform(7, 10) * k, frames, dtype=np.float32)
        cx = np.full(frames, rng.uniform(r[-1], size - r[-1]), np.float32)
        cy = np.full(frames, rng.uniform(r[-1], size - r[-1]), np.float32)
    else:
        radius = rng.uniform(3.5, 6) * k
        travel = min(rng.uniform(0.7, 1.1) * k * (frames - 1), size - 2 * radius - 2)  # pixels, first to last
        start = radius + 1 + rng.random() * max(0.0, size - 2 * radius - 2 - travel)
        along = start + t * travel / max(frames - 1, 1)
        across = np.full(frames, rng.uniform(radius + 1, size - radius - 1), np.float32)
        cx, cy = (along, across) if motion == "horizontal" else (across, along)
        r = np.full(frames, radius, np.float32)
    alpha = _shape_alpha(SHAPES[rng.integers(len(SHAPES))], cx, cy, r, size)[..., None]  # (T, H, W, 1)
    colour = rng.uniform(140, 255, 3).astype(np.float32)
    background = rng.integers(0, 60, (frames, size, size, 3), dtype=np.uint8).astype(np.float32)
    return np.rint(background * (1 - alpha) + colour * alpha).astype(np.uint8)


def _shape_alpha(shape: str, cx, cy, r, size: int) -> np.ndarray:
    """Anti-aliased coverage (T, H, W) in [0, 1]: one-pixel soft edges make sub-pixel motion visible."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    rr = r[:, None, None]
    if shape == "circle":
        inside = rr - np.sqrt(dx ** 2 + dy ** 2)
    elif shape == "square":
        inside = rr * 0.85 - np.maximum(np.abs(dx), np.abs(dy))
    else:  # triangle pointing up: below the apex line, inside both slanted edges
        inside = np.minimum(rr * 0.8 - dy, (dy + rr) / 2 - np.abs(dx))
    return np.clip(inside + 0.5, 0.0, 1.0)


def generate(per_class: int, *, motion: str = "vertical", frames: int = 16, size: int = 32, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """→ (clips uint8 (N, T, H, W, 3), labels (N,), class names); classes alternate, then shuffle."""
    classes = list(check_motion(motion))
    if frames < 2 or size < 16:
        raise OculaError("moving-shapes needs at least 2 frames of 16x16 pixels")
    rng = np.random.default_rng(seed)
    forward = classes.index(FORWARD[motion])
    clips, labels = [], []
    for i in range(per_class * 2):
        clip = render_clip(rng, motion, frames, size)
        label = i % 2
        clips.append(clip if label == forward else clip[::-1])  # the other class: the same clip reversed
        labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(clips)[order], np.asarray(labels, dtype=np.int64)[order], classes


# ------------------------------------------------------------------------------ built-in
@lru_cache(maxsize=1)
def _builtin_arrays():
    b = BUILTIN
    train = generate(b["train_per_class"], motion=b["motion"], frames=b["frames"], size=b["size"], seed=b["seed"])
    test = generate(b["test_per_class"], motion=b["motion"], frames=b["frames"], size=b["size"], seed=b["seed"] + 1)
    return train, test


def load_moving_shapes() -> DatasetSplits:
    """The built-in: 1,000 train and 400 test clips of 16 RGB frames at 32x32, up vs down."""
    (xtr, ytr, classes), (xte, yte, _) = _builtin_arrays()

    def samples(x, y, split):
        clips = torch.from_numpy(x).permute(0, 1, 4, 2, 3)  # (N, T, C, H, W)
        return TensorSamples(clips, torch.from_numpy(y), [f"moving-shapes/{split}/{i}" for i in range(len(y))])

    pixels = torch.from_numpy(xtr[:200]).float().div_(255)
    return DatasetSplits(classes=classes, train=samples(xtr, ytr, "train"), test=samples(xte, yte, "test"),
                         source="moving-shapes", modality="video", channels=3, image_size=BUILTIN["size"],
                         mean=tuple(round(v, 4) for v in pixels.mean((0, 1, 2, 3)).tolist()),
                         std=tuple(round(v, 4) for v in pixels.std((0, 1, 2, 3)).tolist()),
                         split_info={"test_from": "official", "generator": dict(BUILTIN)})


register_builtin("moving-shapes", load_moving_shapes, aliases=("moving_shapes",),
                 description="generated clips (16 frames, 32x32): a shape moving down or up; "
                             "the label is in the motion only")


# ------------------------------------------------------------------------------ on disk
def write_moving_shapes(out, *, per_class: int = 60, test_per_class: Optional[int] = None,
                        motion: str = "vertical", frames: int = 16, size: int = 32, fmt: str = "mp4",
                        seed: int = 0) -> dict:
    """Write out/{train,test}/<class>/clip_NNNN.mp4 (H.264) or .../clip_NNNN/frame_NN.png.

    Returns {"train": n, "test": n, ...} and writes out/moving_shapes.json with the parameters."""
    if fmt not in ("mp4", "frames"):
        raise OculaError(f"format '{fmt}': choose mp4 or frames")
    if fmt == "mp4" and size % 2:
        raise OculaError("H.264 needs an even frame size")
    test_per_class = max(1, per_class // 3) if test_per_class is None else test_per_class
    counts = {}
    for split, n, split_seed in (("train", per_class, seed), ("test", test_per_class, seed + 1)):
        clips, labels, classes = generate(n, motion=motion, frames=frames, size=size, seed=split_seed)
        for i, (clip, label) in enumerate(progress(list(zip(clips, labels)), desc=f"write {split}", unit="clip",
                                                   leave=False)):
            write_clip(Path(out) / split / classes[label] / f"clip_{i:04d}", clip, fmt)
        counts[split] = len(labels)
    write_json(Path(out) / "moving_shapes.json", {"motion": motion, "classes": list(MOTIONS[motion]),
                                                  "frames": frames, "size": size, "format": fmt, "seed": seed,
                                                  "counts": counts})
    return counts

