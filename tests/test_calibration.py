"""Calibration (issue 12): the temperature fit, its measures, and calibrated probabilities at every door:
Python, the CLI, ONNX Runtime, /predict and OIP v2; abstention; test-time augmentation."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ocula.evaluation.calibration import (adaptive_ece, brier, classwise_ece, fit_temperature, measures,
                                          risk_coverage, softmax)


def _sampled(n: int, temperature: float, k: int = 5, seed: int = 0):
    """Logits and labels drawn from softmax(logits / temperature): T is the right answer."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, k))
    p = softmax(logits, temperature)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_fit_recovers_a_known_temperature(true_t):
    logits, labels = _sampled(4000, true_t)
    fit = fit_temperature(logits, labels)
    assert fit["fitted"] and fit["converged"] and abs(fit["temperature"] - true_t) / true_t < 0.1
    assert fit["nll_after"] < fit["nll_before"]


def test_fit_refuses_too_few_samples_and_a_split_without_errors():
    logits, labels = _sampled(10, 2.0)
    assert not fit_temperature(logits, labels)["fitted"]
    logits, _ = _sampled(300, 1.0)
    no_errors = fit_temperature(logits, logits.argmax(1))
    assert not no_errors["fitted"] and "no interior optimum" in no_errors["reason"]
    assert no_errors["temperature"] == 1.0


def test_measures_agree_with_their_definitions():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    assert brier(labels, probs) == pytest.approx(np.mean([0.02, 0.08, 0.72, 0.5]))
    assert 0 <= adaptive_ece(labels, probs) <= 1 and 0 <= classwise_ece(labels, probs) <= 1
    logits, y = _sampled(6000, 1.0, seed=1)  # calibrated by construction
    m = measures(y, softmax(logits))
    assert m["ece"] < 0.03 and m["adaptive_ece"] < 0.03
    rc = risk_coverage(y, softmax(logits))
    assert rc["accuracy_at_80"] >= rc["accuracy_at_90"] and rc["curve"][-1]["coverage"] == 1.0


@pytest.fixture(scope="module")
def calibrated_run(digits_run, tmp_path_factory) -> str:
    """digits_run with a known temperature in its bundle (as `ocula train` or `ocula calibrate` records it)."""
    from ocula import bundle

    run = tmp_path_factory.mktemp("cal") / "digits"
    shutil.copytree(digits_run, run)
    bundle.update_meta(run / "weights" / "best.safetensors",
                       {"calibration": {"method": "temperature", "temperature": 1.7}})
    return str(run)


def test_training_records_its_calibration(digits_run):
    cal = json.loads((Path(digits_run) / "calibration.json").read_text())
    meta = json.loads((Path(digits_run) / "model.json").read_text())
    assert cal["split"] == "val" and "reason" in cal and meta["calibration"]["method"] in ("temperature", "none")
    if cal["fitted"]:
        assert meta["calibration"]["temperature"] == pytest.approx(cal["temperature"])
        assert cal["after"]["nll"] <= cal["before"]["nll"] + 1e-9


def _digit_images(n=8):
    from sklearn.datasets import load_digits

    d = load_digits()
    return [(d.images[i] * 255 / 16).astype(np.uint8) for i in range(n)]


def test_predictor_applies_the_temperature(calibrated_run):
    import ocula

    clf = ocula.load(calibrated_run, device="cpu")
    x = torch.stack([clf.preprocess(img) for img in _digit_images()])
    assert torch.allclose(clf.probabilities(x), (clf.logits(x) / 1.7).softmax(1), atol=1e-6)
    p = clf.predict(_digit_images()[0], topk=3)
    assert p.prob == pytest.approx(float(clf.probabilities(x[:1]).max()), abs=1e-6)


def test_onnx_serve_and_oip_return_the_same_calibrated_probabilities(calibrated_run):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    import ocula
    from ocula.export import OnnxClassifier, export_model
    from ocula.serve import create_app

    export_model(calibrated_run, gate_limit=64)
    clf, onnx = ocula.load(calibrated_run, device="cpu"), OnnxClassifier.load(calibrated_run)
    images = _digit_images()
    x = torch.stack([clf.preprocess(img) for img in images])
    torch_probs = clf.probabilities(x)
    assert torch.allclose(onnx.probabilities(x), torch_probs, atol=1e-5)
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, "PNG")
    with TestClient(create_app(clf, "digits", max_wait_ms=1)) as client:
        served = client.post("/predict?topk=10", content=png.getvalue(), headers={"content-type": "image/png"}).json()
        top = served["predictions"][0]["topk"]
        by_label = {t["label"]: t["prob"] for t in top}
        expected = dict(zip(clf.classes, torch_probs[0].tolist()))
        assert all(abs(by_label[k] - v) < 1e-5 for k, v in expected.items())
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, *x.shape[1:]],
                            "data": x[:1].reshape(-1).tolist()}], "outputs": [{"name": "probabilities"}]}
        oip = client.post("/v2/models/digits/infer", json=body).json()
        assert np.allclose(oip["outputs"][0]["data"], torch_probs[0].numpy(), atol=1e-5)


def test_min_confidence_abstains_in_python_and_over_http(calibrated_run):
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    import ocula
    from ocula.serve import create_app

    clf = ocula.load(calibrated_run, device="cpu")
    preds = clf.predict(_digit_images())
    floor = float(np.median([p.prob for p in preds]))
    clf.min_confidence = floor
    marked = clf.predict(_digit_images())
    assert [p.abstained for p in marked] == [p.prob < floor for p in preds] and any(p.abstained for p in marked)
    png = io.BytesIO()
    Image.fromarray(_digit_images()[0]).save(png, "PNG")
    with TestClient(create_app(clf, "digits", max_wait_ms=1)) as client:
        always = client.post("/predict?min_confidence=1", content=png.getvalue(),
                             headers={"content-type": "image/png"}).json()
        assert always["predictions"][0]["abstained"] is True
        meta = client.get("/v2/models/digits").json()
        assert meta["parameters"]["min_confidence"] == pytest.approx(floor)


def test_evaluate_writes_calibration_files_and_tta_runs(calibrated_run, tmp_path):
    import ocula

    report = ocula.evaluate(calibrated_run, "digits", out_dir=str(tmp_path / "e"))
    cal = report["calibration"]
    assert cal["method"] == "temperature" and cal["temperature"] == 1.7 and cal["bins"] == 15
    for key in ("ece", "adaptive_ece", "classwise_ece", "nll", "brier"):
        assert key in cal["before"] and key in cal["after"]
    assert report["ece"] == pytest.approx(cal["after"]["ece"])  # the report's own probabilities are calibrated
    for name in ("reliability.png", "risk_coverage.csv", "risk_coverage.png", "calibration.json"):
        assert (tmp_path / "e" / name).stat().st_size > 0
    rc = report["risk_coverage"]
    assert 0 <= rc["accuracy_at_90"] <= 1 and rc["accuracy_at_80"] >= rc["accuracy_at_90"] - 1e-9
    tta = ocula.evaluate(calibrated_run, "digits", tta=True)
    assert tta["tta"] is True and abs(tta["accuracy"] - report["accuracy"]) < 0.2


def test_tta_uses_only_the_flips_training_allowed(calibrated_run):
    import ocula

    clf = ocula.load(calibrated_run, device="cpu")
    x = torch.stack([clf.preprocess(img) for img in _digit_images(2)])
    assert clf.allowed_flips.get("hflip") is False  # digits_run trains with hflip=False
    assert len(clf.modality.tta_views(x, hflip=False)) == 5 and len(clf.modality.tta_views(x, hflip=True)) == 6
    clf.tta = True
    assert torch.allclose(clf.probabilities(x).sum(1), torch.ones(2), atol=1e-5)


def test_calibrate_refits_and_stores(calibrated_run, tmp_path):
    from ocula import api, bundle

    run = tmp_path / "r"
    shutil.copytree(calibrated_run, run)
    result = api.calibrate(str(run), "digits", split="test")
    stored = bundle.read_meta(run)["calibration"]
    assert result["split"] == "test" and "reason" in result
    if result["fitted"]:
        assert stored["temperature"] == pytest.approx(result["temperature"]) and stored["temperature"] != 1.7
    assert json.loads((run / "calibration.json").read_text())["split"] == "test"


def test_calibrate_none_keeps_the_raw_softmax(tmp_path):
    import ocula

    ocula.train("digits", model="seed_cnn", epochs=1, max_steps=3, calibrate="none", out=str(tmp_path / "r"))
    meta = json.loads((tmp_path / "r" / "model.json").read_text())
    assert meta["calibration"]["method"] == "none"
    assert json.loads((tmp_path / "r" / "calibration.json").read_text())["reason"] == "--calibrate none"


def test_margin_heads_predict_and_calibrate_on_cosine_logits(tmp_path):
    import torch.nn.functional as F

    import ocula
    from ocula.tasks import MarginTask

    ocula.train("digits", model="seed_cnn", epochs=1, max_steps=4, margin="cosface", hflip=False,
                out=str(tmp_path / "m"))
    clf = ocula.load(str(tmp_path / "m"), device="cpu")
    assert isinstance(clf.task, MarginTask) and clf.task.scale == 30.0
    x = torch.stack([clf.preprocess(img) for img in _digit_images(4)])
    m = clf.model
    cos = F.linear(F.normalize(m.forward_head(m.forward_features(x), pre_logits=True).flatten(1), dim=1),
                   F.normalize(m.get_classifier().weight, dim=1))
    assert torch.allclose(clf.logits(x), 30.0 * cos, atol=1e-4)
    assert torch.allclose(clf.probabilities(x), (30.0 * cos / clf.task.temperature).softmax(1), atol=1e-5)
