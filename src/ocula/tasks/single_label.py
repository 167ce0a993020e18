"""One class per sample: softmax over K logits, cross-entropy (hard or soft mixup targets), accuracy.

Probabilities are temperature-scaled when a temperature was fitted on held-out data (issue 12):
softmax(logits / T); the predicted class never changes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ocula.evaluation import classification_report
from ocula.evaluation.calibration import before_and_after, fit_temperature, risk_coverage
from ocula.tasks.base import Task


class SingleLabelTask(Task):
    name = "single-label"

    def __init__(self, label_smoothing: float = 0.0, class_weights: Optional[torch.Tensor] = None):
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        self.temperature = 1.0
        self.calibration: dict = {"method": "none"}

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=self.label_smoothing)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.float() / self.temperature).softmax(1)

    @staticmethod
    def hard_labels(target: torch.Tensor) -> torch.Tensor:
        return target.argmax(1) if target.ndim == 2 else target

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> int:
        return int((logits.argmax(1) == self.hard_labels(target)).sum())

    def score(self, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
        return classification_report(labels, probs, classes)

    def fit_calibration(self, logits, labels, groups=None) -> dict:
        """A temperature, used only when it beats T = 1 out of sample (`groups`: the caller's folds, e.g.
        those of out-of-fold logits; otherwise stratified folds of these samples)."""
        fit = fit_temperature(logits, labels, groups)
        self.temperature = fit["temperature"] if fit["fitted"] else 1.0
        self.calibration = {"method": "temperature" if fit["fitted"] else "none", "temperature": self.temperature,
                            "fitted_on": fit["samples"], "reason": fit["reason"]}
        return fit

    def selective_report(self, labels, probs, logits) -> dict:
        fitted = self.temperature if self.calibration.get("method") == "temperature" else None
        section = before_and_after(labels, logits, fitted)
        if fitted is None and self.calibration.get("reason"):  # why the probabilities are as trained
            section["reason"] = f"not calibrated: {self.calibration['reason']}"
        return {"calibration": section, "risk_coverage": risk_coverage(labels, probs)}

    def bundle_fields(self) -> dict:
        return {"task": self.name, "calibration": dict(self.calibration)}

    def restore(self, meta: dict) -> None:
        self.calibration = dict(meta.get("calibration") or {"method": "none"})
        self.temperature = float(self.calibration.get("temperature") or 1.0) \
            if self.calibration.get("method") == "temperature" else 1.0

    def top(self, probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
        p, i = probs.topk(min(k, len(classes)))
        return [(classes[j], float(q)) for j, q in zip(i.tolist(), p.tolist())]
