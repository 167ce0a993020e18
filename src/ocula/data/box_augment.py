"""Box-aware batch augmentation: one random zoom, shift and (when allowed) mirror per image, applied to the
pixels with one `affine_grid` for the whole batch and to the boxes with the inverse of the same map.

Boxes are (B, M, 5) rows: class (−1 pads), x1, y1, x2, y2 in [0, 1]. A box pushed mostly out of the frame
becomes padding (class −1), as Ultralytics and torchvision's references drop such boxes.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ocula.data.batch_augment import BatchAugment, eval_resize, to_float
from ocula.errors import OculaError

# side scale of the visible region (s < 1 zooms in) and shift in units of the half-side, per preset
RANGES = {"light": {"scale": (0.6, 1.4), "shift": 0.2}, "strong": {"scale": (0.4, 1.6), "shift": 0.35},
          "mosaic": {"scale": (0.6, 1.4), "shift": 0.2}}  # mosaic: light's zoom and shift after the mosaic
MIN_VISIBLE = 0.3  # a box keeps its label when at least this fraction of its area stays in the frame
MIN_SIDE = 2 / 640  # … and both sides stay at least ~2 px of a 640 px image
PROGRESSIVE_SHARE = 0.5  # progressive resizing: the share of the epochs trained at the smaller size
SIZE_STEP = 16  # the smaller size is a multiple of this (the FPN's coarsest level halves it twice more)


def progressive_schedule(size: int, fraction: float, epochs: Optional[int]) -> tuple[int, int]:
    """(smaller side, first epoch at `size`) of progressive resizing: the first PROGRESSIVE_SHARE of the epochs at
    `fraction` of `size` (a multiple of SIZE_STEP), the rest at `size`; (size, 0) when it is off."""
    if fraction >= 1 or not epochs:
        return size, 0
    return (max(SIZE_STEP, min(size, int(round(size * fraction / SIZE_STEP)) * SIZE_STEP)),
            round(epochs * PROGRESSIVE_SHARE))


def train_size(size: int, fraction: float, epoch: Optional[int], epochs: Optional[int]) -> int:
    """The side of the training images at `epoch` (0-based; None: the run's) of `epochs`. Boxes are normalised,
    so only the pixels change; validation and prediction stay at `size`."""
    small, switch = progressive_schedule(size, fraction, epochs)
    return size if epoch is None or epoch >= switch else small


class BoxAugment:
    """Wraps the modality's BatchAugment (its contract, preset and flip decision) for box labels."""

    def __init__(self, base: BatchAugment, size: Optional[int] = None, progressive: str = ""):
        """`size`: the side of the images it returns (default: the contract's; smaller under progressive resizing,
        `train_size`); `progressive`: how the size changes over the epochs, for `describe`."""
        if base.preset not in (*RANGES, "none"):  # the image-only policies would move pixels under fixed boxes
            raise OculaError(f"--augment {base.preset} is for labels of whole images; boxes take none, light or "
                             f"strong")
        self.base, self.contract, self.preset, self.hflip = base, base.contract, base.preset, base.hflip
        self.size, self.progressive = size or base.contract.input_size, progressive

    def describe(self) -> str:
        return f"augment {self.preset} (boxes): " + ", ".join(self.operations()) + \
            (f"; {self.progressive}" if self.progressive else "")

    def operations(self) -> list[str]:
        if self.preset not in RANGES:
            return ["resize only"]
        r = RANGES[self.preset]
        return (["mosaic of 4 images (native-scale crops around a random centre)"] if self.preset == "mosaic"
                else []) + [f"zoom {r['scale'][0]:g}-{r['scale'][1]:g}", f"shift ±{r['shift'] / 2:.0%} of the side",
                "horizontal flip" if self.hflip else "no flip"]

    def __call__(self, x_uint8: torch.Tensor, y: torch.Tensor, gen: Optional[torch.Generator]):
        x = to_float(x_uint8, self.contract)
        if self.preset == "mosaic":
            x, y = mosaic(x, y, gen)
        if self.preset not in RANGES:
            x = eval_resize(x, self.contract)
            if self.size != x.shape[-1]:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
            return x, y
        return affine_with_boxes(x, y, self.size, gen, **RANGES[self.preset], hflip=self.hflip)


def affine_with_boxes(x: torch.Tensor, boxes: torch.Tensor, size: int, gen: Optional[torch.Generator], *,
                      scale=(0.6, 1.4), shift: float = 0.2, hflip: bool = True):
    """Float images (B, C, H, W) and boxes (B, M, 5) → the same random affine of both, images at `size`."""
    b = x.shape[0]
    s = torch.empty(b).uniform_(scale[0], scale[1], generator=gen)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * shift
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s * flip, s  # output (u, v) in [-1, 1] samples input (s·f·u + tx, s·v + ty)
    theta[:, 0, 2], theta[:, 1, 2] = t[:, 0], t[:, 1]
    grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out, _move_boxes(boxes, s, t, flip)


def mosaic(x: torch.Tensor, boxes: torch.Tensor, gen: Optional[torch.Generator]):
    """YOLO's mosaic at the images' own scale: each output image is cut at a random centre (a quarter to three
    quarters of each side) into four regions, its own crop in the top-left one and a crop of the same size from
    another image of the batch in each of the others, each from a random place in its image. Boxes move with their
    crops; one left with under MIN_VISIBLE of its area, or a side under MIN_SIDE, becomes padding. (B, C, H, W),
    (B, M, 5) → (B, C, H, W), (B, 4M, 5)."""
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    boxes = boxes.float()
    placed = torch.full((b, 4 * boxes.shape[1], 5), -1.0)
    placed[..., 1:] = 0
    centre = torch.rand(b, 2, generator=gen) * 0.5 + 0.25
    others = torch.randint(b, (b, 3), generator=gen)
    corners = torch.rand(b, 4, 2, generator=gen)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    for i in range(b):
        cx, cy = int(centre[i, 0] * w), int(centre[i, 1] * h)
        regions = ((0, 0, cx, cy), (cx, 0, w, cy), (0, cy, cx, h), (cx, cy, w, h))  # x1, y1, x2, y2 in the output
        for q, (src, (x1, y1, x2, y2)) in enumerate(zip([i, *others[i].tolist()], regions)):
            rw, rh = x2 - x1, y2 - y1
            ox, oy = int(corners[i, q, 0] * (w - rw)), int(corners[i, q, 1] * (h - rh))  # the crop's corner
            out[i, :, y1:y2, x1:x2] = x[src, :, oy:oy + rh, ox:ox + rw]
            cls, pix = boxes[src, :, 0], boxes[src, :, 1:] * scale
            moved = pix + torch.tensor([x1 - ox, y1 - oy, x1 - ox, y1 - oy], dtype=torch.float32)
            clipped = torch.stack([moved[:, 0].clamp(x1, x2), moved[:, 1].clamp(y1, y2),
                                   moved[:, 2].clamp(x1, x2), moved[:, 3].clamp(y1, y2)], -1)
            keep = (cls >= 0) & _still_visible(moved / scale, clipped / scale)
            rows = slice(q * boxes.shape[1], (q + 1) * boxes.shape[1])
            placed[i, rows, 0] = torch.where(keep, cls, torch.full_like(cls, -1.0))
            placed[i, rows, 1:] = torch.where(keep.unsqueeze(-1), clipped / scale, torch.zeros_like(clipped))
    return out, placed


def _move_boxes(boxes: torch.Tensor, s: torch.Tensor, t: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    boxes = boxes.clone().float()
    cls, xy = boxes[..., 0], boxes[..., 1:] * 2 - 1  # corners in the affine's [-1, 1] frame
    sx, sy = (s * flip).view(-1, 1), s.view(-1, 1)
    u1, u2 = (xy[..., 0] - t[:, :1]) / sx, (xy[..., 2] - t[:, :1]) / sx
    v1, v2 = (xy[..., 1] - t[:, 1:]) / sy, (xy[..., 3] - t[:, 1:]) / sy
    x1, x2 = torch.minimum(u1, u2), torch.maximum(u1, u2)  # a mirror swaps left and right
    moved = (torch.stack([x1, v1, x2, v2], -1) + 1) / 2
    clipped = moved.clamp(0, 1)
    keep = (cls >= 0) & _still_visible(moved, clipped)
    boxes[..., 0] = torch.where(keep, cls, torch.full_like(cls, -1.0))
    boxes[..., 1:] = torch.where(keep.unsqueeze(-1), clipped, torch.zeros_like(clipped))
    return boxes


def _still_visible(moved: torch.Tensor, clipped: torch.Tensor) -> torch.Tensor:
    """(…, 4) boxes as moved and as clipped to the frame, normalised → whether each keeps its label: at least
    MIN_VISIBLE of its area inside and both sides at least MIN_SIDE."""
    area = ((moved[..., 2] - moved[..., 0]) * (moved[..., 3] - moved[..., 1])).clamp_min(1e-12)
    w, h = clipped[..., 2] - clipped[..., 0], clipped[..., 3] - clipped[..., 1]
    return (w * h / area >= MIN_VISIBLE) & (w >= MIN_SIDE) & (h >= MIN_SIDE)
