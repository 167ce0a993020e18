"""Moving-shapes: a frame-averaging baseline against models that read the order of frames.

    .venv/bin/python bench/video_moving_shapes.py            # full (~5-8 min on 2 cores)
    .venv/bin/python bench/video_moving_shapes.py --quick    # smoke run, a few steps each

Every model sees the built-in `moving-shapes` (1,000 training clips of 16 RGB frames at 32x32, a
shape moving down or up; 10% carved for validation; 400 held-out test clips) through 8 frames.
The two classes are each other's time reversal, so averaging frames cannot beat chance (50%).
Writes docs/bench/video_moving_shapes.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

from ocula.run_dir import best_score  # noqa: E402

CONFIG = dict(frames=8, epochs=2, batch_size=32, lr=2e-3, seed=0, threads=2)  # lr: AdamW peak
MODELS = {  # name: model options; the three encoder models share one per-frame CNN (seed_cnn)
    "frame_avg": {"backbone": "seed_cnn"},
    "cnn_lstm": {"backbone": "seed_cnn"},
    "cnn_transformer": {"backbone": "seed_cnn"},
    "seed_lstm": {"img_size": 32},
}


def run_one(name: str, options: dict, out: Path, quick: bool) -> dict:
    import ocula

    cfg = {**CONFIG, **options}
    if quick:
        cfg.update(epochs=1, max_steps=3)
    t0 = time.perf_counter()
    run = ocula.train("moving-shapes", model=name, out=str(out / name), **cfg)
    wall = time.perf_counter() - t0
    report = ocula.evaluate(run.dir, "moving-shapes", split="test")
    params = sum(p.numel() for p in ocula.load(run.dir).model.parameters())
    return {"model": name, "options": options, "test_accuracy": report["accuracy"],
            "val_accuracy": best_score(run.summary)[1], "train_time_s": round(run.summary["train_time_s"], 1),
            "wall_s": round(wall, 1), "params": params, "precision": run.summary["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs/bench/video_moving_shapes.json")
    args = parser.parse_args()
    info = print_machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in MODELS.items():
            rows.append(run_one(name, options, Path(tmp), args.quick))
            r = rows[-1]
            print(f"{r['model']:<16} test acc {r['test_accuracy']:.4f}  train {r['train_time_s']:>6.1f} s  "
                  f"params {r['params']:,}", flush=True)
    result = {"machine": info, "config": CONFIG, "quick": args.quick, "chance": 0.5, "results": rows}
    if not args.quick:
        from ocula.io import write_json

        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
