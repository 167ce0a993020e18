"""Ship a model: ONNX export with an accuracy gate, static int8 quantization, benchmarks.

    from ocula.export import export_model, OnnxClassifier, benchmark
    result = export_model("runs/shoes", int8=True, calibrate="shoes_val/")  # gates both files
    clf = OnnxClassifier.load("runs/shoes/model.onnx")                  # the file alone predicts
    clf.predict("cat.jpg", topk=3)

onnx / onnxruntime are imported inside the functions that need them, so this package is cheap.
"""
from __future__ import annotations

from ocula.lazy import lazy_getattr

# Loaded on first use: `ocula --help` imports this package (for its CLI) and must not import torch.
_EXPORTS = {
    "ExportResult": "ocula.export.pipeline",
    "export_model": "ocula.export.pipeline",
    "benchmark": "ocula.export.benchmark",
    "accuracy_gate": "ocula.export.gate",
    "export_onnx": "ocula.export.onnx",
    "read_onnx_meta": "ocula.export.onnx",
    "quantize_int8": "ocula.export.quantize",
    "OnnxClassifier": "ocula.export.runtime",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
