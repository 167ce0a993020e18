"""Predict a labelled split and score it: the one way `ocula evaluate`, the export gate, int8
calibration and the error gallery choose, batch and score labelled images.

    split = labelled_split(clf, "data/")          # test split, else the held-out val, else all of it
    report = score_split(clf, split)              # the task's report + data, split and skipped files
    for x, y, idx, *bad in split_batches(clf, split.samples, 64): ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ocula.data.samples import FileSamples, TensorSamples, adapt_channels
from ocula.errors import OculaError
from ocula.modality.sources import resolve_data


@dataclass
class LabelledSplit:
    samples: object  # FileSamples or TensorSamples, labels index `classes`
    classes: list[str]  # the data's class names
    name: str  # which split: "test", "val", "val (held out during training)", "all", or as asked
    mapping: np.ndarray  # data class index → model class index
    skipped: list = field(default_factory=list)  # (path, reason) the data scan skipped

    def evenly_spaced(self, limit: Optional[int]) -> "LabelledSplit":
        """At most `limit` samples, evenly spaced (not the first N: built-in splits are often ordered by class)."""
        if not limit or len(self.samples) <= limit:
            return self
        picked = self.samples.subset(np.linspace(0, len(self.samples) - 1, limit).round().astype(int).tolist())
        return LabelledSplit(picked, self.classes, f"{self.name}, {limit} evenly spaced", self.mapping, self.skipped)


def labelled_split(clf, data: str, split: Optional[str] = None, fidelity: bool = False) -> LabelledSplit:
    """Which labelled images to score: `split` if given; else the data's test split; else its val split;
    else, when the data is the one the model was trained on, its recorded validation split (never
    training images); else all of it. `fidelity`: the caller compares two versions of the model (the export
    gate), not the model with the truth, so a model trained on every image (cross-fitted) may be checked on them."""
    trained_on = clf.meta.get("data", {})
    task = clf.task.reads_labels_as  # a multi-label model reads one label per sample as a set of one
    splits = resolve_data(data, val_fraction=0.0, seed=0, require_train=False, modality=clf.modality, task=task)
    if split:
        samples, name = splits.split(split), split
    elif splits.test is not None:
        samples, name = splits.test, "test"
    elif splits.val is not None:
        samples, name = splits.val, "val"
    elif trained_on.get("source") and trained_on["source"] == splits.source:
        info = clf.meta.get("split", {})
        splits = resolve_data(data, val_fraction=info.get("val_fraction", 0.1), seed=info.get("seed", 0),
                              require_train=False, modality=clf.modality, task=task)
        if splits.val is None and not fidelity:
            cross_fit = clf.meta.get("cross_fit")
            raise OculaError(f"{data}: the model was trained on all of it" + (f" ({cross_fit}, RUN/cross_fit.json)"
                             if cross_fit else "") + "; pass a separate test set")
        samples, name = (splits.val, "val (held out during training)") if splits.val is not None else \
            (splits.train, "all (trained on: fit for a fidelity check, not for accuracy)")
    else:
        samples, name = splits.train, "all"
    return LabelledSplit(samples, splits.classes, name, map_classes(splits.classes, clf.classes),
                         list(splits.skipped))


def map_classes(data_classes: list[str], model_classes: list[str]) -> np.ndarray:
    """Index in the data's class list → index in the model's, by name."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise OculaError(f"the data has classes the model does not know: {shown} "
                         f"(model classes: {', '.join(model_classes[:10])})")
    return np.array([model_classes.index(c) for c in data_classes], dtype=np.int64)


def split_batches(clf, samples, batch_size: int, workers: Optional[int] = None):
    """Eval batches in the model's contract: (x, y, idx) from RAM, (x, y, idx, bad) from files."""
    if isinstance(samples, TensorSamples):
        return clf.modality.tensor_loader(adapt_channels(samples, clf.contract.channels), clf.contract, batch_size,
                                          train=False)
    return clf.file_batches(samples, batch_size, workers)


@dataclass
class SplitPredictions:
    probs: np.ndarray  # (N, K) what the predictor answers: the task's calibrated probabilities (mean over TTA views)
    logits: np.ndarray  # (N, K) the raw logits of the plain view, for calibration measures
    labels: np.ndarray  # (N,) as the data numbers its classes
    skipped: list  # (path, reason)
    index: Optional[np.ndarray] = None  # (N,) the sample of each row (unreadable files leave no row)


def predict_split(clf, samples, batch_size: int = 64, workers: Optional[int] = None) -> SplitPredictions:
    probs, logits, labels, skipped, index = [], [], [], [], []
    for batch in split_batches(clf, samples, batch_size, workers):
        if len(batch) == 4:
            skipped += batch[3]
        if batch[0] is None:
            continue
        raw = clf.logits(batch[0])
        logits.append(raw)
        probs.append(clf.probabilities(batch[0], logits=raw))
        labels.append(batch[1])
        index.append(torch.as_tensor(batch[2]).reshape(-1))
    if not probs:
        raise OculaError("no readable images to evaluate")
    return SplitPredictions(torch.cat(probs).numpy(), torch.cat(logits).numpy(), torch.cat(labels).numpy(), skipped,
                            torch.cat(index).numpy())


def score_split(clf, split: LabelledSplit, batch_size: int = 64, workers: Optional[int] = None) -> dict:
    """The task's report on a labelled split (with its calibration before and after, and the
    risk–coverage curve where the task has them), which split, and every file skipped on the way."""
    found = predict_split(clf, split.samples, batch_size, workers)
    labels = model_labels(split.mapping, found.labels, len(clf.classes))
    report = clf.task.score(labels, found.probs, clf.classes)
    report.update(clf.task.selective_report(labels, found.probs, found.logits))
    names = sample_names(split.samples, found.index)
    report.update(clf.task.evaluation_extras(labels, found.probs, clf.classes, names))  # the pictures' inputs
    report.update(split=split.name, tta=bool(clf.tta), skipped=skipped_list(split.skipped + found.skipped))
    return report


def sample_names(samples, index: np.ndarray) -> list:
    """The path (or name) of each scored row's sample; None where an in-memory sample has no name."""
    names = samples.paths if isinstance(samples, FileSamples) else samples.names
    return [names[i] if names is not None else None for i in index.tolist()]


def model_labels(mapping: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as the data numbers its classes → as the model does: indices (N,) mapped, multi-hot (N, K_data)
    columns moved to the model's (N, K), boxes' class column renumbered."""
    if labels.ndim == 1:
        return mapping[labels]
    if labels.ndim == 3:  # boxes (N, M, 5): the class column, padding (−1) kept
        out = labels.copy()
        cls = labels[..., 0].astype(np.int64)
        out[..., 0] = np.where(cls >= 0, mapping[cls.clip(0)], -1)
        return out
    out = np.zeros((labels.shape[0], num_classes), dtype=labels.dtype)
    out[:, mapping] = labels
    return out


def skipped_list(pairs) -> list[dict]:
    """(path, reason) pairs → [{"path", "reason"}], each file once, in order."""
    seen, out = set(), []
    for path, reason in pairs:
        if path not in seen:
            seen.add(path)
            out.append({"path": path, "reason": reason})
    return out
