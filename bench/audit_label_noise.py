"""Benchmark: find randomly flipped labels in Fashion-MNIST's training set with `ocula audit`.

    .venv/bin/python bench/audit_label_noise.py [--noise 0.05] [--folds 5] [--epochs 4] [--limit N]

5% of the 60,000 training labels are flipped to another class at random (seeded); the audit's
label check (K-fold out-of-fold probabilities from a quick vgg_bn, then confident learning) flags
suspects. Precision and recall of the flagged set against the flipped set, and the wall time of
the whole audit (integrity, duplicates, statistics, labels, outliers, report) are reported.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from audit_duplicates import machine  # noqa: E402


def noisy_fashion_mnist(noise: float, seed: int, limit=None):
    from ocula.data.builtin import load_builtin

    data = load_builtin("fashion-mnist")
    if limit:
        data.train = data.train.subset(range(limit))
    rng = np.random.default_rng(seed)
    n = len(data.train)
    flipped = np.sort(rng.choice(n, int(round(noise * n)), replace=False))
    labels = data.train.labels.clone()
    shift = torch.as_tensor(rng.integers(1, len(data.classes), len(flipped)))
    labels[torch.as_tensor(flipped)] = (labels[torch.as_tensor(flipped)] + shift) % len(data.classes)
    data.train.labels = labels
    return data, flipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="per fold (default: the audit's choice for the size)")
    parser.add_argument("--limit", type=int, help="use only the first N training images (quick check)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/ocula-bench-audit-labels")
    parser.add_argument("--json", default="docs/bench/audit_label_noise.json")
    args = parser.parse_args(argv)
    from ocula.audit import audit

    data, flipped = noisy_fashion_mnist(args.noise, args.seed, args.limit)
    t0 = time.perf_counter()
    result = audit(data, folds=args.folds, epochs=args.epochs, splits=["train"], out=args.out, seed=args.seed,
                   train_options={"threads": args.threads})
    elapsed = time.perf_counter() - t0
    flagged = {f.items[0].index for f in result.by_category("label-issue")}
    truth = set(flipped.tolist())
    hits = len(flagged & truth)
    record = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "images": len(data.train), "noise": args.noise, "flipped": len(truth), "folds": args.folds,
        "label_model": result.counts.get("label_model"), "label_engine": result.counts.get("label_engine"),
        "out_of_fold_accuracy": result.counts.get("out_of_fold_accuracy"),
        "flagged": len(flagged), "true_positives": hits,
        "precision": round(hits / max(1, len(flagged)), 4), "recall": round(hits / max(1, len(truth)), 4),
        "audit_s": round(elapsed, 1), "timings": result.timings,
        "other_findings": {k: v for k, v in result.counts.items() if k in ("near-duplicate", "exact-duplicate",
                                                                        "conflicting-labels", "outlier")},
    }
    print(json.dumps(record, indent=2))
    if args.json:
        from ocula.io import write_json

        write_json(args.json, record)
    return 0 if record["precision"] >= 0.7 and record["recall"] >= 0.7 else 1


if __name__ == "__main__":
    sys.exit(main())
