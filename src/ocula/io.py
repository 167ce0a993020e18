"""Atomic file writes and pickle-free state (safetensors for tensors, JSON for the rest).

Every file ocula writes goes through `atomic_write`: a temp file in the same folder, fsync, then
`os.replace`, so a run killed at any instant leaves either the old file or the new one.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ocula.errors import disk_error as _disk_error
from ocula.names import clean, display_name, has_odd_chars


@contextmanager
def atomic_path(path):
    """Yields a temp path next to `path`; on success it replaces `path` in one rename.

    On any failure (disk full, read-only, an exception in the caller) the temp file is removed and
    `path` is left as it was; an OSError from the disk becomes one OculaError naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(e, path.parent) from None
    # not mkstemp: its 0600 mode would survive os.replace; a fresh name keeps the umask's mode
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            # safetensors' writer creates files 0600; a run copied to a shared machine must stay readable
            os.fchmod(f.fileno(), _UMASK_MODE)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename not in (None, tmp, str(path)):  # about another file the caller was reading
            raise
        raise disk_error(e, path) from None
    finally:
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        except OSError:
            pass


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_UMASK_MODE = _umask_mode()  # read once at import: os.umask is process-wide and not thread-safe


def disk_error(e: OSError, path):
    return _disk_error(e, path)


def write_text(path, text: str) -> None:
    """UTF-8 text, atomically; lone surrogates (undecodable filenames) are written as \\x escapes."""
    if has_odd_chars(text):
        text = display_name(text)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


STDOUT = "-"  # as a path in `--json -`, `--csv -`, `--out -`: standard output


def write_output(path, text: str) -> None:
    """`text` to the file `path` (atomically) or, for "-", to stdout, where undecodable filenames are
    written as readable escapes too (a strict stdout would raise on them)."""
    if str(path) != STDOUT:
        write_text(path, text)
        return

    sys.stdout.write(display_name(text) if has_odd_chars(text) else text)
    sys.stdout.flush()


def write_json(path, obj: Any, exact_names: bool = False) -> None:
    """Indented JSON, atomically ("-": stdout). Undecodable filenames are written readably
    (`caf\\xe9.png`); with `exact_names` (files ocula reads back to open those paths again) as JSON's
    `\\udce9` escape instead, which is still plain ASCII but round-trips to the very same name."""
    write_output(path, dumps_json(obj, exact_names=exact_names))


def dumps_json(obj: Any, indent=2, exact_names: bool = False) -> str:
    """json.dumps for ocula's files: numpy/Path/sets handled, undecodable filenames made readable
    (`caf\\xe9.png`, not the '\\udce9' escape json would write) unless `exact_names`."""
    return json.dumps(obj if exact_names else clean(obj), indent=indent, default=_json_default) + "\n"


def write_npz(path, arrays: dict) -> None:
    """numpy arrays → a compressed .npz, written atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_json(path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return display_name(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
