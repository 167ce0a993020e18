"""Prediction on a folder of 1,000 JPEGs (640×480 crops of scikit-image's sample photos) with resnet18
at 224 px: end-to-end images/s of `ocula.predict` vs the model's own forward throughput at the same
batch size on already-preprocessed tensors.

    python bench/predict_throughput.py --n 1000 --batch 32
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


def make_jpegs(folder: Path, n: int) -> None:
    from PIL import Image
    from skimage import data

    photos = [getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")]
    photos = [Image.fromarray(p).convert("RGB").resize((960, 720)) for p in photos]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        x, y = rng.integers(0, 320), rng.integers(0, 240)
        img.crop((x, y, x + 640, y + 480)).save(folder / f"img_{i:04d}.jpg", quality=90)


def make_bundle(path: Path) -> None:
    from ocula import bundle
    from ocula.models import create_model, default_contract

    contract = default_contract("resnet18", channels=3)
    model = create_model("resnet18", 1000, 3, contract.input_size)
    bundle.save_weights(path, model, bundle.make_meta(model.ocula_arch, contract, [f"c{i}" for i in range(1000)]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--json")
    args = p.parse_args()
    info = print_machine()
    import ocula

    folder = Path(f"/tmp/ocula-bench-jpegs-{args.n}")
    if not folder.exists() or len(list(folder.glob("*.jpg"))) != args.n:
        make_jpegs(folder, args.n)
    weights = Path("/tmp/ocula-bench-resnet18.safetensors")
    make_bundle(weights)
    clf = ocula.load(weights, device="cpu")

    x = torch.randn(args.batch, 3, 224, 224)
    for _ in range(2):
        clf.logits(x)  # warm-up
    reps, t = 8, time.perf_counter()
    for _ in range(reps):
        clf.logits(x)
    forward = reps * args.batch / (time.perf_counter() - t)

    list(ocula.predict(clf, [str(folder / "img_0000.jpg")]))  # warm-up of the file path
    t = time.perf_counter()
    preds = list(ocula.predict(clf, [str(folder)], batch_size=args.batch, workers=args.workers))
    end_to_end = len(preds) / (time.perf_counter() - t)
    assert len(preds) == args.n and not any(pr.error for pr in preds)
    result = {"n": args.n, "batch": args.batch, "forward_img_s": forward, "end_to_end_img_s": end_to_end,
              "ratio": end_to_end / forward}
    print(json.dumps(result))
    print(f"| resnet18 224 px, batch {args.batch} | forward {forward:.1f} img/s | predict {end_to_end:.1f} img/s "
          f"| ratio {end_to_end / forward:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, **result}, indent=2))


if __name__ == "__main__":
    main()
