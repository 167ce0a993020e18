"""Issue 12: calibration with default training, on held-out sets built here; TTA gain and cost.

    python bench/calibration.py [--which faces,faces_val,digits,photos,fmnist] [--work /tmp/ocula-cal] [--reuse]

Every set is trained with `ocula train DATA` and no flags (Fashion-MNIST: the `make demo` run,
`--recipe fmnist-fast --epochs 3`), so the temperature is what a new user gets. Then on the held-out
test split: accuracy, ECE (15 equal-width bins), adaptive ECE (15 equal-mass), classwise ECE, NLL and
Brier at T = 1 ("before") and at the bundle's T ("after"), the risk–coverage figures, and `--tta`
accuracy and time per image against the plain forward. Results: docs/bench/calibration.json.

Sets: faces (scikit-image's LFW subset, face / not-face, 75/25 per class as in
bench/right_by_default.py, so the validation split is 10 % of 150 = 15 images); faces_val (the same
200 images as 50/25/25 train/val/test per class, a val folder of 50); digits (scikit-learn's digits
as 32-px PNGs, 80/20); photos (crops of scikit-image's sample photos, never tuned on); fmnist.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from right_by_default import make_digits_png, make_faces, make_photos  # noqa: E402


def make_faces_with_val(root: Path, seed: int = 0) -> Path:
    import skimage.data
    from PIL import Image

    images = skimage.data.lfw_subset()
    order = np.random.default_rng(seed).permutation(100)
    for label, offset in (("face", 0), ("other", 100)):
        for rank, i in enumerate(order):
            split = "train" if rank < 50 else "val" if rank < 75 else "test"
            out = root / split / label
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray((images[offset + i] * 255).astype(np.uint8), "L").save(out / f"{label}_{i:03d}.png")
    return root


def train(data: str, out: Path, flags: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ocula", "train", data, "--out", str(out), *flags], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training failed on {data}:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure(run: Path, data: str) -> dict:
    import ocula

    clf = ocula.load(str(run), device="cpu")
    ocula.evaluate(clf, data)  # warm-up: workers, allocator, first-call costs stay out of the timings
    t0 = time.perf_counter()
    plain = ocula.evaluate(clf, data, out_dir=str(run / "eval"))
    plain_s = time.perf_counter() - t0
    clf.tta = True
    t0 = time.perf_counter()
    tta = ocula.evaluate(clf, data)
    tta_s = time.perf_counter() - t0
    cal, rc, n = plain["calibration"], plain["risk_coverage"], plain["n"]
    floor = ece_noise_floor(clf, data)
    keep = ("ece", "adaptive_ece", "classwise_ece", "nll", "brier")
    fit = json.loads((run / "calibration.json").read_text())
    return {"test_images": n, "accuracy": plain["accuracy"], "temperature": cal["temperature"],
            "fit": {k: fit.get(k) for k in ("fitted", "reason", "samples")},
            "before": {k: cal["before"][k] for k in keep}, "after": {k: cal["after"][k] for k in keep},
            "ece_ratio": cal["before"]["ece"] / max(cal["after"]["ece"], 1e-12),
            "ece_noise_floor": floor,
            "risk_coverage": {k: v for k, v in rc.items() if k != "curve"},
            "tta": {"accuracy": tta["accuracy"], "gain_points": (tta["accuracy"] - plain["accuracy"]) * 100,
                    "views": len(clf.modality.tta_views(clf.preprocess(np.zeros((8, 8), np.uint8))[None],
                                                        clf.allowed_flips.get("hflip", False))),
                    "ms_per_image": tta_s / n * 1000, "plain_ms_per_image": plain_s / n * 1000}}


def ece_noise_floor(clf, data: str, draws: int = 200) -> float:
    """The ECE a perfectly calibrated model would still show on this many test images: labels drawn
    from the model's own (calibrated) probabilities, averaged over draws. Small test sets cannot
    measure ECE below this."""
    from ocula.evaluation.metrics import expected_calibration_error
    from ocula.inference.scoring import labelled_split, predict_split

    clf.tta = False
    probs = predict_split(clf, labelled_split(clf, data).samples).probs.astype(np.float64)
    probs /= probs.sum(1, keepdims=True)
    rng = np.random.default_rng(0)
    cumulative = probs.cumsum(1)
    eces = [expected_calibration_error((cumulative < rng.random((len(probs), 1))).sum(1).clip(max=probs.shape[1] - 1),
                                       probs) for _ in range(draws)]
    return float(np.mean(eces))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--which", default="faces,faces_val,digits,photos,fmnist")
    p.add_argument("--work", default="/tmp/ocula-cal")
    p.add_argument("--reuse", action="store_true", help="measure the runs already trained under --work again")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sets = {"faces": lambda: (make_faces(work / "faces"), []),
            "faces_val": lambda: (make_faces_with_val(work / "faces_val"), []),
            "digits": lambda: (make_digits_png(work / "digits"), []),
            "photos": lambda: (make_photos(work / "photos"), []),
            "fmnist": lambda: ("fashion-mnist", ["--recipe", "fmnist-fast", "--epochs", "3"])}
    results = {}
    out_json = ROOT / "docs" / "bench" / "calibration.json"
    if out_json.exists():
        results = json.loads(out_json.read_text()).get("results", {})
    for name in args.which.split(","):
        data, flags = sets[name]()
        run = work / f"run-{name}"
        if args.reuse and (run / "weights" / "best.safetensors").is_file():
            train_s = results.get(name, {}).get("train_s")
        else:
            if run.exists():
                import shutil

                shutil.rmtree(run)
            train_s = train(str(data), run, flags)
        results[name] = {"flags": flags, "train_s": train_s, **measure(run, str(data))}
        r = results[name]
        print(f"{name}: acc {r['accuracy']:.4f}  T {r['temperature']:.3f}  ECE {r['before']['ece']:.4f} → "
              f"{r['after']['ece']:.4f}  NLL {r['before']['nll']:.4f} → {r['after']['nll']:.4f}  "
              f"TTA {r['tta']['gain_points']:+.2f} pts at {r['tta']['ms_per_image']:.2f} ms/img "
              f"(plain {r['tta']['plain_ms_per_image']:.2f})  fit: {r['fit']['reason']}", flush=True)
    import platform

    import torch

    out_json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
                                    platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                                    "results": results}, indent=2))


if __name__ == "__main__":
    main()
