"""One domain exception: the CLI turns it into a one-line message and exit code 2."""
from __future__ import annotations

import difflib
from typing import Iterable


class OculaError(Exception):
    """A problem the user can fix (bad input, unknown name, missing data). Never a bug."""


class BadImageError(OculaError):
    """One input file cannot be used as an image; callers count and skip it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> OculaError:
    choices = list(choices)
    return OculaError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}")
