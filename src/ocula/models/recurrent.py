"""Recurrent families over frame sequences, and the frame-averaging baseline.

Every model here takes clips (B, T, C, H, W) and offers the uniform surface of `ClassifierModel`.

- `seed_lstm`: the design's Keras sketch, three stacked LSTM(128) over flattened frames.
- `cnn_lstm` / `cnn_gru`: a per-frame encoder (any image model in the registry, timm names included,
  pretrained or not), then an LSTM or GRU, then a classifier on the last step.
- `frame_avg`: the same encoder, mean over frames, classifier: blind to order by construction.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ocula.models.base import ClassifierModel
from ocula.models.registry import create_model, register_model

DEFAULT_BACKBONE = "resnet18"


def run_recurrence(rnn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The LSTM/GRU in fp32 whatever the autocast: oneDNN has no bf16 LSTM primitive on a CPU without bf16
    instructions ("could not create a primitive descriptor", seen on an AVX2 EPYC with --precision bf16), and
    the recurrence is a sliver of a clip model's cost next to its frame encoder."""
    with torch.autocast(x.device.type, enabled=False):
        out, _ = rnn(x.float())
    return out


def with_frame_differences(x: torch.Tensor) -> torch.Tensor:
    """Clips (B, T, C, H, W) → (B, T, 2C, H, W): each frame and its change from the frame before (zero for the
    first), TSN's "RGB difference" input. What moves becomes a pattern in one image (where the object was and
    where it is), which a frame encoder trained from scratch on a small set finds far sooner than an RNN finds it
    across frame vectors: speed clips 0.80 → 0.99 in the plain loop (bench/clips_speed_bisect.py --knobs pdiff)."""
    change = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)
    return torch.cat([x, change], 2)


class FrameEncoder(nn.Module):
    """An image model applied to every frame: (B, T, C, H, W) → (B, T, D), D = its pre-logits width.
    `frame_diff`: the image model sees each frame with its difference from the previous one (2C channels)."""

    def __init__(self, backbone: str, in_chans: int, input_size: int, pretrained: bool = False,
                 backbone_kwargs: Optional[dict] = None, frame_diff: bool = False):
        super().__init__()
        self.frame_diff = bool(frame_diff)
        net_chans = in_chans * (2 if self.frame_diff else 1)
        self.net = create_model(backbone, 1, net_chans, input_size, pretrained=pretrained, **(backbone_kwargs or {}))
        self.num_features = int(self.net.num_features)
        self.net.reset_classifier(0)  # the encoder's own classifier is never used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frame_diff:
            x = with_frame_differences(x)
        b, t = x.shape[:2]
        frames = x.flatten(0, 1)  # (B*T, C, H, W): every frame through the encoder as one batch
        z = self.net.forward_head(self.net.forward_features(frames), pre_logits=True)
        return z.reshape(b, t, -1)


@register_model("seed_lstm", family="recurrent", modality="video", input_size=64, frames=8,
                description="The design's Keras RNN: 3 stacked LSTM(128) over flattened frames, classifier")
class SeedLSTM(ClassifierModel):
    """Faithful to the survey's sketch: LSTM(128, return_sequences) ×2, LSTM(128), Dense(classes).

    Each frame is flattened to C·H·W numbers, so the first LSTM layer has 4·128·C·H·W input weights:
    at the sketch's 224×224×3 that is 77 M weights (308 MB in fp32) before any learning of motion,
    and no notion of space at all. The default frame size is therefore 64 (6.3 M weights); pass
    --img-size 224 to reproduce the sketch exactly.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: int = 64, frames: int = 8,
                 hidden: int = 128, layers: int = 3, drop_rate: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(in_chans * input_size * input_size, hidden, num_layers=layers, batch_first=True)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(hidden, num_classes)
        self.num_classes, self.frames = num_classes, frames

    def forward_features(self, x):
        return run_recurrence(self.lstm, x.flatten(2))  # (B, T, C*H*W) → (B, T, hidden)

    def pool(self, features):
        return self.drop(features[:, -1])  # the last LSTM's final state, as return_sequences=False


class _EncodedClipModel(ClassifierModel):
    """Shared constructor part: the per-frame encoder."""

    def _build_encoder(self, backbone, in_chans, input_size, backbone_pretrained, backbone_kwargs, frame_diff=False):
        self.encoder = FrameEncoder(backbone, in_chans, input_size, backbone_pretrained, backbone_kwargs, frame_diff)
        self.backbone = backbone


def _cnn_rnn(cell: str):
    class CNNRNN(_EncodedClipModel):
        def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: int = 112,
                     backbone: str = DEFAULT_BACKBONE, frames: int = 8, hidden: int = 256, layers: int = 1,
                     drop_rate: float = 0.0, backbone_pretrained: bool = False, backbone_kwargs: Optional[dict] = None,
                     frame_diff: bool = False):
            super().__init__()
            self._build_encoder(backbone, in_chans, input_size, backbone_pretrained, backbone_kwargs, frame_diff)
            rnn = nn.LSTM if cell == "lstm" else nn.GRU
            self.rnn = rnn(self.encoder.num_features, hidden, num_layers=layers, batch_first=True)
            self.drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(hidden, num_classes)
            self.num_classes, self.frames = num_classes, frames

        def forward_features(self, x):
            return run_recurrence(self.rnn, self.encoder(x))  # (B, T, D) → (B, T, hidden)

        def pool(self, features):
            return self.drop(features[:, -1])

    CNNRNN.__name__ = CNNRNN.__qualname__ = f"CNN{cell.upper()}"
    return CNNRNN


CNNLSTM = register_model("cnn_lstm", family="recurrent", modality="video", input_size=112, backbone=DEFAULT_BACKBONE,
                         frame_diff=False,
                         frames=8, description="Per-frame encoder (any image model, --backbone) → LSTM → "
                         "classifier")(_cnn_rnn("lstm"))
CNNGRU = register_model("cnn_gru", family="recurrent", modality="video", input_size=112, backbone=DEFAULT_BACKBONE,
                        frame_diff=False,
                        frames=8, description="Per-frame encoder (any image model, --backbone) → GRU → "
                        "classifier")(_cnn_rnn("gru"))


@register_model("frame_avg", family="video", modality="video", input_size=112, backbone=DEFAULT_BACKBONE, frames=8,
                description="Baseline: per-frame encoder, mean over frames, classifier (blind to order)")
class FrameAverage(_EncodedClipModel):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: int = 112,
                 backbone: str = DEFAULT_BACKBONE, frames: int = 8, drop_rate: float = 0.0,
                 backbone_pretrained: bool = False, backbone_kwargs: Optional[dict] = None):
        super().__init__()
        self._build_encoder(backbone, in_chans, input_size, backbone_pretrained, backbone_kwargs)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.encoder.num_features, num_classes)
        self.num_classes, self.frames = num_classes, frames

    def forward_features(self, x):
        return self.encoder(x)  # (B, T, D)

    def pool(self, features):
        return self.drop(features.mean(1))
