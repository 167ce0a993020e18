"""Model-randomisation sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

A saliency method that explains the *model* must give different maps when the model's weights are
replaced by random ones. For each method we compare, image by image, the map of the trained model
with the map of the same architecture re-initialised (same input, same target class: the true
label), by Spearman rank correlation over pixels. Pass: mean correlation ≤ 0.5. A method that
passes is not thereby proven faithful; a method that fails is explaining the input, not the model.

Uses the two models trained by bench/explain_pointing_game.py (trained first if missing).

    .venv/bin/python bench/explain_sanity.py            # ~3 min on 2 busy cores
    .venv/bin/python bench/explain_sanity.py --quick
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from explain_pointing_game import MODELS, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.5


def randomisation_check(run: str, val: str, methods: list[str], n: int, seeds: int) -> list[dict]:
    import ocula
    from ocula.bundle import build_from_meta
    from ocula.explain.api import explain_tensor
    from ocula.explain.synthetic import read_boxes

    clf = ocula.load(run)
    boxes = read_boxes(val)
    picked = [boxes[i] for i in np.linspace(0, len(boxes) - 1, n).astype(int)]
    x = torch.stack([clf.preprocess(str(Path(val) / b["path"])) for b in picked])
    labels = torch.tensor([clf.classes.index(b["label"]) for b in picked])
    randoms = []
    for seed in range(seeds):  # several re-initialisations: one random draw could be lucky
        torch.manual_seed(1000 + seed)
        randoms.append(build_from_meta(clf.meta).eval())
    rows = []
    for method in methods:
        t = time.perf_counter()
        trained, _ = explain_tensor(clf.model, x, method, classes=labels)
        rhos, flat = [], 0
        for model in randoms:
            shuffled, _ = explain_tensor(model, x, method, classes=labels)
            for a, b in zip(trained, shuffled):
                rho = spearman(a, b)
                flat += rho is None
                if rho is not None:
                    rhos.append(rho)
        mean = float(np.mean(rhos)) if rhos else float("nan")
        rows.append({"method": method, "pairs": len(rhos), "flat_maps": flat, "mean_spearman": mean,
                     "median_spearman": float(np.median(rhos)) if rhos else float("nan"),
                     "mean_abs_spearman": float(np.mean(np.abs(rhos))) if rhos else float("nan"),
                     "passes": bool(mean <= THRESHOLD), "seconds": round(time.perf_counter() - t, 1)})
    return rows


def spearman(a: np.ndarray, b: np.ndarray):
    """Rank correlation over pixels; None when either map is constant (correlation undefined)."""
    from scipy.stats import spearmanr

    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(spearmanr(a, b).statistic)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--seeds", type=int, default=3, help="independent re-initialisations per method")
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--epochs-cnn", type=int, default=3)
    p.add_argument("--epochs-vit", type=int, default=6)
    p.add_argument("--work", default="/tmp/ocula-bench-explain")
    p.add_argument("--json", default=str(ROOT / "docs/bench/explain_sanity.json"))
    p.add_argument("--threads", type=int, default=1, help="torch threads; 1 is fastest on a shared 2-core box")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.per_class, args.val_per_class, args.epochs_cnn, args.epochs_vit = 20, 5, 1, 1
        args.images, args.seeds, args.json = 6, 1, str(Path(args.work) / "quick_sanity.json")
    from ocula.io import write_json

    info = print_machine()
    setup = prepare(Path(args.work), args.per_class, args.val_per_class, args.epochs_cnn, args.epochs_vit)
    results = {"machine": info, "settings": vars(args), "threshold": THRESHOLD, "models": {}}
    for name, (_, methods, _) in MODELS.items():
        rows = randomisation_check(setup["runs"][name], setup["val"], methods, args.images, args.seeds)
        for r in rows:
            print(f"{name} {r['method']:<10} mean Spearman {r['mean_spearman']:+.3f} (median "
                  f"{r['median_spearman']:+.3f}, {r['pairs']} pairs, {r['flat_maps']} flat)  "
                  f"{'PASS' if r['passes'] else 'FAIL'}  {r['seconds']} s", flush=True)
        results["models"][name] = {"run": setup["runs"][name], "methods": rows}
    write_json(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
