"""A detector as one ONNX graph with a dynamic batch axis: image batch (B, 3, S, S) → detections (B, D, 6).

`Detector.forward` decodes and suppresses boxes with torchvision's `postprocess_detections`, a Python loop
over the images of the batch with data-dependent branches; traced, it would bake the example's batch size
and branches into the graph. `BatchedDetections` computes the same answer with whole-batch tensor operations:

    per FPN level     scores (B, A·K) → top `topk_candidates` per image → decoded, clipped pixel boxes
    all levels        scores ≤ score_thresh dropped; one NMS over the batch, each (image, class) pair its own
                      group (the coordinate trick of torchvision's batched_nms, without its Python branches)
    per image         the kept boxes ranked by score; the first `detections_per_img` scattered into
                      (B, D, 6): x1, y1, x2, y2 / S, score, class; padding rows score 0, class −1

The NMS exports as ONNX `NonMaxSuppression`. The export gate then checks the graph against the PyTorch
model's own forward on labelled images (box agreement and mAP), so this reimplementation is measured, not
trusted.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import nms

from ocula.errors import OculaError
from ocula.models.detection import Detector, TorchvisionDetector


def is_detector(model: nn.Module) -> bool:
    return isinstance(model, (Detector, TorchvisionDetector))


def detections_graph(model: nn.Module, size: int) -> nn.Module:
    """The module to export for a detector (eval mode, CPU, fp32)."""
    if isinstance(model, TorchvisionDetector):
        raise OculaError(f"torchvision's own detector '{model.name}' does not export to ONNX yet; ocula's "
                         f"fcos and retinanet detectors do")
    return BatchedDetections(model, size)


class BatchedDetections(nn.Module):
    def __init__(self, model: Detector, size: int):
        super().__init__()
        self.model, self.size, self.fcos = model, int(size), model.head_name == "fcos"
        anchors, self.per_level = model.anchors_at(self.size)  # (A, 4) pixels; anchors of each level
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        head = {k: v.float() for k, v in m.head(m.forward_features(x)).items()}
        logits = head["cls_logits"].split(self.per_level, dim=1)  # each (B, A_l, K)
        regression = head["bbox_regression"].split(self.per_level, dim=1)  # each (B, A_l, 4)
        ctrness = head["bbox_ctrness"].split(self.per_level, dim=1) if self.fcos else [None] * len(logits)
        boxes, scores, labels = [], [], []
        for cls, reg, ctr, anchors in zip(logits, regression, ctrness, self.anchors.split(self.per_level)):
            b, a, k = cls.shape
            score = torch.sigmoid(cls) if ctr is None else torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr))
            top, idx = score.flatten(1).topk(min(int(m.topk_candidates), a * k), dim=1)  # (B, T)
            anchor_idx, label = torch.div(idx, k, rounding_mode="floor"), idx % k
            codes = reg.gather(1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))  # (B, T, 4)
            decoded = m.decode_boxes(codes.reshape(-1, 4), anchors[anchor_idx.reshape(-1)])
            boxes.append(decoded.reshape(b, -1, 4).clamp(0, self.size))
            scores.append(top)
            labels.append(label)
        return self.suppress(torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(labels, 1), k)

    def suppress(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
        """Candidates (B, N, 4) pixels, (B, N), (B, N) → detections (B, D, 6)."""
        b, n = scores.shape
        image = torch.arange(b, device=boxes.device).unsqueeze(1).expand(b, n).reshape(-1)
        boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
        cand = torch.nonzero(scores > self.model.score_thresh).squeeze(1)
        image, boxes, scores, labels = image[cand], boxes[cand], scores[cand], labels[cand]
        group = (image * k + labels).to(boxes.dtype) * (self.size + 1)  # boxes of two groups never overlap
        keep = nms(boxes + group.unsqueeze(1), scores, float(self.model.nms_thresh))  # by score, best first
        image, boxes, scores, labels = image[keep], boxes[keep], scores[keep], labels[keep]
        # each kept box's rank among its image's kept boxes (they are in score order already)
        same = image.unsqueeze(1) == torch.arange(b, device=boxes.device).unsqueeze(0)  # (kept, B)
        rank = (same.long().cumsum(0) - 1).gather(1, image.unsqueeze(1)).squeeze(1)
        top = torch.nonzero(rank < int(self.model.detections_per_img)).squeeze(1)
        rows = torch.cat([(boxes[top] / self.size).clamp(0, 1), scores[top].unsqueeze(1),
                          labels[top].to(boxes.dtype).unsqueeze(1)], 1)
        per_image = int(self.model.detections_per_img)
        # one flat row index, not (image, rank) pairs: torch 2.6's ONNX exporter writes a two-index put as a
        # ScatterND that reads only the first index
        out = torch.zeros(b * per_image, 6, dtype=boxes.dtype, device=boxes.device)
        out[:, 5] = -1
        out[image[top] * per_image + rank[top]] = rows
        return out.view(b, per_image, 6)

