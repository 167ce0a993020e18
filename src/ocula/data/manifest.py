"""Read a CSV manifest: one image per row, `path,label[,split]`.

Paths are relative to the CSV's folder (absolute paths work too). Split values are train, val
(also valid, validation) or test, any case; a manifest without a split column, or a blank split
cell, puts the row in train. Rows whose file is missing or empty are skipped with a reason.
A manifest is the user's own list, so its paths may point anywhere (`../x.png`, `/data/x.png`): they
are normalised, never checked against the CSV's folder; a path the OS cannot use (a NUL byte, too
long) is a named skip.
"""
from __future__ import annotations

import csv
import os

from ocula.data.folders import SPLIT_NAMES, FolderScan
from ocula.errors import OculaError, did_you_mean

# Accepted header names (lower-cased) for each column; the first is the documented one.
COLUMNS = {
    "path": ("path", "file", "filename", "image"),
    "label": ("label", "class"),
    "split": ("split",),
}


def read_manifest(csv_path) -> FolderScan:
    """List the manifest's images by split and class, like `scan_image_folder` does for folders."""
    csv_path = os.path.abspath(os.fspath(csv_path))
    base = os.path.dirname(csv_path)
    scan = FolderScan()
    duplicates, seen = 0, set()
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a BOM
            reader = csv.reader(f)
            columns = _find_columns(next(reader, None), csv_path)
            for line_no, row in enumerate(reader, start=2):
                entry = _parse_row(row, columns, base, csv_path, line_no)
                if entry is None:
                    continue
                path, label, split = entry
                if path in seen:
                    duplicates += 1
                    continue
                seen.add(path)
                reason = _file_problem(path)
                if reason:
                    scan.skipped.append((path, reason))
                else:
                    scan.splits.setdefault(split, []).append((path, label))
    except FileNotFoundError:
        raise OculaError(f"no such manifest: {csv_path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise OculaError(f"{csv_path}: cannot read CSV ({e})") from None
    if duplicates:
        scan.warnings.append(f"ignored {duplicates} duplicate rows in {os.path.basename(csv_path)}")
    scan.classes = sorted({label for items in scan.splits.values() for _, label in items})
    return scan


def _find_columns(header, csv_path: str) -> dict[str, int]:
    """Column name -> index; OculaError when path or label is missing."""
    names = [h.strip().lower() for h in (header or [])]
    found = {}
    for column, aliases in COLUMNS.items():
        for alias in aliases:
            if alias in names:
                found[column] = names.index(alias)
                break
    missing = [c for c in ("path", "label") if c not in found]
    if missing:
        have = ", ".join(names) or "nothing"
        raise OculaError(
            f"{csv_path}: need a header with columns path,label[,split]; "
            f"missing {' and '.join(missing)} (found: {have})"
        )
    return found


def _parse_row(row, columns, base, csv_path, line_no):
    """(absolute path, label, split) or None for a blank line."""
    if not row or all(not cell.strip() for cell in row):
        return None
    cells = {c: (row[i].strip() if i < len(row) else "") for c, i in columns.items()}
    if not cells["path"] or not cells["label"]:
        raise OculaError(f"{csv_path}: line {line_no}: needs both a path and a label")
    raw_split = cells.get("split", "").lower()
    split = SPLIT_NAMES.get(raw_split or "train")
    if split is None:
        hint = did_you_mean(raw_split, SPLIT_NAMES)
        raise OculaError(f"{csv_path}: line {line_no}: unknown split '{raw_split}'{hint}")
    raw = cells["path"]
    try:
        raw = os.path.expanduser(raw)
    except ValueError:  # '~user\0…': a NUL byte in the user name (found by atheris); a named skip below
        pass
    path = os.path.normpath(os.path.join(base, raw))
    return path, cells["label"], split


def _file_problem(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing file"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    except ValueError:  # an embedded NUL byte (the csv module lets NUL through)
        return "invalid path"
    if not os.path.isfile(path):
        return "not a file"
    if st.st_size == 0:
        return "empty file"
    return None
