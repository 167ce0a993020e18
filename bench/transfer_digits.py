"""Transfer on real data: Fashion-MNIST → scikit-learn digits with 10 labelled images per class.

1. Pretrain vgg_bn on Fashion-MNIST at 28 px (ocula's fmnist-fast settings, a few epochs), or reuse
   --source RUN.
2. For each seed: draw 10 digits per class (of all 1,797) as the training set; the other 1,697 are
   the evaluation set. Digits are 8×8; the source's contract resizes them to 28×28.
3. Train the same architecture from scratch and fine-tune it from the source with each strategy
   (linear-probe, partial, full, llrd, gradual); the same epochs, batch size, optimizer and schedule.
4. Retrieval: precision@5 (leave-one-out) of the full fine-tune's embeddings of the evaluation set.

    python bench/transfer_digits.py                      # full run (~5-8 min on 2 cores)
    python bench/transfer_digits.py --quick              # smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

STRATEGIES = ("scratch", "linear-probe", "partial", "full", "llrd", "gradual")
FINETUNE = dict(epochs=30, batch_size=50, lr=1e-3, optimizer="adamw", hflip=False, augment="light",
                val_fraction=0.0, warmup_epochs=2, threads=1)  # 1 thread: far faster on a shared, busy CPU


def pretrain(out: str, epochs: int, limit: int | None) -> str:
    import ocula
    from ocula.engine.callbacks import Checkpointer

    if (Path(out) / "weights" / "best.safetensors").is_file():
        print(f"reusing the source model in {out}")
        return out
    extra = {}
    if limit:  # quick mode: a class-balanced slice of the training set
        from ocula.data.builtin import load_builtin

        data = load_builtin("fashion-mnist")
        data.train = data.train.subset(list(range(limit)))
        extra["splits"] = data
    t0 = time.perf_counter()
    _train(dict(data="fashion-mnist", recipe="fmnist-fast", epochs=epochs, out=out, hflip=True, seed=0, threads=1),
           callbacks=[Checkpointer()], **extra)
    print(f"pretrained in {time.perf_counter() - t0:.0f} s")
    return out


def _train(overrides: dict, callbacks=None, splits=None):
    from ocula.config import build_config
    from ocula.engine.trainer import Trainer

    trainer = Trainer(build_config(**overrides), callbacks=callbacks if callbacks is not None else [],
                      splits=splits)
    trainer.fit()
    return trainer


def few_shot_splits(per_class: int, seed: int):
    """All 1,797 digits: `per_class` per class for training, the rest for evaluation."""
    from ocula.data.builtin import load_builtin
    from ocula.data.samples import DatasetSplits, TensorSamples

    data = load_builtin("digits")
    images = torch.cat([data.train.images, data.test.images])
    labels = torch.cat([data.train.labels, data.test.labels])
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels.numpy() == c), per_class, replace=False)
                             for c in range(10)])
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    whole = TensorSamples(images, labels, [f"digits/{i}" for i in range(len(labels))])
    return DatasetSplits(classes=data.classes, train=whole.subset(chosen), test=whole.subset(rest),
                         source=f"digits-{per_class}shot-seed{seed}", channels=1, image_size=8,
                         mean=data.mean, std=data.std)


def run_one(strategy: str, source: str, seed: int, per_class: int, work: Path, epochs: int) -> dict:
    splits = few_shot_splits(per_class, seed)
    cfg = dict(FINETUNE, data="digits", epochs=epochs, seed=seed, out=str(work / f"{strategy}-{seed}"))
    if strategy == "scratch":
        cfg.update(model="vgg_bn", img_size=28)
    else:
        cfg.update(init_from=source, strategy=strategy, unfreeze_every=max(1, epochs // 4))
    t0 = time.perf_counter()
    trainer = _train(cfg, splits=splits)
    report, _ = trainer.evaluate(splits.test)
    result = {"strategy": strategy, "seed": seed, "accuracy": report["accuracy"],
              "train_s": time.perf_counter() - t0, "eval_images": len(splits.test)}
    if strategy == "full" and seed == 0:
        result["precision_at_5"] = retrieval_precision(trainer, splits)
    print(json.dumps(result), flush=True)
    return result


def retrieval_precision(trainer, splits) -> float:
    from ocula.transfer.embed import Embedder, Embeddings
    from ocula.transfer.retrieval import precision_at_k

    embedder = Embedder(trainer.eval_model.eval(), trainer.meta())
    vectors, kept, _ = embedder.embed_samples(splits.test)
    labels = [int(splits.test.labels[i]) for i in kept]
    return precision_at_k(Embeddings(vectors, [str(i) for i in kept], labels), k=5)


def summarise(results: list[dict]) -> dict:
    table = {}
    for s in STRATEGIES:
        acc = [r["accuracy"] for r in results if r["strategy"] == s]
        if acc:
            table[s] = {"mean": float(np.mean(acc)), "std": float(np.std(acc)), "runs": acc,
                        "train_s": float(np.mean([r["train_s"] for r in results if r["strategy"] == s]))}
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small pretraining, 1 seed, few epochs")
    ap.add_argument("--source", default="/tmp/ocula-bench/fmnist-vgg", help="pretrained run (made if missing)")
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=FINETUNE["epochs"], help="fine-tuning budget, the same for all")
    ap.add_argument("--json", default="docs/bench/transfer_digits.json")
    args = ap.parse_args()
    info = print_machine()
    if args.quick:
        args.source, args.pretrain_epochs, args.seeds = args.source + "-quick", 1, 1
    source = pretrain(args.source, args.pretrain_epochs, 6000 if args.quick else None)
    work = Path("/tmp/ocula-bench/digits-transfer")
    epochs = 6 if args.quick else args.epochs
    results = [run_one(s, source, seed, args.per_class, work, epochs)
               for seed in range(args.seeds) for s in STRATEGIES]
    table = summarise(results)
    gain = max(v["mean"] for k, v in table.items() if k != "scratch") - table["scratch"]["mean"]
    p5 = next(r["precision_at_5"] for r in results if "precision_at_5" in r)
    print(f"\n{'strategy':<14}{'accuracy (mean ± std)':>24}{'train s':>10}")
    for k, v in table.items():
        print(f"{k:<14}{v['mean'] * 100:>15.2f} ± {v['std'] * 100:.2f}{v['train_s']:>10.1f}")
    print(f"best transfer - scratch: {gain * 100:+.2f} points; retrieval precision@5 (full, seed 0): {p5:.4f}")
    out = {"machine": info, "settings": {**FINETUNE, "epochs": epochs, "per_class": args.per_class,
                                         "seeds": args.seeds, "pretrain_epochs": args.pretrain_epochs,
                                         "source": source, "quick": args.quick},
           "table": table, "gain_points": gain * 100, "precision_at_5": p5, "runs": results}
    if not args.quick:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
