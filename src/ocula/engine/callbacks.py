"""Side effects of training: progress, CSV log, checkpoints, early stop, curves. No numerics here."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Optional

from ocula.engine import distributed as dist
from ocula.log import logger, progress


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
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['acc']:.3f}",
                                 img_s=f"{logs['img_per_s']:.0f}", refresh=False)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.bar is not None:
            val = f" val_acc={logs['val_acc']:.4f}" if logs.get("val_acc") is not None else ""
            self.bar.set_postfix_str(f"loss={logs['train_loss']:.4f} acc={logs['train_acc']:.3f}{val}")
            self.bar.close()


class CSVLogger(Callback):
    """metrics.csv, one row per epoch, rewritten atomically (a resumed run keeps its history)."""

    COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr",
               "epoch_s", "train_img_per_s", "elapsed_train_s"]

    def on_epoch_end(self, trainer, epoch, logs):
        if not dist.is_main():
            return
        from ocula.io import write_text

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in trainer.history:
            writer.writerow({k: _fmt(row.get(k)) for k in self.COLUMNS})
        write_text(Path(trainer.run_dir) / "metrics.csv", buf.getvalue())

    def on_fit_end(self, trainer, logs):
        if dist.is_main():
            from ocula.evaluation.plots import plot_training_curves

            plot_training_curves(Path(trainer.run_dir) / "metrics.csv", Path(trainer.run_dir) / "curves.png")


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
