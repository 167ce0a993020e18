"""Logging: rank 0 only at info, --quiet/--verbose, and no carriage-return frames off a terminal."""
from __future__ import annotations

import logging

import pytest

from ocula import log
from ocula.cli import main


@pytest.fixture(autouse=True)
def _default_level():
    yield
    log.set_verbosity()  # a test that went quiet must not silence the next one


def test_info_on_stdout_warnings_on_stderr(capsys):
    log.logger.info("hello")
    log.logger.warning("careful")
    out, err = capsys.readouterr()
    assert out == "hello\n" and err == "warning: careful\n"


@pytest.mark.parametrize("var", ["RANK", "LOCAL_RANK"])
def test_other_ranks_log_warnings_only(monkeypatch, capsys, var):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv(var, "1")
    log.logger.info("from rank 1")
    log.logger.error("broken on rank 1")
    with log.progress(total=3, desc="epoch 1/1", summary=True) as bar:
        bar.update(3)
    out, err = capsys.readouterr()
    assert out == "" and err == "error: broken on rank 1\n"


def test_quiet_and_verbose_levels(capsys):
    log.set_verbosity(quiet=True)
    log.logger.info("not shown")
    log.logger.warning("shown")
    assert capsys.readouterr() == ("", "warning: shown\n")
    log.set_verbosity(verbose=True)
    log.logger.debug("detail")
    assert capsys.readouterr().out == "detail\n"
    assert log.logger.getEffectiveLevel() == logging.DEBUG


def test_a_short_job_off_a_terminal_writes_nothing(capsys):
    for _ in log.progress(range(50), desc="decode", unit="img"):
        pass
    assert capsys.readouterr() == ("", "")


def test_a_long_job_off_a_terminal_writes_a_line_every_tenth(monkeypatch, capsys):
    monkeypatch.setattr(log, "QUIET_SECONDS", 0.0)  # as if each step took long
    for _ in log.progress(range(100), desc="decode", unit="img"):
        pass
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 10
    assert lines[0].startswith("decode: 10/100 img in ") and lines[-1].startswith("decode: 100/100 img")


def _train(tmp_path, *extra):
    return main(["train", "digits", "--model", "seed_cnn", "epochs=2", "batch_size=256", "--hflip", "false",
                 "--out", str(tmp_path / "run"), *extra])


def test_training_off_a_terminal_writes_one_line_per_epoch(tmp_path, capsys):
    assert _train(tmp_path) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all(" step in " in line and "val/accuracy=" in line for line in epochs)
    assert out.startswith("input ") and "run saved to" in out


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_training_prints_only_its_result(tmp_path, capsys, where):
    code = main(["--quiet", "train", "digits", "epochs=1", "batch_size=256", "--hflip", "false",
                 "--out", str(tmp_path / "run")]) if where == "before" else _train(tmp_path, "--quiet")
    assert code == 0
    out, err = capsys.readouterr()
    assert out.startswith("done: ") and out.count("\n") == 1 and "epoch" not in err
