"""Training overhead: ocula's steady-state training throughput vs a bare PyTorch loop with the same
model, batch, threads, precision and augmentation (ocula's batch augmentation, called by hand).

    python bench/train_overhead.py --case seed_cnn     # 28 px Fashion-MNIST, batch 256
    python bench/train_overhead.py --case resnet18     # 224 px (Fashion-MNIST upscaled), batch 32

Steady state: the first `--warmup` steps are dropped; the median step time over the rest is used;
both loops run in this process one after the other, and again in the other order (ABBA), to cancel drift.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

CASES = {"seed_cnn": dict(model="seed_cnn", batch_size=256, img_size=None, steps=60),
         "resnet18": dict(model="resnet18", batch_size=32, img_size=224, steps=10)}


def ocula_step_times(case: dict, steps: int) -> tuple[list[float], object]:
    from ocula.config import build_config
    from ocula.engine.callbacks import Callback
    from ocula.engine.trainer import Trainer

    times = []

    class StepClock(Callback):
        def on_epoch_start(self, trainer, epoch):
            self.t = time.perf_counter()

        def on_train_step(self, trainer, logs):
            now = time.perf_counter()
            times.append(now - self.t)
            self.t = now

    cfg = build_config("fashion-mnist", model=case["model"], batch_size=case["batch_size"], img_size=case["img_size"],
                       epochs=1, max_steps=steps, out="/tmp/ocula-bench-overhead", val_fraction=0.0,
                       optimizer="sgd", augment="light")
    trainer = Trainer(cfg, callbacks=[StepClock()])
    trainer.fit()
    return times, trainer


def bare_step_times(trainer, steps: int) -> list[float]:
    """What a competent user writes by hand around the same pieces."""
    model, opt, aug = trainer.model, trainer.optimizer, trainer._train_loader(0).augment
    images, labels = trainer.train_samples.images, trainer.train_samples.labels
    crit = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    bs = trainer.cfg.optim.batch_size
    times = []
    model.train()
    for _ in range(steps):
        t = time.perf_counter()
        idx = torch.randint(0, len(labels), (bs,), generator=gen)
        x, y = aug(images[idx], labels[idx], gen)
        x = x.contiguous(memory_format=torch.channels_last)
        with trainer.autocast():
            loss = crit(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", choices=list(CASES), default="seed_cnn")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args()
    info = print_machine()
    case = CASES[args.case]
    bs = case["batch_size"]
    rates = {"ocula": [], "bare": []}
    trainer = None
    for order in (("ocula", "bare"), ("bare", "ocula")):
        for who in order:
            if who == "ocula":
                times, trainer = ocula_step_times(case, case["steps"])
            else:
                if trainer is None:
                    _, trainer = ocula_step_times(case, args.warmup + 1)
                times = bare_step_times(trainer, case["steps"])
            rates[who].append(bs / statistics.median(times[args.warmup:]))
    o, b = statistics.mean(rates["ocula"]), statistics.mean(rates["bare"])
    result = {"case": args.case, "batch": bs, "precision": str(trainer.autocast_dtype), "ocula_img_s": o,
              "bare_img_s": b, "ratio": o / b, "runs": rates}
    print(json.dumps(result))
    print(f"| {args.case} | batch {bs} | ocula {o:.1f} img/s | bare loop {b:.1f} img/s | ratio {o / b:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, **result}, indent=2))


if __name__ == "__main__":
    main()
