"""The self-describing saved model: safetensors weights whose metadata holds the config that rebuilds
the model, its preprocessing and its labels. A run directory adds model.json beside weights/.

    runs/shoes/model.json               # the same metadata, readable
    runs/shoes/weights/best.safetensors # weights + metadata: this file alone is enough to predict

Loading never unpickles anything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ocula.data.contract import DataContract
from ocula.weights_file import save_tensors
from ocula.names import display_name
from ocula.errors import BadWeightsError, OculaError, one_line
from ocula.run_dir import RunDir
from ocula.version import __version__
from ocula.weights_file import load_into, read_safetensors

FORMAT = "ocula-bundle/1"


def make_meta(arch: dict, contract: DataContract, classes: list[str], task: str = "image",
              **extra) -> dict:
    return {"format": FORMAT, "task": task, "arch": arch, "contract": contract.to_dict(),
            "classes": list(classes), "versions": {"ocula": __version__, "torch": torch.__version__},
            **extra}


def save_weights(path, model: nn.Module, meta: dict) -> None:
    save_tensors(path, model.state_dict(), metadata={"ocula": json.dumps(meta)})


def update_meta(path, changes: dict) -> dict:
    """Rewrite a bundle's metadata with `changes` (same tensors), atomically; → the new metadata."""
    metadata, tensors = read_safetensors(path)
    meta = {**parse_meta(metadata, path), **changes}
    save_tensors(path, tensors, metadata={"ocula": json.dumps(meta)})
    return meta


def resolve_weights(path) -> Path:
    """A run directory, its weights/ folder, or a .safetensors file → the weights file to load."""
    p = Path(path)
    if p.is_dir():
        run = RunDir(p)  # a run, or its weights/ folder
        for candidate in (run.weights("best"), p / run.weights("best").name, run.weights("last")):
            if candidate.is_file():
                return candidate
        raise OculaError(f"{display_name(path)}: no weights found (expected weights/best.safetensors)")
    if p.is_file():
        if p.suffix != ".safetensors":
            raise OculaError(f"{display_name(path)}: not an ocula model (expected a run directory or .safetensors)")
        return p
    raise OculaError(f"no such run or model file: {display_name(path)}")


def read_meta(path) -> dict:
    """The bundle metadata of a run or .safetensors file, checked (BadWeightsError when unusable)."""
    weights = resolve_weights(path)
    metadata, _ = read_safetensors(weights, tensors=False)
    return parse_meta(metadata, weights)


def parse_meta(metadata: dict, path) -> dict:
    """safetensors metadata (str → str) → the checked ocula bundle dict."""
    raw = (metadata or {}).get("ocula")
    if raw is None:
        raise BadWeightsError(path, "safetensors file without ocula metadata (not an ocula model; "
                                    "use it with --pretrained instead)")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: '[[[[…' nested past Python's limit
        raise BadWeightsError(path, f"ocula metadata is not valid JSON ({one_line(e)[:120]})") from None
    if not isinstance(meta, dict):
        raise BadWeightsError(path, f"ocula metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise BadWeightsError(path, f"unsupported bundle format {meta.get('format')!r} (expected {FORMAT!r})")
    missing = [k for k in ("arch", "contract", "classes") if k not in meta]
    if missing:
        raise BadWeightsError(path, f"ocula metadata lacks {', '.join(repr(k) for k in missing)}")
    arch, contract, classes = meta["arch"], meta["contract"], meta["classes"]
    if not isinstance(arch, dict) or not all(k in arch for k in ARCH_KEYS):
        have = sorted(arch) if isinstance(arch, dict) else type(arch).__name__
        raise BadWeightsError(path, f"ocula metadata 'arch' needs {', '.join(ARCH_KEYS)} (has {have})")
    if not isinstance(arch["name"], str) or not isinstance(arch["num_classes"], int) \
            or not isinstance(arch["in_chans"], int) or not isinstance(arch.get("kwargs", {}), dict):
        raise BadWeightsError(path, "ocula metadata 'arch' has values of the wrong type")
    from ocula.models.registry import check_model_name  # lazy: ocula.models (every family) stays out of ocula --help

    try:
        check_model_name(arch["name"])
    except OculaError as e:
        raise BadWeightsError(path, f"cannot build its model: {e}") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise BadWeightsError(path, "ocula metadata 'classes' is not a list of names")
    if len(classes) != arch["num_classes"]:
        raise BadWeightsError(path, f"ocula metadata names {len(classes)} classes but the model has "
                                    f"{arch['num_classes']} outputs")
    if not isinstance(contract, dict):
        raise BadWeightsError(path, "ocula metadata 'contract' is not an object")
    try:
        DataContract.from_dict(contract)
    except (TypeError, ValueError) as e:
        raise BadWeightsError(path, f"ocula metadata 'contract' is unusable ({e})") from None
    return meta


ARCH_KEYS = ("name", "num_classes", "in_chans", "input_size")


def build_from_meta(meta: dict, path=None) -> nn.Module:
    from ocula.models.registry import create_model  # lazy: as above

    arch = dict(meta["arch"])
    try:
        return create_model(arch.pop("name"), arch.pop("num_classes"), arch.pop("in_chans"),
                            arch.pop("input_size"), **arch.pop("kwargs", {}))
    except BadWeightsError:
        raise
    except OculaError as e:  # unknown model name, unknown option
        if path is None:
            raise
        raise BadWeightsError(path, f"cannot build its model: {e}") from None
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as e:
        if path is None:
            raise
        raise BadWeightsError(path, f"cannot build model {meta['arch']['name']!r} from its metadata "
                                    f"({type(e).__name__}: {one_line(e)})") from None


def load_model(path, device: Optional[torch.device] = None) -> tuple[nn.Module, dict]:
    """→ (model in eval mode, metadata). Any problem with the file is one BadWeightsError."""
    weights = resolve_weights(path)
    metadata, tensors = read_safetensors(weights)
    meta = parse_meta(metadata, weights)
    model = build_from_meta(meta, weights)
    load_into(weights, model, tensors, f"the {meta['arch']['name']!r} architecture it names")
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta
