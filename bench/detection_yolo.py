"""Detection peer of issue 25: Ultralytics YOLO11n trained from scratch for the same wall clock as
bench/detection_torchvision_loop.py, scored by the same pycocotools code (bench/detection_common.score).

Ultralytics is AGPL-3.0: a benchmark peer only, never a dependency of ocula. It lives in its own venv:

    python3.11 -m venv /tmp/yolo-venv && /tmp/yolo-venv/bin/pip install ultralytics pycocotools
    /tmp/yolo-venv/bin/python bench/detection_yolo.py --data DIR --budget-s 600 --threads 2 --json out.json

(run with any other interpreter that lacks ultralytics, the script re-executes itself with
$OCULA_YOLO_PYTHON, default /tmp/yolo-venv/bin/python.)

  --data DIR     YOLO layout: DIR/data.yaml, DIR/images/{train,test}, DIR/labels/{train,test}/*.txt.
                 Trained on train; the test split is predicted and scored, and takes no part in training or
                 selection. Ultralytics needs a `val` set: data.yaml's own if it names a non-empty one, else a
                 slice of the train images (--val-slice, symlinked into the work dir); it is used only for
                 Ultralytics' validation at its final epoch; the LAST weights (last.pt, EMA) are scored.
  --gt-coco DIR  optional: take the test ground truth from a COCO layout of the same images (matched by file
                 name) instead of the YOLO labels, so both peers are scored on byte-identical ground truth
  --budget-s S   Ultralytics' own `time=` (hours, overrides epochs; it re-plans the epochs, lr schedule and
                 close_mosaic after the first epoch and stops mid-epoch when time is up). Its clock also runs
                 through its per-epoch checkpoint saves and its final-epoch validation, so it trains a little
                 less than S; the training seconds reported here count only the epochs' batch loops.

Settings: YOLO("yolo11n.yaml") (no .pt download), pretrained=False, amp=False, plots=False, val=False (no
per-epoch validation), device=cpu, batch 16, imgsz --img-size, workers 2, Ultralytics' default hyper-parameters
(SGD/AdamW 'auto', mosaic, ...). Offline: YOLO_OFFLINE=1, a private YOLO_CONFIG_DIR with settings sync=False
and the logger integrations off, and the Arial.ttf download of check_det_dataset skipped (it only serves
plots); any attempt to open an internet socket or resolve a name is refused and listed in the output.
Threads: Ultralytics sets torch threads to min(8, cores - 1) on CPU; --threads N overrides that.

Prints the machine line, Ultralytics' log, then the test scores from detection_common.score (conf 0.001,
iou 0.6, max_det 100), Ultralytics' own model.val(split="test") mAPs for reference, and a RESULT line.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
YOLO_PYTHON = os.environ.get("OCULA_YOLO_PYTHON", "/tmp/yolo-venv/bin/python")


def _reexec_in_yolo_venv() -> None:
    import importlib.util

    if importlib.util.find_spec("ultralytics") is not None:  # not imported yet: the offline set-up comes first
        return
    if not Path(YOLO_PYTHON).exists():
        sys.exit(f"ultralytics is not importable here and {YOLO_PYTHON} does not exist: "
                 "python3.11 -m venv /tmp/yolo-venv && /tmp/yolo-venv/bin/pip install ultralytics pycocotools")
    if os.environ.get("_OCULA_YOLO_REEXEC"):
        sys.exit(f"{YOLO_PYTHON} cannot import ultralytics either")
    os.environ["_OCULA_YOLO_REEXEC"] = "1"
    print(f"re-executing with {YOLO_PYTHON}", flush=True)
    os.execv(YOLO_PYTHON, [YOLO_PYTHON, str(Path(__file__).resolve()), *sys.argv[1:]])


# ------------------------------------------------------------------------------------- offline guards
NETWORK_ATTEMPTS: list[str] = []


def _guard_network() -> None:
    """Refuse (and record) name resolution and internet connections: the benchmark must run offline."""
    real_connect = socket.socket.connect

    def getaddrinfo(host, *a, **k):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            NETWORK_ATTEMPTS.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"refused by bench/detection_yolo.py (offline): {host}")
        return _real_getaddrinfo(host, *a, **k)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            NETWORK_ATTEMPTS.append(f"connect {address}")
            raise OSError(f"refused by bench/detection_yolo.py (offline): {address}")
        return real_connect(self, address)

    _real_getaddrinfo = socket.getaddrinfo
    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect


def _offline_ultralytics(config_dir: Path, threads: int | None) -> None:
    os.environ["YOLO_OFFLINE"] = "1"            # utils.is_online() -> False: no events, no update checks
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)  # private settings.json, not the user's
    from ultralytics import settings

    settings.update({k: False for k in ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard",
                                        "wandb", "vscode_msg", "openvino_msg") if k in settings})
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.torch_utils as torch_utils

    data_utils.check_font = lambda *a, **k: None  # check_det_dataset downloads Arial.ttf for plots: none here
    if threads:
        torch_utils.NUM_THREADS = threads  # select_device() calls torch.set_num_threads(NUM_THREADS) on CPU


# ------------------------------------------------------------------------------------------------ data
def _prepare_yaml(data_dir: Path, work: Path, val_slice: int) -> tuple[Path, Path, dict]:
    """A temporary data.yaml with an absolute `path`, a val set that is never the test split, and `test`."""
    import yaml

    src = data_dir / "data.yaml"
    d = yaml.safe_load(src.read_text())
    root = Path(d.get("path") or data_dir)
    root = root if root.is_absolute() else (data_dir / root).resolve()

    def resolve(key, default):
        v = d.get(key) or default
        return v if Path(v).is_absolute() else str(root / v)

    train, test = resolve("train", "images/train"), resolve("test", "images/test")
    assert Path(test).is_dir(), f"no test split: {test}"
    val = resolve("val", "images/val") if d.get("val") else None
    note = "data.yaml's val"
    if val is None or not Path(val).exists() or not any(Path(val).rglob("*.*")) or Path(val).resolve() == Path(test).resolve():
        imgs = sorted(p for p in Path(train).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        pick = imgs[:: max(1, len(imgs) // val_slice)][:val_slice]
        vdir = work / "val_slice"
        (vdir / "images" / "val").mkdir(parents=True, exist_ok=True)
        (vdir / "labels" / "val").mkdir(parents=True, exist_ok=True)
        for p in pick:  # Ultralytics finds labels by swapping /images/ for /labels/ in the (symlink) path
            (vdir / "images" / "val" / p.name).symlink_to(p.resolve())
            s = str(p)
            i = s.rfind("/images/")
            lab = Path(s[:i] + "/labels/" + s[i + 8:]).with_suffix(".txt")
            if lab.exists():
                (vdir / "labels" / "val" / lab.name).symlink_to(lab.resolve())
        val = str(vdir / "images" / "val")
        note = f"{len(pick)} train images (data.yaml has no usable val)"
    names = d["names"]
    names = names if isinstance(names, dict) else dict(enumerate(names))
    out = {"path": str(root), "train": train, "val": val, "test": test, "names": names}
    yml = work / "data.yaml"
    yml.write_text(yaml.safe_dump(out, sort_keys=False))
    return yml, Path(test), {"val_note": note, "train_dir": train, "val_dir": val, "test_dir": test,
                             "names": [names[k] for k in sorted(names)]}


def _coco_ground_truth(coco_dir: Path, paths: list[Path]):
    import detection_common as dc

    cpaths, ctargets, csizes, _ = dc.read_coco_split(coco_dir, "test")
    by_name = {p.name: (t, s) for p, t, s in zip(cpaths, ctargets, csizes)}
    missing = [p.name for p in paths if p.name not in by_name]
    assert not missing and len(by_name) == len(paths), f"COCO test split differs from the YOLO one: {missing[:5]}"
    return [by_name[p.name][0] for p in paths], [by_name[p.name][1] for p in paths]


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    sys.path.insert(0, str(BENCH_DIR))
    import detection_common as dc

    ap = dc.peer_parser(__doc__, "YOLO layout directory with data.yaml", batch_size=16)
    ap.add_argument("--model", default="yolo11n.yaml", help="architecture yaml: built from scratch, no weights")
    ap.add_argument("--val-slice", type=int, default=16, help="train images in the stand-in val set")
    ap.add_argument("--gt-coco", default=None, help="score against this COCO layout's test split")
    ap.add_argument("--work", default=None, help="Ultralytics' run directory (default: a fresh temp dir)")
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="ocula-yolo-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    _guard_network()
    _offline_ultralytics(work / "config", args.threads)
    import numpy as np
    import torch
    from ultralytics import YOLO, __version__ as ul_version

    if args.threads:
        torch.set_num_threads(args.threads)
    info = dc.machine()
    yml, test_dir, data_info = _prepare_yaml(Path(args.data).resolve(), work, args.val_slice)
    test_paths, test_t, test_sizes = dc.read_yolo_split(test_dir)
    gt_source = "YOLO labels"
    if args.gt_coco:
        test_t, test_sizes = _coco_ground_truth(Path(args.gt_coco), test_paths)
        gt_source = f"COCO {args.gt_coco}"
    K = len(data_info["names"])
    n_train = sum(1 for p in Path(data_info["train_dir"]).rglob("*") if p.suffix.lower() in dc.IMAGE_SUFFIXES)
    print(f"data {args.data}: {n_train} train / {len(test_paths)} test images, {K} classes; val = "
          f"{data_info['val_note']}; test ground truth from {gt_source}; work dir {work}", flush=True)

    # ---- train, with a clock around each epoch's batch loop (no setup, no checkpointing, no validation)
    clock = {"epochs": [], "t": 0.0, "batches": 0, "ul_s": 0.0}

    def epoch_start(trainer):
        clock["t"], clock["batches"] = time.perf_counter(), 0

    def batch_start(trainer):
        clock["batches"] += 1

    def epoch_end(trainer):
        n = len(trainer.train_loader.dataset)
        full = clock["batches"] >= len(trainer.train_loader)
        images = n if full else min(n, clock["batches"] * trainer.batch_size)
        clock["epochs"].append({"epoch": trainer.epoch + 1, "seconds": time.perf_counter() - clock["t"],
                                "batches": clock["batches"], "images": images, "fraction": images / n,
                                "planned_epochs": trainer.epochs})

    def fit_epoch_end(trainer):  # Ultralytics' own clock, through its saves and final-epoch validation
        clock["ul_s"] = time.time() - trainer.train_time_start

    model = YOLO(args.model)
    for event, fn in (("on_fit_epoch_end", fit_epoch_end), ("on_train_epoch_start", epoch_start), ("on_train_batch_start", batch_start),
                      ("on_train_epoch_end", epoch_end)):
        model.add_callback(event, fn)
    t0 = time.perf_counter()
    model.train(data=str(yml), time=args.budget_s / 3600, epochs=100, imgsz=args.img_size, batch=args.batch_size,
                device="cpu", workers=args.workers, pretrained=False, amp=False, plots=False, val=False,
                project=str(work), name="train", exist_ok=True, seed=args.seed, verbose=True)
    train_call_s = time.perf_counter() - t0
    trainer = model.trainer
    last = Path(trainer.last)
    train_s = sum(e["seconds"] for e in clock["epochs"])
    images_seen = sum(e["images"] for e in clock["epochs"])
    epochs_done = sum(e["fraction"] for e in clock["epochs"])
    ul_train_s = clock["ul_s"]

    # ---- predict the test split with the last weights, score with pycocotools (detection_common.score)
    model = YOLO(str(last))
    detections, t0 = [], time.perf_counter()
    for r in model.predict(source=[str(p) for p in test_paths], imgsz=args.img_size, conf=0.001, iou=0.6,
                           max_det=100, device="cpu", stream=True, verbose=False):
        h, w = r.orig_shape
        b = r.boxes.xyxy.cpu().numpy() / np.array([w, h, w, h], np.float32)
        detections.append(np.c_[b, r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy()].astype(np.float32))
    eval_s = time.perf_counter() - t0
    scores = dc.score(test_t, detections, test_sizes, num_classes=K)
    print("test " + dc.format_scores(scores), flush=True)

    # ---- Ultralytics' own test-split mAP, for reference (its matcher, 101-point COCO-style AP)
    m = model.val(data=str(yml), split="test", imgsz=args.img_size, batch=args.batch_size, conf=0.001, iou=0.6,
                  max_det=100, device="cpu", workers=args.workers, plots=False, project=str(work), name="val_test",
                  exist_ok=True, verbose=False)
    ul = {"map": float(m.box.map), "map50": float(m.box.map50), "map75": float(m.box.map75)}

    result = {"peer": "ultralytics_yolo11n", "ultralytics": ul_version, "model": args.model, "img_size": args.img_size,
              "batch_size": args.batch_size, "budget_s": args.budget_s, "train_s": train_s,
              "ultralytics_train_clock_s": ul_train_s, "train_call_s": train_call_s, "images_seen": images_seen,
              "epochs": epochs_done, "train_images_per_s": images_seen / train_s if train_s else 0.0,
              "train_images_per_s_ultralytics_clock": images_seen / ul_train_s if ul_train_s else 0.0,
              "threads": torch.get_num_threads(), "eval_s": eval_s, "eval_images_per_s": len(test_paths) / eval_s,
              "train_images": n_train, "test_images": len(test_paths), "classes": K, "weights": str(last),
              "ground_truth": gt_source, **scores, "ultralytics_val_test": ul,
              "network_attempts": NETWORK_ATTEMPTS, **{k: v for k, v in data_info.items() if k != "names"}}
    print(f"Ultralytics model.val(split='test'): mAP {ul['map']:.4f} mAP50 {ul['map50']:.4f} mAP75 {ul['map75']:.4f}")
    print(f"network attempts refused: {NETWORK_ATTEMPTS or 'none'}")
    print(f"RESULT ultralytics YOLO11n: mAP {scores['map']:.4f} mAP50 {scores['map50']:.4f} mAP75 {scores['map75']:.4f} "
          f"| {result['train_images_per_s']:.2f} train img/s | {epochs_done:.2f} epochs in {train_s:.1f} s "
          f"(budget {args.budget_s:.0f} s; Ultralytics' clock {ul_train_s:.1f} s) | {result['threads']} threads "
          f"| predict {eval_s:.1f} s", flush=True)
    dc.write_json(args.json, {"command": " ".join([sys.executable] + sys.argv), "args": vars(args), "machine": info,
                              "result": result, "epochs": clock["epochs"]})
    return result


if __name__ == "__main__":
    _reexec_in_yolo_venv()
    main()
