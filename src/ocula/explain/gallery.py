"""The worst mistakes, explained: the n most confident errors on a labelled dataset with their maps.

    explain_errors("runs/shoes", "test/", n=32, out="runs/shoes/errors")
    # → errors.png (a gallery: image | overlay, titled true → predicted, probability),
    #   errors.csv (rank, source, true, predicted, prob), maps.npz, errors.json

The map explains the *predicted* (wrong) class: what the model looked at when it made the mistake.
The images are the ones `ocula evaluate` scores (the test split, else the held-out validation split).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import numpy as np

from ocula.data.samples import TensorSamples
from ocula.errors import OculaError
from ocula.explain import overlay
from ocula.explain.api import as_classifier, explain_images, resolve_method
from ocula.inference.scoring import labelled_split
from ocula.io import write_json, write_npz, write_text
from ocula.run_dir import ERRORS_CSV, ERRORS_JSON, ERRORS_MAPS, ERRORS_PNG


def explain_errors(run, data: str, n: int = 32, out="errors", method: str = "auto", split: Optional[str] = None,
                   batch_size: int = 64, cols: int = 4) -> dict:
    """→ summary dict (also written as errors.json); files under `out`."""
    if n < 1:
        raise OculaError(f"--explain-errors needs a positive count, got {n}")
    clf = as_classifier(run)
    if not clf.task.exclusive_classes:  # an error is per label there, not per image
        raise OculaError(f"--explain-errors is for single-label models; for a {clf.task.name} model use "
                         f"`ocula explain`, which draws a map per predicted label")
    chosen = labelled_split(clf, data, split)
    used, mapping = chosen.name, chosen.mapping
    items, labels, names = _items(chosen.samples, data)
    probs = clf.predict_proba(items, batch_size=batch_size)  # NaN rows: unreadable files
    readable = ~np.isnan(probs).any(1)
    predicted = np.where(readable, np.nan_to_num(probs).argmax(1), -1)
    truth = mapping[labels]
    wrong = np.flatnonzero(readable & (predicted != truth))
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:n]
    method = resolve_method(clf.model, method)
    out = Path(out)
    rows, panels, arrays = [], [], {}
    if len(worst):
        # target=None: each map explains that image's own (wrong) predicted class.
        explained = explain_images(clf, [items[i] for i in worst], method, target=None, batch_size=batch_size)
        for rank, (i, e) in enumerate(zip(worst, explained), 1):
            true_name, pred_name = clf.classes[truth[i]], clf.classes[predicted[i]]
            prob = float(probs[i, predicted[i]])
            rows.append({"rank": rank, "source": names[i], "true": true_name, "predicted": pred_name, "prob": prob})
            if e.error is None:
                title = f"{true_name} -> {pred_name} {prob:.2f}"
                panels.append(overlay.sample_panel(clf.modality.stills(e.view), clf.modality.stills(e.map), title))
                arrays[f"map_{rank:04d}"] = e.map.astype(np.float16)
    if panels:
        overlay.save_png(overlay.grid(panels, cols), out / ERRORS_PNG)
        write_npz(out / ERRORS_MAPS, arrays)
    write_text(out / ERRORS_CSV, _csv(rows))
    summary = {"data": str(data), "split": used, "method": method, "evaluated": int(readable.sum()),
               "errors": int(len(wrong)), "shown": len(rows), "out": str(out),
               "gallery": str(out / ERRORS_PNG) if panels else None, "items": rows}
    write_json(out / ERRORS_JSON, summary)
    return summary


def _items(samples, data: str) -> tuple[list, np.ndarray, list[str]]:
    """Samples → (what Classifier.predict accepts, labels, a readable name per sample)."""
    if isinstance(samples, TensorSamples):
        images = samples.images.movedim(-3, -1).numpy()  # (N, H, W, C), or clips (N, T, H, W, C); uint8
        names = samples.names or [f"{data}/{i}" for i in range(len(images))]
        return list(images), samples.labels.numpy(), list(names)
    return list(samples.paths), np.asarray(samples.labels), list(samples.paths)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "source", "true", "predicted", "prob"])
    for r in rows:
        w.writerow([r["rank"], r["source"], r["true"], r["predicted"], f"{r['prob']:.6f}"])
    return buf.getvalue()
