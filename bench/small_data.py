"""Small folders with no validation split (issue 23): ocula with no flags, against the carved split it used before.

    python bench/small_data.py [--sets faces,fmnist1000] [--rows default,off] [--seeds 0] [--json FILE]

Each set is written as a user would have it: `train/<class>/*.png` with no validation split, and
`test/<class>/` with images that take no part in training, epoch choice, calibration or any rule:
the figures are scored on those alone.

    faces       scikit-image's lfw_subset: 100 face and 100 non-face crops (25 px, written at 64 px);
                150 to train (75 a class), 50 to test, split by a seeded shuffle
    textures    crops of seven scikit-image photos (bench/transfer_lowdata.py), 20 a class to train, 40 to test
    digits150   scikit-learn's digits, 15 a class to train, the other 1,647 to test
    fmnist1000  Fashion-MNIST: 100 images a class from a seeded shuffle of the official training set;
                2,000 test images from the official test set, none of the 1,000 that issue 13 tuned on

Rows: `default` = `ocula train DIR/train` (no flag: cross-fitting on these sizes); `off` = the same with
`--cross-fit off`, the carved 10 % split of before; `b64` = `--batch-size 64`, the batch before small data
got smaller ones; `b16` = `--batch-size 16`. Each row: `ocula evaluate RUN DIR/test` → accuracy,
ECE (15 equal-width bins) with the model's temperature and at T = 1, the temperature, the training time.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402

ROWS = {"default": {}, "off": {"cross_fit": "off"}, "b16": {"batch_size": 16}, "b64": {"batch_size": 64}}


def _save(image: np.ndarray, path: Path, size: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image)
    if size:
        img = img.resize((size, size), Image.BILINEAR)
    img.save(path)


def write_faces(root: Path, seed: int) -> Path:
    from skimage.data import lfw_subset

    images = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces
    labels = np.array([0] * 100 + [1] * 100)
    names = ("face", "non-face")
    out = root / f"faces-s{seed}"
    rng = np.random.default_rng(seed)
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for split, chosen in (("train", idx[:75]), ("test", idx[75:])):
            for i in chosen:
                _save(images[i], out / split / names[c] / f"{i}.png", size=64)
    return out


def write_fmnist(root: Path, seed: int, per_class: int = 100, n_test: int = 2000) -> Path:
    from ocula.data.builtin import load_builtin

    data = load_builtin("fashion-mnist")
    out = root / f"fmnist{per_class * 10}-s{seed}"
    rng = np.random.default_rng(seed)
    labels = data.train.labels.numpy()
    for c, name in enumerate(data.classes):
        for i in rng.permutation(np.flatnonzero(labels == c))[:per_class]:
            _save(data.train.images[i, 0].numpy(), out / "train" / name / f"{i}.png")
    # bench/transfer_lowdata.py scores on permutation(123)[:1000], the images issue 13 chose its defaults on:
    # these test images come after them, so no rule was ever tuned on them
    for i in np.random.default_rng(123).permutation(len(data.test))[1000:1000 + n_test]:
        _save(data.test.images[i, 0].numpy(), out / "test" / data.classes[int(data.test.labels[i])] / f"{i}.png")
    return out


def write_textures(root: Path, seed: int) -> Path:
    from transfer_lowdata import write_texture_crops

    return write_texture_crops(root / "small", per_class=20, test_per_class=40, seed=seed)


def write_digits(root: Path, seed: int) -> Path:
    """scikit-learn's digits, 15 a class to train (150), its other images to test (1,647), 8×8 grey PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = root / f"digits150-s{seed}"
    rng = np.random.default_rng(seed)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        for split, chosen in (("train", idx[:15]), ("test", idx[15:])):
            for i in chosen:
                _save((digits.images[i] * 16).clip(0, 255).astype(np.uint8), out / split / str(c) / f"{i}.png")
    return out


SETS = {"faces": write_faces, "fmnist1000": write_fmnist, "textures": write_textures, "digits150": write_digits}


def row(data: Path, out: Path, extra: dict, threads: int) -> dict:
    import ocula

    t0 = time.perf_counter()
    run = ocula.train(str(data / "train"), out=str(out), threads=threads, **extra)
    seconds = time.perf_counter() - t0
    report = ocula.evaluate(ocula.load(run.dir), str(data / "test"))
    cal = report.get("calibration", {})
    return {"accuracy": report["accuracy"], "ece": cal.get("after", {}).get("ece"),
            "ece_t1": cal.get("before", {}).get("ece"), "temperature": cal.get("temperature"),
            "test_images": report.get("n", report.get("samples")), "train_s": seconds,
            "cross_fit": run.summary.get("cross_fit"), "calibration": run.summary.get("calibration", {}).get("reason"),
            "run": run.dir}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="faces,fmnist1000")
    ap.add_argument("--rows", default="default,off")
    ap.add_argument("--seeds", default="0", help="data draws (the shuffle's seed); ocula's own seed stays 0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    info = print_machine()
    work = Path(args.work or tempfile.mkdtemp(prefix="ocula-small-"))
    results = json.loads(Path(args.json).read_text()).get("results", {}) if args.json and Path(args.json).is_file() else {}
    for name in args.sets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            data = SETS[name](work, seed)
            for r in args.rows.split(","):
                key = f"{name}/s{seed}/{r}"
                results[key] = got = row(data, work / "runs" / key.replace("/", "-"), ROWS[r], args.threads)
                print(f"RESULT {key} accuracy={got['accuracy']:.4f} ece={got['ece']:.4f} ece_t1={got['ece_t1']:.4f} "
                      f"T={got['temperature']} time={got['train_s']:.0f}s", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
