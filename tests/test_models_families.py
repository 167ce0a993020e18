"""The design's equations hold, and every registered ocula model trains, saves and loads (like timm's
tests, parametrised over the registry)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from ocula import bundle
from ocula.data.contract import DataContract
from ocula.models.attention import SeedAttention, scaled_dot_product_attention
from ocula.models.registry import create_model, get_spec, list_models


# ------------------------------------------------------------------------------ equations
def test_attention_equals_softmax_qkt_over_sqrt_d_times_v():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    by_hand = torch.empty(2, 5, 8)
    for b in range(2):
        scores = [[sum(q[b, i, c] * k[b, j, c] for c in range(8)) / math.sqrt(8) for j in range(5)] for i in range(5)]
        for i in range(5):
            e = [math.exp(s) for s in scores[i]]
            w = [x / sum(e) for x in e]
            by_hand[b, i] = sum(w[j] * v[b, j] for j in range(5))
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert torch.allclose(out, by_hand, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 5))
    assert torch.allclose(scaled_dot_product_attention(q, k, v, fused=True), by_hand, atol=1e-5)


def test_seed_attention_pools_over_tokens_and_exposes_weights():
    model = SeedAttention(num_classes=3, in_chans=1, input_size=8, tokens="patches", patch_size=4).eval()
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 3)  # one prediction per image, not one per token (the sketch's flaw)
    w = model.attention_weights(x)
    assert w.shape == (2, 4, 4) and torch.allclose(w.sum(-1), torch.ones(2, 4), atol=1e-5)
    fused = SeedAttention(num_classes=3, in_chans=1, input_size=8, fused=True)
    explicit = SeedAttention(num_classes=3, in_chans=1, input_size=8, fused=False)
    explicit.load_state_dict(fused.state_dict())
    assert torch.allclose(fused(x), explicit(x), atol=1e-5)


def test_lstm_step_matches_the_gate_equations():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 3, batch_first=True)
    x, h0, c0 = torch.randn(1, 1, 4), torch.randn(1, 1, 3), torch.randn(1, 1, 3)
    _, (h1, c1) = lstm(x, (h0, c0))
    z = lstm.weight_ih_l0 @ x[0, 0] + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h0[0, 0] + lstm.bias_hh_l0
    i, f, g, o = z.chunk(4)  # PyTorch's gate order
    c = torch.sigmoid(f) * c0[0, 0] + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    assert torch.allclose(c1[0, 0], c, atol=1e-6) and torch.allclose(h1[0, 0], h, atol=1e-6)


def test_convolution_and_pooling_follow_the_formulas():
    torch.manual_seed(0)
    x, kernel = torch.randn(1, 1, 6, 6), torch.randn(1, 1, 3, 3)
    y = torch.nn.functional.conv2d(x, kernel)  # valid 3x3: 6 → 4
    assert y.shape == (1, 1, 4, 4)
    i, j = 2, 1  # y(i,j) = Σ_p Σ_q x(i+p, j+q)·k(p,q) (deep learning's convolution is correlation)
    assert torch.isclose(y[0, 0, i, j], (x[0, 0, i:i + 3, j:j + 3] * kernel[0, 0]).sum(), atol=1e-6)
    pooled = torch.nn.functional.max_pool2d(x, 2)  # y(i,j) = max x(2i+p, 2j+q)
    assert pooled.shape == (1, 1, 3, 3) and pooled[0, 0, 1, 2] == x[0, 0, 2:4, 4:6].max()
    seed = create_model("seed_cnn", 10, 3, 224)
    assert seed.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 128, 26, 26)  # 222,111,109,54,52,26


# ------------------------------------------------------------------------------ every model
# the classifiers; detectors answer boxes, not (B, K): every one of them is in tests/test_detection_model.py
OWN = [n for n in list_models("*", include_timm=False) if get_spec(n).family != "detection"]
SMALL = {"backbone": "seed_cnn"}


def _build(name: str):
    spec = get_spec(name)
    kwargs = dict(SMALL) if "backbone" in spec.defaults else {}
    if spec.modality == "video":
        kwargs["frames"] = 4
        return create_model(name, 3, 3, 16, **kwargs), torch.randn(2, 4, 3, 16, 16)
    return create_model(name, 3, 1, 16, **kwargs), torch.randn(2, 1, 16, 16)


@pytest.mark.parametrize("name", OWN)
def test_every_model_forward_backward_save_load(name, tmp_path):
    torch.manual_seed(0)
    model, x = _build(name)
    out = model(x)
    assert out.shape == (2, 3)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "some parameters get no gradient"
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    model.eval()
    contract = DataContract(input_size=16, channels=x.shape[-3], frames=x.shape[1] if x.ndim == 5 else None)
    meta = bundle.make_meta(model.ocula_arch, contract, ["a", "b", "c"])
    bundle.save_weights(tmp_path / "m.safetensors", model, meta)
    loaded, _ = bundle.load_model(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_video_models_are_marked_and_scratch_vits_registered():
    video = {n for n in OWN if get_spec(n).modality == "video"}
    assert {"seed_lstm", "cnn_lstm", "cnn_gru", "cnn_transformer", "frame_avg", "seed_attention_video"} <= video
    assert {"vit_nano_scratch", "vit_micro_scratch", "vit_tiny_scratch"} <= set(OWN) - video


@pytest.mark.parametrize("name", ["seed_lstm", "cnn_lstm", "cnn_gru"])
def test_recurrences_train_under_bf16_autocast_on_a_cpu_without_bf16(name):
    """oneDNN has no bf16 LSTM on such a CPU; the recurrence runs in fp32 inside the autocast region."""
    model = create_model(name, 2, 3, 16, frames=3, backbone="seed_cnn") if name != "seed_lstm" else \
        create_model(name, 2, 3, 16, frames=3)
    x = torch.rand(2, 3, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    logits.float().sum().backward()
    assert logits.shape == (2, 2) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
