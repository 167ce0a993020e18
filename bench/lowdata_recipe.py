"""Recipe variants of the small-data fine-tune, compared on a fixed schedule (issue 23's tuning record).

    python bench/lowdata_recipe.py --variants "base:drop_path_rate=0.0;droppath:drop_path_rate=0.2" \
        --seeds 0,1 [--dataset fashion-mnist] [--per-class 30] [--work DIR] [--json FILE]

Each variant is one `ocula.train(DIR/train, model="efficientnet_lite0", pretrained=FILE, cross_fit="off",
val_fraction=0)` on all N images a class: the default recipe (lp-ft, 10 epochs, head refitted) without the
cross-fit, so a variant costs one training instead of six and nothing is chosen on the training images.
`key=value` pairs are ocula.train options; `drop_path_rate=…` goes to the model (model_kwargs; 0.0 turns
off the small-data default). Each model is scored on two test folders, as bench/lowdata_soup.py does:
`choose` (the seeded test order's first 1,000: decide on these) and `unseen` (the next 1,000, the must-show's
images: report, never decide on). Per-image probabilities are kept in WORK/NAME-sSEED.npz.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402
from transfer_lowdata import lite0_file, write_folders  # noqa: E402


def parse_variants(text: str) -> dict:
    """"name:k=v,k=v;name2:…" → {name: {option: value}}, values read as JSON where they parse."""
    variants = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, opts = part.partition(":")
        options = {}
        for kv in filter(None, opts.split(",")):
            key, _, value = kv.partition("=")
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError:
                options[key] = value
        variants[name] = options
    return variants


def run_variant(name: str, options: dict, seed: int, train_dir: Path, tests: dict, work: Path, threads: int) -> dict:
    import ocula
    from ocula.inference.scoring import labelled_split, predict_split

    options = dict(options)
    model_kwargs = {"drop_path_rate": options.pop("drop_path_rate")} if "drop_path_rate" in options else {}
    t0 = time.perf_counter()
    run = ocula.train(str(train_dir), model="efficientnet_lite0", pretrained=lite0_file(), threads=threads,
                      out=str(work / f"{name}-s{seed}"), cross_fit="off", val_fraction=0.0, seed=seed,
                      model_kwargs=model_kwargs, **options)
    result = {"variant": name, "seed": seed, "options": {**options, **model_kwargs},
              "train_s": round(time.perf_counter() - t0, 1)}
    clf, saved = ocula.load(run.dir), {}
    for test_name, folder in tests.items():
        found = predict_split(clf, labelled_split(clf, str(folder)).samples)
        labels = np.asarray(found.labels)
        saved[f"{test_name}_probs"], saved[f"{test_name}_labels"] = found.probs, labels
        result[test_name] = float((found.probs.argmax(1) == labels).mean())
    np.savez(work / f"{name}-s{seed}.npz", **saved)
    print("RESULT", json.dumps(result), flush=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", required=True, help='"name:key=value,…;name2:…"')
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/ocula-lowdata-recipe")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    info = print_machine()
    work = Path(args.work)
    tests = {"choose": write_folders(work, args.per_class, 1000, dataset=args.dataset) / "test",
             "unseen": write_folders(work, args.per_class, 1000, dataset=args.dataset, test_skip=1000) / "test"}
    train_dir = tests["choose"].parent / "train"  # the same training images in both folders
    results = [run_variant(name, options, int(seed), train_dir, tests, work, args.threads)
               for seed in args.seeds.split(",") for name, options in parse_variants(args.variants).items()]
    print("| variant | seed | choose (1,000) | unseen (1,000) | training s |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['seed']} | {r['choose']:.3f} | {r['unseen']:.3f} | {r['train_s']:.0f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
