"""Detection metrics (issue 25): ocula's COCO mAP against pycocotools itself, the edge cases COCO defines
(perfect, empty, classes without boxes, negative images, padding), box agreement, predict's rows, and
the pictures."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ocula.errors import OculaError
from ocula.evaluation.detection import (
    box_agreement,
    detections_table,
    pr_curve,
    pycocotools_map,
    score_detections,
)
from ocula.evaluation.detection_plots import (
    GRID_CELL,
    LEGEND_HEIGHT,
    detection_grid,
    draw_detections,
    plot_pr_curves,
)

pytest.importorskip("torchmetrics")
pytest.importorskip("pycocotools")

CLASSES = ["cat", "dog", "bird"]


def realistic(n=40, k=3, seed=0, max_gt=7, max_dets=14):
    """(targets (n, max_gt, 5), detections (n, max_dets, 6), sizes (n, 2)): every 8th image is a negative;
    85% of boxes are found with jittered corners and random scores (10% with the wrong class), the rest
    missed; each image gets up to two false positives. Boxes span COCO's small, medium and large."""
    rng = np.random.default_rng(seed)
    targets = np.full((n, max_gt, 5), -1.0)
    dets = np.zeros((n, max_dets, 6))
    dets[..., 5] = -1
    sizes = np.stack([rng.integers(200, 900, n), rng.integers(200, 900, n)], 1).astype(float)
    for i in range(n):
        d = 0
        for j in range(0 if i % 8 == 0 else rng.integers(1, max_gt)):
            w, h = rng.uniform(0.03, 0.5, 2)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            c = rng.integers(0, k)
            targets[i, j] = [c, x, y, x + w, y + h]
            if rng.random() < 0.85:
                jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
                label = c if rng.random() < 0.9 else rng.integers(0, k)
                dets[i, d] = [x + jit[0], y + jit[1], x + w + jit[2], y + h + jit[3], rng.random(), label]
                d += 1
        for _ in range(rng.integers(0, 3)):
            w, h = rng.uniform(0.03, 0.4, 2)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            dets[i, d] = [x, y, x + w, y + h, 0.7 * rng.random(), rng.integers(0, k)]
            d += 1
    return targets, dets, sizes


def perfect(targets):
    """Detections equal to the ground truth, score 0.9, same padding."""
    dets = np.zeros(targets.shape[:2] + (6,))
    dets[..., :4], dets[..., 4], dets[..., 5] = targets[..., 1:], 0.9, targets[..., 0]
    dets[targets[..., 0] < 0, 4] = 0
    return dets


# ----------------------------------------------------------------------------- against pycocotools


@pytest.mark.parametrize("seed, with_sizes", [(0, True), (1, False)])
def test_map_equals_pycocotools(seed, with_sizes):
    targets, dets, sizes = realistic(seed=seed)
    sizes = sizes if with_sizes else None
    ours = score_detections(targets, dets, CLASSES, sizes)
    reference = pycocotools_map(targets, dets, sizes)
    assert 0.1 < ours["mAP"] < 0.9  # a realistic set, not a degenerate one
    for key in ("mAP", "mAP50", "mAP75"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-4), key
    assert ours["images"] == 40 and ours["boxes"] == int((targets[..., 0] >= 0).sum())
    assert ours["backend"] in ("faster_coco_eval", "pycocotools") and ours["loss"] is None
    assert ours["sizes"] == ("given" if with_sizes else "default 640x640")
    # the macro mean of the per-class APs is the mAP, as COCO defines it
    assert np.mean([r["AP"] for r in ours["per_class"]]) == pytest.approx(ours["mAP"], abs=1e-5)
    assert np.mean([r["AP50"] for r in ours["per_class"]]) == pytest.approx(ours["mAP50"], abs=1e-5)
    assert sum(r["n_boxes"] for r in ours["per_class"]) == ours["boxes"]
    for key in ("mAP_small", "mAP_medium", "mAP_large", "mAR1", "mAR10", "mAR100"):
        assert ours[key] is None or 0.0 <= ours[key] <= 1.0
    assert ours["mAR1"] <= ours["mAR10"] <= ours["mAR100"]


def test_without_faster_coco_eval_pycocotools_scores_and_the_report_says_so(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "faster_coco_eval" else find_spec(name, *a))
    targets, dets, sizes = realistic(n=16, seed=11)
    report = score_detections(targets, dets, CLASSES, sizes)
    assert report["backend"] == "pycocotools" and "faster_coco_eval is not installed" in report["note"]
    assert report["mAP"] == pytest.approx(pycocotools_map(targets, dets, sizes)["mAP"], abs=1e-4)


def test_perfect_predictions_score_one():
    targets, _, sizes = realistic(seed=2)
    report = score_detections(targets, perfect(targets), CLASSES, sizes)
    assert report["mAP"] == pytest.approx(1.0) and report["mAP50"] == pytest.approx(1.0)
    assert report["mAR100"] == pytest.approx(1.0)
    assert all(r["AP"] == pytest.approx(1.0) for r in report["per_class"])
    assert pycocotools_map(targets, perfect(targets), sizes)["mAP"] == pytest.approx(1.0)


def test_no_predictions_score_zero():
    targets, _, _ = realistic(seed=3)
    none = np.zeros(targets.shape[:2] + (6,))
    none[..., 5] = -1
    report = score_detections(targets, none, CLASSES)
    assert report["mAP"] == 0.0 and report["mAP50"] == 0.0 and report["mAR100"] == 0.0
    assert all(r["AP"] == 0.0 for r in report["per_class"])
    assert pycocotools_map(targets, none) == {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0}


def test_class_without_ground_truth_has_no_ap():
    targets, _, _ = realistic(seed=4)
    targets[targets[..., 0] == 2] = -1  # no bird anywhere
    dets = perfect(targets)
    dets[0, -1] = [0.1, 0.1, 0.3, 0.3, 0.95, 2]  # a bird nobody drew: a false positive of an empty class
    report = score_detections(targets, dets, CLASSES)
    bird = report["per_class"][2]
    assert bird["AP"] is None and bird["AP50"] is None and bird["AR100"] is None and bird["n_boxes"] == 0
    assert report["mAP"] == pytest.approx(1.0)  # the empty class is left out of the mean, not counted 0
    pr = pr_curve(targets, dets)
    assert [r for r in pr["per_class"] if r["class"] == 2][0]["precision"] is None


def test_negative_images_with_false_positives_lower_ap():
    targets, _, _ = realistic(seed=5)
    clean = score_detections(targets, perfect(targets), CLASSES)
    negatives = np.full((5,) + targets.shape[1:], -1.0)
    fp = np.zeros((5,) + targets.shape[1:2] + (6,))
    fp[..., 5] = -1
    fp[:, 0] = [0.2, 0.2, 0.6, 0.6, 0.99, 0]  # a confident cat on each empty image
    t2, d2 = np.concatenate([targets, negatives]), np.concatenate([perfect(targets), fp])
    report = score_detections(t2, d2, CLASSES)
    assert report["images"] == len(targets) + 5
    assert report["per_class"][0]["AP"] < clean["per_class"][0]["AP"] == pytest.approx(1.0)
    assert report["per_class"][1]["AP"] == pytest.approx(1.0)  # other classes untouched
    assert report["mAP"] == pytest.approx(pycocotools_map(t2, d2)["mAP"], abs=1e-4)


def test_padding_rows_and_list_input_change_nothing():
    targets, dets, sizes = realistic(n=12, seed=6)
    padded_t = np.concatenate([targets, np.full((12, 3, 5), -1.0)], axis=1)
    pad_d = np.zeros((12, 4, 6))
    pad_d[..., 5] = -1
    padded_d = np.concatenate([pad_d, dets], axis=1)  # padding first: position must not matter
    base = score_detections(targets, dets, CLASSES, sizes)
    assert score_detections(padded_t, padded_d, CLASSES, sizes) == base
    as_lists = ([t[t[:, 0] >= 0] for t in targets], [d[d[:, 5] >= 0] for d in dets])
    assert score_detections(*as_lists, CLASSES, sizes) == base


def test_sizes_decide_coco_area_ranges():
    targets = np.array([[[0, 0.1, 0.1, 0.14, 0.14]]])  # 4% of the side: 25.6 px at 640, 400 px at 10000
    dets = perfect(targets)
    small = score_detections(targets, dets, ["x"])
    large = score_detections(targets, dets, ["x"], sizes=np.array([[10000, 10000]]))
    assert small["mAP_small"] == pytest.approx(1.0) and small["mAP_large"] is None
    assert large["mAP_large"] == pytest.approx(1.0) and large["mAP_small"] is None


def test_bad_inputs_are_one_line_errors():
    targets, dets, _ = realistic(n=4, seed=7)
    with pytest.raises(OculaError, match="images of ground truth"):
        score_detections(targets, dets[:3], CLASSES)
    with pytest.raises(OculaError, match="class 2 but there are 2"):
        score_detections(np.array([[[2, 0, 0, 0.5, 0.5]]]), dets[:1], ["a", "b"])
    with pytest.raises(OculaError, match=r"\(N, M, 5\)"):
        score_detections(targets[0], dets[0], CLASSES)
    with pytest.raises(OculaError, match="sizes"):
        score_detections(targets, dets, CLASSES, sizes=np.ones((3, 2)))
    with pytest.raises(OculaError, match="COCO's thresholds"):
        pr_curve(targets, dets, iou=0.52)


def test_pr_curve_matches_ap50():
    targets, dets, sizes = realistic(seed=8)
    report = score_detections(targets, dets, CLASSES, sizes)
    pr = pr_curve(targets, dets, sizes=sizes)
    assert len(pr["recall"]) == 101 and pr["iou"] == 0.5
    for row, cls in zip(pr["per_class"], report["per_class"]):
        assert len(row["precision"]) == 101 and 0 < row["max_recall"] <= 1
        assert row["AP"] == pytest.approx(cls["AP50"], abs=1e-6)
        assert np.all(np.diff(row["precision"]) <= 1e-12)  # COCO's envelope never rises with recall


# ----------------------------------------------------------------------------- agreement, rows


def test_box_agreement_identical_and_shifted():
    _, dets, _ = realistic(n=10, seed=9)
    same = box_agreement(dets, dets.copy())
    assert same["a_matched"] == same["b_matched"] == same["agreement"] == 1.0
    assert same["mean_iou"] == pytest.approx(1.0) and same["max_score_diff"] == 0.0
    assert same["n_a"] == int(((dets[..., 5] >= 0) & (dets[..., 4] >= 0.3)).sum())
    shifted = dets.copy()
    shifted[1::2, :, [0, 2]] += 0.6 * (dets[1::2, :, [2]] - dets[1::2, :, [0]])  # IoU 0.25 on half the images
    moved = box_agreement(dets, shifted)
    assert 0.2 < moved["agreement"] < 0.8
    assert box_agreement(dets, shifted, iou=0.2)["agreement"] == 1.0


def test_box_agreement_tolerates_scores_across_the_threshold():
    a = np.array([[[0.1, 0.1, 0.5, 0.5, 0.31, 0], [0.5, 0.5, 0.9, 0.9, 0.8, 1]]])
    b = a.copy()
    b[0, 0, 4] = 0.29  # just under the threshold in B: still the same box
    report = box_agreement(a, b)
    assert report["agreement"] == 1.0 and report["max_score_diff"] == pytest.approx(0.02)
    b[0, 1, 5] = 0  # a different class is no match
    assert box_agreement(a, b)["a_matched"] == 0.5


def test_detections_table_rows_in_pixels():
    dets = np.array([[[0.1, 0.2, 0.5, 0.6, 0.4, 1], [0.0, 0.0, 1.0, 1.0, 0.9, 0], [0, 0, 0, 0, 0, -1]],
                     [[0.2, 0.2, 0.4, 0.4, 0.1, 2], [0, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, -1]]])
    rows = detections_table(dets, ["a.jpg", "b.jpg"], CLASSES, np.array([[200, 100], [50, 50]]), 0.3)
    assert rows == [
        {"path": "a.jpg", "class": "cat", "score": 0.9, "x1": 0.0, "y1": 0.0, "x2": 200.0, "y2": 100.0},
        {"path": "a.jpg", "class": "dog", "score": 0.4, "x1": 20.0, "y1": 20.0, "x2": 100.0, "y2": 60.0},
    ]
    assert len(detections_table(dets, ["a.jpg", "b.jpg"], CLASSES, None, 0.05)) == 3


# ----------------------------------------------------------------------------- pictures


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


@pytest.mark.parametrize("side", [64, 1024])
def test_draw_detections_keeps_size_and_draws(side):
    image = Image.new("RGB", (side, side * 3 // 4), "gray")
    boxes = np.array([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 0.95, 0.7]]) * ([side, side * 3 // 4] * 2)
    out = draw_detections(image, boxes, ["cat", "dog"], [0.91, 0.42], classes=CLASSES)
    assert out.size == image.size and out is not image
    pixels = np.asarray(out)
    assert (pixels != 128).any(axis=-1).mean() > 0.01  # outlines and labels are there
    assert np.asarray(image).max() == 128  # the input is untouched
    gt = draw_detections(Image.new("L", (side, side)), boxes, ["cat", "dog"], None, dashed=True)
    assert gt.mode == "RGB" and gt.size == (side, side)


def test_pr_and_grid_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    targets, dets, _ = realistic(n=7, seed=10)
    pr = pr_curve(targets, dets)
    assert _png_size(plot_pr_curves(pr, CLASSES, tmp_path / "pr.png")) == (650, 500)
    images = [Image.new("RGB", (200 + 40 * i, 150), (30 * i, 90, 120)) for i in range(7)]
    path = detection_grid(images, dets, targets, CLASSES, tmp_path / "grid.png", n=6)
    assert _png_size(path) == (4 * GRID_CELL, 2 * GRID_CELL + LEGEND_HEIGHT)
    one = detection_grid(images[:1], dets[:1], None, CLASSES, tmp_path / "one.png")
    assert _png_size(one) == (GRID_CELL, GRID_CELL + LEGEND_HEIGHT)


def test_box_confusion_counts_hits_swaps_misses_and_false_boxes():
    from ocula.evaluation.detection_confusion import box_confusion

    truth = [np.array([[0, .1, .1, .4, .4], [1, .5, .5, .9, .9], [1, .0, .6, .2, .9]]),  # third: missed
             np.array([[0, .2, .2, .6, .6]])]
    found = [np.array([[.1, .1, .4, .41, .9, 0],  # cat as cat
                       [.5, .5, .88, .9, .8, 0],  # the dog detected as a cat
                       [.6, .0, .9, .3, .7, 1],  # on no object
                       [.0, .6, .2, .9, .1, 1]]),  # would cover the missed dog, but scores under 0.25
             np.array([[.2, .2, .6, .6, .6, 0], [.21, .2, .6, .6, .5, 0]])]  # a hit and its duplicate
    confusion = box_confusion(truth, found, ["cat", "dog"])
    assert confusion["names"] == ["cat", "dog", "background"]
    assert confusion["matrix"] == [[2, 0, 0],   # cats: both found as cats
                                   [1, 0, 1],   # dogs: one found as a cat, one missed
                                   [1, 1, 0]]   # no object: the duplicate cat, the dog on nothing
    assert box_confusion(truth, found, ["cat", "dog"], min_score=0.05)["matrix"][1] == [1, 1, 0]
