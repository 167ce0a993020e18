"""The sections of a training config, one concern each. Every field declares its default, its help
text and (where there are few options) its choices here, once: the CLI's options, the checks and
the modules that branch on a choice all read them from these fields.

A field's flat key (`--lr`, `lr=0.1`, `ocula.train(lr=0.1)`) is its name, unless `flat` says
otherwise: a section's own name is not repeated inside it (`cfg.model.name`, not `cfg.model.model`).
Flat keys are unique across sections (tests/test_config.py holds that).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Union

from ocula.errors import OculaError, did_you_mean

FLIP = (True, False, "auto")
# Time reversal is off unless asked for (issue 28): where labels survive it (speed of motion, the one such set of
# bench/clips_plain_loops.py), it still held the plain CNN-LSTM loop at 0.58 where it reaches 0.80 without it
# (4 seeds), and common video recipes (TSN, SlowFast, VideoMAE) do not play clips backwards.
TIME_FLIP_DEFAULT = False
DEFAULT_BATCH = 64  # batch_size when none is given, except from scratch on small data (engine.resolve)
DEFAULT_EPOCHS = 10  # epochs when none are given, for the tasks that name one class or a set (Task.default_epochs)


def option(default: Any = None, help: str = "", choices: tuple = (), flat: str = "", factory=None):
    """A config field with its help text, its choices and its flat key (when not its name)."""
    meta = {"help": help, "choices": tuple(choices), "flat": flat}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flat_key(f) -> str:
    return f.metadata.get("flat") or f.name


def choices_of(section: type, name: str) -> tuple:
    """The allowed values of one field, e.g. choices_of(TransferConfig, "margin")."""
    return next(f.metadata["choices"] for f in fields(section) if f.name == name)


class Section:
    """Checks every field that declares choices; a section adds its own range checks in `check`."""

    def __post_init__(self):
        for f in fields(self):
            options, value = f.metadata.get("choices"), getattr(self, f.name)
            if options and not any(value is o or (type(value) is type(o) and value == o) for o in options):
                shown = [o if isinstance(o, str) else json.dumps(o) for o in options]
                raise OculaError(f"{flat_key(f)}={value!r}: choose one of {', '.join(shown)}"
                                 f"{did_you_mean(str(value), [o for o in shown])}")
        self.check()

    def check(self) -> None: ...


@dataclass
class DataConfig(Section):
    source: str = option("", "built-in name, class-per-folder directory or CSV manifest", flat="data")
    img_size: Optional[int] = option(None, "default: pretrained weights' size, else the data's native size (at most "
                                                 "engine.input_choice.MAX_SCRATCH_SIZE)")
    channels: Optional[int] = option(None, "default: pretrained weights' (3), else the data's (grey: 1)")
    val_fraction: float = option(0.1, "stratified split when the data has no validation split")
    cross_fit: Union[str, int] = option("auto", "small data with no validation split: choose the epoch, the lp-ft head refit and "
                            "the temperature on k-fold out-of-fold predictions, then train on every image; auto: "
                            "engine.cross_fit.DEFAULT_FOLDS folds when a carved split would come from fewer than engine.cross_fit.SMALL_DATA "
                            "images (the folds are timed and cut to a budget); K: K folds; off: carve val_fraction")
    balance: str = option("none", "class imbalance: a weighted loss (multilabel: pos_weight), a balanced sampler, "
                          "or (single-label) the logit-adjusted loss (Menon et al. 2021, --logit-tau) or balanced "
                          "softmax (Ren et al. 2020; the same loss at tau 1)",
                          ("none", "weighted-loss", "sampler", "logit-adjust", "balanced-softmax"))
    cache: str = option("auto", "auto: decode a file dataset into RAM once when it fits", ("auto", "ram", "none"))
    workers: Optional[int] = option(None, "DataLoader workers for file datasets")

    def check(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise OculaError("val_fraction must be in [0, 1)")
        text = str(self.cross_fit).strip().lower()
        if text not in ("auto", "off") and not (text.isdigit() and 2 <= int(text) <= 20):
            raise OculaError(f"cross_fit={self.cross_fit!r}: use auto, off, or a number of folds from 2 to 20")
        self.cross_fit = text


@dataclass
class ModelConfig(Section):
    name: str = option("seed_cnn", "any name from `ocula models`", flat="model")
    pretrained: Union[bool, str] = option(False, "True: hub weights; or a local weights file")
    backbone: Optional[str] = option(None, "video models: the per-frame encoder, any image model name (resnet18, ...)")
    kwargs: dict = option(help="extra keyword arguments for the model builder", flat="model_kwargs", factory=dict)


@dataclass
class OptimConfig(Section):
    epochs: Optional[int] = option(None, "default: the task's (Task.default_epochs: config_sections.DEFAULT_EPOCHS; "
                                   "detection: enough for tasks.detection.DEFAULT_STEPS steps; an attention head "
                                   "over clips from scratch: video.CLIP_ATTENTION_EPOCHS)")
    batch_size: Optional[int] = option(None, "global, summed over DDP ranks; default config_sections.DEFAULT_BATCH, "
                                       "smaller from scratch on small data so that an epoch is at least "
                                       "engine.resolve.MIN_STEPS_PER_EPOCH steps")
    lr: Optional[float] = option(None, "peak; default: the rule of TrainConfig.peak_lr (adamw: from scratch or from "
                                 "weights, lp-ft config.LPFT_LR; sgd: scaled with the batch); RUN/resolved.json says which")
    optimizer: str = option("adamw", "adamw, sgd (Nesterov): torch's; the others: timm's create_optimizer_v2 "
                            "(lion wants an lr 3-10x below adamw's: set --lr)",
                            ("adamw", "sgd", "lamb", "lion", "adan", "adopt", "nadamw", "radam"))
    weight_decay: float = option(0.05, "not on 1-d tensors (norms, biases) nor on the model's no_weight_decay() "
                                 "(tokens, positions): timm's rule")
    momentum: float = option(0.9, "sgd (Nesterov)")
    schedule: str = option("cosine", "learning-rate schedule after warm-up", choices=("cosine", "onecycle", "constant"))
    warmup_epochs: float = option(1.0, "onecycle: fraction of the run is pct_warmup instead")
    pct_warmup: float = option(0.25, "onecycle only")
    label_smoothing: float = option(0.0, "cross-entropy label smoothing; 0 = off")
    clip_grad: Optional[float] = option(None, "max global gradient norm")
    accumulate: int = option(1, "gradient accumulation steps")
    ema: Optional[float] = option(None, "weight EMA decay, e.g. 0.999; evaluation then uses the EMA weights")
    patience: Optional[int] = option(None, "early stop after this many epochs without val improvement")

    def check(self) -> None:
        if (self.epochs is not None and self.epochs < 1) or (self.batch_size is not None and self.batch_size < 1) or self.accumulate < 1:
            raise OculaError("epochs, batch_size and accumulate must be at least 1")


@dataclass
class AugmentConfig(Section):
    preset: str = option("auto", "training augmentation; auto: light, or none for multilabel data (a shift can move "
                         "a labelled object out of the frame; docs/benchmarks.md, issue 16); mosaic: boxes only, "
                         "four images a sample (data.box_augment.mosaic), then light",
                         ("auto", "none", "light", "strong", "rrc", "randaugment", "trivialaugment", "mosaic"),
                         flat="augment")
    hflip: Union[bool, str] = option("auto", "mirror images in every preset but none: auto = when a quick probe finds "
                                     "labels survive it", FLIP)
    time_flip: Union[bool, str] = option(TIME_FLIP_DEFAULT, "clips: also play half of them backwards; off by default "
                                         "(config_sections.TIME_FLIP_DEFAULT); auto = when the probe finds labels "
                                         "survive it", FLIP)
    mixup: float = option(0.0, "Beta(alpha) for mixup; 0 = off")
    cutmix: float = option(0.0, "Beta(alpha) for CutMix; 0 = off")
    progressive: Optional[float] = option(None, "boxes: progressive resizing, the first half of the epochs trained "
                                          "at this fraction of the input size (data.box_augment.train_size); 1 = "
                                          "off; default: the task's (Task.default_progressive)")

    def check(self) -> None:
        if self.progressive is not None and not 0.25 <= self.progressive <= 1:
            raise OculaError(f"progressive={self.progressive}: a fraction of the input size between 0.25 and 1")


@dataclass
class TransferConfig(Section):
    init_from: Optional[str] = option(None, "start from these weights (--from): an ocula run/bundle or any weights file")
    strategy: str = option("auto", "fine-tuning; auto: from pretrained weights lp-ft (a linear probe on cached "
                           "features, then every layer at a gentle lr), or the probe alone below "
                           "engine.plan.PROBE_ONLY_BELOW images per class; from scratch full",
                           ("auto", "full", "lp-ft", "linear-probe", "partial", "llrd", "gradual"))
    probe: str = option("lbfgs", "linear-probe: lbfgs = fit the head once on cached features (scikit-learn's "
                        "LogisticRegression objective); sgd = train it for the epochs, with augmentation",
                        ("lbfgs", "sgd"))
    probe_c: float = option(1.0, "inverse L2 strength of the lbfgs probe (scikit-learn's C)")
    refit_head: Optional[bool] = option(None, "after fine-tuning, refit the linear head on the final features "
                                        "(default: on for lp-ft)")
    unfreeze_stages: int = option(1, "partial: train the top N stages (+ head); gradual: N more per step")
    unfreeze_every: int = option(1, "gradual: epochs between unfreezing steps")
    layer_decay: float = option(0.75, "llrd: each stage below gets this factor of the lr above it")
    head_lr: Optional[float] = option(None, "classifier head's lr; default: lr (linear-probe --probe sgd: lr × "
                                      "engine.plan.PROBE_LR_FACTOR of the optimizer)")
    freeze_bn: Optional[bool] = option(None, "BatchNorm statistics: default held in frozen stages (lp-ft: everywhere); true: "
                                        "everywhere; false: never")
    margin: str = option("none", "the margin task's loss (task=margin: arcface unless set; set alone, it chooses "
                         "that task)", ("none", "arcface", "cosface"))
    margin_m: Optional[float] = option(None, "the margin; default tasks.margin.DEFAULT_M of the kind")
    margin_s: float = option(30.0, "scale of the cosine logits under a margin loss")


@dataclass
class VideoConfig(Section):
    frames: Optional[int] = option(None, "video: frames per clip the model sees; default the model's "
                                   "(modality.video.DEFAULT_FRAMES)")
    clip_pad: str = option("repeat", "video: a clip shorter than frames is repeated (stretched in time) or rejected",
                           ("repeat", "reject"))

    def check(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise OculaError("frames must be at least 1")


@dataclass
class RunConfig(Section):
    out: Optional[str] = option(None, "run directory; default runs/<data>-<model>[-N]")
    recipe: Optional[str] = option(None, "a shipped recipe; explicit keys override it")
    seed: int = option(0, "seed of the split, initialisation, order and augmentation")
    deterministic: bool = option(False, "bitwise-repeatable runs (slower)")
    precision: str = option("auto", "auto: bf16 where the device has fast bf16 (on a CPU: from scratch only), "
                            "else fp32",
                            ("auto", "fp32", "bf16", "fp16"))
    channels_last: bool = option(True, "NHWC memory format (faster convolutions on most CPUs and GPUs)")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    threads: Optional[int] = option(None, "torch CPU threads")
    resume: Optional[str] = option(None, "a run directory to continue")
    max_steps: Optional[int] = option(None, "stop after this many optimizer steps (tests, smoke runs)")
    report: bool = option(False, "write RUN/report.html when training ends (the page of `ocula report`)")
    track: Optional[str] = option(None, "experiment trackers, comma-separated: tensorboard, mlflow "
                                  "(MLflow logs to $MLFLOW_TRACKING_URI)")
    calibrate: str = option("temperature", "after training, fit a temperature on the validation split so "
                            "probabilities match accuracy (skipped, with the reason, when the split is too "
                            "small); none: keep the raw softmax", ("temperature", "none"))
    compile: bool = option(False, "torch.compile the model (falls back to eager, with one line, when no compiler "
                           "is usable; the first-compile time is printed)")
    engine: str = option("local", "local: this process (or torchrun's); ray: Ray Train's TorchTrainer over "
                         "ray_workers workers (pip install ocula[ray])", ("local", "ray"))
    ray_workers: int = option(1, "engine=ray: training workers (--engine ray --ray-workers N)")
    ray_address: Optional[str] = option(None, "engine=ray: a running Ray cluster to join (default: a local one)")
    max_failures: int = option(0, "engine=ray: worker failures to survive, each resumed from the last checkpoint")


@dataclass
class TaskConfig(Section):
    name: str = option("auto", "the head: auto = multilabel when a row of the data has several labels (or none), "
                       "detection when the data hold boxes (COCO JSON, YOLO data.yaml); margin = single-label with a "
                       "margin loss for embeddings (--margin picks the kind)",
                       ("auto", "single-label", "multilabel", "margin", "detection"), flat="task")
    loss: str = option("bce", "multilabel loss: binary cross-entropy or asymmetric loss (ASL, Ridnik et al. 2021)",
                       ("bce", "asl"))
    threshold_policy: str = option("f1", "multilabel: per-class thresholds on the validation split that maximise "
                                   "F1, or precision=P (the most recall at precision P)")
    monitor: str = option("auto", "the validation metric that picks the best checkpoint; auto: accuracy "
                          "(single-label), mAP (multilabel, detection: COCO mAP@[.5:.95])", ("auto", "accuracy", "balanced_accuracy", "mAP"))
    logit_tau: float = option(1.0, "balance=logit-adjust: the prior's weight tau")

    def check(self) -> None:
        text = self.threshold_policy.strip().lower()
        name, _, value = text.partition("=")
        try:
            ok = text == "f1" or (name == "precision" and 0 < float(value) <= 1)
        except ValueError:
            ok = False
        if not ok:
            raise OculaError(f"threshold_policy={self.threshold_policy!r}: use f1 or precision=P with 0 < P <= 1")


# Section name → class, in the order `ocula train --help` lists them.
SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "augment": AugmentConfig,
            "task": TaskConfig, "transfer": TransferConfig, "video": VideoConfig, "run": RunConfig}
