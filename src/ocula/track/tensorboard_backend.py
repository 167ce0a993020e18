"""TensorBoard: event files in RUN/tensorboard/ (`tensorboard --logdir runs/`).

Scalars train/loss, train/acc, val/loss, val/acc, val/top5, lr, ... per epoch; the config as text at
step 0; the final metrics under final/ (calibration/ece and the rest of the calibration among them); the
config's scalars as hparams against the final metrics (the HParams dashboard compares runs by them);
TensorBoard has no artifact store, so the bundle and the report are named in a text entry with their paths.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ocula.errors import OculaError
from ocula.run_dir import RunDir
from ocula.track.record import scalars

# the monitor keeps its own name (val/accuracy, val/mAP); runs before issue 24 logged it as val_acc → val/acc
TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc",
        "val_top5": "val/top5", "lr": "lr", "epoch_s": "time/epoch_s", "train_img_per_s": "time/train_img_per_s"}


class TensorBoardBackend:
    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError:
            raise OculaError("--track tensorboard needs the tensorboard package: pip install 'ocula[track]'") from None
        self._writer_class, self._hparams = SummaryWriter, hparams
        self.writer = None
        self.epoch = 0
        self.config: dict = {}

    def start(self, run: Path, config: dict) -> None:
        self.logdir = RunDir(run).tensorboard
        self.writer = self._writer_class(log_dir=str(self.logdir))
        self.config = config
        text = "\n".join(f"    {k}: {json.dumps(v, default=str)}" for k, v in config.items())
        self.writer.add_text("config", text, global_step=0)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        self.epoch = epoch
        for key, value in metrics.items():
            self.writer.add_scalar(TAGS.get(key, key), value, global_step=epoch)
        self.writer.flush()

    def finish(self, final: dict, artifacts: list[Path], report: Optional[Path], bundle: Optional[Path] = None) -> None:
        for key, value in final.items():
            self.writer.add_scalar(f"final/{key}", value, global_step=self.epoch)
        # what SummaryWriter.add_hparams writes, but into this run's own event file: add_hparams opens a new
        # writer in a subfolder, which TensorBoard would list as a second run beside this one
        for summary in self._hparams(scalars(self.config), {f"final/{k}": v for k, v in final.items()}):
            self.writer.file_writer.add_summary(summary)
        files = [str(p) for p in artifacts] + ([str(report)] if report else [])
        self.writer.add_text("files", "\n".join(f"    {f}" for f in files), global_step=self.epoch)
        self.writer.close()
