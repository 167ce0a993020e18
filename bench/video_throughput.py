"""Training throughput of cnn_lstm (resnet18 encoder) on 16x112x112 clips, and what decoding costs.

    .venv/bin/python bench/video_throughput.py            # full (~3-6 min on 2 cores)
    .venv/bin/python bench/video_throughput.py --quick

Three figures, clips per second, warm-up excluded:
  decode      ClipLoader alone over real H.264 .mp4 files (TSN sampling, resize 128 -> 112, 2 workers)
  train_ram   training steps on clips already in RAM (uint8, batch-wise augmentation)
  train_files training steps fed by ClipLoader decoding the .mp4 files while the model trains
Decoding must not halve training speed: train_files / train_ram is reported as `files_over_ram`.
Writes docs/bench/video_throughput.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

CONFIG = dict(frames=16, size=112, source_size=128, source_frames=48, clips=32, batch_size=4,
              warmup_steps=1, steps=5, workers=2, backbone="resnet18")


def make_files(root: Path, cfg: dict) -> "FileSamples":  # noqa: F821
    from ocula.data.samples import FileSamples
    from ocula.modality.video.moving_shapes import write_moving_shapes

    write_moving_shapes(root, per_class=cfg["clips"] // 2, test_per_class=1, frames=cfg["source_frames"],
                        size=cfg["source_size"])
    paths = sorted(str(p) for p in (root / "train").rglob("*.mp4"))
    return FileSamples(paths, [int("up" in p) for p in paths])


def loader_for(samples, contract, cfg, train_from_files: bool):
    from ocula.data.batch_augment import BatchAugment
    from ocula.modality.video.loader import ClipLoader

    augment = BatchAugment(contract, "light", hflip=True, num_classes=2)
    return ClipLoader(samples, contract, cfg["batch_size"], train=True, augment=augment, workers=cfg["workers"])


def time_batches(batches, step, warmup: int, steps: int) -> float:
    """Clips per second over `steps` batches after `warmup` batches."""
    seen, t0 = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        if i >= warmup + steps:
            break
        step(x, y)
        if t0 is not None:
            seen += x.shape[0]
    return seen / (time.perf_counter() - t0)


def main() -> None:
    import ocula
    from ocula.data.contract import DataContract
    from ocula.data.loaders import TensorLoader
    from ocula.data.batch_augment import BatchAugment
    from ocula.data.samples import TensorSamples
    from ocula.modality.video.loader import cache_clips

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs/bench/video_throughput.json")
    args = parser.parse_args()
    cfg = dict(CONFIG, **({"clips": 16, "steps": 2, "warmup_steps": 1} if args.quick else {}))
    info = print_machine()
    contract = DataContract(input_size=cfg["size"], channels=3, mean=(0.5,), std=(0.5,), frames=cfg["frames"])
    model = ocula.create_model("cnn_lstm", 2, 3, cfg["size"], backbone=cfg["backbone"], frames=cfg["frames"])
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def train_step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as tmp:
        samples = make_files(Path(tmp), cfg)
        many = lambda loader: ((b[0], b[1]) for _ in range(100) for b in loader if b[0] is not None)  # noqa: E731
        decode = time_batches(many(loader_for(samples, contract, cfg, True)), lambda x, y: None,
                              cfg["warmup_steps"], cfg["steps"] * 3)
        print(f"decode       {decode:8.1f} clips/s", flush=True)
        cached, _ = cache_clips(samples, contract, workers=cfg["workers"])
        ram = TensorLoader(TensorSamples(cached.images, cached.labels), contract, cfg["batch_size"], train=True,
                           augment=BatchAugment(contract, "light", num_classes=2))
        model.train()
        train_ram = time_batches(many(ram), train_step, cfg["warmup_steps"], cfg["steps"])
        print(f"train_ram    {train_ram:8.2f} clips/s", flush=True)
        train_files = time_batches(many(loader_for(samples, contract, cfg, True)), train_step,
                                   cfg["warmup_steps"], cfg["steps"])
        print(f"train_files  {train_files:8.2f} clips/s  ({train_files / train_ram:.2f} of RAM speed)", flush=True)
    result = {"machine": info, "config": cfg, "quick": args.quick, "decode_clips_per_s": round(decode, 2),
              "train_ram_clips_per_s": round(train_ram, 3), "train_files_clips_per_s": round(train_files, 3),
              "files_over_ram": round(train_files / train_ram, 3)}
    if not args.quick:
        from ocula.io import write_json

        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
