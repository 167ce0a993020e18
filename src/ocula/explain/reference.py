"""Model-agnostic references: occlusion and integrated gradients.

They need no target layer, so they work for every architecture and serve as a check on the CAMs.
Captum computes them when it is installed; otherwise a small implementation of the same
definitions runs (the tests check both agree). The baseline is zero in normalised space, i.e. the
training data's mean colour.

    occlusion  score drop when a window is replaced by the baseline, averaged over covering windows;
               only drops (evidence *for* the class) are kept
    ig         (x − x₀) · ∫₀¹ ∂score/∂x(x₀ + α(x − x₀)) dα, absolute values summed over channels
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ocula.explain.maps import fit_maps, map_dims

REFERENCE_METHODS = ("occlusion", "ig")


def reference_maps(model: nn.Module, x: torch.Tensor, classes: Optional[torch.Tensor], method: str,
                   window: Optional[int] = None, steps: int = 32, use_captum: Optional[bool] = None,
                   ) -> tuple[np.ndarray, torch.Tensor]:
    """Images (B, C, H, W) or clips (B, T, C, H, W) → (maps in [0, 1] at input size, logits (B, K))."""
    with torch.no_grad():
        logits = model(x).float()
    classes = logits.argmax(1) if classes is None else classes.to(logits.device)
    captum = _captum_available() if use_captum is None else use_captum
    if method == "occlusion":
        side = window or max(2, x.shape[-1] // 8)
        attr = (_captum_occlusion if captum else occlusion)(model, x, classes, side, max(1, side // 2))
        raw = attr.sum(-3)  # channels → (B, H, W) or (B, T, H, W)
    else:
        attr = (_captum_ig if captum else integrated_gradients)(model, x, classes, steps)
        raw = attr.abs().sum(-3)
    return fit_maps(raw.detach().cpu().numpy(), map_dims(model, x), tuple(x.shape[-2:])), logits.cpu()


def _captum_available() -> bool:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return False
    return True


def _captum_occlusion(model, x, classes, window: int, stride: int) -> torch.Tensor:
    from captum.attr import Occlusion

    lead = (1,) * (len(map_dims(model, x)) - 1)  # several maps per sample (clips): one frame at a time
    c = x.shape[-3]
    return Occlusion(model).attribute(x, target=classes.tolist(), baselines=0.0,
                                      sliding_window_shapes=lead + (c, window, window),
                                      strides=lead + (c, stride, stride), perturbations_per_eval=16)


def _captum_ig(model, x, classes, steps: int) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=classes.tolist(),
                                                n_steps=steps, internal_batch_size=max(steps, 16))


def occlusion(model, x: torch.Tensor, classes: torch.Tensor, window: int, stride: int,
              chunk: int = 16) -> torch.Tensor:
    """Captum's Occlusion definition for images: each pixel gets the mean score drop of the windows
    covering it (the window spans all channels). → (B, C, H, W), the same value in every channel."""
    if len(map_dims(model, x)) > 1:
        raise NotImplementedError("the built-in occlusion draws one map per sample; install captum for clips")
    b, c, h, w = x.shape
    window = min(window, h, w)
    rows = list(range(0, h - window + 1, stride))
    cols = list(range(0, w - window + 1, stride))
    if rows[-1] != h - window:  # Captum also covers the last edge with a final shifted window
        rows.append(h - window)
    if cols[-1] != w - window:
        cols.append(w - window)
    windows = [(r, q) for r in rows for q in cols]
    total, count = torch.zeros(b, h, w), torch.zeros(h, w)
    with torch.no_grad():
        base = model(x).float().gather(1, classes[:, None])  # (B, 1)
        for start in range(0, len(windows), chunk):
            part = windows[start:start + chunk]
            occluded = x.unsqueeze(1).repeat(1, len(part), 1, 1, 1)  # (B, P, C, H, W): P windows per image
            for j, (r, q) in enumerate(part):
                occluded[:, j, :, r:r + window, q:q + window] = 0.0
            scores = model(occluded.flatten(0, 1)).float().reshape(b, len(part), -1)
            drops = (base - scores.gather(2, classes[:, None, None].expand(b, len(part), 1))[..., 0]).cpu()
            for j, (r, q) in enumerate(part):
                total[:, r:r + window, q:q + window] += drops[:, j, None, None]
                count[r:r + window, q:q + window] += 1
    return (total / count.clamp(min=1))[:, None].expand(b, c, h, w)


def integrated_gradients(model, x: torch.Tensor, classes: torch.Tensor, steps: int, chunk: int = 16) -> torch.Tensor:
    """IG with a zero baseline, midpoint Riemann sum over `steps` points, `chunk` points per pass.
    → same shape as x."""
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = torch.zeros_like(x)
    for part in alphas.split(chunk):
        shape = (len(part),) + (1,) * x.dim()
        points = (part.to(x.device).view(shape) * x).flatten(0, 1).detach().requires_grad_(True)  # (P*B, ...)
        with torch.enable_grad():
            score = model(points).float().gather(1, classes.repeat(len(part))[:, None]).sum()
            total += torch.autograd.grad(score, points)[0].reshape(len(part), *x.shape).sum(0)
    return x * total / steps
