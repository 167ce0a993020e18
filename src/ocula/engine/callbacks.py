"""Side effects of training: progress, CSV log, checkpoints, early stop, curves. No numerics here."""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Optional

from ocula.engine import distributed as dist
from ocula.evaluation.plots import plot_training_curves
from ocula.io import write_text
from ocula.log import logger, progress
from ocula.run_dir import LEGACY_MONITOR, RunDir, monitor_in


class Callback:
    def on_fit_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_train_step(self, trainer, logs: dict) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None: ...
    def on_fit_end(self, trainer, logs: dict) -> None: ...


class ProgressBar(Callback):
    """Per epoch: a live bar (loss, accuracy, images/s, ETA) on a terminal, else one summary line."""

    def __init__(self):
        self.bar = None

    def on_epoch_start(self, trainer, epoch):
        self.bar = progress(total=trainer.steps_per_epoch, desc=f"epoch {epoch + 1}/{trainer.cfg.optim.epochs}",
                            unit="step", leave=True, summary=True, disable=not dist.is_main())

    def on_train_step(self, trainer, logs):
        self.bar.update(1)
        if logs.get("step_in_epoch", 0) % 5 == 0 or self.bar.n == self.bar.total:
            acc = {} if logs.get("acc") is None else {"acc": f"{logs['acc']:.3f}"}
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", **acc, img_s=f"{logs['img_per_s']:.0f}", refresh=False)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.bar is not None:
            key = monitor_in(logs)
            val = f" {key}={logs[key]:.4f}" if key and logs.get(key) is not None else ""
            acc = f" acc={logs['train_acc']:.3f}" if logs.get("train_acc") is not None else ""
            self.bar.set_postfix_str(f"loss={logs['train_loss']:.4f}{acc}{val}")
            self.bar.close()


class CSVLogger(Callback):
    """metrics.csv, one row per epoch, rewritten atomically (a resumed run keeps its history).
    The monitor's column is named as the logs name it (val/accuracy, val/mAP; val_acc in older runs)."""

    COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", LEGACY_MONITOR, "val_top5", "lr",
               "epoch_s", "train_img_per_s", "elapsed_train_s"]

    def columns(self, history: list[dict]) -> list[str]:
        logged = next((key for key in map(monitor_in, history) if key), LEGACY_MONITOR)
        return [logged if c == LEGACY_MONITOR else c for c in self.COLUMNS]

    def on_epoch_end(self, trainer, epoch, logs):
        if not dist.is_main():
            return
        columns = self.columns(trainer.history)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in trainer.history:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
        write_text(RunDir(trainer.run_dir).metrics_csv, buf.getvalue())

    def on_fit_end(self, trainer, logs):
        if dist.is_main():
            run = RunDir(trainer.run_dir)
            plot_training_curves(run.metrics_csv, run.curves_png)


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


class Checkpointer(Callback):
    """weights/best and weights/last (self-describing bundles) and the resumable training state."""

    def on_epoch_end(self, trainer, epoch, logs):
        if dist.is_main():
            if trainer.is_best:
                trainer.save_weights("best")
            trainer.save_weights("last")
            trainer.save_training_state()
        dist.barrier()


class EarlyStopping(Callback):
    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer, epoch, logs):
        if trainer.epochs_since_best >= self.patience:
            trainer.should_stop = True
            if dist.is_main():
                logger.info(f"early stop: no validation improvement for {self.patience} epochs")


def default_callbacks(cfg) -> list[Callback]:
    cbs: list[Callback] = [ProgressBar(), CSVLogger(), Checkpointer()]
    if cfg.optim.patience:
        cbs.append(EarlyStopping(cfg.optim.patience))
    return cbs


def env_flag(name: str) -> Optional[str]:
    return os.environ.get(name)
