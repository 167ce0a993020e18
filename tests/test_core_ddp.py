"""`torchrun --nproc_per_node 2 -m ocula train ...` (gloo on CPU) matches one process with the same
global batch: same data order and augmentation on every rank, gradients averaged, metrics reduced."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ARGS = ["train", "digits", "--model", "seed_cnn", "--epochs", "2", "--batch-size", "64", "--no-hflip",
        "--precision", "fp32", "--no-channels-last", "--seed", "5", "--threads", "1"]


def _metrics(run):
    return list(csv.DictReader(open(Path(run) / "metrics.csv")))


@pytest.mark.dist
def test_two_process_ddp_matches_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "ocula", *ARGS, "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29561", "-m", "ocula", *ARGS, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("done:") == 1  # only rank 0 reports

    one, two = _metrics(tmp_path / "single"), _metrics(tmp_path / "ddp")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 1e-4
        assert abs(float(a["val/accuracy"]) - float(b["val/accuracy"])) < 0.01  # a near-tie may flip one image

    from ocula.weights_file import load_tensors

    wa = load_tensors(tmp_path / "single" / "weights" / "last.safetensors")
    wb = load_tensors(tmp_path / "ddp" / "weights" / "last.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
