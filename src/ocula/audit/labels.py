"""Suspected label errors: K-fold out-of-fold probabilities from a quick model, then confident learning.

Each fold trains a fresh model with ocula's own Trainer on the other folds' images and predicts the
held-out fold, so every image is judged by a model that never saw its label. The same pass keeps
each image's embedding (`forward_head(forward_features(x), pre_logits=True)`) for the outlier check.
Confident learning (cleanlab's `find_label_issues`, or the same rule in numpy when cleanlab is not
installed) then picks the images whose given label the predictions confidently contradict.
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ocula import tasks
from ocula.audit.findings import Finding, SampleRef
from ocula.audit.inventory import Inventory
from ocula.config import build_config
from ocula.data.samples import DatasetSplits, FileSamples, TensorSamples, adapt_channels
from ocula.engine import setup
from ocula.engine.callbacks import Callback
from ocula.engine.flip_probe import decide_flips
from ocula.engine.input_choice import choose_contract
from ocula.engine.setup import resolve_augment
from ocula.engine.trainer import Trainer
from ocula.modality import for_contract
from ocula.errors import OculaError
from ocula.log import progress


@dataclass
class OutOfFold:
    indices: np.ndarray  # (M,) inventory rows that were judged
    probs: np.ndarray  # (M, K) out-of-fold predicted probabilities
    embeddings: np.ndarray  # (M, D) from the same held-out pass
    fold: np.ndarray  # (M,) which fold's model judged the row
    config: dict = field(default_factory=dict)  # the training settings used
    accuracy: float = 0.0  # of out-of-fold argmax against the given labels
    train_s: float = 0.0


class FoldProgress(Callback):
    """One bar per fold over all its optimizer steps (the Trainer's own bar prints one per epoch)."""

    def __init__(self, fold: int, folds: int):
        self.name, self.bar = f"labels: fold {fold + 1}/{folds}", None

    def on_fit_start(self, trainer):
        self.bar = progress(total=trainer.total_steps, desc=self.name, unit="step", leave=False)

    def on_train_step(self, trainer, logs):
        self.bar.update(1)

    def on_fit_end(self, trainer, logs):
        self.bar.close()


def training_options(inv: Inventory, pool_size: int, sizes: Optional[list] = None, *, model: Optional[str] = None,
                     epochs: Optional[int] = None, img_size: Optional[int] = None, **extra) -> dict:
    """Quick-model settings by data kind: a VGG-style BN CNN at (close to) native size, SGD one-cycle.

    Small images (<= 32 px, e.g. the built-ins) train at native size with width 16; files train at
    their median short side clipped to 16..64 px. Fewer images get more epochs.
    """
    native = inv.data.image_size
    if native is None and sizes:
        shorts = [min(w, h) for w, h in sizes if w and h]
        native = int(np.clip(np.median(shorts), 16, 64)) if shorts else 32
    native = native or 32
    opts = {"model": model or "vgg_bn", "optimizer": "sgd", "schedule": "onecycle", "weight_decay": 5e-4,
            "batch_size": 256 if pool_size >= 20000 else 64, "augment": "light", "hflip": "auto",
            "label_smoothing": 0.0, "val_fraction": 0.0, "img_size": img_size or native,
            "epochs": epochs or (4 if pool_size >= 20000 else 12 if pool_size >= 2000 else 30),
            # One thread: on a shared 2-core machine two OpenMP threads ran these small models
            # 9x slower (spin-waiting); pass threads=2 in train_options on an idle machine.
            "threads": 1}
    if opts["model"] == "vgg_bn" and model is None:
        opts["model_kwargs"] = {"width": 16 if native <= 32 else 32}
    opts.update({k: v for k, v in extra.items() if v is not None})
    return opts


def out_of_fold(inv: Inventory, rows: np.ndarray, folds: int, options: dict, seed: int = 0) -> OutOfFold:
    """Train `folds` models (stratified folds of `rows`) and predict each held-out fold."""
    import time

    if folds < 2:
        raise OculaError("folds must be at least 2 for the label check (0 turns it off)")
    labels = inv.labels[rows] if inv.label_sets is None else inv.label_sets[rows]
    task = tasks.for_labels(labels)  # the quick model trains as `ocula train` would on these labels
    options = {**options, **task.quick_model_options()}
    fold_pairs = task.fold_splitter(labels, folds, seed)
    cfg = build_config(inv.data.source or "audit", seed=seed, **options)
    pool, contract = _pool_samples(inv, rows, cfg)
    cfg, options = _decide_flips(cfg, options, pool, contract, len(inv.classes), seed, task)
    probs, embeds, fold_of = None, None, np.zeros(len(rows), np.int64)
    t0, threads = time.perf_counter(), torch.get_num_threads()  # the Trainer sets it process-wide
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="ocula-audit-") as tmp:
        warnings.simplefilter("ignore")  # sklearn's small-class notes, the Trainer's skip notes
        for k, (train_idx, held_idx) in enumerate(fold_pairs):
            p, e = _fit_and_predict(inv, pool, contract, cfg, train_idx, held_idx, k, folds, tmp)
            if probs is None:
                probs = np.zeros((len(rows), p.shape[1]), np.float32)
                embeds = np.zeros((len(rows), e.shape[1]), np.float32)
            probs[held_idx], embeds[held_idx], fold_of[held_idx] = p, e, k
    torch.set_num_threads(threads)
    accuracy = task.audit_score(probs, labels)
    return OutOfFold(rows, probs, embeds, fold_of, dict(options), accuracy, time.perf_counter() - t0)


def _decide_flips(cfg, options: dict, pool, contract, num_classes: int, seed: int, task: tasks.Task):
    """hflip/time_flip 'auto' decided once on the pool, as `ocula train` decides them, not once per fold."""
    cfg = resolve_augment(cfg, task)
    found = decide_flips(cfg.augment.hflip, cfg.augment.time_flip, cfg.augment.preset, pool, contract, num_classes, for_contract(contract),
                         seed=seed)
    options = {**options, "flips": {k: d.reason for k, d in found.items()}}
    return cfg.replace(hflip=found["hflip"].use, time_flip=found["time_flip"].use), options


def _pool_samples(inv: Inventory, rows: np.ndarray, cfg):
    """All judged rows as one sample set; files are decoded into RAM once (not once per fold)."""
    samples = inv.samples(rows.tolist())
    # Files are measured (size, grey or colour) by the rules `ocula train` uses.
    probe = DatasetSplits(classes=inv.classes, source=inv.data.source, channels=inv.data.channels,
                          image_size=inv.data.image_size, mean=inv.data.mean, std=inv.data.std,
                          train=samples if isinstance(samples, FileSamples) else None, modality=inv.data.modality)
    contract = choose_contract(cfg, probe).contract
    if isinstance(samples, FileSamples):
        cached, _ = setup.to_memory(samples, contract, cfg, desc="labels: decode")
        if isinstance(cached, TensorSamples) and len(cached) == len(samples):
            samples = cached
    if isinstance(samples, TensorSamples):
        samples = adapt_channels(samples, contract.channels)
    return samples, contract


def _fit_and_predict(inv, pool, contract, cfg, train_idx, held_idx, k, folds, tmp):
    splits = DatasetSplits(classes=inv.classes, train=pool.subset(train_idx.tolist()), source=inv.data.source,
                           channels=contract.channels, image_size=contract.input_size,
                           mean=contract.mean, std=contract.std, multilabel=inv.label_sets is not None)
    fold_cfg = cfg.replace(out=f"{tmp}/fold{k}", seed=cfg.run.seed + k)
    trainer = Trainer(fold_cfg, callbacks=[FoldProgress(k, folds)], splits=splits)
    trainer.fit()
    return predict_with_embeddings(trainer, pool.subset(held_idx.tolist()))


@torch.inference_mode()
def predict_with_embeddings(trainer, samples) -> tuple[np.ndarray, np.ndarray]:
    """→ (probabilities (N, K), embeddings (N, D)) in sample order, from one forward_features pass."""
    model = trainer.eval_model.eval()
    loader = setup.make_loader(samples, trainer.contract, trainer.cfg, train=False,
                               num_classes=len(trainer.classes), rank=0, world=1, modality=trainer.modality)
    probs, embeds = np.zeros((len(samples), len(trainer.classes)), np.float32), None
    for batch in loader:
        x, idx = batch[0], batch[2]
        if x is None:
            continue
        x = trainer.modality.to_device(x, trainer.device, trainer.cfg.run.channels_last)
        with trainer.autocast():
            features = model.forward_features(x)
            pre = model.forward_head(features, pre_logits=True)
            logits = model.forward_head(features)
        if embeds is None:
            embeds = np.zeros((len(samples), pre.shape[1]), np.float32)
        probs[idx.numpy()] = trainer.task.probabilities(logits).cpu().numpy()
        embeds[idx.numpy()] = pre.float().flatten(1).cpu().numpy()
    return probs, embeds


def confident_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """→ (indices of suspected label errors, worst first; label quality per row (self-confidence);
    which implementation ran)."""
    quality = probs[np.arange(len(labels)), labels]
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return _confident_learning(labels, probs, quality), quality, "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    return np.asarray(ranked, dtype=np.int64), quality, "cleanlab"


def confident_multilabel_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Multi-label: multi-hot labels (N, K) against out-of-fold sigmoid probabilities (N, K) → (indices of
    suspected label errors, worst first; label quality per row; which implementation ran). cleanlab's
    multi-label confident learning (`find_label_issues(..., multi_label=True)`, one-vs-rest per class);
    without cleanlab the same rule per class in numpy (a sample is suspect when any of its K binary labels is)."""
    y = (np.asarray(labels) > 0.5).astype(np.int64)
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    agree = np.where(y == 1, p, 1 - p)  # (N, K) the probability of each given binary label
    quality = agree.min(1)  # the worst of a row's K binary labels
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        suspect = np.zeros(len(y), bool)
        for k in range(y.shape[1]):
            two = np.stack([1 - p[:, k], p[:, k]], 1)
            if 0 < y[:, k].sum() < len(y):
                suspect[_confident_learning(y[:, k], two, agree[:, k])] = True
        idx = np.flatnonzero(suspect)
        return idx[np.argsort(quality[idx])], quality, "numpy"
    sets = [np.flatnonzero(row).tolist() for row in y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = find_label_issues(sets, p, multi_label=True, return_indices_ranked_by="self_confidence")
    return np.asarray(ranked, dtype=np.int64), quality, "cleanlab"


def _confident_learning(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Confident learning's basic rule: per-class thresholds t_j = mean p_j over images labelled j;
    an image is suspect when its most likely class above threshold is not its given label."""
    k = probs.shape[1]
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(k)])
    above = probs >= thresholds[None, :]
    confident = np.where(above, probs, -1.0).argmax(1)
    suspect = above.any(1) & (confident != labels)
    idx = np.flatnonzero(suspect)
    return idx[np.argsort(quality[idx])]


def label_findings(inv: Inventory, oof: OutOfFold, max_given: Optional[float] = None) -> tuple[list[Finding], str]:
    """Confident-learning suspects whose given label also got under `max_given` out-of-fold
    probability (default 0.5 / classes). Confident learning alone is tuned for recall; on
    Fashion-MNIST with 5% flipped labels it also flagged about as many ambiguous images (shirt vs
    T-shirt at p ≈ 0.2) as wrong labels, while a flipped label's probability is nearly always tiny."""
    if inv.label_sets is not None:
        return multilabel_findings(inv, oof, max_given)
    labels = inv.labels[oof.indices]
    ranked, quality, engine = confident_issues(labels, oof.probs)
    max_given = 0.5 / oof.probs.shape[1] if max_given is None else max_given
    ranked = ranked[quality[ranked] < max_given]
    findings = []
    for m in ranked.tolist():
        row = int(oof.indices[m])
        ref: SampleRef = inv.refs[row]
        p = oof.probs[m].copy()
        p[labels[m]] = -1.0  # the suggestion is the best *other* class
        suggested = int(p.argmax())
        score = round(1.0 - float(quality[m]), 4)
        findings.append(Finding(
            "label-issue", [ref], f"{ref.id}: labelled '{ref.label}', looks like '{inv.classes[suggested]}'",
            score=score, drop=[ref.id],
            details={"given": ref.label, "suggested": inv.classes[suggested],
                     "p_given": round(float(quality[m]), 4), "p_suggested": round(float(oof.probs[m, suggested]), 4),
                     "fold": int(oof.fold[m])}))
    return findings, engine


def multilabel_findings(inv: Inventory, oof: OutOfFold, max_given: Optional[float] = None
                        ) -> tuple[list[Finding], str]:
    """Multi-label confident-learning suspects (cleanlab's `multi_label=True`) whose worst given binary
    label also got under `max_given` out-of-fold probability (default 0.1): a label set the model
    confidently contradicts in at least one class."""
    sets = inv.label_sets[oof.indices]
    ranked, quality, engine = confident_multilabel_issues(sets, oof.probs)
    max_given = 0.1 if max_given is None else max_given
    ranked = ranked[quality[ranked] < max_given]
    names = lambda hot: "|".join(c for c, on in zip(inv.classes, hot) if on) or "(none)"  # noqa: E731
    findings = []
    for m in ranked.tolist():
        ref: SampleRef = inv.refs[int(oof.indices[m])]
        given, suggested = names(sets[m]), names(oof.probs[m] > 0.5)
        findings.append(Finding(
            "label-issue", [ref], f"{ref.id}: labelled '{given}', looks like '{suggested}'",
            score=round(1.0 - float(quality[m]), 4), drop=[ref.id],
            details={"given": given, "suggested": suggested, "p_worst_given": round(float(quality[m]), 4),
                     "fold": int(oof.fold[m])}))
    return findings, engine

