"""Tasks: the kind of head a model has and everything that depends on it (loss, activation, metrics,
prediction format, bundle record). The engine and inference hold a `Task` and call it.

    task = tasks.for_config(cfg, class_weights)   # training
    task = tasks.for_meta(bundle_meta)            # a saved model
"""
from __future__ import annotations

from typing import Optional

import torch

from ocula.errors import OculaError, did_you_mean
from ocula.tasks.base import Task
from ocula.tasks.margin import MarginTask
from ocula.tasks.single_label import SingleLabelTask

# name recorded in a bundle → the task a saved model predicts with
INFERENCE: dict[str, type] = {"single-label": SingleLabelTask, "margin": SingleLabelTask}
LEGACY = ("image", "video")  # ocula-bundle/1 before tasks recorded the modality in "task"


def for_config(cfg, class_weights: Optional[torch.Tensor] = None) -> Task:
    if cfg.transfer.margin != "none":
        return MarginTask(cfg.transfer.margin, cfg.transfer.margin_m, cfg.transfer.margin_s, cfg.optim.label_smoothing, class_weights)
    return SingleLabelTask(cfg.optim.label_smoothing, class_weights)


def for_meta(meta: dict) -> Task:
    name = meta.get("task") or "single-label"
    if name in LEGACY:
        name = "single-label"
    if name not in INFERENCE:
        raise OculaError(f"unknown task {name!r}{did_you_mean(str(name), INFERENCE)}")
    return INFERENCE[name]()


__all__ = ["INFERENCE", "MarginTask", "SingleLabelTask", "Task", "for_config", "for_meta"]
