"""Issue 6, target 2: static calibrated int8 (QDQ, onnxruntime) for resnet18.

- accuracy: resnet18 trained briefly on Fashion-MNIST at 32 px; int8 calibrated on 256 training
  images; accuracy on the full test set (10,000) vs PyTorch (target: drop ≤ 1 point);
- speed: the same weights at 224 px, ONNX Runtime int8 vs fp32 at batch 32, 2 threads (target ≥ 2.5×);
  the 224-px int8 model is calibrated on 256 training images at 224 px and gated on 500 test images.

    .venv/bin/python bench/quantize_int8.py [--quick] [--model vit_tiny_patch16_224]

With `--model vit_tiny_patch16_224`: the ViT trained at 64 px (16-px patches) for 600 steps, and an
untrained one at 224 px for speed (position embeddings depend on the size); writes
docs/bench/quantize_int8_vit.json.
Writes docs/bench/quantize_int8.json; the figures go into docs/bench/export.md by hand.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from export_models import cell, cli_benchmark, random_bundle, resized_bundle, trained_run  # noqa: E402

from ocula.export import export_model  # noqa: E402


def export_both(run: str, limit, calib_size: int) -> dict:
    start = time.perf_counter()
    result = export_model(run, int8=True, calibrate="fashion-mnist", calib_size=calib_size,
                          gate_data="fashion-mnist", gate_limit=limit, workers=0)
    seconds = time.perf_counter() - start
    for precision, g in result.gates.items():
        print(f"  {precision}: {g['images']} images, acc PyTorch {g['accuracy_pytorch'] * 100:.2f}% → "
              f"{g['accuracy_exported'] * 100:.2f}% (Δ {g['delta_accuracy_points']:+.2f} points), agreement "
              f"{g['top1_agreement'] * 100:.2f}%, max|Δlogit| {g['max_abs_logit_diff']:.3g}, "
              f"{g['size_bytes'] / 1e6:.1f} MB, passed={g['passed']}", flush=True)
    return {"export_and_gate_s": round(seconds, 1), "gates": result.gates}


# model: (trained size, optimizer steps, how the 224-px speed model is made)
MODELS = {"resnet18": (32, 150, "resized"), "vit_tiny_patch16_224": (64, 600, "random")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="few steps, 300 gate images, 3 repeats (a smoke run)")
    ap.add_argument("--model", choices=list(MODELS), default="resnet18")
    args = ap.parse_args()
    out = {"machine": print_machine(), "quick": args.quick, "model": args.model}
    size, steps, speed_model = MODELS[args.model]
    steps, limit, repeats = (30, 300, 3) if args.quick else (steps, None, 10)
    run, out["training"] = trained_run(args.model, size, steps)
    print(f"int8 accuracy at the trained size ({size} px)", flush=True)
    out[f"at_{size}px"] = export_both(run, limit, 256)
    # A CNN's weights work at any size; a ViT's position embeddings do not, so its speed model is untrained.
    print(f"int8 at 224 px ({'same weights' if speed_model == 'resized' else 'random weights'})", flush=True)
    from ocula.data.builtin import FASHION_CLASSES

    big = (resized_bundle(run, 224) if speed_model == "resized"
           else random_bundle(args.model, 224, classes=FASHION_CLASSES))
    out["at_224px"] = export_both(big, 100 if args.quick else 500, 256)
    report = cli_benchmark(big, ["onnx", "onnx-int8"], repeats)
    fp32, int8 = cell(report, "onnx", 32), cell(report, "onnx-int8", 32)
    ratio = int8["throughput_img_s"]["median"] / fp32["throughput_img_s"]["median"]
    out["speed_224"] = {"ratio_int8_over_fp32_b32": ratio, "report": report}
    print(f"  batch 32: fp32 {fp32['throughput_img_s']['median']:.1f} img/s, int8 "
          f"{int8['throughput_img_s']['median']:.1f} img/s → {ratio:.2f}x; batch 1 p50 fp32 "
          f"{cell(report, 'onnx', 1)['latency_ms']['p50']:.1f} ms, int8 {cell(report, 'onnx-int8', 1)['latency_ms']['p50']:.1f} ms")
    name = "quantize_int8" + ("" if args.model == "resnet18" else "_vit") + ("_quick" if args.quick else "")
    target = Path(__file__).parents[1] / "docs" / "bench" / f"{name}.json"
    from ocula.io import write_json
    write_json(target, out)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
