"""MLflow: one MLflow run per ocula run, in the store of $MLFLOW_TRACKING_URI.

Params: the resolved config, flattened (the CLI's names); artifacts config/config.json and
config/resolved.json (the config as given, and as trained with every choice and its reason); metrics per
epoch with step = epoch; final metrics with the calibration's ECE (calibration/ece, .../ece_before, ...);
the model (pyfunc flavour, ocula.track.pyfunc: `mlflow.pyfunc.load_model("runs:/<id>/model")`,
`mlflow models serve`); artifacts bundle/best.safetensors, bundle/model.json, metrics.csv, curves.png and
report.html. The experiment is $MLFLOW_EXPERIMENT_NAME, else "ocula". A run that dies before the end is
closed as FAILED at exit; RUN/mlflow.json names the MLflow run, so `ocula train --resume RUN` goes on
logging to it, and `log_model(RUN)` adds a model to it afterwards.

Only what mlflow-skinny has is used (the tracking client and mlflow.pyfunc; pyfunc needs pandas too).
"""
from __future__ import annotations

import atexit
from pathlib import Path
from typing import Optional

from ocula.errors import OculaError, one_line
from ocula.log import logger
from ocula.run_dir import RunDir
from ocula.track.record import (config_files, evaluation_metrics, experiment_name, flat_params, run_metrics,
                                run_params)


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise OculaError("--track mlflow needs the mlflow package: pip install 'ocula[track]'") from None
    return mlflow


def _pyfunc():
    try:
        from ocula.track import pyfunc  # lazy: mlflow.pyfunc and pandas, imported only to log a model
    except ModuleNotFoundError as e:  # pandas: mlflow-skinny logs runs without it, but not models
        if (e.name or "").partition(".")[0] in ("mlflow", "ocula"):
            raise
        raise OculaError(f"logging an MLflow model needs the {e.name} package: pip install 'ocula[track]'") from None
    return pyfunc


def _log_params(mlflow, params: dict) -> None:
    keys = list(params)
    for i in range(0, len(keys), 100):  # log_params takes at most 100 per call
        mlflow.log_params({k: params[k] for k in keys[i:i + 100]})


def _previous_run(mlflow, run: RunDir) -> Optional[str]:
    """The MLflow run this ocula run logged to before, when it is in the current store."""
    try:
        info = run.read_mlflow() or {}
    except OculaError:  # unreadable: start a new MLflow run rather than fail
        return None
    if info.get("tracking_uri") != mlflow.get_tracking_uri():
        return None
    return info.get("run_id")


def _new_run(mlflow, run: RunDir, data: str = ""):
    mlflow.set_experiment(experiment_name())
    return mlflow.start_run(run_name=run.path.name, tags={"ocula.run_dir": str(run.path.resolve()),
                                                          "ocula.data": data})


class MLflowBackend:
    def __init__(self):
        self.mlflow = _mlflow()
        self.run_id: Optional[str] = None

    def start(self, run: Path, config: dict) -> None:
        mlflow, run = self.mlflow, RunDir(run)
        previous = _previous_run(mlflow, run) if config.get("resume") else None
        # `ocula train --resume RUN`: the same MLflow run goes on (params are already there)
        active = mlflow.start_run(run_id=previous) if previous else _new_run(mlflow, run, str(config.get("data", "")))
        self.run_id = active.info.run_id
        atexit.register(self._abandon)
        run.write_mlflow({"run_id": self.run_id, "tracking_uri": mlflow.get_tracking_uri()})
        if previous:
            return
        _log_params(mlflow, flat_params(config))
        for path in config_files(run):
            mlflow.log_artifact(str(path), artifact_path="config")

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        self.mlflow.log_metrics(metrics, step=epoch)

    def finish(self, final: dict, artifacts: list[Path], report: Optional[Path], bundle: Optional[Path] = None) -> None:
        mlflow = self.mlflow
        mlflow.log_metrics(final)
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="bundle" if path.suffix == ".safetensors"
                                or path.name == RunDir(path.parent).model.name else None)
        if report is not None:
            mlflow.log_artifact(str(report))
        if bundle is not None:
            from mlflow.exceptions import MlflowException

            try:
                _pyfunc().log_bundle(bundle)
            except (OculaError, MlflowException, OSError) as e:  # the training itself is done
                logger.warning(f"mlflow: the model was not logged ({one_line(e)}); "
                               f"ocula.track.log_model(RUN) logs it later")
        mlflow.end_run()
        self.run_id = None

    def _abandon(self) -> None:
        if self.run_id is not None:
            try:
                self.mlflow.end_run(status="FAILED")
            except Exception:  # noqa: BLE001 - at exit, a store that is gone must not add a traceback
                pass


def log_model(run_dir, *, weights: str = "best", registered_model_name: Optional[str] = None,
              device: str = "auto") -> str:
    """Log a finished ocula run to MLflow as a pyfunc model → "runs:/<run id>/model" (`mlflow.pyfunc.load_model`).

    The MLflow run is the one RUN/mlflow.json names (trained with `--track mlflow`) when it is in the current
    store ($MLFLOW_TRACKING_URI): the model and any newer `ocula evaluate` metrics join it. Otherwise a new run
    in experiment $MLFLOW_EXPERIMENT_NAME (default "ocula") gets the run's resolved config as params, its
    config files, its metrics (summary, calibration ECE, the newest evaluation) and the model.
    `weights`: "best" or "last"; `registered_model_name`: also register the model in the Model Registry;
    `device`: where the loaded model runs ("auto", "cpu", "cuda"; `model_config` overrides it at load)."""
    mlflow, run = _mlflow(), RunDir(run_dir)
    bundle = run.weights(weights)
    if not RunDir.is_run(run.path) or not bundle.is_file():
        raise OculaError(f"{run_dir}: no {weights} bundle to log (no {run.path.name}/weights/{bundle.name})")
    pyfunc = _pyfunc()
    previous = _previous_run(mlflow, run)
    with (mlflow.start_run(run_id=previous) if previous else _new_run(mlflow, run)) as active:
        if previous:
            mlflow.log_metrics(evaluation_metrics(run))
        else:
            _log_params(mlflow, run_params(run))
            for path in config_files(run):
                mlflow.log_artifact(str(path), artifact_path="config")
            mlflow.log_metrics(run_metrics(run))
            run.write_mlflow({"run_id": active.info.run_id, "tracking_uri": mlflow.get_tracking_uri()})
        pyfunc.log_bundle(bundle, registered_model_name=registered_model_name, device=device)
    return f"runs:/{active.info.run_id}/{pyfunc.MODEL_NAME}"
