"""Benchmark: the cost of each augmentation preset per batch, beside one training step it feeds.

    .venv/bin/python bench/augment_presets.py [--rounds 5] [--batch 256]

Batches of random uint8 images (B × 1 × 28 × 28 and B × 3 × 32 × 32); every preset is timed in each
round, interleaved (so a load from elsewhere on the machine falls on all of them alike); the figure
is the median over rounds of the milliseconds per batch. For scale: one seed_cnn training step
(forward, backward, AdamW) on the same batch. CPU, one thread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

PRESETS = ["none", "light", "strong", "rrc", "randaugment", "trivialaugment"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--json", default="docs/bench/augment_presets.json")
    args = parser.parse_args(argv)
    import torch

    from ocula.data.batch_augment import BatchAugment
    from ocula.data.contract import DataContract
    from ocula.models import create_model

    torch.set_num_threads(1)
    info = print_machine()
    results = {}
    for channels, size in ((1, 28), (3, 32)):
        contract = DataContract(size, channels, (0.5,) * channels, (0.25,) * channels)
        x = torch.randint(0, 256, (args.batch, channels, size, size), dtype=torch.uint8)
        y = torch.randint(0, 10, (args.batch,))
        augs = {p: BatchAugment(contract, p, hflip=True) for p in PRESETS}
        model = create_model("seed_cnn", 10, channels, size)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)

        def step():
            inputs, _ = augs["none"](x, y, None)
            loss = torch.nn.functional.cross_entropy(model(inputs), y)
            loss.backward()
            opt.step()
            opt.zero_grad()

        times = {name: [] for name in PRESETS + ["seed_cnn train step"]}
        for r in range(args.rounds + 1):  # round 0 warms up and is not counted
            for name in times:
                gen = torch.Generator().manual_seed(r)
                t = time.perf_counter()
                step() if name == "seed_cnn train step" else augs[name](x, y, gen)
                if r:
                    times[name].append((time.perf_counter() - t) * 1000)
        key = f"{args.batch}x{channels}x{size}x{size}"
        results[key] = {name: round(statistics.median(v), 1) for name, v in times.items()}
        for name, ms in results[key].items():
            print(f"{key:>16}  {name:<22} {ms:8.1f} ms/batch", flush=True)
    out = {"machine": info, "rounds": args.rounds, "ms_per_batch_median": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
