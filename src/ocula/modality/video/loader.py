"""Clip batches for training, evaluation and prediction.

Two paths, as for images (`ocula.data.loaders`):
- small clip datasets are decoded once into RAM (`cache_clips`: uint8 (N, T, C, S, S)) and then go
  through the ordinary `TensorLoader` with batch-wise augmentation (one random affine per clip,
  applied to all its frames; temporal jitter over the extra frames cached for training);
- larger ones stream through `ClipLoader`: DataLoader workers decode uint8 clips (TSN segment
  sampling when training), the main process augments or normalises the whole batch.
A clip that cannot be decoded is skipped and reported as (path, reason), like a bad image.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ocula.data.batch_augment import BatchAugment
from ocula.data.contract import DataContract
from ocula.data.loaders import (CACHE_LIMIT_BYTES, StreamLoader, collate_skipping_bad, default_workers,
                                 drain_to_tensors, epoch_generator)
from ocula.data.samples import FileSamples, TensorSamples
from ocula.errors import BadImageError
from ocula.modality.video.augment import ClipAugment
from ocula.modality.video.decode import fit_geometry, read_clip

TRAIN_OVERSAMPLE = 2  # the RAM cache of a training split holds 2T frames per clip: room for temporal jitter
CACHE_BATCH = 16  # clips a decoding worker hands back at once while the RAM cache fills
# Decoding workers start from a forkserver, never forked from this process: FFmpeg's slice threads (and any
# other thread holding a lock at fork time) do not survive a fork, and a forked worker decoding a clip sat
# in avpriv_slicethread_execute forever (test_video, on CI and here under load).
WORKER_START = "forkserver"


def decode_workers(workers: Optional[int], clips: int, batch_size: int) -> int:
    """Worker processes for decoding `clips` in batches: none for a single batch (starting a process costs
    more than decoding a few clips), never more than there are batches."""
    workers = default_workers() if workers is None else workers
    batches = -(-clips // max(1, batch_size))
    return 0 if batches <= 1 else min(workers, batches)


def worker_start(workers: int) -> Optional[str]:
    return WORKER_START if workers > 0 else None


class ClipDataset(Dataset):
    """Decodes one clip per item → (uint8 (T, C, S, S), label, index), or (None, path, reason)."""

    def __init__(self, samples: FileSamples, contract: DataContract, *, train: bool = False, seed: int = 0,
                 epoch: int = 0, pad: str = "repeat", frames: Optional[int] = None):
        self.samples, self.contract, self.train = samples, contract, train
        self.seed, self.epoch, self.pad, self.frames = seed, epoch, pad, frames

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path = self.samples.paths[i]
        # Per clip and epoch: the same segments in every worker layout and after a resume.
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        try:
            clip = read_clip(path, self.contract, rng=rng, pad=self.pad, frames=self.frames)
        except BadImageError as e:
            return None, e.path or path, e.reason
        return clip, self.samples.labels[i], i


class ClipLoader(StreamLoader):
    """Float clip batches (B, T, C, S, S) from files: decoding in workers, augmentation batch-wise."""

    def __init__(self, samples: FileSamples, contract: DataContract, batch_size: int, *, train: bool,
                 augment: Optional[BatchAugment] = None, workers: Optional[int] = None, seed: int = 0,
                 epoch: int = 0, sampler=None, pad: str = "repeat", stream: int = 1):
        workers = decode_workers(workers, len(samples), batch_size)
        dataset = ClipDataset(samples, contract, train=train, seed=seed, epoch=epoch, pad=pad)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                            num_workers=workers, collate_fn=collate_skipping_bad,
                            multiprocessing_context=worker_start(workers),
                            drop_last=train and len(samples) > batch_size,  # a batch of 1 breaks BatchNorm
                            generator=epoch_generator(seed, epoch), prefetch_factor=2 if workers else None)
        augment = augment if train and augment is not None else ClipAugment(contract, "none", train=False)
        super().__init__(loader, contract, augment, seed=seed, epoch=epoch, stream=stream)


def clips_fit_in_memory(samples: FileSamples, contract: DataContract, frames: int) -> bool:
    return len(samples) * frames * contract.channels * contract.input_size ** 2 <= CACHE_LIMIT_BYTES


def cache_clips(samples: FileSamples, contract: DataContract, *, frames: Optional[int] = None,
                workers: Optional[int] = None, pad: str = "repeat", desc: str = "decode clips"
                ) -> tuple[TensorSamples, list[tuple[str, str]]]:
    """Decode every clip once (uniform sampling, `frames` per clip) → (uint8 TensorSamples, skipped)."""
    t = frames or contract.frames or 1
    workers = decode_workers(workers, len(samples), CACHE_BATCH)
    loader = DataLoader(ClipDataset(samples, contract, pad=pad, frames=t), batch_size=CACHE_BATCH,
                        num_workers=workers, collate_fn=collate_skipping_bad,
                        multiprocessing_context=worker_start(workers))
    s = contract.input_size
    return drain_to_tensors(loader, samples, torch.zeros(0, t, contract.channels, s, s, dtype=torch.uint8), desc,
                            "clip")


def preprocess_clip(obj, contract: DataContract, pad: str = "repeat") -> torch.Tensor:
    """One clip for prediction: a path (video file, frame folder) or a uint8 array (T, H, W, C) → float
    (T, C, S, S), normalised: exactly what evaluation feeds the model for that clip."""
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        clip = read_clip(obj, contract, pad=pad)
    else:
        array = torch.as_tensor(np.asarray(obj, dtype=np.uint8))
        if array.ndim != 4:
            raise BadImageError("<clip>", f"expected a clip (T, H, W, C), got shape {tuple(array.shape)}")
        clip = fit_geometry(array.permute(0, 3, 1, 2), contract)
    return ClipAugment(contract, "none", train=False)(clip.unsqueeze(0), None, None)[0][0]
