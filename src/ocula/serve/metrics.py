"""`/metrics` in Prometheus text format (prometheus_client, one registry per app).

    ocula_requests_total{route, status}        every HTTP answer, refusals included
    ocula_request_duration_seconds{route}      latency histogram, as the server saw it
    ocula_batch_size                           images per model call (micro-batching at work)
    ocula_batch_duration_seconds               model time per call
    ocula_images_total                         images classified
    ocula_queue_depth                          images waiting for the model
    ocula_requests_in_flight                   requests being handled now

Routes are labelled by their template (`/v2/models/{name}/infer`), so labels stay few.
"""
from __future__ import annotations

import time
from typing import Callable

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FIXED_ROUTES = ("/", "/predict", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready")


def route_label(path: str) -> str:
    if path in FIXED_ROUTES:
        return path
    if path.startswith("/v2/models/"):
        for suffix in ("/infer", "/ready"):
            if path.endswith(suffix):
                return "/v2/models/{name}" + suffix
        return "/v2/models/{name}"
    return "other"


class Metrics:
    def __init__(self, queue_depth: Callable[[], int]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("ocula_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("ocula_request_duration_seconds", "Request latency seen by the server",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ocula_batch_size", "Images per model call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_seconds = Histogram("ocula_batch_duration_seconds", "Model time per call",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("ocula_images", "Images classified", registry=r)
        self.in_flight = Gauge("ocula_requests_in_flight", "Requests being handled", registry=r)
        depth = Gauge("ocula_queue_depth", "Images waiting for the model", registry=r)
        depth.set_function(queue_depth)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.images.inc(size)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware, outermost: counts every answer, also those refused before the router."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # if the app raises before answering, that is what the client gets
        start = time.perf_counter()

        async def recorded_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, recorded_send)
        finally:
            route = route_label(scope.get("path", ""))
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
