"""From a TrainConfig to the objects the Trainer needs: data, contract, model, loaders, precision."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ocula import tasks
from ocula.config import TrainConfig
from ocula.data.batch_augment import BatchAugment
from ocula.data.contract import DataContract
from ocula.data.samples import DatasetSplits, FileSamples, TensorSamples, adapt_channels
from ocula.engine.input_choice import default_backbone, default_frame_diff
from ocula.environment import cpu_flags
from ocula.errors import OculaError
from ocula.modality import Modality, for_contract, for_model
from ocula.models.compiled import compile_model
from ocula.models.registry import create_model, get_spec, safe_name


BF16_MIN_SPEEDUP = 1.15  # a CPU's bf16 must beat its fp32 by this much on the measured step to be chosen
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # /proc/cpuinfo flags of a CPU with bf16 instructions


def cpu_has_bf16() -> bool:
    return bool(BF16_FLAGS & cpu_flags())


def has_fast_bf16(device: torch.device) -> bool:
    """bf16 pays off on GPUs that support it; on a CPU only where it has bf16 instructions (AMX or AVX512-BF16)
    and a measured training step runs at least BF16_MIN_SPEEDUP times faster in bf16 than in fp32. The flags
    alone are not enough: what they are worth differs from one CPU to the next (and a bf16 step on a CPU that
    lacks them is emulated, several times slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16() and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16-autocast time of a small convolutional training step on this CPU (the median of three
    after one warm-up each; about a second, once per process)."""
    from time import perf_counter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                                  torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
        x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 10, (32,))

    def step_seconds(bf16: bool) -> float:
        times = []
        for _ in range(4):
            t0 = perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(net(x).float(), y)
            loss.backward()
            times.append(perf_counter() - t0)
        return sorted(times[1:])[1]

    try:
        return step_seconds(False) / step_seconds(True)
    except RuntimeError:  # no bf16 kernel for one of the ops here: not fast
        return 0.0


def resolve_precision(requested: str, device: torch.device, fine_tuning: bool = False) -> Optional[torch.dtype]:
    """→ autocast dtype, or None for fp32. `auto` fine-tunes pretrained weights on a CPU in fp32: with 30
    Fashion-MNIST images per class, lp-ft in bf16 autocast scored 0.788 where fp32 scored 0.794, and the
    bf16 loss rose in its second epoch; fp32 with the refitted head gained 1.8 points over five training
    subsets (docs/benchmarks.md, issue 13). From scratch it stays bf16, for speed."""
    if requested == "auto":
        # fine-tuning on a CPU first: it is fp32 whatever bf16 would measure, so nothing is measured
        requested = "fp32" if (fine_tuning and device.type == "cpu") or not has_fast_bf16(device) else "bf16"
    if requested == "fp32":
        return None
    if requested == "fp16":
        if device.type != "cuda":
            raise OculaError("precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        return torch.float16
    return torch.bfloat16


def build_model(cfg: TrainConfig, contract: DataContract, num_classes: int):
    """create_model with the config's model options and what the modality adds (video: frames, backbone)."""
    spec = get_spec(cfg.model.name)
    defaults = spec.defaults if spec is not None else {}
    modality = for_model(cfg.model.name)
    takes_encoder = modality.default_frame_encoder(defaults) is not None
    takes_backbone = spec is not None and spec.family == "detection"  # a detector's timm backbone
    if cfg.model.backbone and not (takes_encoder or takes_backbone):
        raise OculaError(f"'{cfg.model.name}' has no --backbone option (video models have: cnn_lstm, "
                         f"cnn_transformer, frame_avg)")
    encoder_hub = cfg.model.pretrained is True and takes_encoder
    kwargs = modality.model_options(contract, defaults, cfg.model.kwargs, frame_encoder=cfg.model.backbone,
                                    fallback_encoder=default_backbone(cfg, contract)[0], hub_weights=encoder_hub)
    frame_diff, _ = default_frame_diff(cfg)
    if frame_diff is not None:
        kwargs.setdefault("frame_diff", frame_diff)
    if takes_backbone and cfg.model.backbone:
        kwargs["backbone"] = cfg.model.backbone
    model = create_model(cfg.model.name, num_classes, contract.channels, contract.input_size,
                         pretrained=cfg.model.pretrained is True and not encoder_hub, **kwargs)
    model.ocula_arch["kwargs"].pop("backbone_pretrained", None)  # the bundle holds the weights
    return model


def training_module(module: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: `module` (the model, or its DDP wrapper) behind torch.compile with
    run.compile (eager, with one line, where no compiler is usable), else `module` itself. Evaluation and the
    saved bundles use the bare model, so a compiled run saves the same weights file."""
    return compile_model(module, device) if cfg.run.compile else module


def to_memory(samples, contract: DataContract, cfg: TrainConfig, desc: str, train: bool = False,
              modality: Optional[Modality] = None):
    """File splits that fit (cache=auto) or are forced (cache=ram) are decoded once into RAM.
    Clips of a training split keep extra frames, for temporal jitter in RAM."""
    modality = (modality or for_contract(contract)).configured(cfg)
    if isinstance(samples, FileSamples) and (cfg.data.cache == "ram" or (
            cfg.data.cache == "auto" and modality.fits_in_memory(samples, contract, train))):
        return modality.to_memory(samples, contract, workers=cfg.data.workers, desc=desc, train=train)
    return samples, []


def decode_splits(splits: DatasetSplits, contract: DataContract, cfg: TrainConfig, modality: Modality):
    """→ (train, val or None, skipped files): each split through to_memory, tensors fitted to the contract's
    channels."""
    decoded, skipped = {}, []
    for name in ("train", "val"):
        if name == "val" and splits.val is None:
            decoded[name] = None
            continue
        samples, bad = to_memory(splits.split(name), contract, cfg, desc=f"decode {name}", train=name == "train",
                                 modality=modality)
        skipped += bad
        decoded[name] = adapt_channels(samples, contract.channels) if isinstance(samples, TensorSamples) else samples
    return decoded["train"], decoded["val"], skipped


def class_counts(samples, num_classes: int) -> torch.Tensor:
    """(K,) samples per class; multi-hot labels: positives per class; boxes (N, M, 5): boxes per class."""
    labels = samples.labels if isinstance(samples, TensorSamples) else torch.as_tensor(np.asarray(samples.labels))
    if labels.ndim == 3:
        cls = labels[..., 0].flatten()
        return torch.bincount(cls[cls >= 0].long(), minlength=num_classes).float()
    if labels.ndim == 2:
        return (labels > 0).sum(0).float()
    return torch.bincount(labels, minlength=num_classes).float()


def balanced_sample_weights(samples, num_classes: int) -> torch.Tensor:
    """(N,) sampling weights for balance=sampler: 1 / its class's count; multi-label, the rarest of its
    labels' (a sample with no label counts as its own class)."""
    counts = class_counts(samples, num_classes)
    labels = samples.labels if isinstance(samples, TensorSamples) else torch.tensor(samples.labels)
    if labels.ndim == 1:
        return (1.0 / counts.clamp_min(1))[labels]
    hot = labels > 0
    empty = ~hot.any(1)
    weights = (hot.float() / counts.clamp_min(1)).amax(1)
    return torch.where(empty, 1.0 / max(int(empty.sum()), 1), weights)


def make_loader(samples, contract: DataContract, cfg: TrainConfig, *, train: bool, num_classes: int,
                rank: int, world: int, epoch: int = 0, modality: Optional[Modality] = None):
    """Batches of an in-memory split, or streamed from files (with DistributedSampler under DDP)."""
    modality = (modality or for_contract(contract)).configured(cfg)
    weights = None
    if train and cfg.data.balance == "sampler":
        weights = balanced_sample_weights(samples, num_classes)
    augment = make_augment(cfg, contract, num_classes, modality, epoch=epoch) if train else None
    if isinstance(samples, TensorSamples):
        return modality.tensor_loader(samples, contract, cfg.optim.batch_size, train=train, augment=augment,
                                      seed=cfg.run.seed, rank=rank, world=world, sample_weights=weights)
    sampler = _file_sampler(len(samples), weights, cfg, train=train, rank=rank, world=world, epoch=epoch)
    return modality.file_loader(samples, contract, max(1, cfg.optim.batch_size // world), train=train, augment=augment,
                                workers=cfg.data.workers, seed=cfg.run.seed, epoch=epoch, sampler=sampler,
                                stream=1 + rank)


def resolve_augment(cfg: TrainConfig, task_kind) -> TrainConfig:
    """augment=auto → the task's default (`Task.default_augment`: light, or none for label sets); `task_kind`: the
    Task class (tasks.task_type) or a task."""
    if cfg.augment.preset != "auto":
        return cfg
    return cfg.replace(augment=task_kind.default_augment()[0])


def make_augment(cfg: TrainConfig, contract: DataContract, num_classes: int,
                 modality: Optional[Modality] = None, epoch: Optional[int] = None) -> BatchAugment:
    """The training augmentation at `epoch` (None: the run's, for its description), with the run's flip decisions
    (resolved from 'auto' by the Trainer)."""
    modality = modality or for_contract(contract)
    flips = {key: _resolved(getattr(cfg.augment, key), key) for key in modality.flips}
    augment = modality.augment(contract, cfg.augment.preset, flips=flips, mixup=cfg.augment.mixup,
                               cutmix=cfg.augment.cutmix, num_classes=num_classes)
    return tasks.task_type(cfg).wrap_augment(augment, cfg, epoch)  # boxes move with the pixels


def _resolved(value, name: str) -> bool:
    if value == "auto":
        raise OculaError(f"{name}=auto must be decided before the loaders are built (Trainer.decide_flips)")
    return bool(value)


def _file_sampler(n: int, weights, cfg: TrainConfig, *, train: bool, rank: int, world: int, epoch: int):
    """Order of streamed files: a DistributedSampler under DDP, a weighted one for balance=sampler."""
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        if weights is not None:
            raise OculaError("balance=sampler with several processes: use balance=weighted-loss")
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=train, seed=cfg.run.seed,
                                     drop_last=False)
        sampler.set_epoch(epoch)
        return sampler
    if weights is not None:
        return torch.utils.data.WeightedRandomSampler(weights, n, replacement=True,
                                                      generator=torch.Generator().manual_seed(cfg.run.seed + epoch))
    return None


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
                h.update(os.fsencode(p) + f"|{y}".encode())  # bytes: non-UTF-8 names hash too
    return h.hexdigest()[:16]


def unique_run_dir(base: str) -> str:
    path, n = Path(base), 2
    while path.exists():
        path = Path(f"{base}-{n}")
        n += 1
    return str(path)


def default_run_base(cfg: TrainConfig) -> Path:
    """runs/<data>-<model>: a hub model's last name part (hf-hub:acme/tiny → tiny), never a colon or a slash."""
    return Path("runs") / f"{Path(cfg.data.source.rstrip('/')).stem or 'data'}-{safe_name(cfg.model.name)}"


def default_run_dir(cfg: TrainConfig) -> str:
    return unique_run_dir(str(default_run_base(cfg)))
