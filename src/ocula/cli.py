"""`ocula COMMAND ...`: each command parses, calls one function of ocula.api, prints.

Training options are generated from the config's sections (ocula.config_sections), so the CLI, the
Python API and saved configs share one set of names, defaults and help texts. `key=value` works too
(`ocula train digits epochs=3`), and `--config FILE` reads them from JSON or YAML.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

from ocula import log
from ocula.cli_predict import add_predict_parser, cmd_predict
from ocula.cli_train import add_train_parser, split_overrides
from ocula.errors import ExitCode, OculaError, did_you_mean, one_line
from ocula.inference.device import DEVICE_HELP, check_device


class Parser(argparse.ArgumentParser):
    """One-line errors with "did you mean" for misspelt options."""

    def error(self, message):
        bad = message.split(": ")[-1].split()[0] if "unrecognized arguments" in message else ""
        hint = did_you_mean(bad.split("=")[0], self._option_string_actions) if bad else ""
        self.exit(2, f"ocula: error: {message}{hint}\n")


SUBPARSERS: dict = {}

# Feature packages add commands without touching this file: each module named here defines
# `register(subparsers) -> {command_name: handler(args) -> int}` and imports heavy things lazily.
PLUGIN_MODULES = ("ocula.export.cli", "ocula.serve.cli", "ocula.audit.cli", "ocula.explain.cli",
                  "ocula.cli_datasets", "ocula.transfer.cli", "ocula.report.cli")


def build_parser() -> Parser:
    parser = Parser(prog="ocula", description="Image and video recognition: train, evaluate, predict.",
                    allow_abbrev=False)
    parser.add_argument("--version", action="store_true", help="print the versions of ocula, Python, torch, "
                        "torchvision, timm and onnxruntime")
    # Read by _main before parsing, so they work after the command too (`ocula train … --quiet`).
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and results")
    parser.add_argument("--verbose", action="store_true", help="also debug messages")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sub._parser_class = lambda **kw: Parser(allow_abbrev=False, **kw)
    add_train_parser(sub)
    p = sub.add_parser("evaluate", help="metrics of a trained model on a labelled dataset")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("data", help="built-in name, folder or CSV with labels")
    p.add_argument("--split", choices=["train", "val", "test"], help="which split (default: test, else held-out val)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON ('-' for stdout)")
    p.add_argument("--out", metavar="DIR", help="write report.json, CSVs and the confusion-matrix plot here "
                   "(default: RUN/eval-DATA)")
    add_loader_options(p)
    p.add_argument("--device", type=check_device, default="auto", help=DEVICE_HELP)
    p.add_argument("--explain-errors", type=int, metavar="N", help="gallery of the N most confident errors "
                   "with their saliency maps (OUT/errors/)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False, help="test-time augmentation: "
                   "average over the flips training allowed and four 1-px-scale shifts (5-6x the compute)")
    p = sub.add_parser("calibrate", help="refit a run's temperature on other labelled data (stored in the bundle)")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("data", help="built-in name, folder or CSV with labels (not the test set you report on)")
    p.add_argument("--split", choices=["train", "val", "test"], help="which split (default: test, else val, else all)")
    add_loader_options(p)
    add_predict_parser(sub)
    p = sub.add_parser("models", help="list model names (ocula's own and timm's)")
    p.add_argument("--filter", default="*", help="substring or glob, e.g. vit or 'resnet*'")
    p.add_argument("--own", action=argparse.BooleanOptionalAction, default=False,
                   help="only ocula's own families (--no-own: timm's too)")
    sub.add_parser("recipes", help="list shipped training recipes")
    p = sub.add_parser("datasets", help="list built-in datasets, or export one to a folder of PNGs")
    p.add_argument("action", nargs="?", choices=["list", "export", "make"], default="list",
                   help="list (default): the built-in datasets; export: one to PNGs; make: a generated one")
    p.add_argument("name", nargs="?", help="export: the built-in dataset; make: moving-shapes or photo-objects")
    p.add_argument("out", nargs="?", help="export, make: target folder (class sub-folders are created)")
    p.add_argument("--split", default="test", help="export: which split (default: test)")
    p.add_argument("--limit", type=int, help="export at most this many images")
    p = sub.add_parser("import", help="an ocula model from pretrained weights, no training (ImageNet names)",
                       description="Write a model directory from pretrained weights: timm's ImageNet-1k class "
                       "names (or --classes), the model's pretrained preprocessing, no temperature.")
    p.add_argument("model", help="model name (a timm name such as efficientnet_lite0, or ocula's own)")
    p.add_argument("--pretrained", nargs="?", const=True, default=True, metavar="FILE",
                   help="weights file (.pth/.safetensors; names or order must match the model); alone or "
                   "left out: timm's hub weights (needs the network)")
    p.add_argument("--out", metavar="DIR", help="model directory (default: runs/imported-MODEL[-N])")
    p.add_argument("--classes", metavar="FILE", help="class names, one per line, for a head that is not "
                   "ImageNet-1k's 1000 classes")
    _register_plugins(sub)
    SUBPARSERS.update(sub.choices)
    return parser


def add_loader_options(p) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (default: 64)")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding images (default: the cores, at "
                   "most 4; 0 = in this process)")


VERSION_OF = ("torch", "torchvision", "timm")  # what a bug report needs besides ocula's own
OPTIONAL_VERSION_OF = ("onnxruntime", "onnxruntime-gpu")  # shown when installed


def version_text() -> str:
    """`ocula --version`: one `name version` line each, read from the installed metadata (no imports)."""
    import platform
    from importlib import metadata

    from ocula.version import __version__

    lines = [f"ocula {__version__}", f"python {platform.python_version()}"]
    for name in VERSION_OF + OPTIONAL_VERSION_OF:
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            if name in VERSION_OF:
                lines.append(f"{name} not installed")
    return "\n".join(lines)


def _register_plugins(sub) -> None:
    import importlib

    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # the feature package is not there; fine
                continue
            raise
        COMMANDS.update(module.register(sub))


def cmd_train(args) -> int:
    from ocula import api
    from ocula.run_dir import monitor_in  # app layer: `ocula --help` must not import torch (ocula.io)

    overrides = split_overrides(args)
    if not args.data and not overrides.get("resume"):
        raise OculaError("train needs DATA (a built-in name, folder or CSV) or --resume RUN")
    run = api.train(args.data, **overrides)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    final = run.summary["final"]
    key = monitor_in(final)  # val/accuracy, val/mAP (val_acc before issue 24)
    val = f", {key} {final[key]:.4f}" if key and final.get(key) is not None else ""
    print(f"done: {run.summary['epochs_run']} epochs in {run.summary['train_time_s']:.1f} s of training{val}; "
          f"run saved to {run.dir}")
    return 0


def cmd_evaluate(args) -> int:
    from ocula import api
    from ocula.run_dir import EvalDir, RunDir
    from ocula.evaluation.report import format_report, format_selective
    from ocula.io import write_json

    out = args.out or str(RunDir(args.run).evaluation(args.data).path)
    report = api.evaluate(args.run, args.data, split=args.split, batch_size=args.batch_size, out_dir=out,
                          workers=args.workers, tta=args.tta, device=args.device)
    if args.json:
        write_json(args.json, report)
    if args.json != "-":
        print(f"{args.data} [{report['split']}]")
        print(format_report(report))
        for line in format_selective(report):
            print(line)
        if report["skipped"]:
            print(f"skipped {len(report['skipped'])} unreadable files (listed in {out}/report.json)")
        pictures = [p.name for p in (EvalDir(out).confusion_png, EvalDir(out).pr_curves_png,
                                     EvalDir(out).detections_png, EvalDir(out).reliability_png) if p.is_file()]
        print(f"report and CSVs in {out}/" + (f" (pictures: {', '.join(pictures)})" if pictures else ""))
    if args.explain_errors:
        from ocula.explain.gallery import explain_errors

        shown = explain_errors(args.run, args.data, args.explain_errors, EvalDir(out).errors, split=args.split)
        print(f"{shown['shown']} of {shown['errors']} errors explained in {shown['out']}/ (errors.png, errors.csv)")
    return 0


def cmd_models(args) -> int:
    from ocula.models.registry import describe, list_models

    names = list_models(args.filter, include_timm=not args.own)
    for name in names:
        d = describe(name) if not name.startswith("timm") else {}
        print(f"{name:<40} {d.get('family', ''):<10} {d.get('source', '')}")
    print(f"{len(names)} models")
    return 0


def cmd_recipes(args) -> int:
    from importlib import resources

    from ocula.config import list_recipes

    for name in list_recipes():
        doc = json.loads((resources.files("ocula") / "recipes" / f"{name}.json").read_text()).get("_doc", "")
        print(f"{name:<20} {doc}")
    return 0


def cmd_datasets(args) -> int:
    from ocula.data.builtin import export_builtin, list_builtin
    from ocula.modality.sources import resolve_data  # noqa: F401  (registers every built-in)

    if args.action == "make":  # generated datasets written to disk (ocula.modality.video)
        from ocula.cli_datasets import make_dataset

        return make_dataset(args)
    if args.action == "export":
        if not args.name or not args.out:
            raise OculaError("usage: ocula datasets export NAME OUT [--split test] [--limit N]")
        n = export_builtin(args.name, args.out, split=args.split, limit=args.limit)
        print(f"wrote {n} images to {args.out}")
        return 0
    for name in list_builtin():
        print(name)
    return 0


def cmd_calibrate(args) -> int:
    from ocula import api

    result = api.calibrate(args.run, args.data, split=args.split, batch_size=args.batch_size, workers=args.workers)
    print(f"{args.data} [{result['split']}]: {result['reason']}")
    if result.get("before"):
        b, a = result["before"], result["after"]
        print(f"  ECE {b['ece']:.4f} → {a['ece']:.4f}   NLL {b['nll']:.4f} → {a['nll']:.4f}   "
              f"Brier {b['brier']:.4f} → {a['brier']:.4f}")
    print(f"stored in {result['bundle']}")
    return ExitCode.OK if result.get("fitted") else ExitCode.USER


def cmd_import(args) -> int:
    from ocula.engine.model_import import import_model

    out = import_model(args.model, pretrained=args.pretrained, out=args.out, classes=args.classes)
    print(f"imported {args.model} to {out} (predict, serve, export, explain and embed take it like a run)")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "calibrate": cmd_calibrate,
            "import": cmd_import, "models": cmd_models,
            "recipes": cmd_recipes, "datasets": cmd_datasets}


def main(argv=None) -> int:
    """`ocula …` → its exit code (ocula.errors.ExitCode, docs/cli.md): 0 ok; 2 a problem the user can fix
    (one line on stderr); 3 a failed gate; 1 an internal error (one line on stderr, the traceback in a
    crash log and, with --verbose, on stderr; OCULA_DEBUG=1 re-raises); 130 interrupted."""
    try:
        return int(_main(argv))
    except OculaError as e:  # GateFailed included: its exit_code is 3
        return _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        print("ocula: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `ocula predict … | head`: the reader left; nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return ExitCode.BROKEN_PIPE
    except OSError as e:  # the disk (full, read-only, no permission) or a file that vanished
        if os.environ.get("OCULA_DEBUG") and e.errno not in DISK_ERRNOS:
            raise
        from ocula.errors import disk_error

        return _fail(str(disk_error(e)), ExitCode.USER)
    except Exception as e:  # noqa: BLE001 - the last resort: a bug of ours, one line + a crash log
        if os.environ.get("OCULA_DEBUG"):
            raise
        log_path = _crash_log(e, argv)
        if log.logger.isEnabledFor(logging.DEBUG):  # --verbose: the traceback here too, above the one line
            import traceback

            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        where = f"details in {log_path}" if log_path else "set OCULA_DEBUG=1 for the traceback"
        return _fail(f"internal error: {type(e).__name__}: {one_line(e)} ({where})", ExitCode.INTERNAL)


DISK_ERRNOS = (28, 30, 13, 1, 122, 5)  # ENOSPC, EROFS, EACCES, EPERM, EDQUOT, EIO


def _fail(message: str, code: int) -> int:
    from ocula.names import display_name

    print(f"ocula: error: {display_name(message, line=True)}", file=sys.stderr)
    return int(code)


def _crash_log(e: BaseException, argv) -> str:
    """Write the traceback to ~/.cache/ocula/crash-<time>.log (else the temp folder) → its path or ''."""
    import tempfile
    import time
    import traceback

    from ocula.version import __version__

    text = (f"ocula {__version__} crashed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f"argv: {sys.argv[:1] + list(argv if argv is not None else sys.argv[1:])!r}\n\n"
            + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    dirs = [os.environ.get("OCULA_CRASH_DIR"), os.path.join(os.path.expanduser("~"), ".cache", "ocula"),
            tempfile.gettempdir()]
    for d in filter(None, dirs):
        try:
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, name)
            with open(path, "w", encoding="utf-8", errors="backslashreplace") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return ""


def _safe_stdout() -> None:
    """A filename that is not valid UTF-8 must never crash a print: strict streams get backslash escapes
    (a surrogateescape stream, the POSIX-locale default, already writes the original bytes)."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _take_verbosity(argv: list[str]) -> list[str]:
    """Set the log level from --quiet/-q/--verbose wherever they stand (before a `--`) → argv without them."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = set(argv[:end]) & {"--quiet", "-q", "--verbose"}
    log.set_verbosity(quiet=bool(flags & {"--quiet", "-q"}), verbose="--verbose" in flags)
    return [a for a in argv[:end] if a not in flags] + argv[end:]


def _main(argv=None) -> int:
    _safe_stdout()
    parser = build_parser()
    argv = _take_verbosity(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            options = SUBPARSERS[args.command]._option_string_actions if args.command else {}
            hint = did_you_mean(extra[0].split("=")[0], options)
            before = argv[argv.index(extra[0]) - 1] if argv.index(extra[0]) > 0 else ""
            if extra[0].lower() in ("true", "false", "yes", "no", "1", "0") and before.startswith("--"):
                hint = f" ({before} takes no value: {before} turns it on, --no-{before[2:]} off)"  # `--report false`
            parser.exit(2, f"ocula: error: unrecognized arguments: {' '.join(extra)}{hint}\n")
    if args.version:
        print(version_text())
        return ExitCode.OK
    if not args.command:
        parser.print_help()
        return ExitCode.USER
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
