"""Fine-tuning strategies: which parameters train, at which learning rate, and when.

    full          every parameter, one learning rate (head_lr may differ)
    lp-ft         the head first fitted as a linear probe on cached features (engine.probe), then every
                  parameter at one gentle lr with BatchNorm statistics held (Kumar et al. 2022, LP-FT)
    linear-probe  only the classifier; the backbone is a fixed feature extractor (probe=lbfgs: fitted
                  once on cached features, no epochs; probe=sgd: trained for the epochs)
    partial       the last `unfreeze_stages` stages and the classifier
    llrd          every parameter; each block below the head gets `layer_decay` times the lr of the
                  block above (timm's `param_groups_layer_decay`, the BEiT/MAE recipe)
    gradual       starts as a linear probe; every `unfreeze_every` epochs `unfreeze_stages` more
                  stages thaw, top down (ULMFiT's gradual unfreezing), via a callback

A "stage" is timm's coarse parameter group (`model.group_matcher(coarse=True)`: stem, layer1 …
layer4 for a ResNet; one per block for a ViT). ocula's own CNNs have no matcher: their `features`
Sequential is cut after each pooling layer, and every other top-level child is one stage.
BatchNorm layers whose parameters are all frozen keep their running statistics (`freeze_bn=None`);
`freeze_bn=True` holds them everywhere, `False` lets even frozen layers update them.
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ocula.config import TransferConfig, choices_of
from ocula.engine.callbacks import Callback
from ocula.engine.optim import no_decay_names, param_groups as plain_groups, timm_group_functions
from ocula.engine.weights import classifier_keys
from ocula.errors import OculaError
from ocula.log import logger

STRATEGIES = choices_of(TransferConfig, "strategy")  # declared once, with the config field
POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def layer_groups(model: nn.Module, coarse: bool = True) -> list[list[str]]:
    """Parameter names grouped bottom → top; the classifier is always the last group on its own."""
    head = {k for k in classifier_keys(model) if k in dict(model.named_parameters())}
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        by_id = group_parameters(model, model.group_matcher(coarse=coarse))
        groups = [[n for n in by_id[i] if n not in head] for i in sorted(by_id)]
    else:
        groups = _own_model_groups(model, coarse, head)
    return [g for g in groups if g] + [sorted(head)]


def _own_model_groups(model: nn.Module, coarse: bool, head: set) -> list[list[str]]:
    groups: list[list[str]] = []
    for child_name, child in model.named_children():
        blocks = list(child.named_children()) if isinstance(child, nn.Sequential) else [("", child)]
        current: list[str] = []
        for block_name, block in blocks:
            prefix = ".".join(p for p in (child_name, block_name) if p)
            names = [f"{prefix}.{n}" for n, _ in block.named_parameters()]
            current += [n for n in names if n not in head]
            if current and (not coarse or isinstance(block, POOLING)):
                groups.append(current)
                current = []
        if current:
            groups.append(current)
    return groups


def matcher_for(model: nn.Module):
    """A timm-style group matcher (name → ordinal) for models that have none."""
    ordinal = {n: i for i, group in enumerate(layer_groups(model, coarse=False)) for n in group}
    return lambda name: ordinal.get(name, len(ordinal))


class _WithMatcher:
    """What timm's `param_groups_layer_decay` reads from a model: parameters and a matcher."""

    def __init__(self, model: nn.Module):
        self.model, self._matcher = model, matcher_for(model)

    def named_parameters(self):
        return self.model.named_parameters()

    def group_matcher(self, coarse: bool = False):
        return self._matcher


def param_groups(model: nn.Module, strategy: str, lr: float, weight_decay: float,
                 layer_decay: float = 0.75, head_lr: Optional[float] = None) -> list[dict]:
    """Optimizer groups with an explicit `lr` each (the scheduler scales them all together)."""
    if strategy == "llrd":
        _, param_groups_layer_decay = timm_group_functions()
        source = model if hasattr(model, "group_matcher") else _WithMatcher(model)
        # the plain path's decay rule (engine.optim): 1-d tensors and the model's no_weight_decay() list
        groups = param_groups_layer_decay(source, weight_decay=weight_decay, layer_decay=layer_decay,
                                          no_weight_decay_list=no_decay_names(model))
        for g in groups:
            g["lr"] = lr * g.pop("lr_scale")
    else:
        groups = [dict(g, lr=lr) for g in plain_groups(model, weight_decay)]
    if head_lr is not None:
        groups = _split_head(model, groups, head_lr)
    return [g for g in groups if g["params"]]


def _split_head(model: nn.Module, groups: list[dict], head_lr: float) -> list[dict]:
    names = set(layer_groups(model)[-1])  # once: inside the comprehension it was rebuilt per parameter
    head = {id(p) for n, p in model.named_parameters() if n in names}
    out = []
    for g in groups:
        out.append(dict(g, params=[p for p in g["params"] if id(p) not in head]))
        out.append(dict(g, params=[p for p in g["params"] if id(p) in head], lr=head_lr))
    return out


def trainable_stages(strategy: str, n_stages: int, unfreeze_stages: int, epoch: int = 0,
                     unfreeze_every: int = 1) -> int:
    """How many stages below the head train (counted from the top) at `epoch`."""
    if strategy in ("full", "llrd", "lp-ft"):
        return n_stages
    if strategy == "linear-probe":
        return 0
    if strategy == "partial":
        return min(n_stages, unfreeze_stages)
    if strategy == "gradual":
        return min(n_stages, (epoch // max(1, unfreeze_every)) * unfreeze_stages)
    raise OculaError(f"unknown strategy '{strategy}' (choose one of {', '.join(STRATEGIES)})")


def set_trainable(model: nn.Module, n_top_stages: int, fixed: frozenset = frozenset()) -> None:
    """The head and the top `n_top_stages` stages train; everything else is frozen. `fixed`: ids of
    parameters that never train (a margin head's bias)."""
    groups = layer_groups(model)
    stages, head = groups[:-1], groups[-1]
    train = set(head).union(*stages[len(stages) - n_top_stages:]) if n_top_stages else set(head)
    for name, p in model.named_parameters():
        p.requires_grad_(name in train and id(p) not in fixed)


def hold_batchnorm(model: nn.Module, everywhere: bool) -> int:
    """Keep BatchNorm running statistics fixed where the layer is frozen (or everywhere). → count."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.ocula_hold_stats = everywhere
            module.register_forward_pre_hook(_hold_stats_hook)
            count += 1
    return count


def _hold_stats_hook(module: nn.Module, args) -> None:
    # Runs before every forward: model.train() cannot undo it, and it follows gradual unfreezing.
    params = list(module.parameters(recurse=False))
    if module.ocula_hold_stats or (params and not any(p.requires_grad for p in params)):
        module.training = False


class GradualUnfreezing(Callback):
    """Thaws `per_step` more stages every `every` epochs, top down, at the start of an epoch."""

    def __init__(self, per_step: int, every: int, fixed: frozenset = frozenset()):
        self.per_step, self.every, self.fixed = per_step, every, fixed
        self.shown = -1

    def on_epoch_start(self, trainer, epoch):
        if trainer.world > 1:
            raise OculaError("strategy=gradual needs a single process (DDP fixes the trained set at start)")
        stages = len(layer_groups(trainer.model)) - 1
        top = trainable_stages("gradual", stages, self.per_step, epoch, self.every)
        set_trainable(trainer.model, top, self.fixed)
        if top != self.shown and trainer.rank == 0:
            logger.info(f"gradual unfreezing: head + top {top}/{stages} stages train from epoch {epoch + 1}")
        self.shown = top
