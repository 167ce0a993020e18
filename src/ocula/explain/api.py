"""Explain predictions: one call from a run (or Classifier) and images to maps in [0, 1].

    maps = ocula.explain.explain("runs/shoes", ["a.jpg", "b.jpg"])               # default method
    maps = clf.explain(images, method="gradcam++", target="sandal")
    summary = explain_to_folder("runs/shoes", ["photos/"], "maps/")               # PNGs + maps.npz

Three levels, each built from the one below:
    explain_to_folder  → overlays, a grid, maps.npz and summary.json on disk (what the CLI calls)
    explain_images     → Explanation objects (map, label, probability, the image the model saw)
    explain_tensor     → preprocessed batch (B, C, H, W) or clips (B, T, C, H, W) → (maps, logits)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn

from ocula import log
from ocula.errors import BadImageError, OculaError, did_you_mean
from ocula.explain import overlay
from ocula.explain.boxes import box_map, box_method
from ocula.explain.cam import CAM_METHODS, cam_maps
from ocula.explain.reference import REFERENCE_METHODS, reference_maps
from ocula.explain.rollout import attention_gradient_maps, rollout_maps
from ocula.explain.targets import default_method, resolve_target_layer
from ocula.inference.predictor import Classifier
from ocula.io import write_json, write_npz
from ocula.modality import Modality, for_module

METHODS = CAM_METHODS + ("rollout", "attn-grad") + REFERENCE_METHODS


@dataclass
class Explanation:
    source: str
    map: Optional[np.ndarray] = None  # (H, W), or (T, H, W) for a clip; float32 in [0, 1]
    target: Optional[int] = None  # the explained class index
    label: Optional[str] = None  # … and its name
    prob: Optional[float] = None  # … and its probability
    predicted: Optional[str] = None  # the model's top class (differs from label when a target is forced)
    predicted_prob: Optional[float] = None
    view: Optional[np.ndarray] = None  # uint8 (H, W, C), or (T, H, W, C): the pixels the model saw
    error: Optional[str] = None
    box: Optional[list] = None  # detection: the explained box, x1, y1, x2, y2 in [0, 1]; prob is its score
    layer: Optional[str] = None  # detection: the CAM layer of this box (the stage of its FPN level)
    note: Optional[str] = None  # detection: why the map is blank, when it is

    def to_dict(self) -> dict:
        row = {k: getattr(self, k) for k in ("source", "target", "label", "prob", "predicted",
                                               "predicted_prob", "error")}
        if self.box is not None:
            row.update(box=self.box, score=self.prob, layer=self.layer, note=self.note)
        return row


# ---------------------------------------------------------------------------- level 1: tensors
def explain_tensor(model: nn.Module, x: torch.Tensor, method: str = "auto", classes=None,
                   layer: Optional[str] = None, head_fusion: str = "mean", discard_ratio: float = 0.0,
                   window: Optional[int] = None, steps: int = 32) -> tuple[np.ndarray, torch.Tensor]:
    """Preprocessed batch → (maps in [0, 1] at input size, logits (B, K) on the CPU).

    `classes`: None (each input's predicted class), an int, or one index per input.
    `layer`: CAM methods only; a module name overriding the architecture's default target layer.
    """
    method = resolve_method(model, method)
    if layer and method not in CAM_METHODS:
        raise OculaError(f"--layer applies to CAM methods ({', '.join(CAM_METHODS)}), not '{method}'")
    device = next(model.parameters()).device
    x = x.to(device)
    chosen = _class_tensor(classes, x.shape[0])
    with _eval_mode(model):
        if method in CAM_METHODS:
            return cam_maps(model, x, chosen, method, resolve_target_layer(model, layer))
        if method == "rollout":
            return rollout_maps(model, x, head_fusion, discard_ratio)
        if method == "attn-grad":
            return attention_gradient_maps(model, x, chosen)

        return reference_maps(model, x, chosen, method, window=window, steps=steps)


def resolve_method(model: nn.Module, method: str) -> str:
    name = (method or "auto").lower().replace("_", "").replace("-", "")
    aliases = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "integratedgradients": "ig",
               "attentionrollout": "rollout", "attngrad": "attn-grad", "chefer": "attn-grad"}
    name = aliases.get(name, name)
    if name == "auto":
        return default_method(model)
    if name not in METHODS:
        raise OculaError(f"unknown method '{method}'{did_you_mean(method, METHODS)} "
                         f"(choose from auto, {', '.join(METHODS)})")
    return name


def _class_tensor(classes, n: int) -> Optional[torch.Tensor]:
    if classes is None:
        return None
    t = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    return t.expand(n).clone() if t.numel() == 1 else t


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Explain in eval mode (dropout off, BatchNorm frozen); a model in training mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- level 2: images
def explain_images(model_or_run, images, method: str = "auto", target=None, layer: Optional[str] = None,
                   batch_size: int = 16, progress: bool = True, **options) -> list[Explanation]:
    """Paths, folders, globs, PIL images, arrays or a preprocessed tensor → one Explanation each.

    Unreadable files become Explanations with `.error` set; the others are explained in batches.
    `target`: None (the predicted class), a class name or an index, the same for every image. A multilabel
    model with no target draws one map per predicted label (each label at or above its threshold; the top
    class when none is): one Explanation per (input, label), in input order.
    """

    clf = as_classifier(model_or_run)
    index = target_index(target, clf.classes)
    if clf.task.explains_boxes:
        return _explain_boxes(clf, images, box_method(method), index, layer, progress)
    results, tensors = _load_inputs(clf, images)
    ready = [i for i, r in enumerate(results) if r.error is None]
    starts = range(0, len(ready), batch_size)
    for start in log.progress(starts, desc=f"explain ({resolve_method(clf.model, method)})", unit="batch",
                          disable=not progress or len(starts) < 2):
        chunk = ready[start:start + batch_size]
        x = torch.stack([tensors[i] for i in chunk])
        maps, logits = explain_tensor(clf.model, x, method, index, layer, **options)
        probs = clf.task.probabilities(logits)
        for i, m, p in zip(chunk, maps, probs):
            _fill(results[i], m, p, index, clf.classes)
            if index is None and clf.task.label_set(p, clf.classes) is not None:
                results[i] = _per_label(clf, results[i], tensors[i], p, method, layer, options)
        del maps, logits, x
    return [r for item in results for r in (item if isinstance(item, list) else [item])]


def _explain_boxes(clf, images, method: str, index: Optional[int], layer, progress: bool) -> list[Explanation]:
    """A detector: per image, the map of its best box (of class `index` when given); explain.boxes."""
    results, tensors = _load_inputs(clf, images)
    ready = [i for i, r in enumerate(results) if r.error is None]
    for i in log.progress(ready, desc=f"explain boxes ({method})", unit="image",
                          disable=not progress or len(ready) < 2):
        found = box_map(clf.model, tensors[i].to(clf.device), index, method, layer)
        r = results[i]
        if "error" in found:
            r.error = found["error"]
            continue
        r.map, r.box, r.layer, r.note = found["map"], found["box"], found["layer"], found["note"]
        r.target, r.prob = found["class"], found["score"]
        r.label = clf.classes[r.target]
        r.predicted, r.predicted_prob = clf.classes[found["top"][0]], found["top"][1]
    return results


def _per_label(clf, first: Explanation, x: torch.Tensor, probs: torch.Tensor, method: str, layer, options) -> list:
    """A multilabel prediction: one Explanation per label in its set (the top class's map is `first`)."""
    out = []
    for name, _ in clf.task.label_set(probs, clf.classes) or [(first.label, first.prob)]:
        if name == first.label:
            out.append(first)
            continue
        j = clf.classes.index(name)
        heat, _ = explain_tensor(clf.model, x[None], method, j, layer, **options)
        r = Explanation(first.source, view=first.view)
        _fill(r, heat[0], probs, j, clf.classes)
        out.append(r)
    return out


def explain(model_or_run, images, method: str = "auto", target=None, layer: Optional[str] = None,
            **options) -> list[np.ndarray]:
    """Maps in [0, 1] at the model's input resolution, one per image ((T, H, W) per clip).

    `model_or_run`: a Classifier, a run directory or a .safetensors bundle — or a bare nn.Module
    when `images` is an already preprocessed tensor. Unreadable images raise OculaError here; use
    `explain_images` to get them reported instead.
    """
    if isinstance(model_or_run, nn.Module):
        if not isinstance(images, torch.Tensor):
            raise OculaError("a bare nn.Module needs a preprocessed tensor; pass a run or Classifier for files")
        x = for_module(model_or_run).batch(images)
        if isinstance(target, str):
            raise OculaError("a bare nn.Module knows no class names; pass target as an index")
        return list(explain_tensor(model_or_run, x, method, target, layer, **options)[0])
    results = explain_images(model_or_run, images, method, target, layer, progress=False, **options)
    bad = [r for r in results if r.error]
    if bad:
        raise OculaError(f"{bad[0].source}: {bad[0].error}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return [r.map for r in results]


def as_classifier(model_or_run):
    if isinstance(model_or_run, Classifier):
        return model_or_run
    if isinstance(model_or_run, (str, Path)):
        return Classifier.load(model_or_run)
    raise OculaError(f"expected a run directory, a .safetensors bundle or a Classifier, "
                     f"got {type(model_or_run).__name__}")


def target_index(target, classes: list[str]) -> Optional[int]:
    """None, an index, or a class name (exact, else a digit string) → index; did-you-mean otherwise."""
    if target is None:
        return None
    if isinstance(target, str) and target in classes:
        return classes.index(target)
    if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.strip().lstrip("-").isdigit()):
        i = int(target)
        if not 0 <= i < len(classes):
            raise OculaError(f"target index {i} is out of range: the model has {len(classes)} classes")
        return i
    raise OculaError(f"unknown target class '{target}'{did_you_mean(str(target), classes)} "
                     f"(classes: {', '.join(classes[:10])}{' …' if len(classes) > 10 else ''})")


def _fill(result: Explanation, heat: np.ndarray, probs: torch.Tensor, index: Optional[int], classes) -> None:
    top = int(probs.argmax())
    chosen = top if index is None else index
    result.map = heat
    result.target, result.label, result.prob = chosen, classes[chosen], float(probs[chosen])
    result.predicted, result.predicted_prob = classes[top], float(probs[top])


def _load_inputs(clf, images) -> tuple[list[Explanation], list[Optional[torch.Tensor]]]:
    """→ (an Explanation per input, with .view or .error set; the normalised tensor per input).
    What one input is (an image, or a clip for a video model) is the model's modality's business."""
    if isinstance(images, torch.Tensor):
        x = clf.modality.batch(images)
        return [Explanation(f"<tensor {i}>", view=_unnormalise(t, clf.contract)) for i, t in enumerate(x)], list(x)
    results, tensors = [], []
    for item in _expand(clf, images):
        name = str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} {len(results)}>"
        try:
            sample = clf.preprocess(item)  # exactly what evaluation feeds the model
        except BadImageError as e:
            results.append(Explanation(name, error=e.reason))
            tensors.append(None)
            continue
        results.append(Explanation(name, view=_unnormalise(sample, clf.contract)))
        tensors.append(sample)
    if not results:
        raise OculaError(f"no {clf.modality.noun} to explain")
    return results, tensors


def _expand(clf, images) -> list:
    """Single items become a list; path strings may be folders, globs or CSV manifests."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    out = []
    for item in items:
        if isinstance(item, (str, Path)):
            paths, missing = clf.modality.expand_inputs([item])
            if missing:
                raise OculaError(f"{item}: {missing[0][1]}")
            out += paths
        else:
            out.append(item)
    return out


def _unnormalise(t: torch.Tensor, contract) -> np.ndarray:
    """A normalised tensor (…, C, H, W) → uint8 (…, H, W, C) for overlays."""
    mean = torch.tensor(contract.mean).view(-1, 1, 1)
    std = torch.tensor(contract.std).view(-1, 1, 1)
    pixels = ((t.detach().cpu().float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.movedim(-3, -1).numpy()


def explain_to_folder(model_or_run, inputs, out: Union[str, Path] = "maps", method: str = "auto", target=None,
                      layer: Optional[str] = None, batch_size: int = 16, cols: int = 4, **options) -> dict:
    """Explain inputs and write, under `out`: one overlay PNG per input, grid.png (several inputs),
    maps.npz (map_0000, … in input order) and summary.json. → the summary."""
    clf = as_classifier(model_or_run)
    chosen = box_method(method) if clf.task.explains_boxes else resolve_method(clf.model, method)
    results = explain_images(clf, inputs, chosen, target, layer, batch_size=batch_size, **options)
    out = Path(out)
    panels, rows, arrays = [], [], {}
    for i, r in enumerate(results):
        row = r.to_dict()
        if r.error is None:
            picture = _panel(r, clf.modality)  # a detection's box is drawn on it
            row["overlay"] = overlay.save_png(picture, out / f"{i:04d}_{_stem(r.source)}.png")
            row["map_key"] = f"map_{i:04d}"
            arrays[row["map_key"]] = r.map.astype(np.float16)  # 2 bytes a pixel is plenty for [0, 1]
            panels.append(picture)
        rows.append(row)
    if len(panels) > 1:
        overlay.save_png(overlay.grid(panels, cols), out / "grid.png")
    if arrays:
        write_npz(out / "maps.npz", arrays)
    layers = sorted({r.layer for r in results if r.layer})
    summary = {"model": str(getattr(model_or_run, "name", model_or_run)), "method": chosen,
               "layer": ", ".join(layers) if layers else layer if clf.task.explains_boxes
               else _layer_name(clf.model, chosen, layer),
               "target": target, "out": str(out),
               "explained": len(arrays), "errors": sum(1 for r in results if r.error), "items": rows}
    write_json(out / "summary.json", summary)
    return summary


def _panel(r: Explanation, modality: Modality):
    title = f"{r.label} {r.prob:.2f}" + ("" if r.label == r.predicted else f" (pred {r.predicted} {r.predicted_prob:.2f})")
    title += " (flat map)" if r.note else ""
    return overlay.sample_panel(modality.stills(r.view), modality.stills(r.map), title, box=r.box)


def _layer_name(model: nn.Module, method: str, layer: Optional[str]) -> Optional[str]:
    if method not in CAM_METHODS:
        return None

    return resolve_target_layer(model, layer).name


def _stem(source: str) -> str:
    stem = Path(source).stem if not source.startswith("<") else source.strip("<>").replace(" ", "_")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60] or "input"
