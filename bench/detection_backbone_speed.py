"""Issue 25: training images per second of ocula's FCOS detector on candidate timm backbones, on this CPU.

    python bench/detection_backbone_speed.py --backbones efficientnet_lite0,cs3darknet_s,regnetx_002 --threads 1

One optimizer step (forward with losses, backward, AdamW) of `build_detector("fcos", 4, backbone=B)` at
--size px, batch --batch, random images and three boxes each, channels_last as ocula trains (or NCHW, or
compiled); the median of the steps after --warmup. A speed figure only: what the backbones learn is
measured by detection_peers.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
from common import print_machine  # noqa: E402

DEFAULT = "efficientnet_lite0,resnet10t,resnet18,cs3darknet_s,regnetx_002,hgnetv2_b0,mobilenetv3_large_100"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default=DEFAULT)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="as ocula trains (--no-channels-last: NCHW, as a plain loop does)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile backbone, FPN and head (the loss stays eager)")
    args = ap.parse_args()
    import torch

    from ocula.models.detection import build_detector

    torch.set_num_threads(args.threads)
    print_machine()
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=layout)
    targets = torch.zeros(args.batch, 3, 5)
    targets[:, :, 0] = torch.tensor([0.0, 1.0, 2.0])
    targets[:, :, 1:3], targets[:, :, 3:] = 0.2, 0.6
    for name in args.backbones.split(","):
        torch.manual_seed(0)
        model = build_detector("fcos", 4, backbone=name, img_size=args.size).train()
        model = model.to(memory_format=layout)
        if args.compile:
            model.backbone, model.fpn, model.head = (torch.compile(m) for m in (model.backbone, model.fpn, model.head))
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        times = []
        for _ in range(args.warmup + args.steps):
            start = time.perf_counter()
            model(x, targets)["loss"].backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - start)
        step = statistics.median(times[args.warmup:])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:24s} {params:5.2f} M params  {step:.3f} s/step  {args.batch / step:5.1f} img/s  "
              f"(first step {times[0]:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
