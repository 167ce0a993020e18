"""`ocula serve`: /predict, the Open Inference Protocol v2 (with the real tritonclient), refusals,
micro-batching, API keys, timeouts, graceful shutdown, metrics. Loopback only, bounded."""
from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient  # noqa: E402

from ocula.serve import create_app  # noqa: E402
from ocula.serve.batching import BatcherBusy, BatcherClosed, MicroBatcher  # noqa: E402
from ocula.serve.runner import BackgroundServer  # noqa: E402

BODY_LIMIT = 256 * 1024


# ---------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def clf(digits_run):
    from ocula.inference.predictor import Classifier

    return Classifier.load(digits_run, device="cpu")


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> list[str]:
    from ocula.data.builtin import export_builtin

    root = tmp_path_factory.mktemp("digit_pngs")
    export_builtin("digits", root, split="test", limit=24)
    return sorted(str(p) for p in root.rglob("*.png"))


@pytest.fixture(scope="module")
def client(clf):
    app = create_app(clf, "digits", max_body_bytes=BODY_LIMIT, max_wait_ms=1)
    with TestClient(app) as c:
        yield c


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def png_claiming(width: int, height: int) -> bytes:
    """A real PNG whose header claims width×height: a decompression bomb as far as the header goes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR payload starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over type + payload
    return bytes(data)


class SlowModel:
    """The Classifier surface with a model call that takes `delay` seconds."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay, self.batch_sizes, self.finished = inner, delay, [], 0
        self.classes, self.contract, self.meta, self.task = inner.classes, inner.contract, inner.meta, inner.task
        self.min_confidence = inner.min_confidence

    def preprocess(self, obj):
        return self.inner.preprocess(obj)

    def logits(self, x):
        self.batch_sizes.append(len(x))
        time.sleep(self.delay)
        out = self.inner.logits(x)
        self.finished += 1
        return out


# ---------------------------------------------------------------------------- /predict
def test_predictions_equal_classifier_predict(client, clf, digit_pngs):
    paths = digit_pngs[:6]
    want = clf.predict(paths, topk=3)
    r = client.post("/predict?topk=3", files=[("files", (p.rsplit("/", 1)[-1], read(p), "image/png"))
                                              for p in paths])
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [g["source"] for g in got] == [p.rsplit("/", 1)[-1] for p in paths]
    for g, w in zip(got, want):
        assert g["label"] == w.label and len(g["topk"]) == 3
        assert [t["label"] for t in g["topk"]] == [lab for lab, _ in w.topk]
        assert np.allclose([t["prob"] for t in g["topk"]], [p for _, p in w.topk], atol=1e-5)

    one = client.post("/predict", files={"file": read(paths[0])}).json()["predictions"]
    raw = client.post("/predict", content=read(paths[0]), headers={"content-type": "image/png"}).json()
    assert len(one) == 1 and one[0]["label"] == raw["predictions"][0]["label"] == want[0].label
    assert len(one[0]["topk"]) == 5  # default top-5
    assert raw["model"] == "digits"


def test_malformed_requests_are_4xx_and_server_stays_healthy(client, digit_pngs):
    good = read(digit_pngs[0])
    bomb = png_claiming(40_000, 40_000)
    png = {"content-type": "image/png"}
    bad_requests = [
        lambda: client.post("/predict", content=good[: len(good) // 2], headers=png),  # truncated
        lambda: client.post("/predict", content=good[:8], headers=png),  # only the signature
        lambda: client.post("/predict", content=b"hello, world", headers=png),  # not an image
        lambda: client.post("/predict", content=good, headers={"content-type": "text/plain"}),
        lambda: client.post("/predict", content=b"\0" * (BODY_LIMIT + 1), headers=png),  # oversize
        lambda: client.post("/predict", content=bomb, headers=png),
        lambda: client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")}),
        lambda: client.post("/predict", content=b"", headers=png),  # empty
        lambda: client.post("/predict", files={"file": ("empty.png", b"", "image/png")}),
        lambda: client.post("/predict", files={"photo": ("x.png", good, "image/png")}),  # wrong field
        lambda: client.post("/predict?topk=0", content=good, headers=png),
        lambda: client.post("/predict?topk=many", content=good, headers=png),
        lambda: client.post("/v2/models/digits/infer", content=b"{not json"),
        lambda: client.post("/v2/models/digits/infer", json={"inputs": [{"name": "input", "datatype": "FP32",
                                                                          "shape": [1, 3, 8, 8], "data": [0]}]}),
        lambda: client.post("/v2/models/nope/infer", json={"inputs": []}),
        lambda: client.post("/v2/models/digits/infer", content=b'{"inputs": []}',
                            headers={"inference-header-content-length": "999"}),
    ]
    statuses = [bad_requests[i % len(bad_requests)]() for i in range(100)]
    assert all(400 <= r.status_code < 500 for r in statuses), [(r.status_code, r.text) for r in statuses]
    assert all(r.json()["error"] for r in statuses)  # every refusal says why
    codes = {r.status_code for r in statuses}
    assert {413, 415, 422, 400, 404} <= codes
    assert "too many pixels" in statuses[5].json()["error"]
    # still healthy, still right
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/predict", content=good, headers=png).status_code == 200
    text = client.get("/metrics").text
    refused = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("ocula_requests_total") and 'status="4' in line)
    assert refused >= 100


def test_pixel_bombs_are_refused_from_the_header(client):
    # 64 Mpx is over the server's 40 Mpx limit but under Pillow's own bomb threshold: ocula's check refuses it
    r = client.post("/predict", content=png_claiming(8000, 8000), headers={"content-type": "image/png"})
    assert r.status_code == 422
    assert r.json()["error"] == "<body>: too many pixels (8000×8000); the limit is 40,000,000 pixels"


def test_body_limit_is_enforced_while_reading(client):
    def chunks():  # no Content-Length: the limit must hold as the body streams in
        for _ in range(8):
            yield b"\0" * (64 * 1024)

    r = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_api_key(clf, digit_pngs):
    app = create_app(clf, "digits", api_key="s3cret")
    png = read(digit_pngs[0])
    with TestClient(app) as c:
        assert c.post("/predict", content=png, headers={"content-type": "image/png"}).status_code == 401
        wrong = c.post("/predict", content=png, headers={"content-type": "image/png", "x-api-key": "nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        assert c.get("/metrics").status_code == 401
        assert c.get("/v2/models/digits").status_code == 401
        ok1 = c.post("/predict", content=png, headers={"content-type": "image/png", "x-api-key": "s3cret"})
        ok2 = c.post("/predict", content=png, headers={"content-type": "image/png",
                                                       "authorization": "Bearer s3cret"})
        assert ok1.status_code == ok2.status_code == 200
        # probes and the page stay open; the page knows it must ask for the key
        assert c.get("/v2/health/live").status_code == c.get("/v2/health/ready").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and '"key_required": true' in page.text


def test_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="file"' in r.text and '"name": "digits"' in r.text and '"key_required": false' in r.text


def test_timeout_gives_504_and_server_recovers(clf, digit_pngs):
    slow = SlowModel(clf, delay=0.6)
    with TestClient(create_app(slow, "digits", timeout_s=0.2)) as c:
        r = c.post("/predict", content=read(digit_pngs[0]), headers={"content-type": "image/png"})
        assert r.status_code == 504 and "0.2 s" in r.json()["error"]
        slow.delay = 0.0
        deadline = time.monotonic() + 10
        while not slow.finished and time.monotonic() < deadline:  # the abandoned call ends in its thread
            time.sleep(0.02)
        ok = c.post("/predict", content=read(digit_pngs[0]), headers={"content-type": "image/png"})
        assert ok.status_code == 200


def test_v2_infer_in_plain_json(client, clf, digit_pngs):
    import base64

    x = clf.preprocess(digit_pngs[0]).unsqueeze(0)  # (1, 1, 8, 8)
    r = client.post("/v2/models/digits/infer", json={
        "id": "42", "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                "data": x.flatten().tolist()}],
        "outputs": [{"name": "logits"}]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"] == "42" and body["model_name"] == "digits"
    (out,) = body["outputs"]
    assert out["shape"] == [1, 10] and np.allclose(out["data"], clf.logits(x).flatten().numpy(), atol=1e-5)

    encoded = base64.b64encode(read(digit_pngs[1])).decode()
    r = client.post("/v2/models/digits/versions/1/infer", json={
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [encoded]}]})
    probs = {o["name"]: o for o in r.json()["outputs"]}["probabilities"]["data"]
    assert np.argmax(probs) == clf.classes.index(clf.predict(digit_pngs[1]).label)
    bad = client.post("/v2/models/digits/infer", json={
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["hello, world"]}]})
    assert bad.status_code == 400 and "base64" in bad.json()["error"]


# ---------------------------------------------------------------------------- the batcher itself
def test_batcher_groups_concurrent_requests_and_drains_on_close():
    sizes = []

    def run_batch(x):  # (B, 1, 1, 1) → (B, 2): each row must come back to its own caller
        sizes.append(len(x))
        time.sleep(0.01)
        flat = x.flatten(1)
        return torch.cat([flat, 2 * flat], 1)

    async def scenario():
        b = MicroBatcher(run_batch, max_batch=8, max_wait_ms=50)
        await b.start()
        outs = await asyncio.gather(*(b.infer(torch.full((1, 1, 1, 1), float(i))) for i in range(20)))
        for i, out in enumerate(outs):
            assert out.tolist() == [[i, 2 * i]]
        # a caller that gave up is dropped before the model sees its image
        before = sum(sizes)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.infer(torch.zeros(3, 1, 1, 1)), 0.001)
        # close() finishes work already queued, then refuses new work
        pending = asyncio.ensure_future(b.infer(torch.ones(2, 1, 1, 1)))
        await asyncio.sleep(0)
        await b.close()
        assert (await asyncio.wait_for(pending, 1)).shape == (2, 2)
        with pytest.raises(BatcherClosed):
            await b.infer(torch.ones(1, 1, 1, 1))
        return before

    before = asyncio.run(scenario())
    assert max(sizes) > 1 and max(sizes) <= 8  # grouped, never above max_batch
    assert sum(sizes) == before + 2  # the 3 abandoned images never ran; the 2 pending ones did


def test_batcher_refuses_when_the_queue_is_full():
    async def scenario():
        b = MicroBatcher(lambda x: x.flatten(1), max_batch=4, max_wait_ms=100, max_queue=4)
        await b.start()
        first = asyncio.ensure_future(b.infer(torch.zeros(3, 1, 1, 1)))
        await asyncio.sleep(0)
        with pytest.raises(BatcherBusy):
            await b.infer(torch.zeros(2, 1, 1, 1))
        await b.close()
        return await asyncio.wait_for(first, 1)

    assert asyncio.run(scenario()).shape == (3, 1)


# ---------------------------------------------------------------------------- a real server on loopback
@pytest.fixture(scope="module")
def live_server(clf):
    app = create_app(clf, "digits", max_wait_ms=40, max_batch=16)
    with BackgroundServer(app) as server:
        yield server


def test_tritonclient_round_trip(live_server, clf, digit_pngs):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    c = httpclient.InferenceServerClient(live_server.url.removeprefix("http://"))
    try:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("digits")
        meta = c.get_model_metadata("digits")
        assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8] and meta["outputs"][0]["shape"] == [-1, 10]

        x = torch.stack([clf.preprocess(p) for p in digit_pngs[:5]])  # (5, 1, 8, 8)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x.numpy(), binary_data=True)
        outs = [httpclient.InferRequestedOutput("logits", binary_data=True),
                httpclient.InferRequestedOutput("probabilities", binary_data=False),
                httpclient.InferRequestedOutput("probabilities", class_count=2)]
        res = c.infer("digits", [inp], outputs=outs)
        want = clf.logits(x)
        assert np.allclose(res.as_numpy("logits"), want.numpy(), atol=1e-5)
        assert np.allclose(res.as_numpy("probabilities"), clf.task.probabilities(want).numpy(), atol=1e-6)

        # BYTES input: encoded image files, decoded and preprocessed by the server
        blobs = np.array([read(p) for p in digit_pngs[:5]], dtype=object)
        enc = httpclient.InferInput("image", [5], "BYTES")
        enc.set_data_from_numpy(blobs, binary_data=True)
        res2 = c.infer("digits", [enc], outputs=[httpclient.InferRequestedOutput("probabilities",
                                                                                   class_count=1)])
        labels = [s.decode().split(":")[2] for s in res2.as_numpy("probabilities").reshape(-1)]
        assert labels == [p.label for p in clf.predict(digit_pngs[:5])]

        with pytest.raises(InferenceServerException, match="unknown model"):
            c.infer("nope", [inp])
        bad = httpclient.InferInput("input", [1, 3, 8, 8], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
        with pytest.raises(InferenceServerException, match=r"\[B, 1, 8, 8\]"):
            c.infer("digits", [bad])
    finally:
        c.close()


def test_concurrent_requests_are_micro_batched(live_server, digit_pngs):
    import httpx

    async def send_all():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
            async def one(p):
                r = await http.post("/predict", content=read(p), headers={"content-type": "image/png"})
                return r.status_code

            return await asyncio.gather(*(one(p) for p in digit_pngs[:16]))

    assert asyncio.run(send_all()) == [200] * 16
    metrics = httpx.get(live_server.url + "/metrics").text
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                  if line.startswith("ocula_batch_size_") or line.startswith("ocula_queue_depth"))
    batches, singles = float(values["ocula_batch_size_count"]), float(values['ocula_batch_size_bucket{le="1.0"}'])
    assert batches > singles  # at least one model call took more than one image
    assert float(values["ocula_queue_depth"]) == 0


def test_graceful_shutdown_finishes_requests_in_flight(clf, digit_pngs):
    import httpx

    slow = SlowModel(clf, delay=0.8)
    server = BackgroundServer(create_app(slow, "digits")).start()
    answers = []
    sender = threading.Thread(target=lambda: answers.append(httpx.post(
        server.url + "/predict", content=read(digit_pngs[0]), headers={"content-type": "image/png"},
        timeout=30)))
    sender.start()
    deadline = time.monotonic() + 10
    while not slow.batch_sizes and time.monotonic() < deadline:  # wait until the model has the request
        time.sleep(0.01)
    server.stop()
    sender.join(10)
    assert not server.thread.is_alive()
    assert answers and answers[0].status_code == 200 and answers[0].json()["predictions"][0]["label"]


# ---------------------------------------------------------------------------- CLI and ONNX
def test_cli_refuses_a_missing_key_and_a_missing_run(digits_run, capsys, monkeypatch):
    from ocula.cli import main

    monkeypatch.delenv("OCULA_TEST_KEY", raising=False)
    assert main(["serve", digits_run, "--api-key-env", "OCULA_TEST_KEY"]) == 2
    assert "OCULA_TEST_KEY" in capsys.readouterr().err
    assert main(["serve", str(digits_run) + "-missing"]) == 2
    assert "no such run" in capsys.readouterr().err


def test_cli_builds_a_loopback_server(digits_run, capsys, monkeypatch):
    import uvicorn

    from ocula.cli import main

    started = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: started.append(self.config))
    monkeypatch.setenv("OCULA_TEST_KEY", "k")
    assert main(["serve", digits_run, "--port", "8123", "--api-key-env", "OCULA_TEST_KEY",
                 "--max-batch", "8"]) == 0
    (config,) = started
    assert config.host == "127.0.0.1" and config.port == 8123
    service = config.app.state.service
    assert service.name == "digits" and service.batcher.max_batch == 8
    assert "serving 'digits'" in capsys.readouterr().out


def test_onnx_backend_serves_the_same_predictions(digits_run, clf, digit_pngs, tmp_path):
    try:
        from ocula.export.onnx import export_onnx
        from ocula.export.runtime import OnnxClassifier
    except ImportError:
        pytest.skip("ocula.export.runtime is not available")
    from ocula import bundle
    from ocula.serve.runner import load_for_serving

    model, meta = bundle.load_model(digits_run)
    export_onnx(model, meta, tmp_path / "model.onnx")
    onnx_model, platform = load_for_serving(tmp_path, onnx=True)
    assert isinstance(onnx_model, OnnxClassifier) and platform == "onnxruntime_onnx"
    with TestClient(create_app(onnx_model, "digits", platform=platform)) as c:
        r = c.post("/predict", files=[("files", read(p)) for p in digit_pngs[:6]])
        assert r.status_code == 200, r.text
        assert [p["label"] for p in r.json()["predictions"]] == [p.label for p in clf.predict(digit_pngs[:6])]
        assert c.get("/v2/models/digits").json()["platform"] == "onnxruntime_onnx"
