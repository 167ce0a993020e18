"""Detection end to end on the seams (issue 25): a COCO or YOLO folder → train → evaluate → predict, with no
flags but the data; boxes move with the augmentation; hostile annotations are one line each."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ocula
from ocula.data.batch_augment import BatchAugment
from ocula.data.box_augment import BoxAugment, affine_with_boxes, mosaic, train_size
from ocula.data.contract import DataContract
from ocula.data.synth_detection import write_photo_objects
from ocula.evaluation.detection import pycocotools_map
from ocula.inference.scoring import labelled_split, predict_split
from ocula.run_dir import RunDir


def test_a_coco_folder_trains_a_detector_with_no_flags_but_the_data(detection_run):
    run = RunDir(detection_run)
    resolved = json.loads((Path(detection_run) / "resolved.json").read_text())
    assert resolved["choices"]["task"]["value"] == "detection"
    assert resolved["choices"]["model"]["value"] == "fcos"  # the config's seed_cnn cannot take boxes
    assert resolved["input"]["contract"]["resize"] == "stretch"  # a centre crop would cut boxes off
    assert resolved["choices"]["strategy"]["value"] == "full"
    assert resolved["choices"]["progressive"]["value"] == 0.7  # from scratch: the first epoch at 0.7 of the side
    assert resolved["config"]["augment"]["progressive"] == 0.7
    summary = json.loads((Path(detection_run) / "summary.json").read_text())
    assert summary["monitor"] == "val/mAP"
    metrics = (Path(detection_run) / "metrics.csv").read_text().splitlines()
    assert "val/mAP" in metrics[0] and len(metrics) == 3
    assert run.weights("best").is_file()


def test_evaluate_reports_coco_map_equal_to_pycocotools(detection_run, photo_objects):
    clf = ocula.load(detection_run)
    report = ocula.evaluate(detection_run, photo_objects)
    assert report["split"] == "test" and report["images"] == 12
    assert {"mAP", "mAP50", "mAP75", "per_class", "mAR100"} <= set(report)
    chosen = labelled_split(clf, photo_objects)
    found = predict_split(clf, chosen.samples)
    reference = pycocotools_map(found.labels, found.probs)
    assert report["mAP"] == pytest.approx(reference["mAP"], abs=1e-4)
    assert report["mAP50"] == pytest.approx(reference["mAP50"], abs=1e-4)


def test_predict_gives_boxes_in_the_image_pixels(detection_run, photo_objects):
    clf = ocula.load(detection_run)
    clf.box_threshold = 0.0  # a two-epoch model is not confident: show every kept box
    image = sorted((Path(photo_objects) / "images" / "test").glob("*.jpg"))[0]
    pred = clf.predict(str(image))
    assert pred.boxes, "no boxes at threshold 0"
    for b in pred.boxes:
        x1, y1, x2, y2 = b["box"]
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64
        assert b["label"] in clf.classes and 0 <= b["score"] <= 1
    assert pred.to_dict()["boxes"] == pred.boxes
    scores = [b["score"] for b in pred.boxes]
    assert scores == sorted(scores, reverse=True)


def test_predict_cli_writes_boxes_as_json(detection_run, photo_objects, tmp_path):
    out = tmp_path / "p.json"
    images = str(Path(photo_objects) / "images" / "test")
    done = subprocess.run([sys.executable, "-m", "ocula", "predict", detection_run, images, "--json", str(out),
                           "--box-threshold", "0"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 12 and all("boxes" in r for r in rows)


def test_boxes_follow_the_pixels_through_the_augmentation():
    gen = torch.Generator().manual_seed(3)
    x = torch.zeros(16, 1, 64, 64)
    x[:, :, 16:40, 24:48] = 1.0  # one white box per image: x 24-48, y 16-40 of 64
    boxes = torch.full((16, 2, 5), -1.0)
    boxes[:, 0] = torch.tensor([0, 24 / 64, 16 / 64, 48 / 64, 40 / 64])
    out, moved = affine_with_boxes(x, boxes, 64, gen, scale=(0.7, 1.3), shift=0.2, hflip=True)
    for img, b in zip(out, moved):
        if b[0, 0] < 0:
            continue  # pushed out of the frame
        ys, xs = torch.nonzero(img[0] > 0.5, as_tuple=True)
        x1, y1, x2, y2 = (b[0, 1:] * 64).tolist()
        assert abs(xs.min().item() - x1) <= 1.5 and abs(xs.max().item() + 1 - x2) <= 1.5
        assert abs(ys.min().item() - y1) <= 1.5 and abs(ys.max().item() + 1 - y2) <= 1.5
    assert (moved[:, 1, 0] == -1).all()  # padding stays padding


def test_mosaic_boxes_cover_exactly_the_pixels_of_their_objects():
    gen = torch.Generator().manual_seed(5)
    x = torch.zeros(6, 1, 64, 64)
    boxes = torch.full((6, 2, 5), -1.0)
    for i in range(6):  # image i: one box of value i + 1 at a place of its own
        x1, y1 = 4 + 7 * i, 30 - 4 * i
        x[i, :, y1:y1 + 12, x1:x1 + 14] = i + 1.0
        boxes[i, 0] = torch.tensor([i % 3, x1 / 64, y1 / 64, (x1 + 14) / 64, (y1 + 12) / 64])
    out, placed = mosaic(x, boxes, gen)
    assert out.shape == x.shape and placed.shape == (6, 8, 5)
    kept = 0
    for img, rows in zip(out, placed):
        for b in rows[rows[:, 0] >= 0]:
            x1, y1, x2, y2 = (b[1:] * 64).round().long().tolist()
            patch = img[0, y1:y2, x1:x2]
            assert patch.numel() and (patch > 0).all()  # inside the box: its object's pixels only
            assert (patch == patch.flatten()[0]).all() and int(patch.flatten()[0]) - 1 in range(6)
            assert int(b[0]) == (int(patch.flatten()[0]) - 1) % 3  # the class came with its pixels
            kept += 1
        visible = set((img[0][img[0] > 0]).unique().long().tolist())
        assert len(visible) <= 4  # at most four images in one mosaic
    assert kept >= 6  # most objects survive their crop
    assert (placed[..., 1:][placed[..., 0] < 0] == 0).all()  # padding stays padding


def test_mosaic_is_for_boxes_only():
    with pytest.raises(ocula.errors.OculaError, match="mosaic .* is for detection data"):
        ocula.train("digits", model="seed_cnn", augment="mosaic", epochs=1)


def test_box_augment_eval_path_only_resizes():
    contract = DataContract(input_size=32, channels=3, resize="stretch")
    augment = BoxAugment(BatchAugment(contract, "none"))
    x = torch.randint(0, 255, (2, 3, 48, 64), dtype=torch.uint8)
    y = torch.rand(2, 3, 5)
    out, same = augment(x, y, None)
    assert out.shape == (2, 3, 32, 32) and torch.equal(same, y)


def test_progressive_resizing_trains_the_first_half_smaller_and_ends_at_the_input_size():
    from ocula.config import build_config
    from ocula.engine.setup import make_augment

    assert [train_size(160, 0.7, e, 10) for e in range(10)] == [112] * 5 + [160] * 5
    assert train_size(160, 1.0, 0, 10) == 160 and train_size(160, 0.7, None, 10) == 160  # off; the run's size
    assert train_size(40, 0.3, 0, 4) == 16  # never below one step
    contract = DataContract(input_size=64, channels=3, resize="stretch")
    cfg = build_config("data/", task="detection", model="fcos", augment="light", hflip=True, progressive=0.5,
                       epochs=4)
    x, y = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8), torch.rand(2, 3, 5)
    first, last = (make_augment(cfg, contract, 2, epoch=e) for e in (0, 3))
    assert first(x, y, None)[0].shape[-1] == 32 and last(x, y, None)[0].shape[-1] == 64
    assert "first 2 epochs at 32 px, then 64 px" in make_augment(cfg, contract, 2).describe()
    with pytest.raises(ocula.errors.OculaError, match="progressive=0.1"):
        build_config("data/", progressive=0.1)
    from ocula.tasks.detection import DetectionTask
    # the epochs fill the full-size default's time: 36 at full size, 44 with half of them at 0.7 of the side
    assert DetectionTask.default_epochs(270, 8)[0] == 36 and DetectionTask.default_epochs(270, 8, 0.7)[0] == 44
    assert DetectionTask.default_progressive(from_weights=True)[0] == 1.0
    with pytest.raises(ocula.errors.OculaError, match="--progressive .* for detection data"):
        ocula.train("digits", model="seed_cnn", progressive=0.7, epochs=1)


def test_hostile_annotations_are_one_line_each_and_training_goes_on(tmp_path):
    root = tmp_path / "hostile"
    found = write_photo_objects(root, train=16, test=4, size=48, classes=2, hostile=True, seed=1)
    assert found["hostile"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ocula.train(str(root), backbone="test_efficientnet", epochs=1, out=str(tmp_path / "run"))
    lines = [str(w.message) for w in caught if str(w.message).startswith("skipped ")]
    assert len(lines) >= len(found["hostile"]) - 1  # each problem named once (negatives are kept, not skipped)
    assert all("\n" not in line for line in lines)
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["skipped"]


def test_a_yolo_layout_trains_too(tmp_path):
    root = tmp_path / "yolo"
    write_photo_objects(root, train=16, test=4, size=48, classes=2, layout="yolo", seed=2)
    run = ocula.train(str(root / "data.yaml"), backbone="test_efficientnet", epochs=1, out=str(tmp_path / "run"))
    assert json.loads((Path(run.dir) / "resolved.json").read_text())["choices"]["task"]["value"] == "detection"


def test_a_classifier_named_for_boxes_is_a_one_line_error(photo_objects):
    with pytest.raises(ocula.errors.OculaError, match="cannot be trained for this data's task"):
        ocula.train(photo_objects, model="resnet18", epochs=1)


def test_labels_are_one_padded_tensor_per_batch(photo_objects):
    from ocula.modality.sources import resolve_data

    splits = resolve_data(photo_objects)
    assert splits.boxes and splits.val is not None  # carved, stratified by each image's main class
    labels = np.stack(splits.train.labels)
    assert labels.ndim == 3 and labels.shape[2] == 5
    real = labels[labels[..., 0] >= 0]
    assert (real[:, 1:] >= 0).all() and (real[:, 1:] <= 1).all() and (real[:, 3] > real[:, 1]).all()


def test_evaluate_on_hostile_annotations_names_what_it_skipped(detection_run, tmp_path):
    root = tmp_path / "hostile-eval"
    write_photo_objects(root, train=12, test=4, size=64, classes=3, hostile=True, seed=3)
    report = ocula.evaluate(detection_run, str(root), split="train")
    assert report["images"] >= 8 and 0.0 <= report["mAP"] <= 1.0
    assert report["skipped"] and all("\n" not in str(s) for s in report["skipped"])
