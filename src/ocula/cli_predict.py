"""`ocula predict RUN INPUTS...`: labels, label sets or boxes per input, on the terminal, as JSON or CSV, and
(detectors) drawn on the images."""
from __future__ import annotations

import argparse
import csv

from ocula.errors import ExitCode, OculaError
from ocula.inference.device import DEVICE_HELP, available_device, check_device


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict images: files, folders, globs, CSV")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("inputs", nargs="+", help="image files, folders, globs ('*.png') or CSV manifests")
    p.add_argument("--topk", type=int, default=1, help="labels per input, most probable first (default: 1)")
    p.add_argument("--json", metavar="PATH", help="write predictions as JSON ('-' for stdout)")
    p.add_argument("--csv", metavar="PATH", help="write predictions as CSV ('-' for stdout)")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default: 32)")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding images (default: ocula's choice; "
                   "0 = in this process)")
    p.add_argument("--min-confidence", type=float, metavar="P", help="mark predictions whose top probability "
                   "is below P as abstained (choose P from evaluate's risk-coverage figures)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False, help="test-time augmentation (see evaluate --tta)")
    g = p.add_argument_group("detectors")
    g.add_argument("--box-threshold", type=float, metavar="S", help="drop boxes scoring below S (default 0.25)")
    g.add_argument("--nms-iou", type=float, metavar="IOU", help="non-maximum suppression merges same-class boxes "
                   "overlapping more than this (default: the model's, FCOS 0.6)")
    g.add_argument("--draw", metavar="DIR", help="write each image with its boxes drawn to DIR")
    p.add_argument("--device", type=check_device, default="auto", help=DEVICE_HELP)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model (eager, with one line, where "
                   "no compiler is usable; the first-compile time is printed)")
    r = p.add_argument_group("many files on Ray Data (pip install 'ocula[ray]'; docs/batch-predict.md)")
    r.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray Data reads, decodes and predicts into a Parquet folder")
    r.add_argument("--out", metavar="DIR", help="engine=ray: the Parquet folder to write (must not exist)")
    r.add_argument("--ray-address", metavar="ADDR", help="join this running Ray cluster ('auto', "
                   "'ray://host:10001'); default: start a local one")
    r.add_argument("--ray-cpus", type=int, metavar="N", help="the local cluster's CPUs (default: every core)")
    r.add_argument("--actors", type=int, metavar="N", help="at most N model copies (default: all CPUs but one, "
                   "or one per GPU)")
    r.add_argument("--runtime", choices=["torch", "onnx", "int8"], default="torch", help="engine=ray: the "
                   "PyTorch bundle, or the run's ONNX export (model.onnx, model.int8.onnx) or a .onnx file")


# What the Ray engine writes instead of the terminal's table, and options it has no use for.
RAY_ONLY = ("out", "ray_address", "ray_cpus", "actors")
LOCAL_ONLY = {"json": "--json", "csv": "--csv", "draw": "--draw", "nms_iou": "--nms-iou", "workers": "--workers"}


def cmd_predict(args) -> int:
    if args.engine == "ray":
        return _predict_on_ray(args)
    if any(getattr(args, name) is not None for name in RAY_ONLY) or args.runtime != "torch":
        raise OculaError("--out, --ray-address, --ray-cpus, --actors and --runtime are for --engine ray")
    from ocula import api

    from ocula.io import write_json, write_output

    model = api.load(args.run, available_device(args.device))
    if args.compile:
        model.compile()
    preds = [p.to_dict() for p in api.predict(model, args.inputs, topk=args.topk, batch_size=args.batch_size,
                                              workers=args.workers, tta=args.tta,
                                              min_confidence=args.min_confidence, box_threshold=args.box_threshold,
                                              nms_iou=args.nms_iou)]
    if args.draw:
        from ocula.evaluation.detection_plots import draw_predictions

        print(f"drew {draw_predictions(preds, args.draw)} images with their boxes in {args.draw}")
    if args.json:
        write_json(args.json, preds)
    if args.csv:
        write_output(args.csv, _predictions_csv(preds, args.topk))
    if "-" not in (args.json, args.csv):
        from ocula.names import display_name

        names = [display_name(p["source"], line=True) for p in preds]
        width = min(60, max((len(n) for n in names), default=10))
        for name, p in zip(names, preds):
            chosen = p["labels"] if p.get("labels") is not None else p["topk"]  # multilabel: the set
            if p.get("boxes") is not None:  # detection: every box, not the k best
                chosen = [{"label": f"{b['label']}@{','.join(f'{v:.0f}' for v in b['box'])}", "prob": b["score"]}
                          for b in p["boxes"]]
            shown = p["error"] and f"ERROR: {display_name(p['error'], line=True)}" or "  ".join(
                f"{t['label']} {t['prob']:.3f}" for t in chosen) or "(no label above its threshold)"
            print(f"{name[-width:]:<{width}}  {shown}" + ("  (abstain)" if p.get("abstained") else ""))
        errors = sum(1 for p in preds if p["error"])
        if errors:
            print(f"{errors} of {len(preds)} inputs could not be read")
        abstained = sum(1 for p in preds if p.get("abstained"))
        if args.min_confidence is not None:
            print(f"{abstained} of {len(preds)} predictions abstained (top probability below {args.min_confidence:g})")
    return ExitCode.USER if preds and all(p["error"] for p in preds) else ExitCode.OK


def _predict_on_ray(args) -> int:
    from ocula import api

    if not args.out:
        raise OculaError("--engine ray writes a Parquet folder: give --out DIR (e.g. --out preds.parquet)")
    given = [flag for name, flag in LOCAL_ONLY.items() if getattr(args, name) not in (None, False)]
    if given:
        raise OculaError(f"{', '.join(given)}: not with --engine ray (it writes Parquet to --out)")
    found = api.batch_predict(args.run, args.inputs, args.out, runtime=args.runtime, device=args.device,
                              compile=args.compile, topk=args.topk, batch_size=args.batch_size, tta=args.tta,
                              min_confidence=args.min_confidence, box_threshold=args.box_threshold,
                              address=args.ray_address, num_cpus=args.ray_cpus, actors=args.actors)
    print(f"{found['rows']:,} files in {found['seconds']:.1f} s ({found['rows_per_s']:,.1f} rows/s): "
          f"{found['predicted']:,} predicted, {found['skipped']:,} skipped (their reason in the error column); "
          f"model {found['model']} → {found['out']}")
    return ExitCode.USER if found["rows"] and not found["predicted"] else ExitCode.OK


def _predictions_csv(preds: list[dict], topk: int) -> str:
    import io

    from ocula.names import csv_cell

    buf = io.StringIO()
    w = csv.writer(buf)
    if any(p.get("boxes") is not None for p in preds):  # detection: one row per box (an image with none: one empty row)
        w.writerow(["source", "label", "score", "x1", "y1", "x2", "y2", "error"])
        for p in preds:
            for b in p.get("boxes") or [{"label": "", "score": None, "box": [""] * 4}]:
                w.writerow([csv_cell(p["source"]), b["label"], "" if b["score"] is None else f"{b['score']:.5f}",
                            *b["box"], p["error"] or ""])
        return buf.getvalue()
    w.writerow(["source", "label", "prob", "error"] + [c for i in range(2, topk + 1) for c in (f"label{i}", f"prob{i}")])
    for p in preds:
        extra = [v for t in p["topk"][1:] for v in (t["label"], f"{t['prob']:.6f}")]
        label = "|".join(t["label"] for t in p["labels"]) if p.get("labels") is not None else p["label"] or ""
        w.writerow([csv_cell(p["source"]), label, "" if p["prob"] is None else f"{p['prob']:.6f}",
                    p["error"] or ""] + extra)
    return buf.getvalue()
