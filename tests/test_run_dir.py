"""RunDir: the named paths of a run, its JSON records round-trip, and old runs (val_acc) still read."""
from __future__ import annotations

import json
import os

import pytest

from ocula.engine.callbacks import CSVLogger
from ocula.errors import OculaError
from ocula.report.files import Reader, find_eval_dir
from ocula.report.runs import run_row
from ocula.report.training import curves_section, summary_section
from ocula.run_dir import (EvalDir, RunDir, best_score, monitor_in, monitor_key, monitor_label,
                           monitor_value)

RECORDS = ("config", "resolved", "model", "summary", "data", "split", "environment", "calibration",
           "head_refit", "transfer", "mlflow")


def test_named_paths_are_the_files_a_run_has_always_held(tmp_path):
    run = RunDir(tmp_path)
    names = {r: getattr(run, r).name for r in RECORDS}
    assert names["config"] == "config.json" and names["model"] == "model.json"
    assert names["summary"] == "summary.json" and names["resolved"] == "resolved.json"
    assert run.weights("best") == tmp_path / "weights" / "best.safetensors"
    assert run.weights("last") == tmp_path / "weights" / "last.safetensors"
    assert run.state == tmp_path / "state" / "last.safetensors"
    assert (run.metrics_csv.name, run.curves_png.name, run.report_html.name) == ("metrics.csv", "curves.png",
                                                                               "report.html")
    assert run.evaluation("data/pets/").path == tmp_path / "eval-pets"
    assert os.fspath(run) == str(tmp_path) and RunDir(run).path == tmp_path


@pytest.mark.parametrize("record", RECORDS)
def test_each_record_round_trips_and_a_missing_one_is_none(tmp_path, record):
    run = RunDir(tmp_path / "run")
    assert getattr(run, f"read_{record}")() is None
    value = {"record": record, "nested": {"x": [1, 2.5, None]}}
    getattr(run, f"write_{record}")(value)
    assert getattr(run, f"read_{record}")() == value
    assert json.loads(getattr(run, record).read_text()) == value
    assert not list(run.path.glob(".*.tmp"))  # written atomically: no temp file left behind


def test_an_unreadable_record_is_one_line_naming_it(tmp_path):
    run = RunDir(tmp_path)
    run.summary.write_text("{not json")
    with pytest.raises(OculaError, match="summary.json: unreadable"):
        run.read_summary()


def test_is_run_folds_in_the_markers(tmp_path):
    assert not RunDir.is_run(tmp_path) and not RunDir.is_run(tmp_path / "missing")
    RunDir(tmp_path).write_model({"format": "x"})
    assert RunDir.is_run(tmp_path)
    assert not RunDir.is_run(tmp_path / "model.json")  # a file is not a run


def test_the_newest_evaluation_folder_is_found(tmp_path):
    run = RunDir(tmp_path)
    old, new, other = EvalDir(tmp_path / "eval-a"), EvalDir(tmp_path / "eval-b"), EvalDir(tmp_path / "misc")
    for d in (old, new, other):
        d.write_report({"accuracy": 0.5})
    os.utime(old.report, (1, 1))
    assert set(run.evaluations()) == {old, new}  # neither per_class.csv nor an eval-* name: not an evaluation
    assert run.newest_evaluation() == new
    assert find_eval_dir(tmp_path) == new.path


def test_monitor_names_say_what_they_hold_and_old_names_still_read():
    assert monitor_key("accuracy") == "val/accuracy" and monitor_key("mAP") == "val/mAP"
    assert monitor_in({"val_loss": 1.0, "val/mAP": 0.7, "val/top5": 0.9}) == "val/mAP"
    assert monitor_in({"val_loss": 1.0, "val_acc": 0.6}) == "val_acc"
    assert monitor_in({"train_loss": 1.0, "val/loss": 0.9}) is None
    assert monitor_value({"val/accuracy": 0.8}) == 0.8
    assert monitor_label("val/mAP") == "validation mAP" and monitor_label("val_acc") == "validation accuracy"
    assert best_score({"monitor": "val/mAP", "best_score": 0.7, "best_val_acc": 0.1}) == ("val/mAP", 0.7)
    assert best_score({"best_val_acc": 0.6}) == ("val_acc", 0.6)
    assert best_score(None) == (None, None)


def _old_run(tmp_path, monitor="val_acc", summary=None):
    """A run folder laid out as ocula wrote it before issue 24 (val_acc), or with the new monitor name."""
    run = RunDir(tmp_path / "old")
    run.write_config({"data": {"source": "digits"}, "model": {"name": "seed_cnn"}, "optim": {"epochs": 2}})
    run.write_model({"arch": {"name": "seed_cnn"}, "classes": ["a", "b"]})
    run.write_summary(summary or {"epochs_run": 2, "best_epoch": 2, "best_val_acc": 0.75, "train_time_s": 3.0,
                                  "final": {"val_acc": 0.75}})
    run.metrics_csv.write_text(f"epoch,train_loss,train_acc,val_loss,{monitor},val_top5,lr\n"
                               f"1,0.9,0.5,0.8,0.6,1.0,0.1\n2,0.5,0.8,0.6,0.75,1.0,0.01\n")
    return run


def test_an_old_run_with_val_acc_still_reads_in_the_report_and_the_runs_table(tmp_path):
    run = _old_run(tmp_path)
    reader = Reader(run.path)
    training = summary_section(reader, None).data["training"]
    assert training["best_score"] == 0.75 and training["best_label"] == "best validation accuracy"
    curves = curves_section(reader)
    assert curves.ran and "val_acc" in curves.data["columns"]
    row = run_row(run.path, tmp_path)
    assert row["best"] == 0.75 and row["epochs"] == 2 and row["finished"]


def test_a_new_run_names_its_monitor_in_the_report(tmp_path):
    run = _old_run(tmp_path, "val/mAP", {"epochs_run": 2, "monitor": "val/mAP", "best_score": 0.61,
                                         "final": {"val/mAP": 0.61}})
    reader = Reader(run.path)
    training = summary_section(reader, None).data["training"]
    assert training["best_score"] == 0.61 and training["best_label"] == "best validation mAP"
    assert "val/mAP" in curves_section(reader).data["columns"]
    assert run_row(run.path, tmp_path)["best"] == 0.61


def test_metrics_csv_names_the_monitor_column_as_the_logs_do():
    logger = CSVLogger()
    assert "val/mAP" in logger.columns([{"epoch": 1, "val/mAP": 0.5}]) and "val_acc" not in logger.columns(
        [{"epoch": 1, "val/mAP": 0.5}])
    assert "val_acc" in logger.columns([{"epoch": 1, "val_acc": 0.5}])  # what the trainer logs today
    assert "val_acc" in logger.columns([{"epoch": 1, "train_loss": 1.0}])  # no validation: the old header
