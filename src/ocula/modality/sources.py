"""One entry point from a data spec (built-in name, folder, or .csv manifest) to DatasetSplits.

The same validation rule holds for every source: a val split that the source has is used as is
(`val_from: "folder"`); otherwise a stratified, seeded `val_fraction` of train becomes val
(`val_from: "stratified"`), and what went there is recorded in `split_info` so a run can be
reproduced. Test splits are never touched.
"""
from __future__ import annotations

import os
from typing import Optional

from ocula.data.builtin import builtin_names_and_aliases, canonical_builtin, load_builtin
from ocula.data.detection import detection_layout, read_detection
from ocula.data.folders import FolderScan
from ocula.data.manifest import has_metadata_file, label_names, read_manifest, read_metadata_folder
from ocula.data.samples import (DatasetSplits, FileSamples, TensorSamples, as_multilabel, box_strata, is_multilabel,
                                pad_boxes)
from ocula.data.split import iterative_split, stratified_split
from ocula.errors import OculaError, did_you_mean
from ocula.modality import Modality, for_folder, for_manifest
from ocula.modality.video import moving_shapes  # noqa: F401  (registers the built-in clip dataset 'moving-shapes')

SPLITS = ("train", "val", "test")


def resolve_data(
    spec, *, val_fraction: float = 0.1, seed: int = 0, require_train: bool = True,
    modality: Optional[Modality] = None, task: str = "auto",
) -> DatasetSplits:
    """Resolve `spec` to splits with labels indexing the sorted class list.

    An existing path wins over a built-in name of the same spelling (with a warning).
    `require_train=False` (evaluation) accepts sources with only a test or val split and a
    single class. Each modality says whether a folder holds its samples: a folder of video files is
    read as clips whatever the model; `modality` (the model's) may claim more, e.g. the video modality
    reads class folders of frame folders (root/<class>/<clip>/*.jpg) as clips rather than as images.
    `task`: "multilabel" reads one label per sample as a set of one (multi-hot labels); "single-label"
    refuses label sets; "auto" takes what the data holds (`DatasetSplits.multilabel`).
    """
    spec_str = os.fspath(spec) if isinstance(spec, os.PathLike) else str(spec)
    path = os.path.abspath(os.path.expanduser(spec_str))
    if os.path.exists(path):
        data = _from_path(path, modality)
        if canonical_builtin(spec_str):
            data.warnings.append(
                f"'{spec_str}' is a path here; using it rather than the built-in dataset"
            )
    elif canonical_builtin(spec_str):
        data = load_builtin(spec_str)
        data.split_info.setdefault("source", data.source)
    else:
        hint = did_you_mean(spec_str.lower(), builtin_names_and_aliases())
        raise OculaError(f"no such dataset or folder: {spec_str}{hint}")
    _apply_task(data, task)
    _check_usable(data, require_train)
    _add_val_split(data, val_fraction, seed)
    data.split_info["counts"] = {s: len(getattr(data, s)) for s in SPLITS if getattr(data, s)}
    return data


def _from_path(path: str, preferred: Optional[Modality] = None) -> DatasetSplits:
    if detection_layout(path):  # COCO JSON or a YOLO data.yaml: labels are boxes
        return _from_detection(path)
    if os.path.isdir(path) and has_metadata_file(path):  # a Hugging Face imagefolder with metadata.csv/jsonl
        scan = read_metadata_folder(path)
        found = for_manifest(scan)
    elif os.path.isdir(path):
        found = for_folder(path, preferred)
        scan = found.scan_folder(path)
    elif path.lower().endswith((".csv", ".jsonl")):
        scan = read_manifest(path)
        found = for_manifest(scan)
    else:
        raise OculaError(f"{path} is a file: give a folder of class folders, a .csv or a .jsonl manifest")
    data = _splits_from_scan(scan, path)
    data.modality = found.name
    return data


def _from_detection(path: str) -> DatasetSplits:
    """Boxes: each image's label is (M, 5) (class, x1, y1, x2, y2 in [0, 1]), padded with class −1 rows to the
    most boxes any image holds, so that a batch of labels is one tensor."""
    found = read_detection(path)
    data = DatasetSplits(classes=list(found.classes), source=path, boxes=True,
                         split_info={"source": path, "layout": found.layout}, skipped=list(found.problems))
    most = max([len(b) for _, labels in found.splits.values() for b in labels] + [1])
    for split, (paths, labels) in found.splits.items():
        if paths:
            setattr(data, split, FileSamples(list(paths), [pad_boxes(b, most) for b in labels]))
    data.split_info["sizes"] = {split: [list(wh) for wh in sizes] for split, sizes in found.sizes.items()}
    return data


def _splits_from_scan(scan: FolderScan, source: str) -> DatasetSplits:
    index = {name: i for i, name in enumerate(scan.classes)}
    data = DatasetSplits(
        classes=list(scan.classes), source=source, split_info={"source": source},
        skipped=list(scan.skipped), warnings=list(scan.warnings),
    )
    # multi-label when a row names several classes or none (a `labels` column); labels are then multi-hot
    data.multilabel = any(isinstance(label, tuple) and len(label) != 1 for items in scan.splits.values()
                          for _, label in items)
    for split, items in scan.splits.items():
        if items:
            labels = ([_multi_hot(label, index) for _, label in items] if data.multilabel
                      else [index[label_names(label)[0]] for _, label in items])
            setattr(data, split, FileSamples([p for p, _ in items], labels))
    train_classes = {name for _, label in scan.splits.get("train", []) for name in label_names(label)}
    for split in ("val", "test"):
        extra = sorted({n for _, label in scan.splits.get(split, []) for n in label_names(label)} - train_classes)
        if extra and train_classes:
            data.warnings.append(f"classes in {split} but not in train: {', '.join(extra)}")
    return data


def _apply_task(data: DatasetSplits, task: str) -> None:
    if task == "single-label" and data.multilabel:
        raise OculaError(f"{data.source}: some rows have several labels (or none); train with --task multilabel")
    if task == "multilabel" and not data.multilabel:
        for split in SPLITS:
            setattr(data, split, as_multilabel(getattr(data, split), len(data.classes)))
        data.multilabel = True


def _multi_hot(label, index: dict) -> tuple:
    hot = [0] * len(index)
    for name in label_names(label):
        hot[index[name]] = 1
    return tuple(hot)


def _check_usable(data: DatasetSplits, require_train: bool) -> None:
    have = [s for s in SPLITS if getattr(data, s) is not None and len(getattr(data, s))]
    if not have:
        skipped = f" ({len(data.skipped)} files skipped)" if data.skipped else ""
        raise OculaError(f"no images found in {data.source}{skipped}")
    if not require_train:
        return
    if "train" not in have:
        raise OculaError(f"no training images in {data.source} (found only: {', '.join(have)})")
    if len(data.classes) < 2:
        only = data.classes[0] if data.classes else "?"
        raise OculaError(f"only one class ('{only}') in {data.source}: need at least two")


def _add_val_split(data: DatasetSplits, val_fraction: float, seed: int) -> None:
    info = data.split_info
    info.update(val_fraction=val_fraction, seed=seed)
    if data.val is not None:
        info["val_from"] = "folder" if isinstance(data.val, FileSamples) else "official"
        return
    if data.train is None or val_fraction == 0:
        info["val_from"] = "none"
        return
    if is_multilabel(data.train):  # iterative stratification keeps every label's share (Sechidis et al. 2011)
        train_idx, val_idx = iterative_split(_labels(data.train), val_fraction, seed)
    elif data.boxes:  # stratified by each image's most frequent class (images with no box: a class of their own)
        train_idx, val_idx = stratified_split(box_strata(data.train.labels, len(data.classes)), val_fraction, seed)
    else:
        train_idx, val_idx = stratified_split(_labels(data.train), val_fraction, seed)
    if not val_idx:
        info["val_from"] = "none"
        data.warnings.append("too few images per class to carve a validation split from train")
        return
    whole = data.train
    data.train, data.val = whole.subset(train_idx), whole.subset(val_idx)
    info["val_from"] = "stratified"
    if isinstance(whole, FileSamples):
        info["val_paths"] = list(data.val.paths)
    else:
        info["val_indices"] = list(val_idx)


def _labels(samples) -> list[int]:
    if isinstance(samples, TensorSamples):
        return samples.labels.tolist()
    return list(samples.labels)


def describe(data: DatasetSplits) -> str:
    """One line for logs: 'fashion-mnist: 10 classes, train 54000, val 6000, test 10000'."""
    counts = ", ".join(f"{s} {len(getattr(data, s))}" for s in SPLITS if getattr(data, s))
    extra: Optional[str] = f", {len(data.skipped)} skipped" if data.skipped else ""
    kind = " (multi-label)" if data.multilabel else " (boxes)" if data.boxes else ""
    return f"{data.source}: {len(data.classes)} classes{kind}, {counts}{extra}"
