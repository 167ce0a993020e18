"""Issue 6, target 1: ONNX export of resnet18 and a ViT.

- top-1 agreement ONNX vs PyTorch on the Fashion-MNIST test set (10,000 real images), for models
  trained briefly on Fashion-MNIST (resnet18 at 32 px, vit_tiny_patch16_224 at 64 px: ≤ 1 epoch);
- ONNX Runtime vs eager PyTorch throughput at batch 32, 224 px, 2 threads (target ≥ 1.8× for resnet18).

    .venv/bin/python bench/export_onnx.py [--quick]
Writes docs/bench/export_onnx.json; the figures go into docs/bench/export.md by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from export_models import cell, cli_benchmark, random_bundle, resized_bundle, trained_run  # noqa: E402

from ocula.export import export_model  # noqa: E402


def gate(run: str, limit) -> dict:
    start = time.perf_counter()
    result = export_model(run, gate_data="fashion-mnist", gate_limit=limit, workers=0)
    g = result.gates["fp32"]
    print(f"  {run}: export+gate {time.perf_counter() - start:.1f} s, {g['images']} images, "
          f"agreement {g['top1_agreement'] * 100:.2f}%, max|Δlogit| {g['max_abs_logit_diff']:.2e}, "
          f"acc {g['accuracy_pytorch'] * 100:.2f}% → {g['accuracy_exported'] * 100:.2f}%", flush=True)
    return g


def speed(run: str, repeats: int) -> dict:
    report = cli_benchmark(run, ["eager", "onnx"], repeats)
    e, o = cell(report, "eager", 32), cell(report, "onnx", 32)
    ratio = o["throughput_img_s"]["median"] / e["throughput_img_s"]["median"]
    print(f"  {report['model']} @ {report['input']}: batch 32 eager {e['throughput_img_s']['median']:.1f} img/s, "
          f"onnx {o['throughput_img_s']['median']:.1f} img/s → {ratio:.2f}x; batch 1 p50 eager "
          f"{cell(report, 'eager', 1)['latency_ms']['p50']:.1f} ms, onnx {cell(report, 'onnx', 1)['latency_ms']['p50']:.1f} ms",
          flush=True)
    return {"ratio_onnx_over_eager_b32": ratio, "report": report}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="few steps, 500 gate images, 3 repeats (a smoke run)")
    args = ap.parse_args()
    out = {"machine": print_machine(), "quick": args.quick}
    steps, limit, repeats = (30, 500, 3) if args.quick else (150, None, 10)
    r18, out["resnet18_training"] = trained_run("resnet18", 32, steps)
    vit, out["vit_training"] = trained_run("vit_tiny_patch16_224", 64, steps // 2)
    print("agreement on the Fashion-MNIST test set", flush=True)
    out["resnet18_gate"], out["vit_gate"] = gate(r18, limit), gate(vit, limit)
    print("throughput, 2 threads", flush=True)
    out["resnet18_speed_224"] = speed(resized_bundle(r18, 224), repeats)
    out["vit_speed_224"] = speed(random_bundle("vit_tiny_patch16_224", 224), repeats)
    target = Path(__file__).parents[1] / "docs" / "bench" / ("export_onnx_quick.json" if args.quick else "export_onnx.json")
    from ocula.io import write_json
    write_json(target, out)
    print(f"wrote {target}")
    print(json.dumps({k: out[k]["top1_agreement"] for k in ("resnet18_gate", "vit_gate")}))


if __name__ == "__main__":
    main()
