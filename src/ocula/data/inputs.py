"""Expand what a user passes to predict (files, folders, globs, CSV manifests) into image paths."""
from __future__ import annotations

import csv
import glob
import os
from pathlib import Path

from ocula.data.folders import is_debris
from ocula.data.images import is_image_path


def expand_inputs(items) -> tuple[list[str], list[tuple[str, str]]]:
    """→ (image paths in a stable order, [(item, reason)] for items that matched nothing)."""
    return expand_with(items, _expand_one, empty_folder="no images found")


def expand_with(items, expand_one, empty_folder: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Each item through `expand_one(str) -> [paths]`; an item that yields nothing is reported with why."""
    paths, missing = [], []
    for item in map(str, items):
        found = expand_one(item)
        if found:
            paths += found
        else:
            wild = any(c in item for c in "*?[")
            missing.append((item, "glob matched nothing" if wild else empty_folder if os.path.isdir(item)
                            else "no such file"))
    return paths, missing


def _expand_one(item: str) -> list[str]:
    p = Path(item)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image_path(f)
                      and not any(is_debris(part) for part in f.relative_to(p).parts))
    if p.is_file():
        return _read_csv_paths(p) if p.suffix.lower() == ".csv" else [str(p)]
    if any(c in item for c in "*?["):
        return sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
    return []


def _read_csv_paths(csv_path: Path) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    key = next((k for k in rows[0] if k and k.strip().lower() in ("path", "file", "filename", "image")), None)
    if key is None:
        return []
    base = csv_path.parent
    return [str(Path(r[key]) if Path(r[key]).is_absolute() else base / r[key]) for r in rows if r.get(key)]
