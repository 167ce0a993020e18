"""`ocula export`: the fp32 ONNX file, optionally its int8 sibling, and the accuracy gate for each.

    runs/shoes/model.onnx             fp32, dynamic batch, metadata = everything needed to predict
    runs/shoes/model.gate.json        its accuracy gate
    runs/shoes/model.int8.onnx        int8 (with --int8): static QDQ for CNNs, dynamic for ViTs
    runs/shoes/model.int8.gate.json
A file that fails its gate is still written (to inspect), but its gate report says so and the
command exits non-zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ocula.errors import OculaError
from ocula.export.gate import accuracy_gate, gate_data as resolve_gate_data
from ocula.export.onnx import export_onnx
from ocula.export.quantize import SCHEMES, quantize_int8
from ocula.export.runtime import OnnxClassifier
from ocula.inference.predictor import Classifier
from ocula.io import write_json
from ocula.run_dir import GATE_SUFFIX, RunDir

FORMATS = ("onnx",)


@dataclass
class ExportResult:
    files: dict  # precision → path of the model file
    gates: dict  # precision → gate report (also written as <model>.gate.json)
    reports: dict = field(default_factory=dict)  # precision → path of the gate report

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.gates.values())

    @property
    def reason(self) -> Optional[str]:
        return next((f"{p}: {g['reason']}" for p, g in self.gates.items() if not g["passed"]), None)


def default_onnx_path(run) -> Path:
    p = Path(run)
    return RunDir(p).onnx if p.is_dir() else p.with_suffix(".onnx")


def int8_path(fp32_path: Path) -> Path:
    return fp32_path.with_name(fp32_path.name[:-len(".onnx")] + ".int8.onnx")


def export_model(run, *, format: str = "onnx", out=None, int8: bool = False, calibrate: Optional[str] = None,
                 calib_size: int = 256, calib_method: str = "minmax", gate_data: Optional[str] = None,
                 max_drop: Optional[float] = None, gate_limit: Optional[int] = None, opset: Optional[int] = None,
                 batch_size: int = 64, workers: Optional[int] = None, int8_scheme: str = "auto") -> ExportResult:
    """Export a run (or .safetensors bundle) to ONNX, quantize it with int8=True, and gate every file.

    `calibrate`: images for int8 calibration (default: the run's training data); `gate_data`: labelled
    images for the gate (default: the run's test/held-out data); `max_drop`: allowed accuracy drop in
    points for every file (default 0.5 fp32, 1 int8); `gate_limit`: gate on at most N images;
    `int8_scheme`: auto (static QDQ for convolution-heavy graphs, dynamic for matmul-heavy ones such as
    ViTs), static or dynamic.
    """
    if format not in FORMATS:
        raise OculaError(f"export format '{format}': supported: {', '.join(FORMATS)}")
    if int8 and int8_scheme not in SCHEMES:  # before the slow export, not after
        raise OculaError(f"int8 scheme '{int8_scheme}': choose one of {', '.join(SCHEMES)}")
    reference = Classifier.load(run, device="cpu")
    spec = resolve_gate_data(reference, gate_data)  # fail before the slow steps, not after
    fp32 = Path(out) if out else default_onnx_path(run)
    if fp32.suffix != ".onnx":
        raise OculaError(f"--out {out}: the file name must end in .onnx")
    files = {"fp32": export_onnx(reference.model, reference.meta, fp32, opset=opset)}
    if int8:
        calibrate = calibrate or resolve_gate_data(reference, None)
        files["int8"] = int8_path(fp32)
        quantize_int8(fp32, files["int8"], calibrate, calib_size=calib_size, method=calib_method,
                      workers=workers, scheme=int8_scheme)
    candidates = [OnnxClassifier.load(path) for path in files.values()]
    reports = accuracy_gate(reference, candidates, spec, max_drop=max_drop, limit=gate_limit,
                            batch_size=batch_size, workers=workers)
    result = ExportResult(files={p: str(f) for p, f in files.items()}, gates={})
    for (precision, path), report in zip(files.items(), reports):
        report.update(model=str(path), size_bytes=path.stat().st_size,
                      export=candidates[list(files).index(precision)].meta["export"])
        result.gates[precision] = report
        result.reports[precision] = str(path.with_name(path.name[:-len(".onnx")] + GATE_SUFFIX))
        write_json(result.reports[precision], report)
    return result
