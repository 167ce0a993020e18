"""The uniform surface every ocula model offers, written to timm's conventions.

`forward_features` → `forward_head(pre_logits=...)`, `get_classifier`, `reset_classifier`: tools
(fine-tuning, embeddings, CAMs) rely on these names for every family.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ClassifierModel(nn.Module):
    """Subclasses build `self.head` (nn.Linear) and implement `forward_features` and `pool`."""

    head: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Features → one vector per sample, (B, D)."""
        return features

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        z = self.pool(features)
        return z if pre_logits else self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes

    @property
    def num_features(self) -> int:
        return self.head.in_features
