"""Small Vision Transformers trainable from scratch on a CPU, for small images (28–32 px).

They are timm's `VisionTransformer` with small widths and 4-pixel patches (a 28 px image is 7×7 = 49
tokens), registered under ocula names beside every timm ViT (`vit_tiny_patch16_224`, ...), which
`create_model` builds by name as well. Global average pooling over tokens instead of a class token:
on small data from scratch it trains faster and to the same accuracy.

    name               width  depth  heads  params (10 classes, 1 channel)
    vit_nano_scratch      64      4      2  ~0.14 M
    vit_micro_scratch     96      6      3  ~0.45 M
    vit_tiny_scratch     128      6      4  ~0.81 M

The `*_convstem` variants replace the 4×4 patch projection with a small convolutional stem (two
stride-2 3×3 convolutions with BatchNorm and ReLU, then a 1×1 projection), the change Xiao et al.
(2021, "Early Convolutions Help Transformers See Better") showed makes ViTs train faster and more
stably; everything after the stem (tokens, blocks, attention maps) is the same ViT.
"""
from __future__ import annotations

import torch.nn as nn

from ocula.models.registry import register_model

SIZES = {  # name: (embed_dim, depth, num_heads)
    "vit_nano_scratch": (64, 4, 2),
    "vit_micro_scratch": (96, 6, 3),
    "vit_tiny_scratch": (128, 6, 4),
}


def scratch_vit(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, *, embed_dim: int = 128,
                depth: int = 6, num_heads: int = 4, patch_size: int = 4, mlp_ratio: float = 2.0,
                drop_rate: float = 0.0, drop_path_rate: float = 0.1, conv_stem: bool = False,
                **kwargs) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    if conv_stem:
        kwargs.setdefault("embed_layer", conv_stem_embed())
    return VisionTransformer(img_size=input_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                             class_token=False, global_pool="avg", drop_rate=drop_rate,
                             drop_path_rate=drop_path_rate, **kwargs)


def conv_stem_embed():
    """timm's PatchEmbed with its patch projection swapped for stride-2 convolutions (patch 2ⁿ → n convs)."""
    from timm.layers import PatchEmbed

    class ConvStemEmbed(PatchEmbed):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cin, dim = self.proj.in_channels, self.proj.out_channels
            stride, layers = self.patch_size[0], []
            if stride & (stride - 1) or self.patch_size[0] != self.patch_size[1]:
                raise ValueError(f"a convolutional stem needs a square power-of-two patch, not {self.patch_size}")
            width = max(dim // 2 ** (stride.bit_length() - 1), 16)
            while stride > 1:
                layers += [nn.Conv2d(cin, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                cin, width, stride = width, width * 2, stride // 2
            self.proj = nn.Sequential(*layers, nn.Conv2d(cin, dim, 1))

    return ConvStemEmbed


for _name, (_dim, _depth, _heads) in SIZES.items():
    register_model(_name, family="vit", input_size=32, embed_dim=_dim, depth=_depth, num_heads=_heads,
                   description=f"ViT from scratch for small images: patch 4, width {_dim}, depth {_depth}, "
                               f"{_heads} heads (timm VisionTransformer)")(scratch_vit)
    register_model(_name.replace("_scratch", "_convstem"), family="vit", input_size=32, embed_dim=_dim,
                   depth=_depth, num_heads=_heads, conv_stem=True,
                   description=f"ViT from scratch for small images with a convolutional stem (stride 4), width "
                               f"{_dim}, depth {_depth}, {_heads} heads (timm VisionTransformer)")(scratch_vit)
