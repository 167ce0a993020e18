"""A saved model that predicts: `clf = ocula.load("runs/shoes"); clf.predict("cat.jpg")`.

Preprocessing is rebuilt from the bundle's data contract, so the file alone predicts correctly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from ocula import bundle, modality, tasks
from ocula.data.contract import DataContract
from ocula.data.images import shown_size
from ocula.data.samples import FileSamples
from ocula.errors import BadImageError, OculaError
from ocula.models.compiled import compile_model


@dataclass
class Prediction:
    source: str
    label: Optional[str] = None
    prob: Optional[float] = None
    topk: list = field(default_factory=list)  # [(label, prob), ...] best first
    error: Optional[str] = None
    abstained: bool = False  # the top probability is below the predictor's min_confidence
    labels: Optional[list] = None  # multi-label: the set above the thresholds, [(label, prob), ...]; else None
    boxes: Optional[list] = None  # detection: [{label, score, box: [x1, y1, x2, y2] in pixels}, ...]; else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["topk"] = [{"label": lab, "prob": p} for lab, p in self.topk]
        if self.boxes is None:
            d.pop("boxes")
        if self.labels is None:
            d.pop("labels")
        else:
            d["labels"] = [{"label": lab, "prob": p} for lab, p in self.labels]
        return d


class Predictor:
    """What every backend shares (PyTorch here, ONNX Runtime in ocula.export.runtime): preprocessing
    from the data contract and the modality, batching, and the task's probabilities and top-k. A
    subclass sets `meta` and implements `logits`."""

    meta: dict
    tta: bool = False  # average the probabilities over flips (those training allowed) and crops
    min_confidence: Optional[float] = None  # predictions below this top probability are marked abstained
    box_threshold: float = 0.25  # detection: boxes scoring below this are not returned (Ultralytics' conf default)

    def _init_contract(self, meta: dict) -> None:
        self.meta = meta
        self.classes: list[str] = meta["classes"]
        self.contract = DataContract.from_dict(meta["contract"])
        self.modality = modality.for_meta(meta)
        self.task = tasks.for_meta(meta)

    @classmethod
    def from_meta(cls, meta: dict) -> "Predictor":
        """A Predictor with no model: the bundle's preprocessing and task rules alone, for decoding where the
        model is not (the read stage of ocula.inference.batch)."""
        reader = cls.__new__(cls)
        reader._init_contract(meta)
        return reader

    def configured(self, *, tta: bool = False, min_confidence: Optional[float] = None,
                   box_threshold: Optional[float] = None) -> "Predictor":
        """These prediction settings on this predictor (None: unchanged), checked: a probability outside
        [0, 1] is an OculaError."""
        for name, value in (("min_confidence", min_confidence), ("box_threshold", box_threshold)):
            if value is not None and not 0 <= float(value) <= 1:
                raise OculaError(f"{name} must be a probability in [0, 1], not {value}")
        self.tta = tta or self.tta
        if min_confidence is not None:
            self.min_confidence = float(min_confidence)
        if box_threshold is not None:
            self.box_threshold = float(box_threshold)
        return self

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.meta["arch"]["name"]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch (the modality's shape) → logits (B, K), float32 on the CPU."""
        raise NotImplementedError

    def probabilities(self, x: torch.Tensor, logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Preprocessed batch → the task's probabilities (B, K); with `tta`, their mean over the
        modality's test-time views. `logits`: those of `x` itself, when the caller has them already."""
        logits = self.logits(x) if logits is None else logits
        if not self.tta:
            return self.task.probabilities(logits)
        views = self.modality.tta_views(x, hflip=self.allowed_flips.get("hflip", False))[1:]  # [0] is x
        return torch.stack([self.task.probabilities(logits)] +
                           [self.task.probabilities(self.logits(v)) for v in views]).mean(0)

    @property
    def allowed_flips(self) -> dict:
        """The flips training's augmentation used (decided per run); none for older bundles."""
        return {k: bool(v) for k, v in (self.meta.get("data") or {}).get("flips", {}).items()}

    @property
    def clip_pad(self) -> str:
        """Video models: how a clip shorter than its frame count is read (as in training)."""
        return self.meta.get("clip_pad", "repeat")

    def preprocess(self, obj) -> torch.Tensor:
        """One input → the normalised sample the model takes: an image (path, bytes, PIL, numpy array) →
        (C, H, W); for a video model a clip (video file, frame folder, uint8 array (T, H, W, C)) →
        (T, C, H, W)."""
        return self.modality.preprocess(obj, self.contract, self.clip_pad)

    def _result(self, source: str, probs: torch.Tensor, topk: int, size=None) -> Prediction:
        boxes = self.task.boxes(probs, self.classes, size or (1, 1), self.box_threshold)
        if boxes is not None:  # detection: the boxes are the answer; label/prob: the most confident box
            top = [(b["label"], b["score"]) for b in boxes[:topk]]
            return Prediction(source, top[0][0] if top else None, top[0][1] if top else None, top, boxes=boxes)
        top = self.task.top(probs, self.classes, topk)
        abstained = self.min_confidence is not None and top[0][1] < self.min_confidence
        return Prediction(source, top[0][0], top[0][1], top, abstained=abstained,
                          labels=self.task.label_set(probs, self.classes))

    def _size(self, obj) -> Optional[tuple[int, int]]:
        """(width, height) of an input, for boxes in its own pixels; None when unknown."""
        if isinstance(obj, (str, Path)):
            found = self.modality.header(str(obj))
            return tuple(found[0]) if found else None
        if hasattr(obj, "size") and isinstance(obj.size, tuple):  # PIL: as shown, like the pixels to_pil returns
            return shown_size(obj)
        if hasattr(obj, "shape") and len(obj.shape) >= 2:  # numpy (H, W[, C])
            return (int(obj.shape[1]), int(obj.shape[0]))
        return None

    # ------------------------------------------------------------------ public
    def predict(self, inputs, topk: int = 1, batch_size: int = 32):
        """Paths, PIL images, numpy arrays, or a list of them → Prediction (or a list of them)."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        results: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            tensors, where, sizes = [], [], []
            for j, obj in enumerate(chunk):
                name = str(obj) if isinstance(obj, (str, Path)) else f"<{type(obj).__name__} {start + j}>"
                try:
                    tensors.append(self.preprocess(obj))
                    where.append(len(results))
                    sizes.append(self._size(obj))
                except BadImageError as e:
                    results.append(Prediction(name, error=e.reason))
                    continue
                results.append(Prediction(name))
            if tensors:
                probs = self.probabilities(torch.stack(tensors))
                for pos, pr, size in zip(where, probs, sizes):
                    results[pos] = self._result(results[pos].source, pr, topk, size)
        return results[0] if single else results

    def predict_proba(self, inputs, batch_size: int = 32) -> np.ndarray:
        preds = self.predict(list(inputs), topk=len(self.classes), batch_size=batch_size)
        out = np.full((len(preds), len(self.classes)), np.nan, dtype=np.float32)
        for row, p in zip(out, preds):
            for lab, q in p.topk:
                row[self.classes.index(lab)] = q
        return out

    def file_batches(self, samples: FileSamples, batch_size: int, workers: Optional[int] = None):
        """Eval batches (x, y, idx, bad) of files in this model's contract, decoded in DataLoader
        workers: images, or for a video model video files and frame folders."""
        return self.modality.file_loader(samples, self.contract, batch_size, train=False, workers=workers,
                                         pad=self.clip_pad)

    def predict_files(self, paths: list[str], topk: int = 1, batch_size: int = 32,
                      workers: Optional[int] = None) -> Iterator[Prediction]:
        """Many files: decoded in DataLoader workers while the model runs; bad files yield errors."""
        loader = self.file_batches(FileSamples(list(paths), [-1] * len(paths)), batch_size, workers)
        for x, _, idx, bad in loader:
            for path, reason in bad:
                yield Prediction(path, error=reason)
            if x is not None:
                chosen = [paths[i] for i in idx.tolist()]
                yield from self.predict_batch(x, chosen, [self._size(p) for p in chosen], topk)

    def predict_batch(self, x: torch.Tensor, sources: list[str], sizes: list, topk: int = 1) -> list[Prediction]:
        """A preprocessed batch (`preprocess`'s samples stacked) → one Prediction per row, named by `sources`;
        `sizes`: each input's (width, height) for boxes in its pixels (None when unknown). What every
        file reader shares: local DataLoader workers and Ray Data (ocula.inference.batch)."""
        probs = self.probabilities(x)
        return [self._result(source, pr, topk, size) for source, pr, size in zip(sources, probs, sizes)]


class Classifier(Predictor):
    """A PyTorch model with its bundle metadata."""

    def __init__(self, model: torch.nn.Module, meta: dict, device: Optional[torch.device] = None):
        self.model = model
        self.device = device or next(model.parameters()).device
        self._init_contract(meta)

    @classmethod
    def load(cls, path, device: str = "auto") -> "Classifier":
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                           ("cpu" if device == "auto" else device))
        model, meta = bundle.load_model(path, dev)
        return cls(model, meta, dev)

    def compile(self) -> "Classifier":
        """Run the model through torch.compile from the next forward (`--compile`), once for every batch
        size; eager, with one line, where no compiler is usable (ocula.models.compiled)."""
        self.model = compile_model(self.model, self.device, dynamic=True)
        return self

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch → logits (B, K) on the CPU."""
        return self.task.forward(self.model, x.to(self.device)).float().cpu()
