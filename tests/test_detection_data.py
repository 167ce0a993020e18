"""Detection data: COCO and YOLO readers, layout recognition, hostile annotations, the photo-objects set."""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import yaml
from PIL import Image

from ocula.data.detection import detection_layout, read_detection, summarise_problems
from ocula.data.synth_detection import write_photo_objects
from ocula.errors import OculaError
from tests.conftest import make_shapes_folder

SIZE = 64


def _kinds(problems) -> Counter:
    return Counter(reason.split(" (")[0].split(",")[0] for _, reason in problems)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The same seed written as COCO and as YOLO, clean and hostile."""
    root = tmp_path_factory.mktemp("photo_objects")
    made = {}
    for layout in ("coco", "yolo"):
        for hostile in (False, True):
            out = root / f"{layout}_{'hostile' if hostile else 'clean'}"
            made[layout, hostile] = (out, write_photo_objects(out, train=8, test=4, size=SIZE, layout=layout,
                                                              seed=3, hostile=hostile))
    return made


def _img(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)
    return str(path)


def _coco(path, images, annotations, categories=({"id": 1, "name": "a"},)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return path


# ---------------------------------------------------------------- the generated set, read back

def test_round_trip_coco_and_yolo_agree_with_the_written_boxes(sets):
    (coco_dir, made), (yolo_dir, made_yolo) = sets["coco", False], sets["yolo", False]
    assert made["splits"] == made_yolo["splits"] and set(made["splits"]) == {"train", "test"}
    coco, yolo = read_detection(coco_dir), read_detection(yolo_dir)
    assert coco.classes == yolo.classes == made["classes"] == ["cat", "coin", "cup", "horse"]
    assert (coco.layout, yolo.layout) == ("coco", "yolo") and not coco.problems and not yolo.problems
    assert list(coco.splits) == list(yolo.splits) == ["train", "test"]  # no val carved here
    raw = json.loads((coco_dir / "annotations" / "instances_train.json").read_text())
    for split, counts in made["splits"].items():
        (cpaths, clabels), (ypaths, ylabels) = coco.splits[split], yolo.splits[split]
        assert [os.path.basename(p) for p in cpaths] == [os.path.basename(p) for p in ypaths]
        assert len(cpaths) == counts["images"] and all(os.path.isfile(p) for p in cpaths)
        assert sum(len(x) for x in clabels) == counts["boxes"]
        assert sum(len(x) == 0 for x in ylabels) == counts["negatives"]
        assert coco.sizes[split] == yolo.sizes[split] == [(SIZE, SIZE)] * counts["images"]
        for c, y in zip(clabels, ylabels):
            assert c.dtype == y.dtype == np.float32 and c.shape == y.shape and c.shape[1:] == (5,)
            assert np.array_equal(c[:, 0], y[:, 0])
            assert np.abs(c[:, 1:] - y[:, 1:]).max(initial=0) <= 1 / SIZE
            assert (c[:, 1:] >= 0).all() and (c[:, 1:] <= 1).all()
            assert (c[:, 3] > c[:, 1]).all() and (c[:, 4] > c[:, 2]).all()
    first = raw["annotations"][0]  # the first box of the first image that has one
    x, y, w, h = first["bbox"]
    expected = np.array([first["category_id"] - 1, x / SIZE, y / SIZE, (x + w) / SIZE, (y + h) / SIZE])
    assert np.allclose(coco.splits["train"][1][first["image_id"] - 1][0], expected, atol=1e-6)


def test_generated_boxes_have_the_promised_scales_and_classes(sets):
    """Objects span about 8-45 % of the side (a visible part may be smaller), over several classes."""
    coco_dir, _ = sets["coco", False]
    data = read_detection(coco_dir)
    paths, labels = data.splits["train"]
    assert min(max(b[3] - b[1], b[4] - b[2]) for x in labels for b in x) >= 0.04
    assert max(max(b[3] - b[1], b[4] - b[2]) for x in labels for b in x) <= 0.45 + 2 / SIZE
    assert len({int(c) for x in labels for c in x[:, 0]}) >= 3  # classes really vary


def test_the_same_seed_writes_the_same_files_and_another_seed_does_not(tmp_path, sets):
    coco_dir, _ = sets["coco", False]
    write_photo_objects(tmp_path / "a", train=8, test=4, size=SIZE, seed=3)
    write_photo_objects(tmp_path / "b", train=8, test=4, size=SIZE, seed=4)
    same = (tmp_path / "a" / "annotations" / "instances_train.json").read_text()
    assert same == (coco_dir / "annotations" / "instances_train.json").read_text()
    assert (tmp_path / "a/images/train/00005.jpg").read_bytes() == (coco_dir / "images/train/00005.jpg").read_bytes()
    assert same != (tmp_path / "b" / "annotations" / "instances_train.json").read_text()


def test_yolo_yaml_writes_val_only_when_there_is_one(tmp_path, sets):
    doc = yaml.safe_load((sets["yolo", False][0] / "data.yaml").read_text())
    assert "val" not in doc and doc["test"] == "images/test" and doc["train"] == "images/train"
    made = write_photo_objects(tmp_path / "v", train=3, val=2, test=0, size=SIZE, layout="yolo", classes=5)
    doc = yaml.safe_load((tmp_path / "v" / "data.yaml").read_text())
    assert doc["val"] == "images/val" and "test" not in doc and doc["names"][-1] == "rocket"
    data = read_detection(tmp_path / "v" / "data.yaml")
    assert list(data.splits) == ["train", "val"] and len(data.splits["val"][0]) == made["splits"]["val"]["images"]


def test_bad_generator_arguments_raise_one_line(tmp_path):
    for kwargs in ({"layout": "voc"}, {"classes": 9}, {"size": 8}):
        with pytest.raises(OculaError) as e:
            write_photo_objects(tmp_path / "x", train=1, test=0, **kwargs)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------- hostile annotations

@pytest.mark.parametrize("layout", ["coco", "yolo"])
def test_every_hostile_case_is_one_problem_of_its_kind(sets, layout):
    (out, made), (_, clean) = sets[layout, True], sets[layout, False]
    data = read_detection(out)
    assert _kinds(data.problems) == Counter(made["hostile"]) and len(made["hostile"]) >= 6
    assert all("\n" not in where + reason for where, reason in data.problems)
    # the broken entries cost nothing else: the real images and boxes are all still there
    assert len(data.splits["train"][0]) == clean["splits"]["train"]["images"]
    assert sum(len(x) for x in data.splits["train"][1]) == clean["splits"]["train"]["boxes"]
    summary = data.summary()
    assert any(line.startswith("1 box of zero area skipped") for line in summary)
    assert any(line.startswith("train: 8 images") for line in summary)


def test_coco_hand_written_edge_cases(tmp_path):
    """Crowd, clipped, unknown image, sorted category ids, and a negative image kept."""
    for name in ("a.jpg", "b.jpg"):
        _img(tmp_path / "images" / "val2017" / name)
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}, {"id": 2, "file_name": "b.jpg"},
              {"id": 3, "file_name": "gone.jpg", "width": 40, "height": 30}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [30, 20, 20, 20]},  # clipped at 40 x 30
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
        {"id": 4, "image_id": 9, "category_id": 3, "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, -5, 5]},
        {"id": 6, "image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 5]},
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": "oops"},
        {"id": 8, "image_id": 1, "category_id": 3, "bbox": [-30, 0, 10, 10]},
        {"id": 9, "image_id": 1, "category_id": 7, "bbox": [-5, 10, 15, 5]},  # clipped at x = 0
        {"id": 10, "image_id": 3, "category_id": 7, "bbox": [0, 0, 5, 5]},  # its image is missing: not reported again
    ]
    categories = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    path = _coco(tmp_path / "annotations" / "instances_val2017.json", images, annotations, categories)
    data = read_detection(path)
    assert data.classes == ["three", "seven"] and list(data.splits) == ["val"]
    paths, labels = data.splits["val"]
    assert [os.path.basename(p) for p in paths] == ["a.jpg", "b.jpg"]
    assert data.sizes["val"] == [(40, 30), (40, 30)]  # b.jpg's size from its header
    assert np.allclose(labels[0], [[1, 10 / 40, 5 / 30, 20 / 40, 15 / 30], [0, 30 / 40, 20 / 30, 1, 1],
                                   [1, 0, 10 / 30, 10 / 40, 15 / 30]])
    assert labels[1].shape == (0, 5) and labels[1].dtype == np.float32  # a negative, kept
    assert _kinds(data.problems) == Counter({"box of zero area": 2, "box partly outside the image": 2,
                                             "crowd box": 1, "missing image": 1, "annotation of an unknown image": 1,
                                             "malformed box": 1, "box outside the image": 1})
    lines = summarise_problems(data.problems)
    assert "2 boxes of zero area skipped" in lines and "1 crowd box skipped" in lines
    assert "2 boxes partly outside the image clipped" in lines and "1 missing image skipped" in lines
    assert ("instances_val2017.json:annotation 5", "box of zero area (w=-5, h=5)") in data.problems


def test_yolo_hand_written_edge_cases(tmp_path):
    """names as a dict, an image-list txt with a missing entry, a missing label file, a polygon line."""
    a, b, c = (_img(tmp_path / "images" / "train" / n, (50, 20)) for n in ("a.png", "b.png", "c.png"))
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.2 0.5\n\n0 0.1 0.1 0.3 0.1 0.3 0.4\nnan 1 2 3 4\n2 0.5 0.5 0.1 0.1\n")
    (tmp_path / "labels" / "train" / "b.txt").write_text("")
    (tmp_path / "list.txt").write_text("./images/train/a.png\n./images/train/b.png\nimages/train/c.png\nimages/gone.png\n")
    (tmp_path / "data.yaml").write_text("train: list.txt\nnames: {0: zero, 1: one}\n")
    assert detection_layout(tmp_path) == "yolo"
    data = read_detection(tmp_path)
    assert data.classes == ["zero", "one"] and list(data.splits) == ["train"]
    assert data.splits["train"][0] == [a, b, c]
    labels = data.splits["train"][1]
    assert np.allclose(labels[0], [[1, 0.4, 0.25, 0.6, 0.75], [0, 0.1, 0.1, 0.3, 0.4]])
    assert labels[1].shape == labels[2].shape == (0, 5)  # empty and missing label files: negatives
    assert _kinds(data.problems) == Counter({"malformed line": 1, "missing image": 1, "class index out of range": 1})


# ---------------------------------------------------------------- layout recognition

def test_layout_recognition(tmp_path, sets):
    coco_dir, yolo_dir = sets["coco", False][0], sets["yolo", False][0]
    assert detection_layout(coco_dir) == "coco"
    assert detection_layout(coco_dir / "annotations" / "instances_train.json") == "coco"
    assert detection_layout(yolo_dir) == "yolo"
    assert detection_layout(yolo_dir / "data.yaml") == "yolo"
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=2, size=16)
    assert detection_layout(shapes) is None
    (tmp_path / "shapes" / "meta.json").write_text('{"classes": ["circle"]}')
    (tmp_path / "shapes" / "notes.yaml").write_text("author: me\n")
    assert detection_layout(shapes) is None and detection_layout(tmp_path / "shapes" / "meta.json") is None
    assert detection_layout(tmp_path / "nothing-here") is None
    with pytest.raises(OculaError):
        read_detection(shapes)


def test_roboflow_coco_and_a_renamed_coco_file(tmp_path):
    for split in ("train", "valid"):
        _img(tmp_path / "rf" / split / "x.jpg")
        _coco(tmp_path / "rf" / split / "_annotations.coco.json", [{"id": 0, "file_name": "x.jpg"}],
              [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [0, 0, 40, 30]}])
    assert detection_layout(tmp_path / "rf") == "coco"
    data = read_detection(tmp_path / "rf")
    assert list(data.splits) == ["train", "val"] and not data.problems
    assert np.allclose(data.splits["val"][1][0], [[0, 0, 0, 1, 1]])
    _img(tmp_path / "plain" / "images" / "y.jpg")
    path = _coco(tmp_path / "plain" / "boxes.json", [{"id": 1, "file_name": "y.jpg"}], [])
    assert detection_layout(path) == "coco" and detection_layout(tmp_path / "plain") == "coco"
    assert read_detection(path).splits["train"][1][0].shape == (0, 5)


def test_malformed_json_and_yaml_raise_one_line(tmp_path):
    bad = tmp_path / "annotations" / "instances_train.json"
    bad.parent.mkdir()
    bad.write_text('{"images": [ {"id": 1,, } ]')
    with pytest.raises(OculaError) as e:
        read_detection(tmp_path)
    assert "not valid JSON" in str(e.value) and "\n" not in str(e.value)
    bad.write_text('["images"]')
    with pytest.raises(OculaError, match="not a COCO annotation file"):
        read_detection(bad)
    yml = tmp_path / "y" / "data.yaml"
    yml.parent.mkdir()
    yml.write_text("train: [images\nnames: : :\n")
    assert detection_layout(yml.parent) == "yolo"
    with pytest.raises(OculaError) as e:
        read_detection(yml)
    assert "not valid YAML" in str(e.value) and "\n" not in str(e.value)
    yml.write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(OculaError, match="not found"):
        read_detection(yml)
