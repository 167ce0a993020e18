"""`ocula predict RUN DATA --engine ray --out DIR` (ocula.inference.batch): on a local Ray cluster of 2 CPUs,
Ray Data's rows equal local predict file for file, hostile files are skipped and named, the Parquet is
pyarrow's, and an existing output folder is refused before anything runs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ocula import api
from ocula.cli import main
from ocula.inference.batch import COLUMNS

HOSTILE = {"empty.png": "empty file", "notes.png": "not an image", "truncated.png": "truncated or corrupt"}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> Path:
    """300 of scikit-learn's digits as PNGs in class folders, and three files that are not images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digit_files")
    d = load_digits()
    for i in range(300):
        (root / str(d.target[i])).mkdir(exist_ok=True)
        Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).save(root / str(d.target[i]) / f"{i:03d}.png")
    good = (root / "0" / "000.png").read_bytes()
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_text("this is not a picture")
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture(scope="module")
def ray_run(digits_run, digit_files, ray_cluster, tmp_path_factory):
    """One `ocula predict --engine ray` through the CLI, the folder given relative to the working directory
    (Ray's workers run elsewhere) → (its stdout, the Parquet folder)."""
    import contextlib
    import io
    import os

    out = tmp_path_factory.mktemp("ray") / "preds.parquet"
    printed, cwd = io.StringIO(), os.getcwd()
    os.chdir(digit_files.parent)
    try:
        with contextlib.redirect_stdout(printed):
            code = main(["predict", digits_run, digit_files.name, "--engine", "ray", "--out", str(out), "--topk", "3"])
    finally:
        os.chdir(cwd)
    assert code == 0
    return printed.getvalue(), out


def test_ray_rows_equal_local_predict_file_for_file(digits_run, digit_files, ray_run, monkeypatch):
    rows = {r["path"]: r for r in pq.read_table(ray_run[1]).to_pylist()}
    monkeypatch.chdir(digit_files.parent)
    local = {p.source: p for p in api.predict(digits_run, [digit_files.name], topk=3)}
    assert not Path(next(iter(local))).is_absolute()
    assert len(local) == 303 and rows.keys() == local.keys()
    for path, p in local.items():
        row = rows[path]
        assert row["error"] == p.error
        if p.error is None:
            assert row["label"] == p.label and row["topk_labels"] == [lab for lab, _ in p.topk]
            np.testing.assert_allclose(row["topk_probs"], [q for _, q in p.topk], rtol=0, atol=1e-5)
            assert row["prob"] == pytest.approx(p.prob, abs=1e-5)


def test_hostile_files_are_skipped_with_their_reason(ray_run):
    printed, out = ray_run
    table = pq.read_table(out)
    skipped = {Path(r["path"]).name: r["error"] for r in table.to_pylist() if r["error"] is not None}
    assert skipped == HOSTILE
    assert "303 files" in printed and "300 predicted, 3 skipped" in printed and "rows/s" in printed


def test_the_parquet_names_the_model_and_reads_in_pyarrow(digits_run, ray_run):
    table = pq.read_table(ray_run[1])
    assert table.schema.names == list(COLUMNS) and table.num_rows == 303
    weights = Path(digits_run) / "weights" / "best.safetensors"
    assert set(table.column("model").to_pylist()) == {f"digits@{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"}


def test_an_existing_output_folder_is_refused_before_ray_starts(digits_run, digit_files, tmp_path, capsys):
    out = tmp_path / "preds.parquet"
    out.mkdir()
    (out / "old.parquet").write_bytes(b"rows of an earlier run")
    assert main(["predict", digits_run, str(digit_files), "--engine", "ray", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exists" in err
    assert [p.name for p in out.iterdir()] == ["old.parquet"]


def test_ray_options_need_the_ray_engine(digits_run, digit_files, capsys):
    assert main(["predict", digits_run, str(digit_files), "--out", "x.parquet"]) == 2
    assert main(["predict", digits_run, str(digit_files), "--engine", "ray"]) == 2
    assert "--out" in capsys.readouterr().err
