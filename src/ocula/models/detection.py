"""One-stage object detectors: a timm backbone, torchvision's FPN, torchvision's FCOS or RetinaNet head.

    model = build_detector("fcos", num_classes=3, img_size=256)              # DEFAULT_BACKBONE, from scratch
    losses = model(x, targets)      # x (B, 3, S, S) normalised; targets (B, M, 5): class, x1, y1, x2, y2 in [0, 1]
    losses["loss"].backward()
    dets = model.eval()(x)          # (B, D, 6): x1, y1, x2, y2 in [0, 1], score, class; padding: score 0, class -1

Anchors, matching, losses, box decoding and NMS are torchvision's own (`FCOS.compute_loss`,
`postprocess_detections`, ...), called on a torchvision detector object whose head is ours. Its
`GeneralizedRCNNTransform` (per-image resize, normalise, pad) is bypassed: ocula feeds fixed-size, already
normalised batches, which is what lets training use whole-batch tensors, channels_last and bf16.

Backbone weights: `model.backbone` is the timm `features_only` module and takes the plain timm model's keys
(`conv_stem.weight`, `blocks.0.0.conv_dw.weight`, `layer1.0.conv1.weight`); the classifier's keys are
unexpected there and ignored. `ocula.engine.weights.load_backbone_weights(model, path)` also takes ports in other layouts
(the EfficientNet-Lite ImageNet files) through `ocula.engine.weights.load_weights`.

`build_detector` also wraps torchvision's own detectors by name (`fcos_resnet50_fpn`, ...) behind the same
forward contract, untrained (nothing downloads here).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn as nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ocula.errors import OculaError, unknown

# The default backbone is what trains fastest and learns most per second from scratch on a CPU. FCOS train
# step, 160 px, batch 8, one thread, channels_last, AMD EPYC (AVX2), images/s (bench/detection_backbone_speed.py):
# regnetx_002 19.4, mobilenetv3_large_100 19.4, hgnetv2_b0 19.1, cs3darknet_s 16.4, resnet10t 11.0,
# efficientnet_lite0 9.1, resnet18 6.4
# (lite0's depthwise convolutions lead its backward pass here). On the photo-objects tuning seed (issue 25,
# docs/benchmarks.md) cs3darknet_s, the CSP-Darknet of YOLOv5/YOLOX at its small width, scored test mAP
# 0.626 in 36 epochs against regnetx_002's 0.567 in 46 and lite0's 0.382 in 23, in about the same wall clock.
# From ImageNet weights, name the backbone they are for (--backbone efficientnet_lite0 --pretrained FILE).
# bf16 autocast is not the default anywhere: this CPU has AVX2 without AVX512-BF16/AMX, and a resnet18 bf16
# step took over 4x fp32.
DEFAULT_BACKBONE = "cs3darknet_s"
# With torchvision's 256 FPN channels and 4 convs per branch the FCOS head costs 6.5 GMAC per 256 px image
# (FPN 0.9), 2.7x a whole resnet18. The default is sized for a CPU from scratch: 64 channels and 2 convs per
# branch make the whole lite0 detector 1.13 GFLOPs at 224 px (torch.utils.flop_counter), against 3.55 for
# 128 channels and 4 convs, close to YOLO11n's 0.8 at that size. Pass fpn_channels=256, head_convs=4 for the
# paper's head (a GPU).
DEFAULT_FPN_CHANNELS = 64
DEFAULT_HEAD_CONVS = 2

DETECTION_MODELS: dict[str, str] = {
    "fcos": "FCOS (anchor-free, one point per location), any timm backbone + FPN P3-P7",
    "retinanet": "RetinaNet (9 anchors per location, focal loss), any timm backbone + FPN P3-P7, GroupNorm head",
    "fcos_resnet50_fpn": "torchvision's FCOS ResNet-50 FPN, untrained",
    "retinanet_resnet50_fpn_v2": "torchvision's RetinaNet ResNet-50 FPN v2, untrained",
    "ssdlite320_mobilenet_v3_large": "torchvision's SSDlite MobileNetV3-Large, untrained",
    "fasterrcnn_mobilenet_v3_large_fpn": "torchvision's Faster R-CNN MobileNetV3-Large FPN (two-stage), untrained",
}
HEADS = ("fcos", "retinanet")
# torchvision detectors that keep class 0 for the background: ocula's class k is their k + 1
BACKGROUND_FIRST = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn")


class _Channels(nn.Module):
    """Stands in for torchvision's `backbone` argument, which it only asks for `out_channels`."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels


class Detector(nn.Module):
    """timm backbone (strides 8/16/32) → FPN P3-P7 → torchvision FCOS or RetinaNet head."""

    loads_backbone_weights = True  # a classifier's weights file fills `backbone` (engine.weights.load_backbone_weights)

    def __init__(self, num_classes: int, img_size: int, *, head: str = "fcos", backbone: str = DEFAULT_BACKBONE,
                 pretrained_backbone: bool = False, fpn_channels: int = DEFAULT_FPN_CHANNELS, head_convs: Optional[int] = None,
                 score_thresh: float = 0.05, nms_thresh: float | None = None, detections_per_img: int = 100,
                 topk_candidates: int = 1000, anchor_scale: float = 1.0, box_loss_weight: float = 1.0):
        super().__init__()
        if head not in HEADS:
            raise unknown("detection head", head, HEADS)
        if num_classes < 1:
            raise OculaError(f"a detector needs at least one class, got num_classes={num_classes}")
        self.num_classes, self.img_size, self.head_name, self.backbone_name = num_classes, img_size, head, backbone
        if box_loss_weight <= 0:
            raise OculaError(f"box_loss_weight must be > 0, got {box_loss_weight}")
        self.box_loss_weight = float(box_loss_weight)
        self.backbone = _timm_features(backbone, pretrained_backbone)
        self.fpn = FeaturePyramidNetwork(self.backbone.feature_info.channels(), fpn_channels,
                                         extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
        # the torchvision detector supplies matching, losses and decoding; its head becomes ours (registered
        # here, so state_dict/.to()/optimisers see it once) and the object itself stays unregistered.
        common = dict(min_size=img_size, max_size=img_size, score_thresh=score_thresh,
                      detections_per_img=detections_per_img, topk_candidates=topk_candidates)
        if head == "fcos":
            # torchvision's FCOS: level k takes the points whose largest side distance is 4-8x its anchor, so at
            # 160 px every photo-objects box lands on P3. Spreading them as on COCO (anchor_scale 0.25) scored
            # test mAP 0.459 against 0.626 on the tuning seed (docs/benchmarks.md, issue 25): 1 stays the default.
            anchors = AnchorGenerator(tuple((s * anchor_scale,) for s in (8, 16, 32, 64, 128)), ((1.0,),) * 5)
            tv = tvd.FCOS(_Channels(fpn_channels), num_classes, anchor_generator=anchors,
                          head=FCOSHead(fpn_channels, 1, num_classes, num_convs=head_convs or DEFAULT_HEAD_CONVS),
                          nms_thresh=0.6 if nms_thresh is None else nms_thresh, **common)
        else:
            if anchor_scale != 1.0:
                raise OculaError("anchor_scale applies to fcos; RetinaNet's anchors are its own")
            if head_convs not in (None, 4):
                raise OculaError("torchvision's RetinaNet head has 4 convs; head_convs applies to fcos only")
            # torchvision's _default_anchorgen: 3 scales x 3 ratios at 4x each level's stride
            sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
            anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
            # GroupNorm as retinanet_resnet50_fpn_v2: trains from scratch where v1's norm-free head struggles
            norm = lambda c: nn.GroupNorm(32, c)  # noqa: E731
            tv = tvd.RetinaNet(_Channels(fpn_channels), num_classes, anchor_generator=anchors,
                               head=RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes,
                                                  norm_layer=norm),
                               nms_thresh=0.5 if nms_thresh is None else nms_thresh, **common)
        self.head = tv.head
        object.__setattr__(self, "_tv", tv)
        self._anchor_cache: dict = {}
        cfg = dict(getattr(self.backbone, "pretrained_cfg", None) or {})
        self.pretrained_cfg = {"architecture": head, "backbone": backbone, "input_size": (3, img_size, img_size),
                               "mean": tuple(cfg.get("mean") or (0.485, 0.456, 0.406)),
                               "std": tuple(cfg.get("std") or (0.229, 0.224, 0.225)),
                               "interpolation": cfg.get("interpolation") or "bilinear", "num_classes": num_classes}

    # torchvision's postprocessing reads these from its detector object; here they are the model's settings
    score_thresh = property(lambda s: s._tv.score_thresh, lambda s, v: setattr(s._tv, "score_thresh", float(v)))
    nms_thresh = property(lambda s: s._tv.nms_thresh, lambda s, v: setattr(s._tv, "nms_thresh", float(v)))
    detections_per_img = property(lambda s: s._tv.detections_per_img,
                                  lambda s, v: setattr(s._tv, "detections_per_img", int(v)))
    topk_candidates = property(lambda s: s._tv.topk_candidates,
                               lambda s, v: setattr(s._tv, "topk_candidates", int(v)))

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) → FPN levels P3..P7, each (B, C, S/stride, S/stride)."""
        feats = self.backbone(x)
        return list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        size = x.shape[-1]
        features = self.forward_features(x)
        # decoding and losses in fp32: a bf16 box coordinate near 256 px is only good to 2 px
        head = {k: v.float() for k, v in self.head(features).items()}
        anchors = self._anchors(size, features, x.device)
        cells = [f.shape[-2] * f.shape[-1] for f in features]
        per_level = [c * (anchors.shape[0] // sum(cells)) for c in cells]  # x anchors per location
        with torch.autocast(x.device.type, enabled=False):
            if targets is not None:
                losses = self._loss(_to_torchvision(targets, size), head, [anchors] * x.shape[0], per_level)
                losses["loss"] = sum(losses.values())
                return losses
            split = {k: list(v.split(per_level, dim=1)) for k, v in head.items()}
            dets = self._tv.postprocess_detections(split, [list(anchors.split(per_level))] * x.shape[0],
                                                   [(size, size)] * x.shape[0])
            return _to_ocula(dets, size, self.detections_per_img)

    def anchors_at(self, size: int) -> tuple[torch.Tensor, list[int]]:
        """The (A, 4) fp32 pixel anchors of one S×S image and how many belong to each FPN level, for code that
        decodes the head's outputs itself (the batched ONNX graph, export.detection)."""
        with torch.no_grad():
            features = self.forward_features(torch.zeros(1, 3, size, size))
        anchors = self._anchors(size, features, torch.device("cpu"))
        cells = [f.shape[-2] * f.shape[-1] for f in features]
        return anchors.float(), [c * (anchors.shape[0] // sum(cells)) for c in cells]

    def decode_boxes(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(N, 4) box codes at (N, 4) anchors → (N, 4) pixel boxes, as the detector's postprocessing decodes them."""
        if self.head_name == "fcos":  # BoxLinearCoder.decode: (N, 4) in, (N, 4) out
            return self._tv.box_coder.decode(codes, anchors)
        return self._tv.box_coder.decode_single(codes, anchors)

    def _loss(self, targets, head, anchors, per_level) -> dict:
        if self.head_name == "fcos":
            losses = dict(self._tv.compute_loss(targets, head, anchors, per_level))
        else:
            losses = dict(self._tv.compute_loss(targets, head, anchors))
        if self.box_loss_weight != 1.0:  # torchvision weighs its terms equally; GFL/ATSS give GIoU 2
            losses["bbox_regression"] = losses["bbox_regression"] * self.box_loss_weight
        return losses

    def _anchors(self, size: int, features: list, device) -> torch.Tensor:
        """The (A, 4) pixel anchors of one image: every image of a fixed-size batch shares them, so they are
        built once per size, in fp32 (torchvision would build them per image in the features' dtype)."""
        shapes = tuple(tuple(f.shape[-2:]) for f in features)
        key = (size, shapes, str(device))
        if key not in self._anchor_cache:
            images = ImageList(torch.empty(1, 3, size, size, device=device), [(size, size)])
            maps = [torch.empty(1, 1, h, w, device=device) for h, w in shapes]
            self._anchor_cache[key] = self._tv.anchor_generator(images, maps)[0]
        return self._anchor_cache[key]


def _timm_features(name: str, pretrained: bool) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise unknown("timm backbone", name, timm.list_models(f"*{name[:4]}*") or timm.list_models())
    try:
        model = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(-3, -2, -1))
    except (OSError, RuntimeError) as e:
        if pretrained:
            raise OculaError(f"cannot fetch hub weights for backbone '{name}' ({type(e).__name__}); offline? "
                             f"build without them and use load_backbone_weights(model, path)") from None
        raise OculaError(f"timm backbone '{name}' has no features_only form ({type(e).__name__})") from None
    reductions = model.feature_info.reduction()
    if reductions != [8, 16, 32]:
        raise OculaError(f"backbone '{name}' has strides {reductions} in its last three stages; a detector "
                         f"needs 8, 16, 32 (a CNN, not a plain ViT)")
    return model


def _to_torchvision(targets: torch.Tensor, size: int) -> list[dict]:
    """(B, M, 5) normalised, class -1 = padding → torchvision's per-image {"boxes" (pixels), "labels"}."""
    out = []
    targets = targets.float()
    for t in targets:
        boxes = t[:, 1:5].clamp(0, 1) * size
        # padding rows, and boxes that cropping squeezed to nothing (torchvision asserts on those)
        keep = (t[:, 0] >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out.append({"boxes": boxes[keep], "labels": t[keep, 0].long()})
    return out


def _to_ocula(dets: list[dict], size: int, count: int, label_offset: int = 0) -> torch.Tensor:
    """torchvision's per-image {"boxes", "scores", "labels"} → (B, count, 6), padded with score 0, class -1.
    Concatenating a full padding block and slicing keeps the shape symbolic, so ONNX export stays dynamic."""
    rows = []
    for d in dets:
        boxes = (d["boxes"].float() / size).clamp(0, 1)
        found = torch.cat([boxes, d["scores"].float()[:, None], (d["labels"] - label_offset).float()[:, None]], 1)
        pad = torch.zeros(count, 6, dtype=found.dtype, device=found.device)
        pad[:, 5] = -1
        rows.append(torch.cat([found[:count], pad])[:count])
    return torch.stack(rows)


class TorchvisionDetector(nn.Module):
    """A torchvision detector behind ocula's contract: its transform is made a no-op at S (identity
    normalisation, no resize), so it takes the same normalised batches and targets as `Detector`."""

    def __init__(self, name: str, num_classes: int, img_size: int):
        super().__init__()
        self.offset = 1 if name in BACKGROUND_FIRST else 0
        self.num_classes, self.img_size, self.name = num_classes, img_size, name
        self.model = getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=num_classes + self.offset)
        self.model.transform = GeneralizedRCNNTransform(img_size, img_size, [0.0] * 3, [1.0] * 3,
                                                        fixed_size=(img_size, img_size))
        self.backbone = self.model.backbone
        self.pretrained_cfg = {"architecture": name, "input_size": (3, img_size, img_size),
                               "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                               "interpolation": "bilinear", "num_classes": num_classes}
        if hasattr(self.model, "score_thresh"):
            self.model.score_thresh = 0.05  # for mAP, as Detector

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    @property
    def detections_per_img(self) -> int:
        m = self.model
        return m.roi_heads.detections_per_img if hasattr(m, "roi_heads") else m.detections_per_img

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        size = x.shape[-1]
        if targets is not None:
            if not self.training:
                raise OculaError(f"torchvision's {self.name} computes losses in train mode only (call .train())")
            tv_targets = _to_torchvision(targets, size)
            for t in tv_targets:
                t["labels"] = t["labels"] + self.offset
            losses = dict(self.model(list(x.float()), tv_targets))
            losses["loss"] = sum(losses.values())
            return losses
        # torchvision returns detections only in eval mode; BatchNorm then uses its running statistics
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.autocast(x.device.type, enabled=False):
                dets = self.model(list(x.float()))
        finally:
            self.model.train(was_training)
        return _to_ocula(dets, size, self.detections_per_img, self.offset)


def build_detector(name: str, num_classes: int, *, backbone: str = DEFAULT_BACKBONE, img_size: int,
                   pretrained_backbone: bool = False, **options) -> nn.Module:
    """"fcos" | "retinanet" on any timm backbone, or a torchvision detector by name (DETECTION_MODELS).
    `options` go to `Detector` (fpn_channels, head_convs, score_thresh, nms_thresh, detections_per_img,
    topk_candidates)."""
    if name in HEADS:
        model = Detector(num_classes, img_size, head=name, backbone=backbone,
                         pretrained_backbone=pretrained_backbone, **options)
        kwargs = {"backbone": backbone, **options}
    elif name in DETECTION_MODELS:
        if pretrained_backbone or options:
            raise OculaError(f"'{name}' is torchvision's own detector: it takes no backbone weights or options "
                             f"here ({', '.join(options) or 'pretrained_backbone'})")
        model = TorchvisionDetector(name, num_classes, img_size)
        kwargs = {}
    else:
        raise unknown("detector", name, DETECTION_MODELS)
    model.ocula_arch = {"name": name, "num_classes": num_classes, "in_chans": 3, "input_size": img_size,
                        "kwargs": kwargs}
    return model
