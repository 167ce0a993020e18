"""Single-label losses for long-tailed data that shift the logits by the class prior while training.

    logit-adjust       softmax cross-entropy of z + τ·log π (Menon et al., 2021, the logit-adjusted loss)
    balanced-softmax   the same with τ = 1 (Ren et al., 2020: softmax with n_j·exp(z_j))

π is the training split's class frequency. The shift exists only in the loss: the saved model predicts
with plain softmax over its logits, which then estimate the *balanced* posterior, so rare classes are no
longer out-voted by the prior. Nothing is recorded in the bundle beyond the single-label task.
"""
from __future__ import annotations

import torch

from ocula.tasks.single_label import SingleLabelTask


class PriorAdjustedTask(SingleLabelTask):
    def __init__(self, class_counts: torch.Tensor, tau: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(label_smoothing=label_smoothing)
        prior = class_counts.float().clamp_min(1) / class_counts.float().clamp_min(1).sum()
        self.tau = tau
        self.shift = tau * prior.log()  # (K,)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().loss(logits.float() + self.shift.to(logits.device), target)
