"""Hub model names (`hf-hub:ORG/NAME`, `local-dir:PATH`) read offline from a Hugging Face cache laid out on
disk, and a local weights file through `create_model(pretrained=PATH)`.

The cache holds timm's `test_resnet` (370k parameters) written by timm's own `save_for_hf`, with the
preprocessing of a fine-tune that is not the registry's (96 px, its own mean, crop_pct 0.8): what ocula
records must come from the model built from the repo, not from `get_pretrained_cfg("test_resnet")`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ocula.cli import main
from ocula.errors import OculaError

REPO, REVISION = "acme/tiny-shapes", "0123456789abcdef0123456789abcdef01234567"
CLASSES = ["circle", "square", "triangle"]  # the order of tests/conftest.make_shapes_folder's folders
PREPROCESSING = {"input_size": [3, 96, 96], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
                 "interpolation": "bilinear", "crop_pct": 0.8}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """HF_HUB_CACHE with models--acme--tiny-shapes/{refs/main, snapshots/REV/{config.json, model.safetensors}}."""
    import timm
    from timm.models import save_for_hf

    root = tmp_path_factory.mktemp("hf") / "hub"
    repo = root / f"models--{REPO.replace('/', '--')}"
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=len(CLASSES))
    save_for_hf(model, repo / "snapshots" / REVISION, model_config={"label_names": CLASSES}, safe_serialization=True)
    config_file = repo / "snapshots" / REVISION / "config.json"
    config = json.loads(config_file.read_text())
    config["pretrained_cfg"].update(PREPROCESSING)
    config_file.write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return root


@pytest.fixture
def offline(hub_cache, monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 over that cache. The Hugging Face client reads both settings when it is imported
    (earlier, by timm), so its constants are set too. → a function that empties the cache (the Hub gone)."""
    from huggingface_hub import constants

    def point_to(cache):
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    point_to(hub_cache)
    (tmp_path / "empty-cache").mkdir()
    return lambda: point_to(tmp_path / "empty-cache")


def _timm_model(name: str):
    import timm

    return timm.create_model(name, pretrained=True).eval()


def _photo(size: int = 120):
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size + 40, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------ names
def test_hub_names_pass_the_name_check_and_malformed_ones_are_one_line_errors(tmp_path):
    from ocula.models.registry import check_model_name, safe_name

    check_model_name(f"hf-hub:{REPO}")  # syntax only: whether the repo exists is found out when it is built
    check_model_name(f"hf-hub:{REPO}@main")
    with pytest.raises(OculaError, match="hf-hub:ORG/NAME"):
        check_model_name("hf-hub:tiny")
    with pytest.raises(OculaError, match="no such folder"):
        check_model_name(f"local-dir:{tmp_path / 'nope'}")
    with pytest.raises(OculaError, match="has no config.json"):
        check_model_name(f"local-dir:{tmp_path}")
    with pytest.raises(OculaError, match=f"unknown model '{REPO}'.*a Hub model reads hf-hub:{REPO}"):
        check_model_name(REPO)
    assert safe_name(f"hf-hub:{REPO}@main") == "tiny-shapes" and safe_name("resnet18") == "resnet18"


def test_a_repo_missing_from_the_offline_cache_is_a_one_line_error(offline):
    from ocula.models import create_model

    with pytest.raises(OculaError, match="cannot load 'hf-hub:acme/absent'.*Hugging Face cache"):
        create_model("hf-hub:acme/absent", 3, pretrained=True)


def test_ocula_offline_refuses_hub_weights_unless_the_hub_client_reads_only_its_cache(offline, monkeypatch,
                                                                                     tmp_path, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # OCULA_OFFLINE=1 (conftest), the Hub reachable
    assert main(["import", f"hf-hub:{REPO}", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "OCULA_OFFLINE is set" in err and "HF_HUB_OFFLINE=1" in err and not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------ import, predict
def test_import_from_the_offline_cache_predicts_as_timm_with_the_models_own_preprocessing(offline, tmp_path):
    from timm.data import create_transform, resolve_model_data_config

    from ocula.bundle import read_meta
    from ocula.inference.predictor import Classifier

    name = f"hf-hub:{REPO}"
    reference = _timm_model(name)
    data = resolve_model_data_config(reference)
    out = tmp_path / "imported"
    assert main(["import", name, "--out", str(out)]) == 0  # OCULA_OFFLINE=1 (conftest): the cache is on disk
    meta = read_meta(out)
    assert meta["classes"] == CLASSES and meta["imported"]["classes"] == f"the config of '{name}'"
    contract = meta["contract"]
    assert (contract["input_size"], contract["mean"], contract["std"], contract["interpolation"], contract["crop_pct"]) \
        == (data["input_size"][-1], list(data["mean"]), list(data["std"]), data["interpolation"], data["crop_pct"])
    assert contract["input_size"] == 96 and contract["crop_pct"] == 0.8  # the repo's, not the registry's 160/0.95
    assert meta["arch"]["name"] == "test_resnet" and meta["arch"]["source"] == name

    offline()  # the bundle rebuilds from its own record: no Hub, no cache
    clf = Classifier.load(out, device="cpu")
    photo = _photo()
    x = create_transform(**data)(photo).unsqueeze(0)  # timm's own eval preprocessing
    with torch.no_grad():
        assert torch.equal(clf.logits(x), reference(x))
    ours = clf.preprocess(photo)
    assert ours.shape == x.shape[1:] and (ours - x[0]).abs().max() < 0.05  # resize kernels may differ by a level
    assert clf.predict(photo).label == CLASSES[int(reference(x).argmax())]


def test_local_dir_name_builds_loads_and_rebuilds_without_the_folder(hub_cache):
    from ocula.bundle import build_from_meta
    from ocula.models import create_model

    folder = hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION
    name = f"local-dir:{folder}"
    model = create_model(name, len(CLASSES), pretrained=True).eval()
    reference = _timm_model(name)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    arch = model.ocula_arch
    assert arch["name"] == "test_resnet" and arch["source"] == name
    assert arch["kwargs"]["pretrained_cfg"]["crop_pct"] == 0.8
    rebuilt = build_from_meta({"arch": json.loads(json.dumps(arch))}).eval()  # as a bundle stores it (JSON)
    assert list(rebuilt.pretrained_cfg["input_size"]) == list(reference.pretrained_cfg["input_size"])  # JSON: a list
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), reference(x))


def test_a_video_models_hub_backbone_rebuilds_without_the_folder(hub_cache, tmp_path):
    import shutil

    from ocula.bundle import build_from_meta
    from ocula.models import create_model

    folder = tmp_path / "encoder"
    shutil.copytree(hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION, folder)
    model = create_model("frame_avg", 2, 3, 64, backbone=f"local-dir:{folder}", frames=2,
                         backbone_pretrained=True).eval()
    arch = json.loads(json.dumps(model.ocula_arch))
    assert arch["kwargs"]["backbone"] == "test_resnet" and "pretrained_cfg" in arch["kwargs"]["backbone_kwargs"]
    arch["kwargs"].pop("backbone_pretrained")  # as training's bundle drops it: the bundle holds the weights
    shutil.rmtree(folder)
    rebuilt = build_from_meta({"arch": arch}).eval()
    rebuilt.load_state_dict(model.state_dict())
    clip = torch.rand(1, 2, 3, 64, 64)  # (B, T, C, H, W)
    with torch.no_grad():
        assert torch.equal(rebuilt(clip), model(clip))


# ------------------------------------------------------------------------------ train
def test_train_from_the_offline_cache_starts_from_the_repos_weights(offline, shapes_folder, tmp_path):
    from ocula.bundle import read_meta
    from ocula.weights_file import load_tensors

    name, out = f"hf-hub:{REPO}", tmp_path / "run"
    assert main(["train", shapes_folder, "--model", name, "--pretrained", "true", "--max-steps", "2",
                 "--strategy", "full", "--cross-fit", "off", "--lr", "1e-3", "--out", str(out)]) == 0
    meta = read_meta(out)
    assert meta["arch"]["name"] == "test_resnet" and meta["arch"]["source"] == name
    assert meta["contract"]["input_size"] == 96 and meta["contract"]["mean"] == PREPROCESSING["mean"]
    trained = load_tensors(next((out / "weights").glob("*.safetensors")))["conv1.0.weight"]
    start = _timm_model(name).state_dict()["conv1.0.weight"]
    # two AdamW steps at 1e-3 move each weight by about 2e-3 at most; a fresh init differs by ~0.1
    assert not torch.equal(trained, start) and (trained - start).abs().max() < 0.01
    offline()
    assert main(["predict", str(out), str(next(Path(shapes_folder).rglob("*.png")))]) == 0  # no Hub needed


# ------------------------------------------------------------------------------ create_model(pretrained=PATH)
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_create_model_loads_a_local_weights_file(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    from ocula.models import create_model

    torch.manual_seed(1)
    state = timm.create_model("test_resnet", num_classes=3).state_dict()
    path = tmp_path / f"w{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save({"model": state}, path)
    model = create_model("test_resnet", 3, pretrained=path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    other = create_model("test_resnet", 5, pretrained=str(path))  # another class count: a new head, the rest loaded
    assert other.get_classifier().out_features == 5
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items() if not k.startswith("fc."))
    with pytest.raises(OculaError, match="no such weights file"):
        create_model("test_resnet", 3, pretrained=tmp_path / "absent.pth")
    with pytest.raises(OculaError, match="is a directory"):
        create_model("test_resnet", 3, pretrained=tmp_path)


def test_a_timm_training_checkpoint_with_its_arguments_loads(tmp_path):
    """timm's and torchvision's train scripts store their arguments as an argparse.Namespace beside the weights:
    the safe loader allows that one class for the call, so the checkpoint is read instead of refused."""
    import timm

    from ocula.engine.weights import read_weights

    state = timm.create_model("test_resnet", num_classes=3).state_dict()
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1, model="test_resnet"), "epoch": 3},
               tmp_path / "checkpoint.pth")
    source = read_weights(tmp_path / "checkpoint.pth")
    assert source.nested_key == "state_dict" and set(source.state_dict) == set(state)
