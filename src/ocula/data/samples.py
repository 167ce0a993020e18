"""The two shapes a dataset split takes inside ocula, and the bundle of splits.

`FileSamples` are paths decoded lazily (in DataLoader workers); `TensorSamples` are a whole split
held in memory as one uint8 tensor (the airbench way: batch-wise augmentation, no per-image Python).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import torch


@dataclass
class FileSamples:
    paths: list[str]
    labels: list[int]  # index into DatasetSplits.classes; -1 when unlabelled

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "FileSamples":
        return FileSamples([self.paths[i] for i in indices], [self.labels[i] for i in indices])


@dataclass
class TensorSamples:
    images: torch.Tensor  # (N, C, H, W) uint8, or clips (N, T, C, H, W) when DatasetSplits.kind == "video"
    labels: torch.Tensor  # (N,) int64
    names: Optional[list[str]] = None  # a readable id per sample (path or "fashion-mnist/test/17")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices) -> "TensorSamples":
        idx = torch.as_tensor(indices, dtype=torch.long)
        names = [self.names[i] for i in idx.tolist()] if self.names is not None else None
        return TensorSamples(self.images[idx], self.labels[idx], names)


Samples = Union[FileSamples, TensorSamples]


@dataclass
class DatasetSplits:
    """What a data source resolves to. `split_info` is recorded in the run directory."""

    classes: list[str]
    train: Optional[Samples] = None
    val: Optional[Samples] = None
    test: Optional[Samples] = None
    source: str = ""
    kind: str = "image"  # "image" | "video" (samples are clips: video files, frame folders or (T, C, H, W))
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
            from ocula.errors import OculaError

            have = [s for s in ("train", "val", "test") if getattr(self, s) is not None]
            raise OculaError(f"{self.source}: no '{name}' split (has: {', '.join(have) or 'none'})")
        return found
