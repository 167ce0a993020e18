"""`serve(run)`: load a model (PyTorch, or its ONNX export) and serve it with uvicorn until Ctrl-C.

Shutdown is graceful: uvicorn stops accepting connections and waits for requests in flight, then the
app's lifespan drains the micro-batcher, so nothing already accepted is dropped.

Connections (see docs/serve.md, "Limits and failures"): uvicorn's h11 protocol with a cap on what it
buffers of a request line + headers still incomplete (`max_header_bytes` + 4 KiB, then a 400 and the
connection closed; complete headers over `max_header_bytes` get the app's 431), a header timeout (a connection that has not sent a request's complete headers within
`header_timeout_s` is closed: slow-loris clients hold no connection for long), idle keep-alive
connections closed after `keep_alive_s`, and at most `max_connections` connections and tasks (503).
"""
from __future__ import annotations

import ipaddress
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ocula.errors import OculaError
from ocula.export.runtime import OnnxClassifier
from ocula.inference.device import available_device
from ocula.inference.predictor import Classifier
from ocula.run_dir import WEIGHTS_DIR


def load_for_serving(run, onnx: bool = False, int8: bool = False, threads: Optional[int] = None,
                     device: str = "auto", providers=None):
    """→ (model with the Classifier surface, OIP platform name). `device` places the PyTorch model,
    `providers` chooses onnxruntime's execution providers (--onnx)."""

    if int8 and not onnx:
        raise OculaError("--int8 serves the quantized ONNX export: add --onnx")
    if onnx:
        try:  # onnxruntime is imported by the load
            return OnnxClassifier.load(run, threads=threads, int8=int8, providers=providers), "onnxruntime_onnx"
        except ModuleNotFoundError as e:
            raise OculaError(f"--onnx needs ocula's export support ({e.name} is missing; "
                             f"pip install 'ocula[export]')") from None
    return Classifier.load(run, device=available_device(device)), "pytorch_libtorch"


def model_name(run) -> str:
    """The run directory's name (`runs/shoes` → shoes); for a file, the run it sits in, else its stem."""
    p = Path(run).resolve()
    if p.is_dir():
        return p.name
    if p.parent.name == WEIGHTS_DIR:
        return p.parent.parent.name
    return p.stem


def api_key_from_env(variable: Optional[str]) -> Optional[str]:
    if not variable:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise OculaError(f"--api-key-env {variable}: that environment variable is not set or empty")
    return key


HEADER_SLACK = 4096  # the request line (method, URL, version) on top of the headers' own limit


def connection_options(max_header_bytes: int = 8192, keep_alive_s: float = 5.0, header_timeout_s: float = 10.0,
                       max_connections: int = 1024) -> dict:
    """uvicorn.Config keyword arguments that bound what one connection may hold, and for how long."""
    return {"http": guarded_h11(header_timeout_s), "h11_max_incomplete_event_size": max_header_bytes + HEADER_SLACK,
            "timeout_keep_alive": max(1, round(keep_alive_s)), "limit_concurrency": max_connections}


def guarded_h11(header_timeout_s: float):
    """uvicorn's h11 protocol, closing connections that do not send a request's headers in time."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            super().data_received(data)
            if self.cycle is not None and self.cycle is not before:
                self._disarm()  # a request's headers are complete; its body has the app's --timeout-s
            elif self.cycle is None or self.cycle.response_complete:
                self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # waiting for the next request on this connection

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None and not self.transport.is_closing():
                self._header_timer = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:  # still no complete request headers
                self.transport.close()

    return GuardedH11Protocol


def serve(run, *, host: str = "127.0.0.1", port: int = 8000, onnx: bool = False, int8: bool = False,
          name: Optional[str] = None, max_batch: int = 32, max_wait_ms: float = 5.0,
          api_key_env: Optional[str] = None, timeout_s: float = 30.0, max_body_mb: float = 20.0,
          threads: Optional[int] = None, access_log: bool = False, max_header_kb: float = 8.0,
          max_headers: int = 100, keep_alive_s: float = 5.0, header_timeout_s: float = 10.0,
          max_in_flight: int = 256, max_connections: int = 1024, min_confidence: Optional[float] = None,
          device: str = "auto", providers=None, announce: Callable[[str], None] = print) -> None:
    """Serve `run` over HTTP until interrupted (see docs/serve.md)."""
    import uvicorn
    from prometheus_client import disable_created_metrics

    from ocula.serve.app import create_app  # lazy: fastapi, imported only to serve

    disable_created_metrics()  # *_created series are noise on dashboards; this process only serves
    if max_batch < 1 or max_wait_ms < 0 or timeout_s <= 0 or max_body_mb <= 0:
        raise OculaError("--max-batch must be >= 1, --max-wait-ms >= 0, --timeout-s and --max-body-mb > 0")
    if max_header_kb <= 0 or max_headers < 1 or keep_alive_s <= 0 or header_timeout_s <= 0 or \
            max_in_flight < 1 or max_connections < 1:
        raise OculaError("--max-header-kb, --keep-alive-s and --header-timeout-s must be > 0; --max-headers, "
                         "--max-in-flight and --max-connections >= 1")
    key = api_key_from_env(api_key_env)
    model, platform = load_for_serving(run, onnx=onnx, int8=int8, threads=threads, device=device,
                                       providers=providers)
    if min_confidence is not None:
        if not 0 <= min_confidence <= 1:
            raise OculaError(f"--min-confidence must be a probability in [0, 1], not {min_confidence}")
        model.min_confidence = min_confidence
    name = name or model_name(run)
    max_header_bytes = int(max_header_kb * 1024)
    app = create_app(model, name, max_batch=max_batch, max_wait_ms=max_wait_ms, api_key=key,
                     timeout_s=timeout_s, max_body_bytes=int(max_body_mb * 2 ** 20), platform=platform,
                     max_header_bytes=max_header_bytes, max_headers=max_headers, max_in_flight=max_in_flight)
    url_host = f"[{host}]" if ":" in host else host
    announce(f"serving '{name}' ({platform}, {len(model.classes)} classes) at http://{url_host}:{port}/ "
             f"— page at /, POST /predict, Open Inference Protocol at /v2, metrics at /metrics")
    if not _is_loopback(host) and not key:
        announce(f"warning: listening on {host} without an API key; anyone who can reach it may use it "
                 f"(--api-key-env VAR)")
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", access_log=access_log,
                            timeout_graceful_shutdown=int(timeout_s) + 5, log_level="info",
                            **connection_options(max_header_bytes, keep_alive_s, header_timeout_s, max_connections))
    uvicorn.Server(config).run()


class BackgroundServer:
    """uvicorn in a thread of this process (notebooks, tests): `with BackgroundServer(app) as s: s.url`.

    `port=0` picks a free port. Leaving the block shuts down gracefully, like Ctrl-C would.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout_graceful_s: int = 30,
                 **connection: float):
        """`connection`: connection_options() keywords (max_header_bytes, keep_alive_s, ...)."""
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning",
                                timeout_graceful_shutdown=timeout_graceful_s, **connection_options(**connection))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="ocula-serve", daemon=True)
        self.url = ""

    def start(self, timeout_s: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OculaError("the server did not start (is the port in use?)")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop accepting, finish requests in flight, drain the batcher, join the thread."""
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
