"""Shared by the bench scripts: the machine description printed next to every figure."""
from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from pathlib import Path


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0],
            "command": " ".join([Path(sys.executable).name] + sys.argv)}


def print_machine() -> dict:
    info = machine()
    print("MACHINE " + " | ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    return info


def write_result(path, result: dict) -> None:
    """The figures as JSON next to their section (docs/bench/...), the folder made if needed."""
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
