"""What a run directory holds besides its weights: the JSON records written when training starts
(config, split, environment, data) and the resumable training state (`state/last.safetensors`).

    write_run_files(trainer)          # RUN/config.json, resolved.json, split.json, environment.json, data.json
    save_training_state(trainer)      # model, optimizer, scheduler, EMA, scaler, history, RNG states
    load_training_state(trainer)      # --resume: all of that back, or one line saying why not
    after_restart(cfg)                # torchrun --max-restarts: a restarted attempt resumes its own run

The state is a safetensors file with a JSON header (ocula.weights_file.save_state), so resuming never unpickles.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ocula import bundle, environment
from ocula.config import TrainConfig, coerce, read_config_file, read_values
from ocula.engine import distributed as dist
from ocula.engine.setup import default_run_base
from ocula.errors import BadWeightsError, OculaError, one_line
from ocula.io import write_text
from ocula.log import logger
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
    job = dist.elastic_job()
    if job is not None:
        write_text(_elastic_marker(run.path), json.dumps(job))


# ---------------------------------------------------------------------- torchrun restarts
def _elastic_marker(run_dir) -> Path:
    """RUN/elastic.json: the torchrun job that writes this run (distributed.elastic_job)."""
    return Path(run_dir) / "elastic.json"


def _job_run_dir(cfg: TrainConfig, job: dict) -> Optional[str]:
    """The run directory this torchrun job's first attempt chose: --out, or the newest runs/<data>-<model>[-N]
    whose marker names this job (without --out a restart would otherwise pick a fresh -N)."""
    if cfg.run.out:
        candidates = [Path(cfg.run.out)]
    else:
        base = default_run_base(cfg)
        pattern = re.compile(re.escape(base.name) + r"(-\d+)?")
        candidates = [p for p in base.parent.glob(base.name + "*") if pattern.fullmatch(p.name)]
    mine = []
    for path in candidates:
        try:
            if json.loads(_elastic_marker(path).read_text()) == job:
                mine.append(path)
        except (OSError, ValueError):
            continue
    return str(max(mine, key=lambda p: _elastic_marker(p).stat().st_mtime)) if mine else None


def after_restart(cfg: TrainConfig) -> TrainConfig:
    """torchrun --max-restarts: a restarted attempt carries on from the last state its job saved (per epoch), with
    no flag, so the run ends bit for bit where an uninterrupted one ends. Rank 0 decides (the state lives on its
    disk) and tells the others. A job killed before its first epoch ended starts again in the same directory."""
    job = dist.elastic_job()
    if cfg.run.resume or job is None or dist.restart_count() == 0:
        return cfg
    run_dir = _job_run_dir(cfg, job) if dist.is_main() else None
    has_state = run_dir is not None and RunDir(run_dir).state.is_file()
    run_dir, has_state = dist.broadcast_object((run_dir, has_state))
    if run_dir is None:
        return cfg
    if dist.is_main():
        logger.info(f"torchrun restart {dist.restart_count()}: "
                    + (f"resuming {run_dir} from its last epoch" if has_state else f"starting {run_dir} again"))
    return cfg.replace(resume=run_dir) if has_state else cfg.replace(out=run_dir)


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
             "best_epoch": t.best_epoch, "elapsed_train_s": t.elapsed_train_s, "rng": rng_state()}
    if t.world > 1:  # every rank's, gathered at the end of the epoch (Trainer._end_epoch)
        state["rng_ranks"] = t.rank_rng
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


def _match_param_layout(optimizer) -> None:
    """Give restored moments their parameter's memory layout: a file holds them contiguous, a channels_last
    model's conv weights are not, and fused optimizer kernels pair elements by memory order, not by index."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            moments = optimizer.state.get(p, {})
            for key, value in moments.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    moments[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _restore(t, path: Path, state: dict) -> None:
    load_into(path, t.model, state["model"], "this run's model")
    t.optimizer.load_state_dict(state["optimizer"])
    _match_param_layout(t.optimizer)
    t.scheduler.load_state_dict(state["scheduler"])
    if t.ema is not None and "ema" in state:
        load_into(path, t.ema.module, state["ema"], "this run's EMA model")
    if t.scaler is not None and "scaler" in state:
        t.scaler.load_state_dict(state["scaler"])
    t.start_epoch, t.global_step = int(state["epoch"]), int(state["global_step"])
    t.history, t.elapsed_train_s = list(state["history"]), float(state["elapsed_train_s"])
    t.best_metric, t.best_epoch = state["best_metric"], int(state["best_epoch"])
    ranks = state.get("rng_ranks") or []
    set_rng_state(ranks[t.rank] if len(ranks) == t.world else state["rng"])


def rng_state() -> dict:
    """This process's random generators: torch (CPU, and its GPU's once CUDA is in use), numpy and python."""
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    np.random.set_state(tuple(rng["numpy"]))
    random.setstate(_as_tuples(rng["python"]))


def _as_tuples(o):
    return tuple(_as_tuples(v) for v in o) if isinstance(o, (list, tuple)) else o
