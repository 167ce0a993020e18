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

import torch

from ocula.errors import OculaError
from ocula.inference.device import available_device
from ocula.inference.predictor import Classifier
from ocula.inference.scoring import labelled_split, score_split
from ocula.run_dir import EvalDir, RunDir
from ocula.track import training_callbacks


class Model(Classifier):
    """What `ocula.load` returns: a Classifier that can also explain its predictions."""

    def explain(self, images, method: str = "auto", target=None) -> list:
        """Saliency maps (H, W) in [0, 1], one per image; see `ocula.explain.explain`."""
        from ocula.explain import explain

        return explain(self, images, method=method, target=target)


@dataclass
class Run:
    dir: str
    summary: dict

    def load(self, device: str = "auto") -> Model:
        return Model.load(self.dir, device)


def train(data: str = "", *, callbacks=None, **overrides) -> Run:
    """Train a model; keywords are TrainConfig fields (see `ocula train --help`)."""
    from ocula.config import build_config
    from ocula.engine.trainer import Trainer, load_run_config

    resume = overrides.pop("resume", None)
    cfg = load_run_config(resume, **overrides) if resume else build_config(data, **overrides)
    wanted = training_callbacks(cfg, callbacks, track=cfg.get("track"), report=cfg.get("report"))
    _warn_without_checkpoint(callbacks)
    if cfg.run.engine == "ray":  # Ray Train's workers run the Trainer (engine.ray_train)
        from ocula.engine.ray_train import train_on_ray

        return Run(*train_on_ray(cfg, wanted))
    from ocula.engine import distributed

    try:
        trainer = Trainer(cfg, callbacks=wanted)
        summary = trainer.fit()
    finally:
        distributed.cleanup()
    return Run(str(trainer.run_dir), summary)


def _warn_without_checkpoint(callbacks) -> None:
    """`callbacks=` replaces the trainer's defaults (progress, metrics.csv, checkpoint); without a Checkpointer a run
    writes no weights, which its user would otherwise learn only when loading it."""
    from ocula.engine.callbacks import Checkpointer

    if callbacks is not None and not any(isinstance(c, Checkpointer) for c in callbacks):
        from ocula.log import logger

        logger.warning("callbacks= replaces the default callbacks and none of these saves weights: this run writes "
                       "no model; pass ocula.engine.callbacks.default_callbacks(cfg) + [yours] to keep them")


def load(path, device: str = "auto") -> Model:
    """A run directory or a .safetensors bundle → a Model (a Classifier that also explains)."""
    return Model.load(path, device)


def predict(model, inputs, topk: int = 1, batch_size: int = 32, workers: Optional[int] = None, *,
            tta: bool = False, min_confidence: Optional[float] = None, box_threshold: Optional[float] = None,
            nms_iou: Optional[float] = None):
    """Predict files, folders, globs or CSV manifests; yields Predictions (bad inputs carry .error).
    What counts as one input is the model's modality's business (a video model: files and frame folders).
    `tta`: average over test-time views; `min_confidence`: mark less confident predictions abstained.
    Detectors: `box_threshold` (default Predictor.box_threshold) drops less confident boxes; `nms_iou` sets the
    overlap above which non-maximum suppression merges two boxes of a class (default the model's)."""
    from ocula.inference.predictor import Prediction

    clf = _with_settings(model, tta, min_confidence, box_threshold)
    if nms_iou is not None:
        if not 0 < float(nms_iou) <= 1 or not hasattr(clf.model, "nms_thresh"):
            raise OculaError(f"nms_iou is an IoU in (0, 1] for a detector, not {nms_iou} for this model")
        clf.model.nms_thresh = float(nms_iou)
    paths, missing = clf.modality.expand_inputs(inputs if isinstance(inputs, (list, tuple)) else [inputs])
    for item, reason in missing:
        yield Prediction(item, error=reason)
    if paths:
        yield from clf.predict_files(paths, topk=topk, batch_size=batch_size, workers=workers)


def batch_predict(model, inputs, out, *, runtime: str = "torch", device: str = "auto", compile: bool = False,
                  topk: int = 1, batch_size: int = 32, tta: bool = False, min_confidence: Optional[float] = None,
                  box_threshold: Optional[float] = None, address: Optional[str] = None,
                  num_cpus: Optional[int] = None, actors: Optional[int] = None) -> dict:
    """`predict` on Ray Data, for many files: one row per file in the Parquet folder `out` (an existing one is
    refused) → a summary dict. `runtime`: torch (the bundle), onnx or int8 (a .onnx file, or the run's
    model.onnx / model.int8.onnx); `address` joins a running Ray cluster ("auto"), else a local one of
    `num_cpus` starts; `actors`: the most model copies (ocula.inference.batch)."""
    import functools

    from ocula.inference import batch

    if runtime not in ("torch", "onnx", "int8"):
        raise OculaError(f"runtime must be torch, onnx or int8, not {runtime!r}")
    if runtime != "torch":  # each actor opens its own session, with its own threads
        from ocula.export.runtime import OnnxClassifier

        model = functools.partial(OnnxClassifier.load, str(model), int8=runtime == "int8")
    source = batch.ModelSource(model if callable(model) else str(model), device, compile, tta,
                               min_confidence, box_threshold)
    return batch.batch_predict(source, inputs, out, topk=topk, batch_size=batch_size, address=address,
                               num_cpus=num_cpus, actors=actors)


# ---------------------------------------------------------------------- evaluate
def evaluate(model, data: str, *, split: Optional[str] = None, batch_size: int = 64,
             out_dir: Optional[str] = None, workers: Optional[int] = None, tta: bool = False,
             device: str = "auto") -> dict:
    """Accuracy, top-k, per-class metrics, confusion matrix and calibration on a labelled dataset.

    Which images: `split` if given; else the data's test split; else, when the data is the one the
    model was trained on, its recorded validation split (never training images); else all of it
    (`ocula.inference.scoring.labelled_split`). `device` (auto, cpu, cuda, cuda:N) is where a model given
    by its path runs; a Classifier passed in stays where it is.
    """
    clf = _with_settings(model if isinstance(model, Classifier) else load(model, available_device(device)), tta)
    report = score_split(clf, labelled_split(clf, data, split), batch_size, workers)
    report["data"] = str(data)
    if out_dir:
        write_evaluation(report, out_dir)
    return report


def write_evaluation(report: dict, out_dir) -> None:
    from ocula.evaluation import plots
    from ocula.evaluation.report import write_confusion_csv, write_per_class_csv

    out = EvalDir(out_dir)
    out.write_report(report)
    write_per_class_csv(report, out.per_class_csv)
    if "confusion_matrix" in report:  # single-label
        write_confusion_csv(report, out.confusion_csv)
        plots.plot_confusion_matrix(report, report["class_names"], out.confusion_png)
    if report.get("pr_curves"):  # multilabel
        plots.plot_pr_curves(report["pr_curves"], out.pr_curves_png)
    if report.get("pr_curve") or report.get("examples"):  # boxes: PR curves at one IoU, example images
        _write_box_pictures(report, out)
    if report.get("box_confusion"):  # boxes: classes + background
        write_confusion_csv(report, out.confusion_csv)
        confusion = report["box_confusion"]
        plots.plot_confusion_matrix(confusion["matrix"], confusion["names"], out.confusion_png, normalize=False,
                                    title=f"Boxes: true class (rows) against detected class, IoU ≥ {confusion['iou']:g}, "
                                          f"score ≥ {confusion['min_score']:g}")
    if report.get("calibration"):
        out.write_calibration(report["calibration"])
        plots.plot_reliability(report["calibration"], out.reliability_png)
    if report.get("risk_coverage"):
        plots.write_risk_coverage_csv(report["risk_coverage"], out.risk_coverage_csv)
        plots.plot_risk_coverage({"model": report["risk_coverage"]}, out.risk_coverage_png)


def _write_box_pictures(report: dict, out: EvalDir) -> None:
    """EVAL/pr_curves.png from the report's `pr_curve`; EVAL/detections.png: its `examples` (paths, truth,
    detections) drawn, predicted boxes solid and the truth dashed; an image that no longer opens is left out."""
    from ocula.data.images import open_image
    from ocula.evaluation.detection_plots import detection_grid, plot_pr_curves
    from ocula.evaluation.report import class_names_of

    classes = class_names_of(report)
    if report.get("pr_curve"):
        plot_pr_curves(report["pr_curve"], classes, out.pr_curves_png)
    images, dets, truth = [], [], []
    for example in report.get("examples") or []:
        try:
            images.append(open_image(example["path"], channels=3))
        except (OculaError, OSError, TypeError):  # TypeError: an in-memory sample has no path
            continue
        dets.append(example["detections"])
        truth.append(example["truth"])
    if images:
        detection_grid(images, dets, truth, classes, out.detections_png)


def calibrate(run, data: str, *, split: Optional[str] = None, batch_size: int = 64,
              workers: Optional[int] = None) -> dict:
    """Refit the calibration of a run (or bundle) on other labelled data and store it in the bundle
    (`weights/best.safetensors` or the given file, and model.json)."""
    from ocula import bundle
    from ocula.inference.scoring import model_labels, predict_split

    clf = load(run)
    chosen = labelled_split(clf, data, split)
    found = predict_split(clf, chosen.samples, batch_size, workers)
    labels = model_labels(chosen.mapping, found.labels, len(clf.classes))  # multilabel: multi-hot columns
    fit = clf.task.fit_calibration(found.logits, labels)
    path = bundle.resolve_weights(run)
    meta = bundle.update_meta(path, clf.task.bundle_fields())
    if Path(run).is_dir():
        RunDir(run).write_model(meta)
    section = clf.task.selective_report(labels, clf.task.probabilities(torch.from_numpy(found.logits)).numpy(),
                                        found.logits).get("calibration", {})
    result = {**fit, **section, "data": str(data), "split": chosen.name, "bundle": str(path)}
    if Path(run).is_dir():
        RunDir(run).write_calibration(result)
    return result


def _with_settings(model, tta: bool = False, min_confidence: Optional[float] = None,
                   box_threshold: Optional[float] = None) -> Classifier:
    """The model to run with these settings: a caller's Classifier is copied (shallow: the weights are
    shared) rather than changed, so a call's `tta` or `min_confidence` does not stick to it."""
    import copy

    clf = copy.copy(model) if isinstance(model, Classifier) else load(model)
    return clf.configured(tta=tta, min_confidence=min_confidence, box_threshold=box_threshold)
