"""Typed training configuration in sections (ocula.config_sections), flat at every door.

    cfg = build_config("digits", lr=0.1, epochs=3)   # flat keys, as on the CLI (`--lr 0.1`, `epochs=3`)
    cfg.optim.lr, cfg.model.name, cfg.peak_lr        # code reads the sections

Values come from defaults ← a recipe ← a `--config FILE` (JSON or YAML) ← explicit keys. A recipe
or file may be flat (`{"lr": 0.1}`) or nested (`{"optim": {"lr": 0.1}}`), and a run's config.json,
nested since issue 15, loads in either form. Every value is checked against its field's type;
unknown keys get "did you mean".
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from ocula.config_sections import (DEFAULT_BATCH, SECTIONS, AugmentConfig, DataConfig, ModelConfig, OptimConfig, RunConfig,
                                   TaskConfig, TransferConfig, VideoConfig, choices_of, flat_key)
from ocula.errors import OculaError, did_you_mean, unknown

__all__ = ["TrainConfig", "DataConfig", "ModelConfig", "OptimConfig", "AugmentConfig", "TaskConfig", "TransferConfig",
           "VideoConfig", "RunConfig", "SECTIONS", "FLAT_KEYS", "build_config", "coerce", "field_names",
           "choices_of", "read_values", "list_recipes", "load_recipe"]

# flat key → (section, attribute): `lr` → ("optim", "lr"), `model` → ("model", "name")
FLAT_KEYS: dict[str, tuple[str, str]] = {}
for _section, _cls in SECTIONS.items():
    for _f in fields(_cls):
        assert flat_key(_f) not in FLAT_KEYS, f"flat key {flat_key(_f)} in two sections"
        FLAT_KEYS[flat_key(_f)] = (_section, _f.name)

# Peak lr of lp-ft's fine-tuning stage (AdamW), measured in docs/benchmarks.md, issue 13.
LPFT_LR = 3e-4


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def from_flat(cls, **values) -> "TrainConfig":
        """TrainConfig(lr=0.1, model="vgg_bn") in flat keys; values must already have their types."""
        parts: dict[str, dict] = {name: {} for name in SECTIONS}
        for key, value in values.items():
            if key not in FLAT_KEYS:
                raise unknown("option", key, FLAT_KEYS)
            section, attr = FLAT_KEYS[key]
            parts[section][attr] = value
        if parts["task"].get("name") == "margin" and parts["transfer"].get("margin", "none") == "none":
            parts["transfer"]["margin"] = "arcface"  # task=margin alone: the kind `margin=` would default to
        return cls(**{name: SECTIONS[name](**kw) for name, kw in parts.items()})

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "TrainConfig":
        """A saved config.json, nested or (before issue 15) flat; every value type-checked."""
        return cls.from_flat(**read_values(values, where))

    def to_dict(self) -> dict:
        """Nested, as config.json stores it."""
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        """{flat key: value}, the keys of the CLI and of ocula.train()."""
        return {key: getattr(getattr(self, s), a) for key, (s, a) in FLAT_KEYS.items()}

    def get(self, key: str) -> Any:
        """One value by its flat key: cfg.get("lr") is cfg.optim.lr."""
        if key not in FLAT_KEYS:
            raise unknown("option", key, FLAT_KEYS)
        section, attr = FLAT_KEYS[key]
        return getattr(getattr(self, section), attr)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some flat keys changed (and checked again)."""
        return TrainConfig.from_flat(**{**self.flat(), **changes})

    @property
    def peak_lr(self) -> float:
        if self.optim.lr is not None:
            return self.optim.lr
        if self.optim.optimizer == "sgd":
            return 0.1 * (self.optim.batch_size or DEFAULT_BATCH) / 256  # engine.resolve sets the batch first
        # Measured with no flags (docs/benchmarks.md, issue 11): for convolutional and recurrent models
        # from scratch 3e-3 beat 1e-3 (seed_cnn: digits 0.983 vs 0.931, photos 0.975 vs 0.969,
        # Fashion-MNIST 0.888 vs 0.878, faces equal); attention models stayed at chance with it
        # (cnn_transformer on left/right clips: 0.50, against 1.00 at 1e-3). Weights that already know
        # something keep the gentler 1e-3.
        lp_ft = self.transfer.strategy == "lp-ft" or (self.transfer.strategy == "auto" and self.transfer.margin == "none")
        if self.from_weights and lp_ft:
            return LPFT_LR  # the head already fits after the probe: the backbone only needs nudging
        return 1e-3 if self.from_weights or _is_attention_model(self.model.name) else 3e-3

    @property
    def from_weights(self) -> bool:
        """The run starts from weights that already know something: --pretrained (hub or file) or --from."""
        return self.model.pretrained not in (False, None, "") or bool(self.transfer.init_from)


def _is_attention_model(name: str) -> bool:
    from ocula.models.registry import describe  # lazy: ocula.models (every family) stays out of ocula --help

    try:
        return describe(name)["family"] in ("attention", "vit")
    except Exception:  # noqa: BLE001 - an unknown name is reported where the model is built
        return False


def field_names() -> list[str]:
    """Every flat key."""
    return list(FLAT_KEYS)


def coerce(key: str, value: Any) -> Any:
    """Check or convert one override to the field's type (strings from the CLI are parsed)."""
    if key not in FLAT_KEYS:
        raise unknown("option", key, FLAT_KEYS)
    section, attr = FLAT_KEYS[key]
    kind = get_type_hints(SECTIONS[section])[attr]
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


def read_values(values: dict, where: str) -> dict:
    """Flat or nested keys (`{"lr": 0.1}`, `{"optim": {"lr": 0.1}}`) → {flat key: typed value}.

    A section may be named by its attributes or by the flat keys (`{"model": {"name": "x"}}` or
    `{"model": {"model": "x"}}`); a section's name with a plain value is its flat key (`"model": "x"`)."""
    if not isinstance(values, dict):
        raise OculaError(f"{where}: expected an object of options, got {type(values).__name__}")
    flat: dict = {}
    for key, value in values.items():
        if key == "_doc":
            continue
        if key in SECTIONS and isinstance(value, dict):
            attrs = {f.name: flat_key(f) for f in fields(SECTIONS[key])}
            for inner, inner_value in value.items():
                name = attrs.get(inner) or (inner if inner in attrs.values() else None)
                if name is None:
                    raise OculaError(f"{where}: unknown option '{key}.{inner}'{did_you_mean(inner, attrs)}")
                flat[name] = coerce(name, inner_value)
        elif key in FLAT_KEYS:
            flat[key] = coerce(key, value)
        else:
            raise OculaError(f"{where}: unknown option '{key}'{did_you_mean(key, list(FLAT_KEYS) + list(SECTIONS))}")
    return flat


def read_config_file(path: str) -> dict:
    """`--config FILE`: JSON, or YAML (.yaml/.yml) → {flat key: typed value}."""
    p = Path(path)
    if not p.is_file():
        raise OculaError(f"--config {path}: no such file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml  # PyYAML: a dependency of ours (and timm's)

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except ValueError as e:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise OculaError(f"--config {path}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'}"
                         f" ({str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - yaml.YAMLError is not a ValueError
        raise OculaError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return read_values(values, path)


def list_recipes() -> list[str]:
    root = resources.files("ocula") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def load_recipe(name: str) -> dict:
    """A shipped recipe → {flat key: typed value} (recipes may be flat or nested, like --config files)."""
    path = resources.files("ocula") / "recipes" / f"{name}.json"
    if not path.is_file():
        raise unknown("recipe", name, list_recipes())
    return read_values(json.loads(path.read_text()), f"recipe {name}")


def build_config(data: str = "", config: Optional[str] = None, **overrides) -> TrainConfig:
    """Defaults ← recipe ← config file ← explicit overrides (flat keys); every key type-checked."""
    overrides = {k: coerce(k, v) for k, v in overrides.items() if v is not None or k == "out"}
    from_file = read_config_file(config) if config else {}
    recipe = overrides.get("recipe") or from_file.get("recipe")
    values = {**(load_recipe(recipe) if recipe else {}), **from_file, **overrides}
    if data:
        values["data"] = data
    return TrainConfig.from_flat(**values)
