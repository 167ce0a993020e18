"""Weight averages of a small-data fine-tune, measured after the fact on one training run (issue 23).

    python bench/lowdata_soup.py [--dataset fashion-mnist] [--per-class 30] [--work DIR] [--json FILE]

One `ocula train DIR/train --model efficientnet_lite0 --pretrained FILE` run with ocula's defaults (folder
alone: cross-fit, lp-ft, head refit), during which the weights are copied, not changed: every cross-fit
fold's model at every epoch and the final run's at every epoch. Then, for each variant, the weights are
loaded into the shipped model, its linear head refitted on all training images (as ocula's refit does:
L-BFGS, C = 1) and it is scored with `ocula.evaluate` on two test folders:

    default   the model ocula shipped (no change)
    control   the final run's weights at the chosen epoch, head refitted here (checks this path = default)
    soup      uniform average of the final run's and every fold model's weights at the chosen epoch
              (one pretrained start, different subsets of the data: a "model soup"), head refitted
    swa       uniform average of the final run's last 5 epochs (up to the chosen one), head refitted

Test folders (Fashion-MNIST): `choose` = the first 1,000 of the seeded test order (issue 13 tuned its defaults
on them: the set to choose on), `unseen` = the next 1,000 (`--test-skip 1000`, the issue-23 must-show's images,
on which nothing was chosen). digits: one test folder (the official 359), a check only.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402
from transfer_lowdata import lite0_file, write_folders  # noqa: E402

FOLDS: list = []  # [{epoch: state_dict}] per fold
FINAL: dict = {}  # epoch → state_dict


def _snapshot(model) -> dict:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


def _patch_cross_fit():
    from ocula.engine import cross_fit

    class Recorder(cross_fit.HeldOutRecorder):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.states = {}
            FOLDS.append(self.states)

        def on_epoch_end(self, trainer, epoch, logs):
            super().on_epoch_end(trainer, epoch, logs)
            self.states[int(logs["epoch"])] = _snapshot(trainer.eval_model)

    cross_fit.HeldOutRecorder = Recorder


def _final_callback():
    from ocula.engine.callbacks import Callback

    class Stash(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            FINAL[int(logs["epoch"])] = _snapshot(trainer.eval_model)

    return Stash()


def _average(states: list) -> dict:
    out = {}
    for k, v in states[0].items():
        out[k] = (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
    return out


def _with_refitted_head(run: str, state: dict, train_dir: str):
    """The shipped model with `state` loaded, then its head refitted on all training images."""
    import torch

    import ocula
    from ocula.engine.probe import fit_head, linear_head
    from ocula.inference.scoring import labelled_split, predict_split

    clf = ocula.load(run)
    clf.model.load_state_dict(state)
    head = linear_head(clf.model)
    captured = []
    hook = head.register_forward_hook(lambda _m, inp, _o: captured.append(inp[0].detach().double().flatten(1)))
    found = predict_split(clf, labelled_split(clf, train_dir, "train").samples)
    hook.remove()
    assert sum(len(c) for c in captured) == len(found.labels), "one feature row per training image"
    weight, bias, _, _ = fit_head(torch.cat(captured), torch.as_tensor(found.labels), clf.task, head.out_features, 1.0)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
    return clf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/ocula-lowdata-soup")
    ap.add_argument("--json", default=None)
    ap.add_argument("--extra", default="", help="key=value,... added to the ocula run (a quick smoke test: epochs=2)")
    args = ap.parse_args(argv)
    info = print_machine()
    import torch

    import ocula

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.dataset == "fashion-mnist":
        tests = {"choose": write_folders(work, args.per_class, 1000, dataset=args.dataset) / "test",
                 "unseen": write_folders(work, args.per_class, 1000, dataset=args.dataset, test_skip=1000) / "test"}
    else:
        tests = {"check": write_folders(work, args.per_class, 1000, dataset=args.dataset) / "test"}
    train_dir = str(next(iter(tests.values())).parent / "train")  # the same training images in every folder
    _patch_cross_fit()
    t0 = time.perf_counter()
    from ocula.config import build_config
    from ocula.engine.callbacks import default_callbacks

    options = dict(model="efficientnet_lite0", pretrained=lite0_file(), threads=args.threads, out=str(work / "run"),
                   **dict(kv.split("=", 1) for kv in args.extra.split(",") if kv))
    # callbacks= replaces the trainer's defaults (the checkpoint among them): keep them, add the stash
    run = ocula.train(train_dir, callbacks=default_callbacks(build_config(train_dir, **options)) + [_final_callback()],
                      **options)
    train_s = time.perf_counter() - t0
    record = json.loads((Path(run.dir) / "cross_fit.json").read_text()) if (Path(run.dir) / "cross_fit.json").is_file() else {}
    best = int(record.get("best_epoch") or max(FINAL))
    variants = {"control": FINAL[best],
                "soup": _average([FINAL[best]] + [f[best] for f in FOLDS if best in f]),
                "swa": _average([FINAL[e] for e in range(max(1, best - 4), best + 1) if e in FINAL])}
    results = {"train_s": train_s, "best_epoch": best, "folds": len(FOLDS),
               "cross_fit": record.get("summary"), "accuracy": {}}
    models = {"default": ocula.load(run.dir)}
    models.update({name: _with_refitted_head(run.dir, state, train_dir) for name, state in variants.items()})
    for name, clf in models.items():
        results["accuracy"][name] = {}
        for test_name, test in tests.items():
            acc = float(ocula.evaluate(clf, str(test))["accuracy"])
            results["accuracy"][name][test_name] = acc
            print(f"RESULT variant={name} test={test_name} accuracy={acc:.4f}", flush=True)
    print(f"folds {len(FOLDS)}, chosen epoch {best}, training {train_s:.0f} s: {record.get('summary')}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
