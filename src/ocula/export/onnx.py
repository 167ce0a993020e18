"""PyTorch bundle → one self-contained .onnx file with a dynamic batch axis.

A classifier's graph outputs `logits` (B, K); a detector's outputs `detections` (B, D, 6) (boxes decoded and
NMS-filtered inside the graph: ocula.export.detection).

Everything needed to predict travels in the file's `metadata_props`:
    ocula           the bundle metadata as JSON (arch, contract, classes, versions) + an "export" block
    ocula.classes   JSON list of class names          (readable by tools that know nothing of ocula)
    ocula.contract  JSON DataContract (size, channels, mean/std, interpolation, crop_pct)
    ocula.version   the ocula version that wrote the file
    ocula.arch      the architecture name
The graph is written at opset OPSET unless asked otherwise (the "export" block records the opset and exporter).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import torch

from ocula import tasks
from ocula.data.contract import DataContract
from ocula.errors import OculaError
from ocula.export.detection import detections_graph, is_detector
from ocula.io import atomic_path
from ocula.version import __version__

INPUT_NAME, OUTPUT_NAME, DETECTIONS_NAME = "input", "logits", "detections"
META_KEY = "ocula"
EXAMPLE_BATCH = 2  # a batch of 1 would let the exporter specialise the batch axis to 1
# One opset for every file, whatever torch wrote it: 18 is read by onnxruntime >= 1.14, TensorRT >= 8.6 and
# OpenVINO, and is the lowest the torch.export-based exporter writes natively (below it converts, and may fail).
OPSET = 18


def export_onnx(model: torch.nn.Module, meta: dict, out, *, opset: Optional[int] = None) -> Path:
    """Export `model` (eval mode) with the bundle `meta` written into the file; returns the path."""
    import onnx

    contract = DataContract.from_dict(meta["contract"])
    example = torch.randn(EXAMPLE_BATCH, contract.channels, contract.input_size, contract.input_size)
    model = model.eval().float().to("cpu")
    if is_detector(model):
        graph, output = detections_graph(model, contract.input_size).eval(), DETECTIONS_NAME
    else:
        graph, output = TaskLogits(model, meta), OUTPUT_NAME
    proto, exporter = _torch_export(graph, example, opset or OPSET, output)
    onnx.checker.check_model(proto)
    return write_onnx(proto, _export_meta(meta, precision="fp32", opset=_opset_of(proto), output=output,
                                          exporter=exporter), out)


class TaskLogits(torch.nn.Module):
    """The logits the bundle's task predicts with (a margin head: scaled cosines), as one module."""

    def __init__(self, model: torch.nn.Module, meta: dict):
        super().__init__()
        self.model, self.task = model, tasks.for_meta(meta)

    def forward(self, x):
        return self.task.forward(self.model, x)


def _torch_export(model: torch.nn.Module, example: torch.Tensor, opset: int, output: str = OUTPUT_NAME):
    """(ModelProto, exporter name): the torch.export-based exporter (the supported one), the TorchScript
    exporter where it fails."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[output],
                                        dynamic_shapes=({0: batch},), verbose=False, optimize=True)
        return program.model_proto, "dynamo"
    except Exception as e:  # noqa: BLE001 - any exporter failure gets the second route
        warnings.warn(f"torch.export-based ONNX export failed ({type(e).__name__}: {str(e)[:200]}); "
                      "falling back to the TorchScript exporter")
    return _torchscript_export(model, example, opset, output), "torchscript"


def _torchscript_export(model, example, opset: int, output: str = OUTPUT_NAME):
    import io

    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[output], dynamic_axes={INPUT_NAME: {0: "batch"}, output: {0: "batch"}},
                          dynamo=False)  # torch >= 2.9 defaults to True
    return onnx.load_from_string(buf.getvalue())


def _opset_of(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _export_meta(meta: dict, *, precision: str, opset: int, output: str = OUTPUT_NAME, **extra) -> dict:
    out = dict(meta)
    out["export"] = {"format": "onnx", "precision": precision, "opset": opset, "input": INPUT_NAME,
                     "output": output, "ocula": __version__, "torch": torch.__version__, **extra}
    return out


def write_onnx(proto, meta: dict, out) -> Path:
    """Replace the file's ocula metadata with `meta` and save it as one file, atomically."""
    import onnx

    props = {META_KEY: json.dumps(meta), "ocula.classes": json.dumps(meta["classes"]),
             "ocula.contract": json.dumps(meta["contract"]),
             "ocula.version": meta["export"]["ocula"], "ocula.arch": meta["arch"]["name"],
             # The graph outputs logits; the task says how to read them (task, temperature, thresholds).
             **tasks.for_meta(meta).export_properties(meta)}
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.doc_string = "ocula", f"ocula classifier: {meta['arch']['name']}"
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save_model(proto, tmp)  # weights inline: one file is the whole model (< 2 GB)
    return out


def read_onnx_meta(path) -> dict:
    """The ocula metadata of an exported file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OculaError(f"no such ONNX file: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own exception types
        raise OculaError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None
    return parse_meta({p.key: p.value for p in proto.metadata_props}, path)


def parse_meta(props: dict, path) -> dict:
    if META_KEY not in props:
        raise OculaError(f"{path}: ONNX file without ocula metadata (export it with `ocula export`)")
    try:
        meta = json.loads(props[META_KEY])
    except (ValueError, RecursionError) as e:
        raise OculaError(f"{path}: ocula metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise OculaError(f"{path}: ocula metadata is not a JSON object")
    for key in ("classes", "contract", "arch"):
        if key not in meta:
            raise OculaError(f"{path}: ocula metadata lacks '{key}'")
    return meta


def load_proto(path):
    import onnx

    return onnx.load(str(path))
