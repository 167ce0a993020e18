"""`--device auto|cpu|cuda|cuda:N`: the spelling is checked when the command line is parsed (no torch
import, so `ocula --help` stays fast), the hardware when the model is loaded."""
from __future__ import annotations

import re

from ocula.errors import OculaError

DEVICE_HELP = "where the PyTorch model runs: auto (the GPU when there is one), cpu, cuda or cuda:N (default: auto)"
_SPELLING = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(text: str) -> str:
    """The device as typed, if it is one ocula knows how to name; else OculaError."""
    if not _SPELLING.fullmatch(str(text)):
        raise OculaError(f"--device '{text}': expected auto, cpu, cuda or cuda:N")
    return str(text)


def available_device(text: str) -> str:
    """`text` if this machine has that device ("auto" always); a one-line OculaError rather than torch's
    "Torch not compiled with CUDA enabled" traceback when it has not."""
    import torch  # lazy: the spelling check above runs while parsing, before anything needs torch

    text = check_device(text)
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device{'s' if count != 1 else ''}" + (f" (cuda:0..cuda:{count - 1})" if count else "")
            raise OculaError(f"--device {text}: this machine has {have}")
    if text == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OculaError("--device mps: Apple's Metal backend is not available here")
    return text
