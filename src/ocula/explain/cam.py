"""The CAM family (Grad-CAM, Grad-CAM++, Score-CAM, Eigen-CAM, LayerCAM) over pytorch-grad-cam.

pytorch-grad-cam supplies each method's mathematics (`get_cam_image`). ocula drives the hooks
itself, because its own object keeps the forward outputs and the graph (`retain_graph=True`)
alive between calls and its `__exit__` swallows IndexError. Here, per batch:

    one forward with a hook on the target layer → activations (kept attached to the graph)
    torch.autograd.grad(score, activations)     → gradients; the graph is freed, no .grad on weights
    method.get_cam_image(activations, gradients) → (N, h, w) → upsampled, scaled to [0, 1]

The hook is removed in a `finally`, so nothing is left on the model and memory stays flat over
thousands of images. Video clips (B, T, C, H, W) give one map per frame: the target layer sits in
the per-frame encoder, frames are folded into the batch, the clip's class score is differentiated.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ocula.errors import OculaError
from ocula.explain.maps import fit_maps, map_dims
from ocula.explain.targets import TargetLayer

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam")
_USES_GRADIENTS = {"gradcam": True, "gradcam++": True, "scorecam": False, "eigencam": False, "layercam": True}


def cam_maps(model: nn.Module, x: torch.Tensor, classes: Optional[torch.Tensor], method: str,
             layer: TargetLayer, batch_size: int = 64) -> tuple[np.ndarray, torch.Tensor]:
    """Preprocessed images (B, C, H, W) or clips (B, T, C, H, W) → (maps in [0, 1] of shape (B, H, W)
    or (B, T, H, W), logits (B, K)). `classes` None explains each input's predicted class."""
    if method not in CAM_METHODS:
        raise OculaError(f"unknown CAM method '{method}' (choose from {', '.join(CAM_METHODS)})")
    lead = map_dims(model, x)
    if len(lead) > 1 and method == "scorecam":
        raise OculaError("scorecam is not supported for video models (it masks single images); "
                         "use gradcam, gradcam++, layercam or eigencam")
    acts, grads, logits = _activations_and_gradients(model, x, classes, layer, _USES_GRADIENTS[method])
    if acts.shape[-2:] == (1, 1):
        warnings.warn(f"layer '{layer.name}' has a 1×1 feature map for this input size, so {method} maps "
                      "are flat; pass an earlier layer (layer=NAME) or use occlusion/ig")
    classes = logits.argmax(1) if classes is None else classes
    raw = _method_image(method, model, x, layer, acts, grads, classes, batch_size)
    size = tuple(x.shape[-2:])
    return fit_maps(raw, lead, size), logits


def _activations_and_gradients(model, x, classes, layer: TargetLayer, need_grads: bool):
    """One forward (and, for gradient methods, one backward to the layer only) → numpy (N, C, h, w)."""
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = layer.module.register_forward_hook(keep)
    try:
        with torch.enable_grad() if need_grads else torch.no_grad():
            # A leaf that requires grad makes the layer's output part of a graph even when the
            # weights are frozen; only the layer's gradient is ever computed.
            inp = x.detach().requires_grad_(need_grads)
            logits = model(inp)
            if not captured:
                raise OculaError(f"layer '{layer.name}' was not used in the forward pass; pass another layer")
            grads = None
            if need_grads:
                chosen = logits.argmax(1) if classes is None else classes.to(logits.device)
                score = logits.gather(1, chosen[:, None]).sum()
                grads = torch.autograd.grad(score, captured)
    finally:
        handle.remove()
    lead = map_dims(model, x)
    acts = _to_grid_numpy(_merge(captured, lead), layer)
    grads = _to_grid_numpy(_merge(list(grads), lead), layer) if grads is not None else None
    return acts, grads, logits.detach().float().cpu()


def _merge(outputs: list[torch.Tensor], lead: tuple[int, ...]) -> torch.Tensor:
    """Hook outputs → one (N, ...) tensor. A per-frame encoder either sees all frames at once as
    (B*T, ...) or is called once per frame with (B, ...); both become (B*T, ...) in clip order."""
    if len(outputs) == 1:
        return outputs[0].detach()
    if len(lead) == 2 and len(outputs) == lead[1]:
        return torch.stack([o.detach() for o in outputs], 1).flatten(0, 1)
    raise OculaError(f"the CAM layer ran {len(outputs)} times in one forward; pass a layer that runs once")


def _to_grid_numpy(t: torch.Tensor, layer: TargetLayer) -> np.ndarray:
    return layer.to_grid(t).float().cpu().numpy()


def _method_image(method, model, x, layer, acts, grads, classes, batch_size) -> np.ndarray:
    """The library's per-method mathematics on arrays we captured → (N, h, w)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method == "eigencam":
        return _eigen_projection(acts)
    engine = _library_method(method, model)
    per_sample = int(np.prod(map_dims(model, x)[1:]))  # frames per clip; 1 for images
    classes = classes.repeat_interleave(per_sample)  # one target per frame (only for arity)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    if method == "scorecam":
        engine.batch_size = batch_size
        with contextlib.redirect_stderr(io.StringIO()), torch.no_grad():  # its per-image tqdm bars
            return engine.get_cam_image(x.to(engine.device), layer.module, targets, acts, grads, False)
    return engine.get_cam_image(x, layer.module, targets, acts, grads, False)


def cam_image(method: str, model: nn.Module, x: torch.Tensor, layer: TargetLayer, acts: np.ndarray,
              grads: np.ndarray) -> np.ndarray:
    """A gradient method's mathematics on activations and gradients captured by the caller (for any scalar
    target, e.g. one detected box's logit: explain.boxes) → (N, h, w)."""
    engine = _library_method(method, model)
    return engine.get_cam_image(x, layer.module, [None] * len(acts), acts, grads, False)


def _library_method(method: str, model: nn.Module):
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
    except ImportError:
        raise OculaError(f"method '{method}' needs pytorch-grad-cam: pip install 'ocula[explain]'") from None
    cls = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "layercam": LayerCAM}[method]
    # No target layers: the object registers no hooks; ocula's own hook feeds it.
    engine = cls(model, target_layers=[])
    return engine


def _eigen_projection(acts: np.ndarray) -> np.ndarray:
    """Eigen-CAM: the activations' first principal component, sign fixed so salient parts are positive
    (SVD's sign is arbitrary; clipping the wrong sign would leave an empty map)."""
    try:
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction as project
    except ImportError:
        try:
            from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection as project
        except ImportError:
            raise OculaError("method 'eigencam' needs pytorch-grad-cam: pip install 'ocula[explain]'") from None
    return project(acts)
