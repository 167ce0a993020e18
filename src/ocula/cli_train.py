"""`ocula train`'s options: one flag per config field, generated from the config's sections, and the
overrides they become (ocula.api.train applies and type-checks them)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import fields

from ocula.config import field_names
from ocula.config_sections import SECTIONS, flat_key
from ocula.errors import OculaError


def add_train_parser(sub) -> None:
    """One flat option per config field (`--lr`, `--batch-size`), grouped by section, its help text
    and choices read from the field's metadata (ocula.config_sections)."""
    p = sub.add_parser("train", help="train or fine-tune a classifier", description="Train a model. "
                       "Options may also be given as key=value.")
    p.add_argument("data", nargs="?", default="", help="built-in name (fashion-mnist, digits), folder or CSV")
    p.add_argument("--config", metavar="FILE", help="options from a JSON or YAML file, flat (lr: 0.1) or in "
                   "sections (optim: {lr: 0.1}); a recipe's keys, then the file's, then the command line's")
    for section, cls in SECTIONS.items():
        group = p.add_argument_group(f"{section} options")
        for f in fields(cls):
            key = flat_key(f)
            if key == "data":
                continue
            flag = key.replace("_", "-")
            group.add_argument(f"--{flag}", dest=key, default=None, **option_spec(f, key))
            if f.type in FLAG_OR_VALUE:  # `--no-hflip` beside `--hflip [VALUE]`: a negative that takes no value
                group.add_argument(f"--no-{flag}", dest=key, action="store_const", const=False,
                                   help=f"same as --{flag} false")
    p.add_argument("--from", dest="init_from", default=None, metavar="RUN",  # the spelling
                   help="start from an ocula run or any weights file (same as --init-from)")
    p.add_argument("overrides", nargs="*", default=[], help=argparse.SUPPRESS)


FLAG_OR_VALUE = ("Union[bool, str]", "Optional[bool]")  # a switch that also takes a value (auto, a file)


def option_spec(f, key: str) -> dict:
    """argparse keywords for one config field: metavar, help (with choices and default); a bool field is
    `--x/--no-x`; a bool-or-value field (hflip: true, false or auto) `--x [VALUE]`, alone true (its
    `--no-x` is added beside it)."""
    text = f.metadata.get("help", "")
    if key == "model_kwargs":
        return {"metavar": "JSON", "help": f"""{text}, as JSON: '{{"patch_size": 2}}'"""}
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    choices = " | ".join(c if isinstance(c, str) else json.dumps(c) for c in f.metadata.get("choices", ()))
    shown = f"({choices}; default: {default!r})" if choices else f"(default: {default!r})"
    spec = {"help": f"{text} {shown}" if text else shown}
    if f.type == "bool":
        return {**spec, "action": argparse.BooleanOptionalAction}
    if f.type in FLAG_OR_VALUE:
        return {**spec, "nargs": "?", "const": True, "metavar": key.upper()}
    return {**spec, "metavar": key.upper()}


def split_overrides(args) -> dict:
    """The parsed train options and key=value words → {config key: value} for ocula.api.train."""
    values = {f: getattr(args, f) for f in field_names() if hasattr(args, f) and getattr(args, f) is not None}
    if args.config:
        values["config"] = args.config
    for item in args.overrides:
        if "=" not in item:
            raise OculaError(f"unexpected argument '{item}' (options are --key value or key=value)")
        key, value = item.split("=", 1)
        values[key.replace("-", "_")] = value
    values.pop("data", None)
    return values
