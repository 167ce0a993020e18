"""Attention rollout (Abnar & Zuidema, 2020) through an explicit attention path.

Fused attention (`F.scaled_dot_product_attention`) never materialises the weights. Like nanoGPT's
flag, timm's `Attention.fused_attn` switches to the explicit path `softmax(q kᵀ · scale)` followed
by `attn_drop`; for the duration of one forward ocula turns the flag off and reads the weights as
the input of `attn_drop`, then restores both. Per layer l, with heads fused (mean, max or min) and
the weakest `discard_ratio` of entries zeroed:

    Â_l = normalise_rows((A_l + I) / 2)          # the residual path carries half the signal
    R   = Â_L · … · Â_1                           # how much each input token flows to each output
    map = R[cls, patches]  (or the mean of the patch rows when the model has no class token)
"""
from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ocula.errors import OculaError
from ocula.explain.maps import fit_maps, map_dims
from ocula.explain.targets import attention_modules, is_vit, patch_grid

_FUSE = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}  # over heads
HEAD_FUSIONS = tuple(_FUSE)


def rollout_maps(model: nn.Module, x: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0,
                 ) -> tuple[np.ndarray, torch.Tensor]:
    """Preprocessed images (B, C, H, W) or clips → (maps in [0, 1] at input size, logits (B, K))."""
    if hasattr(model, "attention_weights"):  # ocula's seed_attention: one single-head layer
        return _own_attention_maps(model, x, tuple(x.shape[-2:]))
    vit = _rollout_vit(model)
    # Only the ViT's own layers: a video model's temporal transformer attends over frames, not patches.
    attentions, logits = collect_attention(model, x, attention_modules(vit))
    return _grid_maps(rollout_grid(attentions, vit, head_fusion, discard_ratio), model, x), logits


def _grid_maps(grid: torch.Tensor, model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(N, h, w) patch scores → maps in [0, 1] at the input size (per frame for clips)."""
    return fit_maps(grid.numpy(), map_dims(model, x), tuple(x.shape[-2:]))


def _own_attention_maps(model: nn.Module, x: torch.Tensor, size) -> tuple[np.ndarray, torch.Tensor]:
    """seed_attention pools the mean over tokens, so a token's importance is its column mean in the
    rolled-out (A + I)/2. Patch tokens lie on the image grid; frame tokens weight whole frames."""
    with torch.no_grad():
        weights = model.attention_weights(x)  # (B, N, N)
        logits = model(x).float().cpu()
    flow = attention_rollout([weights[:, None]], "mean", 0.0, keep=0)  # (B, N, N)
    scores = flow.mean(1)  # (B, N): what the mean-pooled output takes from each token
    lead = map_dims(model, x)
    if len(lead) > 1:  # frames as tokens: one value per frame, spread over the frame
        frames = scores.reshape(-1, 1, 1).expand(-1, *size)
        return fit_maps(frames.numpy(), lead, size), logits
    side = int(round(scores.shape[1] ** 0.5))
    return fit_maps(scores.reshape(-1, side, side).numpy(), lead, size), logits


@contextlib.contextmanager
def explicit_attention(modules: list, hook):
    """timm attention layers on their explicit path, `hook(module, inputs, output)` on each one's
    `attn_drop` (whose input is the softmax weights); flags and hooks restored even on errors."""
    fused = [m.fused_attn for m in modules]
    handles = [m.attn_drop.register_forward_hook(hook) for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(modules, fused):
            m.fused_attn = flag


def collect_attention(model: nn.Module, x: torch.Tensor, modules: Optional[list] = None,
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward on the explicit path → ([softmax weights (N, heads, T, T) per layer], logits)."""
    modules = attention_modules(model) if modules is None else modules
    if not modules:
        raise OculaError(f"{type(model).__name__} has no attention layers for rollout; use method='gradcam'")
    weights: list[torch.Tensor] = []
    with explicit_attention(modules, lambda _m, inp, _out: weights.append(inp[0].detach())), torch.no_grad():
        logits = model(x)
    if not weights:
        raise OculaError("the attention layers did not run their explicit path; rollout is not possible")
    return weights, logits.float().cpu()


def rollout_grid(attentions: list[torch.Tensor], vit: nn.Module, head_fusion: str = "mean",
                 discard_ratio: float = 0.0) -> torch.Tensor:
    """Per-layer attention → (N, h, w) rollout over the patch grid, unscaled."""
    flow = attention_rollout(attentions, head_fusion, discard_ratio, keep=vit.num_prefix_tokens)  # (N, T, T)
    return patch_scores(flow, vit)


def patch_scores(flow: torch.Tensor, vit: nn.Module) -> torch.Tensor:
    """Token-to-token flow (N, T, T) → (N, h, w): what the head reads from each patch."""
    prefix = vit.num_prefix_tokens
    if getattr(vit, "cls_token", None) is not None:
        scores = flow[:, 0, prefix:]  # what the class token gathered from each patch
    else:  # average-pooled ViTs: the patches' own rows are what the head sees
        scores = flow[:, prefix:, prefix:].mean(1)
    h, w = patch_grid(vit, scores.shape[1])
    return scores.reshape(-1, h, w)


def attention_rollout(attentions: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0,
                      keep: int = 1) -> torch.Tensor:
    """[(N, heads, T, T)] → (N, T, T) rollout. The top-left `keep`×`keep` block (prefix tokens among
    themselves) is never discarded, so the class token always keeps a path to itself."""
    if head_fusion not in HEAD_FUSIONS:
        raise OculaError(f"unknown head fusion '{head_fusion}' (choose from {', '.join(HEAD_FUSIONS)})")
    if not 0.0 <= discard_ratio < 1.0:
        raise OculaError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    n, _, t, _ = attentions[0].shape
    eye = torch.eye(t)
    result = eye.expand(n, t, t).clone()
    for attn in attentions:
        a = _FUSE[head_fusion](attn.float().cpu())  # (N, T, T)
        if discard_ratio > 0:
            a = _discard_weakest(a, discard_ratio, keep)
        a = (a + eye) / 2
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
    return result


def _discard_weakest(a: torch.Tensor, ratio: float, keep: int) -> torch.Tensor:
    n, t, _ = a.shape
    protected = torch.zeros(t, t, dtype=torch.bool)
    protected[:keep, :keep] = True
    scores = a.masked_fill(protected, float("inf")).reshape(n, -1)
    k = int(scores.shape[1] * ratio)
    drop = scores.topk(k, dim=1, largest=False).indices
    return a.reshape(n, -1).scatter(1, drop, 0.0).reshape(n, t, t)


def _rollout_vit(model: nn.Module) -> nn.Module:
    """The ViT whose tokens the rollout lays on a grid (the model, or a video model's frame encoder)."""
    for m in model.modules():
        if is_vit(m):
            return m
    raise OculaError(f"rollout needs a vision transformer (patch tokens); {type(model).__name__} has none — "
                     "use method='gradcam'")


def attention_gradient_maps(model: nn.Module, x: torch.Tensor, classes: Optional[torch.Tensor] = None,
                            ) -> tuple[np.ndarray, torch.Tensor]:
    """Class-specific relevance from attention × its gradient (Chefer, Gur & Wolf, ICCV 2021):

        Ā_l = mean_heads( (∂y_c/∂A_l ⊙ A_l)⁺ )     # attention that raised the class score
        R   = I;  R ← R + Ā_l · R  for l = 1 … L     # accumulated through the residual stream
        map = R[cls, patches]  (or the mean of the patch rows without a class token)

    Unlike rollout it depends on the class explained and ignores attention that lowered its score.
    """
    vit = _rollout_vit(model)
    attentions, grads, logits = collect_attention_and_gradients(model, x, classes, attention_modules(vit))
    n, _, t, _ = attentions[0].shape
    relevance = torch.eye(t).expand(n, t, t).clone()
    for attn, grad in zip(attentions, grads):
        weighted = (grad.float() * attn.float()).clamp(min=0).mean(1)  # (N, T, T)
        relevance = relevance + weighted @ relevance
    return _grid_maps(patch_scores(relevance, vit), model, x), logits


def collect_attention_and_gradients(model: nn.Module, x: torch.Tensor, classes: Optional[torch.Tensor],
                                    modules: list) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """One forward and backward on the explicit path → (weights per layer, ∂score/∂weights, logits)."""
    if not modules:
        raise OculaError(f"{type(model).__name__} has no attention layers; use method='gradcam'")
    weights: list[torch.Tensor] = []
    grads: dict[int, torch.Tensor] = {}

    def keep(_m, inp, _out):
        index = len(weights)
        weights.append(inp[0].detach().cpu())
        if inp[0].requires_grad:
            inp[0].register_hook(lambda g: grads.__setitem__(index, g.detach().cpu()))

    try:
        with explicit_attention(modules, keep), torch.enable_grad():
            inputs = x.detach().requires_grad_(True)  # so gradients flow even through frozen weights
            logits = model(inputs).float()
            chosen = logits.argmax(1) if classes is None else classes.to(logits.device)
            logits.gather(1, chosen.view(-1, 1)).sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
    if not weights or len(grads) != len(weights):
        raise OculaError("the attention layers did not run their explicit path; attn-grad is not possible")
    return weights, [grads[i] for i in range(len(weights))], logits.detach().cpu()
