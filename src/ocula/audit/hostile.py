"""A folder of hostile files, one (or more) per integrity category, beside ordinary images.

Used by the tests and bench/audit_hostile.py, and handy to see what `ocula audit` reports:

    from ocula.audit.hostile import write_hostile_folder
    expected = write_hostile_folder("hostile/")   # {relative path: category}
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

BOMB_SIDE = 12_000  # 144 megapixels of one colour: a few hundred KB as PNG


def _photo(rng, size=(48, 48)) -> "Image.Image":
    """A distinct little picture: a few random shapes over noise (no two alike at low resolution)."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.fromarray(rng.integers(0, 80, (h, w, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, 2))
        color = tuple(int(v) for v in rng.integers(60, 256, 3))
        [d.ellipse, d.rectangle][int(rng.integers(2))]([x0, y0, x1 + 1, y1 + 1], fill=color)
    return img


def write_hostile_folder(root, ordinary_per_class: int = 8, bomb_side: int = BOMB_SIDE, seed: int = 0) -> dict:
    """Two class folders of ordinary 48×48 PNGs, salted with hostile files. → {relative path: category}.

    A bomb of `bomb_side`² pixels is a bomb for ocula's default limit when bomb_side > 8000; tests
    pass a smaller side together with a smaller `SizeLimits.max_pixels`.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(ordinary_per_class):
            _photo(rng).save(root / cls / f"ok_{i:02d}.png")
    expected = {}

    def put(name: str, category: str, data: bytes) -> None:
        (root / "a" / name).write_bytes(data)
        expected[f"a/{name}"] = category

    def encode(img, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    photo = _photo(rng)
    jpeg = encode(photo, "JPEG", quality=90)
    put("zero.png", "zero-byte", b"")
    put("garbage.png", "unreadable", rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    put("text.jpg", "unreadable", b"this is not an image\n" * 20)
    put("truncated.jpg", "truncated", jpeg[: len(jpeg) // 2])
    png = encode(photo, "PNG")
    put("truncated.png", "truncated", png[: len(png) * 2 // 3])
    put("png_named.jpg", "wrong-extension", png)
    put("bomb.png", "decompression-bomb", encode(Image.new("L", (bomb_side, bomb_side)), "PNG", optimize=True))
    frames = [_photo(rng) for _ in range(3)]
    put("animated.gif", "animated", _animated(frames))
    put("cmyk.jpg", "odd-mode", encode(photo.convert("CMYK"), "JPEG"))
    deep = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257))
    put("deep16.png", "odd-mode", encode(deep, "PNG"))
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    put("palette_alpha.png", "odd-mode", encode(pal, "PNG", transparency=0))
    put("tiny.png", "tiny", encode(_photo(rng, (6, 6)), "PNG"))
    put("long.png", "extreme-aspect", encode(_photo(rng, (400, 40)), "PNG"))
    return expected


def _animated(frames) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def write_picture_folder(root, classes=("a", "b", "c"), per_class: int = 10, size: int = 48, seed: int = 0,
                         prefix: str = "") -> str:
    """Class folders of distinct random pictures (for duplicate checks: no two alike by chance)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _photo(rng, (size, size)).save(root / cls / f"{prefix}{cls}_{i:03d}.png")
    return str(root)
