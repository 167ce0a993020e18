"""Self-attention families: the design's Dense → Q/K/V → attention model, and a CNN + temporal
transformer for clips.

The design's sketch (Keras): Dense(256, relu) → Q, K, V = Dense(64, relu) each → Attention →
Dense(10, softmax). Its flaw: the classifier is applied to every token, so it predicts one label
per token, not per image or clip. `seed_attention` keeps the layers and pools over tokens (mean)
before the classifier, and uses the design's formula softmax(QKᵀ/√d)·V. It reads an image as
patch tokens (`seed_attention`) or a clip as frame tokens (`seed_attention_video`, the sketch's
own input: a sequence of flattened 224·224·3 frames).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ocula.errors import OculaError
from ocula.models.base import ClassifierModel
from ocula.models.recurrent import DEFAULT_BACKBONE, FrameEncoder
from ocula.models.registry import register_model


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, fused: bool = True,
                                 return_weights: bool = False):
    """softmax(QKᵀ/√d)·V over the last two dims → output, or (output, weights (.., N, N)).

    The explicit path is the formula written out; the fused kernel gives the same numbers faster
    but cannot hand back the weights, so asking for them takes the explicit path.
    """
    if fused and not return_weights:
        return F.scaled_dot_product_attention(q, k, v)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)  # (.., N, N)
    out = weights @ v
    return (out, weights) if return_weights else out


class SeedAttention(ClassifierModel):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: int = 32, tokens: str = "patches",
                 patch_size: int = 4, frames: int = 8, hidden: int = 256, dim: int = 64, pos_embed: bool = True,
                 fused: bool = True, drop_rate: float = 0.0):
        super().__init__()
        if tokens == "patches":
            if input_size % patch_size:
                raise OculaError(f"seed_attention: image size {input_size} is not a multiple of patch_size "
                                 f"{patch_size}")
            n_tokens, token_dim = (input_size // patch_size) ** 2, in_chans * patch_size ** 2
        elif tokens == "frames":
            n_tokens, token_dim = frames, in_chans * input_size ** 2
        else:
            raise OculaError(f"seed_attention: tokens must be 'patches' or 'frames', not {tokens!r}")
        self.tokens, self.patch_size, self.fused = tokens, patch_size, fused
        self.embed = nn.Linear(token_dim, hidden)  # Dense(256, relu)
        # The sketch has no positions: attention plus mean pooling would then see a bag of tokens,
        # blind to where a patch sits or when a frame comes. A learned position embedding fixes that.
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, hidden)) if pos_embed else None
        self.q, self.k, self.v = nn.Linear(hidden, dim), nn.Linear(hidden, dim), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes)
        self.num_classes = num_classes

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens == "frames":
            return x.flatten(2)  # (B, T, C*H*W)
        return F.unfold(x, self.patch_size, stride=self.patch_size).transpose(1, 2)  # (B, N, C*p*p)

    def forward_features(self, x: torch.Tensor, return_weights: bool = False):
        h = F.relu(self.embed(self.to_tokens(x)))
        if self.pos_embed is not None:
            if h.shape[1] != self.pos_embed.shape[1]:
                raise OculaError(f"seed_attention was built for {self.pos_embed.shape[1]} tokens, got {h.shape[1]}")
            h = h + self.pos_embed
        q, k, v = F.relu(self.q(h)), F.relu(self.k(h)), F.relu(self.v(h))  # (B, N, dim) each
        return scaled_dot_product_attention(q, k, v, fused=self.fused, return_weights=return_weights)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, N): how much each token (patch or frame) attends to every other."""
        return self.forward_features(x, return_weights=True)[1]

    def pool(self, features):
        return self.drop(features.mean(1))  # the fix: one vector per image or clip, then the classifier


register_model("seed_attention", family="attention", input_size=32, tokens="patches", patch_size=4,
               description="The design's Dense→Q/K/V→attention→classifier over 4x4 patch tokens, "
                           "mean-pooled")(SeedAttention)
register_model("seed_attention_video", family="attention", modality="video", input_size=32, tokens="frames", frames=8,
               description="The design's Dense→Q/K/V→attention→classifier over flattened frames, "
                           "mean-pooled")(SeedAttention)


@register_model("cnn_transformer", family="attention", modality="video", input_size=112, backbone=DEFAULT_BACKBONE,
                frames=8, frame_diff=False, description="Per-frame encoder (any image model, --backbone) → temporal transformer "
                "(class token, positions) → classifier")
class CNNTransformer(ClassifierModel):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: int = 112,
                 backbone: str = DEFAULT_BACKBONE, frames: int = 8, dim: int = 256, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, drop_rate: float = 0.1, backbone_pretrained: bool = False,
                 backbone_kwargs: Optional[dict] = None, frame_diff: bool = False):
        super().__init__()
        from timm.layers import trunc_normal_
        from timm.models.vision_transformer import Block

        self.encoder = FrameEncoder(backbone, in_chans, input_size, backbone_pretrained, backbone_kwargs, frame_diff)
        self.backbone, self.frames = backbone, frames
        self.proj = nn.Linear(self.encoder.num_features, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, frames + 1, dim))
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, qkv_bias=True, proj_drop=drop_rate)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x):
        z = self.proj(self.encoder(x))  # (B, T, dim)
        if z.shape[1] != self.frames:
            raise OculaError(f"cnn_transformer was built for {self.frames} frames, got {z.shape[1]}")
        tokens = torch.cat([self.cls_token.expand(z.shape[0], -1, -1), z], 1) + self.pos_embed
        return self.norm(self.blocks(tokens))  # (B, 1+T, dim)

    def pool(self, features):
        return self.drop(features[:, 0])  # the class token
