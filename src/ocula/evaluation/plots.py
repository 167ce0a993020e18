"""PNG plots of a confusion matrix and of training curves; matplotlib is optional.

Figures are built with `matplotlib.figure.Figure` rather than pyplot: no global backend switch, no
display needed, and no pyplot registry holding figures, so repeated calls in a long run (or a
server) do not grow memory. Without matplotlib each function returns None and writes nothing.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ocula.evaluation.metrics import to_numpy
from ocula.evaluation.report import PathLike, class_names_of
from ocula.io import atomic_path, write_text
from ocula.run_dir import is_monitor

ANNOTATE_MAX = 20  # write the value in each cell up to this many classes
TICKS_MAX = 60  # beyond this many classes tick labels overlap into a black band


def _figure(figsize):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path: PathLike) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)  # the temp name has no .png, so say it
    return str(path)


# ----------------------------------------------------------------------------- confusion matrix


def _confusion_inputs(report_or_cm, class_names) -> tuple[np.ndarray, list[str]]:
    if isinstance(report_or_cm, dict):
        cm = np.asarray(report_or_cm["confusion_matrix"], dtype=np.int64)
        names = class_names if class_names is not None else class_names_of(report_or_cm)
    else:
        cm = to_numpy(report_or_cm).astype(np.int64)
        names = class_names if class_names is not None else [str(i) for i in range(len(cm))]
    return cm, [str(n) for n in names]


def _annotate(ax, values: np.ndarray, normalize: bool) -> None:
    top = 1.0 if normalize else max(values.max(), 1)  # the colour scale's maximum
    threshold = top / 2  # white text on dark cells
    for (i, j), v in np.ndenumerate(values):
        text = f"{v:.2f}" if normalize else f"{int(v)}"
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="white" if v > threshold else "black")


def plot_confusion_matrix(report_or_cm, class_names: Optional[Sequence[str]] = None,
                          path: PathLike = "confusion_matrix.png",
                          normalize: bool = True, title: Optional[str] = None) -> Optional[str]:
    """Heatmap (rows = true, cols = predicted) saved as PNG; returns the path, or None without
    matplotlib. `normalize` divides each row by its support so cells read as recall shares. `title`
    replaces the default one, which names the accuracy."""
    cm, names = _confusion_inputs(report_or_cm, class_names)
    k = len(cm)
    side = min(max(4.0, 0.45 * k + 2.5), 40.0)  # inches; capped so 1000 classes stays plottable
    fig = _figure((side + 1.0, side))
    if fig is None:
        return None
    support = cm.sum(axis=1, keepdims=True)
    values = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0) if normalize else cm
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8)
    if k <= TICKS_MAX:
        tilt = k > 5 or max(len(n) for n in names) > 4  # long names collide when horizontal
        ax.set_xticks(range(k), names, rotation=45 if tilt else 0, ha="right" if tilt else "center",
                      rotation_mode="anchor")
        ax.set_yticks(range(k), names)
    if k <= ANNOTATE_MAX:
        _annotate(ax, values, normalize)
    accuracy = np.trace(cm) / cm.sum() if cm.sum() else 0.0
    kind = "row-normalised" if normalize else "counts"
    ax.set(xlabel="predicted", ylabel="true")
    # a figure title, not an axes title: a long one would run into the colour bar
    fig.suptitle(title or f"Confusion matrix ({kind}), accuracy {accuracy:.4f}")
    return _save(fig, path)


# ----------------------------------------------------------------------------- training curves


def _to_float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):  # empty cell, "nan", missing column in a short row
        return math.nan


def read_metrics_csv(path: PathLike) -> dict[str, np.ndarray]:
    """Columns of a CSV with a header as float arrays; blank or non-numeric cells become NaN."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0].keys()) if rows else []
    return {c: np.array([_to_float(r.get(c)) for r in rows]) for c in columns if c is not None}


def _groups(columns: dict[str, np.ndarray]) -> list[tuple[str, list[str]]]:
    """Which columns go on which axes; columns with no finite value are skipped."""
    def is_lr(c):
        return c == "lr" or c.startswith("lr") or c.endswith("_lr")

    def is_acc(c):  # and the monitor however it is named (val/mAP)
        return "acc" in c or c.split("_")[-1].startswith("top") or is_monitor(c)

    usable = [c for c, v in columns.items() if c != "epoch" and np.isfinite(v).any()]
    scores = [c for c in usable if is_acc(c) and "loss" not in c]
    named = "accuracy" if any("acc" in c for c in scores) or not scores else " / ".join(c.split("/")[-1] for c in scores)
    groups = [("loss", [c for c in usable if "loss" in c]),
              (named, scores),  # a detector's run has mAP and no accuracy
              ("learning rate", [c for c in usable if is_lr(c)])]
    return [(label, cols) for label, cols in groups if cols]


def plot_training_curves(metrics_csv_path: PathLike, out_png: PathLike) -> Optional[str]:
    """Loss, accuracy and learning-rate columns of a training CSV against epoch, one axes each.

    Missing columns are skipped; each series plots only its finite points (validation every few
    epochs still draws a line) with markers, so a one-row CSV shows dots. Returns the path, or
    None without matplotlib.
    """
    columns = read_metrics_csv(metrics_csv_path)
    n = len(next(iter(columns.values()))) if columns else 0
    x = columns.get("epoch", np.arange(1, n + 1, dtype=float))
    groups = _groups(columns)
    fig = _figure((6.5, 2.6 * max(len(groups), 1) + 0.4))
    if fig is None:
        return None
    if not groups:
        fig.text(0.5, 0.5, f"no loss / accuracy / lr values in {Path(metrics_csv_path).name}",
                 ha="center", va="center")
        return _save(fig, out_png)
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, cols) in zip(axes, groups):
        for c in cols:
            ok = np.isfinite(columns[c]) & np.isfinite(x)
            ax.plot(x[ok], columns[c][ok], marker="o", markersize=3, label=c)
        values = np.concatenate([columns[c][np.isfinite(columns[c])] for c in cols])
        if label == "learning rate" and values.min() > 0 and values.max() / values.min() > 100:
            ax.set_yscale("log")  # warm-up and cosine tails span decades
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("epoch" if "epoch" in columns else "row")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)  # no "epoch 2.5" ticks
    axes[0].set_title(f"Training curves: {Path(metrics_csv_path).name}")
    return _save(fig, out_png)


# ----------------------------------------------------------------------------- calibration
def plot_reliability(calibration: dict, path: PathLike) -> Optional[str]:
    """Reliability diagram before and after calibration: accuracy per confidence bin against the
    diagonal, with each bin's share of samples below."""
    fig = _figure((8.5, 4.6))
    if fig is None:
        return None
    axes = fig.subplots(2, 2, sharex=True, height_ratios=(3, 1))
    for col, key in enumerate(("before", "after")):
        part = calibration[key]
        table = part["reliability"]
        edges = np.asarray(table["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        acc = np.array([a if a is not None else np.nan for a in table["accuracy"]])
        conf = np.array([c if c is not None else np.nan for c in table["confidence"]])
        top, bottom = axes[0, col], axes[1, col]
        top.bar(centres, acc, width=width * 0.92, color="#4c72b0", label="accuracy")
        top.scatter(centres, conf, marker="_", s=120, color="#c44e52", linewidths=2, label="mean confidence")
        top.plot([0, 1], [0, 1], color="#888", linestyle="--", linewidth=1)
        t = f", T={calibration['temperature']:.3g}" if key == "after" and calibration.get("method") != "none" else ""
        top.set_title(f"{key} calibration{t}: ECE {part['ece']:.3f}, NLL {part['nll']:.3f}", fontsize=10)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        counts = np.asarray(table["count"], dtype=float)
        bottom.bar(centres, counts / max(counts.sum(), 1), width=width * 0.92, color="#777")
        bottom.set_xlabel("confidence (top-1 probability)")
        bottom.set_ylabel("share")
        top.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_risk_coverage(curves: dict, path: PathLike) -> Optional[str]:
    """Accuracy against coverage (answering only the most confident share), one line per curve."""
    fig = _figure((5.5, 4.0))
    if fig is None:
        return None
    ax = fig.subplots()
    for name, rc in curves.items():
        cov = [r["coverage"] for r in rc["curve"]]
        ax.plot(cov, [r["accuracy"] for r in rc["curve"]], label=f"{name} (AURC {rc['aurc']:.4f})")
    for c in (0.8, 0.9):
        ax.axvline(c, color="#bbb", linewidth=0.8, linestyle=":")
    ax.set_xlabel("coverage (share of samples answered)")
    ax.set_ylabel("accuracy of the answered")
    ax.set_xlim(0, 1.01)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_risk_coverage_csv(rc: dict, path: PathLike) -> None:
    lines = ["coverage,accuracy,risk,min_confidence"]
    lines += [f"{r['coverage']:.6f},{r['accuracy']:.6f},{r['risk']:.6f},{r['min_confidence']:.6f}" for r in rc["curve"]]
    write_text(path, "\n".join(lines) + "\n")


def plot_pr_curves(curves: list[dict], path: PathLike) -> Optional[str]:
    """Multi-label: every class's precision-recall curve (`evaluation.multilabel.pr_curves`) in one PNG,
    its AP in the legend."""
    fig = _figure((6.5, 5))
    if fig is None:
        return None
    ax = fig.subplots()
    for c in curves:
        ap = "-" if c["ap"] is None else f"{c['ap']:.3f}"
        ax.step(c["recall"], c["precision"], where="post", lw=1.2, label=f"{c['class']} (AP {ap})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall per class")
    ax.legend(fontsize=7, loc="lower left", ncol=1 + len(curves) // 12)
    return _save(fig, path)
