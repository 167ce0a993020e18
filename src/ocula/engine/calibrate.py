"""After training: fit the task's calibration (a temperature per model, or per class for multi-label)
on the validation split for each saved bundle, record it in the bundle, write RUN/calibration.json.

Logits come from the saved weights, through the task's forward, exactly as a loaded model predicts.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ocula import bundle
from ocula.engine import distributed as dist
from ocula.engine import setup
from ocula.log import logger
from ocula.run_dir import RunDir
from ocula.weights_file import load_into, read_safetensors


def calibrate_bundles(trainer) -> dict:
    """Fit the task's calibration (a temperature) on the validation split for each saved bundle
    (best, last), record it in the bundle, and write RUN/calibration.json."""
    run = RunDir(trainer.run_dir)
    cross_fit = getattr(trainer, "cross_fit", None)  # out-of-fold logits (engine.cross_fit) stand in for val
    if not trainer.task.calibrates or trainer.cfg.run.calibrate == "none" or (
            trainer.val_samples is None and cross_fit is None):
        why = ("--calibrate none" if trainer.cfg.run.calibrate == "none" else "no validation split to fit on"
               if trainer.task.calibrates else f"the {trainer.task.name} task has no calibration")
        result = {"method": "none", "fitted": False, "reason": why}
        run.write_calibration(result)
        return result
    fits = {}
    for tag in ("last", "best"):  # best last: the task keeps the best bundle's state afterwards
        path = run.weights(tag)
        if not path.is_file():
            continue
        if cross_fit is not None:
            logits, labels, groups = cross_fit.held_out(tag)
            fit = trainer.task.fit_calibration(logits, labels, groups=groups)
        else:
            logits, labels = held_out_logits(trainer, path)
            fit = trainer.task.fit_calibration(logits, labels)
        meta = bundle.update_meta(path, trainer.task.bundle_fields())
        if tag == "best":
            run.write_model(meta)
        section = trainer.task.selective_report(labels, trainer.task.probabilities(torch.from_numpy(logits)).numpy(),
                                             logits).get("calibration", {})  # the task's own measures
        fits[tag] = {**fit, "before": section.get("before"), "after": section.get("after")}
    best = fits.get("best") or fits.get("last") or {"fitted": False, "reason": "no saved bundle"}
    result = {"method": "temperature" if best.get("fitted") else "none",
              "split": "out-of-fold (cross-fit)" if cross_fit is not None else "val",
              **{k: best.get(k) for k in ("fitted", "temperature", "reason", "samples", "before", "after")},
              "bundles": {tag: {k: v for k, v in fit.items() if k not in ("before", "after")}
                          for tag, fit in fits.items()}}
    run.write_calibration(result)
    logger.info(f"calibration: {best.get('reason')}" + (
        f"; {result['split']} ECE {best['before']['ece']:.4f} → {best['after']['ece']:.4f}" if best.get("fitted") else ""))
    return result

def saved_model(trainer, weights: Path):
    """A copy of the run's model holding the weights of a saved bundle → (model, the file's metadata)."""
    model = copy.deepcopy(dist.unwrap(trainer.eval_model))
    metadata, tensors = read_safetensors(weights)
    load_into(weights, model, tensors, "this run's model")
    return model, metadata


def whole_split_loader(trainer, samples):
    """Eval batches of every sample on this one rank (trainer.eval_loader shards them across ranks)."""
    return setup.make_loader(samples, trainer.contract, trainer.cfg, train=False,
                             num_classes=len(trainer.classes), rank=0, world=1, modality=trainer.modality)


@torch.inference_mode()
def held_out_logits(trainer, weights: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validation logits of a saved bundle, as the saved model predicts them (the task's forward)."""
    model, _ = saved_model(trainer, weights)
    logits, labels, _ = split_logits(trainer, model, trainer.val_samples)
    return logits, labels


@torch.inference_mode()
def split_logits(trainer, model, samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, sample indices) of every readable sample, in sample order, through the task's forward."""
    model.eval()
    parts, labels, idx = [], [], []
    for batch in whole_split_loader(trainer, samples):
        if batch[0] is None:
            continue
        x = trainer.modality.to_device(batch[0], trainer.device, trainer.cfg.run.channels_last)
        with trainer.autocast():
            parts.append(trainer.task.forward(model, x).float().cpu())
        labels.append(batch[1])
        idx.append(batch[2])
    order = torch.argsort(torch.cat(idx))
    return (torch.cat(parts)[order].numpy(), torch.cat(labels)[order].numpy(), torch.cat(idx)[order].numpy())
