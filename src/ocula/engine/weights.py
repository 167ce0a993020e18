"""Load weights from anywhere into an ocula model, without ever running code from a file.

    source = read_weights("resnet18.pth")           # or .safetensors, an ocula run, a bundle
    report = load_weights(model, source)             # head reset / input conv adapted / keys reported
    print(report.summary())

Files of any layout are read and matched by `ocula.models.pretrained` (safetensors, PyTorch checkpoints
through the safe unpickler, names or order, prefixes, heads, input convs: see there); this adds what
only the engine knows: ocula run directories and bundles, whose metadata comes with their tensors.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ocula import bundle
from ocula.errors import OculaError
from ocula.models import pretrained
from ocula.models.pretrained import (ALWAYS_STRIPPED, EMA_KEYS, MAYBE_STRIPPED, PLAIN_KEYS,  # noqa: F401 (re-exported)
                                     TORCH_SUFFIXES, WEIGHTS_SUFFIXES, LoadReport, WeightsSource, classifier_keys,
                                     read_weights_file, strip_prefixes)


def read_weights(path, use_ema: bool = True) -> WeightsSource:
    """A run directory, an ocula bundle, a .safetensors file or a PyTorch checkpoint → tensors."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = bundle.resolve_weights(p)
    elif not p.is_file():
        raise OculaError(f"no such weights file or run: {path}")
    elif p.suffix not in WEIGHTS_SUFFIXES:
        raise OculaError(f"{path}: unknown weights format (use {', '.join(WEIGHTS_SUFFIXES)} "
                         f"or an ocula run directory)")
    source = read_weights_file(p, use_ema)
    if "ocula" in source.file_metadata:
        source.meta = bundle.parse_meta(source.file_metadata, p)
    return source


def load_weights(model: nn.Module, source, use_ema: bool = True) -> LoadReport:
    """Copy matching tensors into `model` (`ocula.models.pretrained.load_weights`); `source` may also be
    an ocula run directory."""
    src = source if isinstance(source, WeightsSource) else read_weights(source, use_ema)
    return pretrained.load_weights(model, src)


def load_backbone_weights(model: nn.Module, source) -> LoadReport:
    """Load classifier weights (a timm checkpoint, or a port such as the EfficientNet-Lite ImageNet file)
    into `model.backbone` (a Detector or its timm features module).

    `load_weights(model.backbone, path)` works when the file's names are timm's; a port is paired by
    position, which needs the file and the model to hold the same tensors, and a features_only module
    lacks the classifier's last conv and head. So the file goes into the whole timm classifier first,
    whose backbone tensors are then copied by name. The report counts the backbone's tensors."""
    import timm

    features = getattr(model, "backbone", model)
    arch = (getattr(features, "pretrained_cfg", None) or {}).get("architecture")
    if not arch:
        raise OculaError("load_backbone_weights needs a timm features_only backbone (it names its architecture)")
    full = timm.create_model(arch, pretrained=False)
    try:
        report = load_weights(full, source)
    except OculaError as e:  # the default backbone is not the one the file is for: say how to name it
        raise OculaError(f"{e} The backbone is {arch}: name the one these weights are for "
                         f"(e.g. --backbone efficientnet_lite0).") from None
    full_state, want = full.state_dict(), features.state_dict()
    shared = {k: v for k, v in full_state.items() if k in want and v.shape == want[k].shape}
    features.load_state_dict(shared, strict=False)
    loaded = [k for k in shared if k not in report.missing]
    report.missing = [k for k in want if k not in loaded]
    report.loaded, report.total = len(loaded), len(want)
    report.unexpected = report.unexpected + [k for k in full_state if k not in want]  # the classifier's tail
    return report
