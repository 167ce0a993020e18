"""The report's reading of a run directory: Section (what one part of the page shows) and Reader.

A missing file is None; an unreadable one is None plus a note on the page, never a traceback.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ocula.errors import OculaError
from ocula.names import clean, display_name
from ocula.run_dir import MARKERS, EvalDir, RunDir


@dataclass
class Section:
    key: str
    title: str
    ran: bool = True
    reason: str = ""  # when not run: what is missing and the command that makes it
    data: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)  # name → a PNG file's path or PNG bytes; render inlines them


class Reader:
    """Reads a run's JSON/CSV files; a missing file is None, an unreadable one is None plus a note."""

    def __init__(self, run: Path):
        self.run = run
        self.run_dir = RunDir(run)  # the named paths of its files
        self.notes: list[str] = []

    def json(self, path: Path) -> Optional[Any]:
        if not path.is_file():
            return None
        try:
            return clean(json.loads(path.read_text(encoding="utf-8", errors="surrogateescape")))
        except (OSError, ValueError) as e:
            self.notes.append(f"{self.rel(path)}: unreadable ({type(e).__name__}), left out")
            return None

    def csv(self, path: Path) -> Optional[list[dict]]:
        if not path.is_file():
            return None
        try:
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                return list(csv.DictReader(f))
        except (OSError, csv.Error) as e:
            self.notes.append(f"{self.rel(path)}: unreadable ({type(e).__name__}), left out")
            return None

    def rel(self, path: Path) -> str:
        try:
            return display_name(path.relative_to(self.run))
        except ValueError:
            return display_name(path)


def find_run(path) -> Path:
    """The run directory, or one line saying why `path` is not one."""
    p = Path(path)
    if not p.exists():
        raise OculaError(f"{display_name(path, line=True)}: no such run directory")
    if not p.is_dir():
        raise OculaError(f"{display_name(path, line=True)}: a file, not a run directory (pass the folder "
                         "`ocula train` wrote)")
    if not RunDir.is_run(p):
        raise OculaError(f"{display_name(path, line=True)}: not an ocula run (no {', '.join(MARKERS[:-1])} or "
                         f"{MARKERS[-1]}); `ocula runs` lists the runs under runs/")
    return p


def find_eval_dir(run: Path, eval_dir=None) -> Optional[Path]:
    """--eval DIR if given, else the run's newest folder holding an evaluation report.json."""
    if eval_dir:
        d = EvalDir(eval_dir)
        if not d.report.is_file():
            raise OculaError(f"--eval {display_name(eval_dir, line=True)}: no {d.report.name} there "
                             "(written by `ocula evaluate RUN DATA --out DIR`)")
        return d.path
    newest = RunDir(run).newest_evaluation()
    return newest.path if newest else None


# Old flat config names → the sectioned ones (config.json of runs saved before and after the change).
RENAMED = {"model": "model.name", "augment": "augment.preset", "data": "data.source", "model_kwargs": "model.kwargs"}


def config_value(flat: dict, name: str, default=None):
    """A setting of a flattened config.json by its plain name, whether the run saved it flat or in sections."""
    if name in flat and not isinstance(flat[name], dict):
        return flat[name]
    if RENAMED.get(name) in flat:
        return flat[RENAMED[name]]
    return next((v for k, v in flat.items() if k.endswith("." + name)), default)
