"""Turn a metrics report (see `metrics.classification_report`) into text, JSON and CSV.

Files are written atomically (temp file in the same folder, then os.replace) so a crash or a
concurrent reader never sees half a report.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Union

import numpy as np

from ocula.evaluation.multilabel import format_multilabel_report
from ocula.io import write_json, write_text  # noqa: F401 - write_json(path, report) is part of ocula.evaluation

PathLike = Union[str, os.PathLike]


def class_names_of(report: dict) -> list[str]:
    if "class_names" in report:
        return list(report["class_names"])
    return [row["class"] for row in report["per_class"]]


# ----------------------------------------------------------------------------- text


def _headline(report: dict) -> str:
    parts = [f"n={report['n']}", f"accuracy={report['accuracy']:.4f}"]
    if "top5" in report:
        parts.append(f"top5={report['top5']:.4f}")
    parts.append(f"balanced_acc={report['balanced_accuracy']:.4f}")
    parts.append(f"macro_f1={report['macro']['f1']:.4f}")
    if "ece" in report:
        parts.append(f"ece={report['ece']:.4f}")
    return "  ".join(parts)


def format_report(report: dict, max_classes: int = 50) -> str:
    """The report as text, in the format of its kind (`FORMATS`; a task's `score` names it); a report of boxes
    (COCO mAP50 and per-class AP) as `format_detection_report`; single-label reports, which name none, as a
    sklearn-like table: headline, one row per class, then macro and weighted avg."""
    if is_detection_report(report):
        return format_detection_report(report, max_classes)
    return FORMATS.get(report.get("kind"), format_class_report)(report, max_classes)


def is_detection_report(report: dict) -> bool:
    """A COCO evaluation of boxes (`evaluation.detection.score_detections`): mAP50 and a per-class AP."""
    rows = report.get("per_class") or [{}]
    return "mAP50" in report and "AP" in rows[0]


def _score(v, width: int = 6) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.4f}"


def format_detection_report(report: dict, max_classes: int = 50) -> str:
    """mAP (COCO @[.5:.95]), mAP50, mAP75 and mAR100, then AP, AP50, AR100 and boxes per class ('-': no boxes
    of that class in the ground truth)."""
    head = "  ".join([f"images={report.get('images', '?')}", f"boxes={report.get('boxes', '?')}"]
                     + [f"{k}={_score(report.get(k), 0)}" for k in ("mAP", "mAP50", "mAP75", "mAR100")])
    rows = report["per_class"]
    shown = rows[:max_classes]
    width = max([5] + [len(str(r["class"])) for r in shown])
    out = [head, "", f"{'class':>{width}}  {'AP':>6}  {'AP50':>6}  {'AR100':>6}  {'boxes':>6}", ""]
    out += [f"{r['class']:>{width}}  {_score(r.get('AP'))}  {_score(r.get('AP50'))}  {_score(r.get('AR100'))}  "
            f"{r.get('n_boxes', 0):>6d}" for r in shown]
    if len(rows) > len(shown):
        out.append(f"{'':>{width}}  ... {len(rows) - len(shown)} more classes not shown "
                   f"(max_classes={max_classes}; the JSON report has all)")
    if report.get("box_confusion"):
        out += ["", box_confusion_line(report["box_confusion"])]
    if report.get("note"):
        out += ["", f"note: {report['note']}"]
    return "\n".join(out)


def box_confusion_line(confusion: dict) -> str:
    """The box confusion matrix in one line: objects found as their class, as another, missed; false boxes."""
    m = np.asarray(confusion["matrix"], np.int64)
    k = len(m) - 1
    right = int(np.trace(m[:k, :k]))
    return (f"objects: {right} detected as their class, {int(m[:k, :k].sum()) - right} as another class, "
            f"{int(m[:k, k].sum())} missed; {int(m[k, :k].sum())} detections on no object "
            f"(IoU >= {confusion['iou']:g}, score >= {confusion['min_score']:g}; confusion_matrix.csv)")


def format_class_report(report: dict, max_classes: int = 50) -> str:
    """One class per sample: the headline, a row per class, macro and weighted averages."""
    rows = report["per_class"]
    shown = rows[:max_classes]
    total_support = sum(r["support"] for r in rows)
    footer = [("macro avg", report["macro"]), ("weighted avg", report["weighted"])]
    width = max([len("weighted avg")] + [len(r["class"]) for r in shown])
    line = lambda name, m, support: (  # noqa: E731
        f"{name:>{width}}  {m['precision']:>9.4f}  {m['recall']:>9.4f}  {m['f1']:>9.4f}  {support:>9d}")
    out = [_headline(report), "",
           f"{'class':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}", ""]
    out += [line(r["class"], r, r["support"]) for r in shown]
    if len(rows) > len(shown):
        out.append(f"{'':>{width}}  ... {len(rows) - len(shown)} more classes not shown "
                   f"(max_classes={max_classes}; the JSON report has all)")
    out.append("")
    out += [line(name, m, total_support) for name, m in footer]
    return "\n".join(out)


FORMATS = {"multilabel": format_multilabel_report}  # a report's "kind" → its text; no kind: format_class_report


def format_selective(report: dict) -> list[str]:
    """Calibration before/after and the accuracy at 90 % and 80 % coverage, a line each."""
    lines = []
    cal = report.get("calibration")
    if cal:
        b, a = cal["before"], cal["after"]
        how = f"temperature {cal['temperature']:.3f}" if cal["method"] == "temperature" else "not calibrated"
        if cal["method"] == "temperature-per-class":  # multilabel
            how = f"a temperature per class, mean {cal['temperature']:.3f}"
        lines.append(f"calibration ({how}): ECE {b['ece']:.4f} → {a['ece']:.4f}, adaptive ECE "
                     f"{b['adaptive_ece']:.4f} → {a['adaptive_ece']:.4f}, NLL {b['nll']:.4f} → {a['nll']:.4f}, "
                     f"Brier {b['brier']:.4f} → {a['brier']:.4f}")
    bias = (cal or {}).get("bias") or {}
    if bias.get("verdict"):
        how = "with its temperature" if cal["method"] != "none" else "and it has no fitted temperature"
        lines.append(f"note: on these images the model is {bias['verdict']} {how}: mean confidence "
                     f"{bias['mean_confidence']:.3f} against accuracy {bias['accuracy']:.3f}"
                     + (f" ({cal['reason']})" if cal.get("reason") else ""))
    rc = report.get("risk_coverage")
    if rc:
        lines.append(f"selective: accuracy {rc['accuracy_at_90'] * 100:.2f}% at 90% coverage (min confidence "
                     f"{rc['min_confidence_at_90']:.3f}), {rc['accuracy_at_80'] * 100:.2f}% at 80% "
                     f"({rc['min_confidence_at_80']:.3f})")
    return lines


# ----------------------------------------------------------------------------- files


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_confusion_csv(report: dict, path: PathLike) -> None:
    """Header `true\\pred,<class...>`, then one row per true class of counts (boxes: `box_confusion`'s
    matrix, whose last row and column are the background)."""
    if "box_confusion" in report:
        names, matrix = report["box_confusion"]["names"], report["box_confusion"]["matrix"]
    else:
        names, matrix = class_names_of(report), report["confusion_matrix"]
    rows = [["true\\pred", *names]]
    rows += [[name, *counts] for name, counts in zip(names, matrix)]
    write_text(path, _csv_text(rows))


def write_per_class_csv(report: dict, path: PathLike) -> None:
    """Header `class,precision,recall,f1,support` (multi-label: `class,ap,auroc,precision,recall,f1,threshold,
    support`; boxes: `class,AP,AP50,AR100,n_boxes,n_images`, empty where a class has no boxes), one row per class."""
    keys = list(report["per_class"][0]) if report["per_class"] else ["class", "precision", "recall", "f1", "support"]
    rows = [keys] + [[r[k] for k in keys] for r in report["per_class"]]
    write_text(path, _csv_text(rows))
