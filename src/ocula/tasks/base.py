"""What a kind of head (a task) owns: the loss, the activation that turns logits into probabilities,
the metrics, the prediction format and what a saved model records. The engine only calls these.

    single-label   one class per sample: softmax, cross-entropy, accuracy   (tasks.single_label)
    margin         single-label trained with an additive margin on cosine logits (tasks.margin)
    multilabel     a set of labels per sample: sigmoid, BCE or ASL, mAP, per-class thresholds (tasks.multilabel)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


class Task:
    name: str = ""
    monitor: str = "accuracy"  # the score() key that picks the best checkpoint (higher is better)
    multilabel: bool = False  # labels are sets (multi-hot (N, K)) rather than one class index per sample
    supports_ddp: bool = True
    linear_head: bool = True  # logits are the head's affine map: a probe can be fitted on cached features

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Model input batch → the logits the loss sees."""
        return model(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Inference logits (B, K) → probabilities (B, K)."""
        raise NotImplementedError

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> int:
        """How many samples of a training batch the logits get right (for the running accuracy)."""
        raise NotImplementedError

    def score(self, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
        """Labels and probabilities of a whole split → the evaluation report."""
        raise NotImplementedError

    def top(self, probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
        """One sample's probabilities → [(label, prob), ...] best first: what predict returns."""
        raise NotImplementedError

    def label_set(self, probs: torch.Tensor, classes: list[str]):
        """One sample's probabilities → the predicted set [(label, prob), ...] (tasks that predict a set of
        labels, at their thresholds); None for one label per sample."""
        return None

    # ------------------------------------------------------------------ calibration (issue 12)
    def fit_calibration(self, logits: torch.Tensor, labels: torch.Tensor) -> dict:
        """Fit the post-hoc calibration on held-out logits (N, K) and labels; → a report dict with
        "fitted" (bool) and "reason". Sets the state that `probabilities` applies and
        `bundle_fields` records. The default: no calibration."""
        return {"fitted": False, "reason": f"the {self.name} task has no calibration"}

    def selective_report(self, labels, probs, logits) -> dict:
        """Extra evaluation sections from probabilities and raw logits: calibration before and after,
        the risk–coverage curve. The default: none."""
        return {}

    def bundle_fields(self) -> dict:
        """What a saved model records about its head (calibration state included)."""
        return {"task": self.name}

    def restore(self, meta: dict) -> None:
        """Take back what `bundle_fields` recorded (calibration, thresholds) from a saved model's meta."""
