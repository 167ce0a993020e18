"""Long-tailed Fashion-MNIST (100:1 exponential imbalance): balanced accuracy of each --balance option.

    python bench/longtail_fmnist.py [--epochs 10] [--n-max 2000] [--json docs/bench/longtail_fmnist.json]

Train: class i keeps n_max · 0.01^(i/9) of its training images (2000 … 20; 4,964 in all), the first ones
in a seeded shuffle; a stratified 10 % of that is the validation split (as ocula carves it). Test: the
official balanced test set (10,000). Every run is ocula's defaults (seed_cnn, 10 epochs) with only
`--balance` changed; balanced accuracy = mean per-class recall on the test set.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402

BALANCES = ("none", "weighted-loss", "sampler", "logit-adjust", "balanced-softmax")


def long_tailed(n_max: int, ratio: float = 100.0, seed: int = 0):
    from ocula.data.builtin import load_builtin
    from ocula.data.samples import DatasetSplits
    from ocula.data.split import stratified_split

    data = load_builtin("fashion-mnist")
    rng = np.random.default_rng(seed)
    labels = data.train.labels.numpy()
    keep = []
    for c in range(10):
        n = int(round(n_max * (1 / ratio) ** (c / 9)))
        keep += rng.permutation(np.flatnonzero(labels == c))[:n].tolist()
    train = data.train.subset(sorted(keep))
    tr, va = stratified_split(train.labels.tolist(), 0.1, seed)
    splits = DatasetSplits(classes=data.classes, train=train.subset(tr), val=train.subset(va), test=data.test,
                           source="fashion-mnist-longtail", channels=1, image_size=28, mean=data.mean, std=data.std,
                           split_info={"source": "fashion-mnist-longtail", "val_from": "stratified"})
    return splits, np.bincount(train.labels.numpy(), minlength=10)


def run(balance: str, epochs: int, n_max: int, out: Path, monitor: str = "auto", seed: int = 0) -> dict:
    from ocula.config import build_config
    from ocula.engine.trainer import Trainer
    from ocula.evaluation import classification_report

    splits, counts = long_tailed(n_max)
    cfg = build_config("fashion-mnist", epochs=epochs, balance=balance, monitor=monitor, seed=seed,
                       out=str(out / f"{balance}-{seed}"))
    t0 = time.perf_counter()
    trainer = Trainer(cfg, splits=splits)
    trainer.fit()
    wall = time.perf_counter() - t0
    from ocula.inference.predictor import Classifier

    clf = Classifier.load(str(out / f"{balance}-{seed}"))
    from ocula.inference.scoring import predict_split

    found = predict_split(clf, splits.test)
    report = classification_report(found.labels, found.probs, splits.classes)
    return {"balance": balance, "monitor": monitor, "seed": seed, "balanced_accuracy": report["balanced_accuracy"], "accuracy": report["accuracy"],
            "per_class_recall": [r["recall"] for r in report["per_class"]], "wall_s": wall,
            "train_counts": counts.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-max", type=int, default=2000)
    ap.add_argument("--which", default=",".join(BALANCES))
    ap.add_argument("--monitor", default="auto", help="the best-checkpoint metric (auto: accuracy)")
    ap.add_argument("--seeds", default="0", help="training seeds (the data stays the same), e.g. 0,1,2")
    ap.add_argument("--json")
    args = ap.parse_args()
    machine = print_machine()
    out = Path(tempfile.mkdtemp(prefix="ocula-longtail-"))
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for balance in args.which.split(","):
            rows.append(run(balance, args.epochs, args.n_max, out, args.monitor, seed))
            print(f"RESULT balance={balance:16} seed={seed} balanced_acc={rows[-1]['balanced_accuracy']:.4f} "
                  f"wall={rows[-1]['wall_s']:.0f}s", flush=True)
    mean = {b: np.mean([r["balanced_accuracy"] for r in rows if r["balance"] == b]) for b in args.which.split(",")}
    sd = {b: np.std([r["balanced_accuracy"] for r in rows if r["balance"] == b]) for b in args.which.split(",")}
    for b in mean:
        vs = f"({(mean[b] - mean['none']) * 100:+.2f} points vs none)" if "none" in mean else ""
        print(f"{b:16} {mean[b] * 100:6.2f} % ± {sd[b] * 100:.2f} over seeds {args.seeds} {vs}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "epochs": args.epochs, "n_max": args.n_max,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
