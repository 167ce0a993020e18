"""The one reader and writer of safetensors files (bundles, weights, training state).

    metadata, tensors = read_safetensors(path)              # both; tensors=False reads the header only
    save_tensors(path, tensors, metadata)                   # atomic; save_state/load_state for nested state

Whatever is wrong with the file (missing, unreadable, truncated, a header that is too large or not
JSON, overlapping offsets, a shape that does not match the bytes, a dtype torch lacks) becomes one
`BadWeightsError(path, reason)` with a one-line reason; nothing in the file is ever executed.
"""
from __future__ import annotations

import errno
import json
import os
import re
from collections import Counter
from typing import Any, Optional

import torch

from ocula.errors import BadWeightsError, one_line
from ocula.io import atomic_path

# safetensors' own words → shorter ones a user can act on
_REASONS = (
    (r"file not fully covered|incomplete metadata|invalid header length|buffer too small|"
     r"HeaderTooSmall|MetadataIncompleteBuffer", "truncated or incomplete"),
    (r"header too large|HeaderTooLarge", "header too large"),
    (r"invalid JSON|InvalidHeaderDeserialization|invalid header|key must be a string|expected",
     "header is not valid JSON"),
    (r"invalid shape, data type, or offset|InvalidOffset|InvalidTensorView|overlap|TensorInvalidInfo|"
     r"shape|offset", "tensor offsets or shapes do not match the data"),
)
_PREFIX = re.compile(r"^(Error while deserializing header:\s*)", re.I)


def _reason(e: BaseException) -> str:
    text = one_line(e) or type(e).__name__
    text = _PREFIX.sub("", text)
    for pattern, short in _REASONS:
        if re.search(pattern, text, re.I):
            return f"not a readable safetensors file: {short}" + ("" if short == text else f" ({text})")
    return f"not a readable safetensors file ({text})"


def _open_error(path, e: OSError) -> BadWeightsError:
    if e.errno == errno.ENOENT:
        return BadWeightsError(path, "no such file")
    if e.errno == errno.EISDIR:
        return BadWeightsError(path, "is a directory, not a .safetensors file")
    return BadWeightsError(path, f"cannot read ({e.strerror or one_line(e) or type(e).__name__})")


def read_safetensors(path, tensors: bool = True) -> tuple[dict, Optional[dict]]:
    """→ (metadata: str → str, tensors: name → CPU tensor, or None when `tensors=False`)."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb"):  # permission / directory problems, named plainly
            pass
    except OSError as e:
        raise _open_error(path, e) from None
    if size == 0:
        raise BadWeightsError(path, "empty file (0 bytes), not a safetensors file")
    if size < 8:
        raise BadWeightsError(path, f"not a readable safetensors file: truncated ({size} bytes)")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            if not tensors:
                return metadata, None
            out = {k: f.get_tensor(k) for k in f.keys()}
    except OSError as e:
        raise _open_error(path, e) from None
    except (SafetensorError, ValueError, RuntimeError, TypeError, KeyError, OverflowError, MemoryError) as e:
        raise BadWeightsError(path, _reason(e)) from None
    except BaseException as e:  # pyo3's PanicException derives from BaseException: still one bad file
        if type(e).__name__ == "PanicException":
            raise BadWeightsError(path, _reason(e)) from None
        raise
    return metadata, out


def check_fits(path, model: torch.nn.Module, state: dict, what: str = "") -> None:
    """Raise BadWeightsError unless `state` has exactly the model's names and shapes."""
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch{'es' if len(shapes) > 1 else ''} ({k}: file "
                     f"{list(state[k].shape)}, model {list(target[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing ({missing[0]}{' …' if len(missing) > 1 else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({unexpected[0]}{' …' if len(unexpected) > 1 else ''})")
    raise BadWeightsError(path, f"tensors do not fit {what or 'the model'}: {'; '.join(parts)}")


def load_into(path, model: torch.nn.Module, state: dict, what: str = "") -> None:
    """model.load_state_dict(state), a mismatch being one BadWeightsError naming the file."""
    check_fits(path, model, state, what)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as e:
        raise BadWeightsError(path, f"tensors do not fit {what or 'the model'} ({one_line(e)})") from None


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or non-contiguous storage; copies are cheap next to a disk write.
    shared = _shared_storages(tensors)
    flat = {k: v.detach().cpu().contiguous().clone() if v.untyped_storage().data_ptr() in shared
            else v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        _save_file(save_file, flat, tmp, metadata)


def _save_file(save_file, flat, tmp, metadata) -> None:
    """safetensors reports a full disk as SafetensorError('… (os error 28)'): turn it back into OSError."""
    import re

    from safetensors import SafetensorError

    try:
        save_file(flat, tmp, metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code:
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), tmp) from None
        raise


def _shared_storages(tensors: dict) -> set[int]:
    """Storage addresses that more than one of the tensors points into."""
    counts = Counter(v.untyped_storage().data_ptr() for v in tensors.values())
    return {ptr for ptr, n in counts.items() if n > 1}


def load_tensors(path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (BadWeightsError, one line, when it is unusable)."""
    return read_safetensors(path)[1]


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (optimizer, RNG, scheduler) into a JSON skeleton and named tensors."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o, key):
        if isinstance(o, torch.Tensor):
            tensors[key] = o
            return {"__tensor__": key}
        if isinstance(o, dict):
            return {"__dict__": [[walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")]
                                 for i, (k, v) in enumerate(o.items())]}
        if isinstance(o, (list, tuple)):
            return {"__tuple__" if isinstance(o, tuple) else "__list__":
                    [walk(v, f"{key}.{i}") for i, v in enumerate(o)]}
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        if hasattr(o, "tolist"):  # numpy arrays and scalars
            return {"__numpy__": o.tolist(), "dtype": str(o.dtype)}
        raise TypeError(f"cannot store {type(o).__name__} without pickle")

    return walk(obj, prefix or "s"), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(o):
        if isinstance(o, dict):
            if "__tensor__" in o:
                return tensors[o["__tensor__"]]
            if "__dict__" in o:
                return {walk(k): walk(v) for k, v in o["__dict__"]}
            if "__tuple__" in o:
                return tuple(walk(v) for v in o["__tuple__"])
            if "__list__" in o:
                return [walk(v) for v in o["__list__"]]
            if "__numpy__" in o:
                import numpy as np

                return np.asarray(o["__numpy__"], dtype=o["dtype"])
        return o

    return walk(skeleton)


def save_state(path, state: Any) -> None:
    """One safetensors file: tensors as tensors, the skeleton as JSON metadata (one atomic rename)."""
    skeleton, tensors = flatten_state(state)
    save_tensors(path, tensors, metadata={"ocula_state": json.dumps(skeleton)})


def load_state(path) -> Any:
    """What save_state wrote; a missing, truncated or foreign file is one BadWeightsError."""
    metadata, tensors = read_safetensors(path)
    if "ocula_state" not in metadata:
        raise BadWeightsError(path, "not an ocula training state (no 'ocula_state' metadata)")
    try:
        skeleton = json.loads(metadata["ocula_state"])
        return unflatten_state(skeleton, tensors)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise BadWeightsError(path, f"training state is damaged ({type(e).__name__}: {str(e)[:120]})") from None
