"""One resolution step: every `auto`/None of a TrainConfig turned into a value, with the rule that chose it.

    resolved = resolve(cfg, splits, source=read_source(cfg), device=device)
    resolved.cfg                     # the config with the values in: what the loaders, the task and the plan read
    resolved.strategy.reason         # "pretrained weights, 30 training images per class: lp-ft (...)"
    resolved.to_dict()               # RUN/resolved.json

Each rule stays where it is measured and documented (`TrainConfig.peak_lr`, `plan.resolve_strategy`,
`plan.PROBE_LR_FACTOR`, `setup.resolve_precision`, `Task.default_augment`, `cross_fit.plan_cross_fit`,
`input_choice.choose_contract`, `flip_probe.decide_flips`); this module asks each once, in the order the
answers depend on each other, and keeps the answer with its reason. Pure apart from reading the data (a
probe-only or cross-fitted run re-reads it without a carved validation split), decoding the splits into
RAM and the flip probe, which measures on the decoded training images.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from ocula import tasks
from ocula.config import LPFT_LR, TrainConfig
from ocula.config_sections import DEFAULT_BATCH, ModelConfig
from ocula.data.contract import DataContract
from ocula.data.samples import DatasetSplits
from ocula.engine import distributed as dist
from ocula.engine import setup
from ocula.engine.cross_fit import SMALL_DATA, CrossFitPlan, plan_cross_fit
from ocula.engine.flip_probe import decide_flips
from ocula.engine.input_choice import InputChoice, choose_contract
from ocula.engine.plan import PROBE_LR_FACTOR, SMALL_DATA_DROP_PATH, adopt_source, choose_strategy
from ocula.engine.weights import WeightsSource
from ocula.errors import OculaError
from ocula.modality import for_model
from ocula.modality.sources import resolve_data
from ocula.models.registry import get_spec, takes_drop_path

# From scratch, an epoch of a small folder in batches of 64 is two or three optimizer steps: 150 face crops
# trained 20 steps in 10 epochs and came out under-confident (test ECE 0.127 and 0.064 on two draws, accuracy
# 0.96 and 0.96), in batches of 16 they scored 0.96 and 0.98 at ECE 0.043 and 0.015 (docs/benchmarks.md,
# issue 23). Pretrained weights keep 64: lp-ft was measured with it.
MIN_STEPS_PER_EPOCH = 8
MIN_SMALL_BATCH = 16
USER, RULE, DATA = "user", "rule", "data"  # decided_by: set in the config; the default rule; measured on the data


@dataclass
class Choice:
    """One resolved setting: its value, why, and who decided (user, rule, data)."""
    value: Any
    reason: str
    decided_by: str

    def to_dict(self) -> dict:
        value = self.value.to_dict() if hasattr(self.value, "to_dict") else self.value
        return {"value": value, "reason": self.reason, "decided_by": self.decided_by}


@dataclass
class Resolved:
    cfg: TrainConfig  # every auto/None below written in (freeze_bn keeps its three-way rule, see `freeze_bn`)
    given: TrainConfig  # as it came (RUN/config.json; a resumed run resolves it again)
    splits: DatasetSplits  # as the run trains on them
    train_samples: Any
    val_samples: Any
    skipped: list  # (path, reason) of files that could not be decoded
    task: Choice
    model: Choice  # the config's, or the task's own kind of model (detection data: a detector)
    augment: Choice
    batch_size: Choice
    epochs: Choice
    strategy: Choice
    cross_fit: Choice  # value: CrossFitPlan, or None
    input: InputChoice  # the contract, after a source model's preprocessing was adopted
    flips: dict  # "hflip"/"time_flip" → FlipDecision.to_dict()
    peak_lr: Choice
    head_lr: Choice
    precision: Choice  # "fp32", "bf16", "fp16"
    freeze_bn: Choice  # "everywhere", "frozen-stages", "never"
    refit_head: Choice
    drop_path: Choice  # stochastic depth of a timm model fine-tuned on small data (plan.SMALL_DATA_DROP_PATH)
    progressive: Choice  # the size of the first half of the epochs, a fraction of the input (1: off)

    @property
    def contract(self) -> DataContract:
        return self.input.contract

    def choices(self) -> dict[str, Choice]:
        return {"task": self.task, "model": self.model, "augment": self.augment, "batch_size": self.batch_size, "epochs": self.epochs, "strategy": self.strategy, "cross_fit": self.cross_fit,
                "peak_lr": self.peak_lr, "head_lr": self.head_lr, "precision": self.precision,
                "freeze_bn": self.freeze_bn, "refit_head": self.refit_head, "drop_path": self.drop_path,
                "progressive": self.progressive}

    def to_dict(self) -> dict:
        """RUN/resolved.json: the config as trained, and every choice with its reason."""
        return {"config": self.cfg.to_dict(), "choices": {k: c.to_dict() for k, c in self.choices().items()},
                "input": {"contract": self.contract.to_dict(), **self.input.to_dict()}, "flips": self.flips}


def resolve(cfg: TrainConfig, splits: DatasetSplits, *, device: torch.device, world: int = 1, given: bool = False,
            source: Optional[WeightsSource] = None, saved_flips: Optional[dict] = None) -> Resolved:
    """`splits`: what resolve_data found; `given`: the caller passed its own splits (a cross-fit fold), kept as
    they are; `source`: the weights the run starts from (plan.read_source); `saved_flips`: a resumed run's."""
    given_cfg = cfg
    task = _task(cfg, splits)
    task_kind = tasks.task_type(cfg, splits.multilabel, boxes=splits.boxes)
    model = _model(cfg, task_kind)
    cfg = cfg.replace(model=model.value)
    if not task_kind.linear_head and cfg.transfer.strategy == "auto":
        cfg = cfg.replace(strategy="full")  # no linear probe for a detector's head: lp-ft has nothing to fit
    augment = _augment(cfg, splits)
    strategy_cfg, splits = choose_strategy(cfg, splits, given=given)  # may fit a probe on every image
    strategy = _given_or(cfg.transfer.strategy, strategy_cfg.transfer.strategy, _strategy_reason(strategy_cfg, splits))
    cfg = strategy_cfg.replace(augment=augment.value, task=task.value)
    plan = plan_cross_fit(cfg, splits, world) if not given and task_kind.cross_fits else None
    if plan is not None and splits.val is not None:  # decisions out of fold: train on every image
        splits = resolve_data(cfg.data.source, val_fraction=0.0, seed=cfg.run.seed,
                              modality=for_model(cfg.model.name), task=given_cfg.task.name)
    cross_fit = _cross_fit(cfg, plan, given)
    chosen = choose_contract(cfg, splits)  # size and channels from the data
    adapted = task_kind.adapt_contract(chosen.contract)  # detection: no centre crop, RGB
    reason = chosen.reason
    if adapted.channels != chosen.contract.channels:
        reason = reason.replace(f"×{chosen.contract.channels}:", f"×{adapted.channels}:", 1) + \
            f", read as {adapted.channels} channels (the {task_kind.name} models take them)"
    chosen = replace(chosen, contract=adapted, reason=reason)
    cfg, contract = adopt_source(cfg, source, chosen.contract, splits.channels)  # a source model's preprocessing
    if contract is not chosen.contract:
        chosen = InputChoice(contract, f"input {contract.input_size}×{contract.input_size}×{contract.channels}: "
                                       f"the source model's preprocessing ({source.path})", chosen.evidence)
    modality = for_model(cfg.model.name).configured(cfg)
    train_samples, val_samples, skipped = setup.decode_splits(splits, contract, cfg, modality)
    flips = saved_flips or _flips(cfg, task_kind.probe_samples(train_samples), task_kind.probe_contract(contract),
                                  len(splits.classes), modality, device)
    batch_size = _batch_size(cfg, len(train_samples), task_kind, modality)
    progressive = _progressive(cfg, task_kind)
    cfg = cfg.replace(progressive=progressive.value)
    epochs = _epochs(cfg, task_kind, len(train_samples), batch_size.value, modality)
    cfg = cfg.replace(batch_size=batch_size.value, epochs=epochs.value)  # before the lr: sgd's scales with the batch
    peak_lr = _peak_lr(cfg, task_kind, modality)
    head_lr = _head_lr(cfg, peak_lr.value)
    precision = _precision(cfg, device)
    freeze_bn, refit_head = _freeze_bn(cfg), _refit_head(cfg)
    drop_path = _drop_path(cfg, len(train_samples), cross_fitted=plan is not None)
    if drop_path.decided_by == RULE and drop_path.value:
        cfg = cfg.replace(model_kwargs={**cfg.model.kwargs, "drop_path_rate": drop_path.value})
    cfg = cfg.replace(lr=peak_lr.value, head_lr=head_lr.value, precision=precision.value,
                      hflip=flips["hflip"]["use"], time_flip=flips["time_flip"]["use"], refit_head=refit_head.value)
    return Resolved(cfg, given_cfg, splits, train_samples, val_samples, skipped, task, model, augment, batch_size,
                    epochs, strategy, cross_fit, chosen,
                    flips, peak_lr, head_lr, precision, freeze_bn, refit_head, drop_path, progressive)


# ---------------------------------------------------------------------- one rule each
def _given_or(given: Any, value: Any, reason: str) -> Choice:
    if given not in ("auto", None):
        return Choice(given, "set in the config", USER)
    return Choice(value, reason, RULE)


def _model(cfg: TrainConfig, task_kind) -> Choice:
    spec = get_spec(cfg.model.name)
    family = spec.family if spec is not None else "timm"
    if task_kind.takes_model(family):
        return Choice(cfg.model.name, "set in the config" if cfg.model.name != ModelConfig.name else
                      "config_sections.ModelConfig's default", USER if cfg.model.name != ModelConfig.name else RULE)
    wanted = task_kind.default_model()
    if wanted is None or cfg.model.name != ModelConfig.name:
        raise OculaError(f"'{cfg.model.name}' cannot be trained for this data's task; "
                         f"{'try ' + wanted[0] if wanted else 'give a classifier'}")
    return Choice(wanted[0], wanted[1], DATA)


def _task(cfg: TrainConfig, splits: DatasetSplits) -> Choice:
    name = tasks.task_name(cfg, splits.multilabel, boxes=splits.boxes)
    if cfg.task.name != "auto":
        return Choice(name, "set in the config", USER)
    if cfg.transfer.margin != "none":
        return Choice(name, f"--margin {cfg.transfer.margin} set alone: the margin task", USER)
    why = ("the labels are sets: multilabel" if splits.multilabel else "the labels are boxes: detection"
           if splits.boxes else "one label per sample")
    return Choice(name, why, DATA)


def _augment(cfg: TrainConfig, splits: DatasetSplits) -> Choice:
    if cfg.augment.preset == "mosaic" and not splits.boxes:
        raise OculaError("--augment mosaic puts four images' boxes in one: it is for detection data; "
                         "use light or strong")
    if cfg.augment.preset != "auto":
        return Choice(cfg.augment.preset, "set in the config", USER)
    preset, reason = tasks.task_type(cfg, splits.multilabel, boxes=splits.boxes).default_augment()
    return Choice(preset, reason, RULE)


def _strategy_reason(cfg: TrainConfig, splits: DatasetSplits) -> str:
    if cfg.transfer.strategy == "full":
        return "full: training from scratch (or a head with no linear probe)"
    per_class = len(splits.train) / max(1, len(splits.classes))
    return (f"{cfg.transfer.strategy}: pretrained weights, {per_class:.0f} training images per class "
            f"(plan.resolve_strategy: linear-probe below plan.PROBE_ONLY_BELOW, else lp-ft)")


def _cross_fit(cfg: TrainConfig, plan: Optional[CrossFitPlan], given: bool) -> Choice:
    if plan is not None:
        return Choice(plan, plan.reason, USER if cfg.data.cross_fit != "auto" else DATA)
    if given:
        return Choice(None, "a cross-fit fold (or splits given by the caller)", RULE)
    if cfg.data.cross_fit == "off":
        return Choice(None, "--cross-fit off", USER)
    return Choice(None, "a validation split of its own, or enough images to carve one (cross_fit.SMALL_DATA)", RULE)


def _flips(cfg: TrainConfig, samples, contract: DataContract, num_classes: int, modality, device) -> dict:
    decisions = None
    if dist.is_main():
        decisions = {k: d.to_dict() for k, d in decide_flips(
            cfg.augment.hflip, cfg.augment.time_flip, cfg.augment.preset, samples, contract, num_classes, modality,
            seed=cfg.run.seed, device=device, workers=cfg.data.workers).items()}
    return dist.broadcast_object(decisions)  # every rank augments the same way


def _batch_size(cfg: TrainConfig, images: int, task_kind=tasks.Task, modality=None) -> Choice:
    if cfg.optim.batch_size is not None:
        return Choice(cfg.optim.batch_size, "set in the config", USER)
    own = task_kind.default_batch(images) or modality.default_batch(images, cfg.from_weights)
    if own is not None:
        return Choice(own[0], own[1], RULE)
    if cfg.from_weights:
        return Choice(DEFAULT_BATCH, "from pretrained weights: config_sections.DEFAULT_BATCH", RULE)
    batch = min(DEFAULT_BATCH, max(MIN_SMALL_BATCH, images // MIN_STEPS_PER_EPOCH))
    if batch == DEFAULT_BATCH:
        return Choice(batch, "config_sections.DEFAULT_BATCH", RULE)
    return Choice(batch, f"{images} training images from scratch: at least resolve.MIN_STEPS_PER_EPOCH steps an "
                         f"epoch (batches of at least resolve.MIN_SMALL_BATCH)", DATA)


def _epochs(cfg: TrainConfig, task_kind, images: int, batch: int, modality=None) -> Choice:
    if cfg.optim.epochs is not None:
        return Choice(cfg.optim.epochs, "set in the config", USER)
    own = modality.default_epochs(images, batch, cfg.from_weights, cfg.model.name) if modality is not None else None
    if own is not None:
        return Choice(own[0], own[1], RULE)
    value, why = task_kind.default_epochs(images, batch, cfg.augment.progressive)
    return Choice(value, why, RULE)


def _progressive(cfg: TrainConfig, task_kind) -> Choice:
    if cfg.augment.progressive is not None:
        if cfg.augment.progressive < 1 and not task_kind.resizes_progressively:
            raise OculaError(f"--progressive resizes boxes with their images: it is for detection data, not "
                             f"{task_kind.name}")
        return Choice(cfg.augment.progressive, "set in the config", USER)
    value, why = task_kind.default_progressive(cfg.from_weights)
    return Choice(value, why, RULE)


def _peak_lr(cfg: TrainConfig, task_kind=tasks.Task, modality=None) -> Choice:
    if cfg.optim.lr is not None:
        return Choice(cfg.optim.lr, "set in the config", USER)
    own = (task_kind.default_lr(cfg.optim.optimizer, cfg.from_weights)
           or modality.default_lr(cfg.optim.optimizer, cfg.from_weights, cfg.model.name))
    if own is not None:
        return Choice(own[0], own[1], RULE)
    lr = cfg.peak_lr  # TrainConfig.peak_lr holds the rule and its measurements
    if cfg.optim.optimizer == "sgd":
        why = f"sgd: 0.1 per 256 images, batch {cfg.optim.batch_size}"
    elif cfg.from_weights and lr == LPFT_LR:
        why = "lp-ft from pretrained weights: config.LPFT_LR"
    elif cfg.from_weights:
        why = "adamw from pretrained weights"
    else:
        why = "adamw from scratch" + (" (an attention model: the gentler lr)" if lr < 3e-3 else "")
    return Choice(lr, f"{why} (TrainConfig.peak_lr)", RULE)


def _head_lr(cfg: TrainConfig, peak_lr: float) -> Choice:
    if cfg.transfer.head_lr is not None:
        return Choice(cfg.transfer.head_lr, "set in the config", USER)
    if cfg.transfer.strategy != "linear-probe" or cfg.transfer.probe == "lbfgs":
        return Choice(None, "the shared lr (only linear-probe --probe sgd trains its head faster)", RULE)
    factor = PROBE_LR_FACTOR[cfg.optim.optimizer]
    return Choice(factor * peak_lr, f"linear-probe --probe sgd: lr × plan.PROBE_LR_FACTOR[{cfg.optim.optimizer}]",
                  RULE)


def _precision(cfg: TrainConfig, device: torch.device) -> Choice:
    dtype = setup.resolve_precision(cfg.run.precision, device, fine_tuning=cfg.from_weights)
    name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    if cfg.run.precision != "auto":
        return Choice(name, "set in the config", USER)
    measured = device.type == "cpu" and setup.cpu_has_bf16()
    if measured and cfg.from_weights:
        why = "fine-tuning pretrained weights on a CPU"
    elif measured:
        why = f"bf16 measured {setup.cpu_bf16_speedup():.2f}× fp32's speed on a training step here" + \
            ("" if name == "bf16" else ", below setup.BF16_MIN_SPEEDUP")
    else:
        fast = setup.has_fast_bf16(device)
        why = ("no fast bf16 on this device" if not fast else "fine-tuning pretrained weights on a CPU"
               if name == "fp32" else "fast bf16 on this device")
    return Choice(name, f"{why} (setup.resolve_precision)", DATA)


def _freeze_bn(cfg: TrainConfig) -> Choice:
    given = cfg.transfer.freeze_bn
    if given is not None:
        return Choice("everywhere" if given else "never", "set in the config", USER)
    if cfg.transfer.strategy == "lp-ft":
        return Choice("everywhere", "lp-ft keeps the pretrained BatchNorm statistics", RULE)
    return Choice("frozen-stages", "held in the stages the strategy freezes", RULE)


def _drop_path(cfg: TrainConfig, images: int, cross_fitted: bool) -> Choice:
    """Stochastic depth for lp-ft of a timm model cross-fitted on small data (fewer than cross_fit.SMALL_DATA
    images, no validation split: plan.SMALL_DATA_DROP_PATH, measured there); otherwise the model's own default.
    A run with a validation split of its own trains as before issue 23 (its 'no worse' figure stands). The
    folds inherit the final run's value through its config."""
    if "drop_path_rate" in (cfg.model.kwargs or {}):
        return Choice(cfg.model.kwargs["drop_path_rate"], "set in the config", USER)
    if not cross_fitted or cfg.transfer.strategy != "lp-ft" or images >= SMALL_DATA \
            or not takes_drop_path(cfg.model.name):
        return Choice(None, "the model's own (plan.SMALL_DATA_DROP_PATH is for lp-ft of a timm model cross-fitted on "
                            f"fewer than {SMALL_DATA} images)", RULE)
    return Choice(SMALL_DATA_DROP_PATH, f"drop path {SMALL_DATA_DROP_PATH:g}: lp-ft on {images} training images, "
                                        f"cross-fitted (fewer than cross_fit.SMALL_DATA = {SMALL_DATA}; "
                                        "plan.SMALL_DATA_DROP_PATH)", RULE)


def _refit_head(cfg: TrainConfig) -> Choice:
    if cfg.transfer.refit_head is not None:
        return Choice(cfg.transfer.refit_head, "set in the config", USER)
    lp_ft = cfg.transfer.strategy == "lp-ft"
    return Choice(lp_ft, "on for lp-ft" if lp_ft else "off: only lp-ft refits its head by default", RULE)
