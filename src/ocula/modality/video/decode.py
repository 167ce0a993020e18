"""One clip → T frames as uint8 (T, C, S, S), from a video file (PyAV) or a frame folder.

Which frames (`clip_indices`):
- evaluation and prediction: T frames uniformly over the clip, the centre of T equal segments;
- training: TSN-style segment sampling, one random frame inside each of the T segments.
A clip with fewer than T frames is padded by repetition (`pad="repeat"`: the clip is stretched in
time, each frame shown for longer, so motion keeps its order) or rejected (`pad="reject"`: it is
named and skipped like a bad image).

Geometry is the image contract's eval geometry (short side to input_size / crop_pct, centre crop),
applied to the whole clip at once with torchvision, so a video file and a frame folder of the same
frames give the same tensor, and training, evaluation and prediction share one decoder.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Optional

import numpy as np
import torch

from ocula.data.contract import DataContract
from ocula.data.folders import is_debris
from ocula.data.images import is_image_path, open_image
from ocula.data.transforms import interpolation, resize_size
from ocula.errors import BadImageError
from ocula.data.synth_clips import write_video  # noqa: F401  (re-exported: the writer lives with the generators)

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"})
PAD_MODES = ("repeat", "reject")


class BadClipError(BadImageError):
    """A video or frame folder that cannot be used; counted and skipped like a bad image."""


def is_video_path(path) -> bool:
    return os.path.splitext(str(path))[1].lower() in VIDEO_EXTENSIONS


def frame_files(folder) -> list[str]:
    """The images directly inside a frame folder, in natural order (frame_2 before frame_10)."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and is_image_path(e.name)
                 and not is_debris(e.name)]
    except OSError:
        return []
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


# ------------------------------------------------------------------------------ which frames
def uniform_indices(n: int, t: int) -> np.ndarray:
    """Centre frame of each of t equal segments of an n-frame clip (repeats when n < t)."""
    return np.minimum(((np.arange(t) + 0.5) * n / t).astype(np.int64), n - 1)


def segment_indices(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """TSN sampling: one uniformly random frame inside each of t equal segments."""
    return np.minimum(((np.arange(t) + rng.random(t)) * n / t).astype(np.int64), n - 1)


def clip_indices(n: int, t: int, *, rng: Optional[np.random.Generator] = None, pad: str = "repeat",
                 path: str = "", need: Optional[int] = None) -> np.ndarray:
    """Indices of the t frames to read: random segments when `rng` is given, else uniform.
    `need` (default t): the clip length below which pad="reject" refuses the clip."""
    need = t if need is None else need
    if n < 1:
        raise BadClipError(path, "no frames")
    if n < need and pad == "reject":
        raise BadClipError(path, f"only {n} frames, fewer than the {need} required (clip_pad=reject)")
    return segment_indices(n, t, rng) if rng is not None else uniform_indices(n, t)


def video_header(path: str):
    """→ ((width, height), mode, None) from a video file's stream header, or None."""
    try:
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            mode = "L" if (ctx.pix_fmt or "").startswith("gray") else "RGB"
            return (int(ctx.width), int(ctx.height)), mode, None
    except Exception:  # noqa: BLE001 - any unreadable header: the decoder will name and skip the clip
        return None


# ------------------------------------------------------------------------------ decoding
def read_clip(path, contract: DataContract, *, rng: Optional[np.random.Generator] = None,
              pad: str = "repeat", frames: Optional[int] = None) -> torch.Tensor:
    """A video file or frame folder → uint8 (T, C, S, S) at the contract's eval geometry.

    T is `frames` or else contract.frames (the training cache reads more frames than the model
    sees, for temporal jitter in RAM). Raises BadClipError (a BadImageError) for anything
    unreadable, so callers skip and count it.
    """
    path = str(path)
    t = contract.frames or 1
    count = frames or t
    pick = lambda n: clip_indices(n, count, rng=rng, pad=pad, path=path, need=t)  # noqa: E731
    if os.path.isdir(path):
        frames = _read_frame_folder(path, pick, contract.channels)
    elif is_video_path(path):
        frames = _read_video(path, pick)
    elif os.path.exists(path):
        raise BadClipError(path, "not a video file or frame folder")
    else:
        raise BadClipError(path, "no such file")
    return fit_geometry(frames, contract)


def fit_geometry(frames: torch.Tensor, contract: DataContract) -> torch.Tensor:
    """uint8 (T, C, H, W) → (T, channels, S, S): grey/RGB conversion, short-side resize, centre crop."""
    from torchvision.transforms.v2 import functional as TF

    frames = _to_channels(frames, contract.channels)
    size = contract.input_size
    if frames.shape[-2:] != (size, size):
        frames = TF.resize(frames, resize_size(contract), interpolation=interpolation(contract.interpolation),
                           antialias=True)
        frames = TF.center_crop(frames, [size, size])
    return frames.contiguous()


def _to_channels(frames: torch.Tensor, channels: int) -> torch.Tensor:
    c = frames.shape[1]
    if c == channels:
        return frames
    if channels == 3 and c == 1:
        return frames.expand(-1, 3, -1, -1)
    if channels == 1 and c == 3:  # ITU-R 601 luma, as PIL's convert("L")
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (frames.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise BadClipError("", f"cannot convert {c}-channel frames to {channels} channels")


def _read_frame_folder(folder: str, pick: Callable, channels: int) -> torch.Tensor:
    files = frame_files(folder)
    if not files:
        raise BadClipError(folder, "frame folder without images")
    arrays = []
    for i in pick(len(files)).tolist():
        try:
            img = open_image(files[i], channels=channels)
        except BadImageError as e:
            raise BadClipError(folder, f"frame {os.path.basename(files[i])}: {e.reason}") from None
        arrays.append(np.asarray(img).reshape(img.size[1], img.size[0], -1))
    if len({a.shape for a in arrays}) > 1:
        raise BadClipError(folder, "frames of different sizes")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def _read_video(path: str, pick: Callable, seek: bool = True) -> torch.Tensor:
    """Decode only what the picked frames need (seeking to the keyframe before each one when the stream's
    index says a keyframe lies ahead, else decoding forward); convert only the frames picked; turn them
    upright as the stream's rotation says (a phone's portrait video is stored landscape with a tag)."""
    import av

    try:
        if os.path.getsize(path) == 0:
            raise BadClipError(path, "empty file")
        n = _frame_count(path)
        wanted = pick(n)
        arrays, decoded = _decode_frames(path, wanted, seek=seek)
        if seek and len(arrays) < len(set(wanted.tolist())):  # a seek landed past a frame: decode it all
            arrays, decoded = _decode_frames(path, wanted, seek=False)
        if len(arrays) < len(set(wanted.tolist())):  # the header overstated the length: go by what decoded
            wanted = pick(decoded)
            arrays, _ = _decode_frames(path, wanted, seek=False)
    except BadClipError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, StopIteration) as e:
        raise BadClipError(path, f"cannot decode video ({type(e).__name__}: {str(e)[:80]})") from None
    return torch.from_numpy(np.stack([arrays[i] for i in wanted.tolist()])).permute(0, 3, 1, 2)


def _frame_count(path: str) -> int:
    import av

    with av.open(path) as container:
        stream = _video_stream(container, path)
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)  # webm/mkv: count packets


def _decode_frames(path: str, wanted: np.ndarray, seek: bool = True) -> tuple[dict[int, np.ndarray], int]:
    """→ ({frame index: (H, W, 3) uint8, upright} for the wanted indices, frames decoded (or reached))."""
    import av

    with av.open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        timing = _constant_rate_timing(stream) if seek else None
        if timing is None:
            return _decode_forward(container, stream, wanted)
        return _decode_seeking(container, stream, wanted, *timing)


def _decode_forward(container, stream, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
    need, last, got, i = set(wanted.tolist()), int(wanted.max()), {}, -1
    for i, frame in enumerate(container.decode(stream)):
        if i in need:
            got[i] = _upright(frame, stream)
        if i >= last:
            break
    return got, i + 1


def _decode_seeking(container, stream, wanted: np.ndarray, first: float, step: float, keys: list
                    ) -> tuple[dict[int, np.ndarray], int]:
    """Frame i is the one shown at first + i·step (a constant frame rate). Before each wanted frame, seek
    when a keyframe lies between the frame last decoded and it (decoding forward would pass it anyway)."""
    from bisect import bisect_right

    need, got, pos, frames = set(wanted.tolist()), {}, -1, None
    for target in sorted(need):
        if target <= pos:
            continue
        target_pts = first + target * step
        if frames is None or bisect_right(keys, target_pts) > bisect_right(keys, first + pos * step):
            container.seek(int(target_pts), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        for frame in frames:
            if frame.pts is None:
                return got, pos + 1  # no timestamps: the caller decodes forward instead
            pos = int(round((frame.pts - first) / step))
            if pos in need and pos not in got:
                got[pos] = _upright(frame, stream)
            if pos >= target:
                break
        else:
            break  # the end of the stream
    return got, pos + 1


def _constant_rate_timing(stream) -> Optional[tuple[float, float, list]]:
    """(pts of frame 0, pts per frame, keyframe timestamps) when the stream has a constant frame rate and an
    index with keyframes; None (decode forward, counting frames) otherwise: a variable rate would make
    "frame i" by timestamp differ from frame i by count."""
    rate, base = stream.average_rate, stream.time_base
    if not rate or not base or not stream.frames or not stream.duration:
        return None
    step = float(1 / (rate * base))
    if abs(stream.duration / step - stream.frames) > 1:
        return None
    keys = sorted(e.timestamp for e in stream.index_entries if e.is_keyframe)
    if not keys:
        return None
    return float(stream.start_time or 0), step, keys


def _upright(frame, stream) -> np.ndarray:
    """(H, W, 3) uint8 as the video is meant to be shown: its display matrix (or a legacy `rotate` tag)
    turned into quarter turns counter-clockwise."""
    # threads=1: PyAV keeps one colour converter per process, and with slice threads (the default) a
    # DataLoader worker forked after the parent decoded a clip waits forever for threads it does not have
    # (seen in test_video under CI and under load here: the worker sat in avpriv_slicethread_execute)
    rgb = frame.to_ndarray(format="rgb24", threads=1)
    degrees = frame.rotation  # counter-clockwise, from the display matrix
    if not degrees:
        tag = stream.metadata.get("rotate")  # older muxers: clockwise degrees
        degrees = -float(tag) if tag and tag.lstrip("-").isdigit() else 0
    turns = int(round(degrees / 90)) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _video_stream(container, path: str):
    streams = container.streams.video
    if not streams:
        raise BadClipError(path, "no video stream")
    return streams[0]
