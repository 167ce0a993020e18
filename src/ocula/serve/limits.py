"""What the server refuses, and how: bad input becomes a 4xx with a one-line reason, never a 500.

- Bodies larger than the limit: 413, from the Content-Length header before reading anything, and
  again while reading (chunked uploads, lying headers).
- Not an image: 415. Truncated, empty, too many pixels: 422. Pixel bombs are refused from the
  image header, before any pixel is decoded (`ocula.data.images.open_image(max_pixels=...)`).
- Wrong content type: 415, with a hint on how to send an image.
- Request headers over `max_header_bytes` in all (default 8 KiB) or more than `max_headers` of them
  (default 100): 431, before the app sees the request (HeaderLimit). The HTTP protocol layer also
  drops anything whose request line and headers exceed that size plus 4 KiB, without buffering more.
- More than `max_in_flight` requests being answered at once: 503 with `Retry-After` (InFlightLimit);
  the probes and /metrics are never refused.
"""
from __future__ import annotations

import json
from typing import Optional

import torch

from ocula.data.images import open_image
from ocula.errors import BadImageError

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
FORM_FIELDS = ("file", "files")
SEND_HINT = "send multipart field 'file' (or several 'files'), or raw bytes with Content-Type: image/..."


class Rejected(Exception):
    """A request the server refuses: HTTP status and a one-line reason (`{"error": reason}`)."""

    def __init__(self, status: int, reason: str, headers: Optional[dict] = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


async def send_error(send, status: int, reason: str, headers: Optional[dict] = None) -> None:
    """Answer from inside an ASGI middleware, before the app has seen the request."""
    body = json.dumps({"error": reason}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def is_count(value: str) -> bool:
    """An ASCII decimal count: str.isdigit() alone also accepts '²' and '١٢', which int() refuses or reads."""
    value = value.strip()
    return value.isascii() and value.isdigit()


def header(scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class BodyLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`, by header first, then by counting."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes is over the limit of {self.max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared is not None and is_count(declared) and int(declared) > self.max_bytes:
            # Answered without reading the body; the server closes the connection afterwards.
            return await send_error(send, 413, self._too_large(int(declared)), {"connection": "close"})
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise Rejected(413, self._too_large(seen), {"connection": "close"})
            return message

        await self.app(scope, counted_receive, send)


class HeaderLimit:
    """ASGI middleware: 431 when the request's headers are too many or too large in all.

    Size counts every header as `name: value\\r\\n`, as it travelled. Default 8 KiB and 100 headers:
    Triton and TorchServe (Netty) refuse at 8 KiB; nginx's default buffer is 1 KiB, growing to 8 KiB."""

    def __init__(self, app, max_bytes: int = 8192, max_count: int = 100):
        self.app, self.max_bytes, self.max_count = app, max_bytes, max_count

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = scope.get("headers", ())
            if len(headers) > self.max_count:
                return await send_error(send, 431, f"{len(headers)} request headers; the limit is "
                                        f"{self.max_count}", {"connection": "close"})
            size = sum(len(k) + len(v) + 4 for k, v in headers)
            if size > self.max_bytes:
                return await send_error(send, 431, f"request headers of {size} bytes are over the limit of "
                                        f"{self.max_bytes} bytes", {"connection": "close"})
        await self.app(scope, receive, send)


class InFlightLimit:
    """ASGI middleware: 503 + Retry-After when `max_in_flight` requests are already being answered.

    Bounds everything a request holds while it waits (its body, its decoded images, its place in the
    decode pool), where the batcher's queue bounds only the images waiting for the model."""

    def __init__(self, app, max_in_flight: int, exempt: tuple = (), retry_after_s: int = 1):
        self.app, self.max_in_flight, self.exempt = app, max_in_flight, tuple(exempt)
        self.retry_after = str(retry_after_s)
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            return await send_error(send, 503, f"server busy: {self.in_flight} requests in flight; retry later",
                                    {"retry-after": self.retry_after})
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


# ---------------------------------------------------------------------------- request bodies
async def read_image_bodies(request, max_images: int) -> list[tuple[str, bytes]]:
    """The encoded images of a /predict request → [(label, bytes), ...], or Rejected."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _read_form(request, max_images)
    if ctype and not ctype.startswith(RAW_IMAGE_TYPES):
        raise Rejected(415, f"unsupported content type '{ctype}': {SEND_HINT}")
    body = await request.body()
    if not body:
        raise Rejected(422, f"empty body: {SEND_HINT}")
    return [("<body>", body)]


async def _read_form(request, max_images: int) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=max_images, max_fields=max_images + 16)
    except Exception as e:  # noqa: BLE001 - starlette 0.36 (the floor) lets python-multipart's parse errors out
        if type(e).__module__.split(".")[0] not in ("multipart", "python_multipart"):
            raise  # starlette's own HTTPException (400) and anything else keep their way out
        raise Rejected(400, f"malformed multipart body ({type(e).__name__}): {SEND_HINT}") from None
    try:
        found = [(field, value) for field in FORM_FIELDS for value in form.getlist(field)]
        if not found:
            raise Rejected(422, f"no image in the form: {SEND_HINT}")
        out = []
        for i, (field, value) in enumerate(found):
            if isinstance(value, str):
                raise Rejected(422, f"form field '{field}' holds text, not a file upload")
            out.append((value.filename or f"{field}[{i}]", await value.read()))
        return out
    finally:
        await form.close()


# ---------------------------------------------------------------------------- decoding
def decode(data: bytes, label: str, channels: int, max_pixels: int, draft_size: int):
    """Encoded bytes → PIL image, or Rejected(415 not an image | 422 truncated, empty, too big)."""
    try:
        return open_image(data, channels=channels, max_pixels=max_pixels, draft_size=draft_size)
    except BadImageError as e:
        if e.reason.startswith("too many pixels"):
            reason = f"{e.reason}; the limit is {max_pixels:,} pixels"
        else:
            reason = e.reason
        raise Rejected(415 if e.reason == "not an image" else 422, f"{label}: {reason}") from None


def images_to_batch(model, bodies: list[tuple[str, bytes]], max_pixels: int) -> torch.Tensor:
    """[(label, bytes)] → the model's input batch (N, C, H, W), built by the model's own transform."""
    contract = model.contract
    tensors = [model.preprocess(decode(data, label, contract.channels, max_pixels, contract.input_size))
               for label, data in bodies]
    return torch.stack(tensors)
