"""int8 pointwise weights on this CPU: int8 (U8S8 kernels) against uint8 (U8U8), fidelity and speed.

    python bench/int8_pointwise.py RUN TEST_DIR [--json docs/bench/int8_pointwise.json] [--reps 8]

RUN: a trained ocula run with its fp32 `model.onnx` (`ocula export RUN`); TEST_DIR: labelled images the
gate scores on. Both int8 files are calibrated the same way as `ocula export RUN --int8` (the run's
training images, 256 of them, MinMax) and differ only in the weights of the non-depthwise convolutions
and the Gemm (`quantize_int8(pointwise_weights=...)`). Fidelity: ocula's accuracy gate against PyTorch
on TEST_DIR. Speed: ONNX Runtime, one thread, batch 32 of those images, the three files interleaved,
best of --reps rounds (the machine is shared: only the ratios inside one run mean anything).

Why: without VNNI, ONNX Runtime's x86 U8S8 GEMM adds pairs of uint8 × int8 products into int16
(VPMADDUBSW), which saturates; U8U8 does not (ONNX Runtime's quantization docs name both remedies,
reduce_range and U8U8).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("test")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    info = print_machine()

    import onnxruntime as ort
    import torch

    import ocula
    from ocula.export.gate import accuracy_gate, gate_data
    from ocula.export.quantize import quantize_int8, vnni_cpu
    from ocula.export.runtime import OnnxClassifier
    from ocula.inference.scoring import labelled_split, split_batches

    torch.set_num_threads(1)
    run = Path(args.run)
    fp32 = run / "model.onnx"
    if not fp32.is_file():
        raise SystemExit(f"{fp32}: export the run first (ocula export {run})")
    reference = ocula.load(str(run))
    calibrate = gate_data(reference, None)  # what `ocula export --int8` calibrates on: the run's data
    files, results = {"fp32": fp32}, {"vnni": vnni_cpu()}
    for pointwise in ("int8", "uint8"):
        out = run / f"bench.int8-pointwise-{pointwise}.onnx"
        t0 = time.perf_counter()
        q = quantize_int8(fp32, out, calibrate, calib_size=256, workers=0, pointwise_weights=pointwise)
        results[pointwise] = {"quantize_s": time.perf_counter() - t0, "pointwise_weights": q["pointwise_weights"]}
        files[pointwise] = out
    cands = [OnnxClassifier.load(files[p], threads=1) for p in ("int8", "uint8")]
    for cand in cands:
        cand.precision = "int8"
    for p, gate in zip(("int8", "uint8"), accuracy_gate(reference, cands, args.test, workers=0)):
        results[p].update({k: gate[k] for k in ("images", "accuracy_pytorch", "accuracy_exported",
                                                "delta_accuracy_points", "top1_agreement", "mean_abs_logit_diff",
                                                "passed")})
        print(f"RESULT pointwise={p} drop={gate['delta_accuracy_points']:+.2f} points "
              f"agreement={gate['top1_agreement']:.4f} mean|dlogit|={gate['mean_abs_logit_diff']:.4f} "
              f"passed={gate['passed']}", flush=True)

    samples = labelled_split(reference, args.test).samples
    x = next(iter(split_batches(reference, samples.subset(list(range(min(32, len(samples))))), 32, 0)))[0]
    x = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    sessions = {}
    for name, path in files.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    best = {name: float("inf") for name in sessions}
    for _ in range(args.reps):  # interleaved, so load changes hit every file alike
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, {sess.get_inputs()[0].name: x})
            best[name] = min(best[name], time.perf_counter() - t0)
    speed = {name: len(x) / s for name, s in best.items()}
    results["images_per_s"] = speed
    for name in files:
        print(f"RESULT speed {name}: {speed[name]:.1f} img/s ({speed[name] / speed['fp32']:.2f}× fp32), "
              f"batch {len(x)}, 1 thread, best of {args.reps}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "run": str(run), "test": args.test,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
