"""Multi-label metrics in plain numpy: AP, AUROC, thresholds tuned per class, the multi-label report.

Labels are multi-hot (N, K), probabilities (N, K) independent per class (sigmoid). Average precision
is scikit-learn's (the step-wise area under the precision-recall curve, no interpolation); AUROC is the
Mann-Whitney statistic with ties counted half. A class without positives (or without negatives, for
AUROC) has no AP (AUROC): it is None in the per-class rows and left out of the macro means.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ocula.errors import OculaError
from ocula.evaluation.metrics import NLL_EPS, to_numpy


def check_multilabel(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = to_numpy(labels).astype(np.float64)
    p = to_numpy(probs).astype(np.float64)
    if p.ndim != 2 or y.shape != p.shape:
        raise OculaError(f"multi-label scoring needs labels and probabilities of one shape (N, K); got "
                         f"{y.shape} and {p.shape}")
    return (y > 0.5).astype(np.float64), p


def _pr_steps(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class: (precision, recall, threshold) at each distinct score, highest threshold first."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(y.sum(), 1)
    return precision, recall, s[last]


def average_precision(y, s) -> Optional[float]:
    """AP of one class = Σ (R_n − R_{n−1}) P_n; None without positives."""
    y, s = np.asarray(y, np.float64), np.asarray(s, np.float64)
    if y.sum() == 0:
        return None
    precision, recall, _ = _pr_steps(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y, s) -> Optional[float]:
    """AUROC of one class: P(score of a positive > score of a negative), ties half; None for one kind only."""
    y, s = np.asarray(y, bool), np.asarray(s, np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    rank = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # average ranks, 1-based
    return float((rank[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def parse_policy(policy: str) -> tuple[str, Optional[float]]:
    """'f1' → ("f1", None); 'precision=0.9' → ("precision", 0.9)."""
    text = (policy or "f1").strip().lower()
    if text == "f1":
        return "f1", None
    name, _, value = text.partition("=")
    try:
        target = float(value)
    except ValueError:
        target = -1.0
    if name != "precision" or not 0 < target <= 1:
        raise OculaError(f"threshold_policy={policy!r}: use f1 or precision=P with 0 < P <= 1 (e.g. precision=0.9)")
    return "precision", target


def fit_thresholds(labels, probs, policy: str = "f1") -> np.ndarray:
    """(K,) per-class thresholds chosen on held-out data: the one that maximises F1, or (precision=P) the
    lowest one whose precision is at least P (the most recall at that precision). A threshold sits halfway
    between the chosen score and the next lower one, so a nearby unseen score is classed the same way.
    A class without positives, or that never reaches the precision, keeps 0.5."""
    y, p = check_multilabel(labels, probs)
    kind, target = parse_policy(policy)
    out = np.full(y.shape[1], 0.5)
    for k in range(y.shape[1]):
        if y[:, k].sum() == 0:
            continue
        precision, recall, scores = _pr_steps(y[:, k], p[:, k])
        if kind == "f1":
            f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
            i = int(np.argmax(f1))
        else:
            ok = np.flatnonzero(precision >= target)
            if not len(ok):
                continue
            i = int(ok[-1])
        below = scores[i + 1] if i + 1 < len(scores) else max(scores[i] - 1e-3, 0.0)
        out[k] = float((scores[i] + below) / 2)
    return out


def bce_nll(labels, probs, eps: float = NLL_EPS) -> float:
    """Mean binary cross-entropy per label."""
    y, p = check_multilabel(labels, probs)
    if not y.size:
        return 0.0
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _prf(tp, fp, fn) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def _mean(values) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else 0.0


def multilabel_report(labels, probs, class_names: Optional[Sequence[str]] = None,
                      thresholds: Optional[Sequence[float]] = None) -> dict:
    """Full evaluation of multi-hot labels (N, K) against probabilities (N, K); JSON-serialisable.

    Keys: kind, n, mAP (= mAP_macro), mAP_micro, macro/micro {precision, recall, f1} at the thresholds,
    f1_macro_at_0.5, subset_accuracy, hamming_loss, label_cardinality (true, predicted), nll (mean
    BCE), thresholds, per_class ([{class, ap, auroc, precision, recall, f1, threshold, support}]).
    """
    y, p = check_multilabel(labels, probs)
    n, k = y.shape
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    t = np.full(k, 0.5) if thresholds is None else np.asarray(thresholds, np.float64)
    pred = p >= t[None, :]
    truth = y > 0.5
    tp, fp, fn = (pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0)
    rows = []
    for j in range(k):
        precision, recall, f1 = _prf(tp[j], fp[j], fn[j])
        rows.append({"class": names[j], "ap": average_precision(y[:, j], p[:, j]),
                     "auroc": roc_auc(y[:, j], p[:, j]), "precision": precision, "recall": recall, "f1": f1,
                     "threshold": float(t[j]), "support": int(truth[:, j].sum())})
    at_half = p >= 0.5
    f1_half = [_prf(int((at_half[:, j] & truth[:, j]).sum()), int((at_half[:, j] & ~truth[:, j]).sum()),
                    int((~at_half[:, j] & truth[:, j]).sum()))[2] for j in range(k)]
    present = truth.sum(0) > 0
    micro = _prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    mean_ap = _mean(r["ap"] for r in rows)
    return {
        "kind": "multilabel", "n": int(n), "mAP": mean_ap, "mAP_macro": mean_ap,
        "mAP_micro": average_precision(y.ravel(), p.ravel()) or 0.0,
        "auroc_macro": _mean(r["auroc"] for r in rows),
        "macro": {m: _mean(r[m] for r, keep in zip(rows, present) if keep) for m in ("precision", "recall", "f1")},
        "micro": dict(zip(("precision", "recall", "f1"), micro)),
        "f1_macro_at_0.5": _mean(f for f, keep in zip(f1_half, present) if keep),
        "subset_accuracy": float((pred == truth).all(1).mean()) if n else 0.0,
        "hamming_loss": float((pred != truth).mean()) if n else 0.0,
        "label_cardinality": {"true": float(truth.sum(1).mean()) if n else 0.0,
                              "predicted": float(pred.sum(1).mean()) if n else 0.0},
        "nll": bce_nll(y, p), "thresholds": [float(v) for v in t], "class_names": names, "per_class": rows,
    }


def format_multilabel_report(report: dict, max_classes: int = 50) -> str:
    """A terminal table: headline, then per class AP, AUROC and precision/recall/F1 at its threshold."""
    head = (f"n={report['n']}  mAP={report['mAP']:.4f}  mAP_micro={report['mAP_micro']:.4f}  "
            f"macro_f1={report['macro']['f1']:.4f} (at 0.5: {report['f1_macro_at_0.5']:.4f})  "
            f"subset_acc={report['subset_accuracy']:.4f}  hamming={report['hamming_loss']:.4f}  "
            f"cardinality={report['label_cardinality']['true']:.2f} (predicted "
            f"{report['label_cardinality']['predicted']:.2f})")
    rows = report["per_class"][:max_classes]
    width = max([5] + [len(r["class"]) for r in rows])
    num = lambda v: "     -" if v is None else f"{v:6.4f}"  # noqa: E731
    out = [head, "", f"{'class':>{width}}  {'AP':>6}  {'AUROC':>6}  {'thresh':>6}  {'prec':>6}  {'recall':>6}  "
                     f"{'F1':>6}  {'support':>7}", ""]
    out += [f"{r['class']:>{width}}  {num(r['ap'])}  {num(r['auroc'])}  {r['threshold']:6.3f}  {r['precision']:6.4f}  "
            f"{r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7d}" for r in rows]
    if len(report["per_class"]) > len(rows):
        out.append(f"... {len(report['per_class']) - len(rows)} more classes (the JSON report has all)")
    return "\n".join(out)


def pr_curves(labels, probs, class_names: Sequence[str], points: int = 101) -> list[dict]:
    """Per class its precision-recall curve as at most `points` (recall, precision) pairs from (0, 1), and
    its AP; JSON-serialisable (an evaluation report carries it as "pr_curves")."""
    y, p = check_multilabel(labels, probs)
    curves = []
    for j in range(y.shape[1]):
        precision, recall, _ = _pr_steps(y[:, j], p[:, j])
        recall, precision = np.r_[0.0, recall], np.r_[1.0, precision]
        keep = np.unique(np.linspace(0, len(recall) - 1, min(points, len(recall))).round().astype(int))
        curves.append({"class": str(class_names[j]), "ap": average_precision(y[:, j], p[:, j]),
                       "recall": [round(float(v), 5) for v in recall[keep]],
                       "precision": [round(float(v), 5) for v in precision[keep]]})
    return curves


def _binned(conf: np.ndarray, pos: np.ndarray, n_bins: int) -> np.ndarray:
    """(3, n_bins) sums per equal-width probability bin: count, probability, positives."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    return np.stack([np.bincount(idx, minlength=n_bins).astype(np.float64),
                     np.bincount(idx, weights=conf, minlength=n_bins), np.bincount(idx, weights=pos, minlength=n_bins)])


def _ece(bins: np.ndarray) -> float:
    return float(np.abs(bins[2] - bins[1]).sum() / max(bins[0].sum(), 1))


def calibration_measures(labels, probs, n_bins: int = 15) -> dict:
    """Calibration of independent per-label probabilities, with the keys of the single-label measures: ece
    (every (sample, label) pair pooled, equal-width bins: mean probability against the share of positives),
    adaptive_ece (pooled, equal-mass bins), classwise_ece (mean over classes), nll (mean BCE), brier, and the
    reliability table in `metrics.reliability_table`'s form ("accuracy" = share of positives per bin)."""
    from ocula.evaluation.metrics import reliability_table

    y, p = check_multilabel(labels, probs)
    conf, pos = p.ravel(), y.ravel()
    bins = _binned(conf, pos, n_bins)
    order = np.argsort(conf, kind="stable")
    chunks = [c for c in np.array_split(order, n_bins) if len(c)]
    adaptive = float(sum(abs(pos[c].sum() - conf[c].sum()) for c in chunks) / max(len(conf), 1))
    classwise = float(np.mean([_ece(_binned(p[:, k], y[:, k], n_bins)) for k in range(p.shape[1])])) if p.size else 0.0
    return {"ece": _ece(bins), "adaptive_ece": adaptive, "classwise_ece": classwise, "nll": bce_nll(y, p),
            "brier": float(((p - y) ** 2).mean()) if y.size else 0.0, "reliability": reliability_table(bins)}
