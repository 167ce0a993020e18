"""The one training engine: loop, precision, accumulation, clipping, EMA, checkpoints, resume, DDP.

    trainer = Trainer(build_config("digits", model="seed_cnn", epochs=5))
    summary = trainer.fit()

The kind of data is a `Modality` (ocula.modality), the kind of head a `Task` (ocula.tasks), fine-tuning a
`TransferPlan` (engine.plan); side effects are callbacks.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ocula import bundle, tasks
from ocula.config import TrainConfig
from ocula.engine import distributed as dist
from ocula.engine import run_files, setup
from ocula.engine.calibrate import calibrate_bundles
from ocula.engine.callbacks import Callback, default_callbacks
from ocula.engine.cross_fit import load as load_cross_fit
from ocula.engine.cross_fit import run_cross_fit
from ocula.engine.optim import build_optimizer, build_scheduler
from ocula.engine.plan import TransferPlan, read_source
from ocula.engine.reporting import report_inputs, report_task
from ocula.engine.resolve import resolve
from ocula.engine.run_files import load_run_config  # noqa: F401 - ocula.api and the tests import it from here
from ocula.errors import OculaError
from ocula.modality import for_model
from ocula.modality.sources import resolve_data
from ocula.models.registry import check_model_name
from ocula.run_dir import RunDir, monitor_key
from ocula.log import logger


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS is only repeatable with a fixed workspace, read when its first handle is created.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class Trainer:
    def __init__(self, cfg: TrainConfig, callbacks: Optional[list[Callback]] = None, task=None,
                 splits=None):
        self.cfg = cfg
        self.device = dist.local_device(cfg.run.device)
        dist.init(self.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        if splits is None:  # not a cross-fit fold
            self.cfg = cfg = run_files.after_restart(cfg)  # torchrun restarted us: resume this job's run
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed, cfg.run.deterministic)
        check_model_name(cfg.model.name)  # fail before reading any data

        found = splits or resolve_data(cfg.data.source, val_fraction=cfg.data.val_fraction, seed=cfg.run.seed,
                                       modality=for_model(cfg.model.name), task=cfg.task.name)
        saved = (RunDir(cfg.run.resume).read_data() or {}).get("flips") if cfg.run.resume else None  # as decided
        source = read_source(cfg)  # --from / --pretrained FILE
        self.resolved = resolve(cfg, found, device=self.device, world=self.world, given=splits is not None,
                                source=source, saved_flips=saved)  # every auto, once, with its reason
        self.cfg = cfg = self.resolved.cfg
        self.splits, self.classes = self.resolved.splits, self.resolved.splits.classes
        self.cross_fit_plan = self.resolved.cross_fit.value
        self.cross_fit = None  # engine.cross_fit.CrossFitResult once the folds have run
        self.modality = for_model(cfg.model.name).configured(cfg)  # + its options (video: frames, clip_pad)
        self.input_choice, self.contract, self.flips = self.resolved.input, self.resolved.contract, self.resolved.flips
        self.transfer = TransferPlan(cfg, self.contract, source, self.resolved.freeze_bn.value)
        self.train_samples, self.val_samples = self.resolved.train_samples, self.resolved.val_samples
        self.splits.skipped += self.resolved.skipped
        self._report_skipped()
        report_inputs(self.resolved, self.modality, len(self.classes))

        self.model = setup.build_model(cfg, self.contract, len(self.classes))  # + backbone, frames
        self.transfer.attach(self.model)  # weights in, head replaced, input conv adapted
        self.model.to(self.device)
        if cfg.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.autocast_dtype = setup.resolve_precision(cfg.run.precision, self.device)  # resolved: fp32, bf16, fp16
        counts = setup.class_counts(self.train_samples, len(self.classes))  # multi-label: positives per class
        self.task = task or tasks.for_config(cfg, self._class_weights(), class_counts=counts,  # margin, multilabel…
                                             multilabel=self.splits.multilabel, num_samples=len(self.train_samples))
        report_task(self.resolved, self.task, counts, self.classes)
        if self.world > 1 and not self.task.supports_ddp:
            raise OculaError(f"the {self.task.name} task trains in a single process for now (drop torchrun)")

        self.steps_per_epoch = len(self._train_loader(0)) // cfg.optim.accumulate
        self.total_steps = self.steps_per_epoch * cfg.optim.epochs
        groups = self.transfer.param_groups(self.model)  # plain groups unless a strategy sets lrs
        self.transfer.freeze(self.model)  # strategy: frozen stages, BatchNorm statistics
        self.optimizer = build_optimizer(groups, cfg.optim.optimizer,
                                         cfg.peak_lr, cfg.optim.momentum)
        warmup = (int(cfg.optim.pct_warmup * self.total_steps) if cfg.optim.schedule == "onecycle"
                  else int(cfg.optim.warmup_epochs * self.steps_per_epoch))
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup, cfg.optim.schedule)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.ema = None
        if cfg.optim.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.optim.ema)
        self.ddp_model = setup.training_module(self._wrap_ddp(), cfg, self.device)  # run.compile: torch.compile

        self.callbacks = (default_callbacks(cfg) if callbacks is None else callbacks) + self.transfer.callbacks()
        self.history: list[dict] = []
        self.start_epoch, self.global_step, self.elapsed_train_s = 0, 0, 0.0
        self.best_metric, self.best_epoch, self.is_best, self.should_stop = None, -1, False, False
        self.rank_rng = None  # every rank's random generators at the end of the last epoch (DDP)
        self.run_dir = cfg.run.resume or cfg.run.out or setup.default_run_dir(cfg)
        self.run_dir = dist.broadcast_object(self.run_dir)
        self._fingerprint = setup.fingerprint(self.splits) if dist.is_main() else ""
        if cfg.run.resume:
            run_files.load_training_state(self)

    # ---------------------------------------------------------------- data
    def _report_skipped(self) -> None:
        found, self.splits.skipped = self.splits.skipped, []
        self._note_skipped(found)
        if dist.is_main():
            for w in self.splits.warnings:
                warnings.warn(w, stacklevel=1)

    def _note_skipped(self, bad) -> None:
        """Each unreadable file is named once, counted, and listed in data.json."""
        known = {p for p, _ in self.splits.skipped}
        for path, reason in bad:
            if path not in known:
                known.add(path)
                self.splits.skipped.append((path, reason))
                if dist.is_main():
                    warnings.warn(f"skipped {path}: {reason}", stacklevel=1)

    def _class_weights(self) -> Optional[torch.Tensor]:
        if self.cfg.data.balance != "weighted-loss":
            return None
        counts = setup.class_counts(self.train_samples, len(self.classes))
        return counts.sum() / (len(counts) * counts.clamp_min(1))

    def _train_loader(self, epoch: int):
        loader = setup.make_loader(self.train_samples, self.contract, self.cfg, train=True,
                                   num_classes=len(self.classes), rank=self.rank, world=self.world, epoch=epoch,
                                   modality=self.modality)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        return loader

    def eval_loader(self, samples):
        return setup.make_loader(samples, self.contract, self.cfg, train=False, num_classes=len(self.classes),
                                 rank=self.rank, world=self.world, modality=self.modality)

    def _wrap_ddp(self) -> nn.Module:
        if self.world == 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    # ---------------------------------------------------------------- loop
    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def fit(self) -> dict:
        if dist.is_main():
            run_files.write_run_files(self)
        if self.cross_fit_plan is not None:
            self._cross_fit()
        probe_logs = self.transfer.fit_probe(self) if self.start_epoch == 0 else None  # lp-ft, linear-probe
        for cb in self.callbacks:
            cb.on_fit_start(self)
        if self.transfer.probe_only:  # the fitted head is the whole training: one record, no epochs
            if probe_logs is not None:
                self.elapsed_train_s += probe_logs["epoch_s"]
                self._end_epoch(0, {**probe_logs, "elapsed_train_s": self.elapsed_train_s})
        else:
            for epoch in range(self.start_epoch, self.cfg.optim.epochs):
                if self._end_epoch(epoch, self.train_one_epoch(epoch)):
                    break
        if dist.is_main():
            self.head_refit = self._refit_head()  # lp-ft; before calibration, which fits the final head
            self.calibration = self.calibrate_bundles()  # before on_fit_end: trackers log the final bundle
        summary = self.summary()
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        if dist.is_main():
            run_files.write_data_file(self)  # again: streaming may have found more unreadable files
            RunDir(self.run_dir).write_summary(summary)
        return summary

    def _end_epoch(self, epoch: int, logs: dict) -> bool:
        """Validate, keep the best, run the callbacks → whether training should stop."""
        if self.val_samples is not None:
            report, val_loss = self.evaluate(self.val_samples)
            logs.update({"val_loss": val_loss, self.monitor: report[self.task.monitor], "val_top5": report.get("top5")})
        elif self.cross_fit is not None:  # no validation split: the folds' out-of-fold scores at this epoch
            logs.update(self.cross_fit.epoch_logs(int(logs["epoch"]), self.monitor))
        self._track_best(epoch, logs)
        self.history.append(logs)
        if self.world > 1:  # the state saved by rank 0 holds each rank's generators: a restart resumes them all
            self.rank_rng = dist.all_gather_objects(run_files.rng_state())
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, logs)
        return self.should_stop or self._hit_max_steps()

    # ---------------------------------------------------------------- small data
    def _cross_fit(self) -> None:
        """k folds of this recipe first (engine.cross_fit); their out-of-fold choices steer this run."""
        plan = self.cross_fit_plan
        self.cross_fit = load_cross_fit(self.run_dir, plan) if self.cfg.run.resume else run_cross_fit(self, plan)
        if self.cross_fit.probe_only:
            self.transfer.adopt_probe_only()
            self.cfg = self.cfg.replace(strategy="linear-probe", probe="lbfgs")

    def _refit_head(self):
        if self.cross_fit is None or self.cross_fit.refit is None:
            return self.transfer.refit_head(self)
        if not self.cross_fit.refit:
            logger.info("head refit: not done; out of fold it scored below the fine-tuned head (cross_fit.json)")
            return {"kept": False, "reason": "cross-fit: the refitted head scored below the fine-tuned head out of fold"}
        return self.transfer.refit_head(self, decided="refitted on the fine-tuned features; cross-fit: kept out of fold")

    # ---------------------------------------------------------------- calibration
    def calibrate_bundles(self) -> dict:
        """Fit the task's calibration on the validation split for every saved bundle (engine.calibrate)."""
        return calibrate_bundles(self)

    def _hit_max_steps(self) -> bool:
        return self.cfg.run.max_steps is not None and self.global_step >= self.cfg.run.max_steps

    def train_one_epoch(self, epoch: int) -> dict:
        self.ddp_model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        loader = self._train_loader(epoch)
        seen = correct = 0
        scored = False  # the task gives logits to count right answers (a detector gives none)
        loss_sum = torch.zeros((), dtype=torch.float64)
        t0 = time.perf_counter()
        for i, batch in enumerate(loader):
            x, y = batch[0], batch[1]
            if len(batch) == 4:
                self._note_skipped(batch[3])
            if x is None:
                continue
            x, y = self.modality.to_device(x, self.device, self.cfg.run.channels_last), y.to(self.device)
            loss, logits = self.train_step(x, y, micro_step=i)
            n = x.shape[0]
            seen += n
            loss_sum += loss.detach().double().cpu() * n
            if logits is not None:
                correct, scored = correct + self.task.correct(logits, y), True
            if (i + 1) % self.cfg.optim.accumulate == 0:
                elapsed = time.perf_counter() - t0
                for cb in self.callbacks:
                    cb.on_train_step(self, {"loss": loss.item(), "acc": correct / max(1, seen) if scored else None,
                                            "img_per_s": seen * self.world / max(elapsed, 1e-9),
                                            "step_in_epoch": (i + 1) // self.cfg.optim.accumulate})
                if self._hit_max_steps():
                    break
        epoch_s = time.perf_counter() - t0
        self.elapsed_train_s += epoch_s
        totals = dist.all_reduce_sum(torch.tensor([float(loss_sum), correct, seen], dtype=torch.float64))
        return {"epoch": epoch + 1, "train_loss": float(totals[0] / max(1, totals[2])),
                "train_acc": float(totals[1] / max(1, totals[2])) if scored else None, "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_s": epoch_s, "train_img_per_s": float(totals[2]) / max(epoch_s, 1e-9),
                "elapsed_train_s": self.elapsed_train_s}

    def train_step(self, x: torch.Tensor, y: torch.Tensor, micro_step: int):
        """autocast → backward → (on the last micro-step) unscale → clip → step → zero_grad → schedule."""
        last_micro = (micro_step + 1) % self.cfg.optim.accumulate == 0
        sync = contextlib.nullcontext() if last_micro or self.world == 1 else self.ddp_model.no_sync()
        with sync:
            with self.autocast():
                loss, logits = self.task.training_loss(self.ddp_model, x, y)
            scaled = loss / self.cfg.optim.accumulate
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if last_micro:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if self.cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.global_step += 1
            if self.ema is not None:
                self.ema.update(self.model, step=self.global_step)
        return loss, logits

    @torch.inference_mode()
    def predict_samples(self, samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """→ (probabilities (N, K), labels (N,), sample indices (N,)) over all ranks, in sample order."""
        model = self.eval_model
        model.eval()
        parts = []
        for batch in self.eval_loader(samples):
            x, y, idx = batch[0], batch[1], batch[2]
            if len(batch) == 4:
                self._note_skipped(batch[3])
            if x is None:
                continue
            x, y = self.modality.to_device(x, self.device, self.cfg.run.channels_last), y.to(self.device)
            with self.autocast():
                probs = self.task.probabilities(self.task.forward(model, x))
            parts.append((probs.cpu(), y.cpu(), idx.cpu()))
        gathered = [p for rank_parts in dist.all_gather_objects(parts) for p in rank_parts]
        probs = torch.cat([p[0] for p in gathered]).numpy()
        labels = torch.cat([p[1] for p in gathered]).numpy()
        idx = torch.cat([p[2] for p in gathered]).numpy()
        order = np.unique(idx, return_index=True)[1]  # DistributedSampler pads with repeats
        return probs[order], labels[order], idx[order]

    def evaluate(self, samples) -> tuple[dict, float]:
        probs, labels, _ = self.predict_samples(samples)
        report = self.task.score(labels, probs, self.classes)
        return report, report["nll"]

    def _track_best(self, epoch: int, logs: dict) -> None:
        """The best checkpoint is the latest epoch within one standard error of the best score so far.
        A later epoch has seen more training and a lower learning rate; on a small validation split
        the differences between epochs are mostly noise (30 images: ±7 points), and the strict
        maximum picked a half-trained epoch (Fashion-MNIST, 30 per class: 0.736 on test, against 0.787
        for the last epoch; docs/benchmarks.md, issue 13)."""
        metric = logs.get(self.monitor)
        tolerance = 0.0
        if self.cross_fit is not None and not self.transfer.probe_only:  # the epoch chosen out of fold
            self.is_best = epoch + 1 == self.cross_fit.best_epoch
            self.best_epoch = epoch if self.is_best else self.best_epoch
            logs["best"] = self.is_best
            return
        if metric is None:
            metric = -logs["train_loss"]
        elif self.best_metric is not None and self.val_samples is not None and 0.0 <= self.best_metric <= 1.0:
            tolerance = (self.best_metric * (1 - self.best_metric) / max(1, len(self.val_samples))) ** 0.5
        self.is_best = self.best_metric is None or metric >= self.best_metric - tolerance
        if self.is_best:
            self.best_epoch = epoch
        if self.best_metric is None or metric > self.best_metric:
            self.best_metric = metric
        logs["best"] = self.is_best

    @property
    def monitor(self) -> str:
        """The epoch logs' name for the validation score that picks the best checkpoint (val/accuracy, val/mAP)."""
        return monitor_key(self.task.monitor)

    @property
    def epochs_since_best(self) -> int:
        return (self.history[-1]["epoch"] - 1 - self.best_epoch) if self.history else 0

    # ---------------------------------------------------------------- files
    def meta(self) -> dict:
        return run_files.bundle_meta(self)

    def save_weights(self, tag: str) -> None:
        meta = self.meta()
        run = RunDir(self.run_dir)
        bundle.save_weights(run.weights(tag), dist.unwrap(self.eval_model), meta)
        if tag == "best":
            run.write_model(meta)

    def save_training_state(self) -> None:
        run_files.save_training_state(self)

    def summary(self) -> dict:
        return run_files.summary(self)
