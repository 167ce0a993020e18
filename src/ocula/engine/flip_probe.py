"""Does mirroring an image (or playing a clip backwards) keep its label? Measured on the data.

A mirrored "2" is no longer a 2, and a mirrored "swipe left" clip is a "swipe right"; a mirrored cat
is still a cat. Class names cannot tell these apart, so `hflip=auto` (and `time_flip=auto`) asks the
data: a small CNN is trained for a few seconds on part of the training split, with shifts but never
flips, and is scored on a disjoint held-out part of the training split as it is and transformed.

    retention = (accuracy on transformed - chance) / (accuracy as is - chance)

Labels that survive the transform keep most of the accuracy (retention near 1: shoes facing right
are still shoes); labels that depend on it lose it (digits: about half; direction of motion: below
0, the other class wins). A model that never saw mirrored images also fails on some mirrored objects
whose label survives (a boot facing right), so the bar sits at KEEP_RETENTION = 0.6 (measured by
bench/right_by_default.py and the recipe re-run: Fashion-MNIST 0.82-0.84, photo crops and faces 1.00;
digits PNGs 0.25, left/right clips -1.05). And when class A transformed is mostly taken for B while
B transformed is mostly taken for A ("b"/"d", "left"/"right"), the transform swaps labels and stays
off whatever the retention.
When the quick model learns too little to tell (accuracy within MIN_SIGNAL of chance) the flip
stays off: a wrong flip destroys labels, a missing one only costs a little accuracy.
The quick model's loss, predictions and chance level are the task's that the labels call for
(`tasks.for_labels`): multi-label data (multi-hot labels) trains with BCE and reads accuracy per label at 0.5,
chance being the all-majority guess of each label; swapped classes are defined only for exclusive classes.

Only training images are used, so validation stays untouched; the probe runs in a forked RNG so the
run's own random stream is the same with or without it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ocula import tasks
from ocula.config_sections import TIME_FLIP_DEFAULT
from ocula.data.batch_augment import random_affine
from ocula.data.contract import DataContract
from ocula.data.samples import FileSamples
from ocula.modality import Modality

KEEP_RETENTION = 0.6  # keep a flip when the transformed accuracy keeps this share of the gain over chance
SWAP_RATE = 0.5  # class A transformed is taken for B, and B for A, this often: the transform swaps labels
MIN_SIGNAL = 0.10  # the probe must beat chance by this much to decide anything
PROBE_SIZE = 32  # probe images are at most this side (the decision needs shapes, not detail)
POOL = 5000  # training images the probe uses at most
HOLDOUT = 0.2  # share of the pool held out for scoring (at most 1,000)
STEPS = (150, 400)  # optimizer steps: about 8 epochs of the probe's training part, within these bounds
BATCH = 128
PROBE_WIDTH = 16  # channels of the first of three conv blocks (16-32-64): seconds, not minutes, on 2 cores


@dataclass
class FlipDecision:
    use: bool
    decided_by: str  # "probe" | "user" | "inconclusive" | "not used"
    reason: str
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def decide_flips(hflip, time_flip, augment: str, samples, contract: DataContract, num_classes: int,
                 modality: Modality, *, seed: int = 0, device: Optional[torch.device] = None,
                 workers: Optional[int] = None) -> dict[str, FlipDecision]:
    """{"hflip": decision, "time_flip": decision} for a run's settings ('auto' runs the probe once).
    A flip that is not among the modality's `flips` (time_flip for images) is "not used"."""
    requested = {"hflip": hflip, "time_flip": time_flip}
    if augment == "none":
        return {k: FlipDecision(False, "not used", "augment none: no flips") for k in requested}
    decisions = {key: FlipDecision(False, "not used", f"{modality.noun} have no {key}")
                 for key in requested if key not in modality.flips}
    for key in modality.flips:
        use = requested[key]
        if key == "time_flip" and use is TIME_FLIP_DEFAULT:
            decisions[key] = FlipDecision(bool(use), "default", "time_flip off: clips are not played backwards "
                                          "unless asked (config_sections.TIME_FLIP_DEFAULT; --time-flip auto lets "
                                          "a quick probe decide)")
        elif use != "auto":
            decisions[key] = FlipDecision(bool(use), "user", f"{key}={str(bool(use)).lower()} set")
    todo = [k for k in modality.flips if requested[k] == "auto"]
    if todo:
        scores = run_probe(samples, contract, num_classes, modality, seed=seed, device=device, workers=workers,
                           transforms=todo)
        decisions.update({key: _decide(key, scores) for key in todo})
    return {key: decisions[key] for key in requested}


def _decide(key: str, scores: dict) -> FlipDecision:
    name = {"hflip": "mirroring", "time_flip": "playing backwards"}[key]
    acc, chance, moved = scores["accuracy"], scores["chance"], scores[key]
    evidence = {"accuracy": acc, f"accuracy_{key}": moved, "chance": chance, "held_out": scores["held_out"],
                "trained_on": scores["trained_on"], "steps": scores["steps"], "seconds": scores["seconds"],
                "keep_retention": KEEP_RETENTION}
    if acc - chance < MIN_SIGNAL:
        return FlipDecision(False, "inconclusive", f"{key} off: the quick probe reached only {acc:.2f} "
                            f"(chance {chance:.2f}), too little to tell whether {name} keeps labels", evidence)
    retention = (moved - chance) / (acc - chance)
    swaps = scores.get(f"{key}_swaps", [])
    evidence.update(retention=round(retention, 4), swapped_classes=swaps)
    use = retention >= KEEP_RETENTION and not swaps
    verdict = "keeps labels" if use else "changes labels"
    swapped = f"; swaps classes {', '.join(f'{a}<->{b}' for a, b in swaps[:3])}" if swaps else ""
    return FlipDecision(use, "probe", f"{key} {'on' if use else 'off'}: {name} {verdict} (probe accuracy "
                        f"{acc:.2f} as is, {moved:.2f} transformed, chance {chance:.2f}; retention "
                        f"{retention:.2f} {'>=' if retention >= KEEP_RETENTION else '<'} {KEEP_RETENTION}"
                        f"{swapped})", evidence)


# ------------------------------------------------------------------------------------ the probe
def run_probe(samples, contract: DataContract, num_classes: int, modality: Modality, *, seed: int = 0,
              device: Optional[torch.device] = None, workers: Optional[int] = None,
              transforms=("hflip",)) -> dict:
    """Train the quick model and score it → accuracy as is, per transform, and chance."""
    t0 = time.perf_counter()
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(seed + 7919)
    x, y, small = _probe_tensors(samples, contract, modality, gen, workers)
    n = len(y)
    order = torch.randperm(n, generator=gen)
    held = min(1000, max(1, int(n * HOLDOUT)))
    hold_idx, fit_idx = order[:held], order[held:]
    threads = torch.get_num_threads()
    # One thread: a model this small gains nothing from two, and on a busy 2-core machine two OpenMP
    # threads spin-wait it 7x slower (20 s instead of 3 s on digits).
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 104729)
        task = tasks.for_labels(y)
        model = _probe_net(x.shape[1], num_classes).to(device)
        steps = _train(model, x[fit_idx], y[fit_idx], gen, device, task)
        y_hold = y[hold_idx]
        scores = {"accuracy": float((_predict(model, x[hold_idx], device, task) == y_hold).float().mean())}
        for key in transforms:
            pred = _predict(model, modality.probe_flip(x[hold_idx], key, small), device, task)
            scores[key] = float((pred == y_hold).float().mean())
            scores[f"{key}_swaps"] = swapped_pairs(pred, y_hold, num_classes) if task.exclusive_classes else []
    torch.set_num_threads(threads)
    chance = task.chance_accuracy(y_hold, num_classes)
    scores.update(chance=chance, held_out=int(held), trained_on=int(len(fit_idx)),
                  steps=steps, seconds=round(time.perf_counter() - t0, 2))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()}


def _probe_tensors(samples, contract: DataContract, modality: Modality, gen: torch.Generator, workers) -> tuple:
    """→ (float (N, C', s, s) roughly standardised, labels (N,), the probe's contract) from a seeded subset
    of the split (clips: T evenly spaced frames folded into channels)."""
    n = len(samples)
    pick = torch.randperm(n, generator=gen)[:POOL].sort().values.tolist()
    subset = samples.subset(pick)
    size = min(contract.input_size, PROBE_SIZE)
    small = replace(contract, input_size=size)
    if isinstance(subset, FileSamples):
        subset, _ = modality.to_memory(subset, small, workers=workers, desc="flip probe")
    x = modality.probe_images(subset.images, small).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - x.mean()) / x.std().clamp_min(1e-3)
    return x.contiguous(), subset.labels.long(), small


def _probe_net(in_chans: int, num_classes: int) -> nn.Module:
    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    w = PROBE_WIDTH
    return nn.Sequential(*block(in_chans, w, 1), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, device, task: tasks.Task) -> int:
    n = len(y)
    batch = min(BATCH, n)
    steps = int(min(STEPS[1], max(STEPS[0], math.ceil(8 * n / batch))))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    shift = max(1, x.shape[-1] // 8)
    model.train()
    for _ in range(steps):
        idx = torch.randint(n, (batch,), generator=gen)
        xb = random_affine(x[idx], x.shape[-1], gen, translate_px=shift, hflip=False)
        out, target = model(xb.to(device)), y[idx].to(device)
        loss = task.loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return steps


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device, task: tasks.Task) -> torch.Tensor:
    """The task's hard predictions: class indices (N,), or multi-hot (N, K) at 0.5 for a multi-label probe."""
    model.eval()
    logits = torch.cat([model(x[i:i + 512].to(device)).cpu() for i in range(0, len(x), 512)])
    return task.hard_predictions(logits)


def swapped_pairs(pred: torch.Tensor, labels: torch.Tensor, num_classes: int, min_count: int = 10) -> list:
    """Class pairs (a, b) whose transformed images are mostly taken for each other."""
    confusion = torch.zeros(num_classes, num_classes)
    confusion.index_put_((labels, pred), torch.ones(len(labels)), accumulate=True)
    counts = confusion.sum(1, keepdim=True)
    rate = confusion / counts.clamp_min(1)
    enough = counts.squeeze(1) >= min_count
    return [(a, b) for a in range(num_classes) for b in range(a + 1, num_classes)
            if enough[a] and enough[b] and rate[a, b] >= SWAP_RATE and rate[b, a] >= SWAP_RATE]
