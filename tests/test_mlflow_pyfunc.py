"""`ocula.track.log_model(RUN)`: a run trained without a tracker, logged afterwards to a file-based MLflow store
and registered, using only what mlflow-skinny installs (the full mlflow's own packages are made unimportable);
the registered model predicts what `ocula predict` predicts. Logging during training: tests/test_track.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from digit_images import digit_files  # tests/ is on sys.path (rootdir conftest)

import ocula
from ocula.errors import OculaError
from ocula.run_dir import RunDir

pytest.importorskip("mlflow")
pytest.importorskip("pandas")

# what `pip install mlflow` adds to mlflow-skinny (its Requires-Dist beside mlflow-skinny and mlflow-tracing);
# numpy, pandas and scipy stay: ocula needs numpy and scipy, and mlflow.pyfunc needs pandas (the track extra)
FULL_MLFLOW_ONLY = ("flask", "flask_cors", "aiohttp", "alembic", "cryptography", "docker", "graphene", "gunicorn",
                    "huey", "matplotlib", "pyarrow", "sklearn", "skops", "sqlalchemy", "waitress")

SKINNY_SCRIPT = """
import json, sys

BLOCKED = set(sys.argv[1].split(","))


class WithoutFullMlflow:
    # finds nothing of BLOCKED: importing them fails and find_spec says None, as if not installed

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def find_distributions(self, context=None):  # importlib.metadata: installed are mlflow-skinny, not mlflow
        from importlib.metadata import DistributionFinder

        found = getattr(self.finder, "find_distributions", lambda c: ())(context or DistributionFinder.Context())
        return (d for d in found if (d.metadata["Name"] or "").lower() != "mlflow")

    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()


sys.meta_path[:] = [WithoutFullMlflow(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
import mlflow
import pandas as pd

import ocula.track

run, uri, paths, out = sys.argv[2:]
mlflow.set_tracking_uri(uri)
model_uri = ocula.track.log_model(run, registered_model_name="ocula-digits")
model = mlflow.pyfunc.load_model("models:/ocula-digits/1")
frame = model.predict(pd.DataFrame({"path": json.loads(paths)}), params={"topk": 3})
from mlflow.version import IS_MLFLOW_SKINNY
loaded = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
json.dump({"uri": model_uri, "rows": json.loads(frame.to_json(orient="records")), "loaded": loaded, "skinny": IS_MLFLOW_SKINNY}, open(out, "w"))
"""


@pytest.fixture(scope="module")
def finished_run(digits_run, tmp_path_factory):
    """A copy of conftest's digits run (trained with no tracker; log_model writes RUN/mlflow.json into it),
    and some digit images as PNG files."""
    root = tmp_path_factory.mktemp("pyfunc")
    shutil.copytree(digits_run, root / "run")
    return root / "run", digit_files(root / "digits", 6)


@pytest.mark.slow  # a fresh interpreter imports torch and mlflow
def test_a_finished_run_logs_registers_and_serves_with_mlflow_skinny_only(finished_run, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    run_dir, paths = finished_run
    uri = (tmp_path / "mlruns").as_uri()  # file:///…: a file-based store, no database, no server
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.7+: the file store is opt-in
    # MlflowClient's registry falls back to MLflow 3's default (sqlite:///mlflow.db in the cwd) otherwise
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-c", SKINNY_SCRIPT, ",".join(FULL_MLFLOW_ONLY), str(run_dir), uri,
                           json.dumps(paths), str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_EXPERIMENT_NAME": "skinny"},
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["loaded"] == [] and result["skinny"]  # mlflow saw itself installed as mlflow-skinny alone

    want = list(ocula.predict(str(run_dir), paths, topk=3))
    for row, p in zip(result["rows"], want):
        assert row["label"] == p.label and abs(row["prob"] - p.prob) < 1e-5 and row["error"] is None
        assert [row["label_2"], row["label_3"]] == [lab for lab, _ in p.topk[1:]]
        assert abs(row["prob_3"] - p.topk[2][1]) < 1e-5

    run_id = result["uri"].split("/")[1]
    assert result["uri"] == f"runs:/{run_id}/model"
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == run_id  # the next log_model joins it
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == run_dir.name and run.data.tags["ocula.run_dir"] == str(run_dir.resolve())
    assert run.data.params["model"] == "seed_cnn" and run.data.params["epochs"] == "4"
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert abs(run.data.metrics["calibration/ece"] - calibration["after"]["ece"]) < 1e-9
    assert run.data.metrics["epochs_run"] == 4
    assert {a.path for a in client.list_artifacts(run_id, "config")} == {"config/config.json", "config/resolved.json"}
    assert client.get_model_version("ocula-digits", "1").run_id == run_id


def test_a_later_log_model_joins_the_run_with_the_newest_evaluation(finished_run, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ocula.track import log_model

    run_dir, _ = finished_run
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "later")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        first = log_model(run_dir, weights="last")
        report = ocula.evaluate(str(run_dir), "digits", out_dir=str(RunDir(run_dir).evaluation("digits")))
        second = log_model(run_dir)
    finally:
        mlflow.set_tracking_uri(None)
    assert first == second  # the same MLflow run: RUN/mlflow.json names it
    metrics = MlflowClient(tracking_uri=uri).get_run(first.split("/")[1]).data.metrics
    assert abs(metrics["eval/accuracy"] - report["accuracy"]) < 1e-9
    assert abs(metrics["eval/ece"] - report["calibration"]["after"]["ece"]) < 1e-9


def test_log_model_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    from ocula.track import log_model

    with pytest.raises(OculaError, match="no best bundle to log"):
        log_model(tmp_path)  # checked before any MLflow run is opened
    assert list(tmp_path.iterdir()) == []
