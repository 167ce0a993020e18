"""The report's pictures as PNG bytes: existing run files as they are, missing charts drawn from data.

matplotlib is optional (the `plots` extra): without it a chart that has no PNG on disk is None and the
page says so.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Optional

from ocula.evaluation.plots import plot_confusion_matrix, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def picture(spec) -> Optional[bytes]:
    """A Section image spec → PNG bytes: a path is read; ("kind", *args) is drawn; bytes pass through."""
    if isinstance(spec, bytes):
        return spec if spec.startswith(PNG_MAGIC) else None
    if isinstance(spec, Path):
        try:
            data = spec.read_bytes()
        except OSError:
            return None
        return data if data.startswith(PNG_MAGIC) else None
    kind, *args = spec
    return {"training_curves": training_curves, "confusion_matrix": confusion_matrix,
            "reliability": reliability_diagram}[kind](*args)


def _via_file(draw) -> Optional[bytes]:
    with tempfile.TemporaryDirectory(prefix="ocula-report-") as tmp:
        out = Path(tmp) / "chart.png"
        if draw(out) is None or not out.is_file():
            return None
        return out.read_bytes()


def training_curves(metrics_csv: Path) -> Optional[bytes]:
    return _via_file(lambda out: plot_training_curves(metrics_csv, out))


def confusion_matrix(report: dict) -> Optional[bytes]:
    return _via_file(lambda out: plot_confusion_matrix(report, report.get("class_names"), out))


def reliability_diagram(before: dict, after: Optional[dict] = None) -> Optional[bytes]:
    """Accuracy against confidence per bin (bars), the diagonal of perfect calibration, bin counts below."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="#888", linestyle="--", linewidth=1, label="perfect calibration")
    for table, colour, name in ((before, "#3465a4", "before"), (after, "#cc5500", "after")):
        if not table:
            continue
        edges = table["edges"]
        width = (edges[1] - edges[0]) * (0.45 if after else 0.9)
        shift = (-width / 2 if name == "before" else width / 2) if after else 0.0
        centres = [(lo + hi) / 2 + shift for lo, hi in zip(edges[:-1], edges[1:])]
        acc = [a if a is not None else 0.0 for a in table["accuracy"]]
        top.bar(centres, acc, width=width, color=colour, alpha=0.75, label=f"accuracy ({name})")
        conf = [(c, x) for c, x in zip(table["confidence"], centres) if c is not None]
        top.scatter([x for _, x in conf], [c for c, _ in conf], color=colour, marker="_", s=120, zorder=3)
        bottom.bar(centres, table["count"], width=width, color=colour, alpha=0.75)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy in bin")
    top.legend(loc="upper left", fontsize=8)
    top.set_title("reliability diagram (marks: mean confidence)", fontsize=10)
    bottom.set_xlabel("top-1 confidence")
    bottom.set_ylabel("images")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
