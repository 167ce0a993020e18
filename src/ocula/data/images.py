"""Turn anything that looks like an image into a PIL image of a known mode ("L" or "RGB").

Every reader in ocula (folder datasets, predict, serve) goes through `open_image` / `to_pil`, so a
file decodes the same way everywhere. A file that cannot be used raises `BadImageError` with a short
reason and nothing else, so callers can count and skip it.

Conversion rules (the same for every source):
- EXIF orientation is applied, so a phone photo is the right way up.
- Transparency (RGBA, LA, palette or grey with a transparent colour) is composited over a white
  background: transparent regions of icons and product shots are white on the web, not black.
- 16-bit grey ("I;16*") keeps its top 8 bits (>> 8). 32-bit int ("I") and float ("F") are scaled
  by their value range: data already in 0..255 is kept, 0..65535 is shifted like 16-bit, floats in
  0..1 are multiplied by 255, anything else is stretched min..max to 0..255.
- CMYK, YCbCr, HSV and the like are converted by Pillow; RGB -> L uses ITU-R 601-2 luma.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ocula.errors import BadImageError

DEFAULT_MAX_PIXELS = 64_000_000
EXIF_ORIENTATION = 0x0112  # the EXIF tag of the camera's rotation/mirroring (1 = as stored)


def _openable_extensions() -> frozenset:
    # Pillow also registers save-only formats (PDF, PALM); a folder of PDFs is not an image dataset.
    # MPO is opened through the JPEG plugin, so it counts although it has no opener of its own.
    found = Image.registered_extensions()
    return frozenset(ext.lower() for ext, fmt in found.items() if fmt in Image.OPEN or fmt == "MPO")


IMAGE_EXTENSIONS = _openable_extensions()  # lower-case, with the dot: ".jpg", ".png", ...

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, io.IOBase]


def is_image_path(path) -> bool:
    """True when the file name ends in an extension Pillow can open (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def open_image(
    source: ImageSource,
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: Optional[int] = None,
) -> Image.Image:
    """Decode a path, bytes or binary file object fully into an "L" (channels=1) or "RGB" image.

    `draft_size`: the smallest side the caller will resize to; large JPEGs are then decoded at a
    reduced scale (never below that size), which is several times faster for predictions.
    The pixel count is checked from the header before decoding, so decompression bombs never decode.
    """
    _check_channels(channels)
    label, fp = _open_source(source)
    try:
        with Image.open(fp) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise BadImageError(label, f"too many pixels ({width}×{height})")
            if draft_size:
                jpeg_draft(img, draft_size, channels)
            img.load()
            upright = _exif_transpose(img)
            # The opened image is closed when this block ends, so never hand it out itself.
            out = _convert_or_raise(upright, channels, label)
            return out.copy() if out is img else out
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # warning: -W error
        raise BadImageError(label, "too many pixels") from None
    except UnidentifiedImageError:
        raise BadImageError(label, "not an image") from None
    except MemoryError:
        raise BadImageError(label, "too large to decode") from None
    except Exception:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error...
        raise BadImageError(label, "truncated or corrupt") from None


def to_pil(obj, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Accept a PIL image, a numpy array (HW or HWC, uint8/uint16/float/bool), a path, bytes or
    a file object, and return an "L" or "RGB" image by the rules in the module docstring."""
    _check_channels(channels)
    if isinstance(obj, Image.Image):
        # An image the caller opened itself (Image.open of a phone photo) still carries its EXIF tag.
        return _convert_or_raise(_upright(obj), channels, "<image>")
    if isinstance(obj, np.ndarray):
        return _convert_or_raise(_array_to_pil(obj), channels, "<array>")
    if hasattr(obj, "numpy") and hasattr(obj, "detach"):  # a torch tensor, without importing torch
        return to_pil(obj.detach().cpu().numpy(), channels, max_pixels)
    return open_image(obj, channels=channels, max_pixels=max_pixels)


def jpeg_draft(img: Image.Image, size: int, channels: int = 3) -> None:
    """Ask the JPEG decoder to decode at 1/2, 1/4 or 1/8 scale while both sides stay >= `size`.

    Must be called before `load()`. Does nothing for other formats. For channels=1 the decoder
    also skips chroma ("L" draft), which saves more time.
    """
    if img.format not in ("JPEG", "MPO") or size <= 0:
        return
    if min(img.size) < 2 * size:  # no 1/2 scale possible: a draft would change nothing
        return
    mode = "L" if channels == 1 else img.mode
    img.draft(mode, (size, size))


def convert_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to "L" or "RGB" (see module docstring). Raises ValueError when
    Pillow has no conversion for the mode."""
    _check_channels(channels)
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_depth_to_l(img)
    elif img.mode == "1":
        img = img.convert("L")
    elif _has_alpha(img):
        img = _over_white(img)
    return img.convert(target) if img.mode != target else img


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")


def _open_source(source: ImageSource):
    """(label for messages, something Image.open accepts); empty or unreadable input raises."""
    if isinstance(source, (str, os.PathLike)):
        label = str(source)
        try:
            st = os.stat(source)
        except FileNotFoundError:
            raise BadImageError(label, "missing file") from None
        except OSError as e:
            raise BadImageError(label, f"cannot read ({e.strerror or e})") from None
        if not os.path.isfile(source):
            raise BadImageError(label, "not a file")
        if st.st_size == 0:
            raise BadImageError(label, "empty file")
        return label, Path(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, data = "<bytes>", bytes(source)
    elif hasattr(source, "read"):
        label = str(getattr(source, "name", "<stream>"))
        try:
            data = source.read()
        except Exception as e:  # noqa: BLE001 - any failing stream is one bad input
            raise BadImageError(label, f"cannot read ({e})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise BadImageError(label, "stream is not opened in binary mode")
    else:
        raise BadImageError(f"<{type(source).__name__}>", "not an image")
    if len(data) == 0:
        raise BadImageError(label, "empty file")
    return label, io.BytesIO(data)


def _exif_transpose(img: Image.Image) -> Image.Image:
    # A malformed EXIF block should not cost us an otherwise good image: keep it unrotated.
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img


def shown_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of `img` as shown, after its EXIF orientation (what `to_pil` returns)."""
    w, h = img.size
    return (h, w) if _orientation(img) in (5, 6, 7, 8) else (w, h)  # these turn by 90°


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(EXIF_ORIENTATION) or 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the image as stored
        return 1


def _upright(img: Image.Image) -> Image.Image:
    """`img` itself when no EXIF orientation turns it (no copy), else the turned copy."""
    return img if _orientation(img) == 1 else _exif_transpose(img)


def _convert_or_raise(img: Image.Image, channels: int, label: str) -> Image.Image:
    try:
        return convert_mode(img, channels)
    except Exception:  # noqa: BLE001 - e.g. LAB has no conversion to RGB in Pillow
        raise BadImageError(label, f"unsupported image mode {img.mode}") from None


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info


def _over_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        return Image.fromarray((arr.astype(np.uint16) >> 8).astype(np.uint8))
    return Image.fromarray(np.ascontiguousarray(_scale_to_uint8(arr)))


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map an array of any numeric dtype to uint8 by its value range (rules in the docstring)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    values = arr.astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    is_float = np.issubdtype(arr.dtype, np.floating)
    if is_float and lo >= 0 and hi <= 1:
        values = values * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        values = np.floor(values / 256.0)
    else:
        values = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(_scale_to_uint8(arr)))  # -> "L"
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(_scale_to_uint8(arr)))  # -> "RGB" / "RGBA"
    raise BadImageError("<array>", f"unsupported array shape {tuple(arr.shape)} (want HW or HWC)")
