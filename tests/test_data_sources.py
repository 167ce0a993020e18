"""stratified_split, built-in datasets (IDX, download, registry) and resolve_data."""
from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error
import urllib.request
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from ocula.data import builtin
from ocula.data.builtin import (
    FASHION_CLASSES, find_fashion_mnist, list_builtin, load_builtin, read_idx, register_builtin,
)
from ocula.data.samples import DatasetSplits, FileSamples, TensorSamples
from ocula.modality.sources import resolve_data
from ocula.data.split import stratified_split
from ocula.errors import OculaError


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)
    return path


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape
    ) + arr.astype(np.uint8).tobytes()


@pytest.fixture
def no_fashion_anywhere(tmp_path, monkeypatch):
    """Point every Fashion-MNIST location at empty folders."""
    monkeypatch.setenv("OCULA_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OCULA_OFFLINE", raising=False)
    monkeypatch.setattr(builtin, "SYSTEM_DIRS", [tmp_path / "system"])
    return tmp_path


# ------------------------------------------------------------------------------------- split

def test_stratified_split_is_deterministic_and_proportional():
    labels = [0] * 50 + [1] * 30 + [2] * 20 + [3] * 2 + [4]
    train, val = stratified_split(labels, 0.2, seed=7)
    assert (train, val) == stratified_split(labels, 0.2, seed=7)
    assert val != stratified_split(labels, 0.2, seed=8)[1]
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    per_class = Counter(labels[i] for i in val)
    assert per_class == {0: 10, 1: 6, 2: 4, 3: 1}  # one-sample class 4 stays in train


def test_stratified_split_keeps_one_val_per_class_and_zero_means_none():
    _, val = stratified_split([0, 0, 0, 1, 1, 1], 0.01, seed=0)
    assert Counter([0, 0, 0, 1, 1, 1][i] for i in val) == {0: 1, 1: 1}
    assert stratified_split([0, 1, 1], 0.0, seed=0) == ([0, 1, 2], [])
    with pytest.raises(OculaError):
        stratified_split([0, 1], 1.0, seed=0)


# ---------------------------------------------------------------------------------- builtins

def test_read_idx_raw_and_gzip_and_bad_magic(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "raw").write_bytes(_idx_bytes(arr))
    (tmp_path / "gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    assert np.array_equal(read_idx(tmp_path / "raw", ndim=3), arr)
    assert np.array_equal(read_idx(tmp_path / "gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(OculaError, match="bad magic number"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(arr)[:-5])
    with pytest.raises(OculaError, match="truncated"):
        read_idx(tmp_path / "short")


@pytest.fixture(scope="module")
def fashion():
    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return resolve_data("FMNIST", val_fraction=0.1, seed=0)


def test_fashion_mnist_loads_with_a_stratified_val_split(fashion):
    assert fashion.classes == FASHION_CLASSES and fashion.source == "fashion-mnist"
    assert fashion.train.images.shape == (54_000, 1, 28, 28)
    assert fashion.train.images.dtype == torch.uint8
    assert len(fashion.val) == 6_000 and len(fashion.test) == 10_000  # official test untouched
    assert fashion.test.names[17] == "fashion-mnist/test/17"
    assert torch.bincount(fashion.val.labels).tolist() == [600] * 10
    assert (fashion.channels, fashion.image_size, fashion.mean, fashion.std) == (
        1, 28, (0.2860,), (0.3530,))
    info = fashion.split_info
    assert info["val_from"] == "stratified" and len(info["val_indices"]) == 6_000
    assert info["counts"] == {"train": 54_000, "val": 6_000, "test": 10_000}


def test_digits_loads():
    data = resolve_data("Digits", val_fraction=0)
    assert data.classes == [str(d) for d in range(10)]
    assert isinstance(data.train, TensorSamples) and data.val is None
    assert len(data.train) + len(data.test) == 1797
    assert data.train.images.shape[1:] == (1, 8, 8) and int(data.train.images.max()) == 255
    assert data.split_info["test_from"] == "stratified" and data.split_info["val_from"] == "none"
    assert 0.2 < data.mean[0] < 0.4 and data.image_size == 8


def test_offline_download_gives_one_line_help(no_fashion_anywhere, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(OculaError) as err:
        load_builtin("fashion-mnist")
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "OCULA_DATA" in msg and "no network" in msg
    assert not list((no_fashion_anywhere / "cache").rglob("*.part"))  # no half-written files


def test_download_verifies_md5_and_writes_atomically(no_fashion_anywhere, monkeypatch):
    parts = {
        "train-images-idx3-ubyte.gz": np.full((4, 28, 28), 9),
        "train-labels-idx1-ubyte.gz": np.array([0, 1, 2, 3]),
        "t10k-images-idx3-ubyte.gz": np.zeros((2, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.array([4, 5]),
    }
    blobs = {name: gzip.compress(_idx_bytes(a)) for name, a in parts.items()}
    md5s = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    monkeypatch.setattr(builtin, "FASHION_MD5", md5s)
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: io.BytesIO(blobs[url.rsplit("/", 1)[1]]))
    data = load_builtin("fashion_mnist")
    assert data.train.images.shape == (4, 1, 28, 28) and data.test.labels.tolist() == [4, 5]
    cache = no_fashion_anywhere / "cache" / "ocula" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(blobs)

    # A corrupted download is refused and leaves nothing behind.
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    blobs["t10k-labels-idx1-ubyte.gz"] = b"garbage"
    with pytest.raises(OculaError, match="checksum mismatch"):
        load_builtin("fashion-mnist")
    left = {p.name for p in cache.iterdir()}
    assert left == set(blobs) - {"t10k-labels-idx1-ubyte.gz"}  # no .part file either


def test_registry_and_unknown_names(tmp_path, monkeypatch):
    def tiny():
        images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
        train = TensorSamples(images, torch.tensor([0, 1, 0, 1]))
        return DatasetSplits(classes=["a", "b"], train=train, source="tiny")

    monkeypatch.setattr(builtin, "_REGISTRY", dict(builtin._REGISTRY))
    monkeypatch.setattr(builtin, "_ALIASES", dict(builtin._ALIASES))
    register_builtin("tiny-set", tiny, aliases=("tiny",))
    assert "tiny-set" in list_builtin() and "fashion-mnist" in list_builtin()
    data = resolve_data("TINY", val_fraction=0.5)
    assert len(data.train) == 2 and len(data.val) == 2
    with pytest.raises(OculaError, match=r"unknown dataset 'digitz' \(did you mean: digits\?\)"):
        load_builtin("digitz")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OculaError, match=r"no such dataset or folder: fashon-mnist \(did you mean"):
        resolve_data("fashon-mnist")


# ----------------------------------------------------------------------------- resolve_data

def test_folder_gets_seeded_stratified_val(tmp_path):
    for cls, n in (("cat", 10), ("dog", 5)):
        for i in range(n):
            _img(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "zero.png").write_bytes(b"")
    data = resolve_data(tmp_path, val_fraction=0.2, seed=3)
    assert isinstance(data.train, FileSamples) and data.classes == ["cat", "dog"]
    assert Counter(data.val.labels) == {0: 2, 1: 1} and len(data.train) == 12
    info = data.split_info
    assert info["source"] == str(tmp_path) and info["val_from"] == "stratified"
    assert info["val_paths"] == data.val.paths and info["seed"] == 3
    assert info["counts"] == {"train": 12, "val": 3}
    assert data.skipped == [(str(tmp_path / "dog" / "zero.png"), "empty file")]
    assert data.channels is None and data.mean is None
    assert resolve_data(tmp_path, val_fraction=0.2, seed=3).val.paths == data.val.paths


def test_folder_val_split_is_used_as_is(tmp_path):
    _img(tmp_path / "train" / "a" / "1.png")
    _img(tmp_path / "train" / "b" / "2.png")
    _img(tmp_path / "Validation" / "b" / "3.png")
    _img(tmp_path / "test" / "a" / "4.png")
    data = resolve_data(str(tmp_path))
    assert data.split_info["val_from"] == "folder" and "val_paths" not in data.split_info
    assert data.val.labels == [1] and data.test.labels == [0]


def test_csv_manifest_source(tmp_path):
    for i in range(4):
        _img(tmp_path / f"{i}.png")
    (tmp_path / "m.CSV").write_text("path,label\n0.png,x\n1.png,y\n2.png,x\n3.png,y\n")
    data = resolve_data(tmp_path / "m.CSV", val_fraction=0.5)
    assert data.classes == ["x", "y"] and sorted(data.val.labels) == [0, 1]


def test_source_errors(tmp_path):
    _img(tmp_path / "one" / "cats" / "1.png")
    with pytest.raises(OculaError, match=r"only one class \('cats'\) in .*: need at least two"):
        resolve_data(tmp_path / "one")
    assert resolve_data(tmp_path / "one", require_train=False).classes == ["cats"]
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(OculaError, match="no images found in"):
        resolve_data(tmp_path / "empty")
    with pytest.raises(OculaError, match="no such dataset or folder"):
        resolve_data(tmp_path / "nothing-here")
    _img(tmp_path / "onlytest" / "test" / "a" / "1.png")
    with pytest.raises(OculaError, match="no training images"):
        resolve_data(tmp_path / "onlytest")
    assert resolve_data(tmp_path / "onlytest", require_train=False).test.labels == [0]
