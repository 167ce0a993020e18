"""Typed training configuration: one source of defaults, saved with every run.

Overrides (from Python keywords, the CLI or a recipe) are checked against the field types;
unknown keys get "did you mean".
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from ocula.errors import OculaError, did_you_mean, unknown

CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("cosine", "onecycle", "constant"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "augment": ("none", "light", "strong"),
    "balance": ("none", "weighted-loss", "sampler"),
    "cache": ("auto", "ram", "none"),
    "strategy": ("full", "linear-probe", "partial", "llrd", "gradual"),
    "margin": ("none", "arcface", "cosface"),
    "clip_pad": ("repeat", "reject"),
}


@dataclass
class TrainConfig:
    data: str = ""  # built-in name, class-per-folder directory or CSV manifest
    model: str = "seed_cnn"  # any name from `ocula models`
    out: Optional[str] = None  # run directory; default runs/<data>-<model>[-N]
    recipe: Optional[str] = None  # a shipped recipe; explicit keys override it
    epochs: int = 10
    batch_size: int = 64  # global, summed over DDP ranks
    lr: Optional[float] = None  # peak; default adamw 3e-3 from scratch, 1e-3 from weights; sgd 0.1 per 256 images
    optimizer: str = "adamw"
    weight_decay: float = 0.05  # never applied to norms and biases
    momentum: float = 0.9  # sgd (Nesterov)
    schedule: str = "cosine"
    warmup_epochs: float = 1.0  # onecycle: fraction of the run is pct_warmup instead
    pct_warmup: float = 0.25  # onecycle only
    label_smoothing: float = 0.0
    clip_grad: Optional[float] = None  # max global gradient norm
    accumulate: int = 1  # gradient accumulation steps
    precision: str = "auto"  # auto: bf16 where the device has fast bf16, else fp32
    channels_last: bool = True
    ema: Optional[float] = None  # weight EMA decay, e.g. 0.999; evaluation then uses the EMA weights
    seed: int = 0
    deterministic: bool = False  # bitwise-repeatable runs (slower)
    patience: Optional[int] = None  # early stop after this many epochs without val improvement
    augment: str = "light"
    hflip: Union[bool, str] = "auto"  # mirror images in light/strong: auto = when a quick probe finds labels survive it
    time_flip: Union[bool, str] = "auto"  # clips: also play half of them backwards; auto = as hflip
    mixup: float = 0.0  # Beta(alpha) for mixup; 0 = off
    cutmix: float = 0.0
    img_size: Optional[int] = None  # default: pretrained weights' size, else the data's native size (<= 224)
    channels: Optional[int] = None  # default: pretrained weights' (3), else the data's (grey: 1)
    val_fraction: float = 0.1  # stratified split when the data has no validation split
    balance: str = "none"
    cache: str = "auto"  # auto: decode a file dataset into RAM once when it fits
    workers: Optional[int] = None  # DataLoader workers for file datasets
    threads: Optional[int] = None  # torch CPU threads
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    pretrained: Union[bool, str] = False  # True: hub weights; or a local weights file
    resume: Optional[str] = None  # a run directory to continue
    max_steps: Optional[int] = None  # stop after this many optimizer steps (tests, smoke runs)
    frames: Optional[int] = None  # video: frames per clip the model sees; default the model's (8)
    clip_pad: str = "repeat"  # video: a clip shorter than frames is repeated (stretched in time) or rejected
    backbone: Optional[str] = None  # video models: the per-frame encoder, any image model name (resnet18, ...)
    init_from: Optional[str] = None  # start from these weights (--from): an ocula run/bundle or any weights file
    strategy: str = "full"  # fine-tuning: full | linear-probe | partial | llrd | gradual
    unfreeze_stages: int = 1  # partial: train the top N stages (+ head); gradual: N more per step
    unfreeze_every: int = 1  # gradual: epochs between unfreezing steps
    layer_decay: float = 0.75  # llrd: each stage below gets this factor of the lr above it
    head_lr: Optional[float] = None  # classifier head's lr; default: lr (linear-probe: 100x adamw, 10x sgd)
    freeze_bn: Optional[bool] = None  # BatchNorm statistics: default held in frozen stages; true: everywhere
    margin: str = "none"  # embedding training: none | arcface | cosface (margin loss on the head)
    margin_m: Optional[float] = None  # the margin; default 0.5 rad (arcface) or 0.35 (cosface)
    margin_s: float = 30.0  # scale of the cosine logits under a margin loss
    model_kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the model builder

    def __post_init__(self):
        for key, options in CHOICES.items():
            value = getattr(self, key)
            if value not in options:
                raise OculaError(f"{key}={value!r}: choose one of {', '.join(options)}"
                                 f"{did_you_mean(str(value), options)}")
        for key in ("hflip", "time_flip"):
            if getattr(self, key) not in (True, False, "auto"):
                raise OculaError(f"{key}={getattr(self, key)!r}: choose true, false or auto")
        if self.epochs < 1 or self.batch_size < 1 or self.accumulate < 1:
            raise OculaError("epochs, batch_size and accumulate must be at least 1")
        if self.frames is not None and self.frames < 1:
            raise OculaError("frames must be at least 1")
        if not 0 <= self.val_fraction < 1:
            raise OculaError("val_fraction must be in [0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.optimizer == "sgd":
            return 0.1 * self.batch_size / 256
        # Measured with no flags (docs/benchmarks.md, issue 11): for convolutional and recurrent models
        # from scratch 3e-3 beat 1e-3 (seed_cnn: digits 0.983 vs 0.931, photos 0.975 vs 0.969,
        # Fashion-MNIST 0.888 vs 0.878, faces equal); attention models stayed at chance with it
        # (cnn_transformer on left/right clips: 0.50, against 1.00 at 1e-3). Weights that already know
        # something keep the gentler 1e-3.
        from_weights = self.pretrained not in (False, None, "") or bool(self.init_from)
        return 1e-3 if from_weights or _is_attention_model(self.model) else 3e-3


def _is_attention_model(name: str) -> bool:
    from ocula.models.registry import describe

    try:
        return describe(name)["family"] in ("attention", "vit")
    except Exception:  # noqa: BLE001 - an unknown name is reported where the model is built
        return False


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def coerce(key: str, value: Any) -> Any:
    """Check or convert one override to the field's type (strings from the CLI are parsed)."""
    hints = get_type_hints(TrainConfig)
    if key not in hints:
        raise unknown("option", key, field_names())
    kind = hints[key]
    options = get_args(kind) if get_origin(kind) is Union else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        converted = _convert(value, option)
        if converted is not _FAIL:
            return converted
    names = " or ".join("a JSON object" if o is dict or get_origin(o) is dict else getattr(o, "__name__", str(o))
                        for o in options if o is not type(None))
    raise OculaError(f"{key}={value!r}: expected {names}")


_FAIL = object()


def _convert(value, kind):
    if kind is type(None):
        return None if value in (None, "none", "None", "null") else _FAIL
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        return _FAIL
    if kind in (int, float):
        if isinstance(value, bool):
            return _FAIL
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            return _FAIL
        return converted if kind is float or float(value) == converted else _FAIL
    if kind is str:
        return value if isinstance(value, str) else _FAIL
    if get_origin(kind) is dict or kind is dict:
        if isinstance(value, str):  # from the CLI: a JSON object
            try:
                value = json.loads(value)
            except ValueError:
                return _FAIL
        return value if isinstance(value, dict) else _FAIL
    return _FAIL


def list_recipes() -> list[str]:
    root = resources.files("ocula") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def load_recipe(name: str) -> dict:
    path = resources.files("ocula") / "recipes" / f"{name}.json"
    if not path.is_file():
        raise unknown("recipe", name, list_recipes())
    recipe = json.loads(path.read_text())
    recipe.pop("_doc", None)
    return recipe


def build_config(data: str = "", **overrides) -> TrainConfig:
    """Defaults ← recipe ← explicit overrides; every key type-checked."""
    overrides = {k: v for k, v in overrides.items() if v is not None or k == "out"}
    values: dict = {}
    recipe = overrides.get("recipe")
    if recipe:
        values.update({k: coerce(k, v) for k, v in load_recipe(recipe).items()})
    values.update({k: coerce(k, v) for k, v in overrides.items()})
    if data:
        values["data"] = data
    return TrainConfig(**values)
