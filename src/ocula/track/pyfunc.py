"""An ocula bundle as an MLflow model (pyfunc flavour): the Model Registry and `mlflow models serve` take it.

    uri = ocula.track.log_model("runs/shoes")        # → "runs:/<run id>/model" (or `--track mlflow` at training)
    model = mlflow.pyfunc.load_model(uri)
    model.predict(pd.DataFrame({"path": ["cat.jpg"]}), params={"topk": 3})

Input: a DataFrame with a `path` column (image files where the model runs) and/or an `image` column
(base64-encoded image file bytes, as a JSON request carries them); a row uses `image` when it has one.
Output, one row per input row, in order: `label`, `prob` (the best class, or the most confident box),
`label_2`, `prob_2` … `label_k`, `prob_k` with `topk=k`, `labels` (multi-label: the set above the thresholds,
JSON), `boxes` (detectors: JSON [{label, score, box: [x1, y1, x2, y2] in the image's pixels}]) and `error`
(why a row has no prediction: an unreadable image, no image given). The artifact is the bundle itself
(`artifacts/best.safetensors`): the PythonModel loads it once with ocula's own Classifier, so
preprocessing, calibration and top-k are those of `ocula predict`.

This module imports mlflow.pyfunc (and pandas, which it needs): import it only to log or load a model.
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from ocula.errors import OculaError
from ocula.inference.predictor import Classifier, Prediction, Predictor
from ocula.version import __version__

PATH, IMAGE = "path", "image"  # the input columns
ARTIFACT = "bundle"  # context.artifacts key of the .safetensors bundle
MODEL_NAME = "model"  # runs:/<run id>/model
# MLflow's "models from code": the logged model is this script, run at load time, not a pickled object
MODEL_CODE = '''"""An ocula bundle (artifacts["bundle"]) as an MLflow pyfunc model; see ocula.track.pyfunc."""
from mlflow.models import set_model

from ocula.track.pyfunc import OculaPyfunc

set_model(OculaPyfunc())
'''
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", PATH, required=False), ColSpec("string", IMAGE, required=False)]),
    outputs=Schema([ColSpec("string", "label", required=False), ColSpec("double", "prob", required=False),
                    ColSpec("string", "error", required=False)]),
    params=ParamSchema([ParamSpec("topk", "long", 1),
                        ParamSpec("box_threshold", "double", Predictor.box_threshold)]))  # detectors only


class OculaPyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc face of an ocula bundle. `model_config={"device": "cpu"}` (or "cuda", default "auto")
    picks where it runs, at log time or at `mlflow.pyfunc.load_model(uri, model_config=...)`."""

    def load_context(self, context):
        device = (getattr(context, "model_config", None) or {}).get("device", "auto")
        self.classifier = Classifier.load(context.artifacts[ARTIFACT], device)

    def predict(self, context, model_input: pd.DataFrame, params: Optional[dict] = None) -> pd.DataFrame:
        params = params or {}
        topk, threshold = int(params.get("topk", 1)), float(params.get("box_threshold", Predictor.box_threshold))
        if topk < 1 or not 0 <= threshold <= 1:
            raise OculaError(f"topk must be 1 or more ({topk}) and box_threshold a score in [0, 1] ({threshold})")
        classifier = copy.copy(self.classifier)  # this call's threshold only (the weights are shared)
        classifier.box_threshold = threshold
        with tempfile.TemporaryDirectory(prefix="ocula-pyfunc-") as tmp:
            sources, errors = _sources(frame_of(model_input), Path(tmp))
            found = classifier.predict([s for s in sources if s is not None], topk=topk)
        it = iter(found)
        preds = [Prediction(f"<row {i}>", error=errors[i]) if s is None else next(it) for i, s in enumerate(sources)]
        return predictions_frame(preds, topk)


def frame_of(model_input) -> pd.DataFrame:
    """The model input as a DataFrame with the `path`/`image` columns it has (a dict or list of rows too)."""
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    if PATH not in frame.columns and IMAGE not in frame.columns:
        raise OculaError(f"the input needs a '{PATH}' column (image files) or an '{IMAGE}' column (base64 image "
                         f"bytes); it has {', '.join(map(str, frame.columns)) or 'no columns'}")
    return frame


def _present(value) -> bool:
    """Whether a cell holds something: not None, NaN, pd.NA or empty."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) > 0
    return value is not None and not pd.isna(value)


def _sources(frame: pd.DataFrame, tmp: Path) -> tuple[list, list]:
    """Each row → an image file to predict (a given path, or its `image` bytes written to `tmp`, so both
    take the very path `ocula predict` takes, boxes in pixels included), or None with the reason."""
    sources: list = []
    errors: list = []
    paths = frame[PATH].tolist() if PATH in frame.columns else [None] * len(frame)
    images = frame[IMAGE].tolist() if IMAGE in frame.columns else [None] * len(frame)
    for i, (path, image) in enumerate(zip(paths, images)):
        source, error = None, None
        if _present(image):
            try:
                data = bytes(image) if isinstance(image, (bytes, bytearray)) else base64.b64decode(image, validate=True)
                source = str(tmp / f"row-{i}")
                Path(source).write_bytes(data)
            except (binascii.Error, ValueError, TypeError):
                error = f"'{IMAGE}' is not base64-encoded image bytes"
        elif _present(path):
            source = str(path)
        else:
            error = f"no image: give '{PATH}' or '{IMAGE}'"
        sources.append(source)
        errors.append(error)
    return sources, errors


def predictions_frame(preds: list[Prediction], topk: int) -> pd.DataFrame:
    """Predictions → the output DataFrame (columns in the module's docstring)."""
    columns = ["label", "prob", *(f"{c}_{k}" for k in range(2, topk + 1) for c in ("label", "prob"))]
    columns += [c for c in ("labels", "boxes") if any(getattr(p, c) is not None for p in preds)] + ["error"]
    rows = []
    for p in preds:
        row = {"label": p.label, "prob": p.prob, "error": p.error}
        for k in range(2, min(topk, len(p.topk)) + 1):
            row[f"label_{k}"], row[f"prob_{k}"] = p.topk[k - 1]
        if p.labels is not None:
            row["labels"] = json.dumps([{"label": lab, "prob": q} for lab, q in p.labels])
        if p.boxes is not None:
            row["boxes"] = json.dumps(p.boxes)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    return frame.where(frame.notna(), None)  # None, not NaN: `mlflow models serve` answers null, valid JSON


# ---------------------------------------------------------------------- logging
def log_bundle(weights, *, registered_model_name: Optional[str] = None, device: str = "auto") -> str:
    """Log one bundle (.safetensors) as a pyfunc model named "model" into the active MLflow run → its URI."""
    weights = Path(weights)
    if not weights.is_file():
        raise OculaError(f"{weights}: no such bundle to log")
    with tempfile.TemporaryDirectory(prefix="ocula-mlflow-") as tmp, warnings.catch_warnings():
        code = Path(tmp) / "ocula_model.py"
        code.write_text(MODEL_CODE)
        # an example would have to be an image file where the model is served; the signature says it all
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(code), artifacts={ARTIFACT: str(weights)},
            signature=SIGNATURE, model_config={"device": device}, registered_model_name=registered_model_name,
            # stated, not inferred: inferring loads the model in a subprocess; pyfunc needs pandas besides mlflow
            pip_requirements=[f"ocula=={__version__}", f"mlflow-skinny=={mlflow.__version__}",
                              f"pandas=={pd.__version__}"])
    return info.model_uri
