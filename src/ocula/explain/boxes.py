"""Explain one detected box: LayerCAM with the gradient of the class logit that scored the box.

A one-stage detector (FCOS, RetinaNet) scores a kept box from one point (or anchor) of one FPN level: FCOS
`sqrt(sigmoid(logit) * sigmoid(centerness))`, RetinaNet `sigmoid(logit)`. torchvision's postprocessing
(top-k, decoding, NMS) only indexes those scores, so the box's score in `model(x)` stays attached to the
graph. Per image, one forward with hooks on the CAM layer and on the head:

    d score / d cls_logits   → nonzero at exactly one (location, class): the logit that made the box
    d that logit / d acts    → LayerCAM on the CAM layer (pytorch-grad-cam's mathematics, as for a classifier)

No box matching by IoU is needed: autograd names the location. The CAM layer is the backbone stage whose stride
matches the box's FPN level (P3 → stride 8, P4 → 16, P5-P7 → 32): the stage the level's lateral connection reads.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ocula.errors import OculaError
from ocula.explain.cam import cam_image
from ocula.explain.maps import fit_maps
from ocula.explain.targets import TargetLayer, resolve_target_layer

# LayerCAM weighs each position by its own positive gradient; the logit of a box depends on a neighbourhood of
# its point, and Grad-CAM's (and Grad-CAM++'s) spatially averaged weights lit the background instead of the
# square on 6-19% of boxes of tests/test_detection_explain.py's detector (less mass in the box than a uniform
# map), LayerCAM on none (mass in the box 1.7x uniform at worst, 4.5x median). So boxes get LayerCAM only.
BOX_METHODS = ("layercam",)


def box_method(method: str) -> str:
    """auto → layercam; another CAM is refused in one line (its maps failed the sanity test above)."""
    name = (method or "auto").lower()
    if name in ("auto",) + BOX_METHODS:
        return BOX_METHODS[0]
    raise OculaError(f"a detection box is explained with layercam only: {method} maps failed the box sanity "
                     "test (see ocula.explain.boxes); use --method layercam or auto")


def box_head(model: nn.Module) -> Optional[nn.Module]:
    """The dense head whose `cls_logits` score the boxes (torchvision's FCOSHead/RetinaNetHead); None if none."""
    for m in model.modules():
        if hasattr(m, "classification_head") and hasattr(m, "regression_head"):
            return m
    return None


def box_layers(model: nn.Module, layer: Optional[str] = None) -> list[TargetLayer]:
    """The CAM layer candidates: the user's layer, else the backbone's stages that feed the FPN (timm's
    `feature_info`, strides 8, 16, 32); `box_map` takes the one whose stride matches the box's FPN level."""
    if layer:
        return [resolve_target_layer(model, layer)]
    info = getattr(getattr(model, "backbone", None), "feature_info", None)
    if info is None:
        raise OculaError(f"cannot choose a CAM layer for {type(model).__name__}; pass --layer NAME")
    stages = info if isinstance(info, (list, tuple)) else info.get_dicts()
    return [resolve_target_layer(model, _stage_name(model.backbone, d["module"])) for d in stages]


def _stage_name(backbone: nn.Module, module: str) -> str:
    """`feature_info` names a stage as in the plain model ("stages.1"); timm's FeatureListNet (cspnet,
    regnet, resnet...) registers it flattened ("stages_1"), EfficientNetFeatures keeps the plain name."""
    names = {name for name, _ in backbone.named_modules()}
    return "backbone." + (module if module in names else module.replace(".", "_"))


def pick_box(dets: torch.Tensor, cls: Optional[int]) -> Optional[int]:
    """One image's detections (D, 6) → the row of the best box (of class `cls` when given); None: no box."""
    real = (dets[:, 5] >= 0) & (dets[:, 4] > 0)
    if cls is not None:
        real &= dets[:, 5] == cls
    rows = torch.nonzero(real).flatten()
    return None if rows.numel() == 0 else int(rows[dets[rows, 4].argmax()])


def box_map(model: nn.Module, x: torch.Tensor, cls: Optional[int] = None, method: str = "auto",
            layer: Optional[str] = None, location: Optional[int] = None) -> dict:
    """One preprocessed image (C, H, W) → {"map" (H, W) in [0, 1], "box" [x1, y1, x2, y2] normalised, "score",
    "class", "top" (class, score) of the best box of any class, "location" (flat index into the head's (A, K)
    logits), "level" (FPN level from 0 = P3), "layer", "note" (None, or why the map is blank: an under-trained
    model's whole CAM can be negative, and a blank map must not read as "nothing matters" unannounced)};
    {"error"} when no box is found. `location`: explain that logit instead (the model-randomisation test)."""
    method = box_method(method)
    head = box_head(model)
    if head is None:
        raise OculaError(f"explain has no box path for {type(model).__name__}: ocula's fcos and retinanet "
                         "detectors only")
    layers = box_layers(model, layer)
    acts: dict = {}
    logits, levels = [], []

    def keep_head(_module, inputs, out):  # the (1, A, K) logits, and each FPN level's (h, w)
        logits.append(out["cls_logits"])
        levels.append([f.shape[-2:] for f in inputs[0]])

    hooks = [head.register_forward_hook(keep_head)]
    for i, lay in enumerate(layers):
        hooks.append(lay.module.register_forward_hook(_keeper(acts, i)))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            dets = model(x[None].detach().requires_grad_(True))[0]
            row = None
            top = pick_box(dets.detach(), None)
            if location is None:
                row = pick_box(dets.detach(), cls)
                if row is None:
                    return {"error": "no box detected" + ("" if cls is None else " of that class")}
                (to_logits,) = torch.autograd.grad(dets[row, 4], logits[0], retain_graph=True)
                location = int(to_logits.abs().flatten().argmax())
                if to_logits.flatten()[location] == 0:
                    return {"error": "the box's score has no gradient (saturated)"}
            level = _level(location, logits[0].shape, levels[0])
            pick = 0 if layer else min(level, len(layers) - 1)
            (grads,) = torch.autograd.grad(logits[0].flatten()[location], acts[pick])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    lay = layers[pick]
    a = lay.to_grid(acts[pick].detach()).float().cpu().numpy()
    g = lay.to_grid(grads).float().cpu().numpy()
    raw = cam_image(method, model, x[None], lay, a, g)
    heat = fit_maps(raw, (1,), tuple(x.shape[-2:]))[0]
    out = {"map": heat, "location": location, "level": level, "layer": lay.name,
           "note": None if heat.max() > 0 else f"flat map: {method} finds no evidence for the box at {lay.name}"}
    if row is not None:
        box, best = dets[row].detach().float().cpu(), dets[top].detach().float().cpu()
        out.update(box=[round(float(v), 5) for v in box[:4]], score=float(box[4]), **{"class": int(box[5])},
                   top=(int(best[5]), float(best[4])))
    return out


def _keeper(store: dict, key: int):
    def keep(_module, _inputs, out):
        store[key] = out[0] if isinstance(out, (tuple, list)) else out
    return keep


def _level(location: int, shape, sizes) -> int:
    """A flat index into (1, A, K) logits → the FPN level (0 = P3) of its point or anchor."""
    cells = [int(h) * int(w) for h, w in sizes]
    per_cell = shape[1] // sum(cells)
    point = location // shape[2]
    for level, c in enumerate(cells):
        if point < c * per_cell:
            return level
        point -= c * per_cell
    return len(cells) - 1


def mass_inside(heat: np.ndarray, box) -> float:
    """The share of a map's mass inside a normalised box (a uniform map's share is the box's area)."""
    h, w = heat.shape
    x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(box, (w, h, w, h)))
    total = float(heat.sum())
    return float(heat[y1:y2, x1:x2].sum()) / total if total > 0 else 0.0
