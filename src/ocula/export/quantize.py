"""Static, calibrated int8 (QDQ) with onnxruntime.quantization: the int8 that speeds up convolutions.

Dynamic quantization only covers MatMul/Gemm weights (and ran slower than fp32 on CNNs here); static
QDQ quantizes convolutions and activations, with activation ranges measured on real images:
    fp32 .onnx --quant_pre_process (shape inference, graph fusions)--> calibrate (MinMax over N images)
    --> QDQ: uint8 activations (asymmetric), int8 weights per output channel (symmetric)
ONNX Runtime's CPU provider fuses the Q/DQ pairs into integer kernels (VNNI / AMX where the CPU has them).
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ocula.errors import OculaError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def calibration_samples(data: str, size: int):
    """Images to calibrate on: the data's val split, else train, else test; `size` evenly spaced."""
    from ocula.data.sources import resolve_data

    splits = resolve_data(data, val_fraction=0.0, seed=0, require_train=False)
    name = next(s for s in ("val", "train", "test") if getattr(splits, s) is not None)
    samples = getattr(splits, name)
    if len(samples) > size:
        samples = samples.subset(np.linspace(0, len(samples) - 1, size).round().astype(int).tolist())
    return samples, name


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over ocula's eval batches, with the `__len__` and
    `set_range` that strided calibration needs: ranges are computed and merged one batch at a time,
    so memory holds one batch of activations rather than all of them."""

    def __init__(self, clf, samples, input_name: str, batch_size: int, workers: Optional[int]):
        from ocula.api import _split_loader

        self.batches = [np.ascontiguousarray(b[0].numpy(), dtype=np.float32)
                        for b in _split_loader(clf, samples, batch_size, workers) if b[0] is not None]
        self.input_name = input_name
        self.seen = sum(len(b) for b in self.batches)
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.batches[start_index:end_index])

    def get_next(self):
        x = next(self._pending, None)
        return None if x is None else {self.input_name: x}


def quantize_int8(fp32_path, out, calibrate: str, *, calib_size: int = 256, method: str = "minmax",
                  batch_size: int = 16, workers: Optional[int] = None) -> dict:
    """Quantize an exported fp32 file to static int8 QDQ; returns what was done (written into the file)."""
    from ocula.export.onnx import load_proto, write_onnx
    from ocula.export.runtime import OnnxClassifier

    if method not in CALIBRATION_METHODS:
        raise OculaError(f"calibration method '{method}': choose one of {', '.join(CALIBRATION_METHODS)}")
    if calib_size < 1:
        raise OculaError("calib_size must be at least 1")
    fp32 = OnnxClassifier.load(fp32_path)
    samples, split = calibration_samples(calibrate, calib_size)
    reader = _Batches(fp32, samples, fp32.input_name, batch_size, workers)
    with tempfile.TemporaryDirectory(prefix="ocula-int8-") as tmp:
        prepared = _prepare(Path(fp32_path), Path(tmp) / "prepared.onnx")
        if reader.seen == 0:
            raise OculaError(f"{calibrate}: no readable images to calibrate on")
        _quantize(prepared, Path(tmp) / "int8.onnx", reader, method)
        info = {"method": f"static QDQ, {method} calibration", "activations": "uint8 asymmetric",
                "weights": "int8 symmetric per-channel", "calibration_data": str(calibrate),
                "calibration_split": split, "calibration_images": reader.seen}
        meta = dict(fp32.meta)
        meta["export"] = {**meta["export"], "precision": "int8", "quantization": info}
        write_onnx(load_proto(Path(tmp) / "int8.onnx"), meta, out)
    return info


def _prepare(src: Path, dst: Path) -> Path:
    """Symbolic shape inference + ORT graph optimisation before quantizing (onnxruntime's advice)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        return dst
    except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
        warnings.warn(f"quantization pre-processing skipped ({type(e).__name__}: {str(e)[:160]})")
        return src


def _quantize(src: Path, dst: Path, reader, method: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    # uint8 activations + int8 weights (U8S8) is what x86 integer kernels (VNNI/AMX) are fastest at.
    quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                    extra_options={"CalibStridedMinMax": 1, "WeightSymmetric": True})
