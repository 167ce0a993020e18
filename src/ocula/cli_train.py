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
            group.add_argument(f"--{key.replace('_', '-')}", dest=key, default=None, **option_spec(f, key))
    p.add_argument("--from", dest="init_from", default=None, metavar="RUN",  # the spelling
                   help="start from an ocula run or any weights file (same as --init-from)")
    p.add_argument("overrides", nargs="*", default=[], help=argparse.SUPPRESS)


def option_spec(f, key: str) -> dict:
    """argparse keywords for one config field: metavar, help (with choices and default), bare flags."""
    text = f.metadata.get("help", "")
    if key == "model_kwargs":
        return {"metavar": "JSON", "help": f"""{text}, as JSON: '{{"patch_size": 2}}'"""}
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    choices = " | ".join(c if isinstance(c, str) else json.dumps(c) for c in f.metadata.get("choices", ()))
    shown = f"({choices}; default: {default!r})" if choices else f"(default: {default!r})"
    flag = f.type in ("bool", "Union[bool, str]")  # `--hflip` alone means true
    return {"metavar": key.upper(), "nargs": "?" if flag else None, "const": "true" if flag else None,
            "help": f"{text} {shown}" if text else shown}


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
