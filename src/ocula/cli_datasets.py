"""Generated datasets: `ocula datasets make moving-shapes|photo-objects|clips OUT` (the `make` action of `ocula datasets`).

`register` adds no command of its own; it gives the existing `datasets` command the options that
`make` reads. Training, evaluation and prediction on them use the ordinary commands.
"""
from __future__ import annotations

import argparse

from ocula.errors import OculaError

GENERATORS = ("moving-shapes", "photo-objects", "clips")
CLIP_SETS = ("direction", "rotation", "speed", "appear")  # ocula.data.synth_clips.SETS


def register(subparsers) -> dict:
    p = subparsers.choices.get("datasets")
    if p is not None:
        g = p.add_argument_group("make moving-shapes")
        g.add_argument("--format", dest="clip_format", choices=["mp4", "frames"], default="mp4",
                       help="H.264 .mp4 files, or folders of PNG frames")
        g.add_argument("--motion", default="vertical", help="vertical (down/up), horizontal (left/right) or "
                       "scale (grow/shrink)")
        g.add_argument("--clips", type=int, default=60, help="training clips per class (moving-shapes test: a third; clips: --test-clips)")
        g.add_argument("--frames", type=int, default=16, help="frames per clip")
        g.add_argument("--size", type=int, help="side in pixels (default: moving-shapes 32, clips 64, photo-objects 256)")
        g.add_argument("--seed", type=int, default=0, help="seed of the generator (default: 0)")
        g = p.add_argument_group("make clips (an object moving over a photograph; the label lives only in the order of "
                                 "frames)")
        g.add_argument("--set", dest="clip_set", choices=CLIP_SETS, default="direction",
                       help="direction (left/right/zoom in/out), rotation (cw/ccw), speed, appear (order)")
        g.add_argument("--test-clips", type=int, help="test clips per class (default: as --clips)")
        g.add_argument("--val-clips", type=int, default=0,
                       help="validation clips per class in OUT/val/ (default none: ocula cross-fits or carves)")
        g = p.add_argument_group("make photo-objects (boxes on scikit-image's photographs)")
        g.add_argument("--layout", choices=["coco", "yolo"], default="coco", help="COCO JSON or YOLO data.yaml")
        g.add_argument("--train", type=int, default=300, help="training images")
        g.add_argument("--val", type=int, default=0, help="validation images (default none: ocula carves one)")
        g.add_argument("--test", type=int, default=150, help="test images")
        g.add_argument("--classes", type=int, default=4, help="object classes")
        g.add_argument("--hostile", action=argparse.BooleanOptionalAction, default=False,
                       help="add broken annotations and files to train")
    return {}


def make_dataset(args) -> int:
    """`ocula datasets make NAME OUT`: write a generated dataset to disk."""
    if args.name not in GENERATORS or not args.out:
        raise OculaError(f"usage: ocula datasets make {'|'.join(GENERATORS)} OUT (ocula datasets --help: options)")
    if args.name == "photo-objects":
        from ocula.data.synth_detection import write_photo_objects  # app layer: ocula --help imports no numpy

        found = write_photo_objects(args.out, train=args.train, val=args.val, test=args.test,
                                    size=args.size or 256, classes=args.classes, layout=args.layout,
                                    seed=args.seed, hostile=args.hostile)
        counts = ", ".join(f"{s} {c['images']} images ({c['boxes']} boxes)" for s, c in found["splits"].items())
        print(f"wrote {found['layout']} layout to {args.out}: {counts}; classes {', '.join(found['classes'])}")
        return 0
    if args.name == "clips":
        from ocula.data.synth_clips import write_clip_set  # app layer: ocula --help imports no numpy

        counts = write_clip_set(args.out, args.clip_set, per_class=args.clips, test_per_class=args.test_clips,
                                val_per_class=args.val_clips, frames=args.frames, size=args.size or 64,
                                fmt=args.clip_format, seed=args.seed)
        val = f", {counts['val']} validation" if counts.get("val") else ""
        print(f"wrote {counts['train']} training{val} and {counts['test']} test {args.clip_set} clips to {args.out}")
        return 0
    from ocula.modality.video.moving_shapes import write_moving_shapes  # the video package imports torch

    counts = write_moving_shapes(args.out, per_class=getattr(args, "clips", 60), motion=getattr(args, "motion", "vertical"),
                                 frames=getattr(args, "frames", 16), size=getattr(args, "size", None) or 32,
                                 fmt=getattr(args, "clip_format", "mp4"), seed=getattr(args, "seed", 0))
    print(f"wrote {counts['train']} training and {counts['test']} test clips to {args.out}")
    return 0
