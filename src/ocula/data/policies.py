"""torchvision's RandAugment and TrivialAugmentWide, drawn per image for a whole uint8 batch.

torchvision's transforms draw one operation per call, so a batch passed to them would get the same
operation everywhere. Here the draws are per image (from the caller's generator, so every DDP rank
and every resumed run sees the same ones) and the images that drew the same (operation, magnitude)
go through torchvision's own implementation of that operation together: one call per distinct draw,
not per image. Operations, magnitudes and fills are torchvision's (its `_AUGMENTATION_SPACE` table and
`_apply_image_or_video_transform`), so results equal torchvision's on each image. The geometric
operations (shear, translate, rotate) cost torchvision a grid per call whatever the batch, so they go
further: one grid per image, built as torchvision builds it, and one `grid_sample` for all images
that drew that operation (tests/test_augment_presets.py checks equality with torchvision per image).

Inputs are uint8 (B, ..., C, H, W) with C 1 or 3: a clip (B, T, C, H, W) gets one draw for all its frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ocula.errors import OculaError

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
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
            magnitudes = [self._magnitude(self.ops[o], b, n, h, w) for o, b, n in
                          zip(d.op.tolist(), d.bin.tolist(), d.negative.tolist())]
            batched = torch.tensor([self.ops[o] in GEOMETRIC and not _rot90(self.ops[o], m)
                                    for o, m in zip(d.op.tolist(), magnitudes)], dtype=torch.bool)
            for op in d.op[batched].unique().tolist():
                rows = ((d.op == op) & batched).nonzero().squeeze(1)
                x[rows] = _affine(x[rows], self.ops[op], [magnitudes[i] for i in rows.tolist()])
            rest = ~batched
            for key in torch.unique(torch.stack([d.op, d.bin, d.negative.long()], 1)[rest], dim=0):
                op, level, negative = (int(v) for v in key)
                magnitude = self._magnitude(self.ops[op], level, bool(negative), h, w)
                if magnitude is None:
                    continue
                rows = (rest & (d.op == op) & (d.bin == level) & (d.negative == bool(negative))).nonzero().squeeze(1)
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


def _rot90(op: str, magnitude: float) -> bool:
    """torchvision rotates by multiples of 90° with torch.rot90, not a grid: left to it."""
    return op == "Rotate" and magnitude % 90 == 0


def _affine(x: torch.Tensor, op: str, magnitudes: list[float]) -> torch.Tensor:
    """uint8 (N, ..., C, H, W), one magnitude each → torchvision's affine/rotate of each (nearest, fill 0),
    with the inverse matrices and the grid exactly as torchvision's tensor kernels make them."""
    import torch.nn.functional as F
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    h, w = x.shape[-2:]
    matrices = []
    for m in magnitudes:  # the arguments torchvision's auto-augment passes for each operation
        if op in ("ShearX", "ShearY"):  # centre [0, 0]: the top-left corner
            shear = [math.degrees(math.atan(m)), 0.0] if op == "ShearX" else [0.0, math.degrees(math.atan(m))]
            matrices.append(_get_inverse_affine_matrix([-0.5 * w, -0.5 * h], 0.0, [0.0, 0.0], 1.0, shear))
        elif op in ("TranslateX", "TranslateY"):
            shift = [float(int(m)), 0.0] if op == "TranslateX" else [0.0, float(int(m))]
            matrices.append(_get_inverse_affine_matrix([0.0, 0.0], 0.0, shift, 1.0, [0.0, 0.0]))
        else:  # Rotate: torchvision's rotate passes -angle
            matrices.append(_get_inverse_affine_matrix([0.0, 0.0], -(m % 360), [0.0, 0.0], 1.0, [0.0, 0.0]))
    theta = torch.tensor(matrices, dtype=torch.float32, device=x.device).view(-1, 2, 3)
    base = torch.empty(1, h, w, 3, device=x.device)  # torchvision's _affine_grid, one theta per image
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], device=x.device))
    grid = base.view(1, h * w, 3).expand(len(matrices), -1, -1).bmm(scaled).view(-1, h, w, 2)
    flat = x.reshape(x.shape[0], -1, h, w).float()  # a clip's frames as channels: one grid per clip
    out = F.grid_sample(flat, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8).reshape(x.shape)
