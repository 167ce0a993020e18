"""Nearest neighbours among embeddings: exact search with torch, or faiss HNSW for large galleries.

    index = build_index("runs/faces", "gallery/")        # embeds the folder (cached in RUN/index/)
    hits = similar("runs/faces", "query.jpg", index, k=5)  # [{"path", "label", "score"}, ...]

Vectors are unit length, so the score is the cosine similarity. Up to EXACT_LIMIT vectors (or when
faiss is not installed) search is an exact chunked matrix product; beyond it, faiss's HNSW graph
(`pip install faiss-cpu`, in the `transfer` extra) answers in sub-linear time.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ocula import bundle
from ocula.errors import OculaError
from ocula.transfer.embed import Embedder, Embeddings, embed_dataset

EXACT_LIMIT = 200_000  # vectors; exact torch search below this, faiss (if installed) above
BACKENDS = ("auto", "torch", "faiss")


class EmbeddingIndex:
    def __init__(self, embeddings: Embeddings, backend: str = "auto"):
        if backend not in BACKENDS:
            raise OculaError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
        if not len(embeddings):
            raise OculaError("cannot build an index from zero embeddings")
        self.embeddings = embeddings
        self.backend = self._choose(backend, len(embeddings))
        self._faiss = self._build_faiss() if self.backend == "faiss" else None

    @staticmethod
    def _choose(backend: str, n: int) -> str:
        if backend == "torch" or (backend == "auto" and n <= EXACT_LIMIT):
            return "torch"
        try:
            import faiss  # noqa: F401
        except ImportError:
            if backend == "faiss":
                raise OculaError("backend=faiss needs faiss: pip install faiss-cpu") from None
            return "torch"
        return "faiss"

    def _build_faiss(self):
        import faiss

        vectors = np.ascontiguousarray(self.embeddings.vectors, dtype=np.float32)
        index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        index.add(vectors)
        return index

    def __len__(self) -> int:
        return len(self.embeddings)

    def search(self, queries: np.ndarray, k: int = 5, exclude_self: bool = False):
        """(Q, D) unit vectors → (scores (Q, k), indices (Q, k)), best first. `exclude_self`: the queries
        are the index's own vectors in order, and each skips itself (leave-one-out)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.embeddings.vectors.shape[1]:
            raise OculaError(f"query dimension {queries.shape[1]} != index dimension "
                             f"{self.embeddings.vectors.shape[1]} (embedded by another model?)")
        want = min(k + int(exclude_self), len(self))
        if self._faiss is not None:
            scores, idx = self._faiss.search(queries, want)
        else:
            scores, idx = _exact_topk(queries, self.embeddings.vectors, want)
        if exclude_self:
            scores, idx = _drop_self(scores, idx, k)
        return scores, idx

    def hits(self, queries: np.ndarray, k: int = 5) -> list[list[dict]]:
        scores, idx = self.search(queries, k)
        e = self.embeddings
        return [[{"path": e.paths[j], "label": e.labels[j], "score": float(s)} for s, j in zip(row_s, row_i) if j >= 0]
                for row_s, row_i in zip(scores, idx)]


def _exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 1024):
    base = torch.from_numpy(np.ascontiguousarray(vectors))
    scores, idx = [], []
    for start in range(0, len(queries), chunk):
        sims = torch.from_numpy(queries[start:start + chunk]) @ base.T  # (q, N)
        s, i = sims.topk(k, dim=1)
        scores.append(s)
        idx.append(i)
    return torch.cat(scores).numpy(), torch.cat(idx).numpy()


def _drop_self(scores: np.ndarray, idx: np.ndarray, k: int):
    own = np.arange(len(idx))[:, None]
    keep = idx != own
    # each row keeps its first k entries that are not the query itself
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)


def precision_at_k(embeddings: Embeddings, k: int = 5, backend: str = "auto") -> float:
    """Leave-one-out: the mean fraction of each item's k nearest neighbours that share its label."""
    labels = np.asarray(embeddings.labels, dtype=object)
    if any(lab is None for lab in labels):
        raise OculaError("precision@k needs labelled embeddings")
    _, idx = EmbeddingIndex(embeddings, backend).search(embeddings.vectors, k, exclude_self=True)
    return float((labels[idx] == labels[:, None]).mean())


# --------------------------------------------------------------------------------- from files
def build_index(run, gallery, backend: str = "auto", cache: bool = True, batch_size: int = 64,
                embedder: Optional[Embedder] = None) -> EmbeddingIndex:
    """A folder (class sub-folders give labels) or a saved .npy/.parquet of embeddings → index.
    A folder's embeddings are cached in RUN/index/ and reused while its files and the model are unchanged."""
    p = Path(gallery)
    if p.is_file() and p.suffix in (".npy", ".parquet"):
        return EmbeddingIndex(Embeddings.load(p), backend)
    if not p.exists():
        raise OculaError(f"no such gallery folder or embeddings file: {gallery}")
    cached = _cache_path(run, p) if cache and not isinstance(run, Embedder) else None
    if cached is not None and cached.is_file():
        return EmbeddingIndex(Embeddings.load(cached), backend)
    emb = embed_dataset(embedder or run, str(p), batch_size=batch_size)
    if cached is not None:
        emb.save(cached)
    return EmbeddingIndex(emb, backend)


def _cache_path(run, folder: Path) -> Optional[Path]:
    if not Path(run).is_dir():
        return None
    weights = bundle.resolve_weights(run)
    h = hashlib.sha1(f"{folder.resolve()}|{weights.stat().st_mtime_ns}".encode("utf-8", "surrogateescape"))
    for f in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(folder) if folder.is_dir() else f}|{st.st_size}|{st.st_mtime_ns}"
                     .encode("utf-8", "surrogateescape"))  # a filename need not be valid UTF-8
    return Path(run) / "index" / f"{folder.name or 'gallery'}-{h.hexdigest()[:12]}.npy"


def similar(run, queries, index, k: int = 5, device: str = "auto") -> list[dict]:
    """Query images (paths, PIL, arrays) → [{"query", "hits": [{"path", "label", "score"}]}]."""
    embedder = run if isinstance(run, Embedder) else Embedder.load(run, device)
    if not isinstance(index, EmbeddingIndex):
        index = build_index(run if not isinstance(run, Embedder) else embedder, index, embedder=embedder)
    items = list(queries) if isinstance(queries, (list, tuple)) else [queries]
    vectors = embedder.embed(items)
    return [{"query": str(q), "hits": h} for q, h in zip(items, index.hits(vectors, k))]
