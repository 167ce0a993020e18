"""Models shared by the export benchmarks: short Fashion-MNIST trainings, cached between scripts.

Runs live in $OCULA_BENCH_DIR (default /tmp/ocula-bench) and are reused when present, so
export_onnx.py, quantize_int8.py and backends.py train each model at most once.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

BENCH_DIR = Path(os.environ.get("OCULA_BENCH_DIR", "/tmp/ocula-bench"))


def trained_run(model: str, img_size: int, max_steps: int, batch_size: int = 128, **overrides) -> tuple[str, dict]:
    """A run trained on Fashion-MNIST (train split, seed 0, ≤ 1 epoch) → (run dir, what was done)."""
    import ocula

    run = BENCH_DIR / f"fmnist-{model}-{img_size}px-{max_steps}steps"
    # No validation pass and a short warm-up: the budget goes into optimizer steps.
    # One torch thread: on a shared, oversubscribed 2-core machine 2 threads ran 7x slower (spinning).
    overrides = {"val_fraction": 0.0, "warmup_epochs": 0.05, "threads": 1, **overrides}
    info = {"model": model, "data": "fashion-mnist", "img_size": img_size, "epochs": 1, "max_steps": max_steps,
            "batch_size": batch_size, **overrides}
    if not (run / "weights" / "best.safetensors").is_file():
        start = time.perf_counter()
        ocula.train("fashion-mnist", model=model, epochs=1, img_size=img_size, max_steps=max_steps,
                    batch_size=batch_size, hflip=True, seed=0, out=str(run), **overrides)
        info["train_s"] = round(time.perf_counter() - start, 1)
    return str(run), info


def resized_bundle(run: str, size: int) -> str:
    """The same trained weights under a contract of `size` px (for CNNs whose weights do not depend on
    the input size): how throughput at 224 px is measured for a net trained at 32 px."""
    from dataclasses import replace

    from ocula import bundle
    from ocula.data.contract import DataContract

    out = Path(run).with_name(Path(run).name + f"-as-{size}px")
    if (out / "weights" / "best.safetensors").is_file():
        return str(out)
    model, meta = bundle.load_model(run)
    meta = dict(meta, contract=replace(DataContract.from_dict(meta["contract"]), input_size=size).to_dict(),
                arch=dict(meta["arch"], input_size=size))
    rebuilt = bundle.build_from_meta(meta)
    rebuilt.load_state_dict(model.state_dict())
    bundle.save_weights(out / "weights" / "best.safetensors", rebuilt, meta)
    from ocula.io import write_json
    write_json(out / "model.json", meta)
    return str(out)


def random_bundle(model: str, size: int, channels: int = 1, num_classes: int = 10, classes=None) -> str:
    """An untrained bundle (speed does not depend on weight values): for models whose weights depend on
    the input size, such as a ViT's position embeddings. `classes`: names, e.g. for gating on real data."""
    from ocula import bundle
    from ocula.data.contract import DataContract
    from ocula.models.registry import create_model

    names = list(classes) if classes else [str(i) for i in range(num_classes)]
    out = BENCH_DIR / f"random-{model}-{size}px{'-named' if classes else ''}"
    if not (out / "weights" / "best.safetensors").is_file():
        net = create_model(model, len(names), channels, size).eval()
        meta = bundle.make_meta(dict(net.ocula_arch), DataContract(input_size=size, channels=channels), names)
        bundle.save_weights(out / "weights" / "best.safetensors", net, meta)
    return str(out)


def cell(report: dict, backend: str, batch: int) -> dict:
    return next(r for r in report["results"] if r["backend"] == backend and r["batch"] == batch)


def cli_benchmark(run: str, backends: list[str], repeats: int, batches=(1, 32)) -> dict:
    """`ocula benchmark` in a fresh process, as a user runs it. Inside a benchmark script's own process,
    after its accuracy gates (10k images through PyTorch and ONNX Runtime sessions), eager ran 54-61
    img/s and ONNX Runtime 89-94, against 50-51 and 98-99 in fresh processes: a measurement must not
    inherit that state."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        subprocess.run([sys.executable, "-m", "ocula", "benchmark", run, "--backends", ",".join(backends),
                        "--batch", ",".join(map(str, batches)), "--threads", "2", "--repeats", str(repeats),
                        "--max-seconds", "40", "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())
