"""`ocula serve` on a real socket (127.0.0.1): header caps, header and keep-alive timeouts, overload.

Each server is a BackgroundServer (uvicorn in a thread, free loopback port) that stops by itself.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")

from ocula.serve import create_app  # noqa: E402
from ocula.serve.runner import BackgroundServer  # noqa: E402


@pytest.fixture(scope="module")
def clf(digits_run):
    from ocula.inference.predictor import Classifier

    return Classifier.load(digits_run, device="cpu")


@pytest.fixture(scope="module")
def server(clf):
    app = create_app(clf, "digits", max_wait_ms=1)
    with BackgroundServer(app, keep_alive_s=1, header_timeout_s=1) as s:
        yield s


def address(server) -> tuple[str, int]:
    host, port = server.url.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def exchange(server, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes or answers one complete response."""
    with socket.create_connection(address(server), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_response(sock)


def read_response(sock) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
    return data


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def request(path: str = "/v2/health/live", headers: list[tuple[str, str]] = (), method: str = "GET",
            body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---------------------------------------------------------------------------- header caps
def test_normal_headers_are_answered(server):
    r = exchange(server, request(headers=[("X-Pad", "a" * 7000)]))
    assert status(r) == 200, r[:200]


def test_headers_over_8_kib_get_431(server):
    r = exchange(server, request(headers=[("X-Pad", "a" * 9000)]))
    assert status(r) == 431 and b"over the limit of 8192 bytes" in r, r[:300]


def test_70_kb_header_is_refused_before_it_is_buffered(server):
    r = exchange(server, request(headers=[("X-Pad", "a" * 70_000)]))
    assert status(r) in (400, 431), r[:300]


def test_more_than_100_headers_get_431(server):
    r = exchange(server, request(headers=[(f"X-H{i}", "1") for i in range(101)]))
    assert status(r) == 431 and b"102 request headers" in r  # + Host, r[:300]


@pytest.mark.parametrize("value", [b"\xb2", b"\xd9\xa1", b"-1", b"99999999999999999999999", b"abc"])
def test_odd_inference_header_length_is_a_4xx(server, value):
    body = b'{"inputs": []}'
    raw = request("/v2/models/digits/infer", [("Content-Type", "application/json")], "POST", body)
    raw = raw.replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1\r\nInference-Header-Content-Length: " + value)
    r = exchange(server, raw)
    assert 400 <= status(r) < 500, r[:300]


@pytest.mark.parametrize("value", [b"\xb2", b"1e3", b"-5", b" 2 "])
def test_odd_content_length_is_a_4xx(server, value):
    raw = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: " + value + b"\r\n\r\nxx"
    r = exchange(server, raw, timeout=5)
    assert status(r) == 0 or 400 <= status(r) < 500, r[:300]  # 0: the protocol layer hung up


# ---------------------------------------------------------------------------- timeouts
def test_idle_keep_alive_connection_is_closed(server):
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(request())
        assert status(read_response_once(sock)) == 200
        start = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server
        assert time.monotonic() - start < 5


def read_response_once(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    while length and len(body) < length[0]:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_slow_loris_headers_are_cut_off(server):
    """A client dribbling its headers, a byte at a time, loses the connection after the header timeout."""
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 6:
            try:
                sock.sendall(b"X")
                sock.settimeout(0.3)
                if sock.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed and time.monotonic() - start < 4


def test_silent_connection_is_closed(server):
    with socket.create_connection(address(server), timeout=10) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - start < 5


# ---------------------------------------------------------------------------- overload
class SlowModel:
    """The Classifier surface with a model call that takes `seconds`."""

    def __init__(self, clf, seconds: float):
        self.clf, self.seconds = clf, seconds
        self.classes, self.contract, self.meta, self.preprocess = clf.classes, clf.contract, clf.meta, clf.preprocess
        self.task, self.min_confidence = clf.task, clf.min_confidence

    def logits(self, x):
        time.sleep(self.seconds)
        return self.clf.logits(x)


def test_overload_gets_503_with_retry_after_and_probes_stay_up(clf, digits_run):
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    app = create_app(SlowModel(clf, 0.6), "digits", max_wait_ms=0, max_batch=1, max_in_flight=2)
    with BackgroundServer(app) as s:
        answers, lock = [], threading.Lock()

        def client():
            r = exchange(s, request("/predict", [("Content-Type", "image/png")], "POST", png))
            with lock:
                answers.append(r)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        probe = exchange(s, request("/v2/health/ready"))
        for t in threads:
            t.join(30)
    codes = sorted(status(r) for r in answers)
    assert status(probe) == 200
    assert codes.count(200) >= 2 and 503 in codes and all(c in (200, 503) for c in codes), codes
    busy = next(r for r in answers if status(r) == 503)
    assert b"retry-after: 1" in busy.lower() and b"server busy" in busy


# ---------------------------------------------------------------------------- clients that hang up
@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=b", "image/png", "application/json"])
def test_client_hanging_up_mid_body_leaves_no_traceback(server, content_type):
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        path = "/v2/models/digits/infer" if content_type == "application/json" else "/predict"
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: 10000\r\n\r\n").encode()
        with socket.create_connection(address(server), timeout=10) as sock:
            sock.sendall(head + b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" + b"x" * 100)
            time.sleep(0.2)
        time.sleep(0.5)
        assert status(exchange(server, request())) == 200  # still serving
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]
