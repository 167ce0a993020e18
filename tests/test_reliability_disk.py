"""Issue 14 part 5, disk faults: a full or read-only disk gives one line, never a partial file that a
later load would accept, and `train --resume` continues from the last good state after a failed save.

Real faults where the machine allows it (a tiny tmpfs, mounted read-only or filled up: tests run as
root, where chmod does not stop writes); a patched writer everywhere else.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocula import bundle, io, weights_file
from ocula.errors import OculaError


def _cli(capsys, *args) -> tuple[int, str]:
    from ocula import cli

    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def _assert_one_line(code, err, *needles):
    # progress is not an error line: tqdm frames on a terminal, an epoch's summary line elsewhere
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line
             and not re.match(r"epoch \d+/\d+: \d+/\d+ step in ", line)]
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("ocula: error: "), err[-2000:]
    for n in needles:
        assert str(n) in lines[0], lines[0]


def _leftovers(root) -> list[str]:
    """Temp files of atomic writes and anything half-written that looks like a model."""
    return [str(p) for p in Path(root).rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("OCULA_DEBUG", raising=False)


def _mount(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode(errors='replace').strip()})")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs with every byte taken: each write fails with ENOSPC."""
    root = tmp_path / "full"
    _mount(root, "size=64k")
    try:
        try:
            with open(root / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


@pytest.fixture
def read_only(tmp_path):
    root = tmp_path / "ro"
    _mount(root, "ro,size=64k")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def test_full_disk_train_export_audit(full_disk, digits_run, shapes_folder, capsys):
    code, err = _cli(capsys, "train", "digits", "--model", "seed_cnn", "--epochs", "1", "--max-steps", "2",
                     "--out", full_disk / "run")
    _assert_one_line(code, err, full_disk / "run", "No space left on device")
    assert not list((full_disk / "run").rglob("*.safetensors")) and not _leftovers(full_disk)
    code, err = _cli(capsys, "export", digits_run, "--out", full_disk / "m.onnx")
    _assert_one_line(code, err, full_disk / "m.onnx", "No space left on device")
    assert not (full_disk / "m.onnx").exists() and not _leftovers(full_disk)
    code, err = _cli(capsys, "audit", shapes_folder, "--out", full_disk / "audit", "--folds", "2", "--epochs", "1")
    _assert_one_line(code, err, full_disk / "audit", "No space left on device")
    assert not _leftovers(full_disk)


def test_read_only_disk_evaluate_and_train(read_only, digits_run, capsys):
    code, err = _cli(capsys, "evaluate", digits_run, "digits", "--out", read_only / "eval")
    _assert_one_line(code, err, read_only / "eval", "Read-only file system")
    code, err = _cli(capsys, "train", "digits", "--model", "seed_cnn", "--epochs", "1", "--out", read_only / "run")
    _assert_one_line(code, err, read_only / "run", "Read-only file system")


def test_failed_state_save_then_resume_continues(tmp_path, monkeypatch, capsys):
    """The second epoch's state cannot be saved (disk full at the rename): one line; the run keeps the
    first epoch's state, which loads, and --resume finishes the run from there."""
    real = os.replace
    saves = []

    def replace(src, dst, *a, **k):
        if str(dst).endswith(os.path.join("state", "last.safetensors")):
            saves.append(dst)
            if len(saves) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device", src)
        return real(src, dst, *a, **k)

    run = tmp_path / "run"
    monkeypatch.setattr(os, "replace", replace)
    code, err = _cli(capsys, "train", "digits", "--model", "seed_cnn", "--epochs", "2", "--batch-size", "128",
                     "--hflip", "false", "--out", run)
    _assert_one_line(code, err, run / "state" / "last.safetensors", "No space left on device")
    monkeypatch.setattr(os, "replace", real)
    assert not _leftovers(run)
    assert weights_file.load_state(run / "state" / "last.safetensors")["epoch"] == 1
    bundle.load_model(run)  # the weights on disk are whole
    code, err = _cli(capsys, "train", "--resume", run)
    assert code == 0, err[-2000:]
    assert [r["epoch"] for r in weights_file.load_state(run / "state" / "last.safetensors")["history"]] == [1, 2]
    assert io.read_json(run / "summary.json")["epochs_run"] == 2


def test_a_write_that_fails_midway_keeps_the_old_bundle(digits_run, tmp_path, monkeypatch):
    """safetensors writes half the file, then the disk fills up (or Ctrl-C): the temp file goes, the
    previous best.safetensors stays and loads, and nothing named .safetensors is half-written."""
    import safetensors.torch

    target = tmp_path / "best.safetensors"
    shutil.copy(Path(digits_run) / "weights" / "best.safetensors", target)
    model, meta = bundle.load_model(target)

    for exc in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        def half(tensors, filename, metadata=None, exc=exc):
            Path(filename).write_bytes(target.read_bytes()[:1000])
            raise exc

        monkeypatch.setattr(safetensors.torch, "save_file", half)
        with pytest.raises(OculaError if isinstance(exc, OSError) else KeyboardInterrupt) as e:
            bundle.save_weights(target, model, meta)
        if isinstance(exc, OSError):
            assert str(target) in str(e.value) and "\n" not in str(e.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors"]
        bundle.load_model(target)


def test_killed_mid_write_leaves_nothing_a_load_accepts(digits_run, tmp_path):
    """SIGKILL between the write and the rename: the half file keeps its temp name, which no loader picks."""
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = (run / "weights" / "best.safetensors").read_bytes()
    code = f"""
import os, signal, safetensors.torch
from pathlib import Path
from ocula import bundle
def half(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"x" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
safetensors.torch.save_file = half
model, meta = bundle.load_model({str(run)!r})
bundle.save_weights({str(run / "weights" / "best.safetensors")!r}, model, meta)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**os.environ, "OCULA_OFFLINE": "1"})
    assert r.returncode == -9
    left = _leftovers(run)
    assert len(left) == 1 and not left[0].endswith(".safetensors")
    assert (run / "weights" / "best.safetensors").read_bytes() == before
    assert bundle.resolve_weights(run) == run / "weights" / "best.safetensors"
    bundle.load_model(run)


def test_patched_full_disk_export_and_audit(digits_run, shapes_folder, tmp_path, monkeypatch, capsys):
    """Where no tmpfs can be mounted: the same one-line errors from a writer patched to fail."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if str(dst).startswith(str(tmp_path / "out")):
            raise OSError(errno.EROFS, "Read-only file system", src)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    code, err = _cli(capsys, "export", digits_run, "--out", tmp_path / "out" / "m.onnx")
    _assert_one_line(code, err, tmp_path / "out" / "m.onnx", "Read-only file system")
    code, err = _cli(capsys, "audit", shapes_folder, "--out", tmp_path / "out" / "audit", "--folds", "2", "--epochs", "1")
    _assert_one_line(code, err, tmp_path / "out" / "audit", "Read-only file system")
    assert not _leftovers(tmp_path / "out") and not list((tmp_path / "out").rglob("*.onnx"))
