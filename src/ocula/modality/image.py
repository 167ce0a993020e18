"""Still images: one file → uint8 (C, S, S) at the contract's eval geometry."""
from __future__ import annotations

from pathlib import Path

import torch

from ocula.data.batch_augment import BatchAugment
from ocula.data.contract import DataContract
from ocula.data.folders import FolderScan, scan_image_folder
from ocula.data.images import open_image, to_pil
from ocula.data.inputs import expand_inputs
from ocula.data.loaders import StreamLoader, cache_in_memory, file_loader, fits_in_memory
from ocula.data.native import image_header
from ocula.data.samples import FileSamples
from ocula.data.transforms import eval_geometry, eval_transform
from ocula.modality.base import Modality


class ImageModality(Modality):
    name = "image"
    noun = "images"
    data_hint = "give a folder of class folders of images"

    def claims_folder(self, path: str, preferred: bool) -> bool:
        return True  # the fallback: whatever no other modality claims is a folder of images

    def scan_folder(self, path: str) -> FolderScan:
        return scan_image_folder(path)

    def expand_inputs(self, items):
        return expand_inputs(items)

    def header(self, path: str):
        return image_header(path)

    def fits_in_memory(self, samples: FileSamples, contract: DataContract, train: bool = False) -> bool:
        return fits_in_memory(samples, contract)

    def to_memory(self, samples, contract, *, workers=None, pad=None, desc="decode", train=False):
        return cache_in_memory(samples, contract, workers=workers, desc=desc)

    def file_loader(self, samples, contract, batch_size, *, train, augment=None, workers=None, seed=0, epoch=0,
                    sampler=None, pad=None, stream=1):
        if not train:
            return file_loader(samples, eval_transform(contract), contract.channels, batch_size, train=False,
                               workers=workers, sampler=sampler, draft_size=contract.input_size)
        # Workers decode to uint8 at the eval geometry, like the RAM cache; the preset runs batch-wise here.
        decoded = file_loader(samples, eval_geometry(contract), contract.channels, batch_size, train=True,
                              workers=workers, seed=seed, epoch=epoch, sampler=sampler,
                              draft_size=contract.input_size)
        return StreamLoader(decoded, contract, augment or BatchAugment(contract, "none"), seed=seed, epoch=epoch,
                            stream=stream)

    def preprocess(self, obj, contract: DataContract, pad=None) -> torch.Tensor:
        if isinstance(obj, (str, Path, bytes, bytearray)):
            img = open_image(obj, channels=contract.channels, draft_size=contract.input_size)
        else:
            img = to_pil(obj, channels=contract.channels)
        return _eval_transform(contract)(img)


_TRANSFORMS: dict = {}


def _eval_transform(contract: DataContract):
    """Built once per contract: predict calls this per image."""
    key = repr(contract)
    if key not in _TRANSFORMS:
        _TRANSFORMS.clear()
        _TRANSFORMS[key] = eval_transform(contract)
    return _TRANSFORMS[key]
