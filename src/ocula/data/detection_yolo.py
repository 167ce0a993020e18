"""Read a YOLO detection dataset: `data.yaml` (class names, split folders or image lists) and one label file
per image (`class cx cy w h` per line, normalised; a polygon's box is its points' extent).

`data.detection.read_detection` is the front door; this module gives it the rows of each split, in the label
contract and the problem reasons documented there. Ultralytics pairs images/x/a.jpg with labels/x/a.txt.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import yaml

from ocula.data.detection_checks import check_box, image_size
from ocula.data.folders import SPLIT_NAMES, is_debris
from ocula.data.images import is_image_path
from ocula.errors import OculaError, one_line


# ---------------------------------------------------------------- recognising a data.yaml

def looks_yolo(path: str) -> bool:
    if os.path.basename(path).lower() in ("data.yaml", "data.yml"):
        return True
    try:  # a data.yaml is a few lines: a big yaml is something else
        doc = load_yaml(path) if os.path.getsize(path) < 1_000_000 else None
    except (OSError, OculaError):
        return False
    return isinstance(doc, dict) and "train" in doc and any(k in doc for k in ("val", "names", "nc"))


def load_yaml(path: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise OculaError(f"{path}: not valid YAML ({one_line(e)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OculaError(f"{path}: cannot read ({one_line(e)})") from None


def yolo_yaml_in(folder: str) -> Optional[str]:
    names = sorted(os.listdir(folder), key=lambda n: (n.lower() not in ("data.yaml", "data.yml"), n))
    paths = (os.path.join(folder, n) for n in names if n.lower().endswith((".yaml", ".yml")))
    return next((p for p in paths if os.path.isfile(p) and looks_yolo(p)), None)


# ---------------------------------------------------------------- reading

def read_yolo(yaml_path: str) -> tuple[list[str], dict, list]:
    """(classes, {split: [(image path, (width, height), rows)]}, problems) of a YOLO data.yaml."""
    doc = load_yaml(yaml_path)
    if not isinstance(doc, dict) or not doc.get("train"):
        raise OculaError(f"{yaml_path}: not a YOLO data.yaml (no 'train' key)")
    here = os.path.dirname(yaml_path)
    root = os.path.join(here, str(doc["path"])) if doc.get("path") else here
    root = root if os.path.isdir(root) else here  # a `path` from another machine: the yaml's folder is the root
    classes, problems, parts = _yolo_names(doc, yaml_path), [], {}
    for key, value in doc.items():
        split = SPLIT_NAMES.get(str(key).lower())
        if split is None or not value or split in parts:
            continue
        parts[split] = []
        for image in _yolo_images(value, root, here, f"{yaml_path}: {key}", problems):
            size, reason = image_size(image)
            rows = None if reason else _yolo_labels(_label_path(image), size, len(classes), problems)
            if reason:
                problems.append((image, reason))
            elif rows is not None:
                parts[split].append((image, size, rows))
    return classes, parts, problems


def _yolo_names(doc: dict, yaml_path: str) -> list[str]:
    names, nc = doc.get("names"), doc.get("nc")
    if isinstance(names, dict):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise OculaError(f"{yaml_path}: 'names' keys must be class indices 0, 1, ...") from None
        names = [by_index.get(i, f"class_{i}") for i in range(max(by_index, default=-1) + 1)]
    elif isinstance(names, list) or (isinstance(nc, int) and nc > 0):
        names = [str(n) for n in names] if isinstance(names, list) else [f"class_{i}" for i in range(nc)]
    else:
        raise OculaError(f"{yaml_path}: no class 'names' (a list, or a dict index → name)")
    if isinstance(nc, int) and nc != len(names):
        raise OculaError(f"{yaml_path}: nc is {nc} but 'names' lists {len(names)} classes")
    return names


def _yolo_images(value, root: str, here: str, where: str, problems) -> list[str]:
    """A split's images: from folders (searched recursively), image-list txt files or single images."""
    images = []
    for entry in value if isinstance(value, list) else [value]:
        entry = str(entry)
        options = [os.path.join(root, entry), os.path.join(here, entry)]
        if entry.startswith("../"):
            options.append(os.path.join(here, entry[3:]))  # Roboflow writes ../train/images beside the yaml
        found = next((os.path.normpath(o) for o in options if os.path.exists(o)), None)
        if found is None:
            raise OculaError(f"{where} '{entry}' not found")
        if os.path.isdir(found):
            listed = _walk(found, is_image_path)
            images += listed
            _orphan_labels(found, listed, problems)
        elif found.lower().endswith(".txt"):
            images += _listed_images(found, root, problems)
        else:
            images.append(found)
    return list(dict.fromkeys(images))


def _walk(folder: str, wanted) -> list[str]:
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_debris(d))
        found += [os.path.join(top, f) for f in sorted(files) if not is_debris(f) and wanted(f)]
    return found


def _listed_images(txt: str, root: str, problems) -> list[str]:
    try:
        with open(txt, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise OculaError(f"{txt}: cannot read the image list ({one_line(e)})") from None
    images = []
    for line in lines:
        options = [line] if os.path.isabs(line) else [os.path.join(os.path.dirname(txt), line), os.path.join(root, line)]
        found = next((os.path.normpath(o) for o in options if os.path.isfile(o)), None)
        if found is None:
            problems.append((os.path.normpath(options[0]), f"missing image (listed in {os.path.basename(txt)})"))
        else:
            images.append(found)
    return images


def _label_path(image: str) -> str:
    """images/x/a.jpg → labels/x/a.txt (the last `images` folder), as Ultralytics pairs them."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return os.path.splitext(sb.join(image.rsplit(sa, 1)) if sa in image else image)[0] + ".txt"


def _orphan_labels(folder: str, images: list[str], problems) -> None:
    """A label file whose image is gone would lose its boxes silently, so it is reported."""
    labels_dir = os.path.dirname(_label_path(os.path.join(folder, "x")))
    if os.path.normpath(labels_dir) == os.path.normpath(folder) or not os.path.isdir(labels_dir):
        return
    expected = {_label_path(i) for i in images}
    # LabelImg keeps its classes.txt among the labels: no image belongs to it
    for label in _walk(labels_dir, lambda f: f.lower().endswith(".txt") and f.lower() != "classes.txt"):
        if label not in expected:
            problems.append((label, "missing image (a label file without its image)"))


def _yolo_labels(label_path: str, size, nc: int, problems) -> Optional[list]:
    """The rows of one label file ([] when it is missing: a negative), or None to skip the image."""
    try:
        with open(label_path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        problems.append((label_path, f"unreadable label file ({one_line(e)})"))
        return None
    width, height = size
    rows = []
    for no, line in enumerate(text.splitlines(), start=1):
        parts, where = line.split(), f"{label_path}:{no}"
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if not parts:
            continue
        polygon = len(values) >= 7 and len(values) % 2 == 1  # a segment: its box is the points' extent
        if not (len(values) == 5 or polygon) or not all(math.isfinite(v) for v in values) \
                or values[0] != int(values[0]) or values[0] < 0:
            problems.append((where, f"malformed line ({one_line(line)[:60]!r}, want: class cx cy w h)"))
            continue
        if int(values[0]) >= nc:
            problems.append((where, f"class index out of range ({int(values[0])} >= {nc} classes)"))
            continue
        if polygon:
            x1, y1, x2, y2 = min(values[1::2]), min(values[2::2]), max(values[1::2]), max(values[2::2])
        else:
            cx, cy, w, h = values[1:]
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        box, reason = check_box(x1 * width, y1 * height, x2 * width, y2 * height, width, height)
        if reason:
            problems.append((where, reason))
        if box:
            rows.append((int(values[0]), *box))
    return rows
