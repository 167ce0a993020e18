"""The input contract of a new run, chosen from the data rather than from a fixed 224×224 RGB.

    choice = choose_contract(cfg, splits)
    print(choice.reason)   # "input 32×32×1: the data's native size; 1,348 images sampled, all grey"

Rules, in order (an explicit --img-size / --channels always wins):
- pretrained weights keep their pretrained size, mean/std and channels: grey data is repeated to
  three channels rather than the weights being changed;
- a model trained from scratch takes the data's native size (the median short side of a sample of
  headers), rounded to the architecture's patch size and kept within [MIN_SIZE, MAX_SCRATCH_SIZE];
- grey data stays one channel.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ocula.config import TrainConfig
from ocula.data.contract import DataContract
from ocula.data.native import measure_files
from ocula.data.samples import DatasetSplits, FileSamples
from ocula.errors import OculaError
from ocula.modality import Modality, for_data, for_model
from ocula.models.registry import default_contract, get_spec

MAX_SCRATCH_SIZE = 224  # large photographs train from scratch at this short side, not at 4,000 px
MIN_TIMM_SIZE = 32  # timm's CNNs downsample 32×; below this some collapse to zero pixels


@dataclass
class InputChoice:
    contract: DataContract
    reason: str
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"reason": self.reason, **self.evidence}


def uses_pretrained(cfg: TrainConfig) -> bool:
    return cfg.model.pretrained is True or (isinstance(cfg.model.pretrained, str) and bool(cfg.model.pretrained))


def choose_contract(cfg: TrainConfig, splits: DatasetSplits) -> InputChoice:
    check_model_kind(cfg.model.name, splits)
    stats = _measure(splits, for_data(splits))
    native = splits.image_size or (stats.short_side if stats else None)
    data_grey = {1: True, 3: False}.get(splits.channels) if splits.channels else (stats.grey if stats else None)
    data_channels = splits.channels or (None if data_grey is None else 1 if data_grey else 3)
    pretrained = uses_pretrained(cfg) and get_spec(cfg.model.name) is None  # timm weights: hub or a file

    if cfg.data.channels:
        channels, why_channels = cfg.data.channels, "--channels"
    elif pretrained:
        channels, why_channels = 3, "the pretrained weights' channels"
    else:
        channels, why_channels = data_channels or 3, None
    same = data_channels in (None, channels)
    if cfg.data.img_size:
        size, why_size = cfg.data.img_size, "--img-size"
    elif pretrained:
        size, why_size = None, "the pretrained size"  # default_contract reads timm's pretrained config
    else:
        size, why_size = scratch_size(cfg.model.name, native)
    contract = default_contract(cfg.model.name, channels, native_size=native, input_size=size,
                                mean=splits.mean if same and not pretrained else None,
                                std=splits.std if same and not pretrained else None)
    spec = get_spec(cfg.model.name)
    contract = for_data(splits).configured(cfg).complete_contract(contract, spec.defaults if spec else {})
    evidence = {"native_size": native, "data_channels": data_channels, "sampled": stats.to_dict() if stats else None,
                "pretrained": pretrained}
    return InputChoice(contract, _reason(contract, splits, stats, why_size, why_channels, data_grey, pretrained),
                       evidence)


def default_backbone(cfg: TrainConfig, contract: DataContract) -> tuple[Optional[str], str]:
    """(per-frame encoder, why) for a model that runs one (`Modality.frame_encoder`: small frames trained from
    scratch get one that keeps where things are), or (None, "") to keep the model's own default."""
    spec = get_spec(cfg.model.name)
    if cfg.model.backbone:
        return None, ""
    from_scratch = not (uses_pretrained(cfg) or cfg.transfer.init_from)
    return for_model(cfg.model.name).frame_encoder(spec.defaults if spec else {}, contract.input_size, from_scratch)


def default_frame_diff(cfg: TrainConfig) -> tuple[Optional[bool], str]:
    """(frame_diff, why) for a video model whose frame encoder can also see each frame's change
    (`Modality.frame_diff`: on from scratch, off from pretrained weights), or (None, "")."""
    spec = get_spec(cfg.model.name)
    return for_model(cfg.model.name).frame_diff(spec.defaults if spec else {}, cfg.model.kwargs or {},
                                                from_scratch=not uses_pretrained(cfg))


def scratch_size(model: str, native: Optional[int]) -> tuple[Optional[int], str]:
    """(input size, why) for a model trained from scratch on data of this native size."""
    spec = get_spec(model)
    if not native:
        fallback = (spec.input_size if spec else None) or 224
        return fallback, f"{model}'s default (the data's size is unknown)"
    size, why = native, "the data's native size"
    if native > MAX_SCRATCH_SIZE:
        size, why = MAX_SCRATCH_SIZE, f"the data's median short side {native} px, capped at {MAX_SCRATCH_SIZE} " \
                                      f"for training from scratch"
    floor = MIN_TIMM_SIZE if spec is None else 1
    if size < floor:
        size, why = floor, f"the data's native size {native} px, raised to {model}'s minimum {floor}"
    patch = patch_size(model)
    if patch and size % patch:
        rounded = max(patch, int(round(size / patch)) * patch)
        why += f", rounded to a multiple of the patch size {patch}"
        size = rounded
    return size, why


def patch_size(model: str) -> Optional[int]:
    spec = get_spec(model)
    if spec is not None:
        return spec.defaults.get("patch_size") if spec.family in ("vit", "attention") and \
            spec.defaults.get("tokens", "patches") == "patches" else None
    found = re.search(r"patch(\d+)", model)
    return int(found.group(1)) if found else None


def check_model_kind(model: str, splits: DatasetSplits) -> None:
    takes, holds = for_model(model), for_data(splits)
    if takes is not holds:
        raise OculaError(f"{splits.source} holds {holds.noun} but '{model}' takes {takes.noun}; "
                         f"{holds.model_hint(model) or takes.data_hint}")


def _measure(splits: DatasetSplits, modality: Modality):
    """Header statistics of the training files, when the source does not state size and channels."""
    if splits.image_size and splits.channels:
        return None
    samples = next((s for s in (splits.train, splits.val, splits.test) if isinstance(s, FileSamples) and len(s)),
                   None)
    if samples is None:
        return None

    return measure_files(samples.paths, header=modality.header)


def _reason(contract: DataContract, splits: DatasetSplits, stats, why_size, why_channels, grey, pretrained) -> str:
    c = contract
    shape = for_data(splits).describe_shape(c)
    if pretrained and not why_size.startswith("--"):
        why_size = "the pretrained size, mean/std"
    parts = [why_size or "", why_channels or ""]
    what = " and ".join(p for p in parts if p) or "the model's default"
    if stats is not None:
        total = stats.population
        seen = f"{stats.sampled:,}" + (f" of {total:,}" if total > stats.sampled else "")
        colour = {True: "all grey", False: "colour", None: "colour unknown"}[stats.grey]
        if stats.grey and stats.grey_by_content:
            colour += " (saved as RGB)"
        data = f"{seen} {for_data(splits).noun} sampled, {colour}"
    else:
        data = f"{splits.source or 'the data'}: {'grey' if grey else 'colour' if grey is False else 'size'} stated " \
               f"by the dataset"
    if grey and c.channels == 3 and not why_channels == "--channels":
        data += "; grey repeated to 3 channels"
    return f"input {shape}: {what}; {data}"
