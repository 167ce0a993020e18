"""Cross-fitting for small data: decisions taken on out-of-fold predictions instead of one carved split.

    plan = plan_cross_fit(cfg, splits)          # None, or CrossFitPlan(folds=5, reason=...)
    result = run_cross_fit(trainer, plan)       # k runs of the same recipe, each scored on the fold it left out
    result.best_epoch, result.refit, result.held_out("best")

A folder of a few hundred images with no validation split used to lose a tenth of itself to a carved
split whose 15-100 images then chose the epoch, the head refit and the temperature: noise (issue 23:
ECE 0.17 on 150 face crops; a temperature fitted on 100 images that made 2,000 unseen ones worse).
Here every training image gets an out-of-fold logit at every epoch from a run that never saw it; the
epoch, the lp-ft head refit and the temperature are chosen on all of them, and the shipped model is then
trained on every image with the same recipe, keeping the chosen epoch. The folds run the recipe exactly
as the final run will (same schedule, same epochs), so what they measure at epoch e is what the final
run ships at epoch e, trained on (k-1)/k of the data instead of all of it.

The cost is k runs on (k-1)/k of the data before the final one. It is bounded: the first fold is timed,
and the plan keeps only as many folds as fit in the budget (at least two; with fewer, one fold is used as
a held-out split, and the final run still trains on every image).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ocula.config import TrainConfig
from ocula.data.samples import DatasetSplits, TensorSamples
from ocula.engine.callbacks import Callback
from ocula.engine.calibrate import split_logits, whole_split_loader
from ocula.engine.probe import can_probe, captured_inputs, fit_head, linear_head
from ocula.errors import OculaError
from ocula.log import logger
from ocula.run_dir import RunDir

# Training images (train + what would be carved): below, a carved 10 % split holds fewer than 120 images.
# Issue 23's failures were all there: 15 images could not calibrate at all, 30 dropped a good head refit,
# and a temperature fitted on 100 made 2,000 unseen images worse (ECE 0.035 → 0.049); at 120 the standard
# error of an accuracy of 0.9 is still 2.7 points.
SMALL_DATA = 1200
DEFAULT_FOLDS = 5
BUDGET_S = 1800.0  # seconds of fold training before the final run; past it, fewer folds


@dataclass
class CrossFitPlan:
    folds: int
    reason: str
    budget_s: float = BUDGET_S

    def to_dict(self) -> dict:
        return {"folds": self.folds, "reason": self.reason, "budget_s": self.budget_s}


def plan_cross_fit(cfg: TrainConfig, splits: DatasetSplits, world: int = 1) -> Optional[CrossFitPlan]:
    """--cross-fit auto: on when the validation split would be carved from fewer than SMALL_DATA training
    images; K: K folds whatever the size; off: the carved split, as before."""
    wanted = str(cfg.data.cross_fit).lower()
    if wanted == "off" or splits.train is None:
        return None
    carved = splits.val is None or splits.split_info.get("val_from") == "stratified"
    total = len(splits.train) + (len(splits.val) if splits.val is not None and carved else 0)
    if world > 1 or cfg.run.resume and not RunDir(cfg.run.resume).cross_fit.is_file():
        return None
    if wanted == "auto":
        if not carved:
            return None  # the data brought its own validation split
        if total >= SMALL_DATA:
            return None
        folds = DEFAULT_FOLDS
        why = f"{total} images and no validation split (cross-fitting below {SMALL_DATA})"
    else:
        folds = int(wanted)
        why = f"--cross-fit {folds}"
    if total < 2 * folds:
        return None
    smallest = _smallest_class(splits, carved)
    if smallest is not None and smallest < folds:
        # stratified folds need every class in every fold's held-out part (scikit-learn refuses more folds
        # than a class has images): auto uses fewer folds; an asked-for K that cannot be met is an error
        if wanted != "auto":
            raise OculaError(f"--cross-fit {folds}: a class has only {smallest} training images; "
                             f"use at most {max(smallest, 2)} folds, or --cross-fit off")
        if smallest < 2:
            return None
        folds, why = smallest, f"{why}; {smallest} folds: the smallest class has {smallest} images"
    return CrossFitPlan(folds, why, BUDGET_S)


def _smallest_class(splits: DatasetSplits, carved: bool) -> Optional[int]:
    """Images in the smallest class of single-label training data (with what would be carved); None for
    multi-label data (its folds are iterative, not scikit-learn's) or labels that cannot be counted."""
    if splits.multilabel:
        return None
    parts = [splits.train] + ([splits.val] if carved and splits.val is not None else [])
    try:
        found = [np.asarray(_labels(p)) for p in parts]
    except (TypeError, ValueError, AttributeError):
        return None
    if any(f.ndim != 1 or not np.issubdtype(f.dtype, np.integer) for f in found):
        return None  # multi-hot sets, boxes, numbers: not one class index per image
    labels = np.concatenate(found).astype(np.int64)
    counts = np.bincount(labels[labels >= 0])
    counts = counts[counts > 0]
    return int(counts.min()) if len(counts) else None


class HeldOutRecorder(Callback):
    """In a fold's run: after the probe and after each epoch, the logits of the held-out images, as the
    model stands and (lp-ft) with the head refitted on the fold's training images."""

    def __init__(self, refit: bool, c: float):
        self.refit, self.c = refit, c
        self.logits: dict[int, dict[str, np.ndarray]] = {}  # epoch (0: the probe) → variant → (n, K)

    def on_fit_start(self, trainer):
        if trainer.transfer.probe is not None:  # lp-ft's probe: the linear-probe strategy's held-out score
            self.logits[0] = held_out_logits(trainer, refit=False, c=self.c)

    def on_epoch_end(self, trainer, epoch, logs):
        self.logits[int(logs["epoch"])] = held_out_logits(trainer, self.refit, self.c)


@torch.no_grad()
def held_out_logits(trainer, refit: bool, c: float) -> dict[str, np.ndarray]:
    """{"idx": the held-out samples read (an unreadable file is skipped), "plain": their logits, "refit": …}."""
    model = trainer.eval_model
    if not can_probe(model, trainer.task):
        logits, _, idx = split_logits(trainer, model, trainer.val_samples)
        return {"idx": idx, "plain": logits}
    head = linear_head(model)
    x_val, _, idx = _features(trainer, model, trainer.val_samples)
    found = {"idx": idx, "plain": _linear(x_val, head.weight, head.bias)}
    if refit:
        x_train, y_train, _ = _features(trainer, model, trainer.train_samples)
        weight, bias, _, _ = fit_head(x_train, y_train, trainer.task, head.out_features, c)
        found["refit"] = _linear(x_val, weight, bias)
    return found


def _linear(x: torch.Tensor, weight: torch.Tensor, bias) -> np.ndarray:
    out = x.double() @ weight.detach().double().T
    if bias is not None:
        out = out + bias.detach().double()
    return out.float().numpy()


def _features(trainer, model, samples) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    parts = captured_inputs(trainer, model, whole_split_loader(trainer, samples))
    idx = torch.cat([p[2] for p in parts])
    order = torch.argsort(idx)
    return (torch.cat([p[0] for p in parts])[order].double(), torch.cat([p[1] for p in parts])[order],
            idx[order].numpy())



@dataclass
class CrossFitResult:
    plan: CrossFitPlan
    labels: np.ndarray  # (N,) or (N, K), the training images' labels in training order
    groups: np.ndarray  # (N,) the fold each image was held out in
    logits: dict  # epoch → variant → (N, K) out-of-fold logits
    best_epoch: int  # 1-based; the final run keeps this epoch as `best`
    last_epoch: int
    refit: Optional[bool]  # lp-ft: whether the shipped head is refitted (None: not a choice here)
    probe_only: bool = False  # lp-ft: the probe alone (epoch 0) scored above every fine-tuned epoch
    scores: dict = field(default_factory=dict)  # "epoch/variant" → out-of-fold score (the task's monitor)
    losses: dict = field(default_factory=dict)  # "epoch/variant" → out-of-fold NLL
    fold_s: list = field(default_factory=list)

    def variant(self) -> str:
        return "refit" if self.refit and not self.probe_only else "plain"

    def held_out(self, tag: str) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """(logits, labels, groups) of the bundle `tag` (best, last) as the final run will ship it."""
        epoch = 0 if self.probe_only else self.best_epoch if tag == "best" else self.last_epoch
        found = self.logits[epoch]
        groups = self.groups if len(np.unique(self.groups)) > 1 else None  # one fold: the check makes its own
        return found.get(self.variant(), found["plain"]), self.labels, groups

    def epoch_logs(self, epoch: int, monitor: str) -> dict:
        """What the final run logs as its validation columns for `epoch` (1-based; a probe-only run's one
        record is the probe): the out-of-fold score, under the run's `monitor` name (val/accuracy, val/mAP),
        and loss of the folds at that epoch."""
        key = "0/plain" if self.probe_only else f"{epoch}/{self.variant()}"
        key = key if key in self.scores else f"{epoch}/plain"
        return {monitor: self.scores.get(key), "val_loss": self.losses.get(key)}

    def to_dict(self) -> dict:
        return {**self.plan.to_dict(), "images": int(len(self.labels)), "best_epoch": self.best_epoch,
                "last_epoch": self.last_epoch, "refit": self.refit, "probe_only": self.probe_only,
                "scores": self.scores, "losses": self.losses,
                "fold_s": [round(s, 2) for s in self.fold_s], "summary": self.summary()}

    def summary(self) -> str:
        folds = f"cross-fit: {len(self.fold_s)} fold{'s' * (len(self.fold_s) > 1)}"
        if self.probe_only:
            return (f"{folds}; the probe alone scores {self.scores['0/plain']:.4f} out of fold on {len(self.labels)} "
                    "images, above every fine-tuned epoch: the run stops after the probe, fitted on every training "
                    "image")  # len(labels) counts the held-out images of the folds run, fewer than all when cut
        best = self.scores.get(f"{self.best_epoch}/{self.variant()}")
        refit = "" if self.refit is None else (", head refitted" if self.refit else ", fine-tuned head kept")
        probe = f" (the probe alone: {self.scores['0/plain']:.4f})" if "0/plain" in self.scores else ""
        return (f"{folds}, epoch {self.best_epoch} of {self.last_epoch}{refit}; out-of-fold score {best:.4f} "
                f"on {len(self.labels)} images{probe}")


def run_cross_fit(trainer, plan: CrossFitPlan) -> CrossFitResult:
    """Run the folds (quietly, each in RUN/cross_fit/fold-K), choose, and save the record."""
    samples = trainer.train_samples
    labels = _labels(samples)
    folds = trainer.task.cross_fit_folds(labels, plan.folds, trainer.cfg.run.seed)
    refit = trainer.transfer.wants_refit(trainer)
    groups = np.zeros(len(labels), dtype=np.int64)
    logits: dict[int, dict[str, np.ndarray]] = {}
    covered = np.zeros(len(labels), dtype=bool)
    fold_s: list[float] = []
    kept = len(folds)
    for k, (train_idx, held_idx) in enumerate(folds):
        if k >= kept:  # the first fold's time cut the plan to fit the budget
            break
        t0 = time.perf_counter()
        recorder = HeldOutRecorder(refit, trainer.cfg.transfer.probe_c)
        fold_cfg = _fold_config(trainer, k, len(train_idx) / len(labels))
        with _quiet():
            fold = type(trainer)(fold_cfg, callbacks=[recorder], splits=_fold_splits(trainer, train_idx, held_idx))
            fold.fit()
        trainer._note_skipped(fold.splits.skipped)  # a file only a fold read (streamed) is still named and counted
        for epoch, variants in recorder.logits.items():
            slot, rows = logits.setdefault(epoch, {}), held_idx[variants["idx"]]
            for name, value in variants.items():
                if name != "idx":
                    slot.setdefault(name, np.zeros((len(labels), value.shape[1]), dtype=np.float32))[rows] = value
        covered[rows] = True  # the last epoch's: a held-out file that could not be read has no logit
        groups[held_idx] = k
        fold_s.append(time.perf_counter() - t0)
        if k == 0:
            kept = _folds_in_budget(plan, fold_s[0], len(folds))
            logger.info(f"cross-fit: {kept} fold{'s' * (kept > 1)} × {fold_s[0]:.1f} s, then all {len(labels)} images "
                        f"({plan.reason}; --cross-fit off to carve a validation split instead)")
            if kept < len(folds):
                logger.info(f"cross-fit: {len(folds)} folds would take ~{fold_s[0] * len(folds) / 60:.0f} min, over "
                            f"the {plan.budget_s / 60:.0f}-min budget: {kept} of them")
        else:
            logger.info(f"cross-fit: fold {k + 1}/{kept} done in {fold_s[-1]:.1f} s")
    result = _choose(trainer, plan, labels[covered], groups[covered],
                     {e: {v: a[covered] for v, a in d.items()} for e, d in logits.items()}, refit, fold_s)
    save(trainer.run_dir, result)
    logger.info(result.summary())
    return result


def _folds_in_budget(plan: CrossFitPlan, first_s: float, folds: int) -> int:
    if first_s * folds <= plan.budget_s:
        return folds
    return max(1, min(folds, int(plan.budget_s // max(first_s, 1e-9))))


def _choose(trainer, plan, labels, groups, logits, refit: bool, fold_s) -> CrossFitResult:
    """The epoch: the latest within one standard error of the best out-of-fold score (the rule that picks
    the best checkpoint, on every image instead of a tenth). The refit: kept unless it scores more than
    one standard error below the fine-tuned head at that epoch."""
    task, classes = trainer.task, trainer.classes
    n = len(labels)
    scores, losses = {}, {}
    for epoch, variants in logits.items():
        for name, value in variants.items():
            report = task.score(labels, task.probabilities(torch.from_numpy(value)).numpy(), classes)
            scores[f"{epoch}/{name}"], losses[f"{epoch}/{name}"] = float(report[task.monitor]), report.get("nll")
    epochs = sorted(e for e in logits if e > 0) or [0]
    variant = "refit" if refit else "plain"
    series = [scores.get(f"{e}/{variant}", scores[f"{e}/plain"]) for e in epochs]
    top = max(series)
    tolerance = math.sqrt(max(top * (1 - top), 0.0) / max(1, n)) if 0 <= top <= 1 else 0.0
    best_epoch = max(e for e, s in zip(epochs, series) if s >= top - tolerance)
    keep = None
    if refit and f"{best_epoch}/refit" in scores:
        before, after = scores[f"{best_epoch}/plain"], scores[f"{best_epoch}/refit"]
        keep = after >= before - math.sqrt(max(before * (1 - before), 0.0) / max(1, n))
    shipped = scores.get(f"{best_epoch}/{'refit' if keep else 'plain'}", top)
    probe_only = epochs != [0] and scores.get("0/plain", -math.inf) > shipped  # fine-tuning lost to its own start
    return CrossFitResult(plan, labels, groups, logits, best_epoch, epochs[-1], keep, probe_only, scores, losses,
                          list(fold_s))


def _labels(samples) -> np.ndarray:
    if isinstance(samples, TensorSamples):
        return samples.labels.numpy()
    return np.asarray(samples.labels)


def _fold_splits(trainer, train_idx, held_idx) -> DatasetSplits:
    full = trainer.splits
    samples = trainer.train_samples
    return DatasetSplits(classes=list(full.classes), train=samples.subset(train_idx), val=samples.subset(held_idx),
                         source=full.source, multilabel=full.multilabel, modality=full.modality,
                         channels=full.channels, image_size=full.image_size, mean=full.mean, std=full.std,
                         split_info={"source": full.source, "val_from": "cross-fit fold"})


def _fold_config(trainer, k: int, share: float) -> TrainConfig:
    """The run's recipe as resolved (contract, flips, strategy), minus what only the final run does. The batch
    shrinks with the fold's `share` of the images so that an epoch is as many optimizer steps as the final
    run's: on small data the steps are the budget (120 images in batches of 64 are one step an epoch, and such
    folds stayed at chance on face crops where the final run, at two steps, learned)."""
    c = trainer.contract
    batch = max(1, round(trainer.cfg.optim.batch_size * share))
    given = trainer.resolved.given  # the lr as given: a default follows the fold's batch (sgd), as it always did
    return trainer.cfg.replace(batch_size=batch, lr=given.optim.lr, head_lr=given.transfer.head_lr,
                               out=str(RunDir(trainer.run_dir).cross_fit_fold(k + 1)), cross_fit="off", img_size=c.input_size, channels=c.channels, hflip=trainer.flips["hflip"]["use"],
                               time_flip=trainer.flips["time_flip"]["use"], calibrate="none", refit_head=False,
                               patience=None, track=None, report=False, resume=None)


class _quiet:
    """Folds log at warning level: their plans and progress would repeat the final run's k times."""

    def __enter__(self):
        self.level = logger.level
        logger.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        logger.setLevel(self.level)


def save(run_dir, result: CrossFitResult) -> None:
    run = RunDir(run_dir)
    path = run.cross_fit_held_out
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"e{e}_{v}": a for e, d in result.logits.items() for v, a in d.items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, labels=result.labels, groups=result.groups, **arrays)
    tmp.replace(path)
    run.write_cross_fit(result.to_dict())


def load(run_dir, plan: CrossFitPlan) -> CrossFitResult:
    """A resumed run's cross-fit, as it was chosen when the run started."""
    run = RunDir(run_dir)
    record = run.read_cross_fit()
    try:
        if record is None:
            raise OSError(f"no {run.cross_fit.name}")
        with np.load(run.cross_fit_held_out, allow_pickle=False) as found:
            logits: dict = {}
            for key in found.files:
                if key.startswith("e"):
                    epoch, variant = key[1:].split("_", 1)
                    logits.setdefault(int(epoch), {})[variant] = found[key]
            labels, groups = found["labels"], found["groups"]
    except (OSError, KeyError, ValueError) as e:
        raise OculaError(f"{run_dir}: the cross-fit's held-out logits cannot be read ({e})") from None
    return CrossFitResult(plan, labels, groups, logits, record["best_epoch"], record["last_epoch"], record["refit"],
                          record.get("probe_only", False), record.get("scores", {}), record.get("losses", {}),
                          record.get("fold_s", []))
