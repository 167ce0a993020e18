"""ONNX Runtime behind the Classifier surface: `OnnxClassifier.load("model.onnx").predict("cat.jpg")`.

Classes and preprocessing come from the file's metadata alone (see ocula.export.onnx), and batching,
top-k and file decoding are the very code `Classifier` runs (ocula.inference.predictor.Predictor).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ocula.errors import OculaError, did_you_mean
from ocula.export.onnx import parse_meta
from ocula.inference.predictor import Predictor

# What a run directory's exports are called (`ocula export RUN` writes them).
FP32_NAME, INT8_NAME = "model.onnx", "model.int8.onnx"


def resolve_onnx(path, int8: bool = False) -> Path:
    """A .onnx file, or a run directory holding model.onnx (model.int8.onnx with int8=True)."""
    p = Path(path)
    if p.is_dir():
        found = p / (INT8_NAME if int8 else FP32_NAME)
        if not found.is_file():
            extra = " --int8 --calibrate DATA" if int8 else ""
            raise OculaError(f"{path}: no {found.name} (create it with `ocula export {path} --format onnx{extra}`)")
        return found
    if not p.is_file():
        raise OculaError(f"no such ONNX model or run directory: {path}")
    if p.suffix != ".onnx":
        raise OculaError(f"{path}: expected a .onnx file or a run directory")
    return p


# The default order: a GPU when onnxruntime-gpu sees one, then the CPU (which also runs any node the GPU
# provider lacks). Other installed providers (TensorRT builds engines for minutes; Azure calls a remote
# endpoint) run only when named.
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def resolve_providers(providers=None) -> list[str]:
    """Comma-separated names ("cuda,cpu"), a list, or None for the default → the full names of providers
    this onnxruntime has, in order; an unknown or unavailable name is a one-line OculaError listing them."""
    import onnxruntime as ort  # lazy: the CLI parses --providers without loading onnxruntime

    available = ort.get_available_providers()
    if not providers:
        return [p for p in DEFAULT_PROVIDERS if p in available]
    names = [n.strip() for n in providers.split(",")] if isinstance(providers, str) else list(providers)
    by_short = {p.lower().removesuffix("executionprovider"): p for p in available}
    chosen = []
    for name in filter(None, names):
        full = name if name in available else by_short.get(name.lower().removesuffix("executionprovider"))
        if full is None:
            raise OculaError(f"onnxruntime provider '{name}' is not available here; this onnxruntime "
                             f"{ort.__version__} has: {', '.join(available)}{did_you_mean(name, available)}")
        if full not in chosen:
            chosen.append(full)
    if not chosen:
        raise OculaError(f"--providers '{providers}': name at least one of {', '.join(available)}")
    return chosen


def make_session(path, threads: Optional[int] = None, providers=None):
    """An InferenceSession: all graph optimisations, `threads` intra-op threads (None: ORT's choice),
    `providers` as `resolve_providers` takes them (default: CUDA when available, then CPU)."""
    import onnxruntime as ort

    chosen = resolve_providers(providers)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # warnings about unused initialisers etc. are noise to users
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=chosen)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise OculaError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None


class OnnxClassifier(Predictor):
    """Same surface as `Classifier` (classes, contract, transform, meta, preprocess, logits, predict,
    predict_proba, predict_files), running an exported file on ONNX Runtime (`providers`: its CPU provider,
    or CUDA first when onnxruntime-gpu sees a GPU; inputs and outputs pass through host memory)."""

    def __init__(self, session, meta: dict, path: Optional[Path] = None):
        self.session, self.path = session, path
        self.device = torch.device("cpu")
        self._init_contract(meta)
        self.input_name = session.get_inputs()[0].name
        self.precision = meta.get("export", {}).get("precision", "fp32")

    @classmethod
    def load(cls, path, threads: Optional[int] = None, int8: bool = False, providers=None) -> "OnnxClassifier":
        """`path`: a .onnx file or a run directory (its model.onnx; model.int8.onnx with int8=True);
        `providers`: "cuda,cpu" or a list (default: CUDA when available, then CPU)."""
        onnx_path = resolve_onnx(path, int8=int8)
        session = make_session(onnx_path, threads, providers)
        meta = parse_meta(session.get_modelmeta().custom_metadata_map, onnx_path)
        return cls(session, meta, onnx_path)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch → logits (B, K), float32 on the CPU (the task's calibration is applied by
        `probabilities`, as for PyTorch: the exported graph outputs raw logits)."""
        if x.dim() != self.modality.sample_dims + 1:
            raise OculaError(f"expected a batch of {self.modality.noun}, got shape {tuple(x.shape)}")
        feed = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (out,) = self.session.run(None, {self.input_name: feed})
        return torch.from_numpy(out).float()
