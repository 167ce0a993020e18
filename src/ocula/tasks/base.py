"""What a kind of head (a task) owns: the loss, the activation that turns logits into probabilities,
the metrics, the prediction format and what a saved model records. The engine only calls these.

    single-label   one class per sample: softmax, cross-entropy, accuracy   (tasks.single_label)
    margin         single-label trained with an additive margin on cosine logits (tasks.margin)
    multilabel     a set of labels per sample: sigmoid, BCE or ASL, mAP, per-class thresholds (tasks.multilabel)
    detection      boxes: the detector's own loss, COCO mAP, boxes out (tasks.detection)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ocula.config_sections import DEFAULT_EPOCHS
from ocula.tasks.folds import Folds, stratified_folds


class Task:
    name: str = ""
    monitor: str = "accuracy"  # the score() key that picks the best checkpoint (higher is better)
    multilabel: bool = False  # labels are sets (multi-hot (N, K)) rather than one class index per sample
    supports_ddp: bool = True
    linear_head: bool = True  # logits are the head's affine map: a probe can be fitted on cached features
    exclusive_classes: bool = True  # one true and one predicted class per sample: an error, a confusion, per sample
    reads_labels_as: str = "auto"  # resolve_data's `task=` when a saved model of this task scores a labelled split
    label_outputs: tuple = ()  # boolean (B, K) outputs beside logits and probabilities (serve's OIP, label_output)
    imbalance_remedies: str = "weighted-loss, sampler, logit-adjust or balanced-softmax"  # the --balance hint
    calibrates: bool = True  # fit_calibration can fit something on held-out outputs (engine.calibrate)
    cross_fits: bool = True  # small data without a validation split may be cross-fitted (engine.cross_fit)
    fidelity_max_drop = {"fp32": 0.5, "int8": 1.0}  # the export gate's default allowed drop (accuracy points)
    explains_boxes: bool = False  # `ocula explain` maps one detected box (explain.boxes), not a class score
    resizes_progressively: bool = False  # its augmentation takes --progressive (data.box_augment.train_size)

    # ------------------------------------------------------------------ before training (on the class)
    @classmethod
    def default_augment(cls) -> tuple[str, str]:
        """augment=auto → (preset, the reason said when it is chosen)."""
        return "light", "augment light: small shifts (augment=auto)"

    prepares_head: bool = False  # prepare_head changes a fresh classifier (the transfer plan calls it)

    @staticmethod
    def prepare_head(model: nn.Module) -> frozenset:
        """Make the fresh classifier ready for this task's loss; → ids of parameters that must stay fixed."""
        return frozenset()

    @staticmethod
    def default_epochs(images: int, batch: int, progressive: float = 1.0) -> tuple[int, str]:
        """(epochs, why) when the config names none, for `images` training images in batches of `batch`, the first
        half of the epochs at `progressive` of the input size (`default_progressive`)."""
        return DEFAULT_EPOCHS, "config_sections.DEFAULT_EPOCHS"

    @staticmethod
    def default_progressive(from_weights: bool) -> tuple[float, str]:
        """(fraction, why): progressive resizing when the config names none (data.box_augment.train_size)."""
        return 1.0, "no progressive resizing (the task's input size throughout)"

    @staticmethod
    def default_batch(images: int):
        """(batch size, why) when this task has its own rule; None: the engine's (engine.resolve)."""
        return None

    @staticmethod
    def default_lr(optimizer: str, from_weights: bool):
        """(peak lr, why) when this task has its own rule; None: TrainConfig.peak_lr's."""
        return None

    @staticmethod
    def default_model():
        """(model name, why) when the data need a model of their own kind (detection: a detector); None: the
        config's model."""
        return None

    @staticmethod
    def takes_model(family: str) -> bool:
        """Whether a model of this registry family can be trained for this task."""
        return family != "detection"

    @staticmethod
    def adapt_contract(contract):
        """The input contract chosen from the data, made right for this task's labels (detection: no crop)."""
        return contract

    @staticmethod
    def wrap_augment(augment, cfg=None, epoch=None):
        """The modality's batch augmentation, made to move this task's labels with the pixels (boxes); `cfg` and
        `epoch` (0-based; None: the run as a whole, for its description) for a task whose augmentation changes
        over the epochs (detection's progressive resizing)."""
        return augment

    @staticmethod
    def probe_samples(samples):
        """What the flip probe learns from (engine.flip_probe): the samples themselves, or e.g. box crops."""
        return samples

    @staticmethod
    def probe_contract(contract):
        return contract

    def describe_inferred(self) -> str:
        """The line said when `--task auto` chose this task from the labels; "" when there is nothing to say."""
        return ""

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Model input batch → the logits the loss sees."""
        return model(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor):
        """One training forward → (loss, logits for the running accuracy or None)."""
        logits = self.forward(model, x)
        return self.loss(logits, target), logits

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Inference logits (B, K) → probabilities (B, K)."""
        raise NotImplementedError

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> int:
        """How many samples of a training batch the logits get right (for the running accuracy)."""
        raise NotImplementedError

    def score(self, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
        """Labels and probabilities of a whole split → the evaluation report."""
        raise NotImplementedError

    def hard_predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) → what the labels look like: class indices (N,) here."""
        return logits.argmax(1)

    def chance_accuracy(self, labels: torch.Tensor, num_classes: int) -> float:
        """The accuracy of always answering the majority, for labels shaped like `hard_predictions`."""
        counts = torch.bincount(labels, minlength=num_classes).float()
        return float(counts.max() / counts.sum())

    def audit_score(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """How often out-of-fold probabilities agree with the given labels (the audit's quick-model accuracy)."""
        return float((probs.argmax(1) == labels).mean())

    def fold_splitter(self, labels, k: int, seed: int) -> Folds:
        """Labels of N samples → k pairs (train_idx, held_idx) that keep each fold's labels like the whole."""
        return stratified_folds(labels, k, seed)

    def cross_fit_folds(self, labels, k: int, seed: int) -> Folds:
        """The folds of cross-fitting (engine.cross_fit): by default the task's fold_splitter."""
        return self.fold_splitter(labels, k, seed)

    def quick_model_options(self) -> dict:
        """Config options a model trained on the audit's folds takes for this task's labels (as `ocula train`)."""
        return {}

    def top(self, probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
        """One sample's probabilities → [(label, prob), ...] best first: what predict returns."""
        raise NotImplementedError

    def label_set(self, probs: torch.Tensor, classes: list[str]):
        """One sample's probabilities → the predicted set [(label, prob), ...] (tasks that predict a set of
        labels, at their thresholds); None for one label per sample."""
        return None

    def boxes(self, probs: torch.Tensor, classes: list[str], size: tuple[int, int], min_score: float):
        """One sample's output → the boxes found in it (detection), in pixels of `size` (w, h); None: no boxes."""
        return None

    def label_output(self, name: str, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, K) → the boolean output `name` of `label_outputs`."""
        raise KeyError(f"the {self.name} task has no output {name!r}")

    def serve_outputs(self, num_classes: int) -> dict:
        """The FP32 outputs serve's OIP answers (besides `label_outputs`): name → shape after the batch axis
        (-1: varies); `serve_output` computes each. A request naming no output gets all of them."""
        return {"logits": [num_classes], "probabilities": [num_classes]}

    def serve_output(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs (B, ...) → the OIP output `name` of `serve_outputs`."""
        return logits if name == "logits" else self.probabilities(logits)

    def fidelity(self, ref: np.ndarray, new: np.ndarray, labels: np.ndarray, classes: list[str],
                 max_drop: float) -> dict:
        """The export gate: raw outputs of the reference model and of an exported copy on the same labelled
        images (labels as the model numbers its classes) → how far apart they are, with "passed", "reason" and
        "summary" (lines for the terminal). Here: top-1 agreement and the accuracy drop in points."""
        ref_top, new_top = ref.argmax(1), new.argmax(1)
        acc_ref, acc_new = float((ref_top == labels).mean()), float((new_top == labels).mean())
        delta = round((acc_ref - acc_new) * 100, 6)
        report = {"images": int(len(labels)), "max_abs_logit_diff": float(np.abs(ref - new).max()),
                  "mean_abs_logit_diff": float(np.abs(ref - new).mean()),
                  "top1_agreement": float((ref_top == new_top).mean()), "accuracy_pytorch": acc_ref,
                  "accuracy_exported": acc_new, "delta_accuracy_points": delta, "max_drop_points": max_drop,
                  "passed": bool(delta <= max_drop)}
        report["reason"] = None if report["passed"] else (
            f"accuracy gate failed: accuracy dropped {delta:.2f} points "
            f"({acc_ref * 100:.2f}% → {acc_new * 100:.2f}%), more than the {max_drop:g} allowed")
        report["summary"] = [
            f"max |Δlogit| {report['max_abs_logit_diff']:.3g}   top-1 agreement {report['top1_agreement'] * 100:.2f}%",
            f"accuracy PyTorch {acc_ref * 100:.2f}%  exported {acc_new * 100:.2f}%  Δ {delta:+.2f} points "
            f"(max {max_drop:g})"]
        return report

    def export_properties(self, meta: dict) -> dict:
        """A saved model's meta → the ONNX metadata a runtime needs to read the graph's logits as this task does:
        probabilities are the activation of logits / temperature."""
        return {"ocula.task": str(meta.get("task", self.name)),
                "ocula.temperature": str((meta.get("calibration") or {}).get("temperature", 1.0))}

    # ------------------------------------------------------------------ calibration (issue 12)
    def fit_calibration(self, logits: torch.Tensor, labels: torch.Tensor, groups=None) -> dict:
        """Fit the post-hoc calibration on held-out logits (N, K) and labels; → a report dict with
        "fitted" (bool) and "reason". Sets the state that `probabilities` applies and
        `bundle_fields` records. The default: no calibration."""
        return {"fitted": False, "reason": f"the {self.name} task has no calibration"}

    def selective_report(self, labels, probs, logits) -> dict:
        """Extra evaluation sections from probabilities and raw logits: calibration before and after,
        the risk–coverage curve. The default: none."""
        return {}

    def evaluation_extras(self, labels, probs, classes: list[str], names: list) -> dict:
        """What `ocula evaluate` keeps beside `score`'s report to draw its task's pictures (JSON; `names`: each
        row's path). The default: nothing (classification's pictures come from the report itself)."""
        return {}

    def bundle_fields(self) -> dict:
        """What a saved model records about its head (calibration state included)."""
        return {"task": self.name}

    def restore(self, meta: dict) -> None:
        """Take back what `bundle_fields` recorded (calibration, thresholds) from a saved model's meta."""
