"""Dataset statistics: class balance per split, image sizes, modes and formats."""
from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np

from ocula.audit.findings import Finding

IMBALANCE_RATIO = 5.0  # largest class / smallest class above this is reported


def class_counts(labels: np.ndarray, splits: list[str], classes: list[str]) -> dict[str, dict[str, int]]:
    """{split: {class: count}} with every class listed (zeros included), plus "all". `labels`: (N,) class
    indices (-1 unlabelled), or (N, K) multi-hot label sets (then: positives per class)."""
    out: dict[str, dict[str, int]] = {}
    for split in [*dict.fromkeys(splits), "all"]:
        mask = np.ones(len(labels), bool) if split == "all" else np.asarray(splits) == split
        counts = labels[mask].sum(0) if labels.ndim == 2 else \
            np.bincount(labels[mask & (labels >= 0)], minlength=len(classes))
        out[split] = {c: int(n) for c, n in zip(classes, counts)}
    return out


def _summary(values) -> dict:
    if not len(values):
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "p5": float(np.percentile(a, 5)), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max()), "mean": round(float(a.mean()), 2)}


def image_stats(sizes: list[tuple[int, int]], modes: list[str], formats: list[str],
                nbytes: Optional[list[int]] = None) -> dict:
    """Width, height, pixels and file size summaries; counts of modes and formats."""
    known = [(w, h) for w, h in sizes if w and h]
    stats = {"images": len(known),
             "width": _summary([w for w, _ in known]), "height": _summary([h for _, h in known]),
             "megapixels": _summary([w * h / 1e6 for w, h in known]),
             "distinct_sizes": len(set(known)),
             "common_sizes": [{"size": f"{w}×{h}", "count": n} for (w, h), n in Counter(known).most_common(5)],
             "modes": dict(Counter(m for m in modes if m)), "formats": dict(Counter(f for f in formats if f))}
    if nbytes:
        stats["file_kb"] = _summary([b / 1024 for b in nbytes if b])
    return stats


def balance_findings(counts: dict[str, dict[str, int]]) -> list[Finding]:
    per_class = counts.get("train") or counts["all"]
    present = {c: n for c, n in per_class.items() if n > 0}
    if len(present) < 2:
        return []
    largest, smallest = max(present, key=present.get), min(present, key=present.get)
    ratio = present[largest] / present[smallest]
    if ratio <= IMBALANCE_RATIO:
        return []
    return [Finding("class-imbalance", [], f"'{largest}' has {present[largest]} images, '{smallest}' "
                    f"{present[smallest]} ({ratio:.1f}×); consider balance=weighted-loss or sampler",
                    score=ratio, details={"largest": largest, "smallest": smallest, "ratio": round(ratio, 2)})]
