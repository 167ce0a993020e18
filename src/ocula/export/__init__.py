"""Ship a model: ONNX export with an accuracy gate, static int8 quantization, benchmarks.

    from ocula.export import export_model, OnnxClassifier, benchmark
    result = export_model("runs/shoes", int8=True, calibrate="shoes_val/")  # gates both files
    clf = OnnxClassifier.load("runs/shoes/model.onnx")                  # the file alone predicts
    clf.predict("cat.jpg", topk=3)

onnx / onnxruntime are imported inside the functions that need them, so this package is cheap.
"""
from __future__ import annotations

from ocula.export.pipeline import ExportResult, export_model
from ocula.export.benchmark import benchmark
from ocula.export.gate import accuracy_gate
from ocula.export.onnx import export_onnx, read_onnx_meta
from ocula.export.quantize import quantize_int8
from ocula.export.runtime import OnnxClassifier

__all__ = ["ExportResult", "export_model", "benchmark", "accuracy_gate", "export_onnx", "read_onnx_meta",
           "quantize_int8", "OnnxClassifier"]
