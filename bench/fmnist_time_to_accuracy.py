"""Fashion-MNIST, full 10k test set, 2 CPU cores: time to 90/92/93/94% and final accuracy.

Runs, side by side on the same machine: the plain hand-written loop in
../shared/baselines/fmnist_plain_loop.py (unchanged, --epochs 12), ocula's `fmnist-fast` recipe, and
the design's `seed_cnn` with its `seed-cnn` recipe. Test accuracy is measured after every epoch, as the baseline does; the
evaluation time is excluded from training time for both, and the test set is never used to choose
weights (one-cycle runs simply end at their last epoch).

    python bench/fmnist_time_to_accuracy.py --which baseline,recipe,seed_cnn --json docs/bench/fmnist.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

BASELINE = Path(__file__).resolve().parents[2] / "shared" / "baselines" / "fmnist_plain_loop.py"
THRESHOLDS = (0.90, 0.92, 0.93, 0.94)


def run_baseline(epochs: int) -> dict:
    out = Path("/tmp/ocula-bench-baseline.json")
    cmd = [sys.executable, str(BASELINE), "--epochs", str(epochs), "--json", str(out)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    data = json.loads(out.read_text())
    log = [{"epoch": r["epoch"], "test_acc": r["test_acc"], "cum_train_s": r["cum_train_s"]} for r in data["log"]]
    return summarise("baseline (plain loop, fp32)", log)


def run_ocula(name: str, **overrides) -> dict:
    import ocula
    from ocula.config import build_config
    from ocula.engine.callbacks import Callback, default_callbacks

    log = []

    class TestAccuracy(Callback):
        """Test accuracy after every epoch, outside the training clock (like the baseline)."""

        def on_epoch_end(self, trainer, epoch, logs):
            report, _ = trainer.evaluate(trainer.splits.test)
            log.append({"epoch": epoch + 1, "test_acc": report["accuracy"],
                        "cum_train_s": trainer.elapsed_train_s})
            print(json.dumps(log[-1]), flush=True)

    cfg = build_config("fashion-mnist", out=f"/tmp/ocula-bench-{name}", **overrides)
    print("$ ocula.train(" + ", ".join(f"{k}={v!r}" for k, v in overrides.items()) + ")", flush=True)
    trainer = ocula.Trainer(cfg, callbacks=default_callbacks(cfg) + [TestAccuracy()])
    trainer.splits.test = trainer._prepare_split("test")
    summary = trainer.fit()
    result = summarise(f"ocula {name}", log)
    result["precision"] = summary["precision"]
    return result


def summarise(label: str, log: list[dict]) -> dict:
    out = {"label": label, "final_acc": log[-1]["test_acc"], "best_acc": max(r["test_acc"] for r in log),
           "epochs": len(log), "train_s": log[-1]["cum_train_s"], "log": log}
    for t in THRESHOLDS:
        hit = next((r for r in log if r["test_acc"] >= t), None)
        out[f"t_to_{int(t * 100)}"] = None if hit is None else round(hit["cum_train_s"], 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--which", default="baseline,recipe,seed_cnn")
    p.add_argument("--baseline-epochs", type=int, default=12)
    p.add_argument("--recipe", default="fmnist-fast")
    p.add_argument("--seed-cnn-epochs", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    info = print_machine()
    results = []
    t0 = time.time()
    for which in args.which.split(","):
        if which == "baseline":
            results.append(run_baseline(args.baseline_epochs))
        elif which == "recipe":
            results.append(run_ocula(args.recipe, recipe=args.recipe))
        elif which == "recipe_noflip":  # the flip decision's counterfactual (hflip=auto keeps flips here)
            results.append(run_ocula(f"{args.recipe}-noflip", recipe=args.recipe, hflip=False))
        elif which == "seed_cnn":
            results.append(run_ocula("seed_cnn", recipe="seed-cnn", epochs=args.seed_cnn_epochs))
    print(f"\n| run | final acc | t→90% | t→92% | t→93% | t→94% | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        cells = [f"{r[f't_to_{t}']} s" if r[f"t_to_{t}"] is not None else "—" for t in (90, 92, 93, 94)]
        print(f"| {r['label']} | {r['final_acc']:.4f} | " + " | ".join(cells) + f" | {r['train_s']:.0f} |")
    print(f"(wall {time.time() - t0:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
