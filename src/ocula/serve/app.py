"""The HTTP app: `create_app(model)` → a FastAPI app that classifies images over HTTP.

    GET  /                          a page: drop an image, see the top-k with bars
    POST /predict?topk=5            images (multipart 'file'/'files', or a raw image body) → top-k JSON
    *    /v2/...                    Open Inference Protocol v2 (see oip.py): tritonclient works unchanged
    GET  /metrics                   Prometheus text

`model` is anything with the Classifier surface (`ocula.load(run)`, or ONNX Runtime's
`ocula.export.runtime.OnnxClassifier`). Images are decoded in a small thread pool, the model runs in
one thread behind the micro-batcher, and the event loop only moves bytes.
FastAPI is imported at module level because it resolves handler annotations by name; `import ocula`
never imports this module.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Optional

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ocula.data.native import shown_size
from ocula.inference.predictor import Predictor
from ocula.serve.batching import BatcherBusy, BatcherClosed, MicroBatcher
from ocula.serve.limits import (BodyLimit, HeaderLimit, InFlightLimit, Rejected, header, images_to_batch,
                                read_image_bodies, send_error)
from ocula.serve.metrics import Metrics, MetricsMiddleware
from ocula.serve.oip import make_router
from ocula.serve.schemas import Error, PredictResponse
from ocula.version import __version__

MB = 2 ** 20
OPEN_PATHS = ("/", "/v2/health/live", "/v2/health/ready")  # no API key needed: the page and probes
NEVER_BUSY = ("/v2/health/live", "/v2/health/ready", "/metrics")  # answered even when overloaded


class Service:
    """Everything a request handler needs: the model, the batcher, the limits, the metrics."""

    def __init__(self, model, name: str, platform: str, *, max_batch: int, max_wait_ms: float,
                 timeout_s: float, max_pixels: int, max_images: int, max_queue: int,
                 decode_workers: Optional[int]):
        self.model, self.name, self.platform = model, name, platform
        self.timeout_s, self.max_pixels, self.max_images = timeout_s, max_pixels, max_images
        self.decode_workers = decode_workers or min(4, os.cpu_count() or 1)
        self.metrics = Metrics(lambda: self.batcher.depth)
        self.batcher = MicroBatcher(model.logits, max_batch, max_wait_ms, max_queue,
                                    on_batch=self.metrics.observe_batch)
        self._decoder: Optional[ThreadPoolExecutor] = None

    async def start(self) -> None:
        self._decoder = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="ocula-decode")
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.close()  # drains: requests already queued still get their answer
        self._decoder.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        return self.batcher.running

    @property
    def input_shape(self) -> list[int]:
        c = self.model.contract
        return [c.channels, c.input_size, c.input_size]

    async def read(self, reading):
        """Await a body read; a client that does not send its body in time gets 408, one that hangs up
        half-way is answered 400 (nobody reads it; it is counted, and no traceback reaches the log)."""
        try:
            return await asyncio.wait_for(reading, self.timeout_s)
        except asyncio.TimeoutError:
            raise Rejected(408, f"request body not received within {self.timeout_s:g} s") from None
        except ClientDisconnect:
            raise Rejected(400, "the client disconnected before sending the whole body") from None

    async def decode(self, bodies: list[tuple[str, bytes]]) -> torch.Tensor:
        if len(bodies) > self.max_images:
            raise Rejected(413, f"{len(bodies)} images in one request; the limit is {self.max_images}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decoder, images_to_batch, self.model, bodies, self.max_pixels)

    async def classify(self, work) -> torch.Tensor:
        """Run `work` (decode + infer) under the per-request timeout; map server states to 503/504."""
        try:
            return await asyncio.wait_for(work, self.timeout_s)
        except asyncio.TimeoutError:
            raise Rejected(504, f"no answer within {self.timeout_s:g} s") from None
        except BatcherClosed as e:
            raise Rejected(503, str(e)) from None
        except BatcherBusy as e:
            raise Rejected(503, f"server busy: {e}", {"retry-after": "1"}) from None

    async def classify_bodies(self, bodies: list[tuple[str, bytes]]) -> torch.Tensor:
        async def work():
            return await self.batcher.infer(await self.decode(bodies))

        return await self.classify(work())


class ApiKeyGuard:
    """ASGI middleware: 401 unless `X-API-Key: KEY` or `Authorization: Bearer KEY` is sent."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not self._allowed(scope):
            return await send_error(send, 401, "missing or wrong API key: send it as 'X-API-Key: KEY' "
                                    "or 'Authorization: Bearer KEY'", {"www-authenticate": "Bearer"})
        await self.app(scope, receive, send)

    def _allowed(self, scope) -> bool:
        given = header(scope, b"x-api-key")
        auth = header(scope, b"authorization") or ""
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        # compare_digest: the time taken does not reveal how much of the key was right
        return given is not None and hmac.compare_digest(given.encode("latin-1"), self.key)


def create_app(model, name: Optional[str] = None, *, max_batch: int = 32, max_wait_ms: float = 5.0,
               api_key: Optional[str] = None, timeout_s: float = 30.0, max_body_bytes: int = 20 * MB,
               max_pixels: int = 40_000_000, max_images: int = 64, max_queue: int = 1024,
               decode_workers: Optional[int] = None, platform: str = "pytorch", max_header_bytes: int = 8192,
               max_headers: int = 100, max_in_flight: int = 256):
    """The FastAPI app serving `model`. Its lifespan starts the batcher and, on shutdown, drains it."""
    service = Service(model, name or model.meta.get("name") or "model", platform, max_batch=max_batch,
                      max_wait_ms=max_wait_ms, timeout_s=timeout_s, max_pixels=max_pixels,
                      max_images=max_images, max_queue=max_queue, decode_workers=decode_workers)

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=f"ocula: {service.name}", version=__version__, lifespan=lifespan)
    app.state.service = service
    _add_routes(app, service, key_required=bool(api_key))
    app.include_router(make_router(service))
    _add_error_handlers(app)
    # Outermost last: metrics see every answer, the key is checked before any body is read.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyGuard, key=api_key)
    app.add_middleware(InFlightLimit, max_in_flight=max_in_flight, exempt=NEVER_BUSY)
    app.add_middleware(HeaderLimit, max_bytes=max_header_bytes, max_count=max_headers)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app


def _add_routes(app, service: Service, key_required: bool) -> None:
    page = _page(service, key_required)
    errors = {code: {"model": Error} for code in (401, 408, 413, 415, 422, 503, 504)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,  # labels: multilabel
              responses=errors, openapi_extra=PREDICT_BODY)
    async def predict(request: Request, topk: int = Query(5, ge=1, le=1000),
                      min_confidence: Optional[float] = Query(None, ge=0, le=1)):
        """Classify one or several images: multipart 'file'/'files', or a raw image body. A prediction whose
        top probability is below min_confidence (default: the server's --min-confidence) is abstained."""
        bodies = await service.read(read_image_bodies(request, service.max_images))
        probs = service.model.task.probabilities(await service.classify_bodies(bodies))
        floor = service.model.min_confidence if min_confidence is None else min_confidence
        return {"model": service.name, "predictions": [prediction(service.model, label, data, p, topk, floor)
                                                       for (label, data), p in zip(bodies, probs)]}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)


def prediction(model, source: str, data: bytes, probs: torch.Tensor, topk: int, floor: Optional[float]) -> dict:
    """One image's answer: its top-k (a classifier), the thresholded set (multilabel) or the boxes in its own
    pixels (a detector), as `Predictor` answers."""
    task, classes = model.task, model.classes
    boxes = task.boxes(probs, classes, shown_size(data) or (1, 1), getattr(model, "box_threshold",
                                                                           Predictor.box_threshold))
    if boxes is not None:  # detection: label/prob are the best box's
        top = [{"label": b["label"], "prob": b["score"]} for b in boxes[:topk]]
    else:
        top = [{"label": name, "prob": q} for name, q in task.top(probs, classes, topk)]
    out = {"source": source, "label": top[0]["label"] if top else None, "prob": top[0]["prob"] if top else None,
           "topk": top, "abstained": floor is not None and (not top or top[0]["prob"] < floor)}
    chosen = task.label_set(probs, classes)  # multilabel: the thresholded set
    if chosen is not None:
        out["labels"] = [{"label": name, "prob": q} for name, q in chosen]
    if boxes is not None:
        out["boxes"] = boxes
    return out


# The body is read by hand (multipart or raw bytes), so FastAPI cannot infer it: described here for
# /docs and for schema-driven clients and fuzzers (schemathesis).
_IMAGE = {"type": "string", "format": "binary"}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": _IMAGE, "files": {"type": "array", "items": _IMAGE, "maxItems": 64}}}},
    "image/png": {"schema": _IMAGE}, "image/jpeg": {"schema": _IMAGE},
    "application/octet-stream": {"schema": _IMAGE}}}}


def _page(service: Service, key_required: bool) -> str:
    text = (resources.files("ocula.serve") / "page.html").read_text(encoding="utf-8")
    info = {"name": service.name, "classes": len(service.model.classes), "backend": service.platform,
            "input": service.input_shape, "key_required": key_required}
    # "<" escaped so that no value can close the <script> element it is placed in
    return text.replace("__OCULA_INFO__", json.dumps(info).replace("<", "\\u003c"))


def _add_error_handlers(app) -> None:
    @app.exception_handler(Rejected)
    async def rejected(request, exc: Rejected):
        return JSONResponse({"error": exc.reason}, exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(Exception)
    async def crashed(request, exc: Exception):  # a bug, not bad input: still answer in JSON
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, 500)
