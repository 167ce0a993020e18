"""`ocula export` and `ocula benchmark`: thin shells over ocula.export (argparse only at import)."""
from __future__ import annotations

import argparse

from ocula.errors import GateFailed, OculaError
from ocula.io import STDOUT, write_json

PROVIDERS_HELP = ("ONNX Runtime execution providers, comma-separated, in order of preference: full names "
                  "(CUDAExecutionProvider) or short ones (cuda, cpu, tensorrt) (default: CUDA when available, "
                  "then CPU)")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OculaError(f"'{text}': expected comma-separated integers, e.g. 1,32") from None
    if not values or min(values) < 1:
        raise OculaError(f"'{text}': expected positive integers, e.g. 1,32")
    return values


def register(sub) -> dict:
    p = sub.add_parser("export", help="export to ONNX (optionally int8) and check accuracy against PyTorch",
                       description="Export a run to ONNX with a dynamic batch axis and everything needed to "
                       "predict in its metadata, then run the accuracy gate (exit 3 when it fails).")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="file format (default: onnx, the only one)")
    p.add_argument("--out", metavar="PATH", help="the fp32 .onnx file (default: RUN/model.onnx); int8 goes "
                   "beside it as NAME.int8.onnx")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False, help="also write an int8 model")
    p.add_argument("--int8-scheme", default="auto", choices=["auto", "static", "dynamic"],
                   help="auto (default): static calibrated QDQ for CNNs, dynamic for ViTs and other "
                        "matmul-heavy models, whichever measured faster for its kind")
    p.add_argument("--calibrate", metavar="DATA", help="images to calibrate int8 on (default: the run's "
                   "training data)")
    p.add_argument("--calib-size", type=int, default=256, metavar="N", help="calibration images (default 256)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="how int8 ranges are chosen from the calibration activations (default: minmax)")
    p.add_argument("--gate-data", metavar="DATA", help="labelled images for the gate (default: the run's "
                   "test split, else its held-out validation split)")
    p.add_argument("--gate-limit", type=int, metavar="N", help="gate on at most N images, evenly spaced")
    p.add_argument("--max-drop", type=float, metavar="POINTS", help="allowed accuracy drop in points "
                   "(default 0.5 for fp32, 1 for int8)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: 18, ocula.export.onnx.OPSET; the file records the one written)")
    p.add_argument("--batch-size", type=int, default=64, help="images per model call in the gate (default: 64)")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding the gate's images (default: "
                   "the cores, at most 4; 0 = in this process)")

    p = sub.add_parser("benchmark", help="latency, throughput, FLOPs and memory per backend",
                       description="Benchmark a run on random inputs of its contract, per backend and batch size.")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("--backends", default="eager,onnx", help="comma-separated: eager, compiled, onnx, onnx-int8")
    p.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per cell, after warm-up (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="time budget per cell (default 15)")
    p.add_argument("--providers", metavar="LIST", help=f"onnx backends: {PROVIDERS_HELP}")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON ('-' for stdout)")
    return {"export": cmd_export, "benchmark": cmd_benchmark}


def cmd_export(args) -> int:
    from ocula.export.gate import format_gate  # lazy: ocula --help imports no torch
    from ocula.export.pipeline import export_model

    if args.calibrate and not args.int8:
        raise OculaError("--calibrate is for int8: add --int8")
    result = export_model(args.run, format=args.format, out=args.out, int8=args.int8, calibrate=args.calibrate,
                          calib_size=args.calib_size, calib_method=args.calib_method, gate_data=args.gate_data,
                          int8_scheme=args.int8_scheme,
                          max_drop=args.max_drop, gate_limit=args.gate_limit, opset=args.opset,
                          batch_size=args.batch_size, workers=args.workers)
    for precision, path in result.files.items():
        gate = result.gates[precision]
        print(f"wrote {path} ({gate['size_bytes'] / 1e6:.2f} MB)")
        print(format_gate(gate))
        print(f"  gate report: {result.reports[precision]}")
    if not result.passed:  # the files stay, to inspect; exit 3 tells a script not to ship them
        raise GateFailed(result.reason)
    return 0


def cmd_benchmark(args) -> int:
    from ocula.export.benchmark import benchmark, format_benchmark  # lazy: ocula --help imports no torch

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    report = benchmark(args.run, backends, _int_list(args.batch), threads=args.threads, repeats=args.repeats,
                       warmup=args.warmup, max_seconds=args.max_seconds, providers=args.providers)
    if args.json:
        write_json(args.json, report)
    if args.json != STDOUT:
        print(format_benchmark(report))
    return 0
