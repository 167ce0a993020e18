"""What the Trainer asks of transfer learning (the margin task itself is `ocula.tasks.margin`), in the
order it asks:

    plan = TransferPlan(cfg, contract, read_source(cfg))  # resolved cfg and contract (engine.resolve)
    plan.attach(model)                        # weights in, head replaced, input conv adapted
    groups = plan.param_groups(model)         # strategy: learning rate per group
    plan.freeze(model)                        # strategy: frozen stages, BatchNorm statistics
    plan.fit_probe(trainer)                   # lp-ft, linear-probe: the head fitted on cached features
    callbacks += plan.callbacks()             # gradual unfreezing, transfer.json in the run dir

With none of init_from, a pretrained path, a strategy or a margin set, every step is the Trainer's
plain behaviour (the engine's parameter groups, nothing frozen, no extra callbacks).
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Optional

import torch.nn as nn

from ocula import tasks
from ocula.config import ModelConfig, OptimConfig, TrainConfig, choices_of
from ocula.data.contract import DataContract
from ocula.engine import distributed as dist
from ocula.engine.callbacks import Callback
from ocula.engine.head_refit import refit_heads
from ocula.engine.probe import can_probe, fit_linear_probe
from ocula.errors import OculaError
from ocula.log import logger
from ocula.run_dir import RunDir
from ocula.engine import strategies
from ocula.engine.weights import LoadReport, WeightsSource, load_backbone_weights, load_weights, read_weights

DEFAULT_MODEL = ModelConfig().name
# default head lr of linear-probe --probe sgd, times lr: measured for adamw and sgd; timm's other (adaptive)
# optimizers take adamw's
PROBE_LR_FACTOR = {name: 10 if name == "sgd" else 100 for name in choices_of(OptimConfig, "optimizer")}
PROBE_ONLY_BELOW = 20  # training images per class: below, strategy=auto fits the probe and stops there
# Stochastic depth (timm's drop_path_rate) when lp-ft fine-tunes a timm model cross-fitted on fewer than
# cross_fit.SMALL_DATA images (engine.resolve._drop_path): 300 Fashion-MNIST images (30 a class), ImageNet
# EfficientNet-Lite0, 10 epochs on all 300, two training seeds, decided on 1,000 test images
# (`bench/lowdata_recipe.py`, docs/benchmarks.md issue 23). 0.2 is timm's EfficientNet-B0 recipe.
SMALL_DATA_DROP_PATH = 0.2


class TransferPlan:
    def __init__(self, cfg: TrainConfig, contract: DataContract, source: Optional[WeightsSource] = None,
                 freeze_bn: str = "frozen-stages"):
        """`cfg`, `contract`: resolved (engine.resolve, a source's architecture and preprocessing adopted);
        `source`: read_source(cfg); `freeze_bn`: where BatchNorm statistics are held (everywhere, frozen-stages,
        never)."""
        self.cfg, self.contract, self.source, self.freeze_bn = cfg, contract, source, freeze_bn
        self.report: Optional[LoadReport] = None
        self.fixed: frozenset = frozenset()
        self.groups_info: list[dict] = []
        self.probe = None  # engine.probe.ProbeFit once fitted

    @property
    def probe_only(self) -> bool:
        """linear-probe with the lbfgs probe: fitting the head on cached features is all the training."""
        return self.cfg.transfer.strategy == "linear-probe" and self.cfg.transfer.probe == "lbfgs"

    @property
    def active(self) -> bool:
        return self.source is not None or self.cfg.transfer.strategy != "full" or tasks.task_type(self.cfg).prepares_head \
            or self.cfg.transfer.head_lr is not None or bool(self.cfg.transfer.freeze_bn)

    # ------------------------------------------------------------------ source
    def attach(self, model: nn.Module) -> None:
        if self.source is not None and self.source.state_dict:
            try:
                backbone_only = getattr(model, "loads_backbone_weights", False) and not self.source.is_ocula
                self.report = (load_backbone_weights if backbone_only else load_weights)(model, self.source)
            except OculaError as e:
                if self.source.is_ocula or self.cfg.model.name != DEFAULT_MODEL:
                    raise
                raise OculaError(f"{e}. The model is ocula's default '{DEFAULT_MODEL}': pass --model with the "
                                 f"architecture these weights are for (e.g. --model efficientnet_lite0)") from None
            logger.info(f"weights: {self.report.summary()}")
        self.fixed = tasks.task_type(self.cfg).prepare_head(model)  # a margin head: bias zeroed and fixed
        if self.cfg.transfer.strategy != "full" and self.source is None and self.cfg.model.pretrained is not True:
            warnings.warn(f"strategy={self.cfg.transfer.strategy} without pretrained weights (--from RUN or "
                          f"--pretrained): the frozen layers stay random", stacklevel=2)

    # ------------------------------------------------------------------ strategy
    @property
    def head_lr(self) -> Optional[float]:
        """A probe on frozen features is a convex problem with small inputs: it needs a larger step than
        fine-tuning (at the shared lr a linear probe stayed at chance on digits, see docs/bench)."""
        if self.cfg.transfer.head_lr is not None:
            return self.cfg.transfer.head_lr
        if self.cfg.transfer.strategy != "linear-probe" or self.probe_only:  # gradual: better at the shared lr
            return None
        return PROBE_LR_FACTOR[self.cfg.optim.optimizer] * self.cfg.peak_lr

    def param_groups(self, model: nn.Module) -> list[dict]:
        cfg = self.cfg
        if not self.active:
            from ocula.engine.optim import param_groups

            return param_groups(model, cfg.optim.weight_decay)
        groups = strategies.param_groups(model, cfg.transfer.strategy, cfg.peak_lr, cfg.optim.weight_decay, cfg.transfer.layer_decay,
                                         self.head_lr)
        self.groups_info = [{"lr": g["lr"], "weight_decay": g["weight_decay"], "tensors": len(g["params"])}
                            for g in groups]
        return groups

    def freeze(self, model: nn.Module) -> None:
        cfg = self.cfg
        if not self.active:
            return
        stages = len(strategies.layer_groups(model)) - 1
        top = strategies.trainable_stages(cfg.transfer.strategy, stages, cfg.transfer.unfreeze_stages, 0, cfg.transfer.unfreeze_every)
        strategies.set_trainable(model, top, self.fixed)
        everywhere = self.freeze_bn == "everywhere"  # lp-ft's default (docs/benchmarks.md, issue 13)
        if self.freeze_bn != "never" and (top < stages or everywhere):
            strategies.hold_batchnorm(model, everywhere=everywhere)

    def fit_probe(self, trainer) -> Optional[dict]:
        """lp-ft and linear-probe (lbfgs): fit the head on cached features of the training split before any
        epoch → the training record of that fit, or None when the strategy has no probe."""
        cfg = self.cfg
        if cfg.transfer.strategy != "lp-ft" and not self.probe_only:
            return None
        if not can_probe(trainer.model, trainer.task):
            if self.probe_only:
                raise OculaError(f"--probe lbfgs needs a linear classifier head ({cfg.model.name} with the "
                                 f"{trainer.task.name} task has none): use --probe sgd")
            if dist.is_main():
                logger.info("lp-ft: the head is not linear, so no probe is fitted; fine-tuning from a fresh head")
            return None
        self.probe = fit_linear_probe(trainer, cfg.transfer.probe_c)
        if dist.is_main():
            logger.info(self.probe.summary())
        seconds = self.probe.extract_s + self.probe.fit_s
        return {"epoch": 1, "train_loss": self.probe.loss, "train_acc": self.probe.train_acc, "lr": None,
                "epoch_s": seconds, "train_img_per_s": self.probe.images / max(seconds, 1e-9)}

    def wants_refit(self, trainer) -> bool:
        """Whether this run ends by refitting the head: lp-ft by default, or --refit-head true."""
        wanted = self.cfg.transfer.refit_head
        if wanted is None:
            wanted = self.cfg.transfer.strategy == "lp-ft"
        return bool(wanted) and not self.probe_only and can_probe(trainer.model, trainer.task)

    def refit_head(self, trainer, decided: Optional[str] = None) -> Optional[dict]:
        """lp-ft: the head of each saved bundle refitted on the fine-tuned features (engine.head_refit), on the
        main process after the last epoch → its record, or None when the run has no such step. `decided`:
        the reason when cross-fitting already chose to refit (so there is no validation check to make)."""
        if not self.wants_refit(trainer):
            return None
        return refit_heads(trainer, self.cfg.transfer.probe_c, decided=decided)

    def adopt_probe_only(self) -> None:
        """Cross-fitting found the probe alone scores above fine-tuning: the run stops after the probe."""
        self.cfg = self.cfg.replace(strategy="linear-probe", probe="lbfgs")

    def callbacks(self) -> list[Callback]:
        if not self.active:
            return []
        found: list[Callback] = [TransferRecord(self)]
        if self.cfg.transfer.strategy == "gradual":
            found.append(strategies.GradualUnfreezing(self.cfg.transfer.unfreeze_stages, self.cfg.transfer.unfreeze_every,
                                                      self.fixed))
        return found

    def to_dict(self) -> dict:
        cfg = self.cfg
        return {"source": self.source.path if self.source else None,
                "source_arch": (self.source.meta or {}).get("arch") if self.source else None,
                "load": self.report.to_dict() if self.report else None, "strategy": cfg.transfer.strategy,
                "layer_decay": cfg.transfer.layer_decay if cfg.transfer.strategy == "llrd" else None, "head_lr": self.head_lr,
                "freeze_bn": cfg.transfer.freeze_bn, "batchnorm_held": self.freeze_bn,
                "probe": self.probe.to_dict() if self.probe else None, "margin": cfg.transfer.margin, "param_groups": self.groups_info,
                "contract": self.contract.to_dict()}


class TransferRecord(Callback):
    """Writes RUN/transfer.json: where the weights came from, what loaded, the groups' lrs."""

    def __init__(self, plan: TransferPlan):
        self.plan = plan

    def on_fit_start(self, trainer):
        if dist.is_main():
            trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in trainer.model.parameters())
            RunDir(trainer.run_dir).write_transfer({**self.plan.to_dict(), "trainable_params_at_start": trainable,
                                                    "params": total})


def resolve_strategy(cfg: TrainConfig, images_per_class: Optional[float] = None) -> TrainConfig:
    """strategy=auto → when the run starts from weights and the head is an ordinary one (a margin head
    trains its own cosine classifier): linear-probe below PROBE_ONLY_BELOW training images per class,
    else lp-ft; from scratch: full. Measured in docs/benchmarks.md, issue 13 (ImageNet EfficientNet-Lite0,
    Fashion-MNIST): at 5 and 10 images per class fine-tuning lost to the probe it started from (0.651 vs
    0.667, 0.648 vs 0.698); at 30 it gained (0.782 vs 0.766)."""
    if cfg.transfer.strategy != "auto":
        return cfg
    if not (cfg.from_weights and tasks.task_type(cfg).linear_head):
        return cfg.replace(strategy="full")
    few = images_per_class is not None and images_per_class < PROBE_ONLY_BELOW
    return cfg.replace(strategy="linear-probe" if few else "lp-ft")


def choose_strategy(cfg: TrainConfig, splits, given: bool = False):
    """strategy=auto resolved on the data (resolve_strategy) and said → (cfg, splits). A probe fitted once
    whose carved validation split is too small to calibrate on is fitted on every image instead: at 5
    images per class holding one out cost 2.4 points (Fashion-MNIST, docs/benchmarks.md, issue 13).
    `given`: the caller passed its own splits, which are kept as they are."""
    from ocula.evaluation.calibration import MIN_SAMPLES
    from ocula.modality import for_model
    from ocula.modality.sources import resolve_data

    if cfg.transfer.strategy != "auto":
        return cfg, splits
    per_class = len(splits.train) / max(1, len(splits.classes))  # resolve_data refuses data with no train split
    cfg = resolve_strategy(cfg, per_class)
    if cfg.transfer.strategy != "full" and dist.is_main():
        logger.info(f"strategy {cfg.transfer.strategy}: pretrained weights, {per_class:.0f} training images per "
                    f"class (linear-probe below {PROBE_ONLY_BELOW}, else lp-ft; --strategy overrides)")
    carved = splits.val is not None and splits.split_info.get("val_from") == "stratified"
    probe_only = cfg.transfer.strategy == "linear-probe" and cfg.transfer.probe == "lbfgs"
    if given or not probe_only or not carved or len(splits.val) >= MIN_SAMPLES or cfg.run.resume:
        return cfg, splits
    held = len(splits.val)
    splits = resolve_data(cfg.data.source, val_fraction=0.0, seed=cfg.run.seed, modality=for_model(cfg.model.name),
                          task=cfg.task.name)
    if dist.is_main():
        logger.info(f"validation: none; the {held} images it would hold out are too few to calibrate on (need "
                    f"{MIN_SAMPLES}) and a probe has no epoch to pick: it is fitted on all {len(splits.train)}")
    return cfg, splits


def read_source(cfg: TrainConfig) -> Optional[WeightsSource]:
    """The weights a run starts from (--from RUN, --pretrained FILE), or None; a resumed run reads only their
    metadata (the state file has the weights)."""
    path = _weights_path(cfg)
    if path is None:
        return None
    return _meta_only(path) if cfg.run.resume else read_weights(path)


def adopt_source(cfg: TrainConfig, source: Optional[WeightsSource], contract: DataContract,
                 data_channels: Optional[int]) -> tuple[TrainConfig, DataContract]:
    """An ocula source brings its architecture and preprocessing (unless overridden) → (cfg, contract)."""
    if source is None or not source.is_ocula:
        return cfg, contract
    arch = source.meta["arch"]
    if cfg.model.name not in (arch["name"], DEFAULT_MODEL):
        raise OculaError(f"{source.path} is a '{arch['name']}', not '{cfg.model.name}': drop --model, "
                         f"or pass weights of that architecture")
    cfg = cfg.replace(model=arch["name"], model_kwargs={**arch.get("kwargs", {}), **cfg.model.kwargs})
    src = DataContract.from_dict(source.meta["contract"])
    channels = cfg.data.channels or data_channels or src.channels
    # DataContract fits mean/std to the channel count (grey repeated for RGB, RGB averaged for grey)
    return cfg, replace(src, input_size=cfg.data.img_size or src.input_size, channels=channels)


def _weights_path(cfg: TrainConfig) -> Optional[str]:
    path = cfg.model.pretrained if isinstance(cfg.model.pretrained, str) else None
    if path is not None and cfg.transfer.init_from:
        raise OculaError("give the starting weights once: --from RUN or --pretrained FILE, not both")
    return cfg.transfer.init_from or path


def _meta_only(path: str) -> WeightsSource:
    from ocula import bundle

    try:
        meta = bundle.read_meta(path)
    except OculaError:
        meta = None
    return WeightsSource(str(path), {}, meta)

