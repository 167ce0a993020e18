"""A detection set from real photographs that nobody tuned on: scikit-image's sample photos as
backgrounds, real object cut-outs pasted with their real masks, and unlabelled clutter.

Object classes (each a cut-out with its own mask, pasted at 8-45 % of the side, flipped at random,
which is label-safe for all of them, and mildly colour-jittered):
    cat     the face of `chelsea()` inside a hand-chosen ellipse
    coin    each of ~20 coins of `coins()`, segmented by Otsu's threshold and labelling, tinted
    cup     the cup and saucer of `coffee()` inside two hand-chosen ellipses
    horse   the silhouette of `horse()` filled with a chestnut-tinted gravel texture
    rocket  the rocket of `rocket()`, cut by a red-channel threshold (its largest component)
Backgrounds are random crops of photos that hold none of these objects. A later object may cover at
most 30 % of an earlier one; boxes are the tight box of each object's visible mask. ~10 % of the images
have no object (negatives). Clutter: blobs of texture from other photos, never labelled.

Layouts: "coco" writes out/images/{split}/*.jpg and out/annotations/instances_{split}.json; "yolo"
writes out/images/{split}/*.jpg, out/labels/{split}/*.txt and out/data.yaml, whose `val` key is
written only when val > 0 (the engine carves a val split otherwise) and `test` when test > 0.
`hostile=True` adds broken annotations to train, each meant to give exactly one problem line.
"""
from __future__ import annotations

import functools
import json
import os

import numpy as np
import skimage.data as sk
import yaml
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage as ndi
from skimage import filters, measure

from ocula.errors import OculaError

CLASSES = ("cat", "coin", "cup", "horse", "rocket")
BACKGROUNDS = ("astronaut", "immunohistochemistry", "hubble_deep_field", "camera", "brick", "grass", "gravel",
               "moon", "retina", "clock", "page")
SCALE = (0.08, 0.45)  # an object's longer side, as a share of the image side
MAX_COVER = 0.3  # the most of an earlier object's visible pixels that a later object may hide
NEGATIVES = 0.1  # share of images drawn with no object
CLUTTER = 0.35  # share of images with 1-3 unlabelled blobs
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


def write_photo_objects(out, *, train: int = 300, val: int = 0, test: int = 150, size: int = 256,
                        classes: int = 4, layout: str = "coco", seed: int = 0, hostile: bool = False) -> dict:
    """Write the set; returns {"classes", "layout", "root", "splits": {split: {"images", "boxes",
    "negatives"}}, "hostile": [kinds added]}. The same arguments write the same files."""
    if layout not in ("coco", "yolo"):
        raise OculaError(f"unknown detection layout '{layout}' (choose coco or yolo)")
    if not 1 <= classes <= len(CLASSES):
        raise OculaError(f"classes must be 1 to {len(CLASSES)}, not {classes}")
    if size < 32:
        raise OculaError(f"size must be at least 32 pixels, not {size}")
    names = list(CLASSES[:classes])
    out = os.path.abspath(os.fspath(out))
    result = {"classes": names, "layout": layout, "root": out, "splits": {}, "hostile": []}
    for split, count in (("train", train), ("val", val), ("test", test)):
        if count <= 0:
            continue
        folder = os.path.join(out, "images", split)
        os.makedirs(folder, exist_ok=True)
        records = []  # (file name, [(class, x, y, w, h) in pixels])
        for i in range(count):
            rng = np.random.default_rng([seed, SPLIT_SEEDS[split], i])
            image, boxes = compose(rng, size, classes)
            file_name = f"{i:05d}.jpg"
            image.save(os.path.join(folder, file_name), quality=90)
            records.append((file_name, boxes))
        (_write_coco if layout == "coco" else _write_yolo)(out, split, records, names, size)
        result["splits"][split] = {"images": count, "boxes": sum(len(bs) for _, bs in records),
                                   "negatives": sum(not bs for _, bs in records)}
        if hostile and split == "train":
            result["hostile"] = _break_coco(out, size) if layout == "coco" else _break_yolo(out, classes)
    if layout == "yolo":
        doc = {"path": out, "train": "images/train", "names": names}
        doc.update({s: f"images/{s}" for s in ("val", "test") if s in result["splits"]})
        with open(os.path.join(out, "data.yaml"), "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
    return result


def compose(rng: np.random.Generator, size: int, classes: int):
    """One image: (PIL RGB size x size, [(class, x, y, w, h)] tight boxes in pixels)."""
    canvas = _background(rng, size)
    if rng.random() < CLUTTER:
        for _ in range(rng.integers(1, 4)):
            _paste_clutter(rng, canvas, size)
    owner = np.zeros((size, size), np.int16)  # which object each pixel shows (0: none)
    areas = []
    count = 0 if rng.random() < NEGATIVES else int(rng.integers(1, 7))
    labels = []
    for _ in range(count):
        cls = int(rng.integers(classes))
        rgb, alpha = _prepare(rng, cls, size)
        for _try in range(5):
            x = int(rng.integers(-rgb.shape[1] * 3 // 10, size - rgb.shape[1] * 7 // 10 + 1))
            y = int(rng.integers(-rgb.shape[0] * 3 // 10, size - rgb.shape[0] * 7 // 10 + 1))
            if _fits(owner, areas, alpha, x, y):
                break
        else:
            continue  # no place that leaves the earlier objects visible enough: this object is dropped
        _blend(canvas, rgb, alpha, x, y)
        region, a = _window(alpha, x, y, size)
        owner[region][a > 0.5] = len(areas) + 1
        areas.append(int((a > 0.5).sum()))
        labels.append(cls)
    boxes = []
    for cls, found in zip(labels, ndi.find_objects(owner, max_label=len(labels))):
        if found is not None:  # an object hidden entirely has no pixels left and no box
            ys, xs = found
            boxes.append((cls, xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start))
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)), boxes


# ---------------------------------------------------------------- sources (read once per process)

def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]


@functools.lru_cache(maxsize=None)
def _backgrounds() -> tuple:
    return tuple(Image.fromarray(_rgb(getattr(sk, name)())) for name in BACKGROUNDS)


def _ellipses(shape, *ellipses) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.any([((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1 for cx, cy, rx, ry in ellipses], axis=0)


def _cut(rgb: np.ndarray, mask: np.ndarray) -> tuple:
    """(RGB, mask) PIL images cropped to the mask's tight box, so a pasted box is the mask's box."""
    ys, xs = np.nonzero(mask)
    window = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    return Image.fromarray(rgb[window].astype(np.uint8)), Image.fromarray(mask[window].astype(np.uint8) * 255)


@functools.lru_cache(maxsize=None)
def _cutouts() -> tuple:
    """Per class, a tuple of (RGB, mask) cut-outs as PIL images, in the order of CLASSES."""
    cat = sk.chelsea()
    cats = (_cut(cat, _ellipses(cat.shape, (215, 150, 175, 148))),)
    coins = sk.coins()
    found = ndi.binary_fill_holes(ndi.binary_closing(coins > filters.threshold_otsu(coins), iterations=2))
    labelled = measure.label(found)
    coin_cuts = tuple(_cut(_rgb(coins), labelled == r.label) for r in measure.regionprops(labelled)
                      if 800 < r.area < 4000 and r.solidity > 0.9 and r.eccentricity < 0.6)  # whole, lone coins
    cup = sk.coffee()
    cups = (_cut(cup, _ellipses(cup.shape, (278, 232, 200, 155), (290, 140, 122, 125))),)
    horse = ~sk.horse()  # the horse is the dark (False) part
    texture = np.asarray(Image.fromarray(sk.gravel()).resize(horse.shape[::-1]), np.float32)[..., None] / 255
    chestnut = np.array([150, 85, 45], np.float32) * (0.6 + 0.8 * texture)
    horses = (_cut(chestnut, horse),)
    rocket = sk.rocket()[120:375, 300:345]
    bright = ndi.binary_closing(rocket[..., 0] > 105, iterations=2)  # the sky is dark in red
    labelled = measure.label(bright)
    largest = max(measure.regionprops(labelled), key=lambda r: r.area).label
    rockets = (_cut(rocket, ndi.binary_opening(ndi.binary_fill_holes(labelled == largest), iterations=2)),)
    return cats, coin_cuts, cups, horses, rockets


# ---------------------------------------------------------------- composing

def _background(rng, size: int) -> np.ndarray:
    photos = _backgrounds()
    photo = photos[rng.integers(len(photos))]
    w, h = photo.size
    side = int(min(h, w) * rng.uniform(0.35, 1.0))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = photo.resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side), reducing_gap=2.0)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, np.float32) * rng.uniform(0.85, 1.1, 3).astype(np.float32)


def _prepare(rng, cls: int, size: int):
    """A cut-out of class `cls` at a random scale, maybe flipped, colour-jittered: (RGB, alpha 0..1)."""
    options = _cutouts()[cls]
    rgb, mask = options[rng.integers(len(options))]
    longer = max(2, int(round(size * rng.uniform(*SCALE))))
    w, h = mask.size
    shape = (max(2, round(w * longer / max(h, w))), max(2, round(h * longer / max(h, w))))
    rgb = np.asarray(rgb.resize(shape, Image.BILINEAR, reducing_gap=2.0), np.float32)
    alpha = np.asarray(mask.resize(shape, Image.BILINEAR, reducing_gap=2.0), np.float32) / 255
    if rng.random() < 0.5:  # every class here looks itself mirrored, so flipping keeps labels right
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, 3)
    if CLASSES[cls] == "coin":  # copper, brass or steel: grey coins would melt into grey photos
        gain = gain * np.array([(1.15, 0.85, 0.6), (1.1, 0.95, 0.6), (1.0, 1.0, 1.05)][rng.integers(3)])
    return rgb * gain.astype(np.float32), alpha


def _window(alpha: np.ndarray, x: int, y: int, size: int):
    """The canvas slices an object at (x, y) covers, and the part of its alpha inside the canvas."""
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, size), min(y + h, size)
    if x1 <= x0 or y1 <= y0:
        return (slice(0, 0), slice(0, 0)), alpha[:0, :0]
    return (slice(y0, y1), slice(x0, x1)), alpha[y0 - y:y1 - y, x0 - x:x1 - x]


def _fits(owner: np.ndarray, areas: list, alpha: np.ndarray, x: int, y: int) -> bool:
    region, a = _window(alpha, x, y, owner.shape[0])
    if (a > 0.5).sum() < 0.6 * (alpha > 0.5).sum():
        return False  # most of the object must lie inside the image
    hidden = np.bincount(owner[region][a > 0.5].ravel(), minlength=len(areas) + 1)[1:]
    visible = np.bincount(owner.ravel(), minlength=len(areas) + 1)[1:]
    return bool(np.all(visible - hidden >= (1 - MAX_COVER) * np.array(areas)))


def _blend(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    region, a = _window(alpha, x, y, canvas.shape[0])
    h, w = a.shape
    x0, y0 = region[1].start - x, region[0].start - y
    part = rgb[y0:y0 + h, x0:x0 + w]
    canvas[region] = canvas[region] * (1 - a[..., None]) + part * a[..., None]


def _paste_clutter(rng, canvas: np.ndarray, size: int) -> None:
    """A blob of texture from a random photo: something to look at that is no object."""
    side = max(4, int(size * rng.uniform(0.1, 0.35)))
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
    radii = side / 2 * rng.uniform(0.5, 1.0, len(angles))
    points = [(side / 2 + r * np.cos(t), side / 2 + r * np.sin(t)) for r, t in zip(radii, angles)]
    mask = Image.new("L", (side, side))
    ImageDraw.Draw(mask).polygon(points, fill=255)
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(side / 30)), np.float32) / 255
    photo = _backgrounds()[rng.integers(len(BACKGROUNDS))]
    y, x = int(rng.integers(photo.size[1] - side + 1)), int(rng.integers(photo.size[0] - side + 1))
    texture = np.asarray(photo.crop((x, y, x + side, y + side)), np.float32) * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    _blend(canvas, texture, alpha, int(rng.integers(-side // 3, size - side // 2)),
           int(rng.integers(-side // 3, size - side // 2)))


# ---------------------------------------------------------------- writing

def _write_coco(out: str, split: str, records: list, names: list, size: int) -> None:
    images, annotations = [], []
    for image_id, (file_name, boxes) in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for cls, x, y, w, h in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    doc = {"info": {"description": "ocula photo objects: scikit-image photos with pasted real objects"},
           "images": images, "annotations": annotations,
           "categories": [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(names)]}
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    with open(os.path.join(out, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(doc, f)


def _write_yolo(out: str, split: str, records: list, names: list, size: int) -> None:
    folder = os.path.join(out, "labels", split)
    os.makedirs(folder, exist_ok=True)
    for file_name, boxes in records:
        lines = [f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}\n"
                 for cls, x, y, w, h in boxes]
        with open(os.path.join(folder, os.path.splitext(file_name)[0] + ".txt"), "w") as f:
            f.write("".join(lines))


def _break_file(images: str) -> None:
    """broken.jpg: the first bytes of a real JPEG, so even its header cannot be read."""
    with open(os.path.join(images, "00000.jpg"), "rb") as f:
        head = f.read(64)
    with open(os.path.join(images, "broken.jpg"), "wb") as f:
        f.write(head)


def _break_coco(out: str, size: int) -> list[str]:
    path = os.path.join(out, "annotations", "instances_train.json")
    with open(path) as f:
        doc = json.load(f)
    anns, next_id = doc["annotations"], len(doc["annotations"]) + 1
    if not anns:  # a duplicate needs an original: one valid box on the first image
        anns.append({"id": next_id, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0})
        next_id += 1
    box = {"image_id": 1, "category_id": 1, "area": 16, "iscrowd": 0}
    anns += [dict(box, id=next_id, bbox=[size + 10, 5, 10, 10]), dict(box, id=next_id + 1, bbox=[5, 5, 0, 10]),
             dict(box, id=next_id + 2, bbox=[5, 5, 10, 10], category_id=999), dict(anns[0])]
    n = len(doc["images"])
    doc["images"] += [{"id": n + 1, "file_name": "missing.jpg", "width": size, "height": size},
                      {"id": n + 2, "file_name": "broken.jpg", "width": size, "height": size},
                      dict(doc["images"][-1], id=1)]
    _break_file(os.path.join(out, "images", "train"))
    with open(path, "w") as f:
        json.dump(doc, f)
    return ["box outside the image", "box of zero area", "unknown category id", "duplicate annotation id",
            "missing image", "unreadable image", "duplicate image id"]


def _break_yolo(out: str, classes: int) -> list[str]:
    labels = os.path.join(out, "labels", "train")
    with open(os.path.join(labels, "00000.txt"), "a") as f:
        f.write(f"0 1.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.2\n{classes + 95} 0.5 0.5 0.2 0.2\n0 0.5 0.5\n")
    for name in ("missing", "broken"):
        with open(os.path.join(labels, f"{name}.txt"), "w") as f:
            f.write("0 0.5 0.5 0.2 0.2\n")
    _break_file(os.path.join(out, "images", "train"))
    return ["box outside the image", "box of zero area", "class index out of range", "malformed line",
            "missing image", "unreadable image"]
