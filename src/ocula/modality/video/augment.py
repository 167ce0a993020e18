"""Batch augmentation of clips (B, T, C, H, W): the image presets with T folded into channels.

One random draw per clip moves all its frames together; `select_frames` picks the T frames a video
model sees (uniform for evaluation, one random frame per segment for training); `time_flip` plays
half the clips backwards.
"""
from __future__ import annotations

from typing import Optional

import torch

from ocula.data.batch_augment import BatchAugment, to_float
from ocula.data.contract import DataContract


def select_frames(x: torch.Tensor, frames: Optional[int], gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Clips (B, N, ...) → (B, frames, ...): segment centres, or (with gen) a random frame per segment."""
    b, n = x.shape[:2]
    if not frames or n == frames:
        return x
    offset = torch.rand(b, frames, generator=gen) if gen is not None else torch.full((b, frames), 0.5)
    idx = ((torch.arange(frames) + offset) * n / frames).long().clamp_(max=n - 1)
    return x[torch.arange(b).unsqueeze(1), idx]


def fold_clips(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a (B, C, H, W) batch operation to clips (B, T, C, H, W), one random draw per clip."""
    b, t, c = x.shape[:3]
    y = fn(x.reshape(b, t * c, *x.shape[3:]))
    return y.reshape(b, t, c, *y.shape[-2:])


def reverse_time(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Clips (B, T, ...) with half of them (at random) played backwards."""
    back = torch.rand(x.shape[0], generator=gen) < 0.5
    if not back.any():
        return x
    x = x.clone()
    x[back] = x[back].flip(1)
    return x


class ClipAugment(BatchAugment):
    """A BatchAugment for clips. `train=False` is the eval path: centre frames, no randomness."""

    def __init__(self, contract: DataContract, preset: str = "light", hflip: bool = True, mixup: float = 0.0,
                 cutmix: float = 0.0, num_classes: int = 0, *, time_flip: bool = False, train: bool = True):
        super().__init__(contract, preset, hflip, mixup, cutmix, num_classes)
        self.time_flip = bool(time_flip) and preset != "none" and train
        self.train = train

    def operations(self) -> list[str]:
        ops = super().operations()
        ops.insert(len(ops) - (self.mixup > 0) - (self.cutmix > 0),
                   "time reversal" if self.time_flip else "no time reversal")
        return ops

    def __call__(self, x_uint8: torch.Tensor, y, gen: Optional[torch.Generator]):
        x_uint8 = select_frames(x_uint8, self.contract.frames, gen if self.train else None)
        if self.time_flip:
            x_uint8 = reverse_time(x_uint8, gen)
        x = fold_clips(lambda batch: self.geometry(batch, gen), to_float(x_uint8, self.contract))
        return self.mix(x, y, gen)
