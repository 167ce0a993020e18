"""Batch prediction on Ray Data: `ocula predict RUN DATA --engine ray --out preds.parquet`.

    read_binary_files ─► decode (Ray tasks) ─► predict (an actor pool: one model per actor) ─► write_parquet

The inputs are listed by the model's modality (`expand_inputs`, the skip rules of local predict), their
bytes decoded by the bundle's own preprocessing (`Predictor.preprocess`) and the rows predicted by
`Predictor.predict_batch`: the code local predict runs, so a file gets the same answer either way.

The pool grows to at most every CPU but one (`concurrency=(1, n)`): actors that hold every CPU leave the
read and decode tasks none and the pipeline hangs (ray-project/ray#44687). Ray's `write_parquet` adds
files to an existing folder, so an existing `out` is refused rather than mixed with an older run's rows.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from ocula import bundle
from ocula.errors import BadImageError, OculaError
from ocula.inference.predictor import Classifier, Prediction, Predictor
from ocula.log import logger

# One row per input file; a skipped file has only path, model and error.
COLUMNS = {"path": "string", "label": "string", "prob": "float64", "topk_labels": "list<string>",
           "topk_probs": "list<float64>", "labels": "list<string>", "label_probs": "list<float64>",
           "boxes": "string", "abstained": "bool", "model": "string", "error": "string"}

# A read-and-decode task's share of a CPU. Not 1, which would let Ray fuse decoding into the model actors
# (same resources), so one core would decode and predict in turn; two decode tasks share the core the
# actors leave free, and decoding overlaps with the model as in local predict's DataLoader workers.
READ_CPUS = 0.5
# Files per read task, in batches: Ray's default reads 3,000 small files in 4 tasks, so the model waits for
# the first 750 to be read and decoded before its first batch.
FILES_PER_BATCH_READ = 4


@dataclass
class ModelSource:
    """What each actor loads: a PyTorch bundle (path) or `load(threads) → Predictor` (an ONNX export), and
    how it predicts. Pickled to the actors, so it holds paths and settings, never a model."""
    model: Union[str, Callable[[int], Predictor]]
    device: str = "cpu"
    compile: bool = False
    tta: bool = False
    min_confidence: Optional[float] = None
    box_threshold: Optional[float] = None

    def load(self, threads: int) -> Predictor:
        if callable(self.model):
            clf = self.model(threads)
        else:
            torch.set_num_threads(threads)
            clf = Classifier.load(self.model, self.device)
            if self.compile:
                clf.compile()
        return clf.configured(tta=self.tta, min_confidence=self.min_confidence, box_threshold=self.box_threshold)

    def describe(self) -> tuple[dict, str]:
        """→ (the bundle's metadata, the model's id: its file's name and the first 12 hex digits of its SHA-256)."""
        if callable(self.model):
            clf = self.model(1)
            meta, path = clf.meta, Path(clf.path)
        else:
            path = bundle.resolve_weights(self.model)
            meta = bundle.read_meta(path)
        name = path.parent.parent.name if path.parent.name == "weights" else path.name  # a run: its folder's name
        return meta, f"{name}@{_sha256(path)[:12]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Decode:
    """Ray Data batch function (run as tasks): file bytes → the model's input sample per row, with each
    file's error ("" when read; a skipped file gets a zero sample, not used) and its (width, height) for
    boxes in its pixels."""

    def __init__(self, meta: dict):
        self.reader = Predictor.from_meta(meta)
        self.shape = tuple(self.reader.preprocess(np.zeros((8, 8, 3), np.uint8)).shape)

    def __call__(self, batch: dict) -> dict:
        xs, errors, sizes = [], [], []
        for data in batch["bytes"]:
            try:
                xs.append(self.reader.preprocess(bytes(data)).numpy())
                errors.append("")
            except BadImageError as e:
                xs.append(np.zeros(self.shape, np.float32))
                errors.append(e.reason)
                sizes.append((-1, -1))
                continue
            found = self.reader.modality.header(io.BytesIO(data))
            sizes.append(tuple(found[0]) if found else (-1, -1))
        return {"path": batch["path"], "x": np.stack(xs).astype(np.float32, copy=False),
                "error": np.array(errors, dtype=str), "size": np.array(sizes, dtype=np.int64).reshape(-1, 2)}


class Predict:
    """Ray Data callable class: the model is loaded once per actor; each batch → Parquet rows."""

    def __init__(self, source: ModelSource, model_id: str, topk: int, threads: int, names: dict):
        self.clf = source.load(threads)
        self.model_id, self.topk, self.names = model_id, topk, names

    def __call__(self, batch: dict):
        paths = [self.names.get(str(p), str(p)) for p in batch["path"]]
        good = [i for i, e in enumerate(batch["error"]) if not e]
        preds = {i: Prediction(paths[i], error=str(e)) for i, e in enumerate(batch["error"]) if e}
        if good:
            sizes = [tuple(int(v) for v in batch["size"][i]) if batch["size"][i][0] >= 0 else None for i in good]
            found = self.clf.predict_batch(torch.from_numpy(np.ascontiguousarray(batch["x"][good])),
                                           [paths[i] for i in good], sizes, self.topk)
            preds.update(zip(good, found))
        return rows_table([preds[i] for i in range(len(paths))], self.model_id)


def arrow_schema():
    import pyarrow as pa

    kinds = {"string": pa.string(), "float64": pa.float64(), "bool": pa.bool_(),
             "list<string>": pa.list_(pa.string()), "list<float64>": pa.list_(pa.float64())}
    return pa.schema([(name, kinds[kind]) for name, kind in COLUMNS.items()])


def rows_table(preds: list[Prediction], model_id: str):
    """Predictions → a pyarrow Table of COLUMNS (a fixed schema, so every block writes the same columns)."""
    import pyarrow as pa

    cols = {name: [] for name in COLUMNS}
    for p in preds:
        row = {"path": p.source, "label": p.label, "prob": p.prob, "topk_labels": [lab for lab, _ in p.topk],
               "topk_probs": [float(q) for _, q in p.topk], "labels": None, "label_probs": None,
               "boxes": None if p.boxes is None else json.dumps(p.boxes), "abstained": p.abstained,
               "model": model_id, "error": p.error}
        if p.error is not None:
            row["topk_labels"] = row["topk_probs"] = None
        if p.labels is not None:  # multi-label: the set above the thresholds
            row["labels"], row["label_probs"] = [lab for lab, _ in p.labels], [float(q) for _, q in p.labels]
        for name in COLUMNS:
            cols[name].append(row[name])
    return pa.Table.from_pydict(cols, schema=arrow_schema())


def batch_predict(source: ModelSource, inputs, out, *, topk: int = 1, batch_size: int = 32,
                  address: Optional[str] = None, num_cpus: Optional[int] = None,
                  actors: Optional[int] = None) -> dict:
    """Predict every input file on Ray Data into the Parquet folder `out` (one row per file, COLUMNS) →
    a summary: rows, predicted, skipped, seconds, rows_per_s, out, model. `address`: a running cluster
    ("auto", "ray://host:10001"); else a local one of `num_cpus` (default: every core); a caller's
    `ray.init` is used as it is. `actors`: the most model actors (default: one CPU per actor, all CPUs but
    one, or one per GPU with a CUDA device)."""
    out = Path(out)
    if out.exists():
        raise OculaError(f"{out} exists; Ray would add its files to the old ones: give a new --out or remove it")
    if topk < 1 or batch_size < 1:
        raise OculaError(f"topk and batch_size must be at least 1, not {topk} and {batch_size}")
    meta, model_id = source.describe()
    reader = Predictor.from_meta(meta)
    if reader.modality.per_frame:
        raise OculaError(f"--engine ray reads each input as one image file; predict this model's "
                         f"{reader.modality.noun} with the local engine")
    paths, missing = reader.modality.expand_inputs(list(inputs) if isinstance(inputs, (list, tuple)) else [inputs])
    if not paths and not missing:
        raise OculaError("no inputs to predict")
    try:
        import ray
    except ImportError:
        raise OculaError("--engine ray needs Ray: pip install 'ocula[ray]'") from None
    started = _connect(ray, address, num_cpus)
    try:
        t0 = time.perf_counter()
        _run(ray, source, meta, model_id, paths, missing, out, topk, batch_size, actors)
        seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    return _summary(out, model_id, seconds)


def _connect(ray, address: Optional[str], num_cpus: Optional[int]) -> bool:
    """Join `address` or start a local cluster → whether this call must shut it down again."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    return True


def _run(ray, source: ModelSource, meta: dict, model_id: str, paths: list[str], missing: list, out: Path,
         topk: int, batch_size: int, actors: Optional[int]) -> None:
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    gpu = source.device.startswith("cuda") or (source.device == "auto" and gpus > 0)
    source = replace(source, device="cuda" if gpu else "cpu")  # an actor sees the one GPU Ray gives it
    most = (actors or gpus) if gpu else min(actors or cpus - 1, cpus - 1)  # CPU actors: never every CPU
    if most < 1:
        raise OculaError(f"the Ray cluster has {cpus} CPU(s) and no room for a model actor beside the "
                         f"reads" + (" (and no GPU)" if gpu else "") + "; give it more, or use the local engine")
    absolute = [os.path.abspath(p) for p in paths]  # Ray's workers run in other folders
    names = {a: p for a, p in zip(absolute, paths) if a != p}  # rows carry the paths as given, like local predict
    logger.info(f"ray: {len(paths):,} files, up to {most} model actor(s) of {cpus} CPUs"
                f"{' with a GPU each' if gpu else ''}, batches of {batch_size}")
    blocks = max(1, -(-len(paths) // (FILES_PER_BATCH_READ * batch_size)))  # small reads: the model starts early
    ds = ray.data.read_binary_files(absolute, include_paths=True, num_cpus=READ_CPUS,
                                    override_num_blocks=blocks) if paths else None
    if ds is not None:  # decoding: each read's files in the read task (no batch_size, so Ray fuses the two)
        ds = ds.map_batches(Decode(meta), batch_size=None, num_cpus=READ_CPUS)
        ds = ds.map_batches(Predict, fn_constructor_args=(source, model_id, topk, 1, names), batch_size=batch_size,
                            concurrency=(1, most), num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0,
                            batch_format="numpy")
    if missing:
        lost = ray.data.from_arrow(rows_table([Prediction(item, error=reason) for item, reason in missing], model_id))
        ds = lost if ds is None else ds.union(lost)
    ds.write_parquet(str(out))


def _summary(out: Path, model_id: str, seconds: float) -> dict:
    import pyarrow.parquet as pq

    errors = pq.read_table(out, columns=["error"]).column("error")
    rows = len(errors)
    skipped = rows - errors.null_count
    return {"rows": rows, "predicted": rows - skipped, "skipped": skipped, "seconds": round(seconds, 2),
            "rows_per_s": round(rows / max(seconds, 1e-9), 1), "out": str(out), "model": model_id}
