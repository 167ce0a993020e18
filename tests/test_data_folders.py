"""scan_image_folder and read_manifest: what counts as a sample, a class and a split."""
from __future__ import annotations

import os
import re

import pytest
from PIL import Image

from ocula.data.folders import scan_image_folder
from ocula.data.manifest import read_manifest
from ocula.errors import OculaError


def _img(path, color=(0, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.new("RGB", (4, 4), color).save(path, format=fmt)
    return path


def _names(items):
    return sorted((os.path.basename(p), label) for p, label in items)


def test_flat_tree_with_nesting_case_and_debris(tmp_path):
    _img(tmp_path / "cats" / "A.JPG")
    _img(tmp_path / "cats" / "indoor" / "deep" / "b.Png")
    _img(tmp_path / "dogs" / "c.jpeg")
    _img(tmp_path / "dogs" / ".hidden.png")
    _img(tmp_path / "dogs" / ".ipynb_checkpoints" / "d.png")
    _img(tmp_path / "__MACOSX" / "cats" / "e.png")
    _img(tmp_path / ".cache" / "f.png")
    (tmp_path / "cats" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "cats" / "desktop.ini").write_text("x")
    (tmp_path / "dogs" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "dogs" / "notes.txt").write_text("x")
    (tmp_path / "dogs" / "meta.json").write_text("{}")
    (tmp_path / "dogs" / "empty.png").write_bytes(b"")

    scan = scan_image_folder(tmp_path)
    assert list(scan.splits) == ["train"]
    assert scan.classes == ["cats", "dogs"]
    assert _names(scan.splits["train"]) == [("A.JPG", "cats"), ("b.Png", "cats"), ("c.jpeg", "dogs")]
    assert scan.skipped == [(str(tmp_path / "dogs" / "empty.png"), "empty file")]
    assert "ignored 2 files with unknown extensions (.json, .txt)" in scan.warnings


def test_empty_class_dropped_with_warning(tmp_path):
    _img(tmp_path / "a" / "1.png")
    _img(tmp_path / "b" / "2.png")
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "readme.txt").write_text("no images here")
    scan = scan_image_folder(tmp_path)
    assert scan.classes == ["a", "b"]
    assert "class 'c' has no images; ignored" in scan.warnings


def test_split_folders_with_aliases(tmp_path):
    _img(tmp_path / "Train" / "a" / "1.png")
    _img(tmp_path / "Train" / "b" / "2.png")
    _img(tmp_path / "valid" / "a" / "3.png")
    _img(tmp_path / "TEST" / "c" / "4.png")
    _img(tmp_path / "extras" / "x" / "5.png")
    scan = scan_image_folder(tmp_path)
    assert sorted(scan.splits) == ["test", "train", "val"]
    assert scan.classes == ["a", "b", "c"]  # union over splits
    assert _names(scan.splits["val"]) == [("3.png", "a")]
    assert any("extras" in w for w in scan.warnings)


def test_symlinks_outside_root_are_not_followed(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    _img(root / "a" / "1.png")
    _img(root / "b" / "2.png")
    _img(outside / "secret.png")
    _img(outside / "cls" / "3.png")
    os.symlink(outside / "secret.png", root / "a" / "link.png")
    os.symlink(outside / "cls", root / "c")
    os.symlink(root / "b" / "2.png", root / "a" / "inside.png")  # inside the root: followed
    os.symlink(root / "a", root / "a" / "loop")  # a loop must not hang the scan
    scan = scan_image_folder(root)
    assert scan.classes == ["a", "b"]
    assert _names(scan.splits["train"]) == [("1.png", "a"), ("2.png", "b"), ("inside.png", "a")]
    reasons = dict(scan.skipped)
    assert reasons[str(root / "a" / "link.png")] == "symlink outside dataset root"
    assert reasons[str(root / "c")] == "symlink outside dataset root"


def test_scan_rejects_a_file(tmp_path):
    f = tmp_path / "x.png"
    f.write_text("x")
    with pytest.raises(OculaError, match="not a folder"):
        scan_image_folder(f)


def test_manifest_relative_paths_and_splits(tmp_path):
    _img(tmp_path / "imgs" / "1.png")
    _img(tmp_path / "imgs" / "2.png")
    _img(tmp_path / "imgs" / "3.png")
    absolute = _img(tmp_path / "other" / "4.png")
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    csv = tmp_path / "meta" / "list.csv"
    csv.parent.mkdir()
    csv.write_text(
        "\ufeffPath,Label,Split\n"
        "../imgs/1.png,cat,train\n"
        "../imgs/2.png,dog,Validation\n"
        "../imgs/3.png,dog,\n"
        f"{absolute},cat,TEST\n"
        "../imgs/missing.png,cat,train\n"
        "../imgs/empty.png,cat,train\n"
        "\n"
        "../imgs/1.png,cat,train\n"
    )
    scan = read_manifest(csv)
    assert scan.classes == ["cat", "dog"]
    assert _names(scan.splits["train"]) == [("1.png", "cat"), ("3.png", "dog")]
    assert _names(scan.splits["val"]) == [("2.png", "dog")]
    assert scan.splits["test"] == [(str(absolute), "cat")]
    assert dict(scan.skipped) == {
        str(tmp_path / "imgs" / "missing.png"): "missing file",
        str(tmp_path / "imgs" / "empty.png"): "empty file",
    }
    assert any("duplicate" in w for w in scan.warnings)


def test_manifest_without_split_column_is_all_train(tmp_path):
    _img(tmp_path / "1.png")
    (tmp_path / "m.csv").write_text("path,label\n1.png,x\n")
    assert read_manifest(tmp_path / "m.csv").splits == {"train": [(str(tmp_path / "1.png"), "x")]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,kind\na.png,x\n", "need a header with columns path,label"),
        ("", "need a header with columns path,label"),
        ("path,label,split\na.png,x,trian\n", "unknown split 'trian' (did you mean: train?)"),
    ],
)
def test_manifest_errors_are_one_line(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(OculaError, match=re.escape(message)) as err:
        read_manifest(tmp_path / "m.csv")
    assert "\n" not in str(err.value)
