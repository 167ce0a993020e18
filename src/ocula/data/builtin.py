"""Built-in datasets, held in memory as uint8 tensors: fashion-mnist and digits.

Others register with `register_builtin(name, loader)`; a loader takes no arguments and returns
`DatasetSplits` with the dataset's official splits (no validation split: `resolve_data` carves
one from train, the same way for every source).

Fashion-MNIST is looked for, in order, in $OCULA_DATA/fashion-mnist, $OCULA_DATA, the user cache
(~/.cache/ocula/fashion-mnist, or $XDG_CACHE_HOME/ocula/fashion-mnist) and
/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist package). When it is nowhere,
it is downloaded into the user cache with MD5 checks, unless OCULA_OFFLINE=1.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ocula.data.samples import DatasetSplits, TensorSamples
from ocula.data.split import stratified_split
from ocula.errors import OculaError, unknown


@dataclass
class BuiltinDataset:
    name: str
    loader: Callable[[], DatasetSplits]
    aliases: tuple = ()
    description: str = ""


_REGISTRY: dict[str, BuiltinDataset] = {}
_ALIASES: dict[str, str] = {}  # lower-cased name or alias -> canonical name


def register_builtin(name: str, loader: Callable[[], DatasetSplits], aliases=(), description=""):
    """Make `load_builtin(name)` (and every alias, any case) call `loader()`."""
    _REGISTRY[name] = BuiltinDataset(name, loader, tuple(aliases), description)
    for key in (name, *aliases):
        _ALIASES[key.lower()] = name
    return loader


def list_builtin() -> list[str]:
    return sorted(_REGISTRY)


def builtin_names_and_aliases() -> list[str]:
    """Every spelling `load_builtin` accepts, for did-you-mean messages."""
    return sorted(set(_REGISTRY) | set(_ALIASES))


def canonical_builtin(name: str) -> Optional[str]:
    """The registered name for `name` (any case, aliases included), or None."""
    return _ALIASES.get(str(name).lower())


def load_builtin(name: str) -> DatasetSplits:
    canonical = canonical_builtin(name)
    if canonical is None:
        raise unknown("dataset", name, builtin_names_and_aliases())
    return _REGISTRY[canonical].loader()


# ---------------------------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path, ndim: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (raw or gzip) as a writable numpy array; OculaError if it is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            data = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise OculaError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise OculaError(f"{path}: not an IDX file (bad magic number)")
    dims_n = data[3]
    if ndim is not None and dims_n != ndim:
        raise OculaError(f"{path}: expected {ndim} dimensions, the file has {dims_n}")
    header = 4 + 4 * dims_n
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims_n))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) != header + int(np.prod(shape)) * dtype.itemsize:
        raise OculaError(f"{path}: IDX size does not match its header {shape} (truncated?)")
    # bytearray: a writable buffer, so torch.from_numpy does not warn or copy later.
    return np.frombuffer(bytearray(data[header:]), dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------- Fashion-MNIST

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_FILES = {  # part -> file stem; files may be gzipped (stem + ".gz") or raw
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MD5 = {  # of the official .gz files
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ocula"


def fashion_mnist_dirs() -> list[Path]:
    """Where Fashion-MNIST is looked for, first match wins."""
    dirs = []
    if os.environ.get("OCULA_DATA"):
        data = Path(os.environ["OCULA_DATA"]).expanduser()
        dirs += [data / "fashion-mnist", data]
    return dirs + [user_cache_dir() / "fashion-mnist", *SYSTEM_DIRS]


def _fashion_files_in(folder: Path) -> Optional[dict[str, Path]]:
    found = {}
    for part, stem in FASHION_FILES.items():
        match = next((folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()), None)
        if match is None:
            return None
        found[part] = match
    return found


def find_fashion_mnist() -> Optional[dict[str, Path]]:
    for folder in fashion_mnist_dirs():
        files = _fashion_files_in(folder)
        if files:
            return files
    return None


def download_fashion_mnist(dest: Optional[Path] = None, timeout: float = 60.0) -> dict[str, Path]:
    """Fetch the four official .gz files into `dest` (the user cache), MD5-checked, atomically."""
    dest = Path(dest) if dest else user_cache_dir() / "fashion-mnist"
    for name, md5 in FASHION_MD5.items():
        target = dest / name
        if not target.is_file():
            _download(FASHION_URL + name, target, md5, timeout)
    files = _fashion_files_in(dest)
    assert files is not None  # all four were just written
    return files


def _download(url: str, target: Path, md5: str, timeout: float) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so the final rename is atomic: a crash leaves no half file.
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise OculaError(
                f"checksum mismatch for {target.name} from {url} (got {digest.hexdigest()}, "
                f"expected {md5}): the download is corrupt, try again"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fashion_unavailable(reason: str) -> OculaError:
    cache = user_cache_dir() / "fashion-mnist"
    return OculaError(
        f"fashion-mnist not found and not downloadable ({reason}): put the four IDX files "
        f"(train-images-idx3-ubyte.gz, ...) in {cache} or in $OCULA_DATA/fashion-mnist, "
        f"or run 'apt-get install dataset-fashion-mnist'"
    )


def _locate_or_download_fashion() -> dict[str, Path]:
    files = find_fashion_mnist()
    if files:
        return files
    if os.environ.get("OCULA_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise _fashion_unavailable("OCULA_OFFLINE is set")
    try:
        return download_fashion_mnist()
    except OculaError:
        raise
    except Exception as e:  # noqa: BLE001 - URLError, timeouts, HTTP errors, a read-only cache
        raise _fashion_unavailable(f"{type(e).__name__}: {e}") from None


def load_fashion_mnist() -> DatasetSplits:
    files = _locate_or_download_fashion()
    splits = {}
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], ndim=3)  # (N, 28, 28) uint8
        labels = read_idx(files[f"{split}_labels"], ndim=1)  # (N,) uint8
        if len(images) != len(labels) or images.dtype != np.uint8:
            raise OculaError(f"{files[f'{split}_images']}: images and labels do not match")
        names = [f"fashion-mnist/{split}/{i}" for i in range(len(labels))]
        splits[split] = TensorSamples(
            torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), names
        )
    return DatasetSplits(
        classes=list(FASHION_CLASSES), train=splits["train"], test=splits["test"],
        source="fashion-mnist", channels=1, image_size=28, mean=(0.2860,), std=(0.3530,),
        split_info={"test_from": "official", "files": str(files["train_images"].parent)},
    )


# ------------------------------------------------------------------------------------ digits

DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0


def load_digits() -> DatasetSplits:
    """scikit-learn's 8x8 digits (values 0..16 scaled to 0..255), split 80/20 stratified, seed 0."""
    from sklearn.datasets import load_digits as sklearn_digits  # heavy import, only when used

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 8, 8)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels.tolist(), DIGITS_TEST_FRACTION, DIGITS_SEED)
    whole = TensorSamples(
        torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels),
        [f"digits/{i}" for i in range(len(labels))],
    )
    train = whole.subset(train_idx)
    pixels = train.images.float() / 255.0
    return DatasetSplits(
        classes=[str(d) for d in range(10)], train=train, test=whole.subset(test_idx),
        source="digits", channels=1, image_size=8,
        mean=(round(pixels.mean().item(), 4),), std=(round(pixels.std().item(), 4),),
        split_info={"test_from": "stratified", "test_fraction": DIGITS_TEST_FRACTION,
                    "test_seed": DIGITS_SEED},
    )


register_builtin("fashion-mnist", load_fashion_mnist, aliases=("fmnist", "fashion_mnist"),
                 description="Zalando Fashion-MNIST: 70k 28x28 grey clothing images, 10 classes")
register_builtin("digits", load_digits,
                 description="scikit-learn digits: 1,797 8x8 grey handwritten digits, 10 classes")


def export_builtin(name: str, out, split: str = "test", limit: Optional[int] = None) -> int:
    """Write a built-in split as PNGs in class folders (for demos, and to try predict on real files)."""
    from PIL import Image

    data = load_builtin(name)
    samples = data.split(split)
    n = len(samples) if limit is None else min(limit, len(samples))
    for i in range(n):
        label = data.classes[int(samples.labels[i])]
        folder = Path(out) / label.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(samples.images[i, 0].numpy()).save(folder / f"{split}_{i:05d}.png")
    return n
