"""`audit(data, ...)`: every check over one dataset, a report, and a cleaned manifest on request.

    result = ocula.audit.audit("data/", folds=5, out="audit/")
    result.counts["label-issue"], result.findings[0].to_dict()
    result.write_clean("clean.csv")  # the user's files are never modified, moved or deleted
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ocula.audit import boxes, duplicates, integrity, labels, outliers, stats
from ocula.audit.findings import Finding, count_by_category, dropped_ids
from ocula.audit.inventory import Inventory, load_inventory
from ocula.audit.report import write_report
from ocula.errors import OculaError
from ocula.io import write_text


@dataclass
class AuditResult:
    source: str
    classes: list[str]
    findings: list[Finding]
    stats: dict
    counts: dict  # per category, plus the checks' own numbers
    inventory: Inventory = field(repr=False)
    timings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # checks skipped and why; data warnings
    out: Optional[str] = None
    out_of_fold: Optional[labels.OutOfFold] = field(default=None, repr=False)  # probs and embeddings

    def by_category(self, category: str) -> list[Finding]:
        return [f for f in self.findings if f.category == category]

    def flagged(self, exclude: Sequence[str] = ()) -> set[str]:
        """Sample ids a cleaned manifest leaves out."""
        return dropped_ids([f for f in self.findings if f.category not in exclude])

    def to_dict(self) -> dict:
        return {"source": self.source, "classes": self.classes, "counts": self.counts, "stats": self.stats,
                "timings": self.timings, "notes": self.notes, "findings": [f.to_dict() for f in self.findings]}

    def write_clean(self, path, exclude: Sequence[str] = ()) -> int:
        """Write `path,label,split` rows of every sample not flagged; → rows written.

        `exclude`: categories whose findings should not remove anything (e.g. ("outlier",)).
        File paths are absolute; in-memory datasets list their sample names instead.
        """
        flagged = self.flagged(exclude)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label", "split"])
        rows = 0
        for ref in self.inventory.refs:
            if ref.id in flagged or ref.label is None:
                continue
            writer.writerow([ref.path or ref.id, ref.label, ref.split])
            rows += 1
        write_text(path, buf.getvalue())
        return rows


def audit(data, *, model: Optional[str] = None, folds: int = 5, epochs: Optional[int] = None,
          img_size: Optional[int] = None, splits: Optional[Sequence[str]] = None, out: Optional[str] = None,
          seed: int = 0, limits: Optional[integrity.SizeLimits] = None,
          near: Optional[duplicates.NearDuplicateParams] = None, outlier_z: float = 6.0,
          label_max_given: Optional[float] = None,
          workers: Optional[int] = None, train_options: Optional[dict] = None) -> AuditResult:
    """Audit a dataset: integrity, duplicates and leakage, statistics, label errors, outliers; for boxes (COCO,
    YOLO) the reader's problems and suspicious boxes (`audit.boxes`) instead of label errors and outliers.

    `data`: built-in name, folder, CSV manifest or a DatasetSplits. `folds=0` skips the checks
    that train models (label errors, outliers). `out`: write report.md, report.html, issues.json.
    `label_max_given`: a label issue needs p(given label) below this (default 0.5 / classes).
    """
    limits, near = limits or integrity.SizeLimits(), near or duplicates.NearDuplicateParams()
    timings: dict = {}
    t = time.perf_counter()
    inv = load_inventory(data, splits)
    findings, notes = [], list(inv.data.warnings)
    if inv.kind == "files":
        infos = integrity.inspect_files([r.path for r in inv.refs], limits, duplicates.small_gray, workers)
        # boxes: the reader's problems, of annotations as well as of files, one finding each
        skipped = boxes.problem_findings if inv.boxes is not None else integrity.skipped_findings
        findings += skipped(inv.skipped, inv.root)
        findings += integrity.file_findings(infos, inv.refs)
        findings += integrity.size_findings(infos, inv.refs, limits)
        usable = np.array([i.usable for i in infos], bool)
        digests = [i.sha1 for i in infos]
        small = np.stack([i.small if i.small is not None else np.zeros((32, 32), np.uint8) for i in infos])
        sizes = [(i.width, i.height) for i in infos]
        image_stats = stats.image_stats(sizes, [i.mode for i in infos], [i.format for i in infos],
                                        [i.nbytes for i in infos])
    else:
        usable, digests, small, sizes, image_stats = _tensor_features(inv)
    if inv.boxes is not None:
        findings += boxes.box_findings(inv.refs, inv.boxes, [s if ok else (0, 0) for s, ok in zip(sizes, usable)],
                                       inv.classes)
    timings["integrity_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    dup_findings, dup_counts = duplicates.duplicate_findings(inv.refs, digests, small, usable, near)
    findings += dup_findings
    timings["duplicates_s"] = round(time.perf_counter() - t, 2)

    counts = stats.class_counts(inv.labels if inv.label_sets is None else inv.label_sets,
                                [r.split for r in inv.refs], inv.classes)
    findings += stats.balance_findings(counts)
    extra, oof = {**dup_counts}, None
    if folds and inv.boxes is not None:
        notes.append(boxes.NOT_RUN)
    elif folds:
        t = time.perf_counter()
        label_part, info, oof = _label_checks(inv, usable, sizes, folds, model, epochs, img_size, seed, outlier_z,
                                         label_max_given, train_options or {}, notes)
        findings += label_part
        extra.update(info)
        timings["labels_s"] = round(time.perf_counter() - t, 2)
    else:
        notes.append("label and outlier checks off (folds=0)")
    result = AuditResult(inv.data.source or str(data), inv.classes, findings,
                         {"class_counts": counts, "images": image_stats, "samples": len(inv)},
                         {**count_by_category(findings), **extra}, inv, timings, notes, out,
                         oof)
    if out:
        write_report(result, out)
    return result


def _tensor_features(inv: Inventory):
    """In-memory data decodes by construction: hashes of the pixels, the small grey images, sizes."""
    import hashlib

    parts, digests = [], []
    for split in dict.fromkeys(s for s, _ in inv.positions):
        images = inv.data.split(split).images
        parts.append(duplicates.small_gray_tensors(images))
        flat = images.reshape(images.shape[0], -1).numpy()
        digests += [hashlib.sha1(row.tobytes()).hexdigest() for row in flat]
    small = np.concatenate(parts)
    _, c, h, w = inv.data.split(inv.positions[0][0]).images.shape
    sizes = [(w, h)] * len(inv)
    mode = "L" if c == 1 else "RGB"
    image_stats = stats.image_stats(sizes, [mode] * len(inv), [])
    return np.ones(len(inv), bool), digests, small, sizes, image_stats


def _label_checks(inv, usable, sizes, folds, model, epochs, img_size, seed, outlier_z, max_given, train_options,
                  notes):
    """Label errors and outliers from one K-fold run over the usable, labelled images."""
    labelled = inv.labels >= 0 if inv.label_sets is None else np.ones(len(inv), bool)  # an empty set is a label
    rows = np.flatnonzero(usable & labelled)
    options = labels.training_options(inv, len(rows), sizes, model=model, epochs=epochs, img_size=img_size,
                                      **train_options)
    try:
        oof = labels.out_of_fold(inv, rows, folds, options, seed)
    except OculaError as e:
        notes.append(f"label and outlier checks skipped: {e}")
        return [], {}, None
    found, engine = labels.label_findings(inv, oof, max_given)
    groups = inv.labels[rows] if inv.label_sets is None else np.zeros(len(rows), np.int64)  # sets: one group
    scores = outliers.outlier_scores(oof.embeddings, groups, oof.fold)
    found += outliers.outlier_findings([inv.refs[i] for i in rows], scores, min_score=outlier_z)
    info = {"label_model": options, "label_engine": engine, "out_of_fold_accuracy": round(oof.accuracy, 4),
            "label_train_s": round(oof.train_s, 1), "folds": folds}
    return found, info, oof
