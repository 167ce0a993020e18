"""Every sample of a dataset in one flat list, whatever the source (folder, CSV, built-in tensors).

The audit looks at all splits at once (leakage is a cross-split question), so it resolves the data
without carving a validation split out of train: the splits are the ones the user has.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from ocula.audit.findings import SampleRef
from ocula.data.samples import DatasetSplits, FileSamples, TensorSamples
from ocula.errors import OculaError
from ocula.modality.sources import resolve_data

SPLITS = ("train", "val", "test")


@dataclass
class Inventory:
    data: DatasetSplits
    refs: list[SampleRef]  # one per sample, in split order
    labels: np.ndarray  # (N,) class index, -1 unlabelled (multi-label data: -1; the sets are in refs' labels)
    positions: list[tuple[str, int]]  # (split, index within that split's samples)
    root: Optional[str] = None  # folder or manifest folder for file data
    kind: str = "files"  # files | tensors
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) from the scan
    label_sets: Optional[np.ndarray] = None  # (N, K) multi-hot, for multi-label data; boxes: classes present
    boxes: Optional[list] = None  # detection data: per sample (M, 5) class, x1, y1, x2, y2 in [0, 1], no padding

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    def __len__(self) -> int:
        return len(self.refs)

    def samples(self, indices: Sequence[int]):
        """The given inventory rows as one FileSamples / TensorSamples (for training, predicting)."""
        by_split: dict[str, list[int]] = {}
        for i in indices:
            split, j = self.positions[i]
            by_split.setdefault(split, []).append(j)
        parts = [self.data.split(s).subset(js) for s, js in by_split.items()]
        order = [i for s in by_split for i in indices if self.positions[i][0] == s]
        whole = _concat(parts)
        # Back to the caller's order: subset() grouped rows by split.
        where = {row: k for k, row in enumerate(order)}
        return whole.subset([where[i] for i in indices])

    def pixels(self, i: int) -> torch.Tensor:
        """(C, H, W) uint8 of an in-memory sample."""
        split, j = self.positions[i]
        return self.data.split(split).images[j]


def load_inventory(data, splits: Optional[Sequence[str]] = None) -> Inventory:
    """A data spec (built-in name, folder, CSV) or DatasetSplits → Inventory of the chosen splits."""
    if isinstance(data, DatasetSplits):
        resolved = data
    else:
        resolved = resolve_data(data, val_fraction=0.0, require_train=False)
    wanted = list(splits or SPLITS)
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown:
        raise OculaError(f"unknown split {unknown[0]!r}: choose from {', '.join(SPLITS)}")
    root = _root_of(resolved.source)
    refs, labels, positions, kinds, sets = [], [], [], set(), []
    boxes = [] if resolved.boxes else None
    for split in wanted:
        samples = getattr(resolved, split)
        if samples is None:
            continue
        kinds.add("tensors" if isinstance(samples, TensorSamples) else "files")
        split_labels = samples.labels.tolist() if isinstance(samples, TensorSamples) else list(samples.labels)
        for j, label in enumerate(split_labels):
            if boxes is not None:  # an image's label is its boxes: its set is the classes they name
                boxes.append(_unpadded(label))
                label = tuple(int(k in set(boxes[-1][:, 0].astype(int).tolist())) for k in range(len(resolved.classes)))
            refs.append(_ref(samples, j, split, label, resolved.classes, root, len(refs)))
            labels.append(-1 if resolved.multilabel or boxes is not None else label)
            if resolved.multilabel or boxes is not None:
                sets.append(label)
            positions.append((split, j))
    if not refs:
        raise OculaError(f"nothing to audit in {resolved.source or data} (splits: {', '.join(wanted)})")
    if len(kinds) > 1:
        raise OculaError("cannot audit a mix of in-memory and file splits")
    return Inventory(resolved, refs, np.asarray(labels, dtype=np.int64), positions, root, kinds.pop(),
                     list(resolved.skipped),
                     np.asarray(sets, dtype=np.uint8).reshape(len(refs), -1) if sets else None, boxes)


def _unpadded(label) -> np.ndarray:
    """(M, 5) float32 boxes without their padding rows (class −1)."""
    rows = np.asarray(label.numpy() if isinstance(label, torch.Tensor) else label, np.float32).reshape(-1, 5)
    return rows[rows[:, 0] >= 0]


def _root_of(source: str) -> Optional[str]:
    if source and os.path.isdir(source):
        return source
    if source and os.path.isfile(source):
        return os.path.dirname(source)
    return None


def _ref(samples, j: int, split: str, label, classes, root, index: int) -> SampleRef:
    if isinstance(label, (list, tuple)):  # multi-hot: the set's names, as the CSV writes them
        name = "|".join(c for c, on in zip(classes, label) if on) or None
    else:
        name = classes[label] if label >= 0 else None
    if isinstance(samples, TensorSamples):
        sample_id = samples.names[j] if samples.names else f"{split}/{j}"
        return SampleRef(sample_id, split, name, None, index)
    path = samples.paths[j]
    return SampleRef(display_id(path, root), split, name, path, index)


def display_id(path: str, root: Optional[str]) -> str:
    """A path relative to the data root when inside it (shorter in reports), else absolute."""
    if root:
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            return rel
    return path


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], FileSamples):
        return FileSamples([p for s in parts for p in s.paths], [y for s in parts for y in s.labels])
    names = None
    if all(s.names is not None for s in parts):
        names = [n for s in parts for n in s.names]
    return TensorSamples(torch.cat([s.images for s in parts]), torch.cat([s.labels for s in parts]), names)
