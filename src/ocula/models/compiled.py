"""`--compile`: torch.compile a model, or run it eager with one line saying why.

    model = compile_model(model, device)          # train (engine.setup) and predict (inference.predictor)

torch.compile is lazy: nothing is compiled until the first forward, and that is where most failures
show (no C++ compiler for inductor on a CPU, no Triton on a GPU, an operator Dynamo cannot trace). So
the returned module compiles on its first call, prints how long that took, and on a failure prints
one line and runs eager from then on. A missing compiler is found before that, because on the
training path the backward graph is compiled at the first `backward()`, where nothing could catch it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import time
from typing import Optional

import torch
import torch.nn as nn

from ocula.log import logger


def compiler_missing(device: torch.device) -> Optional[str]:
    """Why torch.compile's default backend (inductor) cannot run on `device` here, or None when it can.
    On a CPU inductor writes C++ and builds it with $CXX (else g++); on a GPU it writes Triton kernels."""
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "no Triton (inductor needs it on a GPU)"
    wanted = os.environ.get("CXX")
    if any(shutil.which(c) for c in ([wanted] if wanted else ["g++", "c++", "clang++"])):
        return None
    return f"no C++ compiler ({wanted or 'g++'}: inductor builds C++ on a CPU; install g++ or set CXX)"


class CompiledModule(nn.Module):
    """`module` run through torch.compile from its first forward, or eager once compiling failed. The
    compiled function is kept outside the module tree, so parameters and state_dict are `module`'s own."""

    def __init__(self, module: nn.Module, compiled):
        super().__init__()
        self.module = module
        self.__dict__["_compiled"] = compiled  # not a submodule: it wraps `module`, whose weights it shares
        self.first_compile_s: Optional[float] = None
        self.fell_back: Optional[str] = None  # the reason, once eager for good

    def forward(self, *args, **kwargs):
        if self.fell_back is not None:
            return self.module(*args, **kwargs)
        if self.first_compile_s is not None:
            return self._compiled(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            out = self._compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - Dynamo and inductor fail in many ways, all of them "run eager"
            self.fell_back = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
            logger.info(f"compile: failed on the first forward ({self.fell_back}); running eager")
            return self.module(*args, **kwargs)
        self.first_compile_s = time.perf_counter() - t0
        logger.info(f"compile: first forward compiled in {self.first_compile_s:.1f} s")
        return out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the wrapped model's own surface: no_sync, forward_features, nms_thresh...
            return getattr(self.__dict__["_modules"]["module"], name)


def compile_model(model: nn.Module, device: torch.device, dynamic: Optional[bool] = None) -> nn.Module:
    """`model` behind torch.compile (a CompiledModule), or `model` itself, with one line, when no compiler
    is usable. `dynamic=True` compiles once for every batch size (prediction's last batch is smaller)."""
    missing = compiler_missing(device)
    if missing:
        logger.info(f"compile: off, {missing}; running eager")
        return model
    try:
        compiled = torch.compile(model, dynamic=dynamic)
    except Exception as e:  # noqa: BLE001 - e.g. an unsupported Python version
        logger.info(f"compile: off, torch.compile refused the model ({type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}); running eager")
        return model
    return CompiledModule(model, compiled)
