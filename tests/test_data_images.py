"""open_image / to_pil: every Pillow mode to L or RGB, EXIF, alpha, and every way a file is bad."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ocula.data.images import IMAGE_EXTENSIONS, is_image_path, jpeg_draft, open_image, to_pil
from ocula.errors import BadImageError


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_extensions_cover_common_formats_case_insensitively():
    for ext in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"):
        assert ext in IMAGE_EXTENSIONS
    assert ".pdf" not in IMAGE_EXTENSIONS  # Pillow only writes PDFs
    assert is_image_path("A/B/PHOTO.JPG") and is_image_path("x.PnG")
    assert not is_image_path("notes.txt")


def test_upper_case_extensions_open(tmp_path):
    png = _save(Image.new("RGB", (5, 3), (10, 20, 30)), tmp_path / "A.PNG")
    jpg = _save(Image.new("RGB", (5, 3), (200, 20, 30)), tmp_path / "B.JPEG", format="JPEG")
    assert open_image(png).size == (5, 3)
    assert open_image(png).getpixel((0, 0)) == (10, 20, 30)
    assert open_image(jpg, channels=1).mode == "L"


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = _save(img, tmp_path / "rot.jpg", format="JPEG", exif=exif.tobytes(), quality=95)
    out = open_image(path)
    assert out.size == (20, 40)
    r, g, b = out.getpixel((10, 3))  # the blue strip is now on top
    assert b > 200 and r < 60


@pytest.mark.parametrize(
    "make, channels, expect",
    [
        (lambda: Image.new("L", (6, 4), 77), 3, (77, 77, 77)),
        (lambda: Image.new("RGB", (6, 4), (255, 0, 0)), 1, 76),  # ITU-R 601-2 luma of red
        (lambda: Image.new("RGB", (6, 4), (51, 102, 153)).convert("P"), 3, (51, 102, 153)),
        (lambda: Image.new("1", (6, 4), 1), 1, 255),
        (lambda: Image.new("RGBA", (6, 4), (0, 0, 0, 0)), 3, (255, 255, 255)),  # over white
        (lambda: Image.new("RGBA", (6, 4), (0, 0, 0, 255)), 3, (0, 0, 0)),
        (lambda: Image.new("LA", (6, 4), (0, 0)), 1, 255),
        (lambda: Image.fromarray(np.full((4, 6), 0xABCD, np.uint16)), 1, 0xAB),  # I;16 >> 8
        (lambda: Image.fromarray(np.full((4, 6), 0.5, np.float32)), 1, 128),  # F in 0..1
        (lambda: Image.fromarray(np.full((4, 6), 200, np.int32)), 1, 200),  # I in 0..255
    ],
)
def test_modes_convert_consistently(tmp_path, make, channels, expect):
    src = make()
    fmt = "TIFF" if src.mode in ("F", "I", "LA") else "PNG"
    path = _save(src, tmp_path / f"img.{fmt.lower()}", format=fmt)
    out = open_image(path, channels=channels)
    assert out.mode == ("L" if channels == 1 else "RGB")
    assert out.size == (6, 4)
    assert out.getpixel((2, 2)) == expect


def test_palette_with_transparency_goes_over_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    path = _save(img, tmp_path / "t.png", transparency=0)
    assert open_image(path).getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_png(tmp_path):
    arr = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    path = _save(Image.fromarray(arr), tmp_path / "deep.png")
    out = np.asarray(open_image(path, channels=1))
    assert out.dtype == np.uint8 and np.array_equal(out, (arr >> 8).astype(np.uint8))


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    out = open_image(path)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_bytes_and_file_objects(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (7, 5), (9, 9, 9)).save(buf, format="PNG")
    assert open_image(buf.getvalue()).size == (7, 5)
    buf.seek(0)
    assert open_image(buf, channels=1).mode == "L"
    with pytest.raises(BadImageError, match="empty file"):
        open_image(b"")


def test_to_pil_arrays_and_images():
    assert to_pil(np.zeros((4, 5), np.uint8)).mode == "RGB"
    grey = to_pil(np.ones((4, 5, 3), np.float32), channels=1)
    assert grey.mode == "L" and grey.size == (5, 4) and grey.getpixel((0, 0)) == 255
    assert to_pil(np.zeros((4, 5, 1), np.uint8), channels=1).size == (5, 4)
    assert to_pil(Image.new("RGBA", (3, 3), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(BadImageError, match="unsupported array shape"):
        to_pil(np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize(
    "write, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, I am not a picture\n"), "not an image"),
    ],
)
def test_bad_files(tmp_path, write, reason):
    path = tmp_path / "bad.jpg"
    write(path)
    with pytest.raises(BadImageError) as err:
        open_image(path)
    assert err.value.reason == reason and err.value.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError, match="missing file"):
        open_image(tmp_path / "nope.png")


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    full = _save(noise, tmp_path / "full.jpg", quality=90).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(BadImageError) as err:
        open_image(path)
    assert err.value.reason == "truncated or corrupt"


def _png_claiming(size: tuple[int, int], path):
    """A valid 1x1 PNG whose IHDR (and its CRC) is patched to claim `size`: a pixel bomb."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr: ihdr + 8] = struct.pack(">II", *size)
    crc = zlib.crc32(bytes(data[12: ihdr + 13]))
    data[ihdr + 13: ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_bomb_rejected_from_header(tmp_path):
    path = _png_claiming((10_000, 9_000), tmp_path / "bomb.png")
    with pytest.raises(BadImageError) as err:  # refused from the header, before any decoding
        open_image(path)
    assert err.value.reason == "too many pixels (10000×9000)"


def test_huge_bomb_caught_from_pillow(tmp_path):
    path = _png_claiming((60_000, 60_000), tmp_path / "huge.png")
    with pytest.raises(BadImageError, match="too many pixels"):
        open_image(path, max_pixels=10**10)


def test_max_pixels_is_respected(tmp_path):
    path = _save(Image.new("RGB", (20, 10)), tmp_path / "x.png")
    with pytest.raises(BadImageError, match=r"too many pixels \(20×10\)"):
        open_image(path, max_pixels=100)


def test_jpeg_draft_decodes_smaller_but_not_below_size(tmp_path):
    path = _save(Image.new("RGB", (800, 600), (0, 128, 0)), tmp_path / "big.jpg", format="JPEG")
    out = open_image(path, draft_size=100)
    assert out.mode == "RGB" and 100 <= min(out.size) < 600
    with Image.open(path) as img:
        jpeg_draft(img, 100, channels=1)
        img.load()
        assert img.mode == "L" and img.size == (200, 150)
    png = _save(Image.new("RGB", (800, 600)), tmp_path / "big.png")
    assert open_image(png, draft_size=100).size == (800, 600)  # not a JPEG: untouched
