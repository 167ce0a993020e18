"""Open Inference Protocol v2 (KServe / Triton), enough for `tritonclient.http` to work unchanged.

    GET  /v2                                  server metadata
    GET  /v2/health/live, /v2/health/ready    probes (no API key needed)
    GET  /v2/models/{name}[/versions/1]       model metadata: input FP32 [-1, C, H, W], outputs [-1, K]
    GET  /v2/models/{name}[/versions/1]/ready
    POST /v2/models/{name}[/versions/1]/infer

One input per request, either FP32 [B, C, H, W] already preprocessed to the model's contract, or BYTES
[B] of encoded image files (binary: 4-byte little-endian length + bytes per element; JSON: base64
strings) that the server decodes and preprocesses. Outputs are the task's (`Task.serve_outputs`): a classifier's
`logits` and `probabilities`, FP32 [B, K] (a multilabel model adds `labels`, BOOL [B, K]: each probability at or
above its class's threshold); a detector's `detections`, FP32 [B, D, 6] (x1, y1, x2, y2 normalised to [0, 1],
score, class; padding rows score 0, class -1). Triton's classification extension (`class_count`, on [B, K]
outputs) answers "prob:index:label" strings. Tensors may
travel as JSON or in Triton's binary extension (`Inference-Header-Content-Length`).
Errors are `{"error": "..."}` with a 4xx status, which tritonclient raises as InferenceServerException.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Optional

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ocula.serve.limits import Rejected, is_count
from ocula.serve.schemas import InferRequest, ModelMetadata, ServerMetadata
from ocula.version import __version__

OUTPUTS = ("logits", "probabilities")  # returned when a request names none
ON_REQUEST = ("abstained",)  # BOOL [B]: top probability below the server's --min-confidence
VERSION = "1"


def make_router(service):
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

    def check(name: str, version: Optional[str]) -> None:
        if name != service.name:
            raise Rejected(404, f"unknown model '{name}'; this server serves '{service.name}'")
        if version not in (None, VERSION):
            raise Rejected(404, f"model '{name}' has no version '{version}'; the only version is {VERSION}")

    @router.get("", response_model=ServerMetadata)
    async def server_metadata():
        return {"name": "ocula", "version": __version__,
                "extensions": ["binary_tensor_data", "classification"]}

    @router.get("/health/live")
    async def live():
        return {"live": True}

    @router.get("/health/ready")
    async def ready():
        return JSONResponse({"ready": service.ready}, 200 if service.ready else 503)

    async def model_metadata(name: str, version: Optional[str] = None):
        check(name, version)
        k = len(service.model.classes)
        shapes = service.model.task.serve_outputs(k)
        return {"name": service.name, "versions": [VERSION], "platform": service.platform,
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *service.input_shape]}],
                "outputs": [{"name": out, "datatype": "FP32", "shape": [-1, *shape]} for out, shape in shapes.items()]
                + [{"name": name, "datatype": "BOOL", "shape": [-1, k]} for name in service.model.task.label_outputs]
                + [{"name": "abstained", "datatype": "BOOL", "shape": [-1]}],
                "parameters": {"classes": list(service.model.classes),
                               "min_confidence": service.model.min_confidence,
                               "calibration": service.model.meta.get("calibration"),
                               "task": service.model.task.name, "thresholds": service.model.meta.get("thresholds"),
                               "contract": service.model.contract.to_dict(),
                               "bytes_input": "a BYTES input [B] of encoded images is accepted too"}}

    async def model_ready(name: str, version: Optional[str] = None):
        check(name, version)
        return JSONResponse({"name": name, "ready": service.ready}, 200 if service.ready else 503)

    async def infer(name: str, request: Request, version: Optional[str] = None):
        check(name, version)
        if (request.headers.get("content-encoding") or "identity").lower() != "identity":
            raise Rejected(415, "compressed requests are not supported; send the body uncompressed")
        body = await service.read(request.body())
        req, binary = split_body(body, request.headers.get("inference-header-content-length"))
        wanted = requested_outputs(req, len(service.model.classes), outputs_of(service.model),
                                   classifiable(service.model))
        x = read_input(req, binary, service)
        logits = await service.classify(_infer(service, x))
        return encode_response(service, req, wanted, logits)

    for prefix in ("/models/{name}", "/models/{name}/versions/{version}"):
        router.add_api_route(prefix, model_metadata, methods=["GET"], response_model=ModelMetadata)
        router.add_api_route(prefix + "/ready", model_ready, methods=["GET"])
        router.add_api_route(prefix + "/infer", infer, methods=["POST"], openapi_extra=infer_body())
    return router


def infer_body() -> dict:
    """The InferRequest JSON schema as an OpenAPI requestBody (the body is parsed by hand: binary tensors
    may follow the JSON header), with the pydantic $defs inlined so that the schema stands alone."""
    schema = InferRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline(schema)},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


async def _infer(service, x):
    if isinstance(x, list):  # encoded images
        x = await service.decode(x)
    return await service.batcher.infer(x)


# ---------------------------------------------------------------------------- request
def split_body(body: bytes, header_length: Optional[str]):
    """Body → (InferRequest, the binary tensor data that follows the JSON header)."""
    from pydantic import ValidationError

    n = len(body)
    if header_length is not None:
        if not is_count(header_length) or int(header_length) > len(body):
            raise Rejected(400, f"Inference-Header-Content-Length {header_length!r} does not fit a "
                                f"{len(body)}-byte body")
        n = int(header_length)
    if n == 0:
        raise Rejected(400, "empty inference request")
    try:
        return InferRequest.model_validate_json(body[:n]), body[n:]
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise Rejected(400, f"bad inference request: {where}: {first['msg']}") from None


def outputs_of(model) -> tuple:
    """The outputs a request without `outputs` gets: the task's (a classifier's logits and probabilities, a
    detector's detections) + its label outputs (a multilabel model's `labels`)."""
    return tuple(model.task.serve_outputs(len(model.classes))) + tuple(model.task.label_outputs)


def classifiable(model) -> tuple:
    """The outputs with one value per class, [B, K]: Triton's classification extension applies to them."""
    k = len(model.classes)
    return tuple(name for name, shape in model.task.serve_outputs(k).items() if shape == [k])


def requested_outputs(req, num_classes: int, defaults: tuple = OUTPUTS, per_class: tuple = OUTPUTS) -> list:
    """[(name, binary: bool, class_count or 0)], checked before the model runs; `per_class`: the outputs that
    take a class_count."""
    default_binary = bool(req.parameters.get("binary_data_output", False))
    if not req.outputs:
        return [(name, default_binary, 0) for name in defaults]
    wanted = []
    for out in req.outputs:
        if out.name not in defaults + ON_REQUEST:
            raise Rejected(400, f"unknown output '{out.name}'; this model has {', '.join(defaults + ON_REQUEST)}")
        count = out.parameters.get("classification", 0)
        if not isinstance(count, int) or count < 0:
            raise Rejected(400, f"output '{out.name}': classification must be a count of classes")
        if count and out.name not in per_class:
            raise Rejected(400, f"output '{out.name}' has no value per class: classification applies to "
                                f"{', '.join(per_class) or 'no output of this model'}")
        wanted.append((out.name, bool(out.parameters.get("binary_data", default_binary)),
                       min(count, num_classes)))
    return wanted


def read_input(req, binary: bytes, service):
    """The request's one input → a float tensor (B, C, H, W) or a list of (label, encoded image)."""
    if len(req.inputs) != 1:
        raise Rejected(400, f"expected exactly one input, got {len(req.inputs)}")
    inp = req.inputs[0]
    size = inp.parameters.get("binary_data_size")
    raw = None
    if size is not None:
        if not isinstance(size, int) or not 0 <= size <= len(binary):
            raise Rejected(400, f"input '{inp.name}': binary_data_size {size!r} does not fit the "
                                f"{len(binary)} bytes after the header")
        raw = binary[:size]
    elif inp.data is None:
        raise Rejected(400, f"input '{inp.name}' has neither 'data' nor a binary_data_size parameter")
    if any(d < 0 for d in inp.shape) or not inp.shape:
        raise Rejected(400, f"input '{inp.name}': invalid shape {inp.shape}")
    if inp.shape[0] > service.max_images:
        raise Rejected(413, f"batch of {inp.shape[0]} in one request; the limit is {service.max_images}")
    if inp.datatype == "FP32":
        return _fp32(inp, raw, service.input_shape)
    if inp.datatype == "BYTES":
        return _encoded_images(inp, raw)
    raise Rejected(400, f"input '{inp.name}' is {inp.datatype}: expected FP32 (preprocessed "
                        f"[B, {', '.join(map(str, service.input_shape))}]) or BYTES (encoded images)")


def _fp32(inp, raw: Optional[bytes], chw: list[int]) -> torch.Tensor:
    if inp.shape[1:] != chw or inp.shape[0] < 1:
        raise Rejected(400, f"input '{inp.name}' has shape {inp.shape}; the model takes [B, "
                            f"{', '.join(map(str, chw))}]")
    count = math.prod(inp.shape)
    if raw is not None:
        if len(raw) != 4 * count:
            raise Rejected(400, f"input '{inp.name}': {len(raw)} bytes of FP32 data for shape {inp.shape}")
        arr = np.frombuffer(raw, dtype="<f4")
    else:
        try:
            arr = np.asarray(inp.data, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
            raise Rejected(400, f"input '{inp.name}': data is not a list of numbers") from None
        if arr.size != count:
            raise Rejected(400, f"input '{inp.name}': {arr.size} values for shape {inp.shape}")
    x = torch.from_numpy(arr.reshape(inp.shape).copy())
    if not torch.isfinite(x).all():
        raise Rejected(400, f"input '{inp.name}' holds NaN or infinite values")
    return x


def _encoded_images(inp, raw: Optional[bytes]) -> list[tuple[str, bytes]]:
    count = math.prod(inp.shape)
    if raw is not None:
        items = _unpack_bytes(raw, inp.name)
    else:
        try:
            items = [base64.b64decode(s, validate=True) for s in _flatten(inp.data)]
        except (TypeError, ValueError, binascii.Error):
            raise Rejected(400, f"input '{inp.name}': BYTES data in JSON must be base64 strings") from None
    if len(items) != count or count < 1:
        raise Rejected(400, f"input '{inp.name}': {len(items)} elements for shape {inp.shape}")
    return [(f"{inp.name}[{i}]", data) for i, data in enumerate(items)]


def _unpack_bytes(raw: bytes, name: str) -> list[bytes]:
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise Rejected(400, f"input '{name}': truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > len(raw):
            raise Rejected(400, f"input '{name}': BYTES element of {n} bytes runs past the data")
        items.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    return items


def _flatten(data):
    for v in data:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


# ---------------------------------------------------------------------------- response
def encode_response(service, req, wanted: list, logits: torch.Tensor):
    task, classes = service.model.task, service.model.classes
    probs = task.probabilities(logits)
    entries, blobs = [], []
    for name, binary, class_count in wanted:
        if name == "abstained":
            datatype, arr = "BOOL", abstained(task, probs, classes, service.model.min_confidence)
        elif name in task.label_outputs:  # multilabel: the thresholded set as multi-hot
            datatype, arr = "BOOL", task.label_output(name, probs).numpy()
        elif class_count:
            datatype, arr = "BYTES", _classification(task.serve_output(name, logits), class_count, classes)
        else:
            datatype, arr = "FP32", task.serve_output(name, logits).numpy().astype("<f4")
        entry = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            blob = _pack(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        entries.append(entry)
    head = {"model_name": service.name, "model_version": VERSION, "outputs": entries}
    if req.id is not None:
        head["id"] = req.id
    text = json.dumps(head).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(text + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(text))})


def abstained(task, probs: torch.Tensor, classes: list[str], floor) -> np.ndarray:
    """BOOL [B]: the best answer (top probability; a detector's best box score) is below `floor`."""
    if floor is None:
        return np.zeros(len(probs), bool)
    tops = [task.top(p, classes, 1) for p in probs]
    return np.array([not top or top[0][1] < floor for top in tops], dtype=bool)


def _classification(values: torch.Tensor, k: int, classes: list[str]) -> np.ndarray:
    """Triton's classification extension: (B, k) strings "value:index:label", best first."""
    top, idx = values.topk(k, dim=1)
    rows = [[f"{v:f}:{i}:{classes[i]}" for v, i in zip(tv.tolist(), ti.tolist())] for tv, ti in zip(top, idx)]
    return np.array(rows, dtype=object)


def _pack(arr: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return arr.tobytes()
    parts = [s.encode() for s in arr.reshape(-1)]
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)
