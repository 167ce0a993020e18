"""Memory stays flat: explain 2,000 images one by one and watch the process's resident memory.

Each call is the public one-image path, `clf.explain(image, method=...)`, so preprocessing, hooks,
the backward pass and map scaling all run 2,000 times. RSS (VmRSS from /proc) is read after a
warm-up of 100 images (allocator pools, lazy imports) and then every 250 images; the figure is the
growth from the warm-up reading to the end. Target: < 50 MB. The models are randomly initialised
(memory does not depend on what the weights learnt) and built exactly as a run would rebuild them.

For contrast, `--naive` also measures the pattern many scripts use with pytorch-grad-cam directly:
a new `GradCAM(model, target_layers)` object per image, without `with` or release.

    .venv/bin/python bench/explain_memory.py              # ~4 min on 2 busy cores
    .venv/bin/python bench/explain_memory.py --quick
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from explain_pointing_game import CNN, VIT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = "cnn:gradcam,vit:rollout,vit:gradcam"  # model:method, comma-separated


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def classifier(kind: str):
    from ocula.bundle import make_meta
    from ocula.data.contract import DataContract
    from ocula.inference.predictor import Classifier
    from ocula.models.registry import create_model

    spec = CNN if kind == "cnn" else VIT
    torch.manual_seed(0)
    model = create_model(spec["model"], 4, 3, 64, **spec["model_kwargs"]).eval()
    contract = DataContract(input_size=64, channels=3, mean=(0.5,), std=(0.5,))
    return Classifier(model, make_meta(model.ocula_arch, contract, ["a", "b", "c", "d"]))


def measure(call, images: list, warmup: int = 100, every: int = 250) -> dict:
    trace = []
    t0 = time.perf_counter()
    for i, img in enumerate(images, 1):
        call(img)
        if i == warmup or (i > warmup and (i % every == 0 or i == len(images))):
            gc.collect()
            trace.append((i, round(rss_mb(), 1)))
    seconds = time.perf_counter() - t0
    start = trace[0][1]
    return {"images": len(images), "rss_after_warmup_mb": start, "rss_end_mb": trace[-1][1],
            "growth_mb": round(trace[-1][1] - start, 1), "trace": trace, "ms_per_image": round(1000 * seconds / len(images), 1)}


def naive_gradcam(clf):
    """The leak-prone pattern: a fresh library object per image, never released."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def call(img):
        cam = GradCAM(model=clf.model, target_layers=[clf.model.features])
        cam(input_tensor=clf.preprocess(img)[None], targets=[ClassifierOutputTarget(0)])

    return call


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--cases", default=CASES, help=f"model:method pairs (default: {CASES})")
    p.add_argument("--naive", action="store_true", help="also measure direct pytorch-grad-cam use, for contrast")
    p.add_argument("--json", default=str(ROOT / "docs/bench/explain_memory.json"))
    p.add_argument("--threads", type=int, default=1, help="torch threads; 1 is fastest on a shared 2-core box")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.json = 150, "/tmp/ocula-bench-explain/quick_memory.json"
    from ocula.io import write_json

    info = print_machine()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(50)]
    stream = [images[i % len(images)] for i in range(args.images)]
    results = {"machine": info, "settings": vars(args), "target_mb": 50, "cases": []}
    for kind, method in (case.split(":") for case in args.cases.split(",")):
        clf = classifier(kind)
        row = {"model": kind, "method": method, **measure(lambda img: clf.explain(img, method=method), stream)}
        row["passes"] = row["growth_mb"] < 50
        print(f"{kind} {method:<10} RSS {row['rss_after_warmup_mb']:.1f} -> {row['rss_end_mb']:.1f} MB "
              f"(growth {row['growth_mb']:+.1f} MB over {args.images} images, {row['ms_per_image']} ms/image)",
              flush=True)
        results["cases"].append(row)
    if args.naive:
        clf = classifier("cnn")
        row = {"model": "cnn", "method": "pytorch-grad-cam GradCAM object per image (naive)",
               **measure(naive_gradcam(clf), stream)}
        print(f"naive      RSS growth {row['growth_mb']:+.1f} MB over {args.images} images", flush=True)
        results["cases"].append(row)
    write_json(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
