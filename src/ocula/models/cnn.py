"""Convolutional families: the design's Keras CNN, and a fast VGG-style CNN with BatchNorm."""
from __future__ import annotations

import torch
import torch.nn as nn

from ocula.models.base import ClassifierModel
from ocula.models.registry import register_model


@register_model("seed_cnn", family="cnn", description="The design's Keras CNN: 3x(conv3x3-ReLU-maxpool) "
                "32/64/128, dense 512, classifier")
class SeedCNN(ClassifierModel):
    """Faithful to the survey's tf.keras sketch (valid 3×3 convs, 2×2 max-pool, Flatten, Dense 512).

    The sketch fixes input_shape=(224, 224, 3); here channels and size come from the data. Inputs too
    small for three valid conv+pool stages (e.g. 8×8 digits) switch to 'same' padding so the network
    keeps its shape instead of collapsing to zero pixels.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: int = 224,
                 widths=(32, 64, 128), hidden: int = 512, drop_rate: float = 0.0):
        super().__init__()
        padding = 0 if _valid_size(input_size, len(widths)) >= 1 else 1
        layers, cin = [], in_chans
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=padding), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_chans, input_size, input_size)).numel()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
                                nn.Dropout(drop_rate))
        self.head = nn.Linear(hidden, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x):
        return self.features(x)  # (B, 128, h, w): the last conv block, where Grad-CAM looks

    def pool(self, features):
        return self.fc(features)  # (B, 512)


def _valid_size(size: int, stages: int) -> int:
    for _ in range(stages):
        size = (size - 2) // 2
    return size


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@register_model("vgg_bn", family="cnn", description="Fast VGG-style CNN with BatchNorm for small images "
                "(2 convs per stage, global average pooling)")
class VggBN(ClassifierModel):
    """[w,w]-pool-[2w,2w]-pool-[4w,4w]-GAP-FC; ~0.29M parameters at width 32. Trains fast on CPU in
    bf16 with channels_last, which is what the Fashion-MNIST recipes use."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
                 width: int = 32, drop_rate: float = 0.0):
        super().__init__()
        a, b, c = width, 2 * width, 4 * width
        self.features = nn.Sequential(
            conv_bn(in_chans, a), conv_bn(a, a), nn.MaxPool2d(2),
            conv_bn(a, b), conv_bn(b, b), nn.MaxPool2d(2),
            conv_bn(b, c), conv_bn(c, c))
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(c, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x):
        return self.features(x)  # (B, 4w, H/4, W/4)

    def pool(self, features):
        return self.drop(features.mean((2, 3)))
