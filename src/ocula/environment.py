"""Where a run was trained: versions and hardware, written once per run as environment.json.

    {"python": "3.11.7", "ocula": "0.1.0", "torch": "2.14.1", "timm": "1.0.20",
     "cpu": "AMD EPYC 9B14", "cores": 2, "torch_threads": 2, "device": "cpu", "gpu": null, ...}

Core module: imports nothing of ocula's feature packages. The report (ocula.report) reads the file.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional

import torch

from ocula.version import __version__


X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")


def is_x86() -> bool:
    return platform.machine().lower() in X86_MACHINES


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (avx2, avx512_vnni, amx_bf16, ...); empty where unreadable."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


def cpu_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what `platform` knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _version(module: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def describe(device=None, world_size: int = 1) -> dict:
    """Versions and hardware of this process; `device` is the torch device training runs on."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    gpu = None
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
               "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {"python": platform.python_version(), "ocula": __version__, "torch": torch.__version__,
            "timm": _version("timm"), "torchvision": _version("torchvision"),
            "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "gpu": gpu, "world_size": world_size}
