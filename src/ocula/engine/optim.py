"""Optimizers and per-step learning-rate schedules."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float, extra_groups=None) -> list[dict]:
    """No weight decay on norms, biases and 1-d parameters (embeddings' scales, tokens)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(groups: list[dict], name: str, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if kind == "constant":
        return min(1.0, (step + 1) / warmup) if warmup else 1.0
    if kind == "onecycle":  # linear up from peak/25, cosine down to peak/1e4 (torch's OneCycleLR shape)
        start, end = 1 / 25, 1 / 25 / 1e4
        if step < warmup:
            return start + (1 - start) * step / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if step < warmup:  # cosine with linear warm-up
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def build_scheduler(optimizer, total_steps: int, warmup_steps: int, kind: str):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, kind))
