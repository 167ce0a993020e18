"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends."""
from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import ocula
    from ocula.engine.callbacks import Callback, default_callbacks
    from ocula.config import build_config

    class KillMidEpoch(Callback):
        def on_train_step(self, trainer, logs):
            if trainer.history and len(trainer.history) == {kill_after} and logs["step_in_epoch"] == 7:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: a power cut

    cfg = build_config("digits", model="seed_cnn", epochs=4, batch_size=64, hflip=False, seed=3,
                       deterministic=True, augment="strong", out=sys.argv[1])
    extra = [KillMidEpoch()] if {kill_after} else []
    ocula.Trainer(cfg, callbacks=default_callbacks(cfg) + extra).fit()
""")


def _run(tmp_path, out, kill_after):
    script = tmp_path / f"train_{kill_after}.py"
    script.write_text(SCRIPT.format(kill_after=kill_after))
    return subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600)


def _rows(run_dir):
    rows = list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))
    return [{k: r[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val/accuracy")} for r in rows]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    assert _run(tmp_path, whole, 0).returncode == 0

    killed = tmp_path / "killed"
    proc = _run(tmp_path, killed, 2)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(_rows(killed)) == 2  # died during epoch 3

    # A new process, as after a real crash (and free of the torch thread count earlier tests left in this one)
    resumed = subprocess.run([sys.executable, "-m", "ocula", "train", "--resume", str(killed)], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _rows(killed) == _rows(whole)
    from ocula.weights_file import load_tensors

    a = load_tensors(whole / "weights" / "last.safetensors")
    b = load_tensors(killed / "weights" / "last.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
