"""Model names from outside timm's registry, as timm reads them: `hf-hub:ORG/NAME` (a Hugging Face Hub
repository, or its copy in the local Hugging Face cache) and `local-dir:PATH` (a folder holding the
config.json and weights that timm's `save_for_hf` writes).

    split_source("hf-hub:timm/resnet18.a1_in1k")      # ("hf-hub", "timm/resnet18.a1_in1k")
    arch, cfg, args = read_config("local-dir:/models/mine")   # timm architecture, pretrained_cfg, model_args

The config names a timm architecture, the arguments it was built with and its pretrained_cfg (input
size, mean/std, interpolation, crop_pct, classes). A saved ocula model records those three, not the
hub name, so it rebuilds without the Hub or the folder (`resolved_arch`).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional

from ocula.errors import OculaError, one_line

HF_HUB, LOCAL_DIR = "hf-hub", "local-dir"
_PREFIXES = {"hf-hub": HF_HUB, "hf_hub": HF_HUB, "local-dir": LOCAL_DIR}  # hf_hub: timm's older spelling
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")  # ORG/NAME, optionally @REVISION
# What ocula passes to every build itself; a config's values for them describe the saved weights only.
_SET_BY_OCULA = ("num_classes", "in_chans")


def split_source(name: str) -> tuple[Optional[str], str]:
    """→ ("hf-hub" | "local-dir", the repo id or path), or (None, name) for a registry name."""
    prefix, sep, ident = name.partition(":")
    source = _PREFIXES.get(prefix.lower()) if sep else None
    return (source, ident) if source else (None, name)


def is_hub_name(name: str) -> bool:
    return split_source(name)[0] is not None


def check_name(name: str) -> None:
    """A one-line OculaError unless `name` is a well-formed hub name (a local-dir must hold config.json);
    whether the Hub has the repository is found out when the model is built."""
    source, ident = split_source(name)
    if source == HF_HUB and not _REPO_ID.fullmatch(ident):
        raise OculaError(f"'{name}': a Hub model name reads hf-hub:ORG/NAME (e.g. hf-hub:timm/resnet18.a1_in1k)")
    if source == LOCAL_DIR:
        folder = Path(ident).expanduser()
        if not folder.is_dir():
            raise OculaError(f"'{name}': no such folder {ident}")
        if not (folder / "config.json").is_file():
            raise OculaError(f"'{name}': {ident} has no config.json (a folder written by timm's save_for_hf)")


def hint(name: str) -> str:
    """For an unknown name that looks like a repo id or a path: the prefix it needs."""
    if "/" in name or "\\" in name:
        return f"; a Hub model reads hf-hub:{name}, a local folder local-dir:{name}"
    return ""


def read_config(name: str) -> tuple[str, dict, dict]:
    """→ (timm architecture, pretrained_cfg, model_args) of a hub name, read the way timm.create_model
    reads them (the Hub goes through the Hugging Face cache)."""
    from timm.models import _hub  # lazy: timm loads only where a model is built

    source, ident = split_source(name)
    try:
        if source == HF_HUB:
            found = _hub.load_model_config_from_hf(ident)
        else:
            loader = getattr(_hub, "load_model_config_from_path", None)
            if loader is None:
                import timm

                raise OculaError(f"'{name}': local-dir model names need a newer timm than {timm.__version__}")
            found = loader(Path(ident).expanduser())
    except OculaError:
        raise
    except Exception as e:  # noqa: BLE001 - the Hub client's errors (offline, no such repo) have many types
        raise load_error(name, e) from None
    cfg, arch = found[0], found[1]
    args = found[2] if len(found) > 2 else {}  # timm before model_args were saved returns two values
    return arch, dict(cfg), dict(args or {})


def load_error(name: str, e: BaseException) -> OculaError:
    """A hub name whose config or weights cannot be read, in one line."""
    source, _ = split_source(name)
    where = ("not in the Hugging Face cache, and the Hub unreachable or HF_HUB_OFFLINE set?" if source == HF_HUB
             else "a folder written by timm's save_for_hf?")
    return OculaError(f"cannot load '{name}' ({type(e).__name__}: {one_line(e)[:120]}): {where}")


def cache_only() -> bool:
    """The Hugging Face client reads its local cache only (HF_HUB_OFFLINE=1): hub weights then come
    without reaching the network."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if check is not None else constants.HF_HUB_OFFLINE)


def resolved_arch(name: str, model, arch: dict) -> dict:
    """An ocula arch dict for a model built from a hub name: the timm architecture, with the config's
    model_args and the model's pretrained_cfg as build options, so that it rebuilds offline exactly as
    timm built it (timm sets a few constructor defaults, such as a fixed img_size, from the pretrained_cfg)."""
    architecture = model.pretrained_cfg.get("architecture")
    model_args = getattr(model, "pretrained_model_args", None)  # timm >= 1.0.2x keeps them on the model
    if not architecture or model_args is None:
        architecture, _, model_args = read_config(name)
    kwargs = {k: v for k, v in model_args.items() if k not in _SET_BY_OCULA
              and not (k == "img_size" and arch.get("input_size"))}
    kwargs.update(arch.get("kwargs", {}))
    kwargs["pretrained_cfg"] = {k: v for k, v in model.pretrained_cfg.items() if v is not None and k != "state_dict"}
    return {**arch, "name": architecture, "kwargs": kwargs, "source": name}


def known_fields(pretrained_cfg: dict) -> dict:
    """A stored pretrained_cfg cut to the fields this timm knows (a newer timm may have written more), its
    JSON lists tuples again (input_size, mean, std: as timm gives them)."""
    from timm.models import PretrainedCfg  # lazy: as above

    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in pretrained_cfg.items() if k in known}
