"""Probabilities a user can act on: temperature scaling and the measures that show calibration.

    fit = fit_temperature(val_logits, val_labels)      # {"fitted": True, "temperature": 0.41, ...}
    measures(labels, probs)                             # ece, adaptive_ece, classwise_ece, nll, brier
    risk_coverage(labels, probs)                        # accuracy when only the most confident p% answer

Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted on held-out data
by minimising the negative log-likelihood; it changes confidence, never the predicted class. The
fit runs over log T (bounded to [1/20, 20]) and is only used when it is trustworthy: enough samples,
an interior optimum (the NLL does not keep falling towards a bound, as it does when the held-out
split has no errors), and a small standard error of log T from the NLL's curvature (or, when the
error is larger, a T at least two standard errors away from 1). On top of those, a fitted T must beat
T = 1 out of sample: the samples are split into folds (stratified by label, seeded, or the caller's
own folds), T is fitted without each fold and scored on it, and the cross-validated NLL at those
temperatures must be below the NLL at T = 1 by more than its own noise (`cross_validate`).

ECE here uses 15 equal-width confidence bins (as `ocula evaluate` always has); adaptive ECE uses 15
equal-mass bins; classwise ECE (Kull et al., 2019) averages the equal-width ECE of every class's
own probability.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ocula.errors import OculaError
from ocula.evaluation.metrics import (calibration_bins, expected_calibration_error, negative_log_likelihood,
                                      reliability_table)
from ocula.evaluation.scalar_min import minimise_bounded as _minimise  # golden section: no scipy in core

N_BINS = 15
MIN_SAMPLES = 20  # fewer held-out samples than this: no fit
MAX_LOG_T_SE = 0.2  # standard error of log T above this (T uncertain by more than ±22 %): no fit
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
COVERAGES = (0.9, 0.8)
CV_FOLDS = 5
MIN_FOLD_SAMPLES = 10  # fewer folds rather than held-out parts of under 10 samples (a handful of errors)
# The cross-validated gain of a fitted T over T = 1 must exceed this many standard errors of the mean
# per-sample gain: a T fitted on noise gains about its own noise. On 100 samples of a model whose true T
# is 1, a zero margin still took 28 % of the fitted temperatures (40 seeds), one standard error 2 %; a
# true T of 1.6 is still taken 90 % of the time, T = 3 on 500 samples always (issue 23: a T fitted on
# 100 carved images made ECE on unseen ones worse).
CV_MARGIN_SE = 1.0


# ------------------------------------------------------------------------------ temperature
def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    return torch.as_tensor(np.asarray(logits), dtype=torch.float64).div(temperature).softmax(1).numpy()


def fit_temperature(logits, labels, groups=None, seed: int = 0) -> dict:
    """One temperature by minimising held-out NLL → report: fitted, temperature, why not, evidence.

    `groups` (an int fold id per sample) are the folds of the out-of-sample check; a caller with
    out-of-fold logits from k-fold cross-fitting passes its own. Without them the samples are split into
    at most CV_FOLDS parts stratified by label (`seed`)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = int(y.numel())
    base = {"method": "temperature", "samples": n, "temperature": 1.0}
    if n < MIN_SAMPLES:
        return {**base, "fitted": False, "reason": f"{n} held-out samples are too few to fit a temperature "
                                                    f"(need {MIN_SAMPLES}); probabilities are left as trained"}
    log_t = _minimise(lambda t: float(_nll(z, y, t)), *LOG_T_BOUNDS)
    grad, curvature = _derivatives(z, y, log_t)
    se = 1.0 / math.sqrt(curvature) if curvature > 0 else math.inf
    evidence = {"log_t": round(log_t, 6), "log_t_se": round(se, 6) if math.isfinite(se) else None,
                "nll_before": float(_nll(z, y, 0.0)) / n, "nll_after": float(_nll(z, y, log_t)) / n}
    at_bound = min(abs(log_t - LOG_T_BOUNDS[0]), abs(log_t - LOG_T_BOUNDS[1])) < 1e-3
    if at_bound:
        return {**base, **evidence, "fitted": False, "converged": False,
                "reason": f"the held-out NLL keeps falling towards T={math.exp(log_t):.3g} (no interior optimum: "
                          f"too few held-out errors to fit a temperature); probabilities are left as trained"}
    converged = abs(grad) / n < 1e-4
    # An uncertain T is still used when it is clearly not 1 (two standard errors away): then even a
    # rough correction beats none; an uncertain T near 1 would only add noise.
    if not converged or (se > MAX_LOG_T_SE and abs(log_t) < 2 * se):
        why = "did not converge" if not converged else \
            f"is uncertain (log T = {log_t:+.2f} ± {se:.2f} on {n} samples: not distinguishable from T = 1)"
        return {**base, **evidence, "fitted": False, "converged": converged,
                "reason": f"the temperature fit {why}; probabilities are left as trained"}
    t = math.exp(log_t)
    folds = fold_ids(y.numpy(), groups, seed)
    nll_fitted, nll_one = cross_validate(lambda part: _minimise(lambda v: float(_nll(z[part], y[part], v)),
                                                                *LOG_T_BOUNDS),
                                         lambda part, v: F.cross_entropy(z[part] / math.exp(v), y[part],
                                                                         reduction="none").numpy(), folds)
    check = out_of_sample_check(nll_fitted, nll_one, folds, groups is not None)
    evidence = {**evidence, **check}
    if not check["cv_accepted"]:
        return {**base, **evidence, "fitted": False, "converged": True,
                "reason": f"temperature {t:.2f} did not beat T = 1 out of sample (cross-validated NLL "
                          f"{check['cv_nll_fitted']:.3f} vs {check['cv_nll_t1']:.3f}); probabilities are left "
                          f"as trained"}
    return {**base, **evidence, "fitted": True, "converged": True, "temperature": t,
            "reason": f"temperature {t:.3f} fitted on {n} held-out samples (NLL {evidence['nll_before']:.4f} → "
                      f"{evidence['nll_after']:.4f}; cross-validated {check['cv_nll_t1']:.4f} → "
                      f"{check['cv_nll_fitted']:.4f})"}


# ------------------------------------------------------------------------------ out of sample
def fold_ids(strata, groups=None, seed: int = 0, n_folds: int = CV_FOLDS) -> np.ndarray:
    """An int fold id per sample. `groups` given: those (renumbered 0..G-1; at least two). Otherwise
    seeded folds stratified by `strata`: each stratum shuffled and dealt round-robin, continuing where
    the last stratum stopped so the folds stay equal in size; fewer than `n_folds` folds when a fold
    would hold under MIN_FOLD_SAMPLES samples (never under two)."""
    strata = np.asarray(strata)
    n = len(strata)
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if len(groups) != n:
            raise OculaError(f"groups has {len(groups)} fold ids for {n} samples")
        ids = np.unique(groups, return_inverse=True)[1].reshape(-1)
        if ids.max(initial=0) < 1:
            raise OculaError("groups needs at least two folds to check a calibration out of sample")
        return ids
    k = max(2, min(n_folds, n // MIN_FOLD_SAMPLES))
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(strata[order], kind="stable")]  # grouped by stratum, shuffled within
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.arange(n) % k
    return ids


def cross_validate(fit, held_out_nll, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the NLL at the parameter fitted without its fold and at the default (log T = 0):
    `fit(train_mask) -> log T`, `held_out_nll(mask, log T) -> per-sample NLL of the masked samples`."""
    fitted, default = np.zeros(len(folds)), np.zeros(len(folds))
    for fold in np.unique(folds):
        held = folds == fold
        fitted[held] = held_out_nll(held, fit(~held))
        default[held] = held_out_nll(held, 0.0)
    return fitted, default


def out_of_sample_check(nll_fitted: np.ndarray, nll_default: np.ndarray, folds: np.ndarray, given: bool) -> dict:
    """The evidence that a fitted parameter beats the default out of sample (means per sample): accepted
    when the mean gain exceeds CV_MARGIN_SE standard errors of itself."""
    gain = nll_default - nll_fitted
    se = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else math.inf
    return {"cv_nll_t1": float(nll_default.mean()), "cv_nll_fitted": float(nll_fitted.mean()),
            "cv_gain_se": se, "cv_folds": int(len(np.unique(folds))),
            "cv_folds_from": "groups" if given else "stratified", "cv_accepted": bool(gain.mean() > CV_MARGIN_SE * se)}


def _nll(z: torch.Tensor, y: torch.Tensor, log_t) -> torch.Tensor:
    return F.cross_entropy(z / torch.exp(torch.as_tensor(log_t, dtype=torch.float64)), y, reduction="sum")


def _derivatives(z, y, log_t: float) -> tuple[float, float]:
    """d NLL / d log T and d² NLL / d log T² of the summed NLL at log_t."""
    x = torch.tensor(log_t, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(_nll(z, y, x), x, create_graph=True)
    (h,) = torch.autograd.grad(g, x)
    return float(g.detach()), float(h)


# ------------------------------------------------------------------------------ measures
def adaptive_ece(labels, probs, n_bins: int = N_BINS) -> float:
    """ECE over equal-mass bins of top-1 confidence."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return 0.0
    conf, correct = p.max(1), (p.argmax(1) == y).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(n_bins, len(y))):
        total += abs(correct[part].sum() - conf[part].sum())
    return float(total / len(y))


def classwise_ece(labels, probs, n_bins: int = N_BINS) -> float:
    """Mean over classes of the equal-width ECE of p_k against [y == k]."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    errors = []
    for k in range(p.shape[1]):
        pk, hit = p[:, k], (y == k).astype(np.float64)
        idx = np.clip(np.searchsorted(edges[1:-1], pk, side="left"), 0, n_bins - 1)
        gap = np.abs(np.bincount(idx, hit, n_bins) - np.bincount(idx, pk, n_bins)).sum()
        errors.append(gap / len(y))
    return float(np.mean(errors))


def brier(labels, probs) -> float:
    """Mean over samples of Σ_k (p_k − [y == k])²."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return 0.0
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def measures(labels, probs) -> dict:
    return {"ece": expected_calibration_error(labels, probs, N_BINS), "adaptive_ece": adaptive_ece(labels, probs),
            "classwise_ece": classwise_ece(labels, probs), "nll": negative_log_likelihood(labels, probs),
            "brier": brier(labels, probs), "reliability": reliability_table(calibration_bins(labels, probs, N_BINS))}


def before_and_after(labels, logits, temperature: Optional[float]) -> dict:
    """The calibration section of an evaluation: every measure at T = 1 and at the model's T, and whether the
    probabilities the model gives are systematically under- or over-confident on these samples."""
    t = temperature or 1.0
    shipped = softmax(logits, t)
    before, after = measures(labels, softmax(logits)), measures(labels, shipped)
    return {"method": "temperature" if temperature else "none", "temperature": t, "bins": N_BINS,
            "binning": "ece: equal-width; adaptive_ece: equal-mass", "before": before, "after": after,
            "bias": confidence_bias(labels, shipped)}


def confidence_bias(labels, probs) -> dict:
    """Mean top-1 confidence against accuracy. A gap beyond two standard errors of the mean per-sample
    difference (confidence − correct) is a systematic bias, not noise: say which way."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return {"mean_confidence": None, "accuracy": None, "gap": None, "verdict": None}
    conf = p.max(1)
    diff = conf - (p.argmax(1) == y)
    gap, se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(y))) if len(y) > 1 else math.inf
    verdict = None
    if abs(gap) > 2 * se:
        verdict = "over-confident" if gap > 0 else "under-confident"
    return {"mean_confidence": float(conf.mean()), "accuracy": float(conf.mean() - gap), "gap": gap,
            "gap_se": se if math.isfinite(se) else None, "verdict": verdict}


# ------------------------------------------------------------------------------ selective prediction
def risk_coverage(labels, probs) -> dict:
    """Answer only the most confident share of samples: per coverage, the accuracy (1 − risk) and the
    confidence threshold that gives it; plus the accuracy at 90 % and 80 % coverage."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(y) == 0:  # nothing answered: no accuracy at any coverage, no curve
        return {"n": 0, "aurc": 0.0, **{f"{key}_{int(c * 100)}": None for c in COVERAGES
                                       for key in ("accuracy_at", "min_confidence_at")}, "curve": []}
    conf, correct = p.max(1), (p.argmax(1) == y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(correct[order])
    n = len(y)
    answered = np.arange(1, n + 1)
    rows = [{"coverage": float(k / n), "accuracy": float(hits[k - 1] / k), "risk": float(1 - hits[k - 1] / k),
             "min_confidence": float(conf[order][k - 1])} for k in _curve_points(n)]
    at = {}
    for c in COVERAGES:
        k = max(1, int(math.floor(c * n)))
        at[f"accuracy_at_{int(c * 100)}"] = float(hits[k - 1] / k)
        at[f"min_confidence_at_{int(c * 100)}"] = float(conf[order][k - 1])
    area = float(((1 - hits / answered)).mean())  # area under the risk–coverage curve
    return {"n": n, "aurc": area, **at, "curve": rows}


def _curve_points(n: int, points: int = 100) -> list[int]:
    return sorted({max(1, int(round(n * i / points))) for i in range(1, points + 1)}) if n else []
