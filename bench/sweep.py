"""Run one named configuration of a sweep on Fashion-MNIST, test accuracy after every epoch.

A sweep is a JSON file {name: {config overrides}}; each call runs one entry, so a shell can start
several in parallel (one per GPU process or CPU core) and compare them:

    python bench/sweep.py bench/sweeps/fmnist.json seed_cnn_drop05 --out docs/bench/sweep
    for n in $(python bench/sweep.py bench/sweeps/fmnist.json --list); do ... & done

Test accuracy is measured after every epoch outside the training clock, as in
fmnist_time_to_accuracy.py. Use it to explore; report figures from a clean run of the chosen recipe.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from fmnist_time_to_accuracy import run_ocula  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sweep")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true")
    p.add_argument("--out", default="docs/bench/sweep")
    args = p.parse_args()
    configs = {k: v for k, v in json.loads(Path(args.sweep).read_text()).items() if not k.startswith("_")}
    if args.list or not args.name:
        print("\n".join(configs))
        return
    info = print_machine()
    result = run_ocula(args.name, **configs[args.name])
    result.update(config=configs[args.name], machine=info)
    out = Path(args.out) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{args.name}: final {result['final_acc']:.4f}, best {result['best_acc']:.4f}, {result['train_s']:.0f} s")


if __name__ == "__main__":
    main()
