"""ocula.evaluation: metrics against scikit-learn and hand-computed toys, reports, plots."""
from __future__ import annotations

import csv
import json
import sys
import warnings

import numpy as np
import pytest

from ocula.errors import OculaError
from ocula.evaluation import (
    calibration_bins,
    classification_report,
    confusion_matrix,
    ece_from_bins,
    expected_calibration_error,
    format_report,
    plot_confusion_matrix,
    plot_training_curves,
    report_from_confusion,
    topk_accuracy,
    write_confusion_csv,
    write_json,
    write_per_class_csv,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["cat", "dog", "bird", "fish", "horse", "zebra_with_long_name", "owl"]


def random_predictions(n=400, k=7, seed=0):
    """Labels with every class present; probabilities that never predict the last class."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    probs = rng.dirichlet(np.ones(k) * 0.5, size=n)
    probs[:, -1] *= 0.01  # class k-1 never wins: precision has a zero division
    probs /= probs.sum(1, keepdims=True)
    return y, probs


@pytest.fixture
def report():
    y, probs = random_predictions()
    return classification_report(y, probs, NAMES)


# ----------------------------------------------------------------------------- metrics


def test_metrics_agree_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    y, probs = random_predictions()
    pred = probs.argmax(1)
    labels = list(range(len(NAMES)))
    r = classification_report(y, probs, NAMES)

    assert r["n"] == len(y)
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert r["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert r["confusion_matrix"] == sk.confusion_matrix(y, pred, labels=labels).tolist()
    p, rec, f1, sup = sk.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert [c["precision"] for c in r["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in r["per_class"]] == pytest.approx(rec)
    assert [c["f1"] for c in r["per_class"]] == pytest.approx(f1)
    assert [c["support"] for c in r["per_class"]] == sup.tolist()
    assert [c["class"] for c in r["per_class"]] == NAMES
    for avg in ("macro", "weighted"):
        p, rec, f1, _ = sk.precision_recall_fscore_support(
            y, pred, labels=labels, average=avg, zero_division=0)
        assert [r[avg]["precision"], r[avg]["recall"], r[avg]["f1"]] == pytest.approx([p, rec, f1])
    assert r["nll"] == pytest.approx(sk.log_loss(y, probs, labels=labels))
    assert r["top5"] == pytest.approx(sk.top_k_accuracy_score(y, probs, k=5, labels=labels))
    assert r["top1"] == r["accuracy"]


def test_balanced_accuracy_ignores_absent_classes_like_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 2, 1, 1, 2])  # class 2 predicted but never true
    r = report_from_confusion(confusion_matrix(y, pred, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert r["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))


def test_report_is_json_serialisable_with_plain_python_types(report):
    assert json.loads(json.dumps(report)) == report
    assert isinstance(report["accuracy"], float) and isinstance(report["n"], int)
    assert isinstance(report["confusion_matrix"][0][0], int)
    assert {"n", "accuracy", "top1", "top5", "balanced_accuracy", "macro", "weighted",
            "per_class", "confusion_matrix", "ece", "nll"} <= set(report)


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.92, 0.08], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1, 1])
    # bins of width 1/15: {0.9, 0.92} share (0.867, 0.933] with accuracy 0.5, mean confidence
    # 0.91; 0.8 (wrong), 0.7 and 0.6 (right) are alone in theirs.
    expected = (2 * abs(0.5 - 0.91) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 5
    assert expected_calibration_error(y, probs) == pytest.approx(expected)  # 0.464
    assert expected_calibration_error(y, probs, n_bins=1) == pytest.approx(0.784 - 0.6)  # one bin: mean conf - accuracy


def test_topk_toy_with_ties_ranked_like_argmax():
    probs = np.array([[0.1, 0.2, 0.3, 0.4]] * 3 + [[0.5, 0.5, 0.0, 0.0]])
    y = np.array([3, 2, 0, 1])  # ranks 0, 1, 3, and 1 (class 0 wins the tie, as argmax does)
    assert [topk_accuracy(y, probs, k) for k in (1, 2, 3, 4)] == pytest.approx([0.25, 0.75, 0.75, 1.0])
    r = classification_report(y, probs, topk=(1, 2, 5))
    assert r["top1"] == r["accuracy"] == 0.25
    assert r["top2"] == 0.75 and "top5" not in r  # k > K is skipped
    assert r["class_names"] == ["0", "1", "2", "3"]


def test_confusion_merges_across_shards():
    y, probs = random_predictions()
    halves = [slice(0, 150), slice(150, None)]
    k = len(NAMES)
    cm = sum(confusion_matrix(y[s], probs[s].argmax(1), k) for s in halves)
    merged = report_from_confusion(cm, NAMES)
    full = classification_report(y, probs, NAMES)
    assert all(merged[key] == full[key] for key in merged)
    bins = sum(calibration_bins(y[s], probs[s]) for s in halves)
    assert ece_from_bins(bins) == pytest.approx(full["ece"])


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    y, probs = random_predictions(n=50)
    r_np = classification_report(y, probs, NAMES)
    r_t = classification_report(torch.from_numpy(y), torch.from_numpy(probs).float(), NAMES)
    assert r_t["confusion_matrix"] == r_np["confusion_matrix"]
    assert r_t["ece"] == pytest.approx(r_np["ece"], abs=1e-6)
    classification_report(torch.from_numpy(y), torch.from_numpy(probs).bfloat16(), NAMES)


def test_bad_inputs_raise_ocula_error():
    with pytest.raises(OculaError, match="labels"):
        classification_report([0, 3], np.full((2, 3), 1 / 3))
    with pytest.raises(OculaError, match=r"\(N, K\)"):
        classification_report([0, 1, 2], np.full((2, 3), 1 / 3))
    with pytest.raises(OculaError, match="class names"):
        report_from_confusion(np.eye(3, dtype=int), ["a", "b"])


def test_nll_is_finite_for_confident_mistakes():
    r = classification_report([1], np.array([[1.0, 0.0]]))
    assert np.isfinite(r["nll"]) and r["nll"] > 20


# ----------------------------------------------------------------------------- report


def test_format_report_lists_classes_and_numbers(report):
    text = format_report(report)
    for name in NAMES:
        assert name in text
    assert f"{report['accuracy']:.4f}" in text and f"{report['macro']['f1']:.4f}" in text
    assert "macro avg" in text and "weighted avg" in text and "top5=" in text and "ece=" in text
    rows = [line for line in text.splitlines() if line.strip().startswith(("cat", "dog", "owl"))]
    assert len({len(line) for line in rows}) == 1  # aligned columns


def test_format_report_truncates(report):
    text = format_report(report, max_classes=3)
    assert "bird" in text and "owl" not in text and "4 more classes not shown" in text


def test_format_report_from_confusion_only():
    text = format_report(report_from_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"]))
    assert "accuracy=0.8750" in text and "ece" not in text


def test_write_json_round_trip_and_stdout(report, tmp_path, capsys):
    path = tmp_path / "sub" / "report.json"
    write_json(path, report)
    assert json.loads(path.read_text()) == report
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left
    write_json("-", {"x": np.float32(0.5), "cm": np.eye(2, dtype=np.int64)})
    assert json.loads(capsys.readouterr().out) == {"x": 0.5, "cm": [[1, 0], [0, 1]]}


def test_csvs_parse_back(report, tmp_path):
    write_confusion_csv(report, tmp_path / "cm.csv")
    rows = list(csv.reader(open(tmp_path / "cm.csv", newline="")))
    assert rows[0] == ["true\\pred", *NAMES]
    assert [r[0] for r in rows[1:]] == NAMES
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == report["confusion_matrix"]

    write_per_class_csv(report, tmp_path / "per_class.csv")
    rows = list(csv.DictReader(open(tmp_path / "per_class.csv", newline="")))
    assert [r["class"] for r in rows] == NAMES
    assert [float(r["f1"]) for r in rows] == pytest.approx([c["f1"] for c in report["per_class"]])
    assert [int(r["support"]) for r in rows] == [c["support"] for c in report["per_class"]]


# ----------------------------------------------------------------------------- plots


def assert_png(path):
    data = open(path, "rb").read()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_plot_confusion_matrix(report, tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_confusion_matrix(report, None, tmp_path / "cm.png")
    assert_png(out)
    cm = np.random.default_rng(0).integers(0, 9, (25, 25))  # > 20 classes: no annotations
    assert_png(plot_confusion_matrix(cm, None, tmp_path / "cm25.png", normalize=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "cm25.png"]


def test_plot_training_curves(tmp_path):
    pytest.importorskip("matplotlib")
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,train_loss,val_loss,train_acc,val_acc,val_top5,lr,time\n"
                        "1,2.0,,0.3,,,0.0001,5\n"
                        "2,1.5,1.6,0.5,0.45,0.9,0.001,5\n"
                        "3,1.2,1.3,0.6,0.55,,0.0005,5\n")
    assert_png(plot_training_curves(csv_path, tmp_path / "curves.png"))

    csv_path.write_text("epoch,train_loss,val_acc\n1,0.7,\n")  # one row, one empty cell
    assert_png(plot_training_curves(csv_path, tmp_path / "one_row.png"))
    csv_path.write_text("epoch,note\n")  # header only: still a (blank) figure, no crash
    assert_png(plot_training_curves(csv_path, tmp_path / "empty.png"))


def test_plots_without_matplotlib_do_nothing(report, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    assert plot_confusion_matrix(report, None, tmp_path / "cm.png") is None
    (tmp_path / "m.csv").write_text("epoch,train_loss\n1,0.5\n")
    assert plot_training_curves(tmp_path / "m.csv", tmp_path / "c.png") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
