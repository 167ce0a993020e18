"""Optimizers and per-step learning-rate schedules.

Which parameters decay is timm's rule, the same for every strategy (`no_decay_names`): no decay on 1-d
tensors (norms, biases, scales) and on what the model lists in `no_weight_decay()` (timm: class
tokens, position embeddings, relative position tables). Names are not guessed: a conv in a
MetaFormer's `token_mixer` or a Mixer's `mlp_tokens` is an ordinary weight and decays.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ocula.errors import OculaError

# Models that declare no `no_weight_decay()` (ocula's seed attention models) keep their positions and
# class token out of decay under timm's names for them.
TOKEN_NAMES = ("pos_embed", "cls_token")
OWN = ("adamw", "sgd")  # built here as ocula always has; every other name is timm's create_optimizer_v2


def no_decay_names(model: nn.Module) -> tuple[str, ...]:
    """Name patterns (fnmatch, as timm matches them) kept out of weight decay besides 1-d tensors."""
    if hasattr(model, "no_weight_decay"):
        return tuple(model.no_weight_decay())
    return TOKEN_NAMES


def timm_group_functions():
    """(param_groups_weight_decay, param_groups_layer_decay): exported by timm.optim from timm 1.0.12 on,
    only in timm.optim.optim_factory before."""
    try:
        from timm.optim import param_groups_layer_decay, param_groups_weight_decay
    except ImportError:
        from timm.optim.optim_factory import param_groups_layer_decay, param_groups_weight_decay
    return param_groups_weight_decay, param_groups_layer_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay and no-decay groups by timm's `param_groups_weight_decay`."""
    weight_decay_groups, _ = timm_group_functions()
    return weight_decay_groups(model, weight_decay, no_weight_decay_list=no_decay_names(model))


def build_optimizer(groups: list[dict], name: str, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Groups carry their weight decay (and may carry their own lr); `lr` is the default."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused_supported(groups) or None)
    from timm.optim import create_optimizer_v2

    try:  # groups already split, so timm only builds the optimizer
        return create_optimizer_v2(groups, opt=name, lr=lr, momentum=momentum)
    except (AssertionError, ValueError, KeyError) as e:
        import timm

        raise OculaError(f"optimizer '{name}' is not available in timm {timm.__version__} ({e})") from None


# torch's fused AdamW: one kernel over all tensors instead of the foreach path's sequence of ops; on a CPU,
# where a small model's optimizer step is a visible share of a training step, that share shrinks.
FUSED_DEVICES = ("cpu", "cuda")


def fused_supported(groups: list[dict]) -> bool:
    """Whether every parameter suits torch's fused Adam kernels: floating point, on one CPU or CUDA device,
    not a tensor subclass (DTensor / FSDP's shards take the foreach path)."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device for p in params}
    return (len(devices) == 1 and next(iter(devices)).type in FUSED_DEVICES
            and all(type(p) in (torch.Tensor, nn.Parameter) and p.is_floating_point() for p in params))


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
