"""Generated clip sets whose label lives in the order of frames: a window moving over a photograph.

Every clip is a camera window of S×S pixels sliding, zooming or turning over one of scikit-image's
sample photographs (or a photograph with a disc of another one pasted in), T frames long:

    direction   left_to_right | right_to_left | zoom_in | zoom_out   (the picture moves that way)
    rotation    cw | ccw                                              (the picture turns that way)
    speed       slow | fast        (a random heading; 0.4-0.9 against 2.0-3.0 pixels a frame)
    appear      appear | disappear (a disc of another photo shows up, or goes, at a random frame)

Within a pair (left/right, in/out, cw/ccw, appear/disappear) one class is a fresh clip of the other
class played backwards, so the *set* of frames has the same distribution in both classes: a model
that does not read the order of frames is at chance within a pair. (`direction`'s two pairs differ
in their frames — a zoom spans scales, a slide does not — so an order-blind model reaches 0.5 on it,
not 0.25. `speed` is not a reversal pair: one frame fits both classes, only the change between
frames tells.)

    generate("direction", per_class=40, frames=16, size=64, seed=0)   # arrays (N, T, H, W, 3), labels, classes
    write_clip_set(out, "direction", per_class=40, test_per_class=100, fmt="mp4")   # or fmt="frames"

On disk: out/{train,test}/<class>/clip_NNNN.mp4 (H.264) or out/{train,test}/<class>/clip_NNNN/frame_NN.png,
the layouts `ocula train` reads, plus out/clips.json with the parameters.
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


def _forward_clip(rng, kind: str, forward: str, frames: int, size: int) -> np.ndarray:
    """One clip of class `forward` (the first class of its pair, or either speed), float (T, S, S, 3)."""
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    half = size / 2
    scale = np.full(frames, rng.uniform(1.2, 2.5), np.float32)  # photo pixels a window pixel
    angle = np.zeros(frames, np.float32)
    if kind == "direction" and forward == "left_to_right":
        travel = rng.uniform(0.6, 1.0) * size * scale[0]  # photo pixels, first to last frame
        x, y = _place(rng, photo, half * scale[0] * 1.5 + travel / 2)
        cx, cy = x + travel / 2 - t * travel, np.full(frames, y, np.float32)  # window goes left: picture goes right
    elif kind == "direction":  # zoom_in: the window shrinks, the picture grows
        scale = scale[0] * np.exp(-t * rng.uniform(0.9, 1.4)).astype(np.float32)
        x, y = _place(rng, photo, half * scale[0] * 1.5)
        cx, cy = np.full(frames, x, np.float32), np.full(frames, y, np.float32)
    elif kind == "rotation":  # cw on screen: the window turns ccw over the photo
        angle = -t * np.radians(rng.uniform(90, 180))
        x, y = _place(rng, photo, half * scale[0] * 1.5)
        cx, cy = np.full(frames, x, np.float32), np.full(frames, y, np.float32)
    elif kind == "speed":
        step = rng.uniform(0.4, 0.9) if forward == "slow" else rng.uniform(2.0, 3.0)  # window pixels a frame
        heading = rng.uniform(0, 2 * np.pi)
        travel = step * (frames - 1) * scale[0]
        x, y = _place(rng, photo, half * scale[0] * 1.5 + travel / 2)
        along = (t - 0.5) * travel
        cx, cy = x + np.cos(heading) * along, y + np.sin(heading) * along
    else:  # appear: a disc of another photograph shows up at a random frame and stays
        x, y = _place(rng, photo, half * scale[0] * 1.5)
        cx, cy = np.full(frames, x, np.float32), np.full(frames, y, np.float32)
    clip = _window(photo, cx, cy, scale, angle, size)
    if kind == "appear":
        clip = _paste_disc(rng, clip, photos, size)
    return clip


def _paste_disc(rng, clip: np.ndarray, photos: tuple, size: int) -> np.ndarray:
    frames = len(clip)
    other = photos[rng.integers(len(photos))]
    r = rng.uniform(0.12, 0.22) * size
    ox, oy = _place(rng, other, r * 2)
    patch = _window(other, [ox], [oy], [rng.uniform(1.0, 2.0)], [0.0], size)[0]
    px, py = rng.uniform(r + 2, size - r - 2, 2)
    grid = np.arange(size, dtype=np.float32) + 0.5
    inside = r - np.hypot(grid[None, :] - px, grid[:, None] - py)
    alpha = np.clip(inside + 0.5, 0, 1)[..., None]
    patch = patch * np.where(inside < 2, 0.25, 1.0)[..., None]  # a dark rim: an object, not a colour shift
    start = int(rng.integers(frames // 4, 3 * frames // 4 + 1))  # the first frame that shows it
    clip = clip.copy()
    clip[start:] = clip[start:] * (1 - alpha) + patch * alpha
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


def write_clip_set(out, kind: str, *, per_class: int = 40, test_per_class: Optional[int] = None, frames: int = 16,
                   size: int = 64, fmt: str = "mp4", seed: int = 0) -> dict:
    """Write out/{train,test}/<class>/clip_NNNN(.mp4 | /frame_NN.png) and out/clips.json → the counts.
    The test split comes from seed + 1: other photos' windows, other trajectories."""
    if fmt not in FORMATS:
        raise OculaError(f"format '{fmt}': choose {' or '.join(FORMATS)}")
    if fmt == "mp4" and size % 2:
        raise OculaError("H.264 needs an even frame size")
    test_per_class = per_class if test_per_class is None else test_per_class
    counts = {}
    for split, n, split_seed in (("train", per_class, seed), ("test", test_per_class, seed + 1)):
        clips, labels, classes = generate(kind, n, frames=frames, size=size, seed=split_seed)
        for i, (clip, label) in enumerate(zip(clips, labels)):
            write_clip(Path(out) / split / classes[label] / f"clip_{i:04d}", clip, fmt)
        counts[split] = len(labels)
    write_json(Path(out) / "clips.json", {"set": kind, "classes": list(SETS[kind]), "frames": frames, "size": size,
                                          "format": fmt, "seed": seed, "counts": counts})
    return counts
