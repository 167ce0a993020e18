"""What the images (or clips) of a file dataset are like, read from headers: size and colour.

    stats = measure_files(splits.train.paths)      # a seeded sample of at most 1,000 files
    stats.short_side, stats.grey, stats.sampled     # median short side; True when every sample is grey

Only headers are read (Pillow opens lazily; video files give their stream geometry), so measuring
1,000 files takes well under a second. RGB-mode samples are also checked for grey *content* by small
decodes, since many grey datasets are saved as RGB JPEGs: a seeded random share of them, stopping at the
first colour file. A folder is only called grey when GREY_CONTENT_CHECKS decoded files (or every
colour-mode sample, when fewer) are grey inside; a folder with 2 % colour files then passes as grey with
probability 0.98^300 < 0.3 % (1 %: < 5 %), where 24 checks passed it 62 % of the time.
"""
from __future__ import annotations

import io

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ocula.data.images import open_image
from ocula.errors import BadImageError

MAX_SAMPLED = 1000
GREY_CONTENT_CHECKS = 300  # colour-mode files decoded (small) at most, to see whether their channels are equal
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass
class ImageStats:
    population: int = 0  # files the sample was drawn from
    sampled: int = 0  # files whose header was read
    unreadable: int = 0  # sampled files without a readable header (decoding will skip them later)
    short_side: Optional[int] = None  # median of min(width, height)
    sizes: dict = field(default_factory=dict)  # "WxH" -> count, the 5 most common
    grey: Optional[bool] = None  # True: every readable sample is grey (by mode or by content)
    grey_by_content: int = 0  # RGB-mode samples whose three channels were found equal

    def to_dict(self) -> dict:
        return asdict(self)


def sample_paths(paths: list[str], limit: int = MAX_SAMPLED, seed: int = 0) -> list[str]:
    if len(paths) <= limit:
        return list(paths)
    idx = np.random.default_rng(seed).choice(len(paths), limit, replace=False)
    return [paths[i] for i in sorted(idx)]


def measure_files(paths: list[str], limit: int = MAX_SAMPLED, seed: int = 0, header=None) -> ImageStats:
    """Header statistics of a seeded sample of files. `header(path)` reads one sample's header
    (default `image_header`; a modality passes its own, e.g. for video files and frame folders)."""
    from collections import Counter

    header = header or image_header
    stats, shorts, sizes, rgb_samples, grey_flags = ImageStats(population=len(paths)), [], Counter(), [], []
    for path in sample_paths(paths, limit, seed):
        found = header(path)
        stats.sampled += 1
        if found is None:
            stats.unreadable += 1
            continue
        (w, h), mode, frame_path = found
        shorts.append(min(w, h))
        sizes[f"{w}x{h}"] += 1
        is_grey = mode in GREY_MODES
        grey_flags.append(is_grey)
        if not is_grey and mode in ("RGB", "RGBA", "YCbCr", "P") and frame_path:
            rgb_samples.append((len(grey_flags) - 1, frame_path))
    stats.grey_by_content, all_grey = _count_grey_content(rgb_samples, seed)
    if rgb_samples and all_grey:  # every checked RGB file is grey inside:
        for index, _ in rgb_samples:  # so are the unchecked ones, by extrapolation
            grey_flags[index] = True
    if shorts:
        stats.short_side = int(np.median(shorts))
        stats.sizes = dict(sizes.most_common(5))
        stats.grey = all(grey_flags)
    return stats


def _count_grey_content(rgb_samples: list, seed: int) -> tuple[int, bool]:
    """Decode a seeded random order of the colour-mode samples (not the first in path order: those are
    one class folder) until one is colour or GREY_CONTENT_CHECKS were grey → (grey found, all grey)."""
    order = np.random.default_rng(seed).permutation(len(rgb_samples))[:GREY_CONTENT_CHECKS]
    grey = 0
    for i in order:
        if not _content_is_grey(rgb_samples[i][1]):
            return grey, False
        grey += 1
    return grey, True


def image_header(path: str):
    """→ ((width, height), mode, path) of an image file from its header, or None."""
    from PIL import Image

    try:
        with Image.open(path) as img:  # min(w, h) needs no EXIF rotation
            grey_palette = img.mode == "P" and _palette_is_grey(img.getpalette())
            return img.size, "L" if grey_palette else img.mode, path
    except Exception:  # noqa: BLE001 - any unreadable header: the decoder will name and skip the file
        return None


def _palette_is_grey(palette) -> bool:
    pal = np.asarray(palette or [], dtype=np.int16).reshape(-1, 3)
    return bool(len(pal)) and bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())


def _content_is_grey(path: str, tolerance: float = 3.0) -> bool:
    """Decoded small: channels equal up to JPEG noise (mean abs difference <= tolerance of 255)."""
    try:
        img = open_image(path, channels=3, draft_size=64)
    except BadImageError:
        return False
    img.thumbnail((64, 64))
    a = np.asarray(img, dtype=np.int16)
    return float(np.abs(a[..., 0] - a[..., 1]).mean() + np.abs(a[..., 1] - a[..., 2]).mean()) <= tolerance


EXIF_ORIENTATION, TURNED = 0x0112, (5, 6, 7, 8)  # orientations that swap width and height


def shown_size(data: bytes) -> Optional[tuple[int, int]]:
    """The (width, height) of an encoded image as it is shown (EXIF orientation applied), from its header alone:
    a detector's boxes are given in these pixels, whatever size the image was decoded at. None if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            turned = img.getexif().get(EXIF_ORIENTATION, 1) in TURNED
        return (h, w) if turned else (w, h)
    except Exception:  # noqa: BLE001 - the body was decoded already; a header that fails now gives no size
        return None
