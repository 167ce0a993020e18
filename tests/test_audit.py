"""ocula audit: integrity categories, duplicates and leakage, label errors, clean manifests, reports, CLI."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from ocula.audit import audit
from ocula.audit.hostile import write_hostile_folder, write_picture_folder
from ocula.audit.integrity import SizeLimits

SMALL_BOMB = dict(bomb_side=3000)
SMALL_LIMITS = SizeLimits(max_pixels=4_000_000)


def categories_by_id(result) -> dict[str, set]:
    found: dict[str, set] = {}
    for f in result.findings:
        for item in f.items:
            found.setdefault(item.id, set()).add(f.category)
    return found


def folder_digest(root) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return out


def test_every_integrity_category_is_found(tmp_path):
    expected = write_hostile_folder(tmp_path / "data", **SMALL_BOMB)
    result = audit(str(tmp_path / "data"), folds=0, limits=SMALL_LIMITS)
    found = categories_by_id(result)
    for name, category in expected.items():
        assert category in found.get(name, set()), (name, category, found.get(name))
    ordinary = [i for i in found if "/ok_" in i]
    assert not ordinary, f"ordinary images flagged: {ordinary}"
    fatal = {"zero-byte", "unreadable", "truncated", "decompression-bomb"}
    assert {n for n, c in expected.items() if c in fatal} <= result.flagged()
    assert "a/cmyk.jpg" not in result.flagged()  # odd but usable: kept


@pytest.fixture
def dup_folder(tmp_path):
    """Shapes in train/test, with an exact copy, a resized and a re-encoded copy, a train→test leak
    and a copy filed under another class."""
    from PIL import Image

    root = tmp_path / "dups"
    classes = ("circle", "square", "triangle")
    write_picture_folder(root / "train", classes, per_class=10)
    write_picture_folder(root / "test", classes, per_class=3, seed=1, prefix="t")
    train = root / "train"
    shutil.copyfile(train / "circle" / "circle_000.png", train / "circle" / "copy_of_000.png")
    img = Image.open(train / "square" / "square_001.png")
    img.resize((36, 36), Image.Resampling.BILINEAR).save(train / "square" / "small_001.png")
    img.save(train / "square" / "recoded_001.jpg", quality=50)
    shutil.copyfile(train / "triangle" / "triangle_002.png", root / "test" / "triangle" / "leak_002.png")
    shutil.copyfile(train / "circle" / "circle_003.png", train / "square" / "mislabelled_003.png")
    return root


def test_duplicates_leakage_and_conflicts(dup_folder):
    result = audit(str(dup_folder), folds=0)
    found = categories_by_id(result)
    assert "exact-duplicate" in found["train/circle/copy_of_000.png"]
    assert "near-duplicate" in found["train/square/small_001.png"]
    assert "near-duplicate" in found["train/square/recoded_001.jpg"]
    assert "leakage" in found["test/triangle/leak_002.png"]
    assert "conflicting-labels" in found["train/square/mislabelled_003.png"]
    pairs = [f for f in result.findings if f.check == "duplicates"]
    assert len(pairs) == 4, [f.message for f in pairs]  # nothing else among the distinct shapes
    flagged = result.flagged()
    assert "train/triangle/triangle_002.png" in flagged and "test/triangle/leak_002.png" not in flagged
    assert ("train/circle/circle_000.png" in flagged) != ("train/circle/copy_of_000.png" in flagged)


def test_write_clean_and_reports_leave_user_files_untouched(dup_folder, tmp_path):
    from ocula.modality.sources import resolve_data

    before = folder_digest(dup_folder)
    out = tmp_path / "report"
    result = audit(str(dup_folder), folds=0, out=str(out))
    rows = result.write_clean(tmp_path / "clean.csv")
    assert folder_digest(dup_folder) == before
    text = (tmp_path / "clean.csv").read_text().splitlines()
    assert text[0] == "path,label,split" and len(text) == rows + 1
    kept = {os.path.relpath(line.split(",")[0], dup_folder) for line in text[1:]}
    assert kept.isdisjoint(result.flagged()) and len(kept) == len(result.inventory) - len(result.flagged())
    clean = resolve_data(str(tmp_path / "clean.csv"), val_fraction=0)
    assert len(clean.train) + len(clean.test) == rows
    issues = json.loads((out / "issues.json").read_text())
    assert len(issues["findings"]) == len(result.findings) and issues["counts"]["leakage"] == 1
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 8
    md = (out / "report.md").read_text()
    assert "## leakage (1)" in md and "| circle |" in md


def test_label_errors_found_on_digits():
    import torch

    from ocula.data.builtin import load_builtin

    data = load_builtin("digits")
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(data.train), 12, replace=False)
    labels = data.train.labels.clone()
    labels[torch.as_tensor(flipped)] = (labels[torch.as_tensor(flipped)] + torch.as_tensor(
        rng.integers(1, 10, len(flipped)))) % 10
    data.train.labels = labels
    result = audit(data, folds=2, epochs=6, splits=["train"])
    issues = result.by_category("label-issue")
    hit = {f.items[0].index for f in issues} & set(flipped.tolist())
    assert len(hit) >= 8, f"{len(hit)} of 12 flipped labels found"
    assert len(issues) <= 30
    first = issues[0]
    assert first.items[0].id.startswith("digits/") and first.details["suggested"] != first.details["given"]
    assert result.counts["out_of_fold_accuracy"] > 0.8


def test_numpy_confident_learning_matches_the_rule():
    from ocula.audit.labels import _confident_learning

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])  # the last one is labelled 1 but confidently 0
    quality = probs[np.arange(5), labels]
    assert _confident_learning(labels, probs, quality).tolist() == [4]


def test_cli_audit_in_process(dup_folder, tmp_path, capsys):
    from ocula.cli import main

    out, clean = tmp_path / "cli-report", tmp_path / "cli-clean.csv"
    rc = main(["audit", str(dup_folder), "--folds", "0", "--out", str(out), "--write-clean", str(clean)])
    text = capsys.readouterr().out
    assert rc == 0 and "leakage" in text and "clean manifest" in text
    assert (out / "report.md").is_file() and (out / "report.html").is_file() and clean.is_file()
    assert main(["audit", str(tmp_path / "missing")]) == 2
    assert "no such dataset or folder" in capsys.readouterr().err
    assert main(["audit", str(dup_folder), "--folds", "0", "--keep", "outliers"]) == 2
    assert "did you mean: outlier" in capsys.readouterr().err
