"""From a TrainConfig to the objects the Trainer needs: data, contract, model, loaders, precision."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional

import torch

from ocula.config import TrainConfig
from ocula.data.batch_augment import BatchAugment
from ocula.data.contract import DataContract
from ocula.data.loaders import TensorLoader, cache_in_memory, file_loader, fits_in_memory
from ocula.data.samples import DatasetSplits, FileSamples, TensorSamples
from ocula.errors import OculaError


def has_fast_bf16(device: torch.device) -> bool:
    """bf16 pays off on GPUs that support it and CPUs with AMX or AVX512-BF16; elsewhere it is slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def resolve_precision(requested: str, device: torch.device) -> Optional[torch.dtype]:
    """→ autocast dtype, or None for fp32."""
    if requested == "fp32" or (requested == "auto" and not has_fast_bf16(device)):
        return None
    if requested == "fp16":
        if device.type != "cuda":
            raise OculaError("precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        return torch.float16
    return torch.bfloat16


def resolve_contract(cfg: TrainConfig, splits: DatasetSplits) -> DataContract:
    from ocula.models.registry import default_contract

    channels = cfg.channels or splits.channels or 3
    same_channels = splits.channels in (None, channels)
    return default_contract(cfg.model, channels, native_size=splits.image_size,
                            mean=splits.mean if same_channels else None,
                            std=splits.std if same_channels else None, input_size=cfg.img_size)


def to_memory(samples, contract: DataContract, cfg: TrainConfig, desc: str):
    """File splits that fit (cache=auto) or are forced (cache=ram) are decoded once into RAM."""
    if isinstance(samples, FileSamples) and (cfg.cache == "ram" or (cfg.cache == "auto"
                                                                      and fits_in_memory(samples, contract))):
        return cache_in_memory(samples, contract, workers=cfg.workers, desc=desc)
    return samples, []


def adapt_channels(samples: TensorSamples, channels: int) -> TensorSamples:
    c = samples.images.shape[1]
    if c == channels:
        return samples
    if channels == 3 and c == 1:
        images = samples.images.expand(-1, 3, -1, -1).contiguous()
    elif channels == 1 and c == 3:  # ITU-R 601 luma, as PIL's convert("L")
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (samples.images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    else:
        raise OculaError(f"cannot convert {c}-channel images to {channels} channels")
    return TensorSamples(images, samples.labels, samples.names)


def class_counts(samples, num_classes: int) -> torch.Tensor:
    labels = samples.labels if isinstance(samples, TensorSamples) else torch.tensor(samples.labels)
    return torch.bincount(labels, minlength=num_classes).float()


def make_loader(samples, contract: DataContract, cfg: TrainConfig, *, train: bool, num_classes: int,
                rank: int, world: int, epoch: int = 0):
    """TensorLoader for in-memory splits; a DataLoader (with DistributedSampler under DDP) for files."""
    weights = None
    if train and cfg.balance == "sampler":
        counts = class_counts(samples, num_classes)
        labels = samples.labels if isinstance(samples, TensorSamples) else torch.tensor(samples.labels)
        weights = (1.0 / counts.clamp_min(1))[labels]
    if isinstance(samples, TensorSamples):
        augment = BatchAugment(contract, cfg.augment, cfg.hflip, cfg.mixup, cfg.cutmix, num_classes) \
            if train else None
        return TensorLoader(samples, contract, cfg.batch_size, train=train, augment=augment, seed=cfg.seed,
                            rank=rank, world=world, sample_weights=weights)
    from ocula.data.transforms import eval_transform, train_transform

    transform = train_transform(contract, cfg.augment, cfg.hflip) if train else eval_transform(contract)
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        if weights is not None:
            raise OculaError("balance=sampler with several processes: use balance=weighted-loss")
        sampler = DistributedSampler(range(len(samples)), num_replicas=world, rank=rank, shuffle=train,
                                     seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
    elif weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(samples), replacement=True,
                                                         generator=torch.Generator().manual_seed(cfg.seed + epoch))
    per_rank = max(1, cfg.batch_size // world)
    return file_loader(samples, transform, contract.channels, per_rank, train=train, workers=cfg.workers,
                       seed=cfg.seed, epoch=epoch, sampler=sampler, draft_size=contract.input_size)


def fingerprint(splits: DatasetSplits) -> str:
    """A short hash of what was trained on: file names and sizes, or the tensors' bytes."""
    h = hashlib.sha1()
    for name in ("train", "val", "test"):
        s = getattr(splits, name)
        if isinstance(s, TensorSamples):
            h.update(s.images.numpy().tobytes())
            h.update(s.labels.numpy().tobytes())
        elif isinstance(s, FileSamples):
            for p, y in zip(s.paths, s.labels):
                h.update(f"{p}|{y}".encode())
    return h.hexdigest()[:16]


def unique_run_dir(base: str) -> str:
    path, n = Path(base), 2
    while path.exists():
        path = Path(f"{base}-{n}")
        n += 1
    return str(path)


def default_run_dir(cfg: TrainConfig) -> str:
    data = Path(cfg.data.rstrip("/")).stem or "data"
    return unique_run_dir(str(Path("runs") / f"{data}-{cfg.model}"))
