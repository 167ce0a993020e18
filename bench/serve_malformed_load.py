"""`ocula serve` under load while a second client sends malformed and hostile requests.

    .venv/bin/python bench/serve_malformed_load.py              # resnet18 at 160 px, 2,000 requests, 32 clients
    .venv/bin/python bench/serve_malformed_load.py --quick      # 200 requests

The server is `ocula serve RUN` (a subprocess, free loopback port, default limits). 32 clients send
2,000 good JPEGs between them (bench/serve_load.py's load); at the same time one more client sends,
round-robin and as fast as it is answered: bad JSON, a 9 KiB and a 64 KiB header, 150 headers,
truncated multipart bodies (the connection closed half-way), a garbage multipart body, empty /
truncated / not-an-image / decompression-bomb uploads, invalid base64 in a v2 BYTES tensor, a
non-ASCII Inference-Header-Content-Length and a wrong content type. Reports the status of every
answer: 5xx must be 0 for both kinds, and the good requests' latency (p50, p99).
Writes docs/bench/serve_malformed_load.json and prints a markdown table.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import (ROOT, free_port, load_test_parser, machine, make_run, photos_as_jpeg,  # noqa: E402
                        start_server, stop_server)


def hostile_uploads(jpeg: bytes) -> dict[str, bytes]:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return {"empty": b"", "truncated": jpeg[: len(jpeg) // 3], "not an image": b"hello, world\n" * 10,
            "bomb": bomb}


def malformed_requests(name: str, jpeg: bytes) -> list[tuple[str, bytes, bool]]:
    """(kind, raw HTTP/1.1 request bytes, whether the connection is cut before the request ends)."""
    def req(method, path, headers=(), body=b"", length=None):
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"Content-Length: {len(body) if length is None else length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    infer = f"/v2/models/{name}/infer"
    boundary = "ocula-bench-boundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()
    mp = [("Content-Type", f"multipart/form-data; boundary={boundary}")]
    out = [
        ("bad JSON", req("POST", infer, [("Content-Type", "application/json")], b'{"inputs": [{"name": "in'), False),
        ("JSON not an object", req("POST", infer, [("Content-Type", "application/json")], b"[1, 2, 3]"), False),
        ("9 KiB header", req("GET", "/v2/health/live", [("X-Pad", "a" * 9216)]), False),
        ("64 KiB header", req("GET", "/v2/health/live", [("X-Pad", "a" * 65536)]), False),
        ("150 headers", req("GET", "/v2/health/live", [(f"X-H{i}", "1") for i in range(150)]), False),
        ("truncated multipart (cut)", req("POST", "/predict", mp, part[: len(part) // 2], length=len(part)), True),
        ("garbage multipart", req("POST", "/predict", mp, b"--nope\r\n\r\n\x00\xff" * 50), False),
        ("multipart without boundary", req("POST", "/predict", [("Content-Type", "multipart/form-data")], part),
         False),
        ("bad base64 BYTES", req("POST", infer, [("Content-Type", "application/json")], json.dumps(
            {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["@@not base64@@"]}]}).encode()),
         False),
        ("non-ASCII header length", req("POST", infer, [("Content-Type", "application/json"),
                                                        ("Inference-Header-Content-Length", "\xb2")], b"{}"), False),
        ("wrong content type", req("POST", "/predict", [("Content-Type", "text/csv")], b"a,b\n1,2\n"), False),
    ]
    for kind, data in hostile_uploads(jpeg).items():
        out.append((f"{kind} upload", req("POST", "/predict", [("Content-Type", "image/jpeg")], data), False))
        out.append((f"{kind} as v2 BYTES", req("POST", infer, [("Content-Type", "application/json")], json.dumps(
            {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                         "data": [base64.b64encode(data).decode()]}]}).encode()), False))
    return out


async def send_raw(port: int, raw: bytes, cut: bool, timeout: float = 30) -> int:
    """Status code of the answer; 0 when the server closed without one (or we cut the request)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return -1
    try:
        writer.write(raw)
        await writer.drain()
        if cut:
            return 0
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return 0
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def run(port: int, blobs: list[bytes], requests: int, concurrency: int, max_seconds: float,
              name: str) -> tuple[dict, dict]:
    import httpx

    url = f"http://127.0.0.1:{port}"
    statuses, latencies, next_index, done = Counter(), [], 0, False
    stop_at = time.monotonic() + max_seconds

    async def client(http):
        nonlocal next_index
        while next_index < requests and time.monotonic() < stop_at:
            i, next_index = next_index, next_index + 1
            t0 = time.perf_counter()
            try:
                r = await http.post("/predict?topk=1", content=blobs[i % len(blobs)],
                                    headers={"content-type": "image/jpeg"})
                statuses[r.status_code] += 1
            except httpx.HTTPError as e:
                statuses[type(e).__name__] += 1
            latencies.append(time.perf_counter() - t0)

    bad = malformed_requests(name, blobs[0])
    bad_statuses: dict[str, Counter] = {kind: Counter() for kind, _, _ in bad}

    async def malformed():
        i = 0
        while not done:
            kind, raw, cut = bad[i % len(bad)]
            bad_statuses[kind][await send_raw(port, raw, cut)] += 1
            i += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        bad_task = asyncio.create_task(malformed())
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        done = True
        await bad_task
    lat = np.array(latencies) * 1000
    good = {"requests": len(latencies), "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "server_errors_5xx": sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500),
            "seconds": round(seconds, 2), "throughput_img_s": round(len(latencies) / seconds, 2),
            "latency_ms": {q: round(float(np.percentile(lat, int(q[1:]))), 1) for q in ("p50", "p90", "p99")}
            | {"max": round(float(lat.max()), 1)}}
    total = sum(sum(c.values()) for c in bad_statuses.values())
    malformed_summary = {
        "requests": total,
        "server_errors_5xx": sum(v for c in bad_statuses.values() for k, v in c.items() if k >= 500),
        "by_kind": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in bad_statuses.items()},
        "note": "0 = connection closed without an answer (the protocol layer dropped it, or we cut the request)",
    }
    return good, malformed_summary


def main() -> None:
    p = load_test_parser(__doc__.split("\n")[0], "serve_malformed_load.json", "200 requests")
    args = p.parse_args()
    if args.quick:
        args.requests = 200
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "model": args.model, "input_size": args.size,
            "settings": {k: getattr(args, k) for k in ("requests", "concurrency", "max_batch", "max_wait_ms")}}
    print(f"$ {command}\n{info['date']}  {info['machine']}")
    blobs = photos_as_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp) / args.model, args.model, args.size)
        port = free_port()
        server = start_server(run_dir, port, args, Path(tmp) / "server.log")
        try:
            asyncio.run(run(port, blobs, 2 * args.concurrency, args.concurrency, 120, args.model))  # warm-up
            good, bad = asyncio.run(run(port, blobs, args.requests, args.concurrency, args.max_seconds, args.model))
            import httpx

            alive = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10).status_code
        finally:
            stop_server(server)
        log = (Path(tmp) / "server.log").read_text(errors="replace")
    tracebacks = [block.split("\n\n")[0][-1500:] for block in log.split("Traceback")[1:]]
    info |= {"good": good, "malformed": bad, "ready_after": alive, "server_log_tracebacks": len(tracebacks),
             "server_log_traceback_examples": tracebacks[:3],
             "load_avg_1m_at_end": os.getloadavg()[0]}
    from ocula.io import write_json

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, info)
    lat = good["latency_ms"]
    print(f"\n| good requests | 5xx | statuses | img/s | p50 ms | p99 ms | malformed requests | malformed 5xx "
          f"| tracebacks in server log |\n|---|---|---|---|---|---|---|---|---|\n"
          f"| {good['requests']} | {good['server_errors_5xx']} | {good['statuses']} | {good['throughput_img_s']} "
          f"| {lat['p50']} | {lat['p99']} | {bad['requests']} | {bad['server_errors_5xx']} "
          f"| {info['server_log_tracebacks']} |")
    for kind, c in bad["by_kind"].items():
        print(f"  {kind}: {c}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
