"""Read a CSV manifest: one image per row, `path,label[,split]`; or, multi-label, `path,labels[,split]`.

A `labels` cell holds class names separated by `|` (an empty cell: no label); a cell written as a list
(`["a", "b"]`, as a Hugging Face imagefolder `metadata.csv` with `file_name` has it) works too, and so
does a JSON-lines manifest (`.jsonl`, one object per line with the same keys, `labels` a list). A row
whose cell names several classes, or none, makes the manifest multi-label: its labels are tuples.

Paths are relative to the CSV's folder (absolute paths work too). Split values are train, val
(also valid, validation) or test, any case; a manifest without a split column, or a blank split
cell, puts the row in train. Rows whose file is missing or empty are skipped with a reason.
A manifest is the user's own list, so its paths may point anywhere (`../x.png`, `/data/x.png`): they
are normalised, never checked against the CSV's folder; a path the OS cannot use (a NUL byte, too
long) is a named skip.
"""
from __future__ import annotations

import ast
import csv
import json
import os

from ocula.data.folders import SPLIT_NAMES, FolderScan
from ocula.errors import OculaError, did_you_mean

# Accepted header names (lower-cased) for each column; the first is the documented one.
COLUMNS = {
    "path": ("path", "file", "filename", "file_name", "image"),
    "label": ("label", "class", "labels", "tags"),
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
            rows = _json_rows(f, csv_path) if csv_path.lower().endswith(".jsonl") else csv.reader(f)
            header = next(rows, None)
            columns = _find_columns(header, csv_path)
            sets = _is_set_column(header, columns)
            for line_no, row in enumerate(rows, start=2):
                entry = _parse_row(row, columns, base, csv_path, line_no, sets)
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
    scan.classes = sorted({name for items in scan.splits.values() for _, label in items for name in label_names(label)})
    return scan


def label_names(label) -> tuple:
    """A scan entry's label: one class name (single-label) or a tuple of names (multi-label)."""
    return label if isinstance(label, tuple) else (label,)


def read_metadata_folder(root: str):
    """A Hugging Face imagefolder with `metadata.csv` or `metadata.jsonl` at its root or in split folders
    (train/, validation/, test/): the rows of every file, their paths relative to that file's folder."""
    scan = None
    for folder in [root] + [os.path.join(root, d) for d in sorted(os.listdir(root)) if d.lower() in SPLIT_NAMES]:
        for name in ("metadata.csv", "metadata.jsonl"):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            part = read_manifest(path)
            split = SPLIT_NAMES.get(os.path.basename(folder).lower()) if folder != root else None
            scan = _merge(scan, part, split)
    return scan


def has_metadata_file(root: str) -> bool:
    folders = [root] + [os.path.join(root, d) for d in os.listdir(root) if d.lower() in SPLIT_NAMES]
    return any(os.path.isfile(os.path.join(f, n)) for f in folders for n in ("metadata.csv", "metadata.jsonl"))


def _merge(scan, part, split):
    if split is not None:  # train/metadata.csv: its rows are train rows whatever their split column says
        part.splits = {split: [item for items in part.splits.values() for item in items]}
    if scan is None:
        return part
    for name, items in part.splits.items():
        scan.splits.setdefault(name, []).extend(items)
    scan.skipped += part.skipped
    scan.warnings += part.warnings
    scan.classes = sorted(set(scan.classes) | set(part.classes))
    return scan


def _json_rows(f, path: str):
    """JSON lines → a header row and then value rows, like csv.reader (list values stay lists)."""
    keys = None
    for line_no, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise OculaError(f"{path}: line {line_no}: not a JSON object") from None
        if not isinstance(obj, dict):
            raise OculaError(f"{path}: line {line_no}: not a JSON object")
        if keys is None:
            keys = list(obj)
            yield keys
        yield [obj.get(k, "") for k in keys]


def _is_set_column(header, columns) -> bool:
    """A `labels` (or `tags`) column holds label sets, where an empty cell is a sample with no label."""
    names = [str(h).strip().lower() for h in (header or [])]
    return "label" in columns and names[columns["label"]] in ("labels", "tags")


def _label_cell(cell, sets: bool):
    """A cell → one class name, or a tuple of names when it lists several (or none, in a labels column)."""
    if isinstance(cell, (list, tuple)):
        names = [str(c).strip() for c in cell]
    else:
        text = str(cell).strip()
        if text.startswith("[") and text.endswith("]"):  # a list written into a CSV cell
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):  # '[[[[…' too deep, etc.
                parsed = None
            names = [str(c).strip() for c in parsed] if isinstance(parsed, (list, tuple)) else [text]
        else:
            names = text.split("|") if "|" in text else ([text] if text else [])
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))  # no blanks, no repeats, first order kept
    if len(names) == 1 and not isinstance(cell, (list, tuple)):
        return names[0]
    return names if (names or sets) else None


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


def _parse_row(row, columns, base, csv_path, line_no, sets: bool = False):
    """(absolute path, label, split) or None for a blank line; the label is a tuple for a label set."""
    if not row or all(not str(cell).strip() for cell in row):
        return None
    cells = {c: (row[i] if i < len(row) else "") for c, i in columns.items()}
    cells = {c: v if isinstance(v, (list, tuple)) else str(v).strip() for c, v in cells.items()}
    label = _label_cell(cells["label"], sets)
    if not cells["path"] or label is None:
        raise OculaError(f"{csv_path}: line {line_no}: needs both a path and a label")
    raw_split = str(cells.get("split", "")).lower()
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
    return path, label, split


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
