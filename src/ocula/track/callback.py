"""TrackerCallback: the trainer's events → each chosen tracker backend, on rank 0 only."""
from __future__ import annotations

from typing import Iterable, Optional, Union

from ocula.engine import distributed as dist
from ocula.engine.callbacks import Callback, default_callbacks
from ocula.errors import OculaError, did_you_mean
from ocula.report.callback import ReportCallback
from ocula.run_dir import RunDir
from ocula.track.mlflow_backend import MLflowBackend
from ocula.track.record import EPOCH_KEYS, calibration_metrics, final_metrics, numbers
from ocula.track.tensorboard_backend import TensorBoardBackend

TRACKERS = ("tensorboard", "mlflow")


def parse_trackers(spec: Union[None, str, Iterable[str]]) -> list[str]:
    """"tensorboard,mlflow" (or a list) → ["tensorboard", "mlflow"]; unknown names get "did you mean"."""
    if not spec:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip().lower() for i in items):
        if item in ("", "none"):
            continue
        if item not in TRACKERS:
            raise OculaError(f"track={item!r}: choose from {', '.join(TRACKERS)} (several: "
                             f"tensorboard,mlflow){did_you_mean(item, TRACKERS)}")
        if item not in names:
            names.append(item)
    return names


PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def require(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise OculaError(f"--track {name} needs the {PACKAGES[name]} package: pip install 'ocula[track]'")


def _backend(name: str):
    if name == "tensorboard":
        return TensorBoardBackend()

    return MLflowBackend()


def flat_config(cfg) -> dict:
    """The config by the names of the CLI (`lr`, `model`), whether TrainConfig is flat or in sections."""
    flat = getattr(cfg, "flat", None)
    return dict(flat()) if callable(flat) else cfg.to_dict()


class TrackerCallback(Callback):
    """Logs one run to every tracker in `trackers`; silent on ranks other than 0."""

    def __init__(self, trackers: Union[str, Iterable[str]]):
        self.names = parse_trackers(trackers)
        self.backends: list = []
        for name in self.names:  # before the data is loaded: a missing package is one line, at once
            require(name)

    def on_fit_start(self, trainer):
        if not dist.is_main():
            return
        self.backends = [_backend(name) for name in self.names]  # a missing package fails here, once
        run = RunDir(trainer.run_dir).path
        config = flat_config(trainer.cfg)
        for b in self.backends:
            b.start(run, config)

    def on_epoch_end(self, trainer, epoch, logs):
        metrics = numbers(logs, EPOCH_KEYS)
        for b in self.backends:
            b.log_epoch(epoch + 1, metrics)

    def on_fit_end(self, trainer, logs):
        if not self.backends:
            return
        run = RunDir(trainer.run_dir)
        # calibration.json is written before on_fit_end (the trainer calibrates first): its ECE is final
        final = {**final_metrics(logs), **calibration_metrics(run.read_calibration())}
        best = run.weights("best")
        artifacts = [p for p in (best, run.model, run.metrics_csv, run.curves_png) if p.is_file()]
        report = run.report_html
        for b in self.backends:
            b.finish(final, artifacts, report if report.is_file() else None, best if best.is_file() else None)
        self.backends = []


def training_callbacks(cfg, callbacks: Optional[list] = None, *, track=None, report: bool = False) -> Optional[list]:
    """The callbacks a run asked for: `callbacks` (None: the trainer's defaults) plus the report at the end
    and the trackers, in that order so the trackers log the report. Unchanged when neither is asked for."""
    names = parse_trackers(track)
    if not names and not report:
        return callbacks

    out = list(default_callbacks(cfg) if callbacks is None else callbacks)
    if report:
        out.append(ReportCallback())
    if names:
        out.append(TrackerCallback(names))
    return out
