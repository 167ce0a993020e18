"""MLflow: one MLflow run per ocula run, in the store of $MLFLOW_TRACKING_URI (default ./mlruns).

Params: the config, flattened; metrics per epoch with step = epoch; final metrics; artifacts: the bundle
(bundle/best.safetensors, model.json), metrics.csv, curves.png and report.html. The experiment is
$MLFLOW_EXPERIMENT_NAME, else "ocula". A run that dies before the end is closed as FAILED at exit;
RUN/mlflow.json names the MLflow run, so `ocula train --resume RUN` goes on logging to it.
"""
from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Optional

from ocula.errors import OculaError
from ocula.run_dir import RunDir

MAX_PARAM = 500  # MLflow's limit on one parameter value's length (6000 on new servers; stay portable)


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "model_kwargs":
            out.update(flat_params(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_PARAM]
    return out


class MLflowBackend:
    def __init__(self):
        try:
            import mlflow
        except ImportError:
            raise OculaError("--track mlflow needs the mlflow package: pip install 'ocula[track]'") from None
        self.mlflow = mlflow
        self.run_id: Optional[str] = None

    def start(self, run: Path, config: dict) -> None:
        mlflow = self.mlflow
        previous = self._previous(run) if config.get("resume") else None
        if previous:  # `ocula train --resume RUN`: the same MLflow run goes on (params are already there)
            active = mlflow.start_run(run_id=previous)
        else:
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "ocula")
            active = mlflow.start_run(run_name=run.name, tags={"ocula.run_dir": str(run.resolve()),
                                                               "ocula.data": str(config.get("data", ""))})
        self.run_id = active.info.run_id
        atexit.register(self._abandon)
        RunDir(run).write_mlflow({"run_id": self.run_id, "tracking_uri": mlflow.get_tracking_uri()})
        if previous:
            return
        params = flat_params(config)
        keys = list(params)
        for i in range(0, len(keys), 100):  # log_params takes at most 100 per call
            mlflow.log_params({k: params[k] for k in keys[i:i + 100]})

    def _previous(self, run: Path) -> Optional[str]:
        """The MLflow run this ocula run logged to before, when it is in the same store."""
        try:
            info = RunDir(run).read_mlflow() or {}
        except OculaError:  # unreadable: start a new MLflow run rather than fail the training
            return None
        if info.get("tracking_uri") != self.mlflow.get_tracking_uri():
            return None
        return info.get("run_id")

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        self.mlflow.log_metrics(metrics, step=epoch)

    def finish(self, final: dict, artifacts: list[Path], report: Optional[Path]) -> None:
        mlflow = self.mlflow
        mlflow.log_metrics(final)
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="bundle" if path.suffix == ".safetensors"
                                or path.name == RunDir(path.parent).model.name else None)
        if report is not None:
            mlflow.log_artifact(str(report))
        mlflow.end_run()
        self.run_id = None

    def _abandon(self) -> None:
        if self.run_id is not None:
            try:
                self.mlflow.end_run(status="FAILED")
            except Exception:  # noqa: BLE001 - at exit, a store that is gone must not add a traceback
                pass
