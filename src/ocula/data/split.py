"""Seeded, per-class proportional train/validation splits."""
from __future__ import annotations

import numpy as np

from ocula.errors import OculaError


def stratified_split(labels, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, val indices), both sorted, into `labels`.

    Each class gives round(n * val_fraction) samples to validation, at least 1 when it has two or
    more samples and always leaving at least 1 for training; a class with one sample stays in
    train. The same labels, fraction and seed always give the same split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise OculaError(f"val_fraction must be in [0, 1), not {val_fraction}")
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    if val_fraction == 0.0 or len(labels) == 0:
        return everything.tolist(), []
    rng = np.random.default_rng(seed)
    val_parts = []
    for cls in np.unique(labels):  # sorted, so the draw order is fixed for a seed
        members = everything[labels == cls]
        n = len(members)
        if n < 2:
            continue
        k = int(np.floor(n * val_fraction + 0.5))  # round half up, unlike Python's round()
        k = min(max(k, 1), n - 1)
        val_parts.append(rng.choice(members, size=k, replace=False))
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.array([], dtype=np.int64)
    in_val = np.zeros(len(labels), dtype=bool)
    in_val[val] = True
    return everything[~in_val].tolist(), val.tolist()
