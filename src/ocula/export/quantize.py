"""Int8 with onnxruntime.quantization: static calibrated QDQ for CNNs, dynamic for transformers.

Static QDQ quantizes convolutions and activations, with activation ranges measured on real images:
    fp32 .onnx --quant_pre_process (shape inference, graph fusions)--> calibrate (MinMax over N images)
    --> QDQ: uint8 activations (asymmetric, per tensor), int8 weights per output channel (symmetric;
    depthwise convolutions too: one scale per channel, axis 0 of the (C, 1, k, k) weight)
ONNX Runtime's CPU provider fuses the Q/DQ pairs into integer kernels (VNNI / AMX where the CPU has them).
ReLU6 is exported as Clip(0, 6); the quantizer folds it into the uint8 range of the convolution's output
(calibrated on the clipped values), so no Clip runs in the int8 graph.

In graphs with depthwise convolutions (MobileNet, EfficientNet-Lite) the convolutions that read the image
stay fp32 (`fp32_nodes`). Measured on efficientnet_lite0 with ImageNet weights fine-tuned on Fashion-MNIST
at 224 px (issue 13, docs/benchmarks.md; 2-core AVX-512 VNNI CPU, no AMX): per-channel weights are what
keep it usable (per-tensor: 78% top-1 agreement with PyTorch, a 4.4-point drop); after that the biggest
loss was the stem's uint8 ReLU6 output (25 dB SQNR, compounding through 16 thin blocks). A fp32 stem
raised agreement by 3.1-4.9 points (90.8% → 95.7% on 2,000 test images) and cut the mean |Δlogit| by
37-49%, at the same 1.9× fp32 throughput at batch 32. Percentile and entropy calibration moved agreement
by < 2 points either way at 7-15× the calibration time, and fp32 depthwise convolutions were slower *and*
less accurate, so MinMax stays the default.

On x86 CPUs without VNNI (AVX2, AVX-512F alone) the weights of the non-depthwise convolutions and the
Gemm are uint8 instead (`pointwise_weights="auto"`): there ONNX Runtime's U8S8 GEMM adds pairs of products
into int16 and saturates. Measured on two lite0 runs at 30 images a class (issue 23, 2-core AVX2 EPYC,
`bench/int8_pointwise.py`): Fashion-MNIST 1.10 → 0.60 points lost (agreement 92.7 → 96.8 %), digits 1.67
→ 0.28 (96.9 → 99.2 %), at 1.29× / 1.18× fp32 speed instead of 1.65× / 1.46× (batch 32, one thread).

Dynamic quantization stores int8 weights and quantizes activations per batch at run time
(MatMulInteger); it needs no calibration. Measured in issue 6 on a 2-core AMX CPU at batch 32 (ONNX
Runtime, 2 threads): resnet18 static 2.9× fp32 (issue 6 quotes dynamic at 6× *slower*); vit_tiny at
224 px static 1.18-1.29× fp32, dynamic 1.37-1.55×. `scheme="auto"` therefore picks static when convolutions dominate the
graph and dynamic when matrix products do (ONNX Runtime's own advice for transformers).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ocula.environment import cpu_flags, is_x86
from ocula.errors import OculaError
from ocula.export.onnx import load_proto, parse_meta, write_onnx
from ocula.export.runtime import OnnxClassifier
from ocula.inference.scoring import split_batches
from ocula.modality.sources import resolve_data

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
SCHEMES = ("auto", "static", "dynamic")


def choose_scheme(proto) -> str:
    """static for convolution-heavy graphs (CNNs), dynamic for matmul-heavy ones (ViTs, MLPs);
    `proto`: a loaded ONNX model or a path to one."""
    graph = (load_proto(proto) if isinstance(proto, (str, Path)) else proto).graph
    ops = [n.op_type for n in graph.node]
    convs = sum(op in ("Conv", "ConvTranspose") for op in ops)
    matmuls = sum(op in ("MatMul", "Gemm") for op in ops)
    return "static" if convs >= matmuls else "dynamic"


def calibration_samples(data: str, size: int):
    """Images to calibrate on: the data's val split, else train, else test; `size` evenly spaced."""
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
        self.batches = [np.ascontiguousarray(b[0].numpy(), dtype=np.float32)
                        for b in split_batches(clf, samples, batch_size, workers) if b[0] is not None]
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


def quantize_int8(fp32_path, out, calibrate: Optional[str], *, calib_size: int = 256, method: str = "minmax",
                  batch_size: int = 16, workers: Optional[int] = None, scheme: str = "auto",
                  keep_fp32="auto", pointwise_weights: str = "auto") -> dict:
    """Quantize an exported fp32 file to int8; returns what was done (also written into the file).
    `calibrate` (images) is needed by the static scheme only; `keep_fp32` (static only): "auto" (the
    nodes `fp32_nodes` picks) or a list of node names to leave in fp32 ([] quantizes every node);
    `pointwise_weights` (static only): "auto" (uint8 on x86 CPUs without VNNI, see `_pointwise_overrides`),
    "int8" or "uint8" for the weights of non-depthwise convolutions and Gemm."""
    if scheme not in SCHEMES:
        raise OculaError(f"int8 scheme '{scheme}': choose one of {', '.join(SCHEMES)}")
    if method not in CALIBRATION_METHODS:
        raise OculaError(f"calibration method '{method}': choose one of {', '.join(CALIBRATION_METHODS)}")
    if pointwise_weights not in POINTWISE_WEIGHTS:
        raise OculaError(f"pointwise weights '{pointwise_weights}': choose one of {', '.join(POINTWISE_WEIGHTS)}")
    if calib_size < 1:
        raise OculaError("calib_size must be at least 1")
    if keep_fp32 != "auto" and (isinstance(keep_fp32, str) or not all(isinstance(n, str) for n in keep_fp32)):
        raise OculaError(f"keep_fp32 {keep_fp32!r}: 'auto' or a list of node names")
    proto = load_proto(fp32_path)
    meta = parse_meta({p.key: p.value for p in proto.metadata_props}, fp32_path)
    chosen = choose_scheme(proto) if scheme == "auto" else scheme
    del proto  # the quantizer reads the file itself
    with tempfile.TemporaryDirectory(prefix="ocula-int8-") as tmp:
        prepared = _prepare(Path(fp32_path), Path(tmp) / "prepared.onnx")
        if chosen == "dynamic":
            _quantize_dynamic(prepared, Path(tmp) / "int8.onnx")
            info = {"method": "dynamic (weights int8 ahead of time, activations per batch at run time)",
                    "activations": "uint8, ranges computed per batch", "weights": "int8 symmetric",
                    "scheme_requested": scheme}
        else:
            if not calibrate:
                raise OculaError("static int8 needs images to calibrate on (calibrate=DATA)")
            samples, split = calibration_samples(calibrate, calib_size)
            fp32 = OnnxClassifier.load(fp32_path)  # its preprocessing and input name feed calibration
            reader = _Batches(fp32, samples, fp32.input_name, batch_size, workers)
            if reader.seen == 0:
                raise OculaError(f"{calibrate}: no readable images to calibrate on")
            kept_fp32 = fp32_nodes(prepared) if keep_fp32 == "auto" else list(keep_fp32)
            pointwise = _quantize(prepared, Path(tmp) / "int8.onnx", reader, method, kept_fp32, pointwise_weights)
            info = {"method": f"static QDQ, {method} calibration", "activations": "uint8 asymmetric",
                    "weights": "int8 symmetric per-channel", "pointwise_weights": pointwise, "fp32_nodes": kept_fp32,
                    "calibration_data": str(calibrate),
                    "calibration_split": split, "calibration_images": reader.seen, "scheme_requested": scheme}
        meta["export"] = {**meta["export"], "precision": "int8", "quantization": info}
        write_onnx(load_proto(Path(tmp) / "int8.onnx"), meta, out)
    return info


def _prepare(src: Path, dst: Path) -> Path:
    """Symbolic shape inference + ORT graph optimisation before quantizing (onnxruntime's advice)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    error = None
    # onnxruntime 1.18's symbolic shape inference gives up on a Reshape of torch 2.6's export; the rest of the
    # pre-processing still matters there: skipped whole, lite0's int8 agreed with fp32 on 19 of 24 photos
    # (tests/test_int8_lite0.py asks 0.85; the op counts were the same, the cause was not pinned down)
    for skip_symbolic in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
            return dst
        except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
            error = error or e
    warnings.warn(f"quantization pre-processing skipped ({type(error).__name__}: {str(error)[:160]})")
    return src


def _quantize_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantizer():
        # the matrix products only: a transformer's one Conv (the patch embedding) stays fp32, as ONNX Runtime's
        # transformer recipes leave it (onnxruntime 1.18, the floor, has no CPU ConvInteger for int8 weights)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs one root-logger warning per LayerNorm weight when per-channel
    quantization falls back to per-tensor for rank-1 tensors: expected, and noise to a user."""
    root = logging.getLogger()
    drop = lambda record: "is out-of-range for weight" not in record.getMessage()  # noqa: E731
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def fp32_nodes(proto) -> list[str]:
    """Nodes the static scheme leaves in fp32.

    In a graph with depthwise convolutions (MobileNet, EfficientNet-Lite), the convolutions that read the
    image itself. Measured on efficientnet_lite0 (ImageNet weights, fine-tuned on Fashion-MNIST at 224 px):
    the stem's uint8 ReLU6 output alone fell to 25 dB SQNR and the noise compounds through 16 thin blocks;
    in fp32 it halved the mean |Δlogit| at no measurable cost in speed (the stem is ~3% of the MACs). Graphs
    without depthwise convolutions (resnet18, seed_cnn) quantize everything as before: their stem is a
    bigger share of the work and they passed the gate quantized.

    In a graph with GroupNorm (exported as Reshape → InstanceNormalization → Reshape → Mul → Add: a
    detector's FCOS or RetinaNet head), the convolutions that feed one and everything downstream of them. Measured on
    ocula's default detector (cs3darknet_s FCOS, photo-objects seed 2, 150 test images): all int8 lost 23.9
    mAP points and agreed on 62.7% of the confident boxes; with the whole head in fp32, 0.3 points and 100%
    (0.2 points and 99.8% on seed 3, where the rule was not chosen; docs/benchmarks.md, issue 25).
    `proto`: a loaded ONNX model or a path to one."""
    graph = (load_proto(proto) if isinstance(proto, (str, Path)) else proto).graph
    nodes = list(graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    kept = []
    if any(_group(n) > 1 for n in convs):
        inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
        kept = [n.name for n in convs if n.input and n.input[0] in inputs]
    kept += [n.name for n in _after_group_norm(nodes) if n.name not in kept]
    return kept


def _after_group_norm(nodes) -> list:
    """Every Conv whose output reaches an InstanceNormalization through Reshapes only, and all that follows
    from them (the head and the decoding after it), in graph order."""
    made_by = {out: n for n in nodes for out in n.output}
    seeds = set()
    for node in nodes:
        if node.op_type != "InstanceNormalization" or not node.input:
            continue
        src = made_by.get(node.input[0])
        while src is not None and src.op_type == "Reshape":
            src = made_by.get(src.input[0])
        if src is not None and src.op_type == "Conv":
            seeds.add(id(src))
    if not seeds:
        return []
    readers: dict = {}
    for n in nodes:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    reached, todo = set(seeds), [n for n in nodes if id(n) in seeds]
    while todo:
        for out in todo.pop().output:
            for reader in readers.get(out, []):
                if id(reader) not in reached:
                    reached.add(id(reader))
                    todo.append(reader)
    return [n for n in nodes if id(n) in reached]


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def vnni_cpu() -> Optional[bool]:
    """Whether this x86 CPU has VNNI (AVX512_VNNI or AVX-VNNI); None when unknown (not x86, no flags to read).

    Why it matters: without VNNI, ONNX Runtime's U8S8 integer GEMM (x86 AVX2 / AVX-512F) multiplies with
    VPMADDUBSW, which adds each pair of uint8 × int8 products into int16 and saturates above 32,767;
    255 × 127 × 2 does not fit. VNNI's VPDPBUSD sums into int32 and never saturates."""
    flags = cpu_flags() if is_x86() else set()
    return bool({"avx512_vnni", "avx_vnni"} & flags) if flags else None


def int16_saturation_risk() -> bool:
    """True on x86 CPUs without VNNI, and on x86 CPUs whose flags cannot be read (fidelity first);
    False on VNNI and on ARM (its int8 dot products widen to int32)."""
    return is_x86() and vnni_cpu() is not True


POINTWISE_WEIGHTS = ("auto", "int8", "uint8")


def _pointwise_overrides(src: Path, exclude: list[str], pointwise: str) -> tuple[dict, str]:
    """TensorQuantOverrides that give the weights of GEMM-like nodes (1×1 and other non-depthwise
    convolutions, Gemm) uint8 per channel, and why. Depthwise convolutions keep int8: ONNX Runtime runs
    them in its own depthwise kernel, which accumulates in int32 (no saturation), and has no fast uint8
    weight path (all-uint8 lite0 ran at 6.8 img/s against 37 for fp32).

    Measured on efficientnet_lite0 fine-tuned on 300 Fashion-MNIST images (issue 23, 1,000 unseen test
    images, a 2-core AVX2 EPYC without VNNI): int8 pointwise weights lost 1.1 points (top-1 agreement
    92.7 %, mean |Δlogit| 0.365); uint8 ones 0.6 points (96.8 %, 0.143). 7-bit int8 weights
    (`reduce_range`) avoid the saturation too, but lost 1.6 points (95.7 %, 0.190): a coarser weight grid."""
    import onnx

    if pointwise == "auto":
        pointwise = "uint8" if int16_saturation_risk() else "int8"
        why = ("this CPU has no VNNI: ONNX Runtime's U8S8 kernels would saturate int16 pair sums"
               if pointwise == "uint8" else "VNNI or non-x86 CPU: int8 weights do not saturate")
    else:
        why = "as requested"
    if pointwise == "int8":
        return {}, f"int8 ({why})"
    from onnxruntime.quantization import QuantType

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    overrides = {}
    for node in graph.node:
        if node.name in exclude or len(node.input) < 2 or node.input[1] not in weights:
            continue
        if node.op_type == "Conv" and _group(node) == 1:
            overrides[node.input[1]] = [{"axis": 0, "quant_type": QuantType.QUInt8}]
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            overrides[node.input[1]] = [{"axis": 0 if trans_b else 1, "quant_type": QuantType.QUInt8}]
    return overrides, f"uint8 ({why})"


def _quantize(src: Path, dst: Path, reader, method: str, exclude: list[str], pointwise: str = "auto") -> str:
    """Write the QDQ file; returns how the pointwise weights were quantized (and why)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    overrides, pointwise_info = _pointwise_overrides(src, exclude, pointwise)
    options = {"CalibStridedMinMax": 1, "WeightSymmetric": True}
    if overrides:
        options["TensorQuantOverrides"] = overrides
    # uint8 activations + int8 weights (U8S8) is what x86 integer kernels (VNNI/AMX) are fastest at.
    # per_channel=True gives every Conv weight (depthwise included: axis 0 of (C, 1, k, k)) its own scale.
    with _quiet_quantizer():
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                        nodes_to_exclude=exclude, extra_options=options)
    return pointwise_info
