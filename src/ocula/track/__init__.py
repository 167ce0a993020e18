"""Experiment trackers: `ocula train --track tensorboard,mlflow` logs to the tools people already use.

    from ocula.track import TrackerCallback
    ocula.train("digits", callbacks=default_callbacks(cfg) + [TrackerCallback(["mlflow"])])

A callback on the trainer's events (engine/callbacks.py), on rank 0 only: the config at the start, the
metrics and learning rate of every epoch, then the final metrics, the bundle (weights/best.safetensors
with model.json) and report.html when the run wrote one. tensorboard and mlflow are the `track` extra,
imported only when a run asks for them. Nothing in the core imports this package.
"""
from ocula.track.callback import TRACKERS, TrackerCallback, parse_trackers, training_callbacks

__all__ = ["TRACKERS", "TrackerCallback", "parse_trackers", "training_callbacks"]
