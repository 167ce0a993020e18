"""Embeddings: a trained model's penultimate features, L2-normalised, for images or whole datasets.

    emb = embed_dataset("runs/faces", "photos/", out="emb.parquet")   # or .npy (+ .json sidecar)
    emb.vectors        # (N, D) float32, unit length: cosine similarity is a dot product
    emb.paths, emb.labels, emb.splits

The features are `forward_head(forward_features(x), pre_logits=True)`: what the classifier sees,
for every family (timm's surface). Preprocessing comes from the model's bundle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ocula.errors import BadImageError, OculaError
from ocula.inference.predictor import Classifier
from ocula.inference.scoring import split_batches
from ocula.io import atomic_path, write_json
from ocula.log import progress
from ocula.modality.sources import resolve_data
from ocula.names import clean

SPLITS = ("train", "val", "test")


@dataclass
class Embeddings:
    vectors: np.ndarray  # (N, D) float32, unit L2 norm
    paths: list  # file path, or a built-in's sample id ("digits/17")
    labels: list  # class name, or None when unlabelled
    splits: list = field(default_factory=list)
    model: str = ""
    skipped: list = field(default_factory=list)  # [(path, reason)] of unreadable files

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep) -> "Embeddings":
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Embeddings(self.vectors[idx], [self.paths[i] for i in idx], [self.labels[i] for i in idx],
                          [self.splits[i] for i in idx] if self.splits else [], self.model)

    def save(self, path) -> str:
        """`.npy` (+ `.json` sidecar with paths and labels) or `.parquet` (one row per image)."""
        path = Path(path)
        if path.suffix == ".npy":
            return self._save_npy(path)
        if path.suffix == ".parquet":
            return self._save_parquet(path)
        raise OculaError(f"{path}: write embeddings as .npy or .parquet")

    def _save_npy(self, path: Path) -> str:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.vectors.astype(np.float32))
        write_json(path.with_suffix(".json"), {"model": self.model, "dim": int(self.vectors.shape[1]),
                                               "count": len(self), "paths": self.paths, "labels": self.labels,
                                               "splits": self.splits}, exact_names=True)
        return str(path)

    def _save_parquet(self, path: Path) -> str:
        pa, pq = _pyarrow()

        dim = int(self.vectors.shape[1])
        flat = pa.array(self.vectors.astype(np.float32).reshape(-1))

        table = pa.table({"path": clean(list(self.paths)), "label": clean(list(self.labels)), "split": self.splits or [None] * len(self),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
        table = table.replace_schema_metadata({"ocula": json.dumps({"model": self.model, "dim": dim})})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return str(path)

    @classmethod
    def load(cls, path) -> "Embeddings":
        path = Path(path)
        if not path.is_file():
            raise OculaError(f"no such embeddings file: {path}")
        if path.suffix == ".parquet":
            _, pq = _pyarrow()
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(b"ocula", b"{}"))
            vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
            cols = table.to_pydict()
            return cls(vectors, cols["path"], cols["label"], cols.get("split") or [], meta.get("model", ""))
        if path.suffix == ".npy":
            side = path.with_suffix(".json")
            if not side.is_file():
                raise OculaError(f"{path}: the sidecar {side.name} with paths and labels is missing")
            meta = json.loads(side.read_text())
            return cls(np.load(path).astype(np.float32), meta["paths"], meta["labels"], meta.get("splits", []),
                       meta.get("model", ""))
        raise OculaError(f"{path}: embeddings are read from .npy (+ .json) or .parquet")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise OculaError("Parquet needs pyarrow: pip install 'ocula[transfer]' (or write .npy)") from None
    return pa, pq


class Embedder(Classifier):
    """A saved model used for its features: `Embedder.load(run).embed(["a.jpg", "b.jpg"])`."""

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch (B, C, H, W) → unit-length embeddings (B, D) on the CPU."""
        z = self.model.forward_head(self.model.forward_features(x.to(self.device)), pre_logits=True)
        return F.normalize(z.float().flatten(1), dim=1).cpu()

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    def embed(self, images, batch_size: int = 64) -> np.ndarray:
        """Paths, PIL images or arrays → (N, D); an unreadable image raises a one-line OculaError."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        out = []
        for start in range(0, len(items), batch_size):
            chunk = []
            for obj in items[start:start + batch_size]:
                try:
                    chunk.append(self.preprocess(obj))
                except BadImageError as e:
                    raise OculaError(str(e)) from None
            out.append(self.features(torch.stack(chunk)))
        return torch.cat(out).numpy()

    def embed_samples(self, samples, batch_size: int = 64, workers: Optional[int] = None, desc: str = "embed"):
        """FileSamples or TensorSamples → (vectors (N', D), kept indices, [(path, reason)] skipped)."""
        vectors, kept, skipped = [], [], []
        with progress(total=len(samples), desc=desc, unit="img", leave=False) as bar:
            for batch in self._loader(samples, batch_size, workers):
                if len(batch) == 4:
                    skipped += batch[3]
                if batch[0] is not None:
                    vectors.append(self.features(batch[0]))
                    kept.append(batch[2])
                bar.update((0 if batch[0] is None else len(batch[0])) + (len(batch[3]) if len(batch) == 4 else 0))
        if not vectors:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), skipped
        return torch.cat(vectors).numpy(), torch.cat(kept).numpy(), skipped

    def _loader(self, samples, batch_size: int, workers: Optional[int]):
        return split_batches(self, samples, batch_size, workers)


def embed_dataset(run, data: str, out: Optional[str] = None, split: Optional[str] = None,
                  batch_size: int = 64, workers: Optional[int] = None, device: str = "auto") -> Embeddings:
    """Embed every image of a folder, CSV manifest or built-in dataset (all splits, or `split`)."""
    embedder = run if isinstance(run, Embedder) else Embedder.load(run, device)
    data_splits = resolve_data(data, val_fraction=0.0, seed=0, require_train=False)
    names = [split] if split else [s for s in SPLITS if getattr(data_splits, s) is not None]
    parts, skipped = [], list(data_splits.skipped)
    for name in names:
        samples = data_splits.split(name)
        vectors, kept, bad = embedder.embed_samples(samples, batch_size, workers, desc=f"embed {name}")
        skipped += bad
        ids = _sample_ids(samples, data_splits.source, name)
        labels = [_label(data_splits.classes, int(samples.labels[i])) for i in kept]
        parts.append(Embeddings(vectors, [ids[i] for i in kept], labels, [name] * len(kept)))
    emb = Embeddings(np.concatenate([p.vectors for p in parts]), sum((p.paths for p in parts), []),
                     sum((p.labels for p in parts), []), sum((p.splits for p in parts), []),
                     embedder.name if isinstance(run, Embedder) else str(run), skipped)
    if not len(emb):
        raise OculaError(f"{data}: no readable images to embed")
    if out:
        emb.save(out)
    return emb


def _sample_ids(samples, source: str, split: str) -> list:
    if hasattr(samples, "paths"):
        return list(samples.paths)
    return list(samples.names) if samples.names else [f"{source}/{split}/{i}" for i in range(len(samples))]


def _label(classes: list, index: int) -> Optional[str]:
    return classes[index] if 0 <= index < len(classes) else None
