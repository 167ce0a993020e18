"""Registry, the design's CNN, timm models by name, and the data contract each model carries."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ocula.models import create_model, default_contract, list_models


def test_seed_cnn_is_the_designs_keras_cnn():
    model = create_model("seed_cnn", num_classes=10, in_chans=3, input_size=224)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (0, 0) for c in convs)  # Keras 'valid'
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert dense[0].in_features == 128 * 26 * 26 and dense[0].out_features == 512  # 224→222→111→…→26
    assert dense[-1].out_features == 10


@pytest.mark.parametrize("channels, size", [(1, 8), (1, 28), (3, 32), (3, 64)])
def test_seed_cnn_adapts_to_channels_and_size(channels, size):
    model = create_model("seed_cnn", 7, channels, size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert model.forward_head(model.forward_features(torch.randn(2, channels, size, size)),
                              pre_logits=True).shape == (2, 512)


def test_conv_and_pool_output_shapes_follow_the_formulas():
    conv, pool = nn.Conv2d(1, 4, 3), nn.MaxPool2d(2)
    x = torch.randn(1, 1, 28, 28)
    assert conv(x).shape[-1] == 28 - 3 + 1  # valid convolution: n - k + 1
    assert pool(conv(x)).shape[-1] == (28 - 3 + 1) // 2


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_nano", "vit_tiny_patch16_224"])
def test_timm_models_get_channels_classes_and_size_from_the_data(name):
    model = create_model(name, num_classes=5, in_chans=1, input_size=32 if "vit" in name else 64)
    size = 32 if "vit" in name else 64
    assert model(torch.randn(2, 1, size, size)).shape == (2, 5)
    assert model.ocula_arch == {"name": name, "num_classes": 5, "in_chans": 1, "input_size": size, "kwargs": {}}


def test_contracts_come_from_timm_or_from_the_data():
    timm_contract = default_contract("resnet18", channels=3)
    assert timm_contract.input_size == 224 and timm_contract.mean == (0.485, 0.456, 0.406)
    assert timm_contract.crop_pct < 1
    grey = default_contract("resnet18", channels=1)
    assert grey.mean == (pytest.approx((0.485 + 0.456 + 0.406) / 3),)
    own = default_contract("seed_cnn", channels=1, native_size=28, mean=(0.286,), std=(0.353,))
    assert (own.input_size, own.mean, own.std) == (28, (0.286,), (0.353,))


@pytest.mark.parametrize("name", ["test_resnet", "resnet18.a1_in1k", "test_vit"])
def test_a_timm_contract_is_timms_data_config_of_the_built_model(name):
    """Before the model is built (train chooses its input first) and after (import), the same preprocessing
    as timm's `resolve_model_data_config`, the pretrained tag's included (a1_in1k: crop_pct 0.95)."""
    import timm
    from timm.data import resolve_model_data_config

    model = timm.create_model(name)
    data = resolve_model_data_config(model)
    want = (data["input_size"][-1], tuple(data["mean"]), tuple(data["std"]), data["interpolation"], data["crop_pct"])
    for contract in (default_contract(name, channels=3), default_contract(name, channels=3, model=model)):
        assert (contract.input_size, contract.mean, contract.std, contract.interpolation, contract.crop_pct) == want


def test_list_models_covers_own_and_timm():
    assert "seed_cnn" in list_models("*") and "vgg_bn" in list_models("vgg")
    assert "vit_tiny_patch16_224" in list_models("vit_tiny")
    assert list_models("seed", include_timm=False)[0].startswith("seed")


def test_every_own_model_trains_saves_and_loads(tmp_path):
    from ocula import bundle
    from ocula.data.contract import DataContract
    from ocula.models.registry import get_spec

    for name in list_models("*", include_timm=False):
        spec = get_spec(name)
        if spec.modality == "video" or spec.family == "detection":
            continue  # clip models and detectors have their own parametrised tests
        model = create_model(name, 3, 1, 28)
        x = torch.randn(2, 1, 28, 28)
        model(x).sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad), name
        meta = bundle.make_meta(model.ocula_arch, DataContract(28, 1, (0.5,), (0.5,)), ["a", "b", "c"])
        bundle.save_weights(tmp_path / f"{name}.safetensors", model, meta)
        loaded, _ = bundle.load_model(tmp_path / f"{name}.safetensors")
        model.eval()
        assert torch.allclose(model(x), loaded(x)), name


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv3_small_100", "resnet10t"])
def test_a_fresh_timm_head_starts_near_chance_whatever_the_class_count(name):
    """timm's EfficientNets scale their head for 1000 classes: with 10 the loss started at 7.5, not ln 10."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, input_size=32).train()
    with torch.no_grad():
        logits = model(torch.randn(32, 1, 32, 32))
    loss = nn.functional.cross_entropy(logits, torch.randint(0, 10, (32,)))
    assert logits.std() < 1.0 and abs(float(loss) - 2.303) < 0.5
    head = model.get_classifier()
    assert float(head.weight.abs().max()) <= 1 / head.in_features ** 0.5 + 1e-6  # PyTorch's default bound
