"""Trackers: a real local MLflow store (SQLite file, and a `mlflow server` process) read back with
MlflowClient, the logged pyfunc model loaded back with mlflow.pyfunc; TensorBoard event files (scalars,
hparams) read back with tensorboard's own EventAccumulator; rank 0 only."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from digit_images import digit_files  # tests/ is on sys.path (rootdir conftest)

from ocula.errors import OculaError
from ocula.track import TrackerCallback, parse_trackers, training_callbacks

EPOCHS = 2


def _train(out: Path, track: str, report: bool = True) -> Path:
    from ocula.config import build_config
    from ocula.engine.trainer import Trainer

    cfg = build_config("digits", model="seed_cnn", epochs=EPOCHS, batch_size=64, hflip=False, out=str(out), seed=0)
    Trainer(cfg, callbacks=training_callbacks(cfg, None, track=track, report=report)).fit()
    return out


def _check_mlflow_run(client, run_dir: Path) -> None:
    experiment = client.get_experiment_by_name("ocula-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["model.name" if "model.name" in run.data.params else "model"] == "seed_cnn"
    assert run.data.tags["ocula.run_dir"] == str(run_dir.resolve())
    val = client.get_metric_history(run.info.run_id, "val/accuracy")
    lr = client.get_metric_history(run.info.run_id, "lr")
    assert sorted(m.step for m in val) == sorted(m.step for m in lr) == list(range(1, EPOCHS + 1))
    rows = list(__import__("csv").DictReader(open(run_dir / "metrics.csv")))
    assert abs(max(val, key=lambda m: m.step).value - float(rows[-1]["val/accuracy"])) < 1e-5
    for name in ("best_val/accuracy", "train_time_s", "final_val/accuracy", "epochs_run"):
        assert name in run.data.metrics, name
    assert run.data.metrics["epochs_run"] == EPOCHS
    calibration = json.loads((run_dir / "calibration.json").read_text())  # fitted on val at the end of training
    assert abs(run.data.metrics["calibration/ece"] - calibration["after"]["ece"]) < 1e-9
    assert abs(run.data.metrics["calibration/ece_before"] - calibration["before"]["ece"]) < 1e-9
    assert abs(run.data.metrics["calibration/temperature"] - calibration["temperature"]) < 1e-9
    resolved = json.loads((run_dir / "resolved.json").read_text())["config"]  # the config as trained
    assert run.data.params["lr"] == json.dumps(resolved["optim"]["lr"])
    assert run.data.params["epochs"] == str(EPOCHS) and run.data.params["batch_size"] == "64"
    config = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert config == {"config/config.json", "config/resolved.json"}
    local = client.download_artifacts(run.info.run_id, "config/resolved.json", str(run_dir.parent / "dl-config"))
    assert json.loads(Path(local).read_text())["config"] == resolved
    root = {a.path for a in client.list_artifacts(run.info.run_id)}
    bundle = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"report.html", "metrics.csv", "curves.png", "bundle"} <= root
    assert bundle == {"bundle/best.safetensors", "bundle/model.json"}
    local = client.download_artifacts(run.info.run_id, "bundle/best.safetensors", str(run_dir.parent / "dl"))
    assert Path(local).read_bytes() == (run_dir / "weights" / "best.safetensors").read_bytes()


@pytest.fixture
def mlflow_env(monkeypatch, tmp_path):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ocula-test")
    monkeypatch.chdir(tmp_path)  # nothing lands in the working tree (./mlruns, ./mlartifacts)
    yield
    import mlflow

    mlflow.set_tracking_uri(None)  # the next test's environment decides again


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One run logged to TensorBoard and to a SQLite-backed MLflow store, with its report: → (run, uri)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    import mlflow

    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    cwd = os.getcwd()
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="ocula-test")
    os.chdir(root)
    try:
        run_dir = _train(root / "run", "tensorboard,mlflow")
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        mlflow.set_tracking_uri(None)
    return run_dir, uri


def test_mlflow_round_trip_through_a_sqlite_store(tracked_run):
    from mlflow.tracking import MlflowClient

    run_dir, uri = tracked_run
    assert (run_dir / "report.html").is_file()
    _check_mlflow_run(MlflowClient(tracking_uri=uri), run_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_round_trip_through_an_mlflow_server(mlflow_env, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"),
                              start_new_session=True)
    try:
        _wait_until_up(server, f"{url}/health", tmp_path / "server.log", 90)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        run_dir = _train(tmp_path / "run", "mlflow")
        _check_mlflow_run(MlflowClient(tracking_uri=url), run_dir)
        assert any((tmp_path / "artifacts").rglob("best.safetensors"))  # the server stored the bundle
    finally:
        _stop(server)


def test_tensorboard_event_files_load_in_tensorboards_reader(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/accuracy", "lr", "final/best_val/accuracy"} <= scalars
    assert [e.step for e in acc.Scalars("val/accuracy")] == list(range(1, EPOCHS + 1))
    assert [e.step for e in acc.Scalars("lr")] == list(range(1, EPOCHS + 1))
    text = {t: acc.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in acc.Tags()["tensors"]}
    config = next(v for k, v in text.items() if k.startswith("config"))
    files = next(v for k, v in text.items() if k.startswith("files"))
    assert "seed_cnn" in config and "best.safetensors" in files and "report.html" in files


def test_tensorboard_hparams_hold_the_resolved_config_and_the_final_metrics(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, _ = tracked_run
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")  # what the HParams dashboard reads
    parsed = {tag: plugin_data_pb2.HParamsPluginData.FromString(blob) for tag, blob in content.items()}
    start = next(p.session_start_info for p in parsed.values() if p.HasField("session_start_info"))
    experiment = next(p.experiment for p in parsed.values() if p.HasField("experiment"))
    resolved = json.loads((run_dir / "resolved.json").read_text())["config"]
    assert start.hparams["model"].string_value == "seed_cnn"
    assert abs(start.hparams["lr"].number_value - resolved["optim"]["lr"]) < 1e-12
    assert start.hparams["epochs"].number_value == EPOCHS and start.hparams["hflip"].bool_value is False
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"final/best_val/accuracy", "final/calibration/ece", "final/train_time_s"} <= metrics
    assert "final/calibration/ece" in acc.Tags()["scalars"]  # the metrics the hparams name are logged


def test_the_logged_model_predicts_what_ocula_predicts(tracked_run, tmp_path):
    """`mlflow.pyfunc.load_model("runs:/<id>/model")`: the same labels and probabilities as `ocula predict`,
    from file paths and from base64 image bytes; unreadable rows come back with their reason."""
    import mlflow
    import pandas as pd

    import ocula

    run_dir, uri = tracked_run
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    paths = digit_files(tmp_path / "digits")
    ocula_preds = list(ocula.predict(str(run_dir), paths, topk=10))
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.metadata.signature.params.to_dict()[0]["name"] == "topk"
    out = model.predict(pd.DataFrame({"path": paths}), params={"topk": 10})
    assert list(out.columns[:4]) == ["label", "prob", "label_2", "prob_2"] and out["error"].isna().all()
    for (_, row), want in zip(out.iterrows(), ocula_preds):
        assert row["label"] == want.label and abs(row["prob"] - want.prob) < 1e-5
        got = {row["label"]: row["prob"], **{row[f"label_{k}"]: row[f"prob_{k}"] for k in range(2, 11)}}
        assert got.keys() == {lab for lab, _ in want.topk}
        assert all(abs(got[lab] - p) < 1e-5 for lab, p in want.topk)

    (tmp_path / "broken.png").write_bytes(b"not an image")
    encoded = [base64.b64encode(Path(p).read_bytes()).decode() for p in paths[:3]]
    rows = pd.DataFrame({"path": [None, None, None, str(tmp_path / "broken.png"), None, paths[4]],
                         "image": [*encoded, None, "%%% not base64", None]})
    out = model.predict(rows)  # topk 1: label, prob, error
    assert list(out.columns) == ["label", "prob", "error"]
    assert list(out["label"][:3]) == [p.label for p in ocula_preds[:3]] and out["error"][:3].isna().all()
    assert all(abs(a - p.prob) < 1e-5 for a, p in zip(out["prob"][:3], ocula_preds[:3]))
    assert out["label"][5] == ocula_preds[4].label
    assert pd.isna(out["label"][3]) and pd.isna(out["prob"][3]) and out["error"][3]  # the reader's reason
    assert pd.isna(out["label"][4]) and "base64" in out["error"][4]


def test_tracker_names_are_checked():
    assert parse_trackers("tensorboard, MLflow,tensorboard") == ["tensorboard", "mlflow"]
    assert parse_trackers(None) == parse_trackers("") == parse_trackers("none") == []
    with pytest.raises(OculaError, match="did you mean: tensorboard"):
        parse_trackers("tensorbord")


def test_missing_tracker_package_is_one_line(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *a, **k):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    cb = TrackerCallback("mlflow")

    class FakeTrainer:
        run_dir, cfg = tmp_path, None

    with pytest.raises(OculaError, match=r"pip install 'ocula\[track\]'"):
        cb.on_fit_start(FakeTrainer())

    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(OculaError, match=r"--track mlflow needs the mlflow package"):  # before any data loads
        TrackerCallback("mlflow")


def test_other_ranks_log_nothing(monkeypatch, tmp_path):
    from ocula.engine import distributed

    monkeypatch.setattr(distributed, "is_main", lambda: False)
    cb = TrackerCallback("tensorboard,mlflow")

    class FakeTrainer:
        run_dir = tmp_path

    cb.on_fit_start(FakeTrainer())  # would import both and open a run on rank 0
    cb.on_epoch_end(FakeTrainer(), 0, {"val/accuracy": 0.5})
    cb.on_fit_end(FakeTrainer(), {"final": {}})
    assert cb.backends == [] and not list(tmp_path.iterdir())


@pytest.mark.dist
@pytest.mark.slow
def test_under_ddp_only_rank_0_logs(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "ddp"}
    code = ("import sys; from ocula.config import build_config; from ocula.engine.trainer import Trainer; "
            "from ocula.track import training_callbacks; "
            "cfg = build_config('digits', model='seed_cnn', epochs=1, hflip=False, threads=1, out=sys.argv[1]); "
            "Trainer(cfg, callbacks=training_callbacks(cfg, None, track='tensorboard,mlflow')).fit(); "
            "from ocula.engine import distributed; distributed.cleanup()")
    script = tmp_path / "train_ddp.py"
    script.write_text(code)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), str(script), str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_cli_train_with_report_and_track(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from ocula.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "digits", "--epochs", "1", "--hflip", "false", "--report", "--track", "tensorboard",
                 "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and list((out / "tensorboard").glob("events.out.tfevents.*"))
    html = (out / "report.html").read_text()
    assert 'id="summary" data-status="ran"' in html and "training has not finished" not in html
    assert main(["train", "digits", "--track", "tensorbord", "--out", str(tmp_path / "bad")]) == 2
    assert "did you mean: tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_resume_goes_on_logging_to_the_same_mlflow_run(mlflow_env, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    from ocula.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "run"
    assert main(["train", "digits", "--epochs", "1", "--hflip", "false", "--track", "mlflow", "--out", str(out)]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ocula-test").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "val/accuracy")) == [1, 2]


@pytest.mark.slow
def test_mlflow_models_serve_answers_for_the_logged_model(tracked_run, tmp_path):
    """`mlflow models serve -m runs:/<id>/model --env-manager local`: a JSON request with a path, base64 bytes
    and an empty row; the answer is valid JSON (null, never NaN) with `ocula predict`'s labels."""
    import ocula

    run_dir, uri = tracked_run
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    paths = digit_files(tmp_path / "digits", 2)
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` by name
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    server = subprocess.Popen([str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", f"runs:/{run_id}/model",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"), start_new_session=True)
    try:
        _wait_until_up(server, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", 120)
        image = base64.b64encode(Path(paths[1]).read_bytes()).decode()
        body = {"dataframe_split": {"columns": ["path", "image"], "data": [[paths[0], None], [None, image], [None, None]]},
                "params": {"topk": 2}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            text = r.read().decode()
    finally:
        _stop(server)

    def no_nan(name):
        raise AssertionError(f"{name} in the JSON answer")

    rows = json.loads(text, parse_constant=no_nan)["predictions"]
    want = list(ocula.predict(str(run_dir), paths, topk=2))
    for row, p in zip(rows, want):
        assert (row["label"], row["label_2"], row["error"]) == (p.label, p.topk[1][0], None)
        assert abs(row["prob"] - p.prob) < 1e-5
    assert rows[2]["label"] is None and rows[2]["error"] == "no image: give 'path' or 'image'"


def _wait_until_up(server, url: str, log, seconds: float) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert server.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"{url} did not answer in {seconds:g} s"
        time.sleep(0.5)


def _stop(server) -> None:
    """SIGTERM the server's process group; SIGKILL it if it has not gone in 20 s."""
    os.killpg(server.pid, 15)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
        server.wait()
