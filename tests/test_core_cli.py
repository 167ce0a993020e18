"""The CLI is a thin shell over ocula.api: parse, call, print; user errors are one line, exit 2."""
from __future__ import annotations

import csv
import io
import json

import pytest

from ocula.cli import main
from ocula.config import list_recipes


def test_evaluate_json_to_stdout(digits_run, capsys):
    assert main(["evaluate", digits_run, "digits", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "test" and report["n"] == 359 and "confusion_matrix" in report


def test_evaluate_table(digits_run, capsys, tmp_path):
    assert main(["evaluate", digits_run, "digits", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "accuracy=" in out and "macro avg" in out and (tmp_path / "ev" / "confusion_matrix.png").is_file()


def test_predict_folder_glob_json_and_csv(digits_run, capsys, tmp_path):
    assert main(["datasets", "export", "digits", str(tmp_path / "imgs"), "--limit", "6"]) == 0
    capsys.readouterr()
    assert main(["predict", digits_run, str(tmp_path / "imgs"), "--topk", "3", "--json", "-", "--workers", "0"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 6 and all(len(p["topk"]) == 3 for p in preds)
    assert main(["predict", digits_run, str(tmp_path / "imgs" / "*" / "*.png"), "--csv", "-", "--topk", "2",
                 "--workers", "0"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6 and set(rows[0]) >= {"source", "label", "prob", "label2", "prob2"}


def test_train_accepts_flags_and_key_value(tmp_path, capsys):
    assert main(["train", "digits", "--model", "seed_cnn", "--hflip", "false", "epochs=1", "batch_size=128",
                 "--out", str(tmp_path / "r")]) == 0
    assert "run saved to" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["optim"]["epochs"] == 1 and cfg["optim"]["batch_size"] == 128 and cfg["augment"]["hflip"] is False


@pytest.mark.parametrize("argv, message", [
    (["train", "digits", "--epoch", "3"], "did you mean: --epochs"),
    (["train", "digits", "--model", "resnt18"], "did you mean: resnet18"),
    (["train", "digits", "--epochs", "three"], "epochs='three': expected int"),
    (["train", "digits", "--optimizer", "adamww"], "did you mean: adamw"),
    (["train", "nowhere/at/all"], "no such dataset or folder"),
    (["evaluate", "runs/does-not-exist", "digits"], "no such run or model file"),
    (["train", "digits", "--recipe", "fmnist-fats"], "did you mean: fmnist-fast"),
])
def test_user_errors_print_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) if argv[2:3] == ["--epoch"] else _no_raise() as exc:
        code = main(argv)
    code = exc.value.code if exc is not None and hasattr(exc, "value") else code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_models_lists_own_and_timm(capsys):
    assert main(["models", "--filter", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out
    assert main(["models", "--own"]) == 0
    assert "seed_cnn" in capsys.readouterr().out


def test_recipes_listed(capsys):
    assert main(["recipes"]) == 0
    assert "fmnist-fast" in capsys.readouterr().out


def test_recipes_include_the_documented_ones():
    assert {"fmnist-fast", "seed-cnn", "fmnist-vit"} <= set(list_recipes())


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_shipped_recipe_trains(recipe, tmp_path):
    """A recipe is a promise: its settings must build a config, a model and a few optimizer steps."""
    import math

    import ocula
    from ocula.config import load_recipe

    run = ocula.train("digits", recipe=recipe, epochs=1, max_steps=2, batch_size=32, out=str(tmp_path / recipe))
    assert run.summary["epochs_run"] == 1 and math.isfinite(run.summary["final"]["train_loss"])
    assert ocula.load(run.dir).meta["arch"]["name"] == load_recipe(recipe)["model"]
