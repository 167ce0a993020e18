"""Package attributes loaded on first use (PEP 562), so importing a package stays cheap.

`ocula --help` imports the feature packages for their CLI and must not import torch:

    _EXPORTS = {"export_model": "ocula.export.pipeline", ...}
    __all__ = sorted(_EXPORTS)
    __getattr__ = lazy_getattr(__name__, _EXPORTS)
"""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` that imports `exports[name]` (a module path) when `name` is first read."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
