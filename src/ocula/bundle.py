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
from ocula.errors import OculaError

FORMAT = "ocula-bundle/1"


def make_meta(arch: dict, contract: DataContract, classes: list[str], task: str = "image",
              **extra) -> dict:
    import ocula

    return {"format": FORMAT, "task": task, "arch": arch, "contract": contract.to_dict(),
            "classes": list(classes), "versions": {"ocula": ocula.__version__, "torch": torch.__version__},
            **extra}


def save_weights(path, model: nn.Module, meta: dict) -> None:
    from ocula.io import save_tensors

    save_tensors(path, model.state_dict(), metadata={"ocula": json.dumps(meta)})


def resolve_weights(path) -> Path:
    """A run directory, its weights/ folder, or a .safetensors file → the weights file to load."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "weights" / "best.safetensors", p / "best.safetensors",
                          p / "weights" / "last.safetensors"):
            if candidate.is_file():
                return candidate
        raise OculaError(f"{path}: no weights found (expected weights/best.safetensors)")
    if p.is_file():
        if p.suffix != ".safetensors":
            raise OculaError(f"{path}: not an ocula model (expected a run directory or .safetensors)")
        return p
    raise OculaError(f"no such run or model file: {path}")


def read_meta(path) -> dict:
    from safetensors import safe_open

    weights = resolve_weights(path)
    with safe_open(str(weights), framework="pt") as f:
        raw = (f.metadata() or {}).get("ocula")
    if raw is None:
        raise OculaError(f"{weights}: safetensors file without ocula metadata")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise OculaError(f"{weights}: unsupported bundle format {meta.get('format')!r}")
    return meta


def build_from_meta(meta: dict) -> nn.Module:
    from ocula.models.registry import create_model

    arch = dict(meta["arch"])
    return create_model(arch.pop("name"), arch.pop("num_classes"), arch.pop("in_chans"),
                        arch.pop("input_size"), **arch.pop("kwargs", {}))


def load_model(path, device: Optional[torch.device] = None) -> tuple[nn.Module, dict]:
    """→ (model in eval mode, metadata)."""
    from ocula.io import load_tensors

    meta = read_meta(path)
    model = build_from_meta(meta)
    model.load_state_dict(load_tensors(resolve_weights(path)))
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta
