"""After lp-ft: the linear classifier of each saved bundle refitted on the features fine-tuning left.

    refit = refit_heads(trainer)     # before calibration; rewrites weights/{last,best}.safetensors

Fine-tuning moves the backbone, and the head follows by a few dozen SGD steps on augmented images. The
probe that started the run (engine.probe) is the optimum of the L2-regularised logistic loss on the
features it saw; this is the same fit again on the features the run ended with (un-augmented training
images, eval mode), so the shipped head is the optimum for the shipped backbone. Retraining only the
last layer after fine-tuning is Kirichenko et al. 2022's "deep feature reweighting" step. Measured in
docs/benchmarks.md (issue 13, 30 Fashion-MNIST images per class): alone it moved a good run by +0.2
points on average, within the noise, but it repaired heads that fine-tuning had left badly placed
(+1.2 to +4.3 points on three of four such runs); with fp32 fine-tuning the default gained 1.8 points
over five training subsets. The refit is kept unless the validation split scores it worse than the
fine-tuned head by more than one standard error, the tolerance that picks the best checkpoint.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

from ocula import bundle
from ocula.engine.calibrate import saved_model, whole_split_loader
from ocula.engine.probe import captured_inputs, fit_head, linear_head
from ocula.log import logger
from ocula.run_dir import RunDir


def refit_heads(trainer, c: float = 1.0, decided: Optional[str] = None) -> dict:
    """Refit the head of every saved bundle (last, best) → the record written to RUN/head_refit.json.
    When the best epoch is the last, both files hold the same backbone: it is fitted once. `decided`: the
    refit was already chosen on out-of-fold predictions (engine.cross_fit); this is the reason to record."""
    run = RunDir(trainer.run_dir)
    bundles, fitted = {}, None
    same = trainer.history and trainer.best_epoch + 1 == trainer.history[-1]["epoch"]
    for tag in ("best", "last"):
        path = run.weights(tag)
        if path.is_file():
            bundles[tag], fitted = _refit_one(trainer, path, c, fitted if same else None, decided)
    best = bundles.get("best") or bundles.get("last") or {"kept": False, "reason": "no saved bundle"}
    result = {**best, "bundles": bundles}
    run.write_head_refit(result)
    logger.info(f"head refit: {best['reason']}")
    return result


def _refit_one(trainer, path: Path, c: float, fitted: Optional[tuple] = None,
               decided: Optional[str] = None) -> tuple[dict, tuple]:
    """→ (the record, (weight, bias, record) to reuse for a file with the same backbone)."""
    t0 = time.perf_counter()
    model, metadata = saved_model(trainer, path)
    head = linear_head(model)
    if fitted is None:
        fitted = _fit(trainer, model, head, c)
        if decided is not None:
            fitted = (*fitted[:2], {**fitted[2], "kept": True, "reason": decided})
    weight, bias, record = fitted
    record = {**record, "seconds": time.perf_counter() - t0}
    if record["kept"]:
        with torch.no_grad():
            head.weight.copy_(weight.to(head.weight))
            if head.bias is not None:
                head.bias.copy_(bias.to(head.bias))
        meta = {**bundle.parse_meta(metadata, path), "head_refit": {k: v for k, v in record.items() if k != "seconds"}}
        bundle.save_weights(path, model, meta)
    return record, fitted


def _fit(trainer, model, head, c: float) -> tuple:
    feats, targets = _features(trainer, model, trainer.train_samples)
    weight, bias, steps, loss = fit_head(feats, targets, trainer.task, head.out_features, c)
    val_before = val_after = None
    if trainer.val_samples is not None and len(trainer.val_samples):
        val_x, val_y = _features(trainer, model, trainer.val_samples)
        tuned_w = head.weight.detach().to(val_x)
        tuned_b = head.bias.detach().to(val_x) if head.bias is not None else 0.0
        val_before = _accuracy(trainer, val_x @ tuned_w.T + tuned_b, val_y)
        val_after = _accuracy(trainer, val_x @ weight.T.to(val_x) + bias.to(val_x), val_y)
    keep, reason = _decide(val_before, val_after, len(trainer.val_samples or ()))
    return weight, bias, {"images": len(feats), "steps": steps, "train_loss": loss, "c": c,
                          "val_acc_before": val_before, "val_acc_after": val_after, "kept": keep, "reason": reason}


def _features(trainer, model, samples) -> tuple[torch.Tensor, torch.Tensor]:
    parts = captured_inputs(trainer, model, whole_split_loader(trainer, samples))
    return torch.cat([p[0] for p in parts]).double(), torch.cat([p[1] for p in parts])


def _accuracy(trainer, logits: torch.Tensor, targets: torch.Tensor) -> float:
    return trainer.task.correct(logits.float(), targets) / max(1, len(targets))


def _decide(before: Optional[float], after: Optional[float], n: int) -> tuple[bool, str]:
    if before is None:
        return True, "refitted on the fine-tuned features (no validation split to check it on)"
    tolerance = (before * (1 - before) / max(1, n)) ** 0.5
    scores = f"validation accuracy {before:.4f} (fine-tuned head) → {after:.4f} (refitted)"
    if after >= before - tolerance:
        return True, f"refitted on the fine-tuned features; {scores}"
    return False, f"fine-tuned head kept: {scores}, more than one standard error ({tolerance:.4f}) worse"
