"""Property-based fuzzing (hypothesis) of everything that parses untrusted bytes (issue 14).

- the image decoder `open_image`: random bytes and mutations of real PNG/JPEG/GIF/BMP/WebP files →
  a PIL image in "L"/"RGB", or BadImageError; nothing else
- CSV manifests `read_manifest`: encodings, BOMs, quoting, separators, NULs, path traversal →
  a clean FolderScan or OculaError
- the weights readers `bundle.load_model` and `transfer.weights.read_weights`: byte mutations of a
  real bundle, biased towards its header → a model / tensors, or OculaError
- Open Inference Protocol v2 request parsing: random and near-valid JSON bodies and headers posted to
  /v2/models/NAME/infer → never a 5xx

Bounded for `make test` (OCULA_FUZZ_EXAMPLES, default 120 per property); `make fuzz` raises it.
The hypothesis database is off: nothing is written into the checkout.
"""
from __future__ import annotations

import io
import json
import os
import struct
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ocula.errors import BadImageError, OculaError  # noqa: E402

EXAMPLES = int(os.environ.get("OCULA_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------- mutation strategy
@st.composite
def mutated(draw, seeds: list[bytes], hot: int = 0):
    """One of `seeds` with a few byte flips, insertions, deletions, a truncation or a splice.
    `hot`: the first `hot` bytes (headers) get most of the flips."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "flip", "set", "insert", "delete", "truncate", "splice", "int"]))
        limit = min(len(data), hot) if hot and draw(st.booleans()) else len(data)
        i = draw(st.integers(0, max(0, limit - 1)))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("{"), ord('"'), ord("9")]))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[i:]
        elif kind == "splice":
            j = draw(st.integers(0, len(data)))
            data[i:i] = data[j:j + draw(st.integers(1, 64))]
        else:  # an interesting 32/64-bit integer (sizes, lengths, offsets)
            value = draw(st.sampled_from([0, 1, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 63 - 1, 2 ** 64 - 1, 100_000]))
            width = draw(st.sampled_from([4, 8]))
            if value < 2 ** (8 * width):
                data[i:i + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
    return bytes(data)


# ---------------------------------------------------------------------------- images
def _encoded(fmt: str, mode: str, size=(24, 16), **kw) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 4 if mode == "RGBA" else 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA" if mode == "RGBA" else "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


IMAGE_SEEDS = [_encoded("PNG", "RGB"), _encoded("PNG", "RGBA"), _encoded("PNG", "L"), _encoded("PNG", "P"),
               _encoded("JPEG", "RGB", quality=80), _encoded("JPEG", "L", progressive=True),
               _encoded("GIF", "P"), _encoded("BMP", "RGB"), _encoded("TIFF", "RGB"), _encoded("WEBP", "RGB")]


def _decode_only_bad_image_error(data: bytes, channels: int):
    from ocula.data.images import open_image

    try:
        img = open_image(data, channels=channels, max_pixels=4_000_000, draft_size=8)
    except BadImageError as e:
        assert e.reason and "\n" not in e.reason
        return
    assert img.mode == ("L" if channels == 1 else "RGB")
    assert img.size[0] * img.size[1] <= 4_000_000


@FUZZ
@given(data=st.binary(max_size=2048), channels=st.sampled_from([1, 3]))
def test_open_image_random_bytes(data, channels):
    _decode_only_bad_image_error(data, channels)


@FUZZ
@given(data=mutated(IMAGE_SEEDS, hot=64), channels=st.sampled_from([1, 3]))
def test_open_image_mutated_files(data, channels):
    _decode_only_bad_image_error(data, channels)


# ---------------------------------------------------------------------------- CSV manifests
CELL = st.one_of(
    st.sampled_from(["a.png", "sub/b.png", "../../etc/passwd", "/etc/passwd", "~/x.png", "", " ", "c.png",
                     "..", ".", "a.png\x00", "~\x01\x00grr", "caf\u00e9.png", "\u202etxt.png", "x" * 300, "dog", "cat",
                     "train", "val", "test", "VALID", "bogus", "\"q\"", "a,b", "a;b", "line\nbreak"]),
    st.text(max_size=12),
)
HEADERS = st.sampled_from(["path,label", "path,label,split", "file,class", "image,label,split", "Path ,LABEL",
                           "label,path", "path", "", "path;label", "path\tlabel", "\ufeffpath,label"])


@st.composite
def manifests(draw) -> bytes:
    sep = draw(st.sampled_from([",", ",", ";", "\t", "|"]))
    quote = draw(st.sampled_from([None, '"', "'"]))
    rows = [draw(HEADERS).replace(",", sep)]
    for _ in range(draw(st.integers(0, 6))):
        cells = draw(st.lists(CELL, min_size=0, max_size=4))
        if quote:
            cells = [quote + c.replace(quote, quote * 2) + quote for c in cells]
        rows.append(sep.join(cells))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        data = draw(mutated([data])) if data else data
    return data


@pytest.fixture(scope="module")
def manifest_dir():
    with tempfile.TemporaryDirectory(prefix="ocula-fuzz-manifest-") as d:
        for name in ("a.png", "c.png", "dog", "cat"):
            with open(os.path.join(d, name), "wb") as f:
                f.write(b"\x89PNG")
        os.mkdir(os.path.join(d, "sub"))
        with open(os.path.join(d, "sub", "b.png"), "wb") as f:
            f.write(b"")
        yield d


@FUZZ
@given(data=manifests())
def test_read_manifest_clean_result_or_ocula_error(data, manifest_dir):
    from ocula.data.manifest import read_manifest

    path = os.path.join(manifest_dir, "m.csv")
    with open(path, "wb") as f:
        f.write(data)
    try:
        scan = read_manifest(path)
    except OculaError as e:
        assert str(e)
        return
    for split, items in scan.splits.items():
        assert split in ("train", "val", "test")
        for p, label in items:
            assert os.path.isabs(p) and os.path.isfile(p) and label
    for p, reason in scan.skipped:
        assert isinstance(p, str) and reason
    assert scan.classes == sorted({label for items in scan.splits.values() for _, label in items})


# ---------------------------------------------------------------------------- weights and bundles
@pytest.fixture(scope="module")
def bundle_bytes(digits_run) -> tuple[bytes, int]:
    with open(os.path.join(digits_run, "weights", "best.safetensors"), "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return data, 8 + n


@pytest.fixture(scope="module")
def weights_dir():
    with tempfile.TemporaryDirectory(prefix="ocula-fuzz-weights-") as d:
        yield d


@FUZZ
@given(data=st.data())
def test_bundle_readers_only_ocula_error(data, bundle_bytes, weights_dir):
    from ocula import bundle
    from ocula.engine.weights import read_weights

    raw, header_end = bundle_bytes
    blob = data.draw(mutated([raw], hot=header_end), label="bundle")
    suffix = data.draw(st.sampled_from([".safetensors", ".safetensors", ".pt"]), label="suffix")
    path = os.path.join(weights_dir, "w" + suffix)
    with open(path, "wb") as f:
        f.write(blob)
    for read in (lambda p: bundle.load_model(p, device="cpu"), read_weights):
        try:
            read(path)
        except OculaError as e:
            assert str(e) and "\n" not in str(e)


# ---------------------------------------------------------------------------- Open Inference Protocol v2
@pytest.fixture(scope="module")
def oip_client(digits_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ocula.inference.predictor import Classifier
    from ocula.serve import create_app

    app = create_app(Classifier.load(digits_run, device="cpu"), "digits", max_wait_ms=0, max_body_bytes=2 ** 20)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from([10 ** 40, -(10 ** 400), 2 ** 63, 1e308, "FP32", "BYTES", "input", "logits", "probabilities"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_PNG = _encoded("PNG", "L", size=(8, 8))


@st.composite
def infer_bodies(draw):
    """Near-valid InferRequests with random parts swapped for hostile ones."""
    import base64

    datatype = draw(st.sampled_from(["FP32", "BYTES", "INT64", "FP16", "", None, 3]))
    shape = draw(st.one_of(st.just([1, 1, 8, 8]), st.just([1]), st.just([2]),
                           st.lists(st.integers(-2, 70) | st.sampled_from([2 ** 31, 10 ** 30]), max_size=5),
                           JSON))
    if datatype == "BYTES":
        good = [base64.b64encode(_PNG).decode()]
        data = draw(st.one_of(st.just(good), st.just(good * 2), st.lists(st.text(max_size=12), max_size=3),
                              st.just([base64.b64encode(b"junk").decode()]), JSON))
    else:
        data = draw(st.one_of(st.just([0.5] * 64), st.lists(st.floats(width=32) | st.integers(), max_size=70),
                              st.just([[0.1] * 8] * 8), st.just([10 ** 40] * 64), st.just([10 ** 400] * 64),
                              JSON))
    inp = {"name": draw(st.sampled_from(["input", "", "x"])), "shape": shape, "datatype": datatype, "data": data}
    if draw(st.booleans()):
        inp["parameters"] = draw(st.one_of(st.just({"binary_data_size": 4}), st.dictionaries(
            st.sampled_from(["binary_data_size", "binary_data", "classification"]), JSON, max_size=2)))
    body = {"inputs": draw(st.one_of(st.just([inp]), st.just([inp, inp]), st.just([]), JSON))}
    if draw(st.booleans()):
        body["outputs"] = draw(st.one_of(
            st.just([{"name": "probabilities", "parameters": {"classification": 3}}]),
            st.lists(st.fixed_dictionaries({"name": st.sampled_from(["logits", "probabilities", "nope"]),
                                            "parameters": st.dictionaries(st.sampled_from(
                                                ["classification", "binary_data"]), JSON, max_size=2)}),
                     max_size=2), JSON))
    if draw(st.booleans()):
        body["parameters"] = draw(st.one_of(st.just({"binary_data_output": True}), JSON))
    if draw(st.booleans()):
        body["id"] = draw(JSON)
    return body


HEADER_VALUES = st.sampled_from(["0", "5", "-1", "²", "١٢", " 7 ", "1e3", "99999999999999999999", "abc", ""]).map(
    lambda v: v.encode("latin-1") if all(ord(c) < 256 for c in v) else v.encode())  # raw header bytes


@FUZZ
@given(body=st.one_of(infer_bodies(), JSON), raw=st.binary(max_size=64), how=st.sampled_from(
    ["json", "json", "json+binary", "bytes", "header-only"]), hlen=HEADER_VALUES,
    model=st.sampled_from(["digits", "digits", "other", "digits/versions/1", "digits/versions/2"]))
def test_oip_infer_never_5xx(body, raw, how, hlen, model, oip_client):
    text = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if how == "json+binary":
        content = text + raw
        headers["inference-header-content-length"] = str(len(text)).encode()
    elif how == "bytes":
        content = raw
    elif how == "header-only":
        content = text + raw
        headers["inference-header-content-length"] = hlen
    else:
        content = text
    r = oip_client.post(f"/v2/models/{model}/infer", content=content, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text[:300], body)
    if r.status_code >= 400:
        assert "\n" not in r.json()["error"]


@FUZZ
@given(length=HEADER_VALUES, ctype=st.sampled_from(["image/png", "multipart/form-data", "multipart/form-data; "
                                                     "boundary=x", "text/plain", "", "image/", "application/json"]),
       body=st.binary(max_size=256), topk=st.sampled_from(["1", "0", "-1", "1e9", "x", "3"]))
def test_predict_odd_headers_never_5xx(length, ctype, body, topk, oip_client):
    r = oip_client.post(f"/predict?topk={topk}", content=body, headers={"content-type": ctype,
                                                                        "content-length": length})
    assert r.status_code < 500, (r.status_code, r.text[:300])
