"""Per-image transforms (torchvision transforms v2), pure factories of a DataContract.

Eval geometry everywhere in ocula: resize the short side to input_size / crop_pct, centre-crop
input_size. Training augmentation is not here: every preset is defined once, in batch_augment.py, and
applied to whole uint8 batches, whether the data is held in RAM or streamed from files (torchvision's
RandAugment and TrivialAugmentWide too, drawn per image: data/policies.py).
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from ocula.data.contract import DataContract

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


def interpolation(name: str) -> InterpolationMode:
    return _INTERP.get(name, InterpolationMode.BILINEAR)


def resize_size(contract: DataContract) -> int:
    return int(math.floor(contract.input_size / contract.crop_pct))


def eval_geometry(contract: DataContract) -> v2.Transform:
    """PIL image → uint8 tensor (C, S, S), no normalisation (cached in RAM in this form)."""
    if contract.resize == "stretch":
        return v2.Compose([v2.PILToTensor(), v2.Resize((contract.input_size, contract.input_size),
                                                        interpolation=interpolation(contract.interpolation),
                                                        antialias=True)])
    return v2.Compose([v2.PILToTensor(),
                       v2.Resize(resize_size(contract), interpolation=interpolation(contract.interpolation),
                                 antialias=True),
                       v2.CenterCrop(contract.input_size)])


def normalize(contract: DataContract) -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(contract.mean, contract.std)])


def eval_transform(contract: DataContract) -> v2.Transform:
    return v2.Compose([eval_geometry(contract), normalize(contract)])
