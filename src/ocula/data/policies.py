"""torchvision's RandAugment and TrivialAugmentWide, drawn per image for a whole uint8 batch.

torchvision's transforms draw one operation per call, so a batch passed to them would get the same
operation everywhere. Here the draws are per image (from the caller's generator, so every DDP rank
and every resumed run sees the same ones) and the images that drew the same (operation, magnitude)
go through torchvision's own implementation of that operation together: one call per distinct draw,
not per image. Operations, magnitudes and fills are torchvision's (its `_AUGMENTATION_SPACE` table and
`_apply_image_or_video_transform`), so results equal torchvision's on each image.

Inputs are uint8 (B, ..., C, H, W) with C 1 or 3: a clip (B, T, C, H, W) gets one draw for all its frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ocula.errors import OculaError

RANDAUGMENT = {"num_ops": 2, "magnitude": 9}  # torchvision's defaults, the paper's ImageNet setting
BINS = 31  # torchvision's num_magnitude_bins


@dataclass
class Draw:
    """One operation slot for a batch: operation index, magnitude bin and sign per image, each (B,)."""
    op: torch.Tensor
    bin: torch.Tensor
    negative: torch.Tensor


class BatchPolicy:
    """`name`: randaugment (2 operations at magnitude 9 of 31) or trivialaugment (TrivialAugmentWide:
    one operation at a random magnitude)."""

    def __init__(self, name: str):
        from torchvision.transforms import v2

        cls = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}[name]
        self.name = name
        self.tv = cls(num_magnitude_bins=BINS)  # interpolation nearest, fill 0: torchvision's defaults
        space = getattr(self.tv, "_AUGMENTATION_SPACE", None)
        if space is None or not hasattr(self.tv, "_apply_image_or_video_transform"):
            import torchvision

            raise OculaError(f"augment {name}: torchvision {torchvision.__version__} lacks the v2 auto-augment "
                             f"internals ocula applies per image")
        self.ops = list(space)
        self.slots = RANDAUGMENT["num_ops"] if name == "randaugment" else 1

    def describe(self) -> str:
        if self.name == "randaugment":
            return f"RandAugment {RANDAUGMENT['num_ops']} ops at magnitude {RANDAUGMENT['magnitude']}/{BINS} (torchvision)"
        return "TrivialAugmentWide, one op at a random magnitude (torchvision)"

    def draw(self, b: int, gen: Optional[torch.Generator]) -> list[Draw]:
        draws = []
        for _ in range(self.slots):
            op = torch.randint(len(self.ops), (b,), generator=gen)
            if self.name == "randaugment":
                level = torch.full((b,), RANDAUGMENT["magnitude"])
            else:
                level = torch.randint(BINS, (b,), generator=gen)
            draws.append(Draw(op, level, torch.rand(b, generator=gen) <= 0.5))  # torchvision: sign if rand <= 0.5
        return draws

    def __call__(self, x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], gen))

    def apply(self, x: torch.Tensor, draws: list[Draw]) -> torch.Tensor:
        """uint8 (B, ..., C, H, W) → the same shape, each image through its drawn operations in order."""
        if x.dtype != torch.uint8 or x.shape[-3] not in (1, 3):
            raise OculaError(f"augment {self.name} takes uint8 images with 1 or 3 channels, not {x.dtype} "
                             f"with {x.shape[-3]}")
        h, w = x.shape[-2:]
        x = x.clone()
        for d in draws:
            for key in torch.unique(torch.stack([d.op, d.bin, d.negative.long()], 1), dim=0):
                op, level, negative = (int(v) for v in key)
                magnitude = self._magnitude(self.ops[op], level, bool(negative), h, w)
                if magnitude is None:
                    continue
                rows = ((d.op == op) & (d.bin == level) & (d.negative == bool(negative))).nonzero().squeeze(1)
                x[rows] = self.tv._apply_image_or_video_transform(
                    x[rows], self.ops[op], magnitude, interpolation=self.tv.interpolation, fill=self.tv._fill)
        return x

    def _magnitude(self, op: str, level: int, negative: bool, h: int, w: int) -> Optional[float]:
        """torchvision's magnitude for a draw, or None for the identity."""
        if op == "Identity":
            return None
        table, signed = self.tv._AUGMENTATION_SPACE[op]
        values = table(BINS, h, w)
        if values is None:  # AutoContrast, Equalize
            return 0.0
        value = float(values[level])
        return -value if signed and negative else value
