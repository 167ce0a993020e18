"""Batches for training and evaluation.

Two paths end in the same (inputs, targets) batches, augmented by the same `BatchAugment`:
- `TensorLoader`: a split held in RAM as one uint8 tensor, batch-wise augmentation, no workers.
- `StreamLoader`: DataLoader workers decode files to uint8 at the eval geometry (as the RAM cache
  holds them); the main process augments the whole batch. So a preset (and mixup/cutmix) means the
  same operations with the same strength whether a dataset fits in RAM or not.
Small file datasets are decoded once into RAM (`cache_in_memory`) and then take the first path.
Both draw randomness from per-epoch seeded generators, so a resumed run repeats an epoch exactly.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ocula.data.batch_augment import BatchAugment
from ocula.data.contract import DataContract
from ocula.data.images import open_image
from ocula.data.samples import FileSamples, TensorSamples
from ocula.data.transforms import eval_geometry
from ocula.errors import BadImageError
from ocula.log import progress

CACHE_LIMIT_BYTES = 2 * 1024**3  # decode a file dataset into RAM when it fits in this


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + stream)


class TensorLoader:
    """Global batches from an in-memory split; each DDP rank takes its contiguous slice."""

    def __init__(self, samples: TensorSamples, contract: DataContract, batch_size: int, *, train: bool,
                 augment: Optional[BatchAugment] = None, seed: int = 0, rank: int = 0, world: int = 1,
                 sample_weights: Optional[torch.Tensor] = None, drop_last: Optional[bool] = None):
        self.samples, self.contract, self.batch_size = samples, contract, batch_size
        # Without a preset batches are only normalised and resized: the image eval path (a modality
        # passes its own for other shapes, e.g. clips)
        self.train, self.augment, self.seed = train, augment or BatchAugment(contract, "none"), seed
        self.rank, self.world = rank, world
        self.sample_weights = sample_weights
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.samples)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def _order(self, gen: torch.Generator) -> torch.Tensor:
        n = len(self.samples)
        if not self.train:
            return torch.arange(n)
        if self.sample_weights is not None:  # balanced sampling, with replacement
            return torch.multinomial(self.sample_weights, n, replacement=True, generator=gen)
        return torch.randperm(n, generator=gen)

    def __iter__(self):
        gen = epoch_generator(self.seed, self.epoch)
        order = self._order(gen)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x, y = self.samples.images[idx], self.samples.labels[idx]
            x, y = self.augment(x, y, gen)  # drawn for the global batch: identical on every rank
            yield _rank_slice(x, self.rank, self.world), _rank_slice(y, self.rank, self.world), \
                _rank_slice(idx, self.rank, self.world)


class StreamLoader:
    """uint8 batches from a `collate_skipping_bad` DataLoader → augmented (train) or normalised floats."""

    def __init__(self, loader: DataLoader, contract: DataContract, augment: Optional[BatchAugment] = None, *,
                 seed: int = 0, epoch: int = 0, stream: int = 1):
        self.loader, self.contract, self.augment = loader, contract, augment or BatchAugment(contract, "none")
        self.seed, self.epoch, self.stream = seed, epoch, stream

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        gen = epoch_generator(self.seed, self.epoch, stream=self.stream)
        for x, y, idx, bad in self.loader:
            if x is not None:
                x, y = self.augment(x, y, gen)
            yield x, y, idx, bad


def _rank_slice(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    if world == 1:
        return t
    per = -(-t.shape[0] // world)
    return t[rank * per:(rank + 1) * per]


class FileDataset(Dataset):
    """Decodes one file per item; a bad file yields None (counted and named by the caller)."""

    def __init__(self, samples: FileSamples, transform: Callable, channels: int, draft_size: Optional[int] = None):
        self.samples, self.transform, self.channels, self.draft_size = samples, transform, channels, draft_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path = self.samples.paths[i]
        try:
            img = open_image(path, channels=self.channels, draft_size=self.draft_size)
        except BadImageError as e:
            return None, e.path, e.reason
        return self.transform(img), self.samples.labels[i], i


def collate_skipping_bad(items):
    """→ (inputs, labels, indices, bad) where bad lists (path, reason) of undecodable files."""
    good = [it for it in items if it[0] is not None]
    bad = [(it[1], it[2]) for it in items if it[0] is None]
    if not good:
        return None, None, None, bad
    x = torch.stack([it[0] for it in good])
    if isinstance(good[0][1], np.ndarray):  # boxes (M, 5) per image, padded to one M by the reader
        y = torch.from_numpy(np.stack([it[1] for it in good]))
    else:
        y = torch.tensor([it[1] for it in good], dtype=torch.long)
    idx = torch.tensor([it[2] for it in good], dtype=torch.long)
    return x, y, idx, bad


def default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1)))


def file_loader(samples: FileSamples, transform: Callable, channels: int, batch_size: int, *, train: bool,
                workers: Optional[int] = None, seed: int = 0, epoch: int = 0, sampler=None,
                draft_size: Optional[int] = None) -> DataLoader:
    workers = default_workers() if workers is None else workers
    gen = epoch_generator(seed, epoch)
    return DataLoader(FileDataset(samples, transform, channels, draft_size), batch_size=batch_size,
                      shuffle=train and sampler is None, sampler=sampler,
                      drop_last=train and len(samples) > batch_size,  # a batch of 1 breaks BatchNorm
                      num_workers=workers, collate_fn=collate_skipping_bad, generator=gen,
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def fits_in_memory(samples: FileSamples, contract: DataContract) -> bool:
    return len(samples) * contract.channels * contract.input_size ** 2 <= CACHE_LIMIT_BYTES


def cache_in_memory(samples: FileSamples, contract: DataContract, workers: Optional[int] = None,
                    desc: str = "decode") -> tuple[TensorSamples, list[tuple[str, str]]]:
    """Decode every file once at the eval geometry → (TensorSamples, skipped files)."""
    loader = file_loader(samples, eval_geometry(contract), contract.channels, 64, train=False, workers=workers,
                         draft_size=contract.input_size)
    empty = torch.zeros(0, contract.channels, contract.input_size, contract.input_size, dtype=torch.uint8)
    return drain_to_tensors(loader, samples, empty, desc, "img")


def drain_to_tensors(loader, samples: FileSamples, empty: torch.Tensor, desc: str, unit: str,
                     ) -> tuple[TensorSamples, list[tuple[str, str]]]:
    """Run a `collate_skipping_bad` loader over every sample once → (TensorSamples, skipped files);
    `empty` is what an all-bad dataset yields (the right shape with no rows)."""

    batches, labels, names, skipped = [], [], [], []
    with progress(total=len(samples), desc=desc, unit=unit, leave=False) as bar:
        for x, y, idx, bad in loader:
            skipped += bad
            if x is not None:
                batches.append(x)
                labels.append(y)
                names += [samples.paths[i] for i in idx.tolist()]
            bar.update((0 if x is None else len(x)) + len(bad))
    if not batches:
        return TensorSamples(empty, torch.zeros(0, dtype=torch.long), []), skipped
    return TensorSamples(torch.cat(batches), torch.cat(labels), names), skipped
