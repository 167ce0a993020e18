"""What a run says about itself, as a tracker's params and metrics: the resolved config, the final metrics of
the summary, the calibration's ECE (RUN/calibration.json, fitted on the validation split at the end of
training) and the newest `ocula evaluate` inside the run. Read from the run directory only, so a live run
(TrackerCallback) and a finished one (`ocula.track.log_model`) log the same names."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Optional

from ocula.config import read_values
from ocula.errors import OculaError
from ocula.run_dir import RunDir, best_score, is_monitor

# besides these, the validation monitor under the name the logs give it (val/accuracy, val/mAP; val_acc before)
EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_top5", "lr", "epoch_s", "train_img_per_s")
FINAL_KEYS = ("best_val_acc", "train_time_s", "epochs_run", "best_epoch")  # best_val_acc: summaries before issue 24
MAX_PARAM = 500  # MLflow's limit on one parameter value's length (6000 on new servers; stay portable)


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or "ocula"


def numbers(logs: dict, keys: Iterable[str] = ()) -> dict[str, float]:
    """The finite numbers among `keys` and the monitor's key of `logs`."""
    keys = tuple(keys)
    out = {}
    for k in [*keys, *(k for k in logs if isinstance(k, str) and is_monitor(k) and k not in keys)]:
        v = logs.get(k)
        if _finite(v):
            out[k] = float(v)
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def final_metrics(summary: dict) -> dict[str, float]:
    """summary.json (the trainer's on_fit_end logs) → final_<epoch metric>, train_time_s, best_<monitor>, ..."""
    final = {**{f"final_{k}": v for k, v in numbers(summary.get("final") or {}, EPOCH_KEYS).items()},
             **numbers(summary, FINAL_KEYS)}
    monitor, best = best_score(summary)
    if monitor and summary.get("monitor"):  # best_val/mAP: the best score, named by what it measures
        final.update({f"best_{k}": v for k, v in numbers({monitor: best}, (monitor,)).items()})
    return final


def calibration_metrics(section: Optional[dict], prefix: str = "calibration/") -> dict[str, float]:
    """A calibration record (RUN/calibration.json, or an evaluation's section) → `{prefix}ece`, nll, brier, ...
    as the saved model's probabilities score (after its temperature), `{prefix}ece_before` at T = 1, and
    `{prefix}temperature`. Nothing when calibration was off (`--calibrate none`) or the task has none."""
    if not section:
        return {}
    out = {f"{prefix}{k}": float(v) for k, v in (section.get("after") or {}).items() if _finite(v)}
    out.update({f"{prefix}{k}_before": float(v) for k, v in (section.get("before") or {}).items() if _finite(v)})
    if _finite(section.get("temperature")):
        out[f"{prefix}temperature"] = float(section["temperature"])
    return out


def evaluation_metrics(run: RunDir) -> dict[str, float]:
    """The newest `ocula evaluate` folder of the run → eval/<its top-level scores> and eval/ece, ..."""
    found = run.newest_evaluation()
    report = found.read_report() if found is not None else None
    if not report:
        return {}
    out = {f"eval/{k}": float(v) for k, v in report.items() if _finite(v)}
    out.update(calibration_metrics(report.get("calibration"), "eval/"))
    return out


def run_metrics(run: RunDir) -> dict[str, float]:
    """Every metric a finished run directory holds: final, calibration, evaluation."""
    return {**final_metrics(run.read_summary() or {}), **calibration_metrics(run.read_calibration()),
            **evaluation_metrics(run)}


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """{key: value} (values nested in dicts get dotted keys) → MLflow params, as text within MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "model_kwargs":
            out.update(flat_params(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_PARAM]
    return out


def run_params(run: RunDir) -> dict[str, str]:
    """The resolved config of a run (RUN/resolved.json; config.json for older runs) by the CLI's names, as
    a live run logs them; a config this version no longer reads is logged by its nested names instead."""
    resolved = run.read_resolved()
    config, where = (resolved["config"], run.resolved) if resolved else (run.read_config() or {}, run.config)
    try:
        return flat_params(read_values(config, str(where)))
    except OculaError:
        return flat_params(config)


def config_files(run: RunDir) -> list[Path]:
    """The config as given (config.json) and as trained, with every choice and its reason (resolved.json)."""
    return [p for p in (run.config, run.resolved) if p.is_file()]


def scalars(config: dict) -> dict:
    """The config's scalar values (TensorBoard's hparams take numbers, text and booleans; None is left out)."""
    return {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str)) and not (
        isinstance(v, float) and not math.isfinite(v))}
