"""`ocula train ... --engine ray --ray-workers N [--max-failures K] [--ray-address ADDR]`: the same Trainer inside
Ray Train's TorchTrainer (pip install ocula[ray]).

    run_dir, summary = train_on_ray(cfg, callbacks)

Ray Train starts N workers, makes their torch.distributed group (gloo on CPU, nccl on GPUs) and restarts the
whole group when a worker dies, up to K times. Each worker runs the ordinary Trainer, which sees the group Ray
made (engine.distributed.init leaves it alone): DDP, the data split and the metrics are those of a torchrun run.
At the end of each epoch rank 0 reports the run directory (weights, the resumable state, metrics) as a Ray
checkpoint, copied into Ray's storage (RUN/ray); a restarted group takes the newest one from
`ray.train.get_checkpoint()` and resumes from it, so a lost worker costs at most the epoch it was in.
Ray is imported here only, when this engine is asked for.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from ocula.config import TrainConfig
from ocula.engine import distributed as dist
from ocula.engine import setup
from ocula.engine.callbacks import Callback, default_callbacks
from ocula.engine.trainer import Trainer
from ocula.errors import OculaError, one_line
from ocula.log import logger
from ocula.run_dir import RunDir

STORAGE = "ray"  # RUN/ray: Ray's copies of the checkpoints; never part of a checkpoint itself


def train_on_ray(cfg: TrainConfig, callbacks: Optional[list[Callback]] = None) -> tuple[str, dict]:
    """→ (run directory, summary). `callbacks`: as for Trainer (None: the defaults); they travel to the workers."""
    try:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise OculaError("engine=ray needs Ray Train: pip install 'ocula[ray]'") from None
    if cfg.run.ray_workers < 1:
        raise OculaError(f"ray_workers must be at least 1, not {cfg.run.ray_workers}")
    # Chosen once, here: every worker and every restarted group writes the same directory.
    run_dir = str(Path(cfg.run.resume or cfg.run.out or setup.default_run_dir(cfg)).resolve())
    if not cfg.run.resume:
        cfg = cfg.replace(out=run_dir)
    if not ray.is_initialized():
        ray.init(address=cfg.run.ray_address, include_dashboard=False, log_to_driver=True)
    gpu = cfg.run.device.startswith("cuda") or (cfg.run.device == "auto" and torch.cuda.is_available())
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": cfg, "callbacks": callbacks, "run_dir": run_dir, "cwd": os.getcwd()},
        scaling_config=_scaling(ScalingConfig, cfg.run.ray_workers, gpu),
        # A name per call: Ray restores a run of the same name from its storage, and a new run in an old --out
        # must not take the old run's checkpoints (a resumed one reads RUN/state).
        run_config=RunConfig(name=time.strftime("train-%Y%m%d-%H%M%S"), storage_path=str(Path(run_dir) / STORAGE),
                             failure_config=FailureConfig(max_failures=cfg.run.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    try:
        result = trainer.fit()
    except Exception as e:  # Ray's TrainingFailedError wraps the worker's error
        raise OculaError(f"ray: training failed after {cfg.run.max_failures} restart(s) allowed "
                         f"(--max-failures): {one_line(e)}") from None
    run = RunDir(run_dir)
    if run.read_summary() is None and result.checkpoint is not None:  # rank 0 ran on another node
        with result.checkpoint.as_directory() as saved:
            _copy_run(saved, run_dir)
    return run_dir, run.read_summary() or {}


def _scaling(ScalingConfig, workers: int, gpu: bool):
    # Train V1 (ray 2.50, or RAY_TRAIN_V2_ENABLED=0): the trainer's own actor asks for a CPU unless told otherwise,
    # and N workers on an N-CPU machine then wait for it forever. Train V2 (the default from ray 2.51) has no
    # such actor and refuses the option.
    try:
        return ScalingConfig(num_workers=workers, use_gpu=gpu, trainer_resources={"CPU": 0})
    except DeprecationWarning:
        return ScalingConfig(num_workers=workers, use_gpu=gpu)


def _train_worker(loop: dict) -> None:
    """One Ray Train worker: the ordinary Trainer, resumed from Ray's newest checkpoint after a restart."""
    import ray.train

    if Path(loop["cwd"]).is_dir():  # Ray moved us to its own working directory; relative data paths are the user's
        os.chdir(loop["cwd"])
    cfg, run_dir = loop["cfg"], loop["run_dir"]
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as saved:
            if dist.is_main():
                _copy_run(saved, run_dir)
                logger.info(f"ray: a worker was lost; resuming {run_dir} from Ray's last checkpoint")
        dist.barrier()
        cfg = cfg.replace(resume=run_dir)
    callbacks = default_callbacks(cfg) if loop["callbacks"] is None else list(loop["callbacks"])
    trainer = Trainer(cfg, callbacks=callbacks + [ReportToRay()])
    trainer.fit()


class ReportToRay(Callback):
    """Each epoch's metrics to Ray, and rank 0's run directory as a checkpoint (after the Checkpointer wrote the
    state); once more when training ends, with the summary and calibration. Every worker reports, each time: Ray
    waits for all of them."""

    def on_epoch_end(self, trainer, epoch, logs):
        self._report(trainer, logs)

    def on_fit_end(self, trainer, logs):
        if dist.is_main():  # the Trainer writes it after the callbacks; the checkpoint should hold it
            RunDir(trainer.run_dir).write_summary(logs)
        self._report(trainer, logs.get("final") or {})

    @staticmethod
    def _report(trainer, logs: dict) -> None:
        import ray.train

        metrics = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not dist.is_main():
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            _copy_run(trainer.run_dir, tmp)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _copy_run(src, dst) -> None:
    """A run directory's files, without Ray's storage inside it."""
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=lambda d, names: [STORAGE] if Path(d) == Path(src) else [])

