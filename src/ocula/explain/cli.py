"""`ocula explain RUN IMAGES... [--method M] [--target CLASS] [--layer NAME] [--out DIR]`."""
from __future__ import annotations

import argparse

from ocula.errors import ExitCode
from ocula.names import display_name

METHOD_CHOICES = ("auto", "gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "rollout", "attn-grad", "occlusion", "ig")


def register(subparsers) -> dict:
    p = subparsers.add_parser("explain", help="saliency maps: CAMs for CNNs, attention rollout for ViTs",
                              description="Explain predictions: writes an overlay PNG per input, grid.png, "
                              "maps.npz and summary.json.", formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="default method: gradcam for CNNs, rollout for vision transformers, "
                              "layercam on the top box for detectors")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("inputs", nargs="+", help="image files, folders, globs or CSV manifests")
    p.add_argument("--method", default="auto", choices=METHOD_CHOICES, metavar="METHOD",
                   help=f"one of {', '.join(METHOD_CHOICES)} (default: auto)")
    p.add_argument("--target", help="class name or index to explain (default: each image's prediction; "
                   "a detector: the best box of that class, else each image's top box)")
    p.add_argument("--layer", help="CAM target layer by module name (default: chosen per architecture)")
    p.add_argument("--out", default="maps", metavar="DIR", help="output folder (default: maps/)")
    p.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"], help="rollout only")
    p.add_argument("--discard-ratio", type=float, default=0.0, help="rollout only: weakest attention dropped")
    p.add_argument("--batch-size", type=int, default=16, help="images per model call (default: 16)")
    return {"explain": cmd_explain}


def cmd_explain(args) -> int:
    from ocula.explain.api import explain_to_folder  # lazy: ocula --help loads no explain code

    summary = explain_to_folder(args.run, args.inputs, args.out, method=args.method, target=args.target,
                                layer=args.layer, batch_size=args.batch_size, head_fusion=args.head_fusion,
                                discard_ratio=args.discard_ratio)
    for item in summary["items"]:
        shown = f"ERROR: {item['error']}" if item["error"] else f"{item['label']} {item['prob']:.3f}"
        if item.get("box"):
            shown += " box " + " ".join(f"{v:.3f}" for v in item["box"]) + (f" ({item['note']})" if item.get("note") else "")
        print(f"{display_name(item['source'], line=True)[-60:]:<60}  {shown}")
    layer = f" on layer {summary['layer']}" if summary["layer"] else ""
    print(f"{summary['method']}{layer}: {summary['explained']} maps in {summary['out']}/ "
          f"(overlays, maps.npz, summary.json)" + (f"; {summary['errors']} inputs unreadable" if summary["errors"] else ""))
    return ExitCode.USER if summary["explained"] == 0 else ExitCode.OK  # no input could be read
