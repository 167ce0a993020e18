"""Multi-label data sets built from real images, written as PNGs and a `path,labels,split` CSV.

    python bench/multilabel_data.py fmnist-mosaics /tmp/mosaics   # 2×2 mosaics of Fashion-MNIST items
    python bench/multilabel_data.py digits-mosaics /tmp/digits    # 2×2 mosaics of scikit-learn digits

A mosaic's labels are the set of classes in its cells. Each cell holds an item of a uniformly drawn class,
or (with probability `blank`) nothing, so a mosaic may repeat a class, hold 1-4 distinct ones, or none.
`rare` classes appear `rare_factor` times less often: imbalanced positives, as in diagnosis data.
Fashion-MNIST items are shrunk to 14 px, so a mosaic is 28×28 like one Fashion-MNIST image (a few minutes
of training on 2 cores); digits mosaics (8×8 scans, 16 px mosaics) are the untuned set.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def mosaics(images: np.ndarray, labels: np.ndarray, n: int, rng, blank: float = 0.2,
            class_p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w) uint8 items → (n, 2h, 2w) mosaics and (n, K) multi-hot labels."""
    k = int(labels.max()) + 1
    p = np.full(k, 1 / k) if class_p is None else class_p / class_p.sum()
    by_class = [np.flatnonzero(labels == c) for c in range(k)]
    h, w = images.shape[1:]
    out = np.zeros((n, 2 * h, 2 * w), np.uint8)
    hot = np.zeros((n, k), np.uint8)
    for i in range(n):
        for cell in range(4):
            if rng.random() < blank:
                continue
            c = rng.choice(k, p=p)
            item = images[rng.choice(by_class[c])]
            r, q = divmod(cell, 2)
            out[i, r * h:(r + 1) * h, q * w:(q + 1) * w] = item
            hot[i, c] = 1
    return out, hot


def write_folder(root: Path, splits: dict, classes: list[str]) -> Path:
    """splits: name → (images (n, H, W), multi-hot (n, K)); → root/labels.csv."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, (images, hot) in splits.items():
        (root / split).mkdir(exist_ok=True)
        for i, (img, h) in enumerate(zip(images, hot)):
            name = f"{split}/{i:05d}.png"
            Image.fromarray(img).save(root / name)
            rows.append([name, "|".join(classes[j] for j in np.flatnonzero(h)), split])
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "split"])
        w.writerows(rows)
    return root / "labels.csv"


def fmnist_mosaics(root: Path, n_train: int = 10000, n_test: int = 2000, seed: int = 0) -> Path:
    from ocula.data.builtin import load_builtin

    import torch.nn.functional as F

    data = load_builtin("fashion-mnist")
    shrink = lambda t: F.avg_pool2d(t.float(), 2).round().to(t.dtype)[:, 0].numpy()  # noqa: E731 (N, 14, 14)
    rng = np.random.default_rng(seed)
    p = np.ones(10)
    p[[3, 8]] = 0.2  # Dress and Bag: rare positives (5× less often)
    tr = mosaics(shrink(data.train.images), data.train.labels.numpy(), n_train, rng, class_p=p)
    te = mosaics(shrink(data.test.images), data.test.labels.numpy(), n_test, rng, class_p=p)
    return write_folder(root, {"train": tr, "test": te}, [c.replace("/", "-") for c in data.classes])


def digits_mosaics(root: Path, seed: int = 1) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255 / 16)).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    cut = int(0.7 * len(images))  # items of test mosaics never appear in training mosaics
    tr_idx, te_idx = order[:cut], order[cut:]
    p = np.ones(10)
    p[[0, 7]] = 0.25
    tr = mosaics(images[tr_idx], d.target[tr_idx], 3000, rng, class_p=p)
    te = mosaics(images[te_idx], d.target[te_idx], 1000, rng, class_p=p)
    return write_folder(root, {"train": tr, "test": te}, [f"digit{c}" for c in range(10)])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["fmnist-mosaics", "digits-mosaics"])
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=10000)
    args = ap.parse_args()
    make = fmnist_mosaics if args.which == "fmnist-mosaics" else digits_mosaics
    kw = {"n_train": args.train} if args.which == "fmnist-mosaics" else {}
    print(make(Path(args.out), **kw) if kw else make(Path(args.out)))
    os.sys.stdout.flush()
