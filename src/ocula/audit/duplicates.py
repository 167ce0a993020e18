"""Exact and near duplicates, and what they mean: extra copies, conflicting labels or leakage.

Exact: the same bytes (SHA-1 of the file, or of the pixel tensor for in-memory data).
Near: a perceptual comparison of small grey images, in two stages so it scales to 60k images:
  1. candidates: each image's few nearest neighbours by cosine of 16×16 thumbnails (mean removed),
     one matrix product per chunk;
  2. verdict: the cosine of the 32×32 images, the best over slight zooms of either one (a slightly
     cropped copy is a zoomed one), against a threshold set by the dataset itself: a near pair must
     be several times closer than a typical neighbour is (see `similarity_threshold`).
Resizing and re-encoding barely move the 32×32 image; so near copies score close to 1.
Copies are grouped (connected pairs); a group spanning splits is leakage, a group under several
labels is a label conflict, otherwise it is an extra copy.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ocula import log
from ocula.audit.findings import Finding, SampleRef

SMALL = 32  # side of the grey image every near-duplicate feature comes from
KEEP_ORDER = {"test": 0, "val": 1, "train": 2, "": 3}  # leakage: keep the held-out copy


@dataclass
class NearDuplicateParams:
    candidate_similarity: float = 0.8  # 16×16 thumbnail cosine to be looked at closely
    neighbours: int = 5  # at most this many candidates per image
    zooms: tuple = (1.0, 0.97, 0.94, 0.91, 0.88)  # slight crops tried when comparing a pair
    max_dissimilarity: float = 0.10  # 1 - cosine of a near pair, at most
    relative: float = 0.25  # ... and at most this fraction of the typical nearest-neighbour one
    refine_margin: float = 0.05  # pairs this close below the bar are also tried with half-pixel shifts
    chunk: int = 1024  # rows compared at once (memory: chunk × N floats)


def small_gray(img) -> np.ndarray:
    """A decoded PIL image → (32, 32) uint8 grey, the input of every near-duplicate feature."""
    from PIL import Image

    return np.asarray(img.convert("L").resize((SMALL, SMALL), Image.Resampling.BOX), dtype=np.uint8)


def small_gray_tensors(images) -> np.ndarray:
    """(N, C, H, W) uint8 tensor → (N, 32, 32) uint8 grey, in batches."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, images.shape[0], 4096):
        x = images[start:start + 4096].float().mean(1, keepdim=True)
        x = F.interpolate(x, size=(SMALL, SMALL), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, SMALL, SMALL), np.uint8)


def thumb_vectors(small: np.ndarray, side: int = 16) -> np.ndarray:
    """(N, 32, 32) → (N, side²) float32: average-pooled, mean removed, unit length (zero if flat)."""
    f = SMALL // side
    x = small.astype(np.float32).reshape(len(small), side, f, side, f).mean((2, 4)).reshape(len(small), -1)
    x -= x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-3)


def candidate_pairs(vectors: np.ndarray, params: NearDuplicateParams,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """→ ((P, 2) pairs i < j whose coarse thumbnails are close, (N,) each image's k-th best coarse
    similarity). Each row keeps its `neighbours` most similar above `candidate_similarity` (a cap, so
    a dataset of look-alikes cannot make N² pairs); the k-th best is what a typical neighbour is."""
    import torch

    n, found = len(vectors), []
    kth = np.zeros(n, np.float32)
    k = min(params.neighbours, max(1, n - 1))
    every = torch.from_numpy(vectors)
    for start in log.progress(range(0, n, params.chunk), desc="near duplicates: search", unit="chunk",
                          disable=not progress, leave=False):
        sims = every[start:start + params.chunk] @ every.T  # (b, N)
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -1.0  # not its own neighbour
        top_sims, top = sims.topk(k, dim=1)  # torch's topk: ~10x numpy's argpartition here
        top_sims, top = top_sims.numpy(), top.numpy()
        kth[start:start + len(rows)] = top_sims[:, -1]
        ok = top_sims >= params.candidate_similarity
        i = np.broadcast_to((rows.numpy() + start)[:, None], top.shape)[ok]
        j = top[ok]
        found.append(np.stack([np.minimum(i, j), np.maximum(i, j)], 1))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0), kth


def alignment_grids(zooms, shifts: bool, side: int = SMALL):
    """Sampling grids for slight zooms (a cropped copy is a zoomed one), with or without half-pixel
    shifts; the identity is left out (it is compared directly)."""
    import torch
    import torch.nn.functional as F

    step = 1.0 / side  # half a pixel in normalised [-1, 1] coordinates
    moves = [(0.0, 0.0), (step, 0.0), (-step, 0.0), (0.0, step), (0.0, -step)] if shifts else [(0.0, 0.0)]
    thetas = [[[z, 0.0, dx], [0.0, z, dy]] for z in zooms for dx, dy in moves if (z, dx, dy) != (1.0, 0.0, 0.0)]
    if not thetas:
        return torch.zeros(0, side, side, 2)
    theta = torch.tensor(thetas, dtype=torch.float32)
    return F.affine_grid(theta, [len(thetas), 1, side, side], align_corners=False)  # (T, side, side, 2)


def _unit(x):
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-3)


def aligned_similarity(small: np.ndarray, pairs: np.ndarray, zooms, shifts: bool,
                       progress: bool = True) -> np.ndarray:
    """Cosine of the 32×32 grey images of each pair (mean removed), the best over slight zooms (and
    half-pixel shifts) of either one onto the other."""
    import torch
    import torch.nn.functional as F

    grids = alignment_grids(zooms, shifts)
    out = np.zeros(len(pairs), np.float32)
    chunk = 4096
    for start in log.progress(range(0, len(pairs), chunk), desc="near duplicates: compare", unit="chunk",
                          disable=not progress or len(pairs) <= chunk, leave=False):
        p = pairs[start:start + chunk]
        a = torch.from_numpy(small[p[:, 0]]).float().unsqueeze(1)  # (B, 1, 32, 32)
        b = torch.from_numpy(small[p[:, 1]]).float().unsqueeze(1)
        ua, ub = _unit(a), _unit(b)
        best = (ua * ub).sum(1)
        for grid in grids:
            g = grid.expand(len(p), -1, -1, -1)
            wa = F.grid_sample(a, g, mode="bilinear", padding_mode="border", align_corners=False)
            wb = F.grid_sample(b, g, mode="bilinear", padding_mode="border", align_corners=False)
            best = torch.maximum(best, torch.maximum((_unit(wa) * ub).sum(1), (ua * _unit(wb)).sum(1)))
        out[start:start + len(p)] = best.numpy()
    return out


def similarity_threshold(kth: np.ndarray, params: NearDuplicateParams) -> float:
    """A pair is a near duplicate when far closer than typical neighbours in *this* dataset: its
    dissimilarity (1 - cosine) below `relative` × the median dissimilarity of each image's k-th
    nearest neighbour (its first few places may be its own copies), and
    never above `max_dissimilarity`. Look-alike datasets (Fashion-MNIST) get a strict bar, varied
    photos the fixed one."""
    typical = float(np.median(1.0 - kth)) if len(kth) else 1.0
    return 1.0 - min(params.max_dissimilarity, params.relative * typical)


def near_pairs(small: np.ndarray, params: NearDuplicateParams, progress: bool = True):
    """→ (list of (i, j, similarity) near-duplicate pairs, the similarity threshold used)."""
    pairs, kth = candidate_pairs(thumb_vectors(small), params, progress)
    threshold = similarity_threshold(kth, params)
    # Zooms first; the finer search with shifts only where a pair is already close (most are not).
    sims = aligned_similarity(small, pairs, params.zooms, False, progress)
    close = np.flatnonzero(sims >= threshold - params.refine_margin)
    if len(close):
        sims[close] = np.maximum(sims[close], aligned_similarity(small, pairs[close], params.zooms, True, progress))
    keep = sims >= threshold
    return [(int(i), int(j), float(s)) for (i, j), s in zip(pairs[keep], sims[keep])], threshold


def exact_groups(digests: list[Optional[str]]) -> list[list[int]]:
    by_digest = defaultdict(list)
    for i, d in enumerate(digests):
        if d:
            by_digest[d].append(i)
    return [g for g in by_digest.values() if len(g) > 1]


def connected_groups(n: int, pairs) -> list[list[int]]:
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j, *_ in pairs:
        parent[find(i)] = find(j)
    groups = defaultdict(list)
    for i in {x for p in pairs for x in p[:2]}:
        groups[find(i)].append(i)
    return [sorted(g) for g in groups.values()]


def group_finding(members: list[int], refs: list[SampleRef], match: str, pair_stats=None) -> Finding:
    """Name a group of copies by what it means, and choose the copies a clean manifest drops."""
    items = [refs[i] for i in members]
    splits = sorted({r.split for r in items}, key=KEEP_ORDER.get)
    labels = sorted({r.label for r in items if r.label is not None})
    details = {"match": match, "splits": splits, "labels": labels, "size": len(items)}
    if pair_stats:
        details.update(pair_stats)
    names = ", ".join(r.id for r in items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
    if len(splits) > 1:
        keep_split = splits[0]
        drop = [r.id for r in items if r.split != keep_split]
        conflict = " with conflicting labels" if len(labels) > 1 else ""
        return Finding("leakage", items, f"{match} copies across {'/'.join(splits)}{conflict}: {names}",
                       score=1.0, details={**details, "conflicting_labels": len(labels) > 1}, drop=drop)
    if len(labels) > 1:
        return Finding("conflicting-labels", items, f"{match} copies labelled {' vs '.join(labels)}: {names}",
                       score=1.0, details=details, drop=[r.id for r in items])
    category = "exact-duplicate" if match == "exact" else "near-duplicate"
    return Finding(category, items, f"{len(items)} {match} copies: {names}", score=1.0, details=details,
                   drop=[r.id for r in items[1:]])


def duplicate_findings(refs: list[SampleRef], digests: list[Optional[str]], small: Optional[np.ndarray],
                       usable: np.ndarray, params: NearDuplicateParams) -> tuple[list[Finding], dict]:
    """Exact groups first; near groups among what remains distinct. → (findings, counts)."""
    exact = exact_groups([d if ok else None for d, ok in zip(digests, usable)])
    findings = [group_finding(g, refs, "exact") for g in exact]
    counts = {"exact_groups": len(exact), "near_groups": 0, "near_pairs": 0}
    if small is None or int(usable.sum()) < 2:
        return findings, counts
    # One representative per exact group, so a near pair is not reported again for each copy;
    # the copies join their representative's near group afterwards.
    copies_of = {g[0]: g for g in exact}
    extra = {i for g in exact for i in g[1:]}
    rep = np.array([i for i in np.flatnonzero(usable) if i not in extra], dtype=np.int64)
    found, threshold = near_pairs(small[rep], params)
    pairs = [(int(rep[i]), int(rep[j]), s) for i, j, s in found]
    counts.update(near_pairs=len(pairs), near_similarity_threshold=round(threshold, 4))
    groups = connected_groups(len(refs), pairs)
    lowest = {}
    root = {i: g[0] for g in groups for i in g}
    for i, _, s in pairs:
        lowest[root[i]] = min(lowest.get(root[i], 1.0), s)
    counts["near_groups"] = len(groups)
    for g in groups:
        members = sorted({m for i in g for m in copies_of.get(i, [i])})
        findings.append(group_finding(members, refs, "near", {"min_similarity": round(lowest[g[0]], 4)}))
    return findings, counts
