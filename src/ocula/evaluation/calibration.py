"""Probabilities a user can act on: temperature scaling and the measures that show calibration.

    fit = fit_temperature(val_logits, val_labels)      # {"fitted": True, "temperature": 0.41, ...}
    measures(labels, probs)                             # ece, adaptive_ece, classwise_ece, nll, brier
    risk_coverage(labels, probs)                        # accuracy when only the most confident p% answer

Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted on held-out data
by minimising the negative log-likelihood; it changes confidence, never the predicted class. The
fit runs over log T (bounded to [1/20, 20]) and is only used when it is trustworthy: enough samples,
an interior optimum (the NLL does not keep falling towards a bound, as it does when the held-out
split has no errors), and a small standard error of log T from the NLL's curvature (or, when the
error is larger, a T at least two standard errors away from 1).

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

from ocula.evaluation.metrics import (calibration_bins, expected_calibration_error, negative_log_likelihood,
                                      reliability_table)

N_BINS = 15
MIN_SAMPLES = 20  # fewer held-out samples than this: no fit
MAX_LOG_T_SE = 0.2  # standard error of log T above this (T uncertain by more than ±22 %): no fit
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
COVERAGES = (0.9, 0.8)


# ------------------------------------------------------------------------------ temperature
def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    return torch.as_tensor(np.asarray(logits), dtype=torch.float64).div(temperature).softmax(1).numpy()


def fit_temperature(logits, labels) -> dict:
    """One temperature by minimising held-out NLL → report: fitted, temperature, why not, evidence."""
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
    return {**base, **evidence, "fitted": True, "converged": True, "temperature": t,
            "reason": f"temperature {t:.3f} fitted on {n} held-out samples (NLL {evidence['nll_before']:.4f} → "
                      f"{evidence['nll_after']:.4f})"}


def _nll(z: torch.Tensor, y: torch.Tensor, log_t) -> torch.Tensor:
    return F.cross_entropy(z / torch.exp(torch.as_tensor(log_t, dtype=torch.float64)), y, reduction="sum")


def _derivatives(z, y, log_t: float) -> tuple[float, float]:
    """d NLL / d log T and d² NLL / d log T² of the summed NLL at log_t."""
    x = torch.tensor(log_t, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(_nll(z, y, x), x, create_graph=True)
    (h,) = torch.autograd.grad(g, x)
    return float(g.detach()), float(h)


def _minimise(f, lo: float, hi: float) -> float:
    """The minimum of a unimodal function on [lo, hi] (the NLL is convex in 1/T); a function still
    falling at a bound ends there, so that bound is returned itself."""
    from scipy.optimize import minimize_scalar

    best = float(minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7}).x)
    for edge in (lo, hi):
        if f(edge) <= f(best):
            best = edge
    return best


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
    """The calibration section of an evaluation: every measure at T = 1 and at the model's T."""
    t = temperature or 1.0
    before, after = measures(labels, softmax(logits)), measures(labels, softmax(logits, t))
    return {"method": "temperature" if temperature else "none", "temperature": t, "bins": N_BINS,
            "binning": "ece: equal-width; adaptive_ece: equal-mass", "before": before, "after": after}


# ------------------------------------------------------------------------------ selective prediction
def risk_coverage(labels, probs) -> dict:
    """Answer only the most confident share of samples: per coverage, the accuracy (1 − risk) and the
    confidence threshold that gives it; plus the accuracy at 90 % and 80 % coverage."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
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
    area = float(((1 - hits / answered)).mean()) if n else 0.0  # area under the risk–coverage curve
    return {"n": n, "aurc": area, **at, "curve": rows}


def _curve_points(n: int, points: int = 100) -> list[int]:
    return sorted({max(1, int(round(n * i / points))) for i in range(1, points + 1)}) if n else []
