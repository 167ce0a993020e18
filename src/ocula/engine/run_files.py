"""What a run directory holds besides its weights: the JSON records written when training starts
(config, split, environment, data) and the resumable training state (`state/last.safetensors`).

    write_run_files(trainer)          # RUN/config.json, resolved.json, split.json, environment.json, data.json
    save_training_state(trainer)      # model, optimizer, scheduler, EMA, scaler, history, RNG states
    load_training_state(trainer)      # --resume: all of that back, or one line saying why not

The state is a safetensors file with a JSON header (ocula.weights_file.save_state), so resuming never unpickles.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ocula import bundle, environment
from ocula.config import TrainConfig, coerce, read_config_file, read_values
from ocula.engine import distributed as dist
from ocula.errors import BadWeightsError, OculaError, one_line
from ocula.weights_file import load_state, save_state
from ocula.run_dir import RunDir
from ocula.weights_file import load_into


def write_run_files(trainer) -> None:
    run = RunDir(trainer.run_dir)
    run.weights_dir.mkdir(parents=True, exist_ok=True)
    if not trainer.cfg.run.resume:
        run.write_config(trainer.resolved.given.to_dict())  # as given: --resume resolves it again
    run.write_resolved(trainer.resolved.to_dict())
    run.write_split(trainer.splits.split_info)
    run.write_environment(environment.describe(trainer.device, trainer.world))
    write_data_file(trainer)


def write_data_file(trainer) -> None:
    """RUN/data.json: what was read and how, and every file that was skipped with its reason."""
    splits = trainer.splits
    RunDir(trainer.run_dir).write_data(
        {"source": splits.source, "classes": trainer.classes, "contract": trainer.contract.to_dict(),
         "input": trainer.input_choice.to_dict(), "flips": trainer.flips,
         "skipped": [{"path": p, "reason": r} for p, r in splits.skipped], "warnings": splits.warnings})


def bundle_meta(trainer) -> dict:
    """The metadata each saved bundle carries (ocula.bundle.make_meta): architecture, contract, classes, the
    task's and modality's fields, where the data came from and the epoch's metrics."""
    t = trainer
    return bundle.make_meta(dict(dist.unwrap(t.model).ocula_arch), t.contract, t.classes, **t.task.bundle_fields(),
                            **t.modality.bundle_fields(),
                            data={"source": t.splits.source, "fingerprint": t._fingerprint, "input": t.input_choice.reason,
                                  "flips": {k: d["use"] for k, d in t.flips.items()}},
                            **({"cross_fit": t.cross_fit.summary()} if t.cross_fit is not None else {}),
                            split={k: t.splits.split_info.get(k) for k in ("val_from", "val_fraction", "seed")},
                            metrics=t.history[-1] if t.history else {}, best_epoch=t.best_epoch + 1)


def summary(trainer) -> dict:
    """RUN/summary.json: the monitor by its name (val/accuracy, val/mAP) and its score at the best epoch."""
    t = trainer
    best = next((h.get(t.monitor) for h in t.history if h["epoch"] == t.best_epoch + 1), None)
    refit = {k: v for k, v in (getattr(t, "head_refit", None) or {}).items()
             if k in ("kept", "reason", "val_acc_before", "val_acc_after")}
    return {"run_dir": str(t.run_dir), "epochs_run": len(t.history), "best_epoch": t.best_epoch + 1,
            "monitor": t.monitor, "best_score": best, "final": t.history[-1] if t.history else {},
            "train_time_s": t.elapsed_train_s, "precision": str(t.autocast_dtype or "fp32").replace("torch.", ""),
            "world_size": t.world, "skipped_files": len(t.splits.skipped),
            "calibration": {k: getattr(t, "calibration", {}).get(k) for k in ("method", "temperature", "reason")},
            "cross_fit": t.cross_fit.summary() if t.cross_fit is not None else None, "head_refit": refit or None}


def load_run_config(run_dir: str, **overrides) -> TrainConfig:
    """The config a run was started with (nested, or flat before issue 15), for `--resume` (epochs may
    be extended)."""
    run = RunDir(run_dir)
    saved = run.read_config()
    if saved is None:
        raise OculaError(f"{run_dir}: not a run to resume (no {run.config.name})")
    values = read_values(saved, str(run.config))
    config_file = overrides.pop("config", None)
    values.update(read_config_file(config_file) if config_file else {})
    values.update({k: coerce(k, v) for k, v in overrides.items() if v is not None})
    values["resume"] = run_dir
    return TrainConfig.from_flat(**values)


def save_training_state(trainer) -> None:
    t = trainer
    state = {"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
             "scheduler": t.scheduler.state_dict(), "epoch": len(t.history) and t.history[-1]["epoch"],
             "global_step": t.global_step, "history": t.history, "best_metric": t.best_metric,
             "best_epoch": t.best_epoch, "elapsed_train_s": t.elapsed_train_s,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
    if t.ema is not None:
        state["ema"] = t.ema.module.state_dict()
    if t.scaler is not None:
        state["scaler"] = t.scaler.state_dict()
    save_state(RunDir(t.run_dir).state, state)


def load_training_state(trainer) -> None:
    run = RunDir(trainer.run_dir)
    path = run.state
    if not path.is_file():
        raise OculaError(f"{trainer.run_dir}: nothing to resume (no {path.relative_to(run.path).as_posix()})")
    state = load_state(path)
    try:
        _restore(trainer, path, state)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        raise BadWeightsError(path, f"training state does not match this run ({type(e).__name__}: "
                                    f"{one_line(e)})") from None


def _restore(t, path: Path, state: dict) -> None:
    load_into(path, t.model, state["model"], "this run's model")
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    if t.ema is not None and "ema" in state:
        load_into(path, t.ema.module, state["ema"], "this run's EMA model")
    if t.scaler is not None and "scaler" in state:
        t.scaler.load_state_dict(state["scaler"])
    t.start_epoch, t.global_step = int(state["epoch"]), int(state["global_step"])
    t.history, t.elapsed_train_s = list(state["history"]), float(state["elapsed_train_s"])
    t.best_metric, t.best_epoch = state["best_metric"], int(state["best_epoch"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(tuple(state["rng"]["numpy"]))
    random.setstate(_as_tuples(state["rng"]["python"]))


def _as_tuples(o):
    return tuple(_as_tuples(v) for v in o) if isinstance(o, (list, tuple)) else o
