"""Generated clip sets whose label lives in the order of frames: an object moving over a photograph.

Every clip is a still S×S window of one of scikit-image's sample photographs with an object over it (a
disc of another photograph, its texture riding with it, a dark rim), T frames long (version 2):

    direction   left_to_right | right_to_left | zoom_in | zoom_out   (it slides across, or comes closer)
    rotation    cw | ccw           (it circles the middle of the frame, from the top)
    speed       slow | fast        (a random heading; a tenth to a quarter of the room, or 70-100 %)
    appear      appear | disappear (it shows up, or goes, at a random frame)

Within a pair (left/right, in/out, cw/ccw, appear/disappear) one class is a fresh clip of the other
class played backwards, so the *set* of frames has the same distribution in both classes: a model
that does not read the order of frames is at chance within a pair. (`direction`'s two pairs differ
in their frames — a zoom spans sizes, a slide does not — so an order-blind model reaches 0.5 on it,
not 0.25. `speed` is not a reversal pair: one frame fits both classes, only the change between
frames tells.) Version 1, a camera window sliding/zooming/turning over the whole photograph, was too
hard for a plain CNN-LSTM loop at 32 px (0.57 on direction, chance on rotation and speed; docs/video.md).

    generate("direction", per_class=40, frames=16, size=32, seed=0)   # arrays (N, T, H, W, 3), labels, classes
    write_clip_set(out, "direction", per_class=40, test_per_class=100, val_per_class=20, fmt="mp4")

On disk: out/{train,test[,val]}/<class>/clip_NNNN.mp4 (H.264) or .../clip_NNNN/frame_NN.png, the
layouts `ocula train` reads, plus out/clips.json with the parameters.
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Optional

import numpy as np

from ocula.errors import OculaError, did_you_mean
from ocula.io import atomic_path, write_json

SETS = {
    "direction": ("left_to_right", "right_to_left", "zoom_in", "zoom_out"),
    "rotation": ("cw", "ccw"),
    "speed": ("slow", "fast"),
    "appear": ("appear", "disappear"),
}
# scikit-image's sample photographs that ship inside the package (no download) and have texture all over
# (hubble_deep_field and colorwheel were left out: mostly flat, a slide over them barely changes a pixel).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "brick", "grass", "gravel")
FORMATS = ("mp4", "frames")
# 1: a camera window sliding/zooming/turning over a photograph (too hard for a plain CNN-LSTM at 32 px: 0.57 on
# direction, chance on rotation and speed). 2: a still photograph with an object moving over it.
VERSION = 2


def check_set(name: str) -> tuple[str, ...]:
    if name not in SETS:
        raise OculaError(f"unknown clip set '{name}': choose {', '.join(SETS)}{did_you_mean(name, SETS)}")
    return SETS[name]


@functools.lru_cache(maxsize=None)
def _photos() -> tuple:
    import skimage.data as sk

    def rgb(a: np.ndarray) -> np.ndarray:
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]

    return tuple(np.ascontiguousarray(rgb(getattr(sk, name)())).astype(np.float32) for name in PHOTOS)


def _window(photo: np.ndarray, cx, cy, scale, angle, size: int) -> np.ndarray:
    """Frames (T, S, S, 3) float: an S×S window centred at (cx, cy) in the photo, `scale` photo pixels a
    window pixel, turned by `angle` radians; bilinear sampling, edges clamped."""
    from scipy.ndimage import map_coordinates

    grid = np.arange(size, dtype=np.float32) - (size - 1) / 2
    u, v = np.meshgrid(grid, grid)  # window x (columns), y (rows)
    out = np.empty((len(cx), size, size, 3), np.float32)
    for t in range(len(cx)):
        c, s = np.cos(angle[t]) * scale[t], np.sin(angle[t]) * scale[t]
        xs, ys = cx[t] + c * u - s * v, cy[t] + s * u + c * v
        for ch in range(3):
            out[t, ..., ch] = map_coordinates(photo[..., ch], [ys, xs], order=1, mode="nearest")
    return out


def _place(rng, photo: np.ndarray, reach: float) -> tuple[float, float]:
    """A centre at least `reach` photo pixels from every edge (the photo's middle when it is too small)."""
    h, w = photo.shape[:2]
    x = rng.uniform(reach, w - reach) if w > 2 * reach else w / 2
    y = rng.uniform(reach, h - reach) if h > 2 * reach else h / 2
    return x, y


def _path(rng, kind: str, forward: str, frames: int, size: int):
    """The object's centre (px, py) and radius r per frame, in frame pixels, for class `forward` (the first
    class of its pair, or either speed)."""
    t = np.linspace(0.0, 1.0, frames)
    s = float(size)
    r = np.full(frames, rng.uniform(0.14, 0.2) * s)
    if kind == "direction" and forward == "left_to_right":
        lo, hi = r[0] + 1, s - r[0] - 1
        travel = rng.uniform(0.6, 1.0) * (hi - lo)
        x0 = rng.uniform(lo, hi - travel)
        return x0 + t * travel, np.full(frames, rng.uniform(lo, hi)), r
    if kind == "direction":  # zoom_in: the object comes closer, from a small disc to one a third of the frame
        r0, r1 = rng.uniform(0.07, 0.1) * s, rng.uniform(0.3, 0.36) * s
        r = r0 * (r1 / r0) ** t
        lo, hi = r1 + 1, s - r1 - 1
        return np.full(frames, rng.uniform(lo, hi)), np.full(frames, rng.uniform(lo, hi)), r
    if kind == "rotation":  # cw on screen: the object circles the middle of the frame clockwise (y points down),
        # from the top (so that which end of the clip shows it at the top tells the turn, as for a slide)
        r = np.full(frames, rng.uniform(0.12, 0.15) * s)
        orbit = rng.uniform(0.22, 0.3) * s
        angle = np.radians(rng.uniform(-135, -45) + t * rng.uniform(120, 200))
        return s / 2 + orbit * np.cos(angle), s / 2 + orbit * np.sin(angle), r
    if kind == "speed":  # a straight line at a random heading: most of the room it has, or a fifth of it
        heading = rng.uniform(0, 2 * np.pi)
        c, sn = np.cos(heading), np.sin(heading)
        lo, hi = r[0] + 1, s - r[0] - 1
        travel = (hi - lo) / max(abs(c), abs(sn)) * (rng.uniform(0.1, 0.25) if forward == "slow" else
                                                     rng.uniform(0.7, 1.0))
        dx, dy = c * travel, sn * travel
        x0, y0 = rng.uniform(lo - min(0, dx), hi - max(0, dx)), rng.uniform(lo - min(0, dy), hi - max(0, dy))
        return x0 + t * dx, y0 + t * dy, r
    lo, hi = r[0] + 1, s - r[0] - 1  # appear: the object stands still
    return np.full(frames, rng.uniform(lo, hi)), np.full(frames, rng.uniform(lo, hi)), r


def _forward_clip(rng, kind: str, forward: str, frames: int, size: int) -> np.ndarray:
    """One clip of class `forward`, float (T, S, S, 3): a still photograph with an object (a disc of another
    photograph, dark rim) moving over it, or showing up at a random frame (`appear`)."""
    photos = _photos()
    photo, other = (photos[i] for i in rng.choice(len(photos), 2, replace=False))
    scale = rng.uniform(1.2, 2.5)  # photo pixels a frame pixel
    x, y = _place(rng, photo, size / 2 * scale * 1.5)
    background = _window(photo, [x], [y], [scale], [0.0], size)[0]
    px, py, r = _path(rng, kind, forward, frames, size)
    # The object's texture rides with it and scales with its radius: `grain` photo pixels a radius.
    grain = rng.uniform(1.0, 2.0) * 0.17 * size
    ox, oy = _place(rng, other, grain * 1.2)
    grid = np.arange(size, dtype=np.float32) + 0.5
    u, v = np.meshgrid(grid, grid)
    clip = np.repeat(background[None], frames, axis=0)
    start = int(rng.integers(frames // 4, 3 * frames // 4 + 1)) if kind == "appear" else 0  # first frame with it
    from scipy.ndimage import map_coordinates

    for f in range(start, frames):
        du, dv = (u - px[f]) / r[f], (v - py[f]) / r[f]
        inside = r[f] * (1 - np.hypot(du, dv))  # pixels inside the rim
        alpha = np.clip(inside + 0.5, 0, 1)[..., None]
        if not alpha.any():
            continue
        coords = [oy + grain * dv, ox + grain * du]
        patch = np.stack([map_coordinates(other[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
        patch = patch * np.where(inside < max(1.5, size / 32), 0.2, 1.0)[..., None]  # a dark rim: an object
        clip[f] = clip[f] * (1 - alpha) + patch * alpha
    return clip


def generate(kind: str, per_class: int, *, frames: int = 16, size: int = 64, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """→ (clips uint8 (N, T, S, S, 3), labels (N,), class names), classes interleaved then shuffled."""
    classes = list(check_set(kind))
    if frames < 4 or size < 16:
        raise OculaError("generated clips need at least 4 frames of 16x16 pixels")
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(per_class * len(classes)):
        label = i % len(classes)
        if kind == "speed":
            clip = _forward_clip(rng, kind, classes[label], frames, size)
        else:  # pairs: the second class of each pair is a fresh first-class clip played backwards
            first = classes[label - label % 2]
            clip = _forward_clip(rng, kind, first, frames, size)
            clip = clip[::-1] if label % 2 else clip
        clips.append(np.clip(np.rint(clip), 0, 255).astype(np.uint8))
        labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(clips)[order], np.asarray(labels, np.int64)[order], classes


# ------------------------------------------------------------------------------ on disk
def write_video(path, frames, fps: int = 12, crf: int = 18, *, options: Optional[dict] = None,
                rotation: int = 0) -> None:
    """uint8 (T, H, W, 3) (or an iterable of (H, W, 3) frames) → an H.264 .mp4 (yuv420p, even sizes), written
    atomically. `options`: x264's, over the defaults (e.g. {"g": "30"}: a keyframe every 30 frames instead of
    250; {"tune": "film"}: B-frames, as cameras write); `rotation`: a display-matrix tag,
    degrees counter-clockwise, as phones write it."""
    import av

    frames = iter(frames)
    first = np.asarray(next(frames), dtype=np.uint8)
    h, w = first.shape[:2]
    if h % 2 or w % 2:
        raise ValueError("H.264 (yuv420p) needs even frame sizes")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency", **(options or {})}
            if rotation:
                stream.set_display_rotation(rotation)
            for rgb in itertools.chain([first], frames):
                rgb = np.asarray(rgb, dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def write_clip(stem, clip: np.ndarray, fmt: str) -> None:
    """One uint8 (T, H, W, 3) clip → stem.mp4, or stem/frame_NN.png (a frame folder)."""
    stem = Path(stem)
    if fmt == "mp4":
        write_video(stem.with_suffix(".mp4"), clip)
        return
    from PIL import Image

    stem.mkdir(parents=True, exist_ok=True)
    for j, frame in enumerate(clip):
        Image.fromarray(frame).save(stem / f"frame_{j:02d}.png")


def write_clip_set(out, kind: str, *, per_class: int = 40, test_per_class: Optional[int] = None,
                   val_per_class: int = 0, frames: int = 16, size: int = 64, fmt: str = "mp4", seed: int = 0) -> dict:
    """Write out/{train,test}/<class>/clip_NNNN(.mp4 | /frame_NN.png) and out/clips.json → the counts.
    The test split comes from seed + 1 (other photos' windows, other trajectories); with `val_per_class`,
    a validation split out/val/ from seed + 2, which ocula then uses instead of carving or cross-fitting."""
    if fmt not in FORMATS:
        raise OculaError(f"format '{fmt}': choose {' or '.join(FORMATS)}")
    if fmt == "mp4" and size % 2:
        raise OculaError("H.264 needs an even frame size")
    test_per_class = per_class if test_per_class is None else test_per_class
    counts = {}
    splits = [("train", per_class, seed), ("test", test_per_class, seed + 1)]
    if val_per_class:
        splits.append(("val", val_per_class, seed + 2))
    for split, n, split_seed in splits:
        clips, labels, classes = generate(kind, n, frames=frames, size=size, seed=split_seed)
        for i, (clip, label) in enumerate(zip(clips, labels)):
            write_clip(Path(out) / split / classes[label] / f"clip_{i:04d}", clip, fmt)
        counts[split] = len(labels)
    write_json(Path(out) / "clips.json", {"set": kind, "version": VERSION, "classes": list(SETS[kind]),
                                          "frames": frames, "size": size, "format": fmt, "seed": seed,
                                          "counts": counts})
    return counts
