"""One registry and one `create_model` for every family: ocula's own models and any timm name.

Ocula's own families register themselves when `ocula.models` is imported (models/__init__.py imports
them after this module), so the registry never imports its families.

A model is rebuilt from a small dict (`arch`): {"name", "num_classes", "in_chans", "input_size",
"kwargs"}. That dict is what a saved bundle stores, so loading never needs pickled code.

Names: ocula's own, any timm name (`resnet50`, `resnet50.a1_in1k`), and the hub names timm reads,
`hf-hub:ORG/NAME` and `local-dir:PATH` (models/hub.py); a model built from a hub name records its
timm architecture and config, so its bundle rebuilds without the Hub.
"""
from __future__ import annotations

import fnmatch
import functools
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch.nn as nn

from ocula.data.contract import DataContract
from ocula.errors import OculaError, unknown
from ocula.log import logger
from ocula.models import hub
from ocula.models.pretrained import load_weights, read_weights_file


@dataclass
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]  # builder(num_classes=, in_chans=, input_size=, **kwargs)
    family: str  # cnn | recurrent | attention | vit | video
    description: str = ""
    input_size: Optional[int] = None  # None: adapts to the data's native size
    modality: str = "image"  # what it takes: "image" (B, C, H, W) or "video" clips (B, T, C, H, W)
    defaults: dict = field(default_factory=dict)  # builder kwargs a user may override


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, family: str, description: str = "", input_size: Optional[int] = None,
                   modality: str = "image", **defaults):
    """Decorator: `@register_model("seed_cnn", family="cnn")` over a builder function or class."""

    def wrap(builder):
        _REGISTRY[name] = ModelSpec(name, builder, family, description or (builder.__doc__ or "").strip()
                                    .split("\n")[0], input_size, modality, defaults)
        return builder

    return wrap


def get_spec(name: str) -> Optional[ModelSpec]:
    return _REGISTRY.get(name)


def is_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name)


@functools.lru_cache(maxsize=None)
def takes_drop_path(name: str) -> bool:
    """Whether timm builds `name` with stochastic depth (`drop_path_rate`): some timm models refuse the option
    (VGG) and ocula's own families do not take it. Built once on the meta device: no memory, well under a second."""
    import torch

    if get_spec(name) is not None or hub.is_hub_name(name) or not is_timm_model(name):
        return False
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, drop_path_rate=0.1)
    except Exception:  # noqa: BLE001 - any refusal means "no": the option is then never set
        return False
    return any(type(m).__name__ == "DropPath" for m in model.modules())


def list_models(pattern: str = "*", include_timm: bool = True) -> list[str]:
    """ocula's own models first, then timm's (a cheap query, like `timm.list_models`)."""
    pat = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    own = sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pat))
    if not include_timm:
        return own
    import timm

    return own + [n for n in timm.list_models(pat) if n not in _REGISTRY]


def describe(name: str) -> dict:
    spec = get_spec(name)
    if spec is not None:
        return {"name": name, "family": spec.family, "source": "ocula", "modality": spec.modality,
                "description": spec.description}
    return {"name": name, "family": "vit" if _looks_like_vit(name) else "cnn", "source": "timm",
            "modality": "image", "description": "timm model"}


def _looks_like_vit(name: str) -> bool:
    return any(k in name for k in ("vit", "deit", "beit", "eva", "swin", "dino", "cait", "xcit"))


def check_model_name(name: str) -> None:
    if get_spec(name) is not None:
        return
    if hub.is_hub_name(name):
        hub.check_name(name)
    elif not is_timm_model(name):
        raise OculaError(f"{unknown('model', name, list_models('*'))}{hub.hint(name)}")


def safe_name(name: str) -> str:
    """A model name fit for a file or folder name: a hub name's last part (hf-hub:acme/tiny → tiny)."""
    source, ident = hub.split_source(name)
    if source is None:
        return name
    last = ident.replace("\\", "/").rstrip("/").split("/")[-1].split("@")[0]
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in last) or "model"


def create_model(name: str, num_classes: int, in_chans: int = 3, input_size: Optional[int] = None,
                 pretrained: Union[bool, str, os.PathLike] = False, **kwargs) -> nn.Module:
    """Build any registered or timm model with the head and input channels set from the data.

    `pretrained`: True loads timm's hub weights (for `hf-hub:`/`local-dir:` names, those of the repo or
    folder); a path loads a local weights file (.safetensors, .pth, …) as `ocula train --pretrained FILE`
    does: by name or order, a classifier of another class count left new (`ocula.models.pretrained`)."""
    check_model_name(name)
    weights_file = None if isinstance(pretrained, bool) or pretrained is None else os.fspath(pretrained)
    hub_weights = pretrained is True
    spec = get_spec(name)
    if spec is not None:
        if hub_weights:
            raise OculaError(f"'{name}' has no hub weights; pass a weights file or use a timm model")
        kw = {**spec.defaults, **kwargs}
        size = input_size or spec.input_size or 224
        model = spec.builder(num_classes=num_classes, in_chans=in_chans, input_size=size, **kw)
    else:
        model = _create_timm(name, num_classes, in_chans, input_size, hub_weights, **kwargs)
    model.ocula_arch = {"name": name, "num_classes": num_classes, "in_chans": in_chans,
                        "input_size": input_size, "kwargs": kwargs}
    if hub.is_hub_name(name):
        model.ocula_arch = hub.resolved_arch(name, model, model.ocula_arch)
    elif hub.is_hub_name(str(kwargs.get("backbone", ""))):
        model.ocula_arch = _resolved_backbone(model, model.ocula_arch)
    if weights_file:
        report = load_weights(model, read_weights_file(weights_file))
        (logger.warning if report.missing else logger.info)(f"weights: {report.summary()}")
    return model


def _resolved_backbone(model: nn.Module, arch: dict) -> dict:
    """A video model's hub-named frame encoder (`backbone="hf-hub:…"`) recorded as the timm architecture and
    config it was built from (`backbone_kwargs`), so that the model rebuilds without the Hub too."""
    backbone = arch["kwargs"]["backbone"]
    inner = next((m.ocula_arch for m in model.modules() if m is not model
                  and getattr(m, "ocula_arch", {}).get("source") == backbone), None)
    if inner is None:
        return arch
    return {**arch, "kwargs": {**arch["kwargs"], "backbone": inner["name"], "backbone_kwargs": inner["kwargs"]}}


def _create_timm(name, num_classes, in_chans, input_size, pretrained, **kwargs) -> nn.Module:
    import timm

    if isinstance(kwargs.get("pretrained_cfg"), dict):  # a rebuilt hub model (hub.resolved_arch)
        kwargs = {**kwargs, "pretrained_cfg": hub.known_fields(kwargs["pretrained_cfg"])}

    def build(**extra):
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                 **kwargs, **extra)

    try:
        if input_size:
            # Models with positional embeddings (ViTs) must be told their input size; CNNs refuse it.
            try:
                return _fresh_head_scale(build(img_size=input_size), pretrained)
            except TypeError as e:
                if "img_size" not in str(e):
                    raise
        return _fresh_head_scale(build(), pretrained)
    except TypeError as e:
        raise OculaError(f"timm model '{name}' rejects an option: {e}") from None
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        if hub.is_hub_name(name):  # its config.json is read even without weights: missing, unreadable, unknown arch
            raise hub.load_error(name, e) from None
        if pretrained and isinstance(e, (OSError, RuntimeError)):
            raise OculaError(f"cannot fetch hub weights for '{name}' ({type(e).__name__}); offline? "
                             f"pass a local file instead: --pretrained path/to/weights.safetensors") from None
        raise
    except Exception as e:
        if hub.is_hub_name(name) and type(e).__module__.startswith("huggingface_hub"):  # not all are OSErrors
            raise hub.load_error(name, e) from None
        raise


def _fresh_head_scale(model: nn.Module, pretrained: bool) -> nn.Module:
    """A new linear head gets PyTorch's default init, U(±1/sqrt(in_features)), whatever the model's own.
    timm's EfficientNets and MobileNets draw it from U(±1/sqrt(out_features)), scaled for 1000 classes: with
    10 the initial logits have a std of about 5 and the loss starts at 7.5 instead of ln 10 = 2.3, and
    efficientnet_lite0 from scratch stayed near chance on Fashion-MNIST (docs/benchmarks.md, issue 13)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    kept = pretrained and getattr(model, "pretrained_cfg", {}).get("num_classes") == getattr(head, "out_features", None)
    if isinstance(head, nn.Linear) and not kept:
        head.reset_parameters()
    return model


def default_contract(name: str, channels: int, native_size: Optional[int] = None, mean=None, std=None,
                     input_size: Optional[int] = None, model: Optional[nn.Module] = None) -> DataContract:
    """The preprocessing a model expects: timm's data config of the model (input size, mean/std,
    interpolation, crop_pct), or the data's own statistics for ocula's families.

    timm's config is that of the built `model` when given (`resolve_model_data_config`), else that of
    the pretrained_cfg timm will give it: the registry's for a timm name (with its tag), the repo's or
    folder's config.json for a hub name."""
    spec = get_spec(name)
    if spec is not None:
        size = input_size or native_size or spec.input_size or 224
        return DataContract(input_size=size, channels=channels, mean=mean or (0.5,), std=std or (0.5,))
    data = timm_data_config(name, model)
    return DataContract(input_size=input_size or data["input_size"][-1], channels=channels,
                        mean=data["mean"], std=data["std"], interpolation=data["interpolation"],
                        crop_pct=data["crop_pct"])


def timm_data_config(name: str, model: Optional[nn.Module] = None) -> dict:
    """timm's data config (input_size, mean, std, interpolation, crop_pct, crop_mode) of `model`, or of a
    model of this name before it is built."""
    from timm.data import resolve_data_config, resolve_model_data_config

    if model is not None and getattr(model, "pretrained_cfg", None):
        return resolve_model_data_config(model)
    if hub.is_hub_name(name):
        cfg = hub.read_config(name)[1]
    else:
        import timm

        found = timm.models.get_pretrained_cfg(name)
        cfg = found.to_dict() if found is not None else {}
    return resolve_data_config(pretrained_cfg=hub.known_fields(cfg) or {"architecture": name})
