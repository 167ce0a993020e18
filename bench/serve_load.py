"""`ocula serve` under load from a second process, against the same model's offline batched throughput.

    .venv/bin/python bench/serve_load.py                      # resnet18 at 160 px, 2,000 requests, 32 clients
    .venv/bin/python bench/serve_load.py --quick              # a smoke run: 200 requests, 128 offline images

The server is `ocula serve RUN` started as a subprocess on a free loopback port; this process is the
load generator (httpx async, N concurrent clients, each sending one JPEG per request as a raw body).
The offline figure is `Classifier.predict(list of JPEG bytes, batch_size=32)`: the same decode and
preprocessing, the same model, batched, one process, no HTTP. It is measured before and after the
load phase and averaged, because other jobs on a shared machine change the speed over minutes.
Writes docs/bench/serve.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
          "colorwheel")
CLASSES = ["tench", "springer", "cassette", "chainsaw", "church", "horn", "truck", "pump", "golf ball", "parachute"]


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_1m_at_start": os.getloadavg()[0]}


def make_run(out: Path, model_name: str, size: int) -> Path:
    """A run directory holding `model_name` with random weights: speed does not depend on training."""
    import torch

    from ocula import bundle
    from ocula.models.registry import create_model, default_contract

    torch.manual_seed(0)
    model = create_model(model_name, num_classes=len(CLASSES), in_chans=3, input_size=size).eval()
    contract = default_contract(model_name, 3, input_size=size)
    meta = bundle.make_meta(model.ocula_arch, contract, CLASSES, name=model_name)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    bundle.save_weights(out / "weights" / "best.safetensors", model, meta)
    return out


def photos_as_jpeg() -> list[bytes]:
    """scikit-image's sample photos (300-700 px), encoded as JPEG quality 90, as a phone upload would be."""
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        img = Image.fromarray(arr).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def offline_throughput(run: Path, blobs: list[bytes], n: int, batch: int) -> tuple[float, float]:
    """Images/s of Classifier.predict on n encoded images (decode + preprocess + model), after a warm-up;
    and of the model alone on the already preprocessed batches (the ceiling for any server)."""
    import torch

    from ocula.inference.predictor import Classifier

    clf = Classifier.load(run, device="cpu")
    items = [blobs[i % len(blobs)] for i in range(n)]
    clf.predict(items[:batch], batch_size=batch)  # warm-up: allocator, kernels
    start = time.perf_counter()
    preds = clf.predict(items, batch_size=batch)
    end_to_end = n / (time.perf_counter() - start)
    assert not any(p.error for p in preds)
    x = torch.stack([clf.preprocess(b) for b in blobs])
    batches = [x[torch.arange(i, i + batch) % len(blobs)] for i in range(0, n, batch)]
    start = time.perf_counter()
    for xb in batches:
        clf.logits(xb)
    return end_to_end, len(batches) * batch / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, args, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ocula", "serve", str(run), "--port", str(port), "--max-batch",
           str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--timeout-s", "60"]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready in 120 s")


async def load(url: str, blobs: list[bytes], requests: int, concurrency: int, max_seconds: float) -> dict:
    """`concurrency` clients send `requests` images between them; latency per request, errors counted."""
    import httpx

    latencies, errors, next_index = [], [], 0
    stop_at = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http):
        nonlocal next_index
        while next_index < requests and time.monotonic() < stop_at:
            i, next_index = next_index, next_index + 1
            t0 = time.perf_counter()
            try:
                r = await http.post("/predict?topk=1", content=blobs[i % len(blobs)],
                                    headers={"content-type": "image/jpeg"})
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:100]}")
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": len(errors), "error_examples": errors[:5],
            "seconds": round(seconds, 2), "throughput_img_s": round(len(latencies) / seconds, 2),
            "latency_ms": {q: round(float(np.percentile(lat, int(q[1:]))), 1) for q in ("p50", "p90", "p99")}
            | {"max": round(float(lat.max()), 1)}}


def batch_stats(url: str) -> dict:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("ocula_batch_size_"))
    count, total = float(values["ocula_batch_size_count"]), float(values["ocula_batch_size_sum"])
    return {"model_calls": int(count), "mean_batch": round(total / max(count, 1), 2)}


def stop_server(server: subprocess.Popen) -> None:
    """SIGINT: a graceful stop that finishes in-flight requests and drains the batcher; kill after 60 s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()


def load_test_parser(description: str, out: str, quick: str) -> argparse.ArgumentParser:
    """The options every serve load test shares (model, traffic, batching, bounds, output)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=160, help="input side in pixels")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long (bound)")
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out", default=str(ROOT / "docs" / "bench" / out))
    return p


def main() -> None:
    p = load_test_parser(__doc__.split("\n")[0], "serve.json", "200 requests, 128 offline images")
    p.add_argument("--offline-images", type=int, default=256)
    args = p.parse_args()
    if args.quick:
        args.requests, args.offline_images = 200, 128
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "model": args.model, "input_size": args.size,
            "settings": {k: getattr(args, k) for k in ("requests", "concurrency", "offline_images", "max_batch",
                                                       "max_wait_ms")}}
    print(f"$ {command}\n{info['date']}  {info['machine']}")
    blobs = photos_as_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / f"{args.model}-{args.size}", args.model, args.size)
        before, model_before = offline_throughput(run, blobs, args.offline_images, args.max_batch)
        print(f"offline batched (before): {before:.1f} img/s end to end, {model_before:.1f} img/s model only")
        port = free_port()
        server = start_server(run, port, args, Path(tmp) / "server.log")
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(load(url, blobs, 2 * args.concurrency, args.concurrency, 120))  # warm-up
            result = asyncio.run(load(url, blobs, args.requests, args.concurrency, args.max_seconds))
            result |= batch_stats(url)
        finally:
            stop_server(server)
        after, model_after = offline_throughput(run, blobs, args.offline_images, args.max_batch)
        print(f"offline batched (after): {after:.1f} img/s end to end, {model_after:.1f} img/s model only")
    offline, model_only = (before + after) / 2, (model_before + model_after) / 2
    served = result["throughput_img_s"]
    info |= {"offline_img_s": {"before": round(before, 2), "after": round(after, 2), "mean": round(offline, 2)},
             "offline_model_only_img_s": {"before": round(model_before, 2), "after": round(model_after, 2),
                                          "mean": round(model_only, 2)},
             "server": result, "ratio_server_to_offline": round(served / offline, 3),
             "ratio_server_to_model_only": round(served / model_only, 3),
             "load_avg_1m_at_end": os.getloadavg()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from ocula.io import write_json

    write_json(args.out, info)
    lat = result["latency_ms"]
    print(f"\n| model | requests | errors | server img/s | offline img/s (ratio) | model-only img/s (ratio) "
          f"| p50 ms | p99 ms | mean batch |\n|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.model} @{args.size} | {result['requests']} | {result['errors']} | {served} "
          f"| {offline:.1f} ({info['ratio_server_to_offline']}) | {model_only:.1f} "
          f"({info['ratio_server_to_model_only']}) | {lat['p50']} | {lat['p99']} | {result['mean_batch']} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
