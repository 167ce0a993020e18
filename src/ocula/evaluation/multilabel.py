"""Multi-label metrics in plain numpy: AP, AUROC, thresholds tuned per class, the multi-label report.

Labels are multi-hot (N, K), probabilities (N, K) independent per class (sigmoid). Average precision
is scikit-learn's (the step-wise area under the precision-recall curve, no interpolation); AUROC is the
Mann-Whitney statistic with ties counted half. A class without positives (or without negatives, for
AUROC) has no AP (AUROC): it is None in the per-class rows and left out of the macro means.

Per-class temperatures and thresholds (`fit_class_temperatures`, `fit_class_thresholds`) are only used
for a class with MIN_CLASS_SUPPORT positives and negatives, and only when they beat the default
(T = 1, threshold 0.5) out of sample, on folds of the samples (the caller's, or stratified by each
sample's rarest label); every class's record says which it got and why.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ocula.errors import OculaError
from ocula.evaluation.calibration import LOG_T_BOUNDS, _minimise, cross_validate, fold_ids, out_of_sample_check
from ocula.evaluation.metrics import NLL_EPS, reliability_table, to_numpy

# Positives and negatives a class needs for its own temperature or threshold. With fewer, one sample
# moves an F1-optimal threshold by a tenth of the recall or more, and five folds leave held-out parts
# with one or two positives to judge the fit on.
MIN_CLASS_SUPPORT = 10


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
    y, p = check_multilabel(labels, probs)
    conf, pos = p.ravel(), y.ravel()
    bins = _binned(conf, pos, n_bins)
    order = np.argsort(conf, kind="stable")
    chunks = [c for c in np.array_split(order, n_bins) if len(c)]
    adaptive = float(sum(abs(pos[c].sum() - conf[c].sum()) for c in chunks) / max(len(conf), 1))
    classwise = float(np.mean([_ece(_binned(p[:, k], y[:, k], n_bins)) for k in range(p.shape[1])])) if p.size else 0.0
    return {"ece": _ece(bins), "adaptive_ece": adaptive, "classwise_ece": classwise, "nll": bce_nll(y, p),
            "brier": float(((p - y) ** 2).mean()) if y.size else 0.0, "reliability": reliability_table(bins)}


# ----------------------------------------------------------------------------- per-class calibration
def multilabel_folds(labels, groups=None, seed: int = 0) -> np.ndarray:
    """A fold id per sample: the caller's `groups`, or seeded folds stratified by each sample's rarest
    positive label (no label: a stratum of its own), so a rare class's positives spread over the folds."""
    y = np.asarray(labels) > 0.5
    rarity = np.where(y, y.sum(0)[None, :], np.inf)
    strata = np.where(y.any(1), rarity.argmin(1), -1) if y.size else np.zeros(len(y), dtype=np.int64)
    return fold_ids(strata, groups, seed)


def _support(y: np.ndarray) -> tuple[dict, Optional[str]]:
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    short = min(pos, neg) < MIN_CLASS_SUPPORT
    why = f"{pos} positives and {neg} negatives (needs {MIN_CLASS_SUPPORT} of each)" if short else None
    return {"positives": pos, "negatives": neg}, why


def _bce_per_sample(z: np.ndarray, y: np.ndarray, log_t: float) -> np.ndarray:
    x = z / math.exp(log_t)
    return np.logaddexp(0.0, x) - y * x


def _class_temperature(z: np.ndarray, y: np.ndarray, folds: np.ndarray, given: bool) -> dict:
    counts, short = _support(y)
    kept = {**counts, "temperature": 1.0, "fitted": False}
    if short:
        return {**kept, "reason": f"{short}: keeps T = 1"}

    def fit(part):
        return _minimise(lambda v: float(_bce_per_sample(z[part], y[part], v).sum()), *LOG_T_BOUNDS)

    log_t = fit(np.ones(len(y), dtype=bool))
    if min(abs(log_t - LOG_T_BOUNDS[0]), abs(log_t - LOG_T_BOUNDS[1])) < 1e-3:
        return {**kept, "reason": "no interior optimum (too few errors to fit a temperature): keeps T = 1"}
    fitted, default = cross_validate(fit, lambda part, v: _bce_per_sample(z[part], y[part], v), folds)
    check = out_of_sample_check(fitted, default, folds, given)
    t = math.exp(log_t)
    cv = f"cross-validated NLL {check['cv_nll_fitted']:.3f} vs {check['cv_nll_t1']:.3f} at T = 1"
    if not check["cv_accepted"]:
        return {**kept, **check, "reason": f"temperature {t:.2f} did not beat T = 1 out of sample ({cv}): keeps T = 1"}
    return {**kept, **check, "temperature": t, "fitted": True, "reason": f"temperature {t:.3f} ({cv})"}


def fit_class_temperatures(logits, labels, groups=None, seed: int = 0) -> dict:
    """Per-class temperatures of sigmoid(logits / T) by BCE → report: temperature (K,), fitted (any class
    got its own), nll_before/after (mean BCE per label), per_class records, reason."""
    y, z = check_multilabel(labels, logits)
    folds = multilabel_folds(y, groups, seed)
    rows = [_class_temperature(z[:, k], y[:, k], folds, groups is not None) for k in range(y.shape[1])]
    temps = np.array([r["temperature"] for r in rows], dtype=np.float64)
    own = sum(r["fitted"] for r in rows)
    nll = lambda t: float(np.mean(np.logaddexp(0.0, z / t) - y * z / t)) if y.size else 0.0  # noqa: E731
    reason = (f"{own} of {len(rows)} classes have their own temperature (the others kept T = 1: too few positives "
              f"or negatives, or no gain out of sample)" if own else
              "no class's temperature beat T = 1 out of sample (or had the support to try); probabilities are "
              "left as trained")
    return {"fitted": bool(own), "temperature": temps.tolist(), "nll_before": nll(np.ones_like(temps)),
            "nll_after": nll(temps), "per_class": rows, "reason": reason}


def _prf_of(y: np.ndarray, chosen: np.ndarray) -> dict:
    tp = int((chosen & (y > 0.5)).sum())
    precision, recall, f1 = _prf(tp, int(chosen.sum()) - tp, int((y > 0.5).sum()) - tp)
    return {"precision": precision, "recall": recall, "f1": f1}


def _better(fitted: dict, default: dict, kind: str, target: Optional[float]) -> bool:
    """Strictly better (a tie keeps 0.5): F1; or, for precision=P, reaching P first, then more recall
    (both reaching it) or more precision (neither)."""
    if kind == "f1":
        return fitted["f1"] > default["f1"]

    def rank(score: dict) -> tuple[bool, float]:
        reached = score["precision"] >= target
        return reached, score["recall"] if reached else score["precision"]

    return rank(fitted) > rank(default)


def fit_class_thresholds(labels, probs, policy: str = "f1", groups=None, seed: int = 0) -> tuple[np.ndarray, list]:
    """(K,) thresholds and a record per class: `fit_thresholds` on all samples, kept only for a class with
    the support whose out-of-fold predictions (each fold at the threshold fitted without it) beat 0.5 on
    the same samples; otherwise 0.5."""
    y, p = check_multilabel(labels, probs)
    kind, target = parse_policy(policy)
    folds = multilabel_folds(y, groups, seed)
    full = fit_thresholds(y, p, policy)
    per_fold = {f: fit_thresholds(y[folds != f], p[folds != f], policy) for f in np.unique(folds)}
    out, rows = np.full(y.shape[1], 0.5), []
    for k in range(y.shape[1]):
        counts, short = _support(y[:, k])
        if short:
            rows.append({**counts, "threshold": 0.5, "fitted": False, "reason": f"{short}: keeps 0.5"})
            continue
        at_fold = np.array([per_fold[f][k] for f in folds])
        fitted, default = _prf_of(y[:, k], p[:, k] >= at_fold), _prf_of(y[:, k], p[:, k] >= 0.5)
        won = _better(fitted, default, kind, target)
        out[k] = full[k] if won else 0.5
        how = f"out of sample {policy}: precision {fitted['precision']:.2f} recall {fitted['recall']:.2f} vs " \
              f"{default['precision']:.2f} {default['recall']:.2f} at 0.5"
        rows.append({**counts, "threshold": float(out[k]), "fitted": won, "cv_fitted": fitted, "cv_default": default,
                     "reason": f"threshold {full[k]:.3f} " + ("" if won else "did not beat 0.5 ") + f"({how})"})
    return out, rows
