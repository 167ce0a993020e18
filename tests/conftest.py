"""Shared fixtures: a tiny trained run on real data (digits) and a small generated image folder."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OCULA_OFFLINE", "1")  # tests never reach the network
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each worker (and the subprocesses it starts) takes one
    # thread, since two OpenMP pools spin-waiting on the same two cores run several times slower than one each.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


# The files that take longest (`pytest --durations=0`, summed per file, 2026-12-07): `make test` hands whole
# files to its workers in collection order, so these go first and the short ones fill in around them.
LONGEST_FILES = ("test_track.py", "test_ray_train.py", "test_hostile_corpus.py", "test_cross_fit.py",
                 "test_core_train.py", "test_core_resume.py", "test_detection_export_serve.py", "test_elastic.py",
                 "test_right_by_default.py", "test_core_ddp.py", "test_batch_predict.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file is kept


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> str:
    """seed_cnn trained for a few epochs on scikit-learn's digits (real data, ~2 s)."""
    import ocula

    out = tmp_path_factory.mktemp("runs") / "digits"
    ocula.train("digits", model="seed_cnn", epochs=4, batch_size=64, hflip=False, out=str(out), seed=0)
    return str(out)


def make_shapes_folder(root, classes=("circle", "square", "triangle"), per_class=12, size=32, seed=0,
                       ext=".png") -> str:
    """Class-per-folder tree of coloured shapes on noise: learnable in seconds, shape-checked."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
            d = ImageDraw.Draw(img)
            x0, y0 = rng.integers(2, size // 3, 2)
            x1, y1 = x0 + size // 2, y0 + size // 2
            color = tuple(int(v) for v in rng.integers(150, 256, 3))
            if c == "circle":
                d.ellipse([x0, y0, x1, y1], fill=color)
            elif c == "square":
                d.rectangle([x0, y0, x1, y1], fill=color)
            else:
                d.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=color)
            img.save(root / c / f"{c}_{i:03d}{ext}")
    return str(root)


@pytest.fixture
def shapes_folder(tmp_path) -> str:
    return make_shapes_folder(tmp_path / "shapes")


@pytest.fixture(scope="session")
def reported_run(digits_run, tmp_path_factory) -> str:
    """A copy of digits_run with every input of `ocula report`: evaluation with an error gallery, audit,
    export gates (fp32, int8) and a benchmark, each made by its own command (~20 s)."""
    import shutil

    from ocula.cli import main

    run = tmp_path_factory.mktemp("reported") / "digits"
    shutil.copytree(digits_run, run)
    for argv in (["evaluate", str(run), "digits", "--explain-errors", "6"],
                 ["audit", "digits", "--folds", "0", "--out", str(run / "audit")],
                 # the whole 360-image test split: on 120, one image is 0.83 points of the 1 allowed, and with
                 # this session's packages two of 120 flipped (1.67 points; the code before it too)
                 ["export", str(run), "--int8", "--gate-limit", "360"],
                 ["benchmark", str(run), "--backends", "eager,onnx", "--batch", "1", "--repeats", "3",
                  "--max-seconds", "2", "--json", str(run / "benchmark.json")]):
        assert main(argv) == 0, argv
    return str(run)


@pytest.fixture(scope="session")
def photo_objects(tmp_path_factory) -> str:
    """A tiny COCO detection set on scikit-image's photographs (ocula.data.synth_detection): 32 train, 12 test."""
    from ocula.data.synth_detection import write_photo_objects

    out = tmp_path_factory.mktemp("det") / "photo-objects"
    write_photo_objects(out, train=32, test=12, size=64, classes=3, seed=0)
    return str(out)


@pytest.fixture(scope="session")
def detection_run(photo_objects, tmp_path_factory) -> str:
    """FCOS on timm's tiny test_efficientnet, two epochs from scratch on `photo_objects` (a few seconds)."""
    import ocula

    out = tmp_path_factory.mktemp("runs") / "det"
    ocula.train(photo_objects, backbone="test_efficientnet", epochs=2, out=str(out), seed=0)
    return str(out)


def bright_squares(n: int, size: int = 64, seed: int = 0):
    """n images of a bright square (16-32 px) on dim noise, normalised-looking floats, with its box as a
    detection target (n, 2, 5): what a tiny detector learns in a few dozen steps."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.2 - 1.0
    t = torch.full((n, 2, 5), -1.0)
    for i in range(n):
        w = int(torch.randint(16, 33, (1,), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, size - w, (2,), generator=g))
        x[i, :, y0:y0 + w, x0:x0 + w] = 1.5
        t[i, 0] = torch.tensor([0, x0 / size, y0 / size, (x0 + w) / size, (y0 + w) / size])
    return x, t
