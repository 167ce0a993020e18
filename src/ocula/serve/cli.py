"""`ocula serve RUN`: a thin shell over ocula.serve.runner.serve."""
from __future__ import annotations


def register(subparsers) -> dict:
    p = subparsers.add_parser("serve", help="serve a model over HTTP (page, /predict, Open Inference "
                              "Protocol v2, /metrics)")
    p.add_argument("run", help="run directory or .safetensors bundle (with --onnx: run dir or .onnx)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--onnx", action="store_true", help="run the ONNX export (RUN/model.onnx) on ONNX Runtime")
    p.add_argument("--int8", action="store_true", help="with --onnx: the quantized RUN/model.int8.onnx")
    p.add_argument("--threads", type=int, help="with --onnx: ONNX Runtime intra-op threads")
    p.add_argument("--name", help="model name in /v2/models/NAME (default: the run directory's name)")
    p.add_argument("--max-batch", type=int, default=32, help="most images per model call (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="longest wait for a batch to fill after its first image (default: 5)")
    p.add_argument("--api-key-env", metavar="VAR", help="require the key held by this environment variable "
                   "(header X-API-Key or Authorization: Bearer)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout (default: 30)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default: 20)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    return {"serve": cmd_serve}


def cmd_serve(args) -> int:
    from ocula.serve.runner import serve

    serve(args.run, host=args.host, port=args.port, onnx=args.onnx, int8=args.int8, name=args.name,
          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_key_env=args.api_key_env,
          timeout_s=args.timeout_s, max_body_mb=args.max_body_mb, threads=args.threads,
          access_log=args.access_log)
    return 0
