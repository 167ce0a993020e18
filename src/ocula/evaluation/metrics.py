"""Classification metrics in plain numpy: confusion, precision/recall/F1, top-k, calibration.

Everything a confusion matrix can tell is computed from the confusion matrix alone
(`report_from_confusion`), so distributed evaluation all-reduces one (K, K) integer array instead
of gathering every prediction. Calibration is mergeable the same way through `calibration_bins`.
Zero divisions give 0.0, like scikit-learn's `zero_division=0`.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from ocula.errors import OculaError

NLL_EPS = 1e-12  # probabilities are clipped to [eps, 1] so one confident mistake cannot give inf


def to_numpy(x) -> np.ndarray:
    """numpy view of an array-like or torch tensor (any device, any float dtype, grad or not)."""
    if hasattr(x, "detach"):  # torch without importing torch
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()  # bfloat16 / float16 have no (or a lossy) numpy path
        x = x.numpy()
    return np.asarray(x)


def _check_inputs(y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    y = to_numpy(y_true).astype(np.int64).reshape(-1)
    p = to_numpy(probs).astype(np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise OculaError(f"probs must be (N, K) with N = len(y_true) = {y.shape[0]}; got {p.shape}")
    _check_labels(y, p.shape[1])
    return y, p


def _check_labels(y: np.ndarray, num_classes: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise OculaError(f"labels must lie in [0, {num_classes}); got [{y.min()}, {y.max()}]")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    y = to_numpy(y_true).astype(np.int64).reshape(-1)
    p = to_numpy(y_pred).astype(np.int64).reshape(-1)
    if y.shape != p.shape:
        raise OculaError(f"y_true and y_pred differ in length: {y.shape[0]} vs {p.shape[0]}")
    _check_labels(y, num_classes)
    _check_labels(p, num_classes)
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _averages(precision, recall, f1, support) -> tuple[dict, dict]:
    macro = {"precision": precision.mean(), "recall": recall.mean(), "f1": f1.mean()}
    weights = _safe_div(support, support.sum())
    weighted = {"precision": precision @ weights, "recall": recall @ weights, "f1": f1 @ weights}
    return ({k: float(v) for k, v in macro.items()}, {k: float(v) for k, v in weighted.items()})


def report_from_confusion(cm, class_names: Optional[Sequence[str]] = None) -> dict:
    """Every metric a confusion matrix determines; JSON-serialisable.

    Keys: n, accuracy, balanced_accuracy, macro, weighted ({precision, recall, f1}),
    per_class ([{class, precision, recall, f1, support}]), confusion_matrix, class_names.
    """
    cm = to_numpy(cm).astype(np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise OculaError(f"confusion matrix must be square (K, K) with K >= 1; got {cm.shape}")
    k = cm.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise OculaError(f"{len(names)} class names for a {k}-class confusion matrix")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)  # true count per class
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    macro, weighted = _averages(precision, recall, f1, support)
    present = support > 0  # sklearn's balanced accuracy ignores classes absent from y_true
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(_safe_div(tp.sum(), n)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro": macro,
        "weighted": weighted,
        "per_class": [
            {"class": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])}
            for i in range(k)
        ],
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }


def topk_accuracy(y_true, probs, k: int) -> float:
    """Fraction whose true class is among the k highest scores.

    Ties rank the lower class index first, the same order as argmax, so top-1 == accuracy.
    Counting classes ranked above the true one is O(N*K), unlike a full argsort.
    """
    y, p = _check_inputs(y_true, probs)
    if y.size == 0:
        return 0.0
    true_score = p[np.arange(y.size), y][:, None]  # (N, 1)
    earlier = np.arange(p.shape[1])[None, :] < y[:, None]  # (N, K): classes that win ties
    rank = (p > true_score).sum(1) + ((p == true_score) & earlier).sum(1)
    return float((rank < k).mean())


def calibration_bins(y_true, probs, n_bins: int = 15) -> np.ndarray:
    """(3, n_bins) sums per equal-width top-1 confidence bin: count, confidence, correct.

    Sums (not means) so shards add up; bins are (lower, upper], confidence 0 goes to the first.
    """
    y, p = _check_inputs(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    return np.stack([
        np.bincount(idx, minlength=n_bins).astype(np.float64),
        np.bincount(idx, weights=conf, minlength=n_bins),
        np.bincount(idx, weights=correct, minlength=n_bins),
    ])


def ece_from_bins(bins) -> float:
    """ECE = sum over bins of |accuracy - mean confidence|, weighted by the bin's share of samples."""
    count, conf_sum, correct_sum = to_numpy(bins).astype(np.float64)
    total = count.sum()
    if total == 0:
        return 0.0
    return float(np.abs(correct_sum - conf_sum).sum() / total)  # |acc - conf| * count / N, per bin


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    return ece_from_bins(calibration_bins(y_true, probs, n_bins))


def negative_log_likelihood(y_true, probs, eps: float = NLL_EPS) -> float:
    y, p = _check_inputs(y_true, probs)
    if y.size == 0:
        return 0.0
    return float(-np.log(np.clip(p[np.arange(y.size), y], eps, 1.0)).mean())


def classification_report(y_true, probs, class_names: Optional[Sequence[str]] = None,
                          topk: Iterable[int] = (1, 5)) -> dict:
    """Full evaluation of (N,) integer labels against (N, K) probabilities; JSON-serialisable.

    Keys: those of `report_from_confusion`, plus top{k} for each k <= K, ece (15 bins), nll and
    reliability (the 15 bins of the reliability diagram, see `reliability_table`).
    """
    y, p = _check_inputs(y_true, probs)
    k = p.shape[1]
    report = report_from_confusion(confusion_matrix(y, p.argmax(axis=1), k), class_names)
    tops = {f"top{t}": topk_accuracy(y, p, t) for t in sorted(set(topk)) if 1 <= t <= k}
    # headline numbers first so the JSON reads top-down; {**head, **report} keeps head's order
    head = {"n": report["n"], "accuracy": report["accuracy"], **tops,
            "balanced_accuracy": report["balanced_accuracy"],
            "ece": expected_calibration_error(y, p), "nll": negative_log_likelihood(y, p),
            "reliability": reliability_table(calibration_bins(y, p))}
    return {**head, **report}


def reliability_table(bins) -> dict:
    """(3, B) bin sums → the reliability diagram's data: the B + 1 edges of the equal-width confidence
    bins and per bin its count, mean confidence and accuracy (None for an empty bin). JSON-serialisable."""
    count, conf_sum, correct_sum = to_numpy(bins).astype(np.float64)
    n_bins = count.size
    mean = lambda s: [float(v / c) if c else None for v, c in zip(s, count)]  # noqa: E731
    return {"edges": [float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)], "count": [int(c) for c in count],
            "confidence": mean(conf_sum), "accuracy": mean(correct_sum)}
