"""Where a CAM looks: the target layer of each architecture, and how its output becomes a grid.

ocula knows every model's family, so users never pick layers or write reshape functions by hand:

    ocula's own CNNs   `model.features`, the last conv block (what `forward_features` returns)
    timm CNNs          the last stage, from timm's own `feature_info[-1]['module']`
    timm ViTs          `blocks[-1].norm1`; tokens (B, N, D) → grid (B, D, h, w), prefix tokens dropped
    video models       the per-frame encoder's target layer; frames are folded into the batch

A name passed by the user (`layer="blocks.3.norm1"`) overrides the choice; a misspelt one gets
"did you mean".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from ocula.errors import OculaError, did_you_mean
from ocula.modality import for_module


@dataclass
class TargetLayer:
    name: str  # dotted path inside the model, as in model.named_modules()
    module: nn.Module
    to_grid: Callable[[torch.Tensor], torch.Tensor]  # layer output → (N, C, h, w)


def is_vit(model: nn.Module) -> bool:
    """A timm-style vision transformer: patch embedding, a stack of blocks, prefix tokens."""
    return hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens")


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules that can run an explicit (unfused) path and expose softmax weights
    as the input of `attn_drop`: timm's Attention (and ocula's transformer blocks, which are timm's)."""
    return [m for m in model.modules() if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None),
                                                                                 nn.Module)]


def default_method(model: nn.Module) -> str:
    """Vision transformers get rollout; anything with a convolutional or token feature map Grad-CAM
    (video models: on their per-frame encoder); the rest integrated gradients, which needs no layer."""
    if hasattr(model, "attention_weights"):  # ocula's seed_attention family
        return "rollout"
    if runs_per_frame(model):
        return "gradcam" if frame_encoder(model)[1] is not model else "ig"
    if is_vit(model) and attention_modules(model):
        return "rollout"
    if _has_conv_features(model) or getattr(model, "feature_info", None) or isinstance(
            getattr(model, "cam_layer", None), str) or any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "gradcam"
    return "ig"


def _has_conv_features(model: nn.Module) -> bool:
    return isinstance(getattr(model, "features", None), nn.Module) and not is_vit(model)


def resolve_target_layer(model: nn.Module, layer: Optional[str] = None) -> TargetLayer:
    """The layer a CAM method hooks: the user's `layer` name if given, else the family's default."""
    name = layer or default_layer_name(model)
    modules = dict(model.named_modules())
    if name not in modules:
        choices = [n for n in modules if n]
        raise OculaError(f"model has no layer '{name}'{did_you_mean(name, choices)}")
    return TargetLayer(name, modules[name], _grid_fn(model, modules[name]))


def default_layer_name(model: nn.Module) -> str:
    inner_name, inner = frame_encoder(model)
    if inner is not model:
        return f"{inner_name}.{default_layer_name(inner)}"
    if is_vit(model):
        if getattr(model, "global_pool", None) in ("avg", "avgmax", "max") and not model.num_prefix_tokens:
            # Pooled ViTs: every patch token's output reaches the head directly (as a CNN's last feature
            # map does), so the last block's output is the CAM layer.
            return f"blocks.{len(model.blocks) - 1}"
        # Class-token ViTs: patch outputs of the last block never reach the head; its input does.
        return f"blocks.{len(model.blocks) - 1}.norm1"
    custom = getattr(model, "cam_layer", None)  # an ocula family may name its own
    if isinstance(custom, str):
        return custom
    if _has_conv_features(model):
        return "features"
    info = getattr(model, "feature_info", None)
    if info:  # timm: the last feature stage, as timm itself records it
        last = info[-1] if isinstance(info, (list, tuple)) else info.get_dicts()[-1]
        return last["module"]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    raise OculaError(f"cannot choose a CAM layer for {type(model).__name__}; pass layer=NAME "
                     "(or use method='occlusion' or 'ig', which need no layer)")


def frame_encoder(model: nn.Module) -> tuple[str, nn.Module]:
    """Video models apply an image model to every frame; CAMs look inside it. → (dotted name, module),
    or ("", model) when there is none (e.g. an LSTM over flattened frames)."""
    if not runs_per_frame(model):
        return "", model
    for name in ("encoder", "frame_encoder"):
        inner = getattr(model, name, None)
        if isinstance(inner, nn.Module):
            net = getattr(inner, "net", None)  # ocula's FrameEncoder wraps the image model as .net
            return (f"{name}.net", net) if isinstance(net, nn.Module) else (name, inner)
    return "", model


def runs_per_frame(model: nn.Module) -> bool:
    """Whether the model takes sequences of frames (then CAMs look inside its per-frame encoder)."""
    return for_module(model).per_frame


def _grid_fn(model: nn.Module, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    vit = _owning_vit(model, module)
    if vit is not None:
        return lambda out: tokens_to_grid(out, vit)
    channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"  # timm Swin/MaxViT-style stages
    return lambda out: _as_nchw(out, channels_last)


def _owning_vit(model: nn.Module, module: nn.Module) -> Optional[nn.Module]:
    """The ViT whose blocks contain `module` (the model itself, or a video model's frame encoder)."""
    for m in model.modules():
        if is_vit(m) and any(sub is module for sub in m.blocks.modules()):
            return m
    return None


def tokens_to_grid(tokens: torch.Tensor, vit: nn.Module) -> torch.Tensor:
    """(B, N, D) tokens → (B, D, h, w): cls/register tokens dropped, patches laid back on the grid."""
    if tokens.dim() != 3:
        return _as_nchw(tokens, False)
    patches = tokens[:, vit.num_prefix_tokens:, :]
    h, w = patch_grid(vit, patches.shape[1])
    return patches.reshape(patches.shape[0], h, w, patches.shape[2]).permute(0, 3, 1, 2)


def patch_grid(vit: nn.Module, n_patches: int) -> tuple[int, int]:
    grid = tuple(getattr(vit.patch_embed, "grid_size", None) or ())
    if len(grid) == 2 and grid[0] * grid[1] == n_patches:
        return grid
    side = int(round(n_patches ** 0.5))  # dynamic image size: assume a square input
    if side * side != n_patches:
        raise OculaError(f"cannot lay {n_patches} patch tokens on a grid; pass a square input")
    return side, side


def _as_nchw(out: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() != 4:
        raise OculaError(f"the CAM layer outputs shape {tuple(out.shape)}, not a (N, C, h, w) feature map; "
                         "pass layer=NAME of a convolutional layer")
    return out.permute(0, 3, 1, 2) if channels_last else out
