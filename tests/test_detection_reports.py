"""Detection's outputs beyond train/predict (issue 25): `ocula evaluate` writes the per-class AP table, the PR
curves and a grid of examples; `ocula report` shows mAP; `ocula audit` reads box datasets and names each
suspicious box once."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ocula
from ocula.audit.api import audit
from ocula.audit.boxes import NOT_RUN, box_findings
from ocula.audit.findings import SampleRef
from ocula.data.synth_detection import write_photo_objects
from ocula.report.render import render_report
from ocula.run_dir import EvalDir

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def box_eval(detection_run, photo_objects, tmp_path_factory) -> tuple[dict, EvalDir]:
    out = EvalDir(tmp_path_factory.mktemp("det-eval"))
    return ocula.evaluate(detection_run, photo_objects, out_dir=str(out)), out


def test_evaluate_writes_the_per_class_ap_table_pr_curves_and_examples(box_eval):
    report, out = box_eval
    with open(out.per_class_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["class", "AP", "AP50", "AR100", "n_boxes", "n_images"]
    assert [r["class"] for r in rows] == [r["class"] for r in report["per_class"]]
    assert sum(int(r["n_boxes"]) for r in rows) == report["boxes"]
    for png in (out.pr_curves_png, out.detections_png, out.confusion_png):
        assert png.read_bytes().startswith(PNG), png
    # the box confusion matrix: every true box once in its row (found as some class, or missed: background)
    confusion = report["box_confusion"]
    assert confusion["names"] == [r["class"] for r in report["per_class"]] + ["background"]
    matrix = np.asarray(confusion["matrix"])
    assert matrix[:-1].sum() == report["boxes"] and matrix[-1, -1] == 0
    with open(out.confusion_csv, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["true\\pred", *confusion["names"]]
    assert [[int(v) for v in row[1:]] for row in table[1:]] == confusion["matrix"]
    assert report["pr_curve"]["iou"] == 0.5 and len(report["pr_curve"]["recall"]) == 101
    assert 0 < len(report["examples"]) <= 12 and all(os.path.isfile(e["path"]) for e in report["examples"])
    assert json.loads(out.report.read_text())["examples"] == report["examples"]


def test_evaluate_prints_map_and_ap_per_class_not_accuracy(detection_run, photo_objects, tmp_path):
    done = subprocess.run([sys.executable, "-m", "ocula", "evaluate", detection_run, photo_objects, "--out",
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    head = next(line for line in done.stdout.splitlines() if line.startswith("images="))
    assert "mAP=" in head and "mAP50=" in head and "mAP75=" in head
    assert "accuracy" not in done.stdout and "Traceback" not in done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert ["class", "AP", "AP50", "AR100", "boxes"] in rows
    assert {r[0] for r in rows if len(r) == 5} >= {"cat", "coin", "cup"}  # AP per class
    assert "pr_curves.png" in done.stdout and "detections.png" in done.stdout
    assert "confusion_matrix.png" in done.stdout and "missed;" in done.stdout


def test_the_report_of_a_detection_run_shows_map_pr_curves_and_examples(detection_run, box_eval, tmp_path):
    _, out = box_eval
    page = render_report(detection_run, eval_dir=out.path)
    evaluation = page.split('<section id="evaluation"')[1].split("</section>")[0]
    assert 'data-status="ran"' in evaluation and "mAP @[.5:.95]" in evaluation and "mAP75" in evaluation
    assert 'data-image="pr"' in evaluation and 'data-image="examples"' in evaluation
    assert 'data-image="confusion"' in evaluation and "Most confused" in evaluation
    per_class = evaluation.split('id="per-class"')[1].split("</table>")[0]
    assert per_class.count("<tr><td>") == 3  # AP per class
    summary = page.split('<section id="summary"')[1].split("</section>")[0]
    assert "mAP on" in summary and "accuracy on" not in summary
    assert 'id="calibration" data-status="not run"' in page and "val/mAP" in page
    bare = EvalDir(tmp_path / "bare")  # an evaluation folder with the report only: the pictures say why not
    os.makedirs(bare.path)
    shutil.copy(out.report, bare.report)
    evaluation = render_report(detection_run, eval_dir=bare.path).split('<section id="evaluation"')[1]
    assert "no pr_curves.png in the evaluation folder" in evaluation and "no detections.png" in evaluation


def _plant(root: Path) -> dict:
    """A tiny box, two boxes of different classes on one object and a copy of an image, in train's COCO JSON."""
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    shutil.copy(root / "images" / "train" / "00000.jpg", root / "images" / "train" / "copy.jpg")
    doc["images"].append({"id": 1000, "file_name": "copy.jpg", "width": 128, "height": 128})
    aid = max(a["id"] for a in doc["annotations"]) + 1
    doc["annotations"] += [
        {"id": aid, "image_id": 3, "category_id": 1, "bbox": [10, 10, 2, 2], "area": 4, "iscrowd": 0},
        {"id": aid + 1, "image_id": 4, "category_id": 1, "bbox": [20, 20, 60, 60], "area": 3600, "iscrowd": 0},
        {"id": aid + 2, "image_id": 4, "category_id": 2, "bbox": [22, 22, 60, 60], "area": 3600, "iscrowd": 0}]
    path.write_text(json.dumps(doc))
    return {"tiny": "images/train/00002.jpg", "overlap": "images/train/00003.jpg", "copy": "images/train/copy.jpg"}


def test_audit_of_a_hostile_coco_set_names_each_planted_problem_once(tmp_path):
    root = tmp_path / "hostile"
    planted = write_photo_objects(root, train=12, test=4, size=128, classes=3, seed=0, hostile=True)["hostile"]
    where = _plant(root)
    result = audit(str(root), out=str(tmp_path / "audit"))  # folds=5: the label check says why it did not run
    kinds = [f.details["kind"] for f in result.findings if "kind" in f.details]
    assert sorted(kinds) == sorted(planted)  # the reader's problems, one finding each
    tiny = [f for f in result.by_category("tiny-box") if f.items[0].id == where["tiny"]]
    assert len(tiny) == 1 and tiny[0].details["box"] == [10.0, 10.0, 12.0, 12.0]
    overlap = [f for f in result.by_category("overlapping-boxes") if f.items[0].id == where["overlap"]]
    assert len(overlap) == 1 and overlap[0].details["classes"] == ["cat", "coin"] and overlap[0].details["iou"] > 0.7
    copies = [f for f in result.findings if f.check == "duplicates" and where["copy"] in [r.id for r in f.items]]
    assert len(copies) == 1 and copies[0].category == "exact-duplicate"
    assert NOT_RUN in result.notes
    assert {f.category for f in result.findings if f.drop} == {"unreadable", "exact-duplicate"}
    issues = json.loads((tmp_path / "audit" / "issues.json").read_text())
    assert issues["counts"]["tiny-box"] >= 1 and "overlapping-boxes" in (tmp_path / "audit" / "report.md").read_text()
    assert issues["stats"]["class_counts"]["train"]["cat"] > 0  # images per class, from the boxes


def test_audit_cli_reads_a_hostile_yolo_set(tmp_path):
    root = tmp_path / "yolo"
    planted = write_photo_objects(root, train=8, test=2, size=96, classes=3, layout="yolo", seed=1,
                                  hostile=True)["hostile"]
    done = subprocess.run([sys.executable, "-m", "ocula", "audit", str(root), "--out", str(tmp_path / "a")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and NOT_RUN in done.stdout
    issues = json.loads((tmp_path / "a" / "issues.json").read_text())
    kinds = [f["details"]["kind"] for f in issues["findings"] if "kind" in f["details"]]
    assert sorted(kinds) == sorted(planted)  # the reader's problems, one finding each


def test_box_findings_tiny_huge_and_overlap_thresholds():
    ref = SampleRef("a.jpg", "train", "x", None)
    rows = np.array([[0, 0.0, 0.0, 0.99, 0.99],  # huge: 98% of the image
                     [1, 0.5, 0.5, 0.52, 0.6],  # tiny: 2 px wide on 100 px
                     [1, 0.1, 0.1, 0.3, 0.3], [1, 0.1, 0.1, 0.3, 0.31],  # one class twice: no overlap finding
                     [2, 0.6, 0.1, 0.9, 0.4]], np.float32)  # fine
    found = box_findings([ref], [rows], [(100, 100)], ["a", "b", "c"])
    assert sorted(f.category for f in found) == ["huge-box", "tiny-box"]
    assert box_findings([ref], [rows], [(0, 0)], ["a", "b", "c"]) == []  # an image that did not open
