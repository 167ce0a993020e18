"""Tasks: the kind of head a model has and everything that depends on it (loss, activation, metrics,
prediction format, bundle record). The engine and inference hold a `Task` and call it.

    task = tasks.for_config(cfg, class_weights, class_counts=counts, multilabel=splits.multilabel)  # training
    task = tasks.for_meta(bundle_meta)            # a saved model
    kind = tasks.task_type(cfg, multilabel=...)   # the class, before there is a task: default_augment, prepare_head
"""
from __future__ import annotations

from typing import Optional

import torch

from ocula.errors import OculaError, did_you_mean
from ocula.tasks.base import Task
from ocula.tasks.detection import DetectionTask
from ocula.tasks.imbalance import PriorAdjustedTask
from ocula.tasks.margin import MarginTask
from ocula.tasks.multilabel import MultiLabelTask
from ocula.tasks.single_label import SingleLabelTask

# name recorded in a bundle → the task a saved model predicts with
INFERENCE: dict[str, type] = {"single-label": SingleLabelTask, "margin": MarginTask,
                              "multilabel": MultiLabelTask, "detection": DetectionTask}
LEGACY = ("image", "video")  # ocula-bundle/1 before tasks recorded the modality in "task"


def task_name(cfg, multilabel: bool = False, boxes: Optional[bool] = None) -> str:
    """The task a config trains: `task=` with auto resolved by the labels (`multilabel`: they are sets; `boxes`:
    they are boxes, None: not known here); a margin kind set alone (`margin=arcface`, older configs) means the
    margin task."""
    name = cfg.task.name
    if name == "auto":
        name = "detection" if boxes else "multilabel" if multilabel else "single-label"
    if boxes and name != "detection":
        raise OculaError(f"boxes (a COCO or YOLO layout) train the detection task, not {name}")
    if boxes is False and name == "detection":
        raise OculaError("task detection needs boxes: a COCO JSON or a YOLO data.yaml")
    if name == "single-label" and cfg.transfer.margin != "none":
        name = "margin"
    if name == "margin" and multilabel:
        raise OculaError("the margin task needs one label per sample; these data have label sets (task multilabel)")
    return name


def task_type(cfg, multilabel: bool = False, boxes: Optional[bool] = None) -> type:
    """The Task class a config trains, for the questions asked before the task is built (default_augment,
    prepare_head, linear_head)."""
    return INFERENCE[task_name(cfg, multilabel, boxes)]


def for_config(cfg, class_weights: Optional[torch.Tensor] = None, *, class_counts: Optional[torch.Tensor] = None,
               multilabel: bool = False, num_samples: int = 0) -> Task:
    """The training task. `class_counts` (K,): samples per class (multi-label: positives per class) of the
    training split, of `num_samples`; `multilabel`: the data's labels are sets (resolve_data found it)."""
    name = task_name(cfg, multilabel)
    if name == "multilabel":
        return _multilabel(cfg, class_counts, num_samples)
    if name == "detection":
        return DetectionTask()
    if cfg.task.monitor == "mAP":
        raise OculaError("monitor=mAP is the multilabel task's metric; single-label: accuracy or balanced_accuracy")
    task = _single_label(cfg, name, class_weights, class_counts)
    if cfg.task.monitor != "auto":
        task.monitor = cfg.task.monitor  # a key of the single-label report
    return task


def _multilabel(cfg, counts: Optional[torch.Tensor], n: int) -> MultiLabelTask:
    if cfg.data.balance not in ("none", "weighted-loss", "sampler"):
        raise OculaError(f"balance={cfg.data.balance} is a single-label loss; multilabel data takes weighted-loss "
                         f"(pos_weight) or sampler")
    if cfg.task.monitor not in ("auto", "mAP") or cfg.transfer.margin != "none":
        raise OculaError("the multilabel task monitors mAP and has no margin loss")
    pos_weight = None
    if cfg.data.balance == "weighted-loss" and counts is not None:  # negatives / positives, per class
        pos_weight = (n - counts).clamp_min(1) / counts.clamp_min(1)
    return MultiLabelTask(cfg.task.loss, pos_weight, cfg.task.threshold_policy)


def _single_label(cfg, name: str, class_weights, counts) -> Task:
    if name == "margin":
        kind = cfg.transfer.margin if cfg.transfer.margin != "none" else "arcface"
        return MarginTask(kind, cfg.transfer.margin_m, cfg.transfer.margin_s, cfg.optim.label_smoothing, class_weights)
    if cfg.data.balance in ("logit-adjust", "balanced-softmax"):
        tau = cfg.task.logit_tau if cfg.data.balance == "logit-adjust" else 1.0
        return PriorAdjustedTask(counts, tau, cfg.optim.label_smoothing)
    return SingleLabelTask(cfg.optim.label_smoothing, class_weights)


def for_labels(labels) -> Task:
    """A plain task (no weights, no calibration) for labels shaped as given: multi-hot (N, K) → multilabel, class
    indices (N,) → single-label. For quick models trained before the run's task exists (the flip probe)."""
    return MultiLabelTask() if labels.ndim == 2 else SingleLabelTask()


def for_meta(meta: dict) -> Task:
    name = meta.get("task") or "single-label"
    if name in LEGACY:
        name = "single-label"
    if name not in INFERENCE:
        raise OculaError(f"unknown task {name!r}{did_you_mean(str(name), INFERENCE)}")
    task = INFERENCE[name]()
    task.restore(meta)
    return task


__all__ = ["INFERENCE", "DetectionTask", "for_labels", "task_name", "task_type", "MarginTask", "MultiLabelTask", "PriorAdjustedTask", "SingleLabelTask", "Task", "for_config",
           "for_meta"]
