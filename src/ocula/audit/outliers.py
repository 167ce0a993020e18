"""Outliers: images far from the rest of their class in embedding space.

Embeddings come from the label check's held-out pass, so images embedded by the same fold's model
are compared with each other only (models of different folds have different feature spaces).
Within a (fold, class) group the cosine distance to the class centroid is turned into a robust
z-score, (d - median) / (1.4826 · MAD): how unusual an image is for *its* class, whatever the spread.
"""
from __future__ import annotations

import numpy as np

from ocula.audit.findings import Finding, SampleRef

MIN_GROUP = 5  # fewer images of a class in a fold: no centroid worth trusting


def outlier_scores(embeddings: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """(N,) robust z-score of each image's distance from its class centroid (0 where not judged)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-8)
    scores = np.zeros(len(labels), np.float64)
    for f in np.unique(folds):
        for c in np.unique(labels):
            members = np.flatnonzero((folds == f) & (labels == c))
            if len(members) < MIN_GROUP:
                continue
            centroid = unit[members].mean(0)
            centroid /= max(np.linalg.norm(centroid), 1e-8)
            d = 1.0 - unit[members] @ centroid
            med = np.median(d)
            mad = 1.4826 * np.median(np.abs(d - med)) + 1e-6
            scores[members] = (d - med) / mad
    return scores


def outlier_findings(refs: list[SampleRef], scores: np.ndarray, min_score: float = 6.0,
                     max_fraction: float = 0.01) -> list[Finding]:
    """Images with z >= min_score, at most the farthest `max_fraction` of all (a readable report)."""
    order = np.argsort(-scores)
    limit = max(1, int(round(max_fraction * len(scores))))
    chosen = [i for i in order[:limit] if scores[i] >= min_score]
    return [Finding("outlier", [refs[i]], f"{refs[i].id}: unusual for class '{refs[i].label}' "
                    f"(z = {scores[i]:.1f})", score=round(float(scores[i]), 2), drop=[refs[i].id])
            for i in chosen]
