"""CLI for video: `ocula datasets make moving-shapes OUT` (the `make` action of `ocula datasets`).

`register` adds no command of its own; it gives the existing `datasets` command the options that
`make` reads. Training, evaluation and prediction on clips use the ordinary commands.
"""
from __future__ import annotations

from ocula.errors import OculaError

GENERATORS = ("moving-shapes",)


def register(subparsers) -> dict:
    p = subparsers.choices.get("datasets")
    if p is not None:
        g = p.add_argument_group("make moving-shapes")
        g.add_argument("--format", dest="clip_format", choices=["mp4", "frames"], default="mp4",
                       help="H.264 .mp4 files, or folders of PNG frames")
        g.add_argument("--motion", default="vertical", help="vertical (down/up), horizontal (left/right) or "
                       "scale (grow/shrink)")
        g.add_argument("--clips", type=int, default=60, help="training clips per class (test: a third)")
        g.add_argument("--frames", type=int, default=16, help="frames per clip")
        g.add_argument("--size", type=int, default=32, help="frame side in pixels")
        g.add_argument("--seed", type=int, default=0)
    return {}


def make_dataset(args) -> int:
    """`ocula datasets make NAME OUT`: write a generated dataset to disk."""
    from ocula.modality.video.moving_shapes import write_moving_shapes  # the video package imports torch

    if args.name not in GENERATORS or not args.out:
        raise OculaError(f"usage: ocula datasets make {'|'.join(GENERATORS)} OUT [--format mp4|frames] "
                         f"[--motion vertical|horizontal|scale] [--clips N]")
    counts = write_moving_shapes(args.out, per_class=getattr(args, "clips", 60), motion=getattr(args, "motion", "vertical"),
                                 frames=getattr(args, "frames", 16), size=getattr(args, "size", 32),
                                 fmt=getattr(args, "clip_format", "mp4"), seed=getattr(args, "seed", 0))
    print(f"wrote {counts['train']} training and {counts['test']} test clips to {args.out}")
    return 0
