"""Per-image transforms (torchvision transforms v2), pure factories of a DataContract.

Eval geometry everywhere in ocula: resize the short side to input_size / crop_pct, centre-crop
input_size. Train presets: none | light (random-resized crop + flip) | strong (+ TrivialAugment,
random erasing). Mixup/cutmix are batch operations and live in batch_augment.py.
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from ocula.data.contract import DataContract

AUGMENT_PRESETS = ("none", "light", "strong")

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


def interpolation(name: str) -> InterpolationMode:
    return _INTERP.get(name, InterpolationMode.BILINEAR)


def resize_size(contract: DataContract) -> int:
    return int(math.floor(contract.input_size / contract.crop_pct))


def eval_geometry(contract: DataContract) -> v2.Transform:
    """PIL image → uint8 tensor (C, S, S), no normalisation (cached in RAM in this form)."""
    return v2.Compose([v2.PILToTensor(),
                       v2.Resize(resize_size(contract), interpolation=interpolation(contract.interpolation),
                                 antialias=True),
                       v2.CenterCrop(contract.input_size)])


def normalize(contract: DataContract) -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(contract.mean, contract.std)])


def eval_transform(contract: DataContract) -> v2.Transform:
    return v2.Compose([eval_geometry(contract), normalize(contract)])


def train_transform(contract: DataContract, preset: str = "light", hflip: bool = True) -> v2.Transform:
    if preset == "none":
        return eval_transform(contract)
    size, interp = contract.input_size, interpolation(contract.interpolation)
    steps = [v2.PILToTensor(), v2.RandomResizedCrop(size, scale=(0.35 if preset == "strong" else 0.6, 1.0),
                                                    interpolation=interp, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        steps.append(v2.TrivialAugmentWide(interpolation=interp))
    steps.append(normalize(contract))
    if preset == "strong":
        steps.append(v2.RandomErasing(p=0.25, value=0))
    return v2.Compose(steps)
