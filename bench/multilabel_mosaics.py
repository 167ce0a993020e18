"""Multi-label from real images: ocula defaults against a plain BCE loop, same data, same machine.

    python bench/multilabel_mosaics.py [--which fmnist|digits] [--epochs 10] [--json docs/bench/multilabel_fmnist.json]

Data: `bench/multilabel_data.py` (2×2 mosaics; labels = the set of classes present; blanks and repeats;
two rare classes). ocula: `ocula train DIR/labels.csv --epochs E` with nothing else, then `ocula evaluate
RUN DIR/labels.csv` on the test mosaics (mAP, F1 at the thresholds tuned on ocula's validation split, F1 at
0.5). The plain loop: the same architecture (seed_cnn), AdamW 1e-3, BCE, no augmentation, E epochs on
*all* training mosaics (ocula holds 10 % out for validation), probabilities thresholded at 0.5. Both are
scored by the same `multilabel_report`; mAP is cross-checked with scikit-learn.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402
from multilabel_data import digits_mosaics, fmnist_mosaics  # noqa: E402


def load_split(csv_path: Path, split: str):
    from ocula.modality.sources import resolve_data

    data = resolve_data(str(csv_path), val_fraction=0.0, task="multilabel")
    s = data.split(split)
    from PIL import Image

    x = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in s.paths]))[:, None]  # (N, 1, H, W) uint8
    return x, torch.tensor(s.labels, dtype=torch.float32), data.classes


def plain_bce(csv_path: Path, epochs: int, seed: int = 0) -> dict:
    from ocula.evaluation.multilabel import multilabel_report
    from ocula.models import create_model

    torch.manual_seed(seed)
    x, y, classes = load_split(csv_path, "train")
    xt, yt, _ = load_split(csv_path, "test")
    mean, std = x.float().mean() / 255, x.float().std() / 255
    norm = lambda t: (t.float() / 255 - mean) / std  # noqa: E731
    model = create_model("seed_cnn", len(classes), 1, x.shape[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            loss = F.binary_cross_entropy_with_logits(model(norm(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        probs = torch.cat([torch.sigmoid(model(norm(xt[i:i + 512]))) for i in range(0, len(xt), 512)]).numpy()
    report = multilabel_report(yt.numpy(), probs, classes)  # thresholds 0.5
    return {"report": report, "train_s": train_s, "probs": probs, "labels": yt.numpy()}


def run_ocula(csv_path: Path, epochs: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "ocula", "train", str(csv_path), "--epochs", str(epochs), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    from ocula import api

    report = api.evaluate(str(out), str(csv_path), out_dir=str(out / "eval-test"))
    return {"report": report, "wall_s": wall, "command": " ".join(["ocula"] + cmd[3:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--which", choices=["fmnist", "digits"], default="fmnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    machine = print_machine()
    tmp = Path(tempfile.mkdtemp(prefix=f"ocula-ml-{args.which}-"))
    csv_path = (fmnist_mosaics if args.which == "fmnist" else digits_mosaics)(tmp / "data")
    ours = run_ocula(csv_path, args.epochs, tmp / "run")
    base = plain_bce(csv_path, args.epochs)
    from sklearn.metrics import average_precision_score

    sk_map = float(np.mean([average_precision_score(base["labels"][:, k], base["probs"][:, k])
                            for k in range(base["labels"].shape[1]) if base["labels"][:, k].any()]))
    r, b = ours["report"], base["report"]
    rows = {
        "ocula": {"mAP": r["mAP"], "mAP_micro": r["mAP_micro"], "f1_macro_tuned": r["macro"]["f1"],
                  "f1_macro_at_0.5": r["f1_macro_at_0.5"], "subset_accuracy": r["subset_accuracy"],
                  "hamming_loss": r["hamming_loss"], "per_class_f1": {c["class"]: c["f1"] for c in r["per_class"]},
                  "thresholds": r["thresholds"], "wall_s": ours["wall_s"], "command": ours["command"]},
        "plain_bce": {"mAP": b["mAP"], "mAP_sklearn": sk_map, "mAP_micro": b["mAP_micro"],
                      "f1_macro_at_0.5": b["macro"]["f1"], "subset_accuracy": b["subset_accuracy"],
                      "hamming_loss": b["hamming_loss"], "per_class_f1": {c["class"]: c["f1"] for c in b["per_class"]},
                      "train_s": base["train_s"]},
    }
    print(f"{'':10} {'mAP':>7} {'F1 tuned':>9} {'F1 @0.5':>8} {'subset':>7}")
    print(f"{'ocula':10} {r['mAP']:7.4f} {r['macro']['f1']:9.4f} {r['f1_macro_at_0.5']:8.4f} {r['subset_accuracy']:7.4f}")
    print(f"{'plain BCE':10} {b['mAP']:7.4f} {'-':>9} {b['macro']['f1']:8.4f} {b['subset_accuracy']:7.4f}  (sklearn mAP {sk_map:.4f})")
    for c in r["per_class"]:
        print(f"  {c['class']:12} F1 ocula {c['f1']:.4f}  plain {rows['plain_bce']['per_class_f1'][c['class']]:.4f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "which": args.which, "epochs": args.epochs,
                                               **rows}, indent=1))


if __name__ == "__main__":
    main()
