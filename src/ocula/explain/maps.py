"""Raw low-resolution saliency → maps at the input's resolution, scaled to [0, 1]."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ocula.modality import for_module


def upsample(raw, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) → (N, H, W). Negative evidence is clipped first: maps show what speaks *for* the class."""
    t = torch.nan_to_num(torch.as_tensor(np.asarray(raw), dtype=torch.float32)).clamp(min=0)
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return t


def scale_01(t: torch.Tensor) -> torch.Tensor:
    """Per-map min-max scaling of (N, ...); a constant map carries nothing and becomes zeros.

    "Constant" is relative: a flat map upsampled from 1×1 differs by float rounding only, and
    stretching that noise to [0, 1] would draw a meaningless hot spot."""
    flat = t.reshape(t.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    flat_map = span <= 1e-5 * torch.maximum(hi.abs(), lo.abs()) + 1e-12
    out = torch.where(flat_map, torch.zeros_like(flat), (flat - lo) / span.clamp(min=1e-12))
    return out.reshape(t.shape)


def map_dims(model, x: torch.Tensor) -> tuple[int, ...]:
    """The leading dims of a model input batch that index one map, as the model's modality lays a sample out:
    (B,) for images, (B, T) when every sample is several frames (each frame gets its own map)."""
    return for_module(model).map_dims(x)


def fit_maps(raw, lead: tuple[int, ...], size: tuple[int, int]) -> np.ndarray:
    """(prod(lead), h, w) scores → (*lead, H, W) in [0, 1], one scale per sample: a frame the model
    ignores looks cold instead of being stretched to full range."""
    return scale_01(upsample(np.asarray(raw).reshape(-1, *np.asarray(raw).shape[-2:]), size)
                    .reshape(*lead, *size)).numpy()


