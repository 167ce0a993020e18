"""Read object-detection datasets in the two standard layouts: COCO JSON and YOLO `data.yaml`.

The label contract: one float32 array (M, 5) per image, column 0 the class index, columns 1-4 the box
x1, y1, x2, y2 normalised to [0, 1] by the image's width and height; M = 0 is an image without boxes
(a negative, kept). Classes are in ascending COCO category id, or in YOLO `names` order.
Hostile annotations never raise: each skipped annotation, label line or image is one `(where, reason)`
in `DetectionData.problems`, the reason starting with its kind (a key of `KINDS`). Only a file that
cannot be parsed at all raises `OculaError`. A layout without val gets none (the engine carves it).
The COCO reader is here; the YOLO one is `data.detection_yolo`, the box and image checks both use
`data.detection_checks`.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ocula.data.detection_checks import check_box, image_size
from ocula.data.detection_yolo import looks_yolo, read_yolo, yolo_yaml_in
from ocula.data.folders import SPLIT_NAMES, is_debris
from ocula.errors import OculaError, one_line

# kind (how every reason of that kind starts) → the summary's words for several of them
KINDS = {
    "box outside the image": "boxes outside the image skipped", "box of zero area": "boxes of zero area skipped",
    "box partly outside the image": "boxes partly outside the image clipped", "crowd box": "crowd boxes skipped",
    "unknown category id": "boxes of an unknown category id skipped", "malformed box": "malformed boxes skipped",
    "class index out of range": "boxes with a class index out of range skipped",
    "annotation of an unknown image": "annotations of unknown images skipped",
    "duplicate annotation id": "annotations with a duplicate id skipped",
    "duplicate image id": "images with a duplicate id skipped", "missing image": "missing images skipped",
    "malformed image entry": "malformed image entries skipped", "unreadable image": "unreadable images skipped",
    "malformed annotation": "malformed annotations skipped", "malformed category": "malformed categories skipped",
    "malformed line": "malformed label lines skipped", "unreadable label file": "unreadable label files skipped",
    "second annotation file": "second annotation files of a split skipped"}
SPLIT_ORDER = ("train", "val", "test")
_PEEK = 65536  # bytes read to recognise a COCO file: its first image entries sit near the top


@dataclass
class DetectionData:
    classes: list[str]
    splits: dict[str, tuple[list[str], list[np.ndarray]]]  # split → (image paths, labels (M, 5) float32)
    sizes: dict[str, list[tuple[int, int]]]  # split → (width, height) per image
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, one-line reason)
    layout: str = "coco"
    source: str = ""

    def summary(self) -> list[str]:
        """One line per split (images, boxes, negatives), then the counted problems."""
        lines = []
        for split, (paths, labels) in self.splits.items():
            boxes, empty = sum(len(x) for x in labels), sum(len(x) == 0 for x in labels)
            lines.append(f"{split}: {len(paths)} images, {boxes} boxes, {empty} without boxes (kept as negatives)")
        return lines + summarise_problems(self.problems)


def summarise_problems(problems) -> list[str]:
    """Counted lines per kind, in order of first appearance: '3 boxes of zero area skipped'."""
    lines = []
    for kind, n in Counter(reason.split(" (")[0].split(",")[0] for _, reason in problems).items():
        plural = KINDS.get(kind, f"× {kind}")
        lines.append(f"1 {kind} {plural.split()[-1]}" if n == 1 and kind in KINDS else f"{n} {plural}")
    return lines


def read_detection(path) -> DetectionData:
    """Read a COCO or YOLO detection dataset (an annotation file or its folder); see the module notes."""
    p = os.path.abspath(os.fsdecode(path))
    layout = detection_layout(p)
    if layout == "coco":
        return _read_coco(p)
    if layout == "yolo":
        yaml_path = p if os.path.isfile(p) else yolo_yaml_in(p)
        classes, parts, problems = read_yolo(yaml_path)
        return _finish(DetectionData(classes, {}, {}, problems, "yolo", yaml_path), parts)
    raise OculaError(f"{p}: no COCO annotation JSON or YOLO data.yaml found")


# ---------------------------------------------------------------- recognising a layout

def detection_layout(path) -> Optional[str]:
    """'coco', 'yolo' or None, from file names and a peek at small files; never decodes an image."""
    p = os.fsdecode(path)
    if os.path.isfile(p):
        low = p.lower()
        if low.endswith(".json"):
            return "coco" if _looks_coco(p) else None
        return "yolo" if low.endswith((".yaml", ".yml")) and looks_yolo(p) else None
    try:
        if not os.path.isdir(p):
            return None
        return "yolo" if yolo_yaml_in(p) else "coco" if _coco_files(p) else None
    except OSError:  # an unreadable folder is no detection set; the folder readers say why
        return None


def _looks_coco(path: str) -> bool:
    name = os.path.basename(path).lower()
    if name.startswith("instances_") or name.endswith("_annotations.coco.json"):
        return True  # conventional names are claimed unread, so a broken one is reported by the reader
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK).decode("utf-8", "replace")
    except OSError:
        return False
    return head.lstrip("\ufeff \t\r\n").startswith("{") and '"images"' in head and '"file_name"' in head


def _coco_files(folder: str) -> list[str]:
    """The COCO annotation files of a dataset folder, from the conventional places, sorted."""
    ann = os.path.join(folder, "annotations")
    if os.path.isdir(ann):
        found = sorted(os.path.join(ann, n) for n in os.listdir(ann) if n.lower().endswith(".json"))
        named = [f for f in found if os.path.basename(f).lower().startswith("instances_")]
        if named or any(_looks_coco(f) for f in found):
            return named or [f for f in found if _looks_coco(f)]
    subs = [""] + sorted(d for d in os.listdir(folder) if not is_debris(d))  # Roboflow: train/_annotations.coco.json
    roboflow = [os.path.join(folder, d, "_annotations.coco.json") for d in subs]
    roboflow = [f for f in roboflow if os.path.isfile(f)]
    return roboflow or sorted(os.path.join(folder, n) for n in os.listdir(folder)
                              if n.lower().endswith(".json") and _looks_coco(os.path.join(folder, n)))


def _split_of(json_path: str) -> tuple[str, str]:
    """(canonical split, the name's own token): instances_val2017.json → ('val', 'val2017')."""
    stem = os.path.basename(json_path)[:-len(".json")].lower()
    token = stem[len("instances_"):] if stem.startswith("instances_") else stem
    if token.startswith("_annotations") or token == "annotations":
        token = os.path.basename(os.path.dirname(os.path.abspath(json_path))).lower()  # Roboflow: the split folder
    match = re.search(r"validation|valid|val|train|test", token)
    return (SPLIT_NAMES[match.group(0)] if match else "train"), token


# ---------------------------------------------------------------- filling the splits

def _finish(data: DetectionData, parts: dict) -> DetectionData:
    """Fill splits and sizes from {split: [(path, size, rows)]}, in train, val, test order."""
    for split in sorted(parts, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9):
        entries = parts[split]
        labels = [np.asarray(rows, np.float32).reshape(-1, 5) for _, _, rows in entries]
        data.splits[split] = ([e[0] for e in entries], labels)
        data.sizes[split] = [e[1] for e in entries]
    return data


# ---------------------------------------------------------------- COCO

def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8-sig") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise OculaError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OculaError(f"{path}: cannot read ({one_line(e)})") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k, []), list) for k in ("annotations", "categories")) \
            or not isinstance(doc.get("images"), list):
        raise OculaError(f"{path}: not a COCO annotation file (want lists 'images', 'annotations', 'categories')")
    return doc


def _key(value):
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _read_coco(path: str) -> DetectionData:
    docs, problems, categories = {}, [], {}
    for f in [path] if os.path.isfile(path) else _coco_files(path):
        split, token = _split_of(f)
        if split in docs:
            problems.append((f, f"second annotation file (for split {split}, already read from {docs[split][0]})"))
        else:
            docs[split] = (f, token, _load_json(f))
    for f, _, doc in docs.values():
        for n, c in enumerate(doc.get("categories", [])):
            cid = _key(c.get("id")) if isinstance(c, dict) else None
            if cid is None or not isinstance(c.get("name"), str):
                problems.append((f"{os.path.basename(f)}:category #{n}", "malformed category (no id or name)"))
            elif categories.setdefault(cid, c["name"]) != c["name"]:
                raise OculaError(f"{f}: category {cid} is '{c['name']}' here but '{categories[cid]}' in another file")
    ids = sorted(categories, key=lambda k: (isinstance(k, str), k))
    index = {cid: i for i, cid in enumerate(ids)}
    data = DetectionData([categories[c] for c in ids], {}, {}, problems, "coco", path)
    return _finish(data, {s: _coco_split(f, s, t, doc, index, problems) for s, (f, t, doc) in docs.items()})


def _coco_split(json_path, split, token, doc, index, problems) -> list:
    name = os.path.basename(json_path)
    here, up = os.path.dirname(json_path), os.path.dirname(os.path.dirname(json_path))
    dirs = list(dict.fromkeys([here, os.path.join(here, "images"), os.path.join(up, "images", token),
                               os.path.join(up, "images", split), os.path.join(up, token), os.path.join(up, split),
                               os.path.join(up, "images"), up]))
    images, skipped = {}, set()  # image id → (path, (w, h), rows); ids of images already reported
    for n, entry in enumerate(doc["images"]):
        iid = _key(entry.get("id")) if isinstance(entry, dict) else None
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if iid is None or not isinstance(file_name, str) or not file_name:
            problems.append((f"{name}:image #{n}", "malformed image entry (no id or file_name)"))
        elif iid in images or iid in skipped:
            problems.append((f"{name}:image {iid}", f"duplicate image id (file_name {file_name})"))
        else:
            image_path = _find_image(file_name, dirs)
            size, reason = image_size(image_path)
            if reason:
                problems.append((image_path, reason))
                skipped.add(iid)
                continue
            w, h = entry.get("width"), entry.get("height")
            if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
                size = (int(w), int(h))  # boxes are in the annotation's frame
            images[iid] = (image_path, size, [])
    seen = set()
    for n, a in enumerate(doc.get("annotations", [])):
        aid = _key(a.get("id")) if isinstance(a, dict) else None
        where = f"{name}:annotation {aid if aid is not None else '#' + str(n)}"
        if aid is not None and aid in seen:
            problems.append((where, "duplicate annotation id"))
            continue
        seen.add(aid)
        if isinstance(a, dict) and _key(a.get("image_id")) in skipped:
            continue  # its image is already reported
        box, reason = _coco_box(a, images, index)
        if reason:
            problems.append((where, reason))
        if box:
            images[a["image_id"]][2].append((index[a["category_id"]], *box))
    return list(images.values())


def _coco_box(a, images: dict, index: dict):
    """(normalised box or None, reason or None) for one annotation."""
    if not isinstance(a, dict):
        return None, "malformed annotation (not an object)"
    if _key(a.get("image_id")) not in images:
        return None, f"annotation of an unknown image (image_id={a.get('image_id')!r})"
    if a.get("iscrowd"):
        return None, "crowd box (iscrowd=1)"
    if _key(a.get("category_id")) not in index:
        return None, f"unknown category id (category_id={a.get('category_id')!r})"
    bbox = a.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        return None, f"malformed box (bbox={one_line(repr(bbox))[:60]})"
    x, y, w, h = (float(v) for v in bbox)
    return check_box(x, y, x + w, y + h, *images[a["image_id"]][1])


def _find_image(file_name: str, dirs: list[str]) -> str:
    """The first folder holding the file; the folder that worked is tried first next time."""
    if os.path.isabs(file_name):
        return file_name
    for i, d in enumerate(dirs):
        if os.path.isfile(os.path.join(d, file_name)):
            dirs.insert(0, dirs.pop(i))
            return os.path.join(d, file_name)
    return os.path.join(dirs[0], file_name)
