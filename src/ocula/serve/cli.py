"""`ocula serve RUN`: a thin shell over ocula.serve.runner.serve."""
from __future__ import annotations

import argparse

from ocula.export.cli import PROVIDERS_HELP
from ocula.errors import OculaError
from ocula.inference.device import DEVICE_HELP, check_device


def register(subparsers) -> dict:
    p = subparsers.add_parser("serve", help="serve a model over HTTP (page, /predict, Open Inference "
                              "Protocol v2, /metrics)")
    p.add_argument("run", help="run directory or .safetensors bundle (with --onnx: run dir or .onnx)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=False,
                   help="run the ONNX export (RUN/model.onnx) on ONNX Runtime")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False,
                   help="with --onnx: the quantized RUN/model.int8.onnx")
    p.add_argument("--threads", type=int, help="with --onnx: ONNX Runtime intra-op threads")
    p.add_argument("--device", type=check_device, default="auto", help=f"without --onnx: {DEVICE_HELP}")
    p.add_argument("--providers", metavar="LIST", help=f"with --onnx: {PROVIDERS_HELP}")
    p.add_argument("--name", help="model name in /v2/models/NAME (default: the run directory's name)")
    p.add_argument("--max-batch", type=int, default=32, help="most images per model call (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="longest wait for a batch to fill after its first image (default: 5)")
    p.add_argument("--api-key-env", metavar="VAR", help="require the key held by this environment variable "
                   "(header X-API-Key or Authorization: Bearer)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout (default: 30)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default: 20)")
    p.add_argument("--max-header-kb", type=float, default=8.0,
                   help="largest request headers in all, in KiB (default: 8; 431 beyond)")
    p.add_argument("--max-headers", type=int, default=100, help="most request headers (default: 100; 431 beyond)")
    p.add_argument("--keep-alive-s", type=float, default=5.0,
                   help="close a keep-alive connection idle this long (default: 5)")
    p.add_argument("--header-timeout-s", type=float, default=10.0,
                   help="close a connection that has not sent a request's headers within this (default: 10)")
    p.add_argument("--max-in-flight", type=int, default=256,
                   help="requests answered at once; more get 503 + Retry-After (default: 256)")
    p.add_argument("--max-connections", type=int, default=1024,
                   help="open connections and tasks; more get 503 (default: 1024)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False, help="log every request")
    p.add_argument("--min-confidence", type=float, metavar="P", help="mark predictions whose top probability is "
                   "below P as abstained (/predict and the OIP 'abstained' output; a request may pass its own)")
    return {"serve": cmd_serve}


def cmd_serve(args) -> int:
    from ocula.serve.runner import serve  # lazy: ocula --help imports no torch

    if args.device != "auto" and args.onnx:
        raise OculaError("--device is for the PyTorch model; with --onnx choose --providers")
    if args.providers and not args.onnx:
        raise OculaError("--providers is for ONNX Runtime: add --onnx")
    serve(args.run, host=args.host, port=args.port, onnx=args.onnx, int8=args.int8, name=args.name,
          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_key_env=args.api_key_env,
          timeout_s=args.timeout_s, max_body_mb=args.max_body_mb, threads=args.threads,
          access_log=args.access_log, max_header_kb=args.max_header_kb, max_headers=args.max_headers,
          keep_alive_s=args.keep_alive_s, header_timeout_s=args.header_timeout_s,
          max_in_flight=args.max_in_flight, max_connections=args.max_connections,
          min_confidence=args.min_confidence, device=args.device, providers=args.providers)
    return 0
