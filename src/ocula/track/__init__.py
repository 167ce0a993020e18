"""Experiment trackers: `ocula train --track tensorboard,mlflow` logs to the tools people already use.

    from ocula.track import TrackerCallback
    ocula.train("digits", callbacks=default_callbacks(cfg) + [TrackerCallback(["mlflow"])])
    ocula.track.log_model("runs/shoes")     # a finished run → an MLflow pyfunc model, "runs:/<id>/model"

A callback on the trainer's events (engine/callbacks.py), on rank 0 only: the config at the start (MLflow
params and config files; TensorBoard text and hparams), the metrics and learning rate of every epoch, then
the final metrics with the calibration's ECE, the bundle as an MLflow model (ocula.track.pyfunc) and
report.html when the run wrote one. tensorboard and mlflow are the `track` extra, imported only when a run
asks for them. Nothing in the core imports this package. docs/tracking.md says what lands where.
"""
from ocula.track.callback import TRACKERS, TrackerCallback, parse_trackers, training_callbacks
from ocula.track.mlflow_backend import log_model

__all__ = ["TRACKERS", "TrackerCallback", "log_model", "parse_trackers", "training_callbacks"]
