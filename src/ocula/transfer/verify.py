"""Verification ("same identity?") and open-set identification on embeddings.

    ocula verify RUN --calibrate DATA      # ROC on labelled pairs → RUN/verify.json (+ roc.csv, roc.png)
    ocula verify RUN a.jpg b.jpg           # cosine score ≥ the stored threshold → same

The threshold is chosen on a validation set of identities, never on the pairs it is judged by: by
default the one whose false-accept rate (FAR, different identities accepted) is at most 1%; or
`criterion="eer"`, where FAR equals the false-reject rate. Reported: EER, TAR (true-accept rate)
at FAR = 0.1%, 1%, 10%, and ROC AUC.

Open-set identification: `Gallery.enroll(vectors, identities)` keeps one mean template per
identity; `identify` names the closest identity, or None below the threshold (an unknown person).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ocula.errors import OculaError
from ocula.io import atomic_path, read_json, write_json, write_text
from ocula.transfer.embed import Embedder, embed_dataset

FAR_TARGETS = (0.001, 0.01, 0.1)
MAX_PAIRS = 2_000_000  # pairs scored when calibrating; more are sampled down
CALIBRATION_FILE = "verify.json"


# --------------------------------------------------------------------------------- metrics
def pair_scores(vectors: np.ndarray, labels, max_pairs: int = MAX_PAIRS, seed: int = 0):
    """Every pair i < j (or a seeded sample of max_pairs) → (cosine scores, same-label flags)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        raise OculaError("verification needs at least two labelled images")
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i, j = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
        keep = i != j
        i, j = i[keep], j[keep]
    scores = np.einsum("nd,nd->n", vectors[i], vectors[j])
    return scores.astype(np.float64), labels[i] == labels[j]


def roc(scores: np.ndarray, same: np.ndarray):
    """→ (far, tar, thresholds), thresholds descending; accept when score ≥ threshold."""
    same = np.asarray(same, bool)
    pos, neg = int(same.sum()), int((~same).sum())
    if pos == 0 or neg == 0:
        raise OculaError("verification needs pairs of the same and of different identities "
                         "(at least two images of one class and two classes)")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tar = np.cumsum(y)[last] / pos
    far = np.cumsum(~y)[last] / neg
    return np.r_[0.0, far], np.r_[0.0, tar], np.r_[np.inf, s[last]]


def verification_metrics(scores: np.ndarray, same: np.ndarray, far_targets=FAR_TARGETS) -> dict:
    far, tar, thr = roc(scores, same)
    frr = 1 - tar
    k = int(np.argmax(far >= frr))  # first point where FAR catches up with FRR
    # linear interpolation between points k-1 and k for the crossing
    a = (far[k - 1] - frr[k - 1]) / ((far[k - 1] - frr[k - 1]) - (far[k] - frr[k])) if k else 0.0
    eer = float(far[k - 1] + a * (far[k] - far[k - 1])) if k else float(far[0])
    at = {}
    for target in far_targets:
        i = int(np.flatnonzero(far <= target)[-1])
        at[f"{target:g}"] = {"tar": float(tar[i]), "far": float(far[i]), "threshold": float(thr[i])}
    return {"eer": eer, "eer_threshold": float(thr[k]), "auc": _area(far, tar),
            "tar_at_far": at, "pairs": {"same": int(np.sum(same)), "different": int(np.sum(~np.asarray(same)))}}


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x), written out: np.trapezoid is numpy >= 2 only, np.trapz gone in numpy 2.4."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def choose_threshold(metrics: dict, criterion: str = "far", far: float = 0.01) -> float:
    if criterion == "eer":
        return metrics["eer_threshold"]
    key = f"{far:g}"
    if key not in metrics["tar_at_far"]:
        raise OculaError(f"no ROC point computed for FAR={far:g}")
    return metrics["tar_at_far"][key]["threshold"]


def rates_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> dict:
    """TAR and FAR of a fixed threshold (chosen elsewhere) on these pairs."""
    same = np.asarray(same, bool)
    accept = scores >= threshold
    return {"tar": float(accept[same].mean()), "far": float(accept[~same].mean()), "threshold": float(threshold)}


# --------------------------------------------------------------------------------- run level
def calibrate(run, data: str, split: Optional[str] = None, far: float = 0.01, criterion: str = "far",
              out_dir=None, batch_size: int = 64, device: str = "auto") -> dict:
    """Choose the decision threshold of `run` on labelled data (identities may be unseen in training)
    and store it in RUN/verify.json (or out_dir), with roc.csv and roc.png beside it."""
    embedder = Embedder.load(run, device)
    emb = embed_dataset(embedder, data, split=split, batch_size=batch_size)
    scores, same = pair_scores(emb.vectors, emb.labels)
    metrics = verification_metrics(scores, same, tuple(sorted(set(FAR_TARGETS) | {far})))
    threshold = choose_threshold(metrics, criterion, far)
    result = {"threshold": threshold, "criterion": criterion if criterion == "eer" else f"far<={far:g}",
              "data": str(data), "split": split or "all", "images": len(emb), **metrics}
    out = Path(out_dir) if out_dir else _run_folder(run)
    _write_calibration(out, result, scores, same)
    return result


def _run_folder(run) -> Path:
    p = Path(run)
    return p if p.is_dir() else p.parent


def _write_calibration(out: Path, result: dict, scores: np.ndarray, same: np.ndarray) -> None:
    far, tar, thr = roc(scores, same)
    step = max(1, len(far) // 2000)  # a readable CSV and plot; the metrics used every point
    rows = ["threshold,far,tar"] + [f"{t:.6f},{f:.6f},{r:.6f}" for t, f, r in zip(thr[1::step], far[1::step],
                                                                               tar[1::step])]
    write_json(out / CALIBRATION_FILE, result)
    write_text(out / "roc.csv", "\n".join(rows) + "\n")
    _plot_roc(far, tar, result, out / "roc.png")


def _plot_roc(far, tar, result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(np.clip(far, 1e-5, 1), tar)
    ax.set(xscale="log", xlabel="false accept rate", ylabel="true accept rate", ylim=(0, 1.01),
           title=f"ROC  EER {result['eer']:.3f}  AUC {result['auc']:.3f}")
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def load_calibration(run) -> dict:
    path = _run_folder(run) / CALIBRATION_FILE
    if not path.is_file():
        raise OculaError(f"{run}: no decision threshold yet; run `ocula verify {run} --calibrate DATA` "
                         f"on labelled validation images first")

    return read_json(path)


def verify_pair(run, a, b, threshold: Optional[float] = None, device: str = "auto") -> dict:
    """Two images → {"score", "threshold", "same"}; the threshold from RUN/verify.json by default."""
    threshold = load_calibration(run)["threshold"] if threshold is None else threshold
    va, vb = Embedder.load(run, device).embed([a, b])
    score = float(va @ vb)
    return {"a": str(a), "b": str(b), "score": score, "threshold": float(threshold), "same": score >= threshold}


# --------------------------------------------------------------------------------- open set
class Gallery:
    """Enrolled identities as mean embeddings (templates); unknown faces fall below the threshold."""

    def __init__(self):
        self.names: list = []
        self.templates = np.zeros((0, 0), np.float32)

    def enroll(self, vectors: np.ndarray, identities) -> "Gallery":
        identities = np.asarray(identities)
        names = sorted(set(identities.tolist()))
        means = np.stack([vectors[identities == n].mean(0) for n in names])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        if len(self.names):
            self.templates = np.concatenate([self.templates, means])
        else:
            self.templates = means
        self.names += names
        return self

    def identify(self, vectors: np.ndarray, threshold: float):
        """→ (identity or None per row, best score per row)."""
        if not self.names:
            raise OculaError("the gallery is empty: enroll identities first")
        sims = np.atleast_2d(vectors) @ self.templates.T
        best = sims.argmax(1)
        scores = sims[np.arange(len(best)), best]
        return [self.names[b] if s >= threshold else None for b, s in zip(best, scores)], scores


def open_set_metrics(gallery: Gallery, vectors: np.ndarray, identities, threshold: float) -> dict:
    """Probes of enrolled identities should be named correctly (detection and identification rate,
    DIR); probes of others should be rejected (their false-alarm rate, FAR)."""
    predicted, _ = gallery.identify(vectors, threshold)
    identities = list(identities)
    known = [i for i, t in enumerate(identities) if t in gallery.names]
    unknown = [i for i, t in enumerate(identities) if t not in gallery.names]
    dir_ = np.mean([predicted[i] == identities[i] for i in known]) if known else float("nan")
    far = np.mean([predicted[i] is not None for i in unknown]) if unknown else float("nan")
    return {"dir": float(dir_), "far_unknown": float(far), "known_probes": len(known),
            "unknown_probes": len(unknown), "threshold": float(threshold)}
