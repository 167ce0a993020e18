"""Per-task code: how a batch reaches the model and how the loss is computed. The Trainer owns the
rest (loop, precision, accumulation, clipping, EMA, checkpoints, DDP)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class ClassificationTask:
    """Images (B, C, H, W) or clips (B, T, C, H, W) → class logits; hard or soft (mixup) targets."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: Optional[torch.Tensor] = None,
                 channels_last: bool = False):
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        self.channels_last = channels_last

    def prepare(self, x: torch.Tensor, y: torch.Tensor, device: torch.device):
        x = x.to(device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=self.label_smoothing)

    @staticmethod
    def hard_labels(target: torch.Tensor) -> torch.Tensor:
        return target.argmax(1) if target.ndim == 2 else target
