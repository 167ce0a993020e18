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


def iterative_split(label_sets, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, val indices), both sorted, of multi-hot labels (N, K): iterative stratification
    (Sechidis, Tsoumakas & Vlahavas, 2011). The rarest label still to place is dealt out first, each of
    its samples to the split that wants that label most; so every label's share of validation stays near
    `val_fraction`, rare ones included. Samples without a label are split in proportion at the end.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise OculaError(f"val_fraction must be in [0, 1), not {val_fraction}")
    y = np.asarray(label_sets, dtype=bool).reshape(len(label_sets), -1)
    n = len(y)
    if val_fraction == 0.0 or n == 0:
        return list(range(n)), []
    rng = np.random.default_rng(seed)
    ratios = np.array([1.0 - val_fraction, val_fraction])
    want = ratios[:, None] * y.sum(0)[None, :]  # (2, K) label counts each split still wants
    want_total = ratios * n
    split_of = np.full(n, -1)
    left = y.copy()
    for _ in range(y.shape[1]):
        counts = left[split_of == -1].sum(0)
        if not counts.any():
            break
        label = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
        for i in rng.permutation(np.flatnonzero((split_of == -1) & y[:, label])):
            best = np.flatnonzero(want[:, label] == want[:, label].max())
            if len(best) > 1:  # ties: the split that wants more samples, then a coin
                best = best[want_total[best] == want_total[best].max()]
            s = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
            split_of[i] = s
            want[s] -= y[i]
            want_total[s] -= 1
    rest = rng.permutation(np.flatnonzero(split_of == -1))  # samples without any label
    k = int(np.clip(np.floor(want_total[1] + 0.5), 0, len(rest)))
    split_of[rest[:k]], split_of[rest[k:]] = 1, 0
    return np.flatnonzero(split_of == 0).tolist(), np.flatnonzero(split_of == 1).tolist()
