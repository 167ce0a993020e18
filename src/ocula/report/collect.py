"""A run directory → the report's sections, each holding what it shows or why it was not run.

Only files are read (nothing is trained, predicted or measured here):

    summary      config.json, model.json, summary.json, data.json, split.json, environment.json, weights/
    curves       metrics.csv, curves.png
    evaluation   EVAL/report.json, EVAL/confusion_matrix.png       EVAL: RUN/eval-*/ (the newest) or --eval
                 boxes: EVAL/pr_curves.png, EVAL/detections.png
    calibration  EVAL/report.json (ECE, reliability bins); EVAL/ or RUN/calibration.json for "after"
    errors       EVAL/errors/errors.json, errors.png               (ocula evaluate --explain-errors N)
    audit        issues.json in --audit, RUN/audit/ or ./audit/ when it audited the run's data
    export       RUN/*.gate.json (ocula export), RUN/benchmark*.json (ocula benchmark --json)
"""
from __future__ import annotations

import time

from ocula.names import display_name
from ocula.report import quality, training
from ocula.report.files import Reader, find_eval_dir, find_run
from ocula.run_dir import EvalDir


def collect_run(run, *, eval_dir=None, audit_dir=None, summary=None) -> dict:
    """→ {"name", "path", "generated", "sections": [Section, ...], "notes": [...], "eval_dir"}.

    `summary`: the training summary when it is not on disk yet (the report written as training ends)."""
    run = find_run(run)
    reader = Reader(run)
    evaluation_dir = find_eval_dir(run, eval_dir)
    evaluation = reader.json(EvalDir(evaluation_dir).report) if evaluation_dir else None
    card = training.summary_section(reader, evaluation, summary)
    audit = quality.audit_section(reader, audit_dir, card.data.get("data", {}).get("source"))
    training.add_class_counts(card, audit.data.get("class_counts") or {})
    sections = [card, training.curves_section(reader),
                training.evaluation_section(reader, evaluation_dir, evaluation),
                quality.calibration_section(reader, evaluation_dir, evaluation),
                quality.errors_section(reader, evaluation_dir, evaluation), audit, quality.export_section(reader)]
    return {"name": display_name(run.resolve().name), "path": display_name(run.resolve()),
            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "sections": sections, "notes": reader.notes,
            "eval_dir": reader.rel(evaluation_dir) if evaluation_dir else None}
