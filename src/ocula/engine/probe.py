"""A linear probe fitted on cached features: one forward pass over the training images, then L-BFGS.

    probe = fit_linear_probe(trainer)      # the head now holds the fitted weights
    print(probe.summary())                 # "linear probe: 270 images, 1280 features, L-BFGS 61 steps …"

The backbone runs once, in eval mode, on the un-augmented training images; what the classifier
receives is captured by a forward hook, so any model whose `get_classifier()` is an `nn.Linear`
works (timm's CNNs and ViTs, ocula's own, video models). The head is then fitted by full-batch
L-BFGS on the task's own loss plus an L2 penalty on the weights, the objective of scikit-learn's
`LogisticRegression(C=c)`: sum of losses + ||W||² / (2c), bias unpenalised. Training the head with
SGD for 20 epochs ran the whole backbone 20 times for the same answer (docs/benchmarks.md, issue 13).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from ocula.engine import distributed as dist
from ocula.errors import OculaError

SMALL_PROBLEM = 20_000_000  # feature entries: below this the fit runs in float64 on the CPU, as sklearn does


@dataclass
class ProbeFit:
    images: int
    features: int
    steps: int
    loss: float  # the task's mean training loss at the optimum (no penalty)
    train_acc: float
    extract_s: float
    fit_s: float
    c: float

    def summary(self) -> str:
        return (f"linear probe: {self.images} training images, {self.features} features, cached in "
                f"{self.extract_s:.1f} s; L-BFGS {self.steps} steps in {self.fit_s:.1f} s (C={self.c:g}); "
                f"train loss {self.loss:.4f}, accuracy {self.train_acc:.3f}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def linear_head(model: nn.Module) -> Optional[nn.Linear]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return head if isinstance(head, nn.Linear) else None


def can_probe(model: nn.Module, task) -> bool:
    return task.linear_head and linear_head(dist.unwrap(model)) is not None


@torch.no_grad()  # not inference_mode: the fit differentiates through these tensors
def captured_inputs(trainer, model: nn.Module, loader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(what `model`'s classifier receives, targets, sample indices) per batch of `loader`, in eval mode."""
    head = linear_head(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach().flatten(1)))
    was_training = model.training
    model.eval()
    parts = []
    try:
        for batch in loader:
            x, y, idx = batch[0], batch[1], batch[2]
            if x is None:
                continue
            x = trainer.modality.to_device(x, trainer.device, trainer.cfg.run.channels_last)
            with trainer.autocast():
                trainer.task.forward(model, x)
            parts.append((captured.pop().float().cpu(), y.cpu(), idx.cpu()))
    finally:
        hook.remove()
        model.train(was_training)
    return parts


def head_inputs(trainer, samples) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the classifier receives (N, D), targets) for every sample, in sample order, all ranks."""
    parts = captured_inputs(trainer, dist.unwrap(trainer.model), trainer.eval_loader(samples))
    gathered = [p for rank_parts in dist.all_gather_objects(parts) for p in rank_parts]
    if not gathered:
        raise OculaError("linear probe: no training image could be read")
    feats, targets, idx = (torch.cat([p[i] for p in gathered]) for i in range(3))
    order = torch.as_tensor(sorted({int(i): n for n, i in enumerate(idx.tolist())}.values()))  # drop DDP repeats
    return feats[order], targets[order]


def fit_head(feats: torch.Tensor, targets: torch.Tensor, task, num_classes: int, c: float = 1.0,
             max_steps: int = 500) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """L-BFGS on sum(task loss) + ||W||²/(2c) → (weight (K, D), bias (K,), steps, mean loss)."""
    dtype = torch.float64 if feats.numel() <= SMALL_PROBLEM else torch.float32
    x = feats.to(dtype)
    n, d = x.shape
    weight = torch.zeros(num_classes, d, dtype=dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=dtype, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_steps, history_size=20,
                            tolerance_grad=1e-4 * n, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        loss = task.loss(x @ weight.T + bias, targets).to(dtype) * n + (weight ** 2).sum() / (2 * c)
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    if dtype == torch.float64:  # tiny ops: a second thread only spin-waits (13 s instead of 1 s on a busy 2-core box)
        torch.set_num_threads(1)
    try:
        opt.step(objective)
    finally:
        torch.set_num_threads(threads)
    steps = opt.state[weight].get("n_iter", 0)
    with torch.no_grad():
        mean_loss = float(task.loss(x @ weight.T + bias, targets))
    return weight.detach(), bias.detach(), int(steps), mean_loss


def fit_linear_probe(trainer, c: float = 1.0) -> ProbeFit:
    """Fit the classifier of `trainer.model` on cached features of its training split, in place."""
    t0 = time.perf_counter()
    feats, targets = head_inputs(trainer, trainer.train_samples)
    extracted = time.perf_counter() - t0
    head = linear_head(dist.unwrap(trainer.model))
    weight, bias, steps, loss = fit_head(feats, targets, trainer.task, head.out_features, c)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        if head.bias is not None:
            head.bias.copy_(bias.to(head.bias))
        logits = (feats.to(weight) @ weight.T + bias).float()
    dist.broadcast_parameters(head)  # every rank starts fine-tuning from rank 0's fit
    return ProbeFit(images=len(feats), features=feats.shape[1], steps=steps, loss=loss,
                    train_acc=trainer.task.correct(logits, targets) / max(1, len(feats)), extract_s=extracted,
                    fit_s=time.perf_counter() - t0 - extracted, c=c)
