"""Issue 23's guards: a temperature (or per-class temperature and threshold) is only used when it beats the
default out of sample and, for a class, with enough positives and negatives; grey detection does not miss a
few colour files; risk-coverage of no samples is empty."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ocula.data.native import measure_files
from ocula.errors import OculaError
from ocula.evaluation.calibration import fit_temperature, risk_coverage, softmax
from ocula.evaluation.multilabel import MIN_CLASS_SUPPORT, fit_class_temperatures, fit_class_thresholds
from ocula.tasks.multilabel import MultiLabelTask
from ocula.tasks.single_label import SingleLabelTask


def _calibrated(n: int, k: int = 5, seed: int = 0):
    """Logits and labels drawn from softmax(logits): T = 1 is the right answer."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, k))
    labels = np.array([rng.choice(k, p=row) for row in softmax(logits)])
    return logits, labels


def _calibrated_binary(n: int, k: int, seed: int = 0):
    """Multi-label logits (n, k) and labels drawn from sigmoid(logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, k))
    return logits, (rng.random((n, k)) < 1 / (1 + np.exp(-logits))).astype(float)


# ---------------------------------------------------------------------------- one temperature
def test_a_temperature_fitted_on_noise_is_not_used():
    kept = [fit_temperature(*_calibrated(100, seed=seed)) for seed in range(10)]
    assert sum(fit["fitted"] for fit in kept) <= 1  # the fit alone (interior, small error) took all ten
    refused = [fit for fit in kept if not fit["fitted"]]
    for fit in refused:
        assert "did not beat T = 1 out of sample" in fit["reason"] and fit["temperature"] == 1.0
        assert fit["cv_folds"] == 5 and fit["cv_folds_from"] == "stratified"
        assert f"{fit['cv_nll_t1']:.3f}" in fit["reason"] and f"{fit['cv_nll_fitted']:.3f}" in fit["reason"]


def test_a_clearly_needed_temperature_is_used():
    logits, labels = _calibrated(500, seed=1)
    fit = fit_temperature(3 * logits, labels)  # over-confident three times over: T = 3 undoes it
    assert fit["fitted"] and fit["temperature"] == pytest.approx(3.0, rel=0.15)
    assert fit["cv_nll_fitted"] < fit["cv_nll_t1"] - 0.1
    task = SingleLabelTask()
    task.fit_calibration(3 * logits, labels)
    assert task.calibration["method"] == "temperature" and task.temperature == pytest.approx(fit["temperature"])


def test_the_callers_folds_are_the_folds():
    """Half the samples need T = 3, half T = 0.5: stratified folds see both and a pooled T helps, but the
    caller's two folds (one per half) show that a T fitted on one half hurts the other."""
    logits, labels = _calibrated(600, seed=2)
    halves = np.repeat([0, 1], 300)
    mixed = np.where(halves[:, None] == 0, 3 * logits, 0.5 * logits)
    pooled = fit_temperature(mixed, labels)
    given = fit_temperature(mixed, labels, groups=halves)
    assert given["cv_folds"] == 2 and given["cv_folds_from"] == "groups" and pooled["cv_folds"] == 5
    assert pooled["cv_nll_fitted"] < given["cv_nll_fitted"]
    assert not given["fitted"] and "did not beat T = 1" in given["reason"]
    with pytest.raises(OculaError, match="fold ids"):
        fit_temperature(mixed, labels, groups=halves[:10])


# ---------------------------------------------------------------------------- per class
def test_a_class_needs_support_and_an_out_of_sample_gain():
    logits, labels = _calibrated_binary(300, 3, seed=3)
    logits[:, 1] *= 3  # class 1 over-confident: needs its own T
    labels[:, 2] = 0
    labels[:3, 2] = 1  # class 2: three positives
    fit = fit_class_temperatures(logits, labels)
    rows = fit["per_class"]
    assert rows[1]["fitted"] and rows[1]["temperature"] == pytest.approx(3.0, rel=0.2)
    assert rows[1]["cv_nll_fitted"] < rows[1]["cv_nll_t1"]
    assert not rows[0]["fitted"] and rows[0]["temperature"] == 1.0  # calibrated: T = 1 kept
    assert not rows[2]["fitted"] and rows[2]["positives"] == 3 and f"needs {MIN_CLASS_SUPPORT}" in rows[2]["reason"]


def test_thresholds_need_support_and_must_beat_half_out_of_sample():
    rng = np.random.default_rng(4)
    labels = (rng.random((400, 2)) < 0.3).astype(float)
    probs = np.clip(0.25 * labels + 0.45 * rng.random((400, 2)), 0, 1)  # all below 0.5: 0.5 finds nothing
    labels[:, 1] = 0
    labels[rng.choice(400, 4, replace=False), 1] = 1
    thresholds, rows = fit_class_thresholds(labels, probs)
    assert rows[0]["fitted"] and thresholds[0] < 0.5 and rows[0]["cv_fitted"]["f1"] > rows[0]["cv_default"]["f1"]
    assert not rows[1]["fitted"] and thresholds[1] == 0.5 and "4 positives" in rows[1]["reason"]


def test_multilabel_task_records_each_class():
    logits, labels = _calibrated_binary(200, 2, seed=5)
    labels[:, 1] = (np.arange(200) < 5).astype(float)  # five positives
    task = MultiLabelTask()
    record = task.fit_calibration(torch.from_numpy(3 * logits), torch.from_numpy(labels))
    first, second = record["per_class"]
    assert first["temperature"]["fitted"] and not second["temperature"]["fitted"]
    assert task.temperature.tolist() == pytest.approx([first["temperature"]["temperature"], 1.0])
    assert not second["threshold"]["fitted"] and task.thresholds[1] == 0.5


# ---------------------------------------------------------------------------- grey folders, empty splits
@pytest.fixture(scope="module")
def mostly_grey_folder(tmp_path_factory):
    """200 grey images stored as RGB PNGs and 4 colour ones."""
    root = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(0)
    for i in range(204):
        grey = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
        pixels = np.repeat(grey, 3, axis=2) if i < 200 else rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(root / f"{i:03d}.png")
    return sorted(str(p) for p in root.glob("*.png"))


@pytest.mark.parametrize("seed", range(5))
def test_a_few_colour_files_make_a_folder_colour(mostly_grey_folder, seed):
    assert measure_files(mostly_grey_folder, seed=seed).grey is False
    grey_only = measure_files(mostly_grey_folder[:200], seed=seed)
    assert grey_only.grey is True and grey_only.grey_by_content == 200


def test_risk_coverage_of_no_samples_is_empty():
    rc = risk_coverage(np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    assert rc["n"] == 0 and rc["curve"] == [] and rc["accuracy_at_90"] is None


def test_a_systematic_confidence_bias_is_named_and_noise_is_not():
    from ocula.evaluation.calibration import before_and_after, confidence_bias
    from ocula.evaluation.report import format_selective

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    logits = np.zeros((400, 2))
    logits[np.arange(400), labels] = 0.9  # always right, about 71 % sure: under-confident
    section = before_and_after(labels, logits, None)
    assert section["bias"]["verdict"] == "under-confident" and section["bias"]["accuracy"] == pytest.approx(1.0)
    lines = format_selective({"calibration": {**section, "reason": "not calibrated: too few images"}})
    assert any(line.startswith("note: on these images the model is under-confident") for line in lines)
    calibrated = rng.random(400) < 0.8  # right 80 % of the time at confidence 0.8: no bias to name
    probs = np.where(calibrated[:, None] == (np.arange(2) == labels[:, None]), 0.8, 0.2)
    assert confidence_bias(labels, probs)["verdict"] is None
    assert confidence_bias([], np.zeros((0, 2)))["verdict"] is None
