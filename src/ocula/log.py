"""ocula's logger and progress display: rank-aware, quiet or verbose, and honest about the stream.

    from ocula.log import logger, progress
    logger.info("input 28×28×1: the data's native size")   # rank 0 only; stdout, as `print` was
    for batch in progress(loader, desc="decode train", unit="img"): ...

Only rank 0 (RANK, else LOCAL_RANK, as torchrun sets them) emits info and progress, so a DDP run
prints each line once; warnings and errors come from every rank. `ocula --quiet` shows warnings and
errors only, `--verbose` adds debug lines.

Progress is a live tqdm bar (rate, ETA) when stderr is a terminal. Anywhere else — a log file, a
pipe, CI — carriage-return frames ten times a second are noise (they were 96 KB of the 3-epoch
`make demo` log), so a job writes plain lines instead: a training epoch one summary line at its end,
any other job nothing while it is short and a line every 10 % once it has run for `QUIET_SECONDS`.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Optional

logger = logging.getLogger("ocula")

QUIET_SECONDS = 10.0  # a non-terminal job shorter than this writes no progress lines at all


def rank_from_env() -> int:
    """This process's rank as torchrun announces it (0 outside torchrun)."""
    for var in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(var)
        if value and value.strip().isdigit():
            return int(value)
    return 0


class _RankFilter(logging.Filter):
    """Info and debug from rank 0 only; warnings and errors from every rank (each may fail alone)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or rank_from_env() == 0


class _Stream(logging.StreamHandler):
    """Writes to whatever sys.stdout / sys.stderr is *now* (pytest's capture, a redirect), not the
    stream that existed when the handler was made."""

    def __init__(self, to_stderr: bool):
        self.to_stderr = to_stderr
        super().__init__()

    @property
    def stream(self):
        return sys.stderr if self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, _value):  # logging.StreamHandler.__init__ assigns it; the property decides
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


def _install_handlers() -> None:
    if getattr(logger, "_ocula_handlers", False):
        return
    info = _Stream(to_stderr=False)  # info and debug where `print` wrote them: stdout
    info.addFilter(lambda r: r.levelno < logging.WARNING)
    problems = _Stream(to_stderr=True)
    problems.setLevel(logging.WARNING)
    for handler in (info, problems):
        handler.addFilter(_RankFilter())
        handler.setFormatter(_Format())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # an application's root handlers would print every line twice
    logger._ocula_handlers = True


_install_handlers()


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    """`--quiet`: warnings and errors only (no progress either); `--verbose`: debug lines too."""
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def shows_info() -> bool:
    return logger.isEnabledFor(logging.INFO) and rank_from_env() == 0


def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "",
             unit: str = "it", leave: bool = False, summary: bool = False, disable: bool = False):
    """A progress display for `iterable` (or `update(n)` calls up to `total`).

    `summary=True` (a training epoch): off a terminal, one line when it closes. Otherwise off a
    terminal: lines every 10 % only once the job has run QUIET_SECONDS. `leave` keeps the bar on a
    terminal after it closes. Disabled on ranks other than 0 and under --quiet."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if disable or not shows_info():
        return _Lines(iterable, total, desc, unit, summary, enabled=False)
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return _Lines(iterable, total, desc, unit, summary, enabled=True)


class _Lines:
    """tqdm's surface (update, set_postfix, set_postfix_str, close, n, total, iteration, `with`)
    written as whole lines to stderr."""

    def __init__(self, iterable, total, desc, unit, summary, enabled):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.summary, self.enabled = summary, enabled
        self.n, self.postfix, self.closed, self.lines = 0, "", False, 0
        self.start = time.perf_counter()
        self.next_tenth = 1

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled or self.summary or not self.total:
            return
        tenth = min(10, self.n * 10 // self.total)
        if tenth >= self.next_tenth:
            self.next_tenth = tenth + 1
            if time.perf_counter() - self.start >= QUIET_SECONDS:
                self._write()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # A long job ends on a complete line; a summary job (an epoch) always writes its one line.
        if self.enabled and (self.summary or (self.lines and self.n * 10 // max(self.total or 1, 1) < 10)):
            self._write()

    def _write(self) -> None:
        self.lines += 1
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        extra = f", {self.postfix}" if self.postfix else ""
        sys.stderr.write(f"{self.desc}: {count} {self.unit} in {elapsed:.1f} s ({rate:.1f} {self.unit}/s){extra}\n")
        sys.stderr.flush()
