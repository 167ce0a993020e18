"""Find clips: class folders of videos or frame folders, and the clips a user passes to predict.

    root/<class>/*.mp4|avi|mkv|webm|mov          one clip per video file (sub-folders too)
    root/<class>/<clip>/*.jpg|png                one clip per folder of frames
    root/train/<class>/..., root/test/<class>/... split folders, the same rules as images

The scan only lists; decoding (and skipping clips that fail to decode) happens later. The result is
the same `FolderScan` the image scanner returns, so splits, manifests and validation carving follow
the image rules exactly (`ocula.modality.sources`).
"""
from __future__ import annotations

import csv
import glob
import os

from ocula.data.folders import SPLIT_NAMES, FolderScan, is_debris
from ocula.data.images import is_image_path
from ocula.data.inputs import expand_with
from ocula.errors import OculaError
from ocula.modality.video.decode import frame_files, is_video_path


def _subdirs(folder: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not is_debris(e.name))
    except OSError:
        return []


def holds_videos(root) -> bool:
    """True when a class folder (or split/class folder) directly holds video files: cheap, two levels."""
    root = os.fspath(root)
    for name in _subdirs(root):
        level = [os.path.join(root, name)]
        if name.lower() in SPLIT_NAMES:
            level = [os.path.join(root, name, c) for c in _subdirs(os.path.join(root, name))]
        for folder in level:
            try:
                if any(is_video_path(e.name) for e in os.scandir(folder) if e.is_file()):
                    return True
            except OSError:
                continue
    return False


def scan_video_folder(root) -> FolderScan:
    """List the clips under `root` by split and class. Raises OculaError if root is no folder."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise OculaError(f"not a folder: {root}")
    scan = FolderScan()
    top = _subdirs(root)
    split_dirs = [d for d in top if d.lower() in SPLIT_NAMES]
    if split_dirs:
        for d in split_dirs:
            scan.splits.setdefault(SPLIT_NAMES[d.lower()], []).extend(_scan_classes(os.path.join(root, d), scan))
        others = [d for d in top if d.lower() not in SPLIT_NAMES]
        if others:
            scan.warnings.append(f"ignored folders beside the split folders: {', '.join(others)}")
    else:
        scan.splits["train"] = _scan_classes(root, scan)
    scan.classes = sorted({label for items in scan.splits.values() for _, label in items})
    return scan


def _scan_classes(folder: str, scan: FolderScan) -> list[tuple[str, str]]:
    items = []
    for name in _subdirs(folder):
        clips = _clips_under(os.path.join(folder, name), scan)
        if not clips:
            scan.warnings.append(f"class '{name}' has no videos or frame folders; ignored")
        items += [(clip, name) for clip in clips]
    return items


def _clips_under(class_dir: str, scan: FolderScan) -> list[str]:
    """Video files and frame folders below class_dir, in a stable depth-first name order."""
    clips, loose = [], 0
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not is_debris(d))
        files = sorted(f for f in filenames if not is_debris(f))
        images = [f for f in files if is_image_path(f)]
        if images and dirpath != class_dir:
            clips.append(dirpath)  # a frame folder is one clip; what lies below it is not searched
            dirnames[:] = []
        loose += len(images) if dirpath == class_dir else 0
        for f in files:
            if not is_video_path(f):
                continue
            path = os.path.join(dirpath, f)
            if os.path.getsize(path) == 0:
                scan.skipped.append((path, "empty file"))
            else:
                clips.append(path)
    if loose:
        scan.warnings.append(f"ignored {loose} images directly in {class_dir} (frames need one folder per clip)")
    return sorted(clips)


def is_clip_manifest(scan: FolderScan) -> bool:
    """A CSV manifest whose rows are all video files."""
    paths = [p for items in scan.splits.values() for p, _ in items]
    return bool(paths) and all(is_video_path(p) for p in paths)


# ------------------------------------------------------------------------------ predict inputs
def expand_clip_inputs(items) -> tuple[list[str], list[tuple[str, str]]]:
    """Video files, frame folders, folders of either, globs and CSVs → (clip paths, [(item, reason)])."""
    return expand_with(items, _expand_one, empty_folder="no videos or frames found")


def _expand_one(item: str) -> list[str]:
    if os.path.isdir(item):
        if frame_files(item):
            return [item]  # a folder of frames is one clip
        return _clips_in_tree(item)
    if os.path.isfile(item):
        return _csv_paths(item) if item.lower().endswith(".csv") else [item]
    if any(c in item for c in "*?["):
        return sorted(glob.glob(item, recursive=True))
    return []


def _clips_in_tree(folder: str) -> list[str]:
    scan = FolderScan()
    return _clips_under(folder, scan)


def _csv_paths(csv_path: str) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    key = next((k for k in (rows[0] if rows else {}) if k and k.strip().lower() in ("path", "file", "video")), None)
    if key is None:
        return []
    base = os.path.dirname(os.path.abspath(csv_path))
    return [r[key] if os.path.isabs(r[key]) else os.path.join(base, r[key]) for r in rows if r.get(key)]
