"""The two shapes a dataset split takes inside ocula, and the bundle of splits.

`FileSamples` are paths decoded lazily (in DataLoader workers); `TensorSamples` are a whole split
held in memory as one uint8 tensor (the airbench way: batch-wise augmentation, no per-image Python).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch

from ocula.errors import OculaError


@dataclass
class FileSamples:
    paths: list[str]
    labels: list  # single-label: an index into DatasetSplits.classes (-1 unlabelled); multi-label: a multi-hot
    #              tuple of K 0/1 ints (so a collated batch is (B, K), like TensorSamples' labels)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "FileSamples":
        return FileSamples([self.paths[i] for i in indices], [self.labels[i] for i in indices])


@dataclass
class TensorSamples:
    images: torch.Tensor  # uint8 in the modality's shape: images (N, C, H, W), clips (N, T, C, H, W)
    labels: torch.Tensor  # (N,) int64; multi-label: (N, K) multi-hot (0/1, any integer or float dtype)
    names: Optional[list[str]] = None  # a readable id per sample (path or "fashion-mnist/test/17")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices) -> "TensorSamples":
        idx = torch.as_tensor(indices, dtype=torch.long)
        names = [self.names[i] for i in idx.tolist()] if self.names is not None else None
        return TensorSamples(self.images[idx], self.labels[idx], names)


Samples = Union[FileSamples, TensorSamples]


def is_multilabel(samples) -> bool:
    """Multi-hot labels (a multi-label split) rather than one class index per sample."""
    if isinstance(samples, TensorSamples):
        return samples.labels.ndim == 2
    return bool(samples.labels) and isinstance(samples.labels[0], tuple)


def label_matrix(samples, num_classes: int) -> torch.Tensor:
    """(N, K) float multi-hot labels of a split; single-label splits become one-hot rows."""
    labels = samples.labels if isinstance(samples, TensorSamples) else torch.tensor(samples.labels)
    if labels.ndim == 2:
        return labels.float()
    return torch.nn.functional.one_hot(labels.long().clamp_min(0), num_classes).float()


def as_multilabel(samples, num_classes: int):
    """A single-label split with multi-hot labels (one label each), for `task=multilabel` on such data."""
    if samples is None or is_multilabel(samples):
        return samples
    hot = label_matrix(samples, num_classes).to(torch.uint8)
    if isinstance(samples, TensorSamples):
        return TensorSamples(samples.images, hot, samples.names)
    return FileSamples(list(samples.paths), [tuple(r) for r in hot.tolist()])


def pad_boxes(boxes, rows: int) -> np.ndarray:
    """(M, 5) boxes → (rows, 5) float32, the missing rows class −1 (a batch of labels becomes one tensor)."""
    out = np.zeros((rows, 5), dtype=np.float32)
    out[:, 0] = -1
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)[:rows]
    out[:len(boxes)] = boxes
    return out


def box_strata(labels, num_classes: int) -> list[int]:
    """Each image's most frequent box class (num_classes for an image with no box): what a split stratifies on."""
    strata = []
    for b in labels:
        cls = np.asarray(b)[:, 0]
        cls = cls[cls >= 0].astype(int)
        strata.append(int(np.bincount(cls).argmax()) if len(cls) else num_classes)
    return strata


def adapt_channels(samples: TensorSamples, channels: int) -> TensorSamples:
    """Grey samples repeated to RGB, or RGB reduced to grey, for a model of `channels` channels."""
    c = samples.images.shape[-3]  # images (N, C, H, W) or clips (N, T, C, H, W)
    if c == channels:
        return samples
    if channels == 3 and c == 1:
        shape = list(samples.images.shape)
        shape[-3] = 3
        images = samples.images.expand(*shape).contiguous()
    elif channels == 1 and c == 3:  # ITU-R 601 luma, as PIL's convert("L")
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        images = (samples.images.float() * w).sum(-3, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    else:
        raise OculaError(f"cannot convert {c}-channel images to {channels} channels")
    return TensorSamples(images, samples.labels, samples.names)


@dataclass
class DatasetSplits:
    """What a data source resolves to. `split_info` is recorded in the run directory."""

    classes: list[str]
    train: Optional[Samples] = None
    val: Optional[Samples] = None
    test: Optional[Samples] = None
    source: str = ""
    multilabel: bool = False  # labels are multi-hot sets (a `labels` column with '|', a list column)
    boxes: bool = False  # labels are boxes (M, 5): class (−1 pads), x1, y1, x2, y2 in [0, 1] (COCO, YOLO layouts)
    modality: str = "image"  # a name in ocula.modality.MODALITIES: "image" | "video" (samples are clips)
    channels: Optional[int] = None  # native channels when known (built-ins: 1)
    image_size: Optional[int] = None  # native square size when known (built-ins: 28, 8)
    mean: Optional[tuple] = None  # per-channel mean on [0,1] when known
    std: Optional[tuple] = None
    split_info: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> Samples:
        found = getattr(self, name, None)
        if found is None:
            have = [s for s in ("train", "val", "test") if getattr(self, s) is not None]
            raise OculaError(f"{self.source}: no '{name}' split (has: {', '.join(have) or 'none'})")
        return found
