"""The Python API; the CLI is a shell over these functions.

    run = ocula.train("data/", model="resnet18", epochs=5)
    clf = ocula.load(run.dir)
    clf.predict("cat.jpg", topk=3)
    report = ocula.evaluate(run.dir, "data_test/")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ocula.errors import OculaError
from ocula.inference.predictor import Classifier


@dataclass
class Run:
    dir: str
    summary: dict

    def load(self, device: str = "auto") -> Classifier:
        return Classifier.load(self.dir, device)


def train(data: str = "", *, callbacks=None, **overrides) -> Run:
    """Train a model; keywords are TrainConfig fields (see `ocula train --help`)."""
    from ocula.config import build_config
    from ocula.engine.trainer import Trainer, load_run_config

    resume = overrides.pop("resume", None)
    cfg = load_run_config(resume, **overrides) if resume else build_config(data, **overrides)
    from ocula.engine import distributed

    try:
        trainer = Trainer(cfg, callbacks=callbacks)
        summary = trainer.fit()
    finally:
        distributed.cleanup()
    return Run(str(trainer.run_dir), summary)


def load(path, device: str = "auto") -> Classifier:
    """A run directory or a .safetensors bundle → a Classifier."""
    return Classifier.load(path, device)


def predict(model, inputs, topk: int = 1, batch_size: int = 32, workers: Optional[int] = None):
    """Predict files, folders, globs or CSV manifests; yields Predictions (bad inputs carry .error)."""
    from ocula.inference.inputs import expand_inputs
    from ocula.inference.predictor import Prediction

    clf = model if isinstance(model, Classifier) else load(model)
    if clf.contract.frames:  # a video model: video files and frame folders are the inputs
        from ocula.video.dataset import expand_clip_inputs as expand
    else:
        expand = expand_inputs
    paths, missing = expand(inputs if isinstance(inputs, (list, tuple)) else [inputs])
    for item, reason in missing:
        yield Prediction(item, error=reason)
    if paths:
        yield from clf.predict_files(paths, topk=topk, batch_size=batch_size, workers=workers)


# ---------------------------------------------------------------------- evaluate
def evaluate(model, data: str, *, split: Optional[str] = None, batch_size: int = 64,
             out_dir: Optional[str] = None, workers: Optional[int] = None) -> dict:
    """Accuracy, top-k, per-class metrics, confusion matrix and calibration on a labelled dataset.

    Which images: `split` if given; else the data's test split; else, when the data is the one the
    model was trained on, its recorded validation split (never training images); else all of it.
    """
    from ocula.evaluation import classification_report

    clf = model if isinstance(model, Classifier) else load(model)
    samples, classes, used, scan_skipped = _evaluation_samples(clf, data, split)
    mapping = _map_classes(classes, clf.classes)
    probs, labels, skipped = _predict_split(clf, samples, batch_size, workers)
    labels = mapping[labels]
    report = classification_report(labels, probs, clf.classes)
    report.update(data=str(data), split=used, skipped=skipped_list(scan_skipped + skipped))
    if out_dir:
        write_evaluation(report, out_dir)
    return report


def write_evaluation(report: dict, out_dir) -> None:
    from ocula.evaluation import plots
    from ocula.evaluation.report import write_confusion_csv, write_per_class_csv
    from ocula.io import write_json

    out = Path(out_dir)
    write_json(out / "report.json", report)
    write_confusion_csv(report, out / "confusion_matrix.csv")
    write_per_class_csv(report, out / "per_class.csv")
    plots.plot_confusion_matrix(report, report["class_names"], out / "confusion_matrix.png")


def skipped_list(pairs) -> list[dict]:
    """(path, reason) pairs → [{"path", "reason"}], each file once, in order."""
    seen, out = set(), []
    for path, reason in pairs:
        if path not in seen:
            seen.add(path)
            out.append({"path": path, "reason": reason})
    return out


def _evaluation_samples(clf: Classifier, data: str, split: Optional[str]):
    """→ (samples, the data's classes, which split, files the data scan skipped)."""
    samples, classes, used, splits = _choose_evaluation_split(clf, data, split)
    return samples, classes, used, list(splits.skipped)


def _choose_evaluation_split(clf: Classifier, data: str, split: Optional[str]):
    from ocula.data.sources import resolve_data

    trained_on = clf.meta.get("data", {})
    video = bool(clf.contract.frames) or None  # a video model reads frame folders as clips
    splits = resolve_data(data, val_fraction=0.0, seed=0, require_train=False, video=video)
    if split:
        return splits.split(split), splits.classes, split, splits
    if splits.test is not None:
        return splits.test, splits.classes, "test", splits
    if splits.val is not None:
        return splits.val, splits.classes, "val", splits
    if trained_on.get("source") and trained_on["source"] == splits.source:
        info = clf.meta.get("split", {})
        held = resolve_data(data, val_fraction=info.get("val_fraction", 0.1), seed=info.get("seed", 0),
                            require_train=False, video=video)
        if held.val is None:
            raise OculaError(f"{data}: the model was trained on all of it; pass a separate test set")
        return held.val, held.classes, "val (held out during training)", held
    return splits.train, splits.classes, "all", splits


def _map_classes(data_classes: list[str], model_classes: list[str]) -> np.ndarray:
    """Index in the data's class list → index in the model's, by name."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise OculaError(f"the data has classes the model does not know: {shown} "
                         f"(model classes: {', '.join(model_classes[:10])})")
    return np.array([model_classes.index(c) for c in data_classes], dtype=np.int64)


def _split_loader(clf: Classifier, samples, batch_size: int, workers: Optional[int]):
    """Eval batches in the model's contract: (x, y, idx) from RAM, (x, y, idx, bad) from files."""
    from ocula.data.loaders import TensorLoader
    from ocula.data.samples import TensorSamples
    from ocula.engine.setup import adapt_channels

    if isinstance(samples, TensorSamples):
        return TensorLoader(adapt_channels(samples, clf.contract.channels), clf.contract, batch_size, train=False)
    return clf.file_batches(samples, batch_size, workers)


def _predict_split(clf: Classifier, samples, batch_size: int, workers: Optional[int]):
    loader = _split_loader(clf, samples, batch_size, workers)
    probs, labels, skipped = [], [], []
    for batch in loader:
        if len(batch) == 4:
            skipped += batch[3]
        if batch[0] is None:
            continue
        probs.append(clf.logits(batch[0]).softmax(1))
        labels.append(batch[1])
    if not probs:
        raise OculaError("no readable images to evaluate")
    return torch.cat(probs).numpy(), torch.cat(labels).numpy(), skipped
