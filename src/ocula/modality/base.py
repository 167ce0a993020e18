"""What a kind of data (a modality) owns, so that nothing outside `ocula.modality` asks "is this video?".

A modality turns files into uint8 tensors of its shape, batches them (in RAM or streamed), augments
them with the one set of presets, and preprocesses a single input for predict, serve, explain and
export. The engine, inference and the feature packages hold a `Modality` and call it.

    images  uint8 (N, C, S, S)       one file → one sample
    clips   uint8 (N, T, C, S, S)    one video file or frame folder → one sample of T frames
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ocula.data.batch_augment import BatchAugment
from ocula.data.contract import DataContract
from ocula.data.folders import FolderScan
from ocula.data.loaders import TensorLoader
from ocula.data.samples import FileSamples, TensorSamples


class Modality:
    name: str = ""
    noun: str = "samples"  # in messages: "1,000 images sampled"
    flips: tuple[str, ...] = ("hflip",)  # the label-changing flips training decides on (engine.flip_probe)
    sample_dims: int = 3  # dims of one preprocessed sample: (C, H, W)
    per_frame: bool = False  # samples are sequences of frames (a model may run an image encoder per frame)
    data_hint: str = ""  # what data a model of this modality needs, for the mismatch error

    def model_hint(self, model: str) -> str:
        """What to train on this modality's data instead of `model`, which takes another."""
        return ""

    # ------------------------------------------------------------------ its options
    def configured(self, cfg) -> "Modality":
        """This modality with a run's options from its own config section (video: `cfg.video`'s frames and
        clip_pad), so the contract, the loaders and the bundle record take them from here and generic code
        never reads that section. Images have no options: the shared instance."""
        return self

    # ------------------------------------------------------------------ its recipe rules
    def default_batch(self, samples: int, from_weights: bool) -> Optional[tuple[int, str]]:
        """(batch size, why) when this modality has its own rule (clips from scratch), else None: the task's."""
        return None

    def default_epochs(self, samples: int, batch: int, from_weights: bool,
                       model: str = "") -> Optional[tuple[int, str]]:
        """(epochs, why) when this modality has its own rule for `model`, else None: the task's."""
        return None

    def default_lr(self, optimizer: str, from_weights: bool, model: str = "") -> Optional[tuple[float, str]]:
        """(peak learning rate, why) when this modality has its own rule for `model`, else None: the task's."""
        return None

    # ------------------------------------------------------------------ finding data
    def claims_folder(self, path: str, preferred: bool) -> bool:
        """Whether a class-folder tree holds this modality's samples (`preferred`: the model takes it)."""
        return False

    def claims_manifest(self, scan: FolderScan) -> bool:
        return False

    def scan_folder(self, path: str) -> FolderScan:
        raise NotImplementedError

    def expand_inputs(self, items) -> tuple[list[str], list[tuple[str, str]]]:
        """What a user passes to predict → (sample paths, [(item, why nothing matched)])."""
        raise NotImplementedError

    def header(self, path: str):
        """→ ((width, height), mode, a still-image path for content checks) from headers, or None."""
        raise NotImplementedError

    # ------------------------------------------------------------------ contract
    def complete_contract(self, contract: DataContract, model_defaults: dict) -> DataContract:
        """Fill in what this modality adds to an image contract (clips: the frame count, from the options or the
        model's registry `defaults`)."""
        return contract

    def describe_shape(self, contract: DataContract) -> str:
        c = contract
        return f"{c.input_size}×{c.input_size}×{c.channels}"

    def default_frame_encoder(self, defaults: dict) -> Optional[str]:
        """The image model that a model with these registry `defaults` runs on every frame (`--backbone`), or
        None when it takes no such option."""
        return None

    def frame_encoder(self, defaults: dict, input_size: int, from_scratch: bool) -> tuple[Optional[str], str]:
        """(the per-frame encoder a new run uses instead of the model's default, why), or (None, "")."""
        return None, ""

    def frame_diff(self, defaults: dict, given: dict, from_scratch: bool) -> tuple[Optional[bool], str]:
        """(frame_diff, why) for a model whose frame encoder can also see each frame's change, or (None, "") where
        the model has no such option or `given` (the user's model kwargs) sets it."""
        return None, ""

    def model_options(self, contract: DataContract, defaults: dict, given: Optional[dict] = None, *,
                      frame_encoder: Optional[str] = None, fallback_encoder: Optional[str] = None,
                      hub_weights: bool = False) -> dict:
        """Builder keywords: `given` (the user's model kwargs) with what this modality sets from the contract
        (clips: the frame count) and its frame encoder: `frame_encoder` (--backbone) over `given` over
        `fallback_encoder`; `hub_weights` loads pretrained weights into that encoder, not the whole model."""
        return dict(given or {})

    def bundle_fields(self) -> dict:
        """What a saved model records beside its contract for this modality (its options included)."""
        return {"modality": self.name}

    # ------------------------------------------------------------------ batches
    def fits_in_memory(self, samples: FileSamples, contract: DataContract, train: bool = False) -> bool:
        raise NotImplementedError

    def to_memory(self, samples: FileSamples, contract: DataContract, *, workers: Optional[int] = None,
                  pad: Optional[str] = None, desc: str = "decode", train: bool = False
                  ) -> tuple[TensorSamples, list[tuple[str, str]]]:
        """Decode every file once → (uint8 TensorSamples, skipped (path, reason)). `pad` None: the options'."""
        raise NotImplementedError

    def augment(self, contract: DataContract, preset: str, *, flips: dict[str, bool], mixup: float = 0.0,
                cutmix: float = 0.0, num_classes: int = 0) -> BatchAugment:
        """The training augmentation; `flips`: the run's decision for each of `flips` (missing ones: off)."""
        return BatchAugment(contract, preset, bool(flips.get("hflip")), mixup, cutmix, num_classes)

    def eval_batch(self, contract: DataContract) -> Callable:
        """uint8 batch, labels, generator → (normalised float batch at the eval geometry, labels)."""
        return BatchAugment(contract, "none")

    def tensor_loader(self, samples: TensorSamples, contract: DataContract, batch_size: int, *, train: bool,
                      augment: Optional[BatchAugment] = None, seed: int = 0, rank: int = 0, world: int = 1,
                      sample_weights: Optional[torch.Tensor] = None) -> TensorLoader:
        return TensorLoader(samples, contract, batch_size, train=train,
                            augment=augment if train and augment is not None else self.eval_batch(contract),
                            seed=seed, rank=rank, world=world, sample_weights=sample_weights)

    def file_loader(self, samples: FileSamples, contract: DataContract, batch_size: int, *, train: bool,
                    augment: Optional[BatchAugment] = None, workers: Optional[int] = None, seed: int = 0,
                    epoch: int = 0, sampler=None, pad: Optional[str] = None, stream: int = 1):
        """Batches (x, y, idx, bad) streamed from files, decoded in DataLoader workers."""
        raise NotImplementedError

    def preprocess(self, obj, contract: DataContract, pad: Optional[str] = None) -> torch.Tensor:
        """One input (path, bytes, PIL, array; a clip for video) → the normalised sample tensor."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the flip probe's view
    def probe_images(self, images: torch.Tensor, contract: DataContract) -> torch.Tensor:
        """uint8 samples → (N, C', H, W) for the quick probe of engine.flip_probe (clips: frames in channels)."""
        return images

    def probe_flip(self, x: torch.Tensor, key: str, contract: DataContract) -> torch.Tensor:
        """A probe batch with one of `flips` applied."""
        if key == "hflip":
            return x.flip(-1)
        raise ValueError(f"{self.name} has no {key}")

    def tta_views(self, x: torch.Tensor, hflip: bool) -> list[torch.Tensor]:
        """Test-time views of a preprocessed batch (…, C, S, S): as is, mirrored when training allowed it,
        and shifted by S/28 px (a quarter of the light preset's shift; 1 px at 28 px) right, left, down and
        up, filled with zeros (the mean colour after normalising) as training's shifts are. Measured on
        Fashion-MNIST (bench/calibration.py): corner crops of a zoom cost 2.4 points; these views gain 0.5."""
        views = [x, x.flip(-1)] if hflip else [x]
        step = max(1, round(x.shape[-1] / 28))
        for dx, dy in ((step, 0), (-step, 0), (0, step), (0, -step)):
            views.append(_shifted(x, dx, dy))
        return views

    # ------------------------------------------------------------------ models and explanations
    def to_device(self, x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def batch(self, sample: torch.Tensor) -> torch.Tensor:
        """One preprocessed sample, or a batch of them → a batch."""
        return sample if sample.dim() > self.sample_dims else sample[None]

    def frames_of(self, batch: torch.Tensor) -> torch.Tensor:
        """A model input batch → its still images (N', C, H, W), for drawing explanations."""
        return batch

    def map_dims(self, batch: torch.Tensor) -> tuple[int, ...]:
        """The leading dims of a model input batch that index one explanation map: (B,) for images; clips
        (B, T), a map per frame."""
        return tuple(batch.shape[:1])

    def stills(self, sample) -> list:
        """One explained sample (the pixels the model saw, or its map) → the still images an explanation panel
        draws: images one, clips one per frame."""
        return [sample]


def _shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """x moved dx px right and dy px down on its last two dims, zeros coming in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out
