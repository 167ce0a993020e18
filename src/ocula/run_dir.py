"""The one owner of a run directory: every file `ocula train` (and the commands after it) write into
RUN/, by name, with typed read and write for each JSON record.

    run = RunDir("runs/shoes")
    run.summary                      # runs/shoes/summary.json, a Path
    run.read_summary()               # the dict, or None while training has not finished
    run.write_model(meta)            # atomically (ocula.io.write_json)
    run.weights("best")              # runs/shoes/weights/best.safetensors
    RunDir.is_run("runs/shoes")      # holds config.json, model.json or summary.json
    run.newest_evaluation()          # EvalDir of the newest `ocula evaluate` folder inside, or None

Monitor names: the validation score that picks the best checkpoint is logged as `val/<monitor>` (the
task's `monitor`: `val/accuracy`, `val/mAP`). Runs from before issue 24 logged it as `val_acc` whatever it
measured (mAP for multi-label runs) and summed it up as `best_val_acc`; `monitor_in`, `monitor_value` and
`best_score` read both layouts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ocula.errors import OculaError, one_line
from ocula.io import read_json, write_json
from ocula.names import display_name

MARKERS = ("config.json", "model.json", "summary.json")  # any one of them makes a folder a run
WEIGHTS_DIR = "weights"
WEIGHT_TAGS = ("best", "last")
CROSS_FIT_DIR = "cross_fit"  # the folds' run folders and their held-out logits
GATE_SUFFIX = ".gate.json"  # ocula export: MODEL.gate.json beside each exported file

# ocula evaluate --explain-errors: the gallery's files, in EVAL/errors/ (or any folder it is given)
ERRORS_JSON, ERRORS_CSV, ERRORS_PNG, ERRORS_MAPS = "errors.json", "errors.csv", "errors.png", "maps.npz"


def _read_record(path: Path) -> Optional[Any]:
    """A JSON record; a missing one is None, an unreadable one one line naming the file."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError, RecursionError) as e:
        raise OculaError(f"{display_name(path, line=True)}: unreadable ({one_line(e)[:120]})") from None


class RunDir:
    """A run folder's named paths and records. Holds only the path: nothing is read until asked."""

    def __init__(self, path):
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:  # str(run) is the path, as for a Path: it goes into configs and messages
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @staticmethod
    def is_run(path) -> bool:
        """Whether `path` is a folder that `ocula train` (or `ocula import`) wrote."""
        p = Path(path)
        return p.is_dir() and any((p / marker).is_file() for marker in MARKERS)

    # ------------------------------------------------------------------ JSON records
    @property
    def config(self) -> Path:  # the TrainConfig as given, nested by section
        return self.path / "config.json"

    @property
    def resolved(self) -> Path:  # the config with every auto/None turned into a value, and why
        return self.path / "resolved.json"

    @property
    def model(self) -> Path:  # the best bundle's metadata, readable without the weights
        return self.path / "model.json"

    @property
    def summary(self) -> Path:  # written when training ends
        return self.path / "summary.json"

    @property
    def data(self) -> Path:  # what was read and how; every skipped file with its reason
        return self.path / "data.json"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def environment(self) -> Path:  # versions and hardware
        return self.path / "environment.json"

    @property
    def calibration(self) -> Path:
        return self.path / "calibration.json"

    @property
    def head_refit(self) -> Path:  # lp-ft's last step
        return self.path / "head_refit.json"

    @property
    def transfer(self) -> Path:  # where the weights came from, what loaded, the groups' learning rates
        return self.path / "transfer.json"

    @property
    def cross_fit(self) -> Path:  # small data: the folds' out-of-fold choices (engine.cross_fit)
        return self.path / "cross_fit.json"

    @property
    def cross_fit_held_out(self) -> Path:  # the out-of-fold logits the choices were made on
        return self.path / CROSS_FIT_DIR / "held_out.npz"

    def cross_fit_fold(self, k: int) -> "RunDir":
        """Where fold k (1-based) of the cross-fit runs: a run folder of its own, inside this one."""
        return RunDir(self.path / CROSS_FIT_DIR / f"fold-{k}")

    @property
    def mlflow(self) -> Path:  # --track mlflow: the MLflow run a resumed run goes on logging to
        return self.path / "mlflow.json"

    # ------------------------------------------------------------------ other files
    @property
    def metrics_csv(self) -> Path:  # one row per epoch
        return self.path / "metrics.csv"

    @property
    def curves_png(self) -> Path:
        return self.path / "curves.png"

    @property
    def report_html(self) -> Path:  # ocula report
        return self.path / "report.html"

    @property
    def tensorboard(self) -> Path:  # --track tensorboard: the event files
        return self.path / "tensorboard"

    @property
    def audit(self) -> Path:  # `ocula audit DATA --out RUN/audit`, found by the report
        return self.path / "audit"

    @property
    def onnx(self) -> Path:  # ocula export's default output
        return self.path / "model.onnx"

    @property
    def weights_dir(self) -> Path:
        return self.path / WEIGHTS_DIR

    def weights(self, tag: str = "best") -> Path:
        """A complete bundle: weights/best.safetensors or weights/last.safetensors."""
        return self.weights_dir / f"{tag}.safetensors"

    @property
    def state(self) -> Path:  # everything --resume needs
        return self.path / "state" / "last.safetensors"

    def gate_reports(self) -> list[Path]:
        return sorted(self.path.glob("*" + GATE_SUFFIX))

    def benchmark_reports(self) -> list[Path]:  # `ocula benchmark RUN --json RUN/benchmark*.json`
        return sorted(self.path.glob("benchmark*.json"))

    def evaluation(self, data: str) -> "EvalDir":
        """Where `ocula evaluate RUN DATA` writes by default: RUN/eval-<the data's name>."""
        return EvalDir(self.path / f"eval-{Path(str(data).rstrip('/')).stem}")

    def evaluations(self) -> list["EvalDir"]:
        """The evaluation folders inside the run (report.json beside per_class.csv, or named eval-*)."""
        found = [EvalDir(p.parent) for p in self.path.glob("*/report.json")]
        return [e for e in found if e.per_class_csv.is_file() or e.path.name.startswith("eval")]

    def newest_evaluation(self) -> Optional["EvalDir"]:
        return max(self.evaluations(), key=lambda e: e.report.stat().st_mtime, default=None)

    # ------------------------------------------------------------------ typed read and write
    # read_X: the record as written, None when the run has none (yet); write_X: atomically.
    def read_config(self) -> Optional[dict]:
        return _read_record(self.config)

    def write_config(self, config: dict) -> None:
        write_json(self.config, config)

    def read_resolved(self) -> Optional[dict]:
        return _read_record(self.resolved)

    def write_resolved(self, resolved: dict) -> None:
        write_json(self.resolved, resolved)

    def read_model(self) -> Optional[dict]:
        return _read_record(self.model)

    def write_model(self, meta: dict) -> None:
        write_json(self.model, meta)

    def read_summary(self) -> Optional[dict]:
        return _read_record(self.summary)

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)

    def read_data(self) -> Optional[dict]:
        return _read_record(self.data)

    def write_data(self, data: dict) -> None:
        write_json(self.data, data)

    def read_split(self) -> Optional[dict]:
        return _read_record(self.split)

    def write_split(self, split: dict) -> None:
        write_json(self.split, split)

    def read_environment(self) -> Optional[dict]:
        return _read_record(self.environment)

    def write_environment(self, environment: dict) -> None:
        write_json(self.environment, environment)

    def read_calibration(self) -> Optional[dict]:
        return _read_record(self.calibration)

    def write_calibration(self, calibration: dict) -> None:
        write_json(self.calibration, calibration)

    def read_head_refit(self) -> Optional[dict]:
        return _read_record(self.head_refit)

    def write_head_refit(self, record: dict) -> None:
        write_json(self.head_refit, record)

    def read_transfer(self) -> Optional[dict]:
        return _read_record(self.transfer)

    def write_transfer(self, record: dict) -> None:
        write_json(self.transfer, record)

    def read_cross_fit(self) -> Optional[dict]:
        return _read_record(self.cross_fit)

    def write_cross_fit(self, record: dict) -> None:
        write_json(self.cross_fit, record)

    def read_mlflow(self) -> Optional[dict]:
        return _read_record(self.mlflow)

    def write_mlflow(self, record: dict) -> None:
        write_json(self.mlflow, record)


class EvalDir:
    """What `ocula evaluate ... --out DIR` writes (RUN/eval-<data>/ by default)."""

    def __init__(self, path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"EvalDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, EvalDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    report = property(lambda self: self.path / "report.json")
    per_class_csv = property(lambda self: self.path / "per_class.csv")
    confusion_csv = property(lambda self: self.path / "confusion_matrix.csv")
    confusion_png = property(lambda self: self.path / "confusion_matrix.png")
    pr_curves_png = property(lambda self: self.path / "pr_curves.png")  # multi-label; boxes: at IoU 0.5
    detections_png = property(lambda self: self.path / "detections.png")  # boxes: examples, truth dashed
    calibration = property(lambda self: self.path / "calibration.json")
    reliability_png = property(lambda self: self.path / "reliability.png")
    risk_coverage_csv = property(lambda self: self.path / "risk_coverage.csv")
    risk_coverage_png = property(lambda self: self.path / "risk_coverage.png")
    errors = property(lambda self: self.path / "errors")  # --explain-errors: ERRORS_JSON, ERRORS_PNG, ... inside

    def read_report(self) -> Optional[dict]:
        return _read_record(self.report)

    def write_report(self, report: dict) -> None:
        write_json(self.report, report)

    def read_calibration(self) -> Optional[dict]:
        return _read_record(self.calibration)

    def write_calibration(self, calibration: dict) -> None:
        write_json(self.calibration, calibration)


# ---------------------------------------------------------------------- monitor names
MONITOR_PREFIX = "val/"
LEGACY_MONITOR = "val_acc"  # before issue 24: the monitor whatever it measured (mAP for multi-label)
LEGACY_BEST = "best_val_acc"
NOT_MONITORS = ("val/loss", "val/top5")  # "val/" names that are never the monitor, should they be logged so


def monitor_key(task_monitor: str) -> str:
    """The task's monitor (the `score()` key that picks the best checkpoint) → its name in the epoch logs,
    metrics.csv, the summary and the trackers: accuracy → val/accuracy, mAP → val/mAP."""
    return MONITOR_PREFIX + task_monitor


def is_monitor(key: str) -> bool:
    return (key.startswith(MONITOR_PREFIX) and key not in NOT_MONITORS) or key == LEGACY_MONITOR


def monitor_in(row) -> Optional[str]:
    """Which key of an epoch's logs (or a metrics.csv header) holds the monitor; old runs' val_acc too."""
    return next((k for k in row if isinstance(k, str) and is_monitor(k)), None)


def monitor_value(row: dict) -> Optional[float]:
    key = monitor_in(row)
    return None if key is None else row.get(key)


def monitor_label(key: Optional[str]) -> str:
    """val/mAP → "validation mAP"; old runs' val_acc → "validation accuracy", as they always said."""
    if not key or key == LEGACY_MONITOR:
        return "validation accuracy"
    return "validation " + key[len(MONITOR_PREFIX):].replace("_", " ")


def best_score(summary: Optional[dict]) -> tuple[Optional[str], Optional[float]]:
    """(monitor, its value at the best epoch) of a summary.json: {"monitor": "val/mAP", "best_score": x}
    since issue 24, `best_val_acc` before."""
    summary = summary or {}
    if summary.get("monitor"):
        return summary["monitor"], summary.get("best_score")
    if LEGACY_BEST in summary:
        return LEGACY_MONITOR, summary[LEGACY_BEST]
    return None, None

