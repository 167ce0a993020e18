"""Atomic file writes and pickle-free state (safetensors for tensors, JSON for the rest).

Every file ocula writes goes through `atomic_write`: a temp file in the same folder, fsync, then
`os.replace`, so a run killed at any instant leaves either the old file or the new one.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ocula.errors import BadWeightsError, disk_error as _disk_error
from ocula.names import clean, display_name, has_odd_chars
from ocula.weights_file import read_safetensors


@contextmanager
def atomic_path(path):
    """Yields a temp path next to `path`; on success it replaces `path` in one rename.

    On any failure (disk full, read-only, an exception in the caller) the temp file is removed and
    `path` is left as it was; an OSError from the disk becomes one OculaError naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(e, path.parent) from None
    # not mkstemp: its 0600 mode would survive os.replace; a fresh name keeps the umask's mode
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            # safetensors' writer creates files 0600; a run copied to a shared machine must stay readable
            os.fchmod(f.fileno(), _UMASK_MODE)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename not in (None, tmp, str(path)):  # about another file the caller was reading
            raise
        raise disk_error(e, path) from None
    finally:
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        except OSError:
            pass


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_UMASK_MODE = _umask_mode()  # read once at import: os.umask is process-wide and not thread-safe


def disk_error(e: OSError, path):
    return _disk_error(e, path)


def write_text(path, text: str) -> None:
    """UTF-8 text, atomically; lone surrogates (undecodable filenames) are written as \\x escapes."""
    if has_odd_chars(text):
        text = display_name(text)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


STDOUT = "-"  # as a path in `--json -`, `--csv -`, `--out -`: standard output


def write_output(path, text: str) -> None:
    """`text` to the file `path` (atomically) or, for "-", to stdout, where undecodable filenames are
    written as readable escapes too (a strict stdout would raise on them)."""
    if str(path) != STDOUT:
        write_text(path, text)
        return

    sys.stdout.write(display_name(text) if has_odd_chars(text) else text)
    sys.stdout.flush()


def write_json(path, obj: Any, exact_names: bool = False) -> None:
    """Indented JSON, atomically ("-": stdout). Undecodable filenames are written readably
    (`caf\\xe9.png`); with `exact_names` (files ocula reads back to open those paths again) as JSON's
    `\\udce9` escape instead, which is still plain ASCII but round-trips to the very same name."""
    write_output(path, dumps_json(obj, exact_names=exact_names))


def dumps_json(obj: Any, indent=2, exact_names: bool = False) -> str:
    """json.dumps for ocula's files: numpy/Path/sets handled, undecodable filenames made readable
    (`caf\\xe9.png`, not the '\\udce9' escape json would write) unless `exact_names`."""
    return json.dumps(obj if exact_names else clean(obj), indent=indent, default=_json_default) + "\n"


def write_npz(path, arrays: dict) -> None:
    """numpy arrays → a compressed .npz, written atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_json(path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return display_name(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or non-contiguous storage; copies are cheap next to a disk write.
    flat = {k: v.detach().cpu().contiguous().clone() if _shares_storage(v, tensors) else v.detach().cpu()
            .contiguous() for k, v in tensors.items()}
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


def _shares_storage(t: torch.Tensor, all_tensors: dict) -> bool:
    ptr = t.untyped_storage().data_ptr()
    return sum(1 for v in all_tensors.values() if v.untyped_storage().data_ptr() == ptr) > 1


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
