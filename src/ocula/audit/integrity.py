"""Integrity of image files: can each one be used, and is anything odd about it?

One pass reads each file once: the bytes are hashed (exact duplicates), the header is checked
before any decoding (decompression bombs never decode), and the pixels are decoded through
`ocula.data.images.open_image`, the same decoder training uses, so "decodes here" means "trains".
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from ocula.audit.findings import Finding, SampleRef
from ocula.audit.inventory import display_id
from ocula.data.images import DEFAULT_MAX_PIXELS, open_image
from ocula.errors import BadImageError
from ocula.log import progress

# Formats that are the same thing under two names (an .jpg holding an MPO is still a JPEG).
SAME_FORMAT = {"MPO": "JPEG"}
ODD_MODES = {"CMYK": "CMYK", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit",
             "I": "32-bit integer", "F": "32-bit float", "LAB": "Lab", "YCbCr": "YCbCr", "HSV": "HSV"}
FATAL = ("unreadable", "truncated", "zero-byte", "decompression-bomb")


@dataclass
class SizeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS  # above: a decompression bomb, never decoded
    huge_pixels: int = 25_000_000  # above: slow to decode (about 5000×5000)
    tiny_side: int = 32  # a short side below min(tiny_side, median short side / 4) is tiny
    max_aspect: float = 4.0  # long side / short side above this is extreme


@dataclass
class ImageInfo:
    """What one pass learned about one file."""

    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    frames: int = 1
    nbytes: int = 0
    sha1: str = ""
    problems: list[tuple[str, str]] = field(default_factory=list)  # (category, detail)
    small: Optional[np.ndarray] = None  # what on_image returned for the decoded pixels

    @property
    def usable(self) -> bool:
        return not any(cat in FATAL for cat, _ in self.problems)


def inspect_file(path: str, limits: SizeLimits, on_image: Optional[Callable] = None) -> ImageInfo:
    info = ImageInfo()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        info.problems.append(("unreadable", f"cannot read ({e.strerror or e})"))
        return info
    info.nbytes, info.sha1 = len(data), hashlib.sha1(data).hexdigest()
    if not data:
        info.problems.append(("zero-byte", "empty file"))
        return info
    if not _read_header(data, path, info, limits):
        return info
    try:
        # Grey is all the duplicate checks need, and a JPEG then decodes at reduced scale.
        img = open_image(data, channels=1, max_pixels=limits.max_pixels, draft_size=64)
    except BadImageError as e:
        info.problems.append(("truncated", e.reason))
        return info
    if on_image is not None:
        info.small = on_image(img)
    return info


def _read_header(data: bytes, path: str, info: ImageInfo, limits: SizeLimits) -> bool:
    """Fill size, mode, format and frames from the header alone; False when decoding must not go on."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            info.width, info.height = img.size
            info.mode, info.format = img.mode, img.format or ""
            info.frames = int(getattr(img, "n_frames", 1) or 1)
            transparent = "transparency" in img.info
    except Image.DecompressionBombError:
        info.problems.append(("decompression-bomb", "more pixels than Pillow allows"))
        return False
    except UnidentifiedImageError:
        info.problems.append(("unreadable", "not an image"))
        return False
    except Exception as e:  # noqa: BLE001 - a header that breaks Pillow is one bad file
        info.problems.append(("unreadable", f"bad header ({type(e).__name__})"))
        return False
    if info.width * info.height > limits.max_pixels:
        info.problems.append(("decompression-bomb", f"{info.width}×{info.height} pixels"))
        return False
    claimed = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if claimed and SAME_FORMAT.get(claimed, claimed) != SAME_FORMAT.get(info.format, info.format):
        info.problems.append(("wrong-extension", f"named {claimed}, is {info.format}"))
    if info.frames > 1:
        info.problems.append(("animated", f"{info.frames} frames"))
    odd = ODD_MODES.get(info.mode)
    if info.mode in ("RGBA", "LA", "PA") or (info.mode in ("P", "L", "RGB") and transparent):
        odd = f"{info.mode} with transparency"
    if odd:
        info.problems.append(("odd-mode", odd))
    return True


def inspect_files(paths: list[str], limits: SizeLimits, on_image: Optional[Callable] = None,
                  workers: Optional[int] = None, desc: str = "audit files") -> list[ImageInfo]:
    """inspect_file over many paths in threads (Pillow and hashlib release the GIL), with a bar."""

    workers = workers or min(4, os.cpu_count() or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda p: inspect_file(p, limits, on_image), paths, chunksize=16)
            return list(progress(results, total=len(paths), desc=desc, unit="img"))


def file_findings(infos: list[ImageInfo], refs: list[SampleRef]) -> list[Finding]:
    """One finding per (file, problem) found by the pass; unusable files are dropped from clean lists."""
    findings = []
    for info, ref in zip(infos, refs):
        for category, detail in info.problems:
            drop = [ref.id] if category in FATAL else []
            findings.append(Finding(category, [ref], f"{ref.id}: {detail}", details={"detail": detail}, drop=drop))
    return findings


def skipped_findings(skipped: list[tuple[str, str]], root: Optional[str]) -> list[Finding]:
    """Files the folder scan left out (empty files, broken links) are findings too."""
    findings = []
    for path, reason in skipped:
        category = "zero-byte" if reason == "empty file" else "unreadable"
        ref = SampleRef(display_id(path, root), "", None, path)
        findings.append(Finding(category, [ref], f"{ref.id}: {reason}", details={"detail": reason},
                                drop=[ref.id]))
    return findings


def size_findings(infos: list[ImageInfo], refs: list[SampleRef], limits: SizeLimits) -> list[Finding]:
    """Tiny, huge and extreme-aspect images, judged against the dataset's own sizes."""
    shorts = np.array([min(i.width, i.height) for i in infos if i.width and i.height])
    if not len(shorts):
        return []
    tiny_below = min(limits.tiny_side, float(np.median(shorts)) / 4)
    findings = []
    for info, ref in zip(infos, refs):
        w, h = info.width, info.height
        if not (w and h) or not info.usable:
            continue
        short, long_ = min(w, h), max(w, h)
        if short < tiny_below:
            findings.append(Finding("tiny", [ref], f"{ref.id}: {w}×{h}", details={"width": w, "height": h}))
        if w * h > limits.huge_pixels:
            findings.append(Finding("huge", [ref], f"{ref.id}: {w}×{h}", details={"width": w, "height": h}))
        if long_ / short > limits.max_aspect:
            findings.append(Finding("extreme-aspect", [ref], f"{ref.id}: {w}×{h} ({long_ / short:.1f}:1)",
                                    score=long_ / short, details={"width": w, "height": h}))
    return findings
