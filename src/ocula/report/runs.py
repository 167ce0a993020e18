"""`ocula runs [DIR]`: one row per run under DIR (default runs/), read from the files each run holds.

    run          data     model     epochs  best    ece     ece_cal  export           size_mb  time_s
    demo-fmnist  fashion  seed_cnn  3       0.9121  0.0213  –        fp32 ✓ int8 ✓    1.32     212.4
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ocula.errors import OculaError, did_you_mean
from ocula.names import display_name
from ocula.report.files import Reader, config_value, find_eval_dir
from ocula.report.training import flatten
from ocula.run_dir import EvalDir, RunDir, best_score

COLUMNS = ("run", "data", "model", "epochs", "best", "eval_acc", "ece", "ece_cal", "export", "size_mb", "time_s",
           "finished")
HELP = {"best": "best validation score (the task's monitor: accuracy, or mAP for multi-label runs)", "eval_acc": "accuracy of the newest evaluation",
        "ece": "its calibration error", "ece_cal": "ECE after calibration (calibration.json)",
        "export": "accuracy gates of ocula export", "size_mb": "weights/best.safetensors",
        "time_s": "training time"}
MAX_DEPTH = 3  # runs/, runs/project/, runs/project/sweep/


def find_runs(root) -> list[Path]:
    """Run directories under `root` (itself included), at most MAX_DEPTH levels down, sorted."""
    root = Path(root)
    if not root.exists():
        raise OculaError(f"{display_name(root, line=True)}: no such folder (ocula train writes runs/<name>/)")
    if not root.is_dir():
        raise OculaError(f"{display_name(root, line=True)}: not a folder")
    found, frontier = [], [root]
    for _ in range(MAX_DEPTH + 1):
        nxt = []
        for d in frontier:
            if RunDir.is_run(d):
                found.append(d)  # a run's own sub-folders (eval-*, weights) are not runs
                continue
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        frontier = nxt
    return sorted(found)


def run_row(run: Path, root: Path) -> dict:
    reader, files = Reader(run), RunDir(run)
    config = flatten(reader.json(files.config) or {})
    model = reader.json(files.model) or {}
    summary = reader.json(files.summary)
    data = reader.json(files.data) or {}
    try:
        eval_dir = find_eval_dir(run)
    except OculaError:
        eval_dir = None
    evaluation = reader.json(EvalDir(eval_dir).report) if eval_dir else None
    calibration = next((c for c in (reader.json(EvalDir(eval_dir).calibration) if eval_dir else None,
                                    reader.json(files.calibration)) if c), None)
    weights = files.weights("best")
    name = display_name(run.relative_to(root)) if run != root else display_name(run.name)
    return {"run": name or ".", "data": data.get("source") or config_value(config, "data"),
            "model": (model.get("arch") or {}).get("name") or config_value(config, "model"),
            "epochs": (summary or {}).get("epochs_run"), "best": best_score(summary)[1],
            "eval_acc": (evaluation or {}).get("accuracy"), "ece": (evaluation or {}).get("ece"),
            "ece_cal": ((calibration or {}).get("after") or {}).get("ece"), "export": export_status(reader),
            "size_mb": round(weights.stat().st_size / 1e6, 3) if weights.is_file() else None,
            "time_s": (summary or {}).get("train_time_s"), "finished": summary is not None,
            "path": display_name(run)}


def export_status(reader: Reader) -> Optional[str]:
    gates = [reader.json(p) or {} for p in reader.run_dir.gate_reports()]
    parts = [f"{g.get('precision', '?')} {'pass' if g.get('passed') else 'FAIL'}" for g in gates if g]
    return ", ".join(parts) or None


def list_runs(root="runs", sort: Optional[str] = None, reverse: bool = False) -> list[dict]:
    """Rows of `COLUMNS` (and "path"), sorted by `sort` (missing values last)."""
    root = Path(root)
    rows = [run_row(run, root) for run in find_runs(root)]
    if sort:
        if sort not in COLUMNS:
            raise OculaError(f"--sort {sort}: not a column (columns: {', '.join(COLUMNS)})"
                             f"{did_you_mean(sort, COLUMNS)}")
        present = [r for r in rows if r[sort] is not None]
        present.sort(key=lambda r: (isinstance(r[sort], str), r[sort]), reverse=reverse)
        rows = present + [r for r in rows if r[sort] is None]
    return rows


def _cell(column: str, value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}" if column == "time_s" else f"{value:.2f}" if column == "size_mb" else f"{value:.4f}"
    return display_name(str(value), line=True)


def format_runs(rows: list[dict]) -> str:
    table = [list(COLUMNS)] + [[_cell(c, r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def runs_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
