"""Scan a class-per-folder image tree, with or without train/val/test split folders.

    root/cats/1.jpg, root/dogs/a/2.png            -> one split ("train"), classes cats, dogs
    root/train/cats/1.jpg, root/Valid/dogs/3.jpg  -> splits train and val

The scan only lists files; decoding (and skipping files that fail to decode) happens later.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from ocula.data.images import is_image_path
from ocula.errors import OculaError

# Folder names (lower-cased) that mark a split rather than a class.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

# Operating-system and tool debris that is never a sample or a class. Dot-names are debris too.
DEBRIS_NAMES = {"__macosx", "thumbs.db", "desktop.ini", ".ds_store", ".ipynb_checkpoints"}


@dataclass
class FolderScan:
    """What a folder (or CSV manifest) lists: (path, class name) pairs per split."""

    splits: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)  # sorted union over splits
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def is_debris(name: str) -> bool:
    return name.startswith(".") or name.lower() in DEBRIS_NAMES


def scan_image_folder(root) -> FolderScan:
    """List the images under `root`, by split and class. Raises OculaError if root is no folder."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise OculaError(f"not a folder: {root}")
    walker = _Walker(os.path.realpath(root))
    top_dirs = [e for e in walker.entries(root) if _is_dir(e)]
    is_split = [e.name.lower() in SPLIT_NAMES for e in top_dirs]
    split_dirs = [e for e, flag in zip(top_dirs, is_split) if flag and walker.allowed(e)]
    scan = FolderScan()

    if any(is_split):
        for entry in split_dirs:
            split = SPLIT_NAMES[entry.name.lower()]
            if split in scan.splits:
                scan.warnings.append(f"folders for split '{split}' merged (found '{entry.name}' too)")
            scan.splits.setdefault(split, []).extend(_scan_classes(walker, entry.path, split, scan))
        others = sorted(e.name for e, flag in zip(top_dirs, is_split) if not flag)
        if others:
            scan.warnings.append(f"ignored folders beside the split folders: {', '.join(others)}")
    else:
        scan.splits["train"] = _scan_classes(walker, root, None, scan)

    loose = sum(1 for e in walker.entries(root) if not _is_dir(e) and is_image_path(e.name))
    if loose:
        scan.warnings.append(f"ignored {loose} images directly in {root} (not in a class folder)")
    if walker.unknown:
        exts = ", ".join(ext or "(none)" for ext, _ in walker.unknown.most_common(5))
        total = sum(walker.unknown.values())
        scan.warnings.append(f"ignored {total} files with unknown extensions ({exts})")
    scan.skipped.extend(walker.skipped)
    scan.classes = sorted({label for items in scan.splits.values() for _, label in items})
    return scan


def _scan_classes(walker: "_Walker", folder: str, split, scan: FolderScan) -> list[tuple[str, str]]:
    """(path, class) for every image under folder/<class>/..., in a stable order."""
    items = []
    for entry in walker.entries(folder):
        if not _is_dir(entry) or not walker.allowed(entry):
            continue
        files = walker.images_under(entry.path)
        if not files:
            where = f" in {split}" if split else ""
            scan.warnings.append(f"class '{entry.name}' has no images{where}; ignored")
            continue
        items.extend((path, entry.name) for path in files)
    return items


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; whether to enter them is _Walker.allowed's call
    except OSError:
        return False


class _Walker:
    """Directory walking with the dataset's rules: debris skipped, symlinks kept inside the root,
    loops broken, zero-byte files skipped, unknown extensions counted."""

    def __init__(self, real_root: str):
        self.real_root = real_root
        self.skipped: list[tuple[str, str]] = []
        self.unknown: Counter = Counter()
        self._reported: set[str] = set()

    def entries(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                found = [e for e in it if not is_debris(e.name)]
        except OSError as e:
            self._skip(folder, f"cannot list folder ({e.strerror or e})")
            return []
        return sorted(found, key=lambda e: e.name)

    def allowed(self, entry: os.DirEntry) -> bool:
        """False (and recorded as skipped) for a symlink that leaves the dataset root."""
        if not entry.is_symlink():
            return True
        target = os.path.realpath(entry.path)
        if not os.path.exists(target):
            self._skip(entry.path, "broken symlink")
            return False
        if os.path.commonpath([self.real_root, target]) != self.real_root:
            self._skip(entry.path, "symlink outside dataset root")
            return False
        return True

    def images_under(self, folder: str) -> list[str]:
        """Image paths below folder, recursively, depth-first in name order."""
        found, stack, seen = [], [folder], set()
        while stack:
            current = stack.pop()
            real = os.path.realpath(current)
            if real in seen:  # a symlink loop or a second link to the same folder
                continue
            seen.add(real)
            subdirs = []
            for entry in self.entries(current):
                if not self.allowed(entry):
                    continue
                if _is_dir(entry):
                    subdirs.append(entry.path)
                elif self._is_usable_file(entry):
                    found.append(entry.path)
            stack.extend(reversed(subdirs))
        return found

    def _is_usable_file(self, entry: os.DirEntry) -> bool:
        if not is_image_path(entry.name):
            self.unknown[os.path.splitext(entry.name)[1].lower()] += 1
            return False
        try:
            if entry.stat().st_size == 0:
                self._skip(entry.path, "empty file")
                return False
        except OSError as e:
            self._skip(entry.path, f"cannot read ({e.strerror or e})")
            return False
        return True

    def _skip(self, path: str, reason: str) -> None:
        if path not in self._reported:  # the root listing is read twice; report once
            self._reported.add(path)
            self.skipped.append((path, reason))
