"""Sections about the run itself: summary and model card, learning curves, per-class table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ocula.config import TrainConfig
from ocula.evaluation.report import is_detection_report
from ocula.names import display_name
from ocula.report.files import RENAMED, Reader, Section, config_value
from ocula.run_dir import EvalDir, RunDir, best_score, monitor_in, monitor_label


# ---------------------------------------------------------------------- summary and model card
def summary_section(reader: Reader, evaluation: Optional[dict], summary: Optional[dict] = None) -> Section:
    run = reader.run_dir
    config, model = reader.json(run.config) or {}, reader.json(run.model) or {}
    summary = summary or reader.json(run.summary)
    data = reader.json(run.data) or {}
    split, env = reader.json(run.split) or {}, reader.json(run.environment)
    classes = model.get("classes") or data.get("classes") or []
    flat = flatten(config)
    out = {
        "data": {"source": data.get("source") or model.get("data", {}).get("source") or config_value(flat, "data"),
                 "classes": class_counts(classes, evaluation), "splits": split.get("counts") or {},
                 "input_reason": (data.get("input") or {}).get("reason") or model.get("data", {}).get("input"),
                 "flips": {k: v.get("reason") for k, v in (data.get("flips") or {}).items()
                           if isinstance(v, dict) and v.get("reason") and v.get("decided_by") != "not used"},
                 "skipped": len(data.get("skipped") or [])},
        "model": {"arch": model.get("arch") or {}, "task": model.get("task"), "weights": weights_info(run)},
        "contract": model.get("contract") or data.get("contract") or {},
        "recipe": config_value(flat, "recipe"),
        "config": flat, "changed": changed_from_defaults(flat),
        "versions": {**(model.get("versions") or {}), **{k: (env or {}).get(k) for k in
                                                          ("timm", "torchvision", "python") if (env or {}).get(k)}},
        "training": training_info(summary, flat),
        "hardware": env,
    }
    if summary is None:
        reader.notes.append("no summary.json: training has not finished (or was interrupted)")
    return Section("summary", "Run summary and model card", data=out)


def flatten(obj: dict, prefix: str = "") -> dict:
    """Nested config sections → dotted keys ({"optim": {"lr": 1}} → {"optim.lr": 1}); lists stay whole."""
    flat: dict = {}
    for key, value in (obj or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "model_kwargs":
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def changed_from_defaults(flat: dict) -> dict:
    """The settings whose value differs from TrainConfig's defaults (all of them when defaults are unknown)."""
    try:
        defaults = flatten(TrainConfig().to_dict())
    except Exception:  # noqa: BLE001 - a config layout this report does not know: show everything
        return dict(flat)
    skip, unknown = {"data", "out", "resume", "source"}, object()
    plain = {RENAMED.get(k, k): k for k in flat}  # the run's key in the current layout → as saved
    current = {k.split(".")[-1]: k for k in defaults}
    changed = {}
    for key, saved in plain.items():
        name = key if key in defaults else current.get(key.split(".")[-1], key)
        if key.split(".")[-1] not in skip and defaults.get(name, unknown) != flat[saved]:
            changed[saved] = flat[saved]
    return changed


def class_counts(classes: list, evaluation: Optional[dict]) -> list[dict]:
    support = {row.get("class"): row.get("support", row.get("n_images"))  # boxes: the images showing the class
               for row in (evaluation or {}).get("per_class") or []}
    return [{"name": c, "evaluated": support.get(c)} for c in classes]


def add_class_counts(card: Section, counts: dict) -> None:
    """Images per class and split, as the audit counted them ({split: {class: n}}), into the model card."""
    splits = [s for s in counts if s != "all" and isinstance(counts[s], dict)]
    card.data["data"]["count_splits"] = splits
    for row in card.data["data"]["classes"]:
        row["splits"] = {s: counts[s].get(row["name"]) for s in splits}


def weights_info(run: RunDir) -> dict:
    """Size and parameter count of weights/best.safetensors, read from its header only."""
    path = RunDir(run).weights("best")
    if not path.is_file():
        return {}
    info = {"file": path.relative_to(RunDir(run).path).as_posix(), "size_mb": path.stat().st_size / 1e6}
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        numel = [_numel(v["shape"]) for k, v in header.items() if k != "__metadata__" and not k.endswith(buffers)]
        info["params"] = sum(numel)
    except (OSError, ValueError, KeyError, TypeError, MemoryError, OverflowError):
        info["params"] = None
    return info


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def training_info(summary: Optional[dict], flat: dict) -> dict:
    if not summary:
        return {}
    final = summary.get("final") or {}
    epochs = config_value(flat, "epochs")
    monitor, best = best_score(summary)
    return {"epochs_run": summary.get("epochs_run"), "epochs": epochs, "best_epoch": summary.get("best_epoch"),
            "best_score": best, "best_label": "best " + monitor_label(monitor),
            "train_time_s": summary.get("train_time_s"),
            "img_per_s": final.get("train_img_per_s"), "precision": summary.get("precision"),
            "world_size": summary.get("world_size"), "skipped_files": summary.get("skipped_files")}


# ---------------------------------------------------------------------- learning curves
def curves_section(reader: Reader) -> Section:
    title = "Learning curves"
    run = reader.run_dir
    rows = reader.csv(run.metrics_csv)
    if not rows:
        return Section("curves", title, ran=False, reason=f"no {run.metrics_csv.name}: no epoch has finished yet")
    png = run.curves_png
    images = {"curves": png} if png.is_file() else {"curves": ("training_curves", run.metrics_csv)}
    monitor = monitor_in(rows[0])  # val/accuracy, val/mAP, or an old run's val_acc
    columns = [c for c in ("epoch", "train_loss", "train_acc", "val_loss", monitor, "val_top5", "lr", "epoch_s")
               if c in rows[0]]
    return Section("curves", title, data={"columns": columns, "rows": rows, "monitor": monitor}, images=images)


# ---------------------------------------------------------------------- per-class table and confusion matrix
def evaluation_section(reader: Reader, eval_dir: Optional[Path], report: Optional[dict]) -> Section:
    title = "Evaluation: per-class table and confusion matrix"
    if report is None:
        return Section("evaluation", title, ran=False,
                       reason=f"no evaluation in the run: `ocula evaluate {display_name(reader.run)} DATA`")
    if is_detection_report(report):
        return box_evaluation_section(reader, eval_dir, report)
    names = report.get("class_names") or [r.get("class") for r in report.get("per_class") or []]
    png = EvalDir(eval_dir).confusion_png
    matrix = report.get("confusion_matrix") or []
    images = {"confusion": png} if png.is_file() else (
        {"confusion": ("confusion_matrix", report)} if matrix else {})
    data = {"dir": reader.rel(eval_dir), "source": report.get("data"), "split": report.get("split"),
            "headline": {k: report.get(k) for k in ("n", "accuracy", "top5", "balanced_accuracy", "ece", "nll")
                         if report.get(k) is not None},
            "key": ("accuracy", report.get("accuracy"), "pct"),  # the model card's headline: name, value, format
            "macro": report.get("macro") or {}, "weighted": report.get("weighted") or {},
            "per_class": report.get("per_class") or [], "confused": most_confused(matrix, names),
            "skipped": len(report.get("skipped") or [])}
    return Section("evaluation", title, data=data, images=images)


def box_evaluation_section(reader: Reader, eval_dir: Path, report: dict) -> Section:
    """A COCO evaluation of boxes: mAP, mAP50, mAP75, AP per class, the PR curves at IoU 0.5 and the examples
    (EVAL/pr_curves.png, EVAL/detections.png, as `ocula evaluate` wrote them)."""
    out, again = EvalDir(eval_dir), f"`ocula evaluate {display_name(reader.run)} DATA`"
    confusion = report.get("box_confusion")  # evaluations written before it have none
    images = {name: png for name, png in (("pr", out.pr_curves_png), ("examples", out.detections_png),
                                          ("confusion", out.confusion_png)) if png.is_file()}
    data = {"boxes": True, "dir": reader.rel(eval_dir), "source": report.get("data"), "split": report.get("split"),
            "headline": {k: report.get(k) for k in ("images", "boxes", "detections", "mAP", "mAP50", "mAP75",
                                                     "mAR100") if k in report},
            "key": ("mAP", report.get("mAP"), "num"),
            "per_class": report.get("per_class") or [], "note": report.get("note"),
            "skipped": len(report.get("skipped") or []),
            "pr_reason": f"no {out.pr_curves_png.name} in the evaluation folder: {again} draws it",
            "examples_reason": f"no {out.detections_png.name} in the evaluation folder: {again} draws it",
            "confusion_reason": f"no {out.confusion_png.name} in the evaluation folder: {again} draws it",
            "confused": most_confused(confusion["matrix"], confusion["names"]) if confusion else []}
    return Section("evaluation", "Evaluation: mAP, AP per class, PR curves and examples", data=data, images=images)


def most_confused(matrix: list, names: list, top: int = 8) -> list[dict]:
    pairs = [(n, i, j) for i, row in enumerate(matrix) for j, n in enumerate(row) if i != j and n]
    pairs.sort(key=lambda t: -t[0])
    label = lambda k: names[k] if k < len(names) else str(k)  # noqa: E731
    return [{"true": label(i), "predicted": label(j), "count": n} for n, i, j in pairs[:top]]
