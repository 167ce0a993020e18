"""Training that survives a lost worker: under `torchrun --max-restarts 1` a rank killed with SIGKILL mid-epoch
brings the job back from its own last state, with no flag, and the run ends bit for bit where an uninterrupted
two-process run ends."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ocula.weights_file import load_tensors

# The job run by torchrun, twice in the same two processes: first the uninterrupted reference (--out WHOLE), then
# the same run in the default directory runs/digits-seed_cnn[-N], in which rank 1 kills itself (no cleanup: a lost
# machine) in the middle of the second epoch, on the first attempt only. The restarted attempt skips the reference.
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import ocula
    from ocula.config import build_config
    from ocula.engine.callbacks import Callback, default_callbacks

    class KillRank1(Callback):
        def on_train_step(self, trainer, logs):
            if (trainer.rank == 1 and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"
                    and trainer.global_step == trainer.steps_per_epoch + 5):
                os.kill(os.getpid(), signal.SIGKILL)

    def train(extra, **where):
        cfg = build_config("digits", model="seed_cnn", epochs=2, batch_size=64, hflip=False, seed=5,
                           precision="fp32", channels_last=False, threads=1, calibrate="none", **where)
        ocula.Trainer(cfg, callbacks=default_callbacks(cfg) + extra).fit()

    if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        train([], out=sys.argv[1])
    train([KillRank1()])
""")


def _torchrun(tmp_path, cwd, whole):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts",
                           "1", "--master-port", "29571", str(script), str(whole)],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=400)


def _rows(run_dir):
    keep = ("epoch", "train_loss", "train_acc", "val_loss", "val/accuracy", "lr")
    return [{k: r[k] for k in keep} for r in csv.DictReader(open(Path(run_dir) / "metrics.csv"))]


@pytest.mark.dist
@pytest.mark.slow
def test_torchrun_restart_after_sigkill_matches_uninterrupted_run(tmp_path):
    cwd = tmp_path / "job"
    older = cwd / "runs" / "digits-seed_cnn"  # another job's run: the restart must not take it, nor a fresh -3
    older.mkdir(parents=True)
    (older / "elastic.json").write_text(json.dumps({"run_id": "another-job"}))
    killed = _torchrun(tmp_path, cwd, tmp_path / "whole")
    assert killed.returncode == 0, killed.stderr[-3000:]
    log = killed.stdout + killed.stderr
    assert "(exitcode: -9) local_rank: 1" in log, log[-3000:]  # rank 1 died of SIGKILL...
    assert "torchrun restart 1: resuming" in log, log[-3000:]  # ...and the job came back on its own
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == ["digits-seed_cnn", "digits-seed_cnn-2"]

    run = cwd / "runs" / "digits-seed_cnn-2"
    assert _rows(run) == _rows(tmp_path / "whole")
    assert len(_rows(run)) == 2
    a = load_tensors(tmp_path / "whole" / "weights" / "last.safetensors")
    b = load_tensors(run / "weights" / "last.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
