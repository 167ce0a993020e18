"""Several labels per sample: a sigmoid per class, binary cross-entropy (or ASL) on multi-hot targets,
mAP as the validation metric, per-class thresholds and temperatures fitted on held-out data (a class's
own only with enough positives and negatives and a gain over T = 1 / 0.5 out of sample).

    task = MultiLabelTask(loss="bce", pos_weight=None, threshold_policy="f1")
    task.fit_calibration(val_logits, val_labels)   # temperatures (BCE NLL), then thresholds on them
    task.label_set(probs, classes)                 # [(label, prob), ...] above each class's threshold

Targets are multi-hot (B, K); mixup and cutmix blend them into soft ones, which both losses take.
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ocula.evaluation.multilabel import (calibration_measures, fit_class_temperatures, fit_class_thresholds,
                                         multilabel_report, pr_curves)
from ocula.tasks.base import Task
from ocula.tasks.folds import Folds, iterative_folds, shuffled_folds

ASL = {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05}  # the paper's defaults (Ridnik et al. 2021)


def asymmetric_loss(logits: torch.Tensor, target: torch.Tensor, gamma_neg: float = 4.0, gamma_pos: float = 0.0,
                    clip: float = 0.05) -> torch.Tensor:
    """ASL: focusing that down-weights easy negatives (γ−) and shifts their probability by `clip`; (B, K) → mean
    over labels. With γ− = γ+ = 0 and clip 0 it is BCE."""
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp_min(0) if clip > 0 else p
    pos = target * torch.log(p.clamp_min(1e-8)) * (1 - p).pow(gamma_pos)
    neg = (1 - target) * torch.log((1 - p_neg).clamp_min(1e-8)) * p_neg.pow(gamma_neg)
    return -(pos + neg).mean()


class MultiLabelTask(Task):
    name = "multilabel"
    monitor = "mAP"
    multilabel = True
    exclusive_classes = False  # an error is per label, not per sample
    reads_labels_as = "multilabel"  # one label per sample is read as a set of one
    label_outputs = ("labels",)  # each probability at or above its class's threshold
    imbalance_remedies = "weighted-loss or sampler"

    @classmethod
    def default_augment(cls) -> tuple[str, str]:
        """In a multi-label image the labelled objects sit anywhere, edges included, and a shift can crop one out
        while its label stays (measured: Fashion-MNIST mosaics, val mAP 0.82 without against 0.72 with light
        shifts; docs/benchmarks.md, issue 16)."""
        return "none", ("augment none: multilabel data (augment=auto; a shift can crop a labelled object out of "
                        "the frame); --augment light to shift anyway")

    def describe_inferred(self) -> str:
        return ("task multilabel: inferred from the labels (rows with several labels, or none); "
                "sigmoid per class, mAP picks the best checkpoint")

    def __init__(self, loss: str = "bce", pos_weight: Optional[torch.Tensor] = None, threshold_policy: str = "f1",
                 thresholds: Optional[list] = None, temperature: Optional[list] = None):
        self.loss_name, self.pos_weight, self.threshold_policy = loss, pos_weight, threshold_policy
        self.thresholds = None if thresholds is None else torch.tensor(thresholds, dtype=torch.float32)
        self.temperature = None if temperature is None else torch.tensor(temperature, dtype=torch.float32)

    # ------------------------------------------------------------------ training
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        if self.loss_name == "asl":
            return asymmetric_loss(logits, target, **ASL)
        weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.temperature is not None:
            logits = logits / self.temperature.to(logits.device)
        return torch.sigmoid(logits)

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> int:
        """Samples whose whole label set is right at 0.5 (subset accuracy), soft targets read at 0.5."""
        return int(((logits > 0) == (target > 0.5)).all(1).sum())

    def hard_predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """Multi-hot (N, K) at probability 0.5."""
        return (logits > 0).long()

    def chance_accuracy(self, labels: torch.Tensor, num_classes: int) -> float:
        """Per-label accuracy of always answering each label's majority."""
        freq = labels.float().mean(0)
        return float(torch.maximum(freq, 1 - freq).mean())

    def audit_score(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """The share of the K binary labels the probabilities get right at 0.5."""
        return float(((probs > 0.5) == labels).mean())

    def fold_splitter(self, labels, k: int, seed: int) -> Folds:
        """Shuffled folds, as the audit has always made them (`folds.iterative_folds` keeps each label's share
        but is not the default yet: see tasks.folds)."""
        return shuffled_folds(len(labels), k, seed)

    def cross_fit_folds(self, labels, k: int, seed: int) -> Folds:
        """Cross-fitting chooses thresholds and temperatures per class on the held-out logits: iterative
        stratification keeps every label's positives in every fold, rare ones included."""
        return iterative_folds(labels, k, seed)

    def quick_model_options(self) -> dict:
        return {"task": self.name, "augment": self.default_augment()[0]}

    def score(self, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
        t = None if self.thresholds is None else self.thresholds.tolist()
        return {**multilabel_report(labels, probs, classes, t), "pr_curves": pr_curves(labels, probs, classes)}

    # ------------------------------------------------------------------ prediction
    def threshold_vector(self, k: int) -> torch.Tensor:
        return self.thresholds if self.thresholds is not None else torch.full((k,), 0.5)

    def top(self, probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
        p, i = probs.topk(min(k, len(classes)))
        return [(classes[j], float(q)) for j, q in zip(i.tolist(), p.tolist())]

    def label_mask(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, K) probabilities → (B, K) bool: at or above each class's threshold."""
        return probs >= self.threshold_vector(probs.shape[-1]).to(probs.device)

    def label_set(self, probs: torch.Tensor, classes: list[str]) -> list[tuple[str, float]]:
        """The labels at or above their thresholds, most probable first."""
        above = probs >= self.threshold_vector(len(classes)).to(probs.device)
        chosen = [(classes[j], float(probs[j])) for j in torch.nonzero(above).flatten().tolist()]
        return sorted(chosen, key=lambda t: -t[1])

    def label_output(self, name: str, probs: torch.Tensor) -> torch.Tensor:
        if name not in self.label_outputs:
            return super().label_output(name, probs)
        return self.label_mask(probs)

    def export_properties(self, meta: dict) -> dict:
        """+ the thresholds: sigmoid(logits / T_k) >= threshold_k is the label set."""
        props = super().export_properties(meta)
        if meta.get("thresholds") is not None:
            props["ocula.thresholds"] = json.dumps(meta["thresholds"])
        return props

    # ------------------------------------------------------------------ calibration and the bundle
    def fit_calibration(self, logits, labels, groups=None) -> dict:
        """Per-class temperatures (BCE NLL), then per-class thresholds on the calibrated probabilities; each
        only for a class with the support and a gain over the default out of sample (`groups`: the caller's
        folds, e.g. those of out-of-fold logits)."""
        logits = np.asarray(logits, dtype=np.float32)  # numpy or tensors
        labels = (np.asarray(labels) > 0.5).astype(np.float32)
        report = fit_class_temperatures(logits, labels, groups)
        self.temperature = torch.tensor(report["temperature"], dtype=torch.float32) if report["fitted"] else None
        probs = self.probabilities(torch.from_numpy(logits)).numpy()
        thresholds, threshold_rows = fit_class_thresholds(labels, probs, self.threshold_policy, groups)
        self.thresholds = torch.tensor(thresholds, dtype=torch.float32)
        per_class = [{"class": k, "temperature": t, "threshold": c}
                     for k, (t, c) in enumerate(zip(report.pop("per_class"), threshold_rows))]
        return {**report, "samples": int(labels.shape[0]), "thresholds": self.thresholds.tolist(),
                "threshold_policy": self.threshold_policy, "per_class": per_class,
                "temperature": None if self.temperature is None else self.temperature.tolist()}

    def selective_report(self, labels, probs, logits) -> dict:
        """The calibration section: per-label measures at T = 1 (plain sigmoid) and at the fitted temperatures."""
        before = calibration_measures(labels, torch.sigmoid(torch.as_tensor(np.asarray(logits)).float()).numpy())
        t = self.temperature
        return {"calibration": {"method": "temperature-per-class" if t is not None else "none",
                                "temperature": 1.0 if t is None else float(t.mean()),
                                "temperatures": None if t is None else t.tolist(), "bins": 15,
                                "before": before, "after": calibration_measures(labels, probs)}}

    def bundle_fields(self) -> dict:
        return {"task": self.name, "loss": self.loss_name, "threshold_policy": self.threshold_policy,
                "thresholds": None if self.thresholds is None else self.thresholds.tolist(),
                "calibration": None if self.temperature is None else {"method": "temperature-per-class",
                                                                      "temperature": self.temperature.tolist()}}

    def restore(self, meta: dict) -> None:
        if meta.get("thresholds") is not None:
            self.thresholds = torch.tensor(meta["thresholds"], dtype=torch.float32)
        calibration = meta.get("calibration") or {}
        if calibration.get("temperature") is not None:
            self.temperature = torch.tensor(calibration["temperature"], dtype=torch.float32)
        self.loss_name = meta.get("loss", self.loss_name)
        self.threshold_policy = meta.get("threshold_policy", self.threshold_policy)
