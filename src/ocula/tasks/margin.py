"""Additive-margin softmax losses for training embedding models: ArcFace and CosFace.

The margin head is the model's own classifier read as class centres: logits are
s · cos(feature, W_k) with the bias fixed at zero, and the true class gets a margin
(ArcFace: cos(θ + m), Deng et al. 2019; CosFace: cos θ − m, Wang et al. 2018). The model stays an
ordinary classifier with the usual state-dict keys, so saving, loading, embedding and verification
work unchanged; the penultimate features (`forward_head(pre_logits=True)`) are the embedding.

It plugs into the one Trainer as its `task` (`task="margin"`, the kind in `margin=`, default arcface; a
`margin="arcface"` alone, as in older configs, chooses this task too). A saved
model predicts with the same scaled cosine logits (no margin), and its temperature is fitted on them.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ocula.config import TransferConfig, choices_of
from ocula.tasks.single_label import SingleLabelTask
from ocula.errors import OculaError

MARGINS = choices_of(TransferConfig, "margin")  # declared once, with the config field
DEFAULT_M = {"arcface": 0.5, "cosface": 0.35}  # the papers' face-recognition settings


def cosine_logits(features: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, D), (K, D) → s · cos, (B, K)."""
    return scale * F.linear(F.normalize(features.float(), dim=1), F.normalize(weight.float(), dim=1))


def add_margin(cos: torch.Tensor, target: torch.Tensor, kind: str, m: float) -> torch.Tensor:
    """cos (B, K) with the margin applied to each row's true class."""
    true = cos.gather(1, target[:, None])
    if kind == "cosface":
        moved = true - m
    else:  # arcface; past θ = π − m, cos(θ + m) would turn back up: use the CosFace-like fallback
        theta = torch.acos(true.clamp(-1 + 1e-7, 1 - 1e-7))
        moved = torch.where(theta + m < math.pi, torch.cos(theta + m), true - m * math.sin(m))
    return cos.scatter(1, target[:, None], moved)


class MarginTask(SingleLabelTask):
    """A single-label task whose training logits are scaled cosines and whose loss adds a class margin."""

    name = "margin"
    linear_head = False  # cosine logits with a margin: no closed-form probe
    supports_ddp = False  # forward reads the inner model's head; DDP would not see those parameters

    def __init__(self, kind: str = "arcface", margin: Optional[float] = None, scale: float = 30.0,
                 label_smoothing: float = 0.0, class_weights: Optional[torch.Tensor] = None):
        if kind not in DEFAULT_M:
            raise OculaError(f"margin={kind!r}: choose arcface or cosface")
        super().__init__(label_smoothing, class_weights)
        self.kind, self.scale = kind, scale
        self.m = DEFAULT_M[kind] if margin is None else margin

    prepares_head = True

    @staticmethod
    def prepare_head(model: nn.Module) -> frozenset:
        return prepare_margin_head(model)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        inner = getattr(model, "module", model)  # DDP is refused upstream; keep the names readable
        features = inner.forward_head(inner.forward_features(x), pre_logits=True)
        return cosine_logits(features, inner.get_classifier().weight, self.scale)

    def bundle_fields(self) -> dict:
        return {**super().bundle_fields(), "margin": {"kind": self.kind, "m": self.m, "scale": self.scale}}

    def restore(self, meta: dict) -> None:
        super().restore(meta)
        margin = meta.get("margin") or {}
        self.kind, self.m = margin.get("kind", self.kind), margin.get("m", self.m)
        self.scale = float(margin.get("scale", self.scale))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim != 1:
            raise OculaError("margin losses need hard labels: turn mixup and cutmix off")
        cos = add_margin(logits.float() / self.scale, target, self.kind, self.m)
        return super().loss(self.scale * cos, target)


def prepare_margin_head(model: nn.Module) -> frozenset:
    """Zero the classifier's bias and keep it out of training; → ids of the fixed parameters."""
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise OculaError(f"a margin head needs a linear classifier; this model's is {type(head).__name__}")
    if head.bias is None:
        return frozenset()
    with torch.no_grad():
        head.bias.zero_()
    head.bias.requires_grad_(False)
    return frozenset({id(head.bias)})
