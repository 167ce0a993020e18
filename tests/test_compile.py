"""`--compile` (ocula.models.compiled): compiled predictions equal eager ones, and every way compiling can
fail here (torch.compile refusing, the first forward failing, no C++ compiler) prints one line and runs eager."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ocula import api
from ocula.cli import main
from ocula.models.compiled import CompiledModule, compile_model


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> list[str]:
    """40 of scikit-learn's digits as PNG files: batches of 16 leave a smaller last batch."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digit_pngs")
    images = load_digits().images[:40]
    for i, img in enumerate(images):
        Image.fromarray((img * 16).clip(0, 255).astype(np.uint8)).save(root / f"{i:02d}.png")
    return sorted(str(p) for p in root.iterdir())


def _probs(preds) -> np.ndarray:
    return np.array([[q for _, q in sorted(p.topk)] for p in preds])


def _compile_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("compile:")]


@pytest.mark.slow  # inductor builds C++ on a CPU: a minute or more on a cold cache
def test_compiled_predictions_equal_eager_ones(digits_run, digit_pngs, capsys):
    eager = list(api.predict(api.load(digits_run, "cpu"), digit_pngs, topk=10, batch_size=16, workers=0))
    clf = api.load(digits_run, "cpu").compile()
    compiled = list(api.predict(clf, digit_pngs, topk=10, batch_size=16, workers=0))
    assert isinstance(clf.model, CompiledModule) and clf.model.fell_back is None
    assert [p.label for p in compiled] == [p.label for p in eager]
    np.testing.assert_allclose(_probs(compiled), _probs(eager), rtol=0, atol=1e-4)
    lines = _compile_lines(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith("compile: first forward compiled in")


def test_a_failing_first_forward_runs_eager_with_one_line(digits_run, digit_pngs, monkeypatch, capsys):
    def broken(model, **kwargs):
        def forward(*args, **kw):
            raise RuntimeError("InductorError: no working C++ compiler\nmore detail")
        return forward

    monkeypatch.setattr(torch, "compile", broken)
    eager = list(api.predict(api.load(digits_run, "cpu"), digit_pngs, topk=10, workers=0))
    capsys.readouterr()
    assert main(["predict", digits_run, *digit_pngs[:20], "--compile", "--device", "cpu", "--topk", "3"]) == 0
    printed = capsys.readouterr().out
    assert _compile_lines(printed) == ["compile: failed on the first forward (RuntimeError: InductorError: no "
                                       "working C++ compiler); running eager"]
    clf = api.load(digits_run, "cpu").compile()
    after = list(api.predict(clf, digit_pngs, topk=10, workers=0))
    assert clf.model.fell_back and _probs(after).tolist() == _probs(eager).tolist()


def test_torch_compile_refusing_or_no_compiler_means_eager(monkeypatch, capsys):
    model = torch.nn.Linear(3, 2)

    def refuses(model, **kwargs):
        raise RuntimeError("Python 3.99 is not supported by Dynamo")

    monkeypatch.setattr(torch, "compile", refuses)
    assert compile_model(model, torch.device("cpu")) is model
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert compile_model(model, torch.device("cpu")) is model
    lines = _compile_lines(capsys.readouterr().out)
    assert lines[0] == "compile: off, torch.compile refused the model (RuntimeError: Python 3.99 is not supported " \
                       "by Dynamo); running eager"
    assert lines[1].startswith("compile: off, no C++ compiler") and len(lines) == 2


def test_train_with_compile_falls_back_and_trains(monkeypatch, tmp_path, capsys):
    def broken(model, **kwargs):
        def forward(*args, **kw):
            raise RuntimeError("backend failed")
        return forward

    monkeypatch.setattr(torch, "compile", broken)
    run = api.train("digits", model="seed_cnn", epochs=1, batch_size=64, hflip=False, compile=True,
                    out=str(tmp_path / "run"), seed=0)
    lines = _compile_lines(capsys.readouterr().out)
    assert lines == ["compile: failed on the first forward (RuntimeError: backend failed); running eager"]
    assert run.summary["epochs_run"] == 1 and (tmp_path / "run" / "weights" / "best.safetensors").is_file()
