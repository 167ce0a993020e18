"""One domain exception and the exit codes: the CLI turns an OculaError into a one-line message and its
`exit_code` (2; a failed gate 3). The codes are documented in docs/cli.md."""
from __future__ import annotations

import difflib
from enum import IntEnum
from typing import Iterable

from ocula.names import display_name


class ExitCode(IntEnum):
    """What `ocula …` exits with; scripts may branch on these."""
    OK = 0
    INTERNAL = 1  # a bug of ours: an unexpected exception (one line; the traceback under --verbose)
    USER = 2  # a problem the user can fix: bad arguments (argparse's own 2), input, names, the disk
    GATE = 3  # the command ran, but a check it exists to make did not pass (export's accuracy gate, verify)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    BROKEN_PIPE = 141  # the reader of stdout left (`ocula predict … | head`; 128 + SIGPIPE)


class OculaError(Exception):
    """A problem the user can fix (bad input, unknown name, missing data). Never a bug."""

    exit_code = ExitCode.USER


class GateFailed(OculaError):
    """A check failed on good input: an export's accuracy gate, verify's "different" verdict. The command
    still wrote what it made (to inspect); the exit code (3) tells a script not to ship it."""

    exit_code = ExitCode.GATE


class BadImageError(OculaError):
    """One input file cannot be used as an image; callers count and skip it."""

    def __init__(self, path: str, reason: str):
        # the message goes into logs and reports: an odd name is escaped there; .path stays the real one
        super().__init__(f"{display_name(path, line=True)}: {reason}")
        self.path = str(path)
        self.reason = reason


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> OculaError:
    choices = list(choices)
    return OculaError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}")


class BadWeightsError(OculaError):
    """A weights, bundle or training-state file that cannot be used; `reason` is one line."""

    def __init__(self, path, reason: str):
        reason = one_line(reason)
        super().__init__(f"{display_name(path)}: {reason}")
        self.path = str(path)
        self.reason = reason


def one_line(text) -> str:
    """The first non-empty line of `text` (an exception message may be empty or span many lines)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def disk_error(e: OSError, path=None) -> OculaError:
    """OSError from the disk (full, read-only, no permission) → a one-line error naming the path."""
    where = path or e.filename
    what = e.strerror or {28: "No space left on device", 30: "Read-only file system",
                          13: "Permission denied"}.get(e.errno) or one_line(e) or type(e).__name__
    return OculaError(f"{display_name(where)}: {what}" if where else what)
