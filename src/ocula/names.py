"""Filenames as they are shown and written: never a crash, always readable.

On POSIX a filename is bytes; Python hands non-UTF-8 bytes over as lone surrogates ('caf\\udce9.png'),
which `print`, `json.dumps(ensure_ascii=False)`, `Path.write_text` and the csv module refuse to
encode. Every writer of filenames (JSON, CSV, HTML, logs) goes through `display_name`:

    display_name(os.fsdecode(b"caf\\xe9.png"))  ->  'caf\\xe9.png'   (a literal backslash escape)
    display_name("line\\nbreak.png")            ->  'line\\nbreak.png' with line=True

The result is valid UTF-8 text; it is for showing and reporting, not for opening the file again.
"""
from __future__ import annotations

import os
from typing import Any

_CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {0x7F: "\\x7f", 10: "\\n", 13: "\\r", 9: "\\t"}


def display_name(path, line: bool = False) -> str:
    """A str for any path (str, bytes, Path, with surrogate escapes); `line=True` also escapes
    newlines and other control characters, for one-line log and console output."""
    if path is None:
        return ""
    try:
        raw = os.fsencode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path).encode(
            "utf-8", "surrogateescape")
    except (TypeError, UnicodeError):
        raw = str(path).encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    return text.translate(_CONTROL) if line else text


def has_odd_chars(text: str) -> bool:
    """True when `text` holds lone surrogates (a filename that is not valid UTF-8)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def clean(obj: Any) -> Any:
    """A copy of a JSON-able structure with every str passed through display_name when it must be:
    strings with surrogates (undecodable filenames) become readable escapes; others stay as they are."""
    if isinstance(obj, str):
        return display_name(obj) if has_odd_chars(obj) else obj
    if isinstance(obj, dict):
        return {clean(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return display_name(obj)
    return obj


def csv_cell(value: Any) -> Any:
    """A CSV cell: str with surrogates made readable (the csv module quotes newlines itself)."""
    return display_name(value) if isinstance(value, str) and has_odd_chars(value) else value
