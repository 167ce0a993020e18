"""The accuracy gate: the exported model must agree with PyTorch on real, labelled images.

Both models see the very same preprocessed batches, so any difference is the export's (operator
numerics, quantization), never preprocessing drift. What is measured is the task's question
(`Task.fidelity`); for one class per sample:
    max_abs_logit_diff   max |Δlogit| over all images and classes
    top1_agreement       fraction of images where both models pick the same class
    delta_accuracy       (PyTorch accuracy − exported accuracy) in points; the gate fails above max_drop
for detection: box agreement on the confident boxes and the COCO mAP drop in points.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ocula.errors import OculaError
from ocula.inference.scoring import LabelledSplit, labelled_split, model_labels, skipped_list, split_batches
from ocula.log import progress


def gate_data(reference, data: Optional[str]) -> str:
    """The data to gate on: the given spec, else the data the run was trained on (its test/val split)."""
    if data:
        return str(data)
    source = (reference.meta.get("data") or {}).get("source")
    if not source:
        raise OculaError("the run does not record its training data: pass --gate-data DATA (labelled images)")
    return source


def gate_samples(reference, data: str, limit: Optional[int] = None) -> LabelledSplit:
    """The images `ocula evaluate` would score, at most `limit` of them, evenly spaced."""
    return labelled_split(reference, data, fidelity=True).evenly_spaced(limit)


def paired_logits(reference, candidates: list, samples, *, batch_size: int = 64,
                  workers: Optional[int] = None):
    """Run the reference and every candidate on the same batches →
    (ref outputs (N, ...), [candidate outputs (N, ...)], labels (N, ...), skipped files): logits (N, K) and
    class indices (N,) for a classifier, detections (N, D, 6) and boxes (N, M, 5) for a detector."""
    ref, cands, labels, skipped = [], [[] for _ in candidates], [], []
    with progress(total=len(samples), desc="accuracy gate", unit="img", leave=False) as bar:
        for batch in split_batches(reference, samples, batch_size, workers):
            if len(batch) == 4:
                skipped += batch[3]
                bar.update(len(batch[3]))
            if batch[0] is None:
                continue
            ref.append(reference.logits(batch[0]))
            for out, cand in zip(cands, candidates):
                out.append(cand.logits(batch[0]))
            labels.append(batch[1])
            bar.update(len(batch[0]))
    if not ref:
        raise OculaError("no readable images for the accuracy gate")
    return (torch.cat(ref).numpy(), [torch.cat(c).numpy() for c in cands], torch.cat(labels).numpy(),
            skipped)


def accuracy_gate(reference, candidates, data: Optional[str] = None, *, max_drop: Optional[float] = None,
                  limit: Optional[int] = None, batch_size: int = 64, workers: Optional[int] = None):
    """Compare exported models (e.g. OnnxClassifiers) with `reference` (the PyTorch Classifier).

    `candidates`: one model → one report dict; a list → a list of reports (one pass over the data).
    `data`: a built-in name, folder or CSV with labels (default: the run's own data: its test split,
    else the held-out val); `limit`: at most this many images, evenly spaced; `max_drop`: allowed
    drop of the task's score in points (`Task.fidelity_max_drop`: accuracy 0.5 for fp32, 1 for int8; detection
    mAP 1 and 2).
    """
    single = not isinstance(candidates, (list, tuple))
    candidates = [candidates] if single else list(candidates)
    for cand in candidates:
        if list(cand.classes) != list(reference.classes):
            raise OculaError("the exported model's classes differ from the PyTorch model's")
    spec = gate_data(reference, data)
    split = gate_samples(reference, spec, limit)
    ref, outs, labels, skipped = paired_logits(reference, candidates, split.samples, batch_size=batch_size,
                                               workers=workers)
    task = reference.task
    labels = model_labels(split.mapping, labels, len(reference.classes))
    reports = []
    for cand, out in zip(candidates, outs):
        precision = getattr(cand, "precision", "fp32")
        drop = task.fidelity_max_drop.get(precision, 0.5) if max_drop is None else float(max_drop)
        report = task.fidelity(ref, out, labels, list(reference.classes), drop)
        report.update(precision=precision, data=spec, split=split.name, skipped=skipped_list(split.skipped + skipped))
        reports.append(report)
    return reports[0] if single else reports


def format_gate(report: dict) -> str:
    """Three readable lines for the terminal."""
    verdict = "PASS" if report["passed"] else "FAIL"
    return (f"accuracy gate [{report['precision']}] on {report['data']} [{report['split']}], "
            f"{report['images']} images: {verdict}\n"
            + "\n".join(f"  {line}" for line in report["summary"])
            + (f"\n  {len(report['skipped'])} unreadable files skipped (listed in the gate report)"
               if report.get("skipped") else ""))
