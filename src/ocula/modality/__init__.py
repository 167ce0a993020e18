"""The kinds of data ocula reads (image, video), each one `Modality` object that owns its data path.

    from ocula import modality
    m = modality.for_model("cnn_lstm")         # the registry spec names it
    m = modality.for_meta(bundle_meta)          # a saved model records it
    m = modality.for_data(splits)               # resolve_data found it in the files
    loader = m.file_loader(samples, contract, 32, train=False)

A new modality subclasses `Modality` and calls `register_modality` with an instance.
"""
from __future__ import annotations

from typing import Optional

from ocula.data.contract import DataContract
from ocula.errors import OculaError, did_you_mean
from ocula.modality.base import Modality
from ocula.modality.image import ImageModality
from ocula.modality.video import VideoModality

MODALITIES: dict[str, Modality] = {}


def register_modality(modality: Modality) -> Modality:
    MODALITIES[modality.name] = modality
    return modality


IMAGE = register_modality(ImageModality())
register_modality(VideoModality())


def named(name: str) -> Modality:
    if name not in MODALITIES:
        raise OculaError(f"unknown modality {name!r}{did_you_mean(str(name), MODALITIES)}")
    return MODALITIES[name]


def for_model(model: str) -> Modality:
    """What a model name takes: its registry spec says; any timm model takes images."""
    from ocula.models.registry import get_spec  # lazy: ocula.models (every family) stays out of ocula --help

    spec = get_spec(model)
    return named(spec.modality) if spec is not None else IMAGE


def for_module(model) -> Modality:
    """What a built model takes: its registry name (`ocula_arch`), else its own `is_video` flag."""
    arch = getattr(model, "ocula_arch", None) or {}
    if arch.get("name"):
        return for_model(arch["name"])
    return MODALITIES["video"] if getattr(model, "is_video", False) else IMAGE


def for_contract(contract: DataContract) -> Modality:
    """Bundles written before modalities were recorded: a clip length means video."""
    return MODALITIES["video"] if contract.frames else IMAGE


def for_meta(meta: dict) -> Modality:
    """The modality a saved model records (older bundles: from their task or contract)."""
    if meta.get("modality"):
        return named(meta["modality"])
    if meta.get("task") in MODALITIES:  # ocula-bundle/1 before modalities: task "image" | "video"
        return named(meta["task"])
    return for_contract(DataContract.from_dict(meta.get("contract", {})))


def for_data(splits) -> Modality:
    return named(splits.modality)


def for_folder(path: str, preferred: Optional[Modality] = None) -> Modality:
    """Which modality a class-folder tree holds: the preferred one (the model's) if it claims it, then any
    other that finds its files there, else images."""
    others = [m for m in MODALITIES.values() if m is not IMAGE and m is not preferred]
    if preferred is not None and preferred is not IMAGE and preferred.claims_folder(path, True):
        return preferred
    return next((m for m in others if m.claims_folder(path, False)), IMAGE)


def for_manifest(scan) -> Modality:
    return next((m for m in MODALITIES.values() if m is not IMAGE and m.claims_manifest(scan)), IMAGE)


__all__ = ["IMAGE", "MODALITIES", "Modality", "for_contract", "for_data", "for_folder", "for_manifest",
           "for_meta", "for_model", "for_module", "named", "register_modality"]
