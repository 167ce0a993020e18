"""Video and frame sequences: one video file or frame folder → uint8 clip (T, C, S, S).

    ocula train clips/ --model cnn_lstm --backbone resnet18 --frames 16 --out runs/actions
    ocula predict runs/actions match.mp4 more_clips/ --topk 3
    ocula datasets make moving-shapes out/

Decoding (PyAV) is imported by the functions that decode, so importing this package stays cheap.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ocula.data.contract import DataContract
from ocula.data.native import image_header
from ocula.modality.base import Modality
from ocula.modality.video.augment import ClipAugment, select_frames
from ocula.modality.video.decode import VIDEO_EXTENSIONS, frame_files, is_video_path, video_header
from ocula.modality.video.loader import (TRAIN_OVERSAMPLE, ClipLoader, cache_clips, clips_fit_in_memory,
                                         preprocess_clip)
from ocula.modality.video.scan import expand_clip_inputs, holds_videos, is_clip_manifest, scan_video_folder

DEFAULT_FRAMES = 8
SMALL_FRAME_ENCODER = "seed_cnn"  # flattens its last feature map: keeps where things are in a small frame
SMALL_FRAME = 64  # px: below this a 32×-stride encoder (resnet18) pools a frame to 1×1 or 2×2
# Clips from scratch (issue 28): batches of 8 clips at AdamW 1e-3. On 160 direction-of-motion clips
# (bench/clips_plain_loops.py, 400 unseen test clips) cnn_lstm/seed_cnn scored 0.4375 with the image
# rules (batch 18 so that an epoch is 8 steps, lr 3e-3), 0.495 with batch 8, 0.4525 with lr 1e-3,
# 0.5675 with both, the same as a plain hand-written Adam 1e-3 / batch 8 loop (0.5675): a recurrent
# or attention head over frame features wants many small, gentle steps.
CLIP_BATCH = 8
CLIP_LR = 1e-3
# Attention heads over frames (cnn_transformer, seed_attention_video) from scratch: AdamW 3e-4 for 20 epochs
# (issue 28, version-2 clip sets, docs/benchmarks.md). On the direction frame folders (the tuning set) with the
# rules above (1e-3, 10 epochs) cnn_transformer stayed at chance (0.25 cross-fitted, 0.30 with val/), where a
# plain temporal-attention loop (AdamW 3e-4, warm-up, cosine, 12 epochs) reached 0.835; 3e-4 alone: 0.31,
# 20 epochs at 3e-4: 0.9925. It learns late: after 10 epochs at either lr its training accuracy was 0.26-0.33.
CLIP_ATTENTION_LR = 3e-4
CLIP_ATTENTION_EPOCHS = 20

__all__ = ["VIDEO_EXTENSIONS", "VideoModality"]


def _attention_family(model: str) -> bool:
    from ocula.models.registry import describe  # lazy: ocula.models stays out of ocula --help

    try:
        return bool(model) and describe(model)["family"] in ("attention", "vit")
    except Exception:  # noqa: BLE001 - an unknown name is reported where the model is built
        return False


class VideoModality(Modality):
    name = "video"
    noun = "clips"
    flips = ("hflip", "time_flip")
    sample_dims = 4  # (T, C, H, W)
    per_frame = True
    data_hint = "give a folder of videos or of frame folders (root/<class>/<clip>/*.jpg)"

    def __init__(self, frames: Optional[int] = None, clip_pad: str = "repeat"):
        self.frames = frames  # --frames: the clip length T; None: the model's default
        self.clip_pad = clip_pad  # --clip-pad: a clip shorter than T is "repeat"ed or "reject"ed

    def configured(self, cfg) -> "VideoModality":
        return VideoModality(frames=cfg.video.frames, clip_pad=cfg.video.clip_pad)

    def model_hint(self, model: str) -> str:
        from ocula.models.registry import get_spec, list_models  # lazy: ocula.models stays out of ocula --help

        video_models = ", ".join(n for n in list_models("*", include_timm=False)
                                 if get_spec(n).modality == self.name)
        return f"use a video model ({video_models}) with --backbone {model}"

    def claims_folder(self, path: str, preferred: bool) -> bool:
        return preferred or holds_videos(path)

    def claims_manifest(self, scan) -> bool:
        return is_clip_manifest(scan)

    def scan_folder(self, path: str):
        return scan_video_folder(path)

    def expand_inputs(self, items):
        return expand_clip_inputs(items)

    def header(self, path: str):
        if os.path.isdir(path):  # a frame folder: its first frame speaks for the clip
            files = frame_files(path)
            return image_header(files[0]) if files else None
        return video_header(path) if is_video_path(path) else image_header(path)

    def complete_contract(self, contract: DataContract, model_defaults: dict) -> DataContract:
        contract.frames = self.frames or model_defaults.get("frames") or DEFAULT_FRAMES
        return contract

    def describe_shape(self, contract: DataContract) -> str:
        return f"{super().describe_shape(contract)}, {contract.frames} frames"

    def default_frame_encoder(self, defaults: dict) -> Optional[str]:
        return defaults.get("backbone")

    def frame_encoder(self, defaults: dict, input_size: int, from_scratch: bool) -> tuple[Optional[str], str]:
        """Trained from scratch on small frames, resnet18 (the default encoder, meant for pretrained weights)
        pools each frame to 1×1 and the position of what moves is lost: on left/right clips at 32 px
        cnn_transformer stayed at chance for 10 epochs with it and reached 0.97 in 5 with seed_cnn."""
        default = self.default_frame_encoder(defaults)
        if default is None or not from_scratch or input_size >= SMALL_FRAME:
            return None, ""
        return SMALL_FRAME_ENCODER, (f"backbone {SMALL_FRAME_ENCODER}: {input_size}-px frames from scratch "
                                     f"({default} would pool each frame to 1×1 and lose where things are; "
                                     f"--backbone overrides)")

    def frame_diff(self, defaults: dict, given: dict, from_scratch: bool) -> tuple[Optional[bool], str]:
        """On when the frame encoder trains from scratch (`models.recurrent.with_frame_differences`; speed clips
        from chance to 0.99, docs/video.md), off from pretrained weights, whose first layer knows three channels."""
        if "frame_diff" not in defaults or "frame_diff" in given:
            return None, ""
        if not from_scratch:
            return False, ""
        return True, ("frame differences on: the frame encoder, trained from scratch, sees each frame and its change "
                      "from the one before (--model-kwargs '{\"frame_diff\": false}' turns it off)")

    def model_options(self, contract, defaults, given=None, *, frame_encoder=None, fallback_encoder=None,
                      hub_weights=False) -> dict:
        options = dict(given or {})
        if "frames" in defaults:
            options["frames"] = contract.frames
        if self.default_frame_encoder(defaults) is not None:
            if frame_encoder:
                options["backbone"] = frame_encoder
            elif fallback_encoder:
                options.setdefault("backbone", fallback_encoder)
            if hub_weights:  # hub weights go to the per-frame encoder, not to the video model
                options["backbone_pretrained"] = True
        return options

    def default_batch(self, clips: int, from_weights: bool) -> Optional[tuple[int, str]]:
        """(batch, why) for clips from scratch; None: the engine's rule (pretrained encoders keep it)."""
        if from_weights:
            return None
        return CLIP_BATCH, f"clips from scratch: video.CLIP_BATCH ({clips} training clips)"

    def default_epochs(self, clips: int, batch: int, from_weights: bool, model: str = "") -> Optional[tuple[int, str]]:
        """(epochs, why) for an attention head over frames from scratch; None: the task's rule."""
        if from_weights or not _attention_family(model):
            return None
        return CLIP_ATTENTION_EPOCHS, "an attention head over frames from scratch: video.CLIP_ATTENTION_EPOCHS"

    def default_lr(self, optimizer: str, from_weights: bool, model: str = "") -> Optional[tuple[float, str]]:
        """(peak lr, why) for AdamW on clips from scratch (gentler for an attention head over frames); None:
        TrainConfig.peak_lr's rule."""
        if from_weights or optimizer != "adamw":
            return None
        if _attention_family(model):
            return CLIP_ATTENTION_LR, ("adamw on clips from scratch, an attention head over frames: "
                                       "video.CLIP_ATTENTION_LR")
        return CLIP_LR, "adamw on clips from scratch: video.CLIP_LR"

    def bundle_fields(self) -> dict:
        return {"modality": self.name, "clip_pad": self.clip_pad}

    def _frames(self, contract: DataContract, train: bool) -> int:
        # A training split keeps 2T frames per clip in RAM: room for temporal jitter.
        return contract.frames * (TRAIN_OVERSAMPLE if train else 1)

    def fits_in_memory(self, samples, contract, train: bool = False) -> bool:
        return clips_fit_in_memory(samples, contract, self._frames(contract, train))

    def to_memory(self, samples, contract, *, workers=None, pad=None, desc="decode clips", train=False):
        return cache_clips(samples, contract, frames=self._frames(contract, train), workers=workers,
                           pad=pad or self.clip_pad, desc=desc)

    def augment(self, contract, preset, *, flips, mixup=0.0, cutmix=0.0, num_classes=0):
        return ClipAugment(contract, preset, bool(flips.get("hflip")), mixup, cutmix, num_classes,
                           time_flip=bool(flips.get("time_flip")))

    def eval_batch(self, contract):
        return ClipAugment(contract, "none", train=False)

    def file_loader(self, samples, contract, batch_size, *, train, augment=None, workers=None, seed=0, epoch=0,
                    sampler=None, pad=None, stream=1):
        return ClipLoader(samples, contract, batch_size, train=train, augment=augment, workers=workers, seed=seed,
                          epoch=epoch, sampler=sampler, pad=pad or self.clip_pad, stream=stream)

    def preprocess(self, obj, contract, pad=None) -> torch.Tensor:
        return preprocess_clip(obj, contract, pad or self.clip_pad)

    def probe_images(self, images: torch.Tensor, contract: DataContract) -> torch.Tensor:
        images = select_frames(images, contract.frames)  # (N, T, C, H, W): T evenly spaced frames
        b, t, c, h, w = images.shape
        return images.reshape(b, t * c, h, w)

    def probe_flip(self, x: torch.Tensor, key: str, contract: DataContract) -> torch.Tensor:
        if key != "time_flip":
            return super().probe_flip(x, key, contract)
        n, _, h, w = x.shape
        t = contract.frames
        return x.reshape(n, t, -1, h, w).flip(1).reshape(n, -1, h, w)

    def to_device(self, x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
        return x.to(device, non_blocking=True)  # channels_last is a 4-D layout; clips are 5-D

    def frames_of(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(0, 1)

    def map_dims(self, batch: torch.Tensor) -> tuple[int, ...]:
        return tuple(batch.shape[:2])

    def stills(self, sample) -> list:
        return list(sample)
