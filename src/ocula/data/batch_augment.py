"""Augmentation of whole batches of uint8 tensors, no per-image Python (the airbench way).

One affine resampling (`affine_grid` + `grid_sample`) does crop, scale, flip and resize for the
whole batch. The random numbers come from a caller-owned generator, drawn for the *global* batch,
so every DDP rank and every resumed run sees exactly the same augmentation.

Clips (B, T, C, H, W) reuse `BatchAugment.geometry` with T folded into channels, so one random draw
per clip moves all its frames together (`ocula.modality.video.augment`).

The rrc, randaugment and trivialaugment presets are torchvision's reference training recipe
(references/classification/presets.py): RandomResizedCrop (8-100 % of the area, aspect 3/4-4/3) and
the flip, then (randaugment, trivialaugment) torchvision's policy on the uint8 crop (`data.policies`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ocula.data.contract import DataContract
from ocula.data.policies import BatchPolicy
from ocula.errors import OculaError


def to_float(x: torch.Tensor, contract: DataContract) -> torch.Tensor:
    """uint8 (B, C, H, W) → normalised float32."""
    mean = torch.tensor(contract.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(contract.std, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - mean) / std


def eval_resize(x: torch.Tensor, contract: DataContract) -> torch.Tensor:
    """Float batch (B, C, H, W) → the eval geometry of transforms.eval_geometry (short side, then centre crop)."""
    size = contract.input_size
    if x.shape[-2:] == (size, size):
        return x
    if contract.resize == "stretch":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    short = int(math.floor(size / contract.crop_pct))
    h, w = x.shape[-2:]
    scale = short / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


def random_affine(x: torch.Tensor, out_size: int, gen: torch.Generator, *, scale=(1.0, 1.0),
                  translate_px: int = 0, hflip: bool = True) -> torch.Tensor:
    """Random crop/scale/flip of a float batch, resampled to out_size. Integer-pixel shifts with
    scale 1 reproduce pad-and-crop exactly (zero padding)."""
    b, _, h, w = x.shape
    s = torch.empty(b).uniform_(scale[0], scale[1], generator=gen).sqrt()  # area scale → side scale
    if translate_px:
        shift = torch.randint(-translate_px, translate_px + 1, (b, 2), generator=gen).float()
        tx, ty = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
    else:  # anywhere the crop stays inside the image
        tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - s)
        ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - s)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s * flip, s
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    mode = "nearest" if translate_px and scale == (1.0, 1.0) and out_size == w else "bilinear"
    grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def random_resized_crop(x: torch.Tensor, out_size: int, gen: Optional[torch.Generator], *, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), hflip: bool = True) -> torch.Tensor:
    """torchvision's RandomResizedCrop (and a random mirror) for each image of a float batch (B, C, H, W),
    resampled to out_size by one affine grid. The crop box is drawn as torchvision draws it: up to 10
    tries of an area fraction in `scale` and a log-uniform aspect in `ratio`, else the centred crop
    with the aspect clamped to `ratio`."""
    b, _, h, w = x.shape
    tries = 10
    area = h * w * torch.empty(b, tries).uniform_(scale[0], scale[1], generator=gen)
    aspect = torch.exp(torch.empty(b, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen))
    cw, ch = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.float().argmax(1, keepdim=True)  # the first try that fits, as torchvision's loop stops there
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    fallback = _centre_box(h, w, ratio)
    cw = torch.where(fits.any(1), cw, torch.tensor(float(fallback[1])))
    ch = torch.where(fits.any(1), ch, torch.tensor(float(fallback[0])))
    top = (torch.rand(b, generator=gen) * (h - ch + 1)).floor()
    left = (torch.rand(b, generator=gen) * (w - cw + 1)).floor()
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)  # output [-1, 1] → the crop box in input coordinates (align_corners=False)
    theta[:, 0, 0], theta[:, 1, 1] = cw / w * flip, ch / h
    theta[:, 0, 2], theta[:, 1, 2] = (2 * left + cw) / w - 1, (2 * top + ch) / h - 1
    grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _centre_box(h: int, w: int, ratio) -> tuple[int, int]:
    """(height, width) of torchvision's fallback crop: the whole image, its aspect clamped to `ratio`."""
    if w / h < min(ratio):
        return int(round(w / min(ratio))), w
    if w / h > max(ratio):
        return h, int(round(h * max(ratio)))
    return h, w


def random_erasing(x: torch.Tensor, gen: torch.Generator, p: float = 0.25, area=(0.02, 0.25)) -> torch.Tensor:
    """Zero one random rectangle in a fraction p of the images (vectorised with masks)."""
    b, _, h, w = x.shape
    frac = torch.empty(b).uniform_(*area, generator=gen)
    eh = (frac.sqrt() * h).long().clamp(1, h)
    ew = (frac.sqrt() * w).long().clamp(1, w)
    top = (torch.rand(b, generator=gen) * (h - eh + 1).float()).long()
    left = (torch.rand(b, generator=gen) * (w - ew + 1).float()).long()
    on = torch.rand(b, generator=gen) < p
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1)) & (cols >= left.view(-1, 1, 1))
            & (cols < (left + ew).view(-1, 1, 1)) & on.view(-1, 1, 1))
    return x.masked_fill(mask.unsqueeze(1).to(x.device), 0.0)


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator,
              mixup: float = 0.0, cutmix: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (one chosen per batch) → soft targets (B, K). Labels are class indices (B,) or
    multi-hot rows (B, K) (multi-label), which mix the same way: each label weighs λ or 1 − λ."""
    target = y.float() if y.ndim == 2 else F.one_hot(y, num_classes).float()
    if mixup <= 0 and cutmix <= 0:
        return x, target
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(1, generator=gen).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = _beta(alpha, gen)
    perm = torch.arange(x.shape[0] - 1, -1, -1)  # flip the batch, as timm does
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, (1,), generator=gen)), int(torch.randint(w, (1,), generator=gen))
        t, b_, l, r = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., t:b_, l:r] = x[perm][..., t:b_, l:r]
        lam = 1 - (b_ - t) * (r - l) / (h * w)
    else:
        x = x * lam + x[perm] * (1 - lam)
    return x, target * lam + target[perm] * (1 - lam)


def _beta(alpha: float, gen: torch.Generator) -> float:
    """Beta(alpha, alpha) seeded from our generator (torch's Beta sampler takes no generator)."""
    import numpy as np

    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


# The one definition of every preset, for data in RAM and streamed data alike (StreamLoader applies
# this same class to decoded batches). Strengths are relative to the image side.
PRESETS = {
    "none": {},
    "light": {"shift": 1 / 7, "flip": True},  # ±size/7 px shift (4 px at 28 px: the classic pad-and-crop)
    "strong": {"area": (0.35, 1.0), "flip": True, "erasing": 0.25},  # square crop of 35-100 % area, erasing
    # torchvision's reference recipe (module docstring); flips as the run decided
    "rrc": {"rrc": (0.08, 1.0), "flip": True},
    "randaugment": {"rrc": (0.08, 1.0), "flip": True, "policy": "randaugment"},
    "trivialaugment": {"rrc": (0.08, 1.0), "flip": True, "policy": "trivialaugment"},
    "mosaic": {"shift": 1 / 7, "flip": True},  # boxes only (engine.resolve refuses it elsewhere): box_augment mosaics
}


class BatchAugment:
    """Preset-driven augmentation of whole uint8 image batches (B, C, H, W), then mixup/cutmix.

    `hflip` mirrors half the images (when the preset flips at all); it is decided per run
    (`ocula.engine.flip_probe`) because mirroring can change a label. Preset "none" is the eval path.
    """

    def __init__(self, contract: DataContract, preset: str = "light", hflip: bool = True,
                 mixup: float = 0.0, cutmix: float = 0.0, num_classes: int = 0,
                 native_size: Optional[int] = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown augmentation preset {preset!r}")
        self.contract, self.preset = contract, preset
        self.ops = PRESETS[preset]
        self.hflip = bool(hflip) and self.ops.get("flip", False)
        self.mixup, self.cutmix, self.num_classes = mixup, cutmix, num_classes
        self.native_size = native_size
        self.policy = None
        if "policy" in self.ops:
            if contract.channels not in (1, 3):
                raise OculaError(f"augment {preset} needs images with 1 or 3 channels, not {contract.channels}")
            self.policy = BatchPolicy(self.ops["policy"])

    def describe(self) -> str:
        return f"augment {self.preset}: " + ", ".join(self.operations())

    def operations(self) -> list[str]:
        ops = {"none": ["resize only"], "light": ["shift ±1/7 of the side"],
               "strong": ["square crop of 35-100 % area", "random erasing p=0.25"]}.get(self.preset, [])
        if "rrc" in self.ops:
            low, high = self.ops["rrc"]
            ops.append(f"random resized crop of {low:.0%}-{high:.0%} area, aspect 3/4-4/3")
        if self.policy is not None:
            ops.append(self.policy.describe())
        ops.append("horizontal flip" if self.hflip else "no flip")
        if self.mixup > 0:
            ops.append(f"mixup α={self.mixup:g}")
        if self.cutmix > 0:
            ops.append(f"cutmix α={self.cutmix:g}")
        return ops

    def __call__(self, x_uint8: torch.Tensor, y: torch.Tensor, gen: Optional[torch.Generator]):
        """uint8 (B, C, H, W), labels (B,) → float inputs at input_size, targets (labels or soft)."""
        return self.mix(self.geometry(to_float(x_uint8, self.contract), gen), y, gen)

    def geometry(self, x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
        """Float (B, C, H, W) → the preset's crop/shift/flip/erasing at input_size (eval geometry for none)."""
        size, ops = self.contract.input_size, self.ops
        if "shift" in ops:
            pad = max(1, round(x.shape[-1] * ops["shift"]))
            return random_affine(x, size, gen, translate_px=pad, hflip=self.hflip)
        if "area" in ops:
            return random_erasing(random_affine(x, size, gen, scale=ops["area"], hflip=self.hflip), gen,
                                  p=ops["erasing"])
        if "rrc" in ops:
            x = random_resized_crop(x, size, gen, scale=ops["rrc"], hflip=self.hflip)
            return self._policy(x, gen) if self.policy is not None else x
        return eval_resize(x, self.contract)

    def _policy(self, x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
        """Normalised float (B, T·C, S, S) → back to uint8 pixels (as torchvision's policies take the crop),
        through the policy (one draw per image or clip), normalised again."""
        b, c = x.shape[0], self.contract.channels
        mean = torch.tensor(self.contract.mean, device=x.device).view(1, 1, -1, 1, 1)
        std = torch.tensor(self.contract.std, device=x.device).view(1, 1, -1, 1, 1)
        frames = x.reshape(b, -1, c, *x.shape[-2:])  # (B, T, C, S, S); T = 1 for images
        pixels = (frames * std + mean).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        out = (self.policy(pixels, gen).float().div_(255.0) - mean) / std
        return out.reshape(x.shape)

    def mix(self, x: torch.Tensor, y, gen):
        if self.mixup > 0 or self.cutmix > 0:
            return mix_batch(x, y, self.num_classes, gen, self.mixup, self.cutmix)
        return x, y
