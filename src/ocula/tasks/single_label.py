"""One class per sample: softmax over K logits, cross-entropy (hard or soft mixup targets), accuracy."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ocula.tasks.base import Task


class SingleLabelTask(Task):
    name = "single-label"

    def __init__(self, label_smoothing: float = 0.0, class_weights: Optional[torch.Tensor] = None):
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=self.label_smoothing)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1)

    @staticmethod
    def hard_labels(target: torch.Tensor) -> torch.Tensor:
        return target.argmax(1) if target.ndim == 2 else target

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> int:
        return int((logits.argmax(1) == self.hard_labels(target)).sum())

    def score(self, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
        from ocula.evaluation import classification_report

        return classification_report(labels, probs, classes)

    def top(self, probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
        p, i = probs.topk(min(k, len(classes)))
        return [(classes[j], float(q)) for j, q in zip(i.tolist(), p.tolist())]
