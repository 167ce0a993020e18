"""The detectors in the one registry (family "detection"): ocula's `fcos` and `retinanet` over any timm
backbone, and torchvision's own detectors by name. Built by ocula.models.detection."""
from __future__ import annotations

from ocula.errors import OculaError
from ocula.models.detection import DEFAULT_BACKBONE, DETECTION_MODELS, build_detector
from ocula.models.registry import register_model


def _builder(name: str):
    def build(num_classes: int, in_chans: int = 3, input_size: int = 256, backbone: str = DEFAULT_BACKBONE,
              **kwargs):
        if in_chans != 3:
            raise OculaError(f"{name} takes RGB images (grey ones are read as RGB): got {in_chans} channels")
        return build_detector(name, num_classes, backbone=backbone, img_size=input_size, **kwargs)

    build.__doc__ = DETECTION_MODELS[name]
    return build


for _name in DETECTION_MODELS:
    _defaults = {"backbone": DEFAULT_BACKBONE} if _name in ("fcos", "retinanet") else {}
    register_model(_name, family="detection", description=DETECTION_MODELS[_name], **_defaults)(_builder(_name))
