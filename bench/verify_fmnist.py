"""Open-set verification the way face recognition works: identities never seen in training.

Train vgg_bn on Fashion-MNIST classes 0-6 only (plain softmax, then ArcFace, then CosFace: the same
epochs and settings). Classes 7-9 (sneaker, bag, ankle boot) play the unseen identities:
- the decision threshold is chosen on pairs of their *training-split* images (FAR = 1%);
- the ROC (EER, TAR at FAR = 0.1% / 1%) and the chosen threshold's TAR/FAR are measured on pairs of
  their *test-split* images;
- open-set identification: classes 7 and 8 are enrolled (mean template of 20 training images each),
  and test images of 7, 8 (known) and 9 (unknown) are identified at the verification threshold.

    python bench/verify_fmnist.py                 # full run
    python bench/verify_fmnist.py --quick         # smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

SEEN, UNSEEN = tuple(range(7)), (7, 8, 9)
TRAIN = dict(model="vgg_bn", model_kwargs={"width": 16}, img_size=28, batch_size=128, optimizer="sgd", lr=0.1,
             momentum=0.9, weight_decay=5e-4, schedule="onecycle", augment="light", val_fraction=0.0, seed=0,
             threads=1)  # 1 thread: far faster on a shared, busy CPU


def class_subset(samples, classes, limit_per_class=None, seed=0):
    labels = samples.labels.numpy()
    rng = np.random.default_rng(seed)
    idx = []
    for c in classes:
        found = np.flatnonzero(labels == c)
        idx += list(rng.permutation(found)[:limit_per_class] if limit_per_class else found)
    return samples.subset(sorted(idx))


def train_seen(margin: str, epochs: int, per_class, out: Path):
    from ocula.config import build_config
    from ocula.data.builtin import load_builtin
    from ocula.engine.trainer import Trainer

    data = load_builtin("fashion-mnist")
    data.train = class_subset(data.train, SEEN, per_class)
    data.test = class_subset(data.test, SEEN)
    data.classes = data.classes[:7]
    cfg = build_config("fashion-mnist", epochs=epochs, margin=margin, out=str(out / margin),
                       label_smoothing=0.1 if margin == "none" else 0.0, **TRAIN)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, callbacks=[], splits=data)
    trainer.fit()
    seen_acc, _ = trainer.evaluate(data.test)
    return trainer, {"train_s": time.perf_counter() - t0, "seen_test_accuracy": seen_acc["accuracy"]}


def unseen_embeddings(trainer, per_class_val: int):
    from ocula.data.builtin import load_builtin
    from ocula.transfer.embed import Embedder

    data = load_builtin("fashion-mnist")
    embedder = Embedder(trainer.eval_model.eval(), trainer.meta())
    out = {}
    for name, samples in (("val", class_subset(data.train, UNSEEN, per_class_val, seed=1)),
                          ("test", class_subset(data.test, UNSEEN))):
        vectors, kept, _ = embedder.embed_samples(samples, batch_size=256, desc=f"embed {name}")
        out[name] = (vectors, samples.labels.numpy()[kept])
    return out


def evaluate(emb) -> dict:
    from ocula.transfer.verify import (Gallery, choose_threshold, open_set_metrics, pair_scores, rates_at,
                                       verification_metrics)

    val_vectors, val_labels = emb["val"]
    test_vectors, test_labels = emb["test"]
    val_metrics = verification_metrics(*pair_scores(val_vectors, val_labels))
    threshold = choose_threshold(val_metrics, "far", 0.01)
    scores, same = pair_scores(test_vectors, test_labels)
    test_metrics = verification_metrics(scores, same)
    enrolled = np.concatenate([np.flatnonzero(val_labels == c)[:20] for c in (7, 8)])
    gallery = Gallery().enroll(val_vectors[enrolled], val_labels[enrolled])
    return {"eer": test_metrics["eer"], "auc": test_metrics["auc"],
            "tar_at_far_1e-2": test_metrics["tar_at_far"]["0.01"]["tar"],
            "tar_at_far_1e-3": test_metrics["tar_at_far"]["0.001"]["tar"],
            "val_threshold": threshold, "at_val_threshold": rates_at(scores, same, threshold),
            "pairs": test_metrics["pairs"],
            "open_set": open_set_metrics(gallery, test_vectors, test_labels, threshold)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=3000, help="training images per seen class (of 6,000)")
    ap.add_argument("--margins", default="none,arcface,cosface")
    ap.add_argument("--json", default="docs/bench/verify_fmnist.json")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.per_class = 1, 500
    info = print_machine()
    torch.manual_seed(0)
    work = Path("/tmp/ocula-bench/verify")
    results = {}
    for margin in args.margins.split(","):
        trainer, train_info = train_seen(margin, args.epochs, args.per_class, work)
        results[margin] = {**train_info, **evaluate(unseen_embeddings(trainer, 300 if args.quick else 1000))}
        print(json.dumps({margin: results[margin]}), flush=True)
    print(f"\n{'loss':<10}{'seen acc':>10}{'EER':>8}{'TAR@1%':>9}{'TAR@0.1%':>10}{'val-thr TAR/FAR':>18}"
          f"{'DIR':>7}{'FAR unk':>9}")
    for margin, r in results.items():
        at = r["at_val_threshold"]
        print(f"{margin:<10}{r['seen_test_accuracy']:>10.4f}{r['eer']:>8.4f}{r['tar_at_far_1e-2']:>9.4f}"
              f"{r['tar_at_far_1e-3']:>10.4f}{at['tar']:>10.4f}/{at['far']:.4f}{r['open_set']['dir']:>7.3f}"
              f"{r['open_set']['far_unknown']:>9.3f}")
    if not args.quick:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "settings": {**TRAIN, "epochs": args.epochs,
                                               "per_class": args.per_class}, "results": results}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
