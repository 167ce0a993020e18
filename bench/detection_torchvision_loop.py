"""Detection baseline of issue 25: the plain torchvision loop a competent user writes by hand from the
torchvision detection tutorial and references/detection, for ocula's detection training to beat.

    python bench/detection_torchvision_loop.py --data DIR --budget-s 600 --threads 2 --json out.json

  --data DIR     COCO layout: DIR/annotations/instances_{train,test}.json + DIR/images/{train,test}/;
                 trained on train, scored on test (val is not used: no selection, the last weights are scored)
  --budget-s S   wall-clock training budget; only training steps (data loading included) count, not
                 model building nor evaluation; training stops at the first step that ends past it

Model: torchvision.models.detection.FCOS on a timm backbone (features_only, last 3 stages) + torchvision's
FeaturePyramidNetwork with LastLevelP6P7 (P3-P7, 256 channels: what `fcos_resnet50_fpn` builds), from
scratch, with FCOS's own GeneralizedRCNNTransform (min_size = max_size = --img-size, ImageNet mean/std).
Data: a Dataset decoding each JPEG with torchvision.io.decode_image + random horizontal flip; DataLoader
(batch 8, 2 workers, collate to tuples); a list of images goes into the model. fp32.

Optimiser (default AdamW lr 1e-3, wd 1e-4): the references' SGD recipe (lr 0.01, momentum 0.9, wd 1e-4,
`--optimizer sgd`) is tuned for an ImageNet-pretrained backbone with frozen BatchNorm and 26 epochs; from
scratch, under a budget of minutes, AdamW is what a careful user picks (it neither diverges nor stalls at
the start and needs no lr search). Both get the references' linear warm-up (factor 1/1000 over the first
epoch, at most 1000 steps), then a constant lr: the number of epochs is not known in advance under a
wall-clock budget, so the references' epoch milestones have nothing to hang on.

Prints the machine line, one line per epoch (loss, images/s), then the test scores (pycocotools, via
bench/detection_common.score: mAP, mAP50, mAP75) and a RESULT line; --json OUT writes all of it.
"""
from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detection_common as dc  # noqa: E402


# ------------------------------------------------------------------------------------------------ data
class CocoBoxes(torch.utils.data.Dataset):
    """One image per item: decoded from its JPEG, float [0, 1] CHW, boxes in pixels (x1, y1, x2, y2)."""

    def __init__(self, paths, targets, train: bool):
        self.paths, self.targets, self.train = paths, targets, train

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from torchvision.io import ImageReadMode, decode_image, read_file

        img = decode_image(read_file(str(self.paths[i])), mode=ImageReadMode.RGB)
        h, w = img.shape[-2:]
        t = torch.as_tensor(self.targets[i], dtype=torch.float32).reshape(-1, 5)
        boxes = t[:, 1:5] * torch.tensor([w, h, w, h], dtype=torch.float32)
        labels = t[:, 0].long()  # 0..K-1: FCOS's sigmoid focal loss has no background class
        if self.train and torch.rand(()) < 0.5:
            img = img.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        return img.float().div_(255), {"boxes": boxes, "labels": labels, "image_id": i}


def collate(batch):
    return tuple(zip(*batch))


# ----------------------------------------------------------------------------------------------- model
class TimmBackboneWithFPN(nn.Module):
    """torchvision's BackboneWithFPN with a timm `features_only` trunk: last 3 stages -> FPN P3-P5 + P6/P7."""

    def __init__(self, name: str, out_channels: int = 256):
        super().__init__()
        import timm
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        n = len(timm.create_model(name, pretrained=False, features_only=True).feature_info)
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(range(n - 3, n)))
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels,
                                         extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels

    def forward(self, x):
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def build_model(backbone: str, num_classes: int, img_size: int, fpn_channels: int = 256, head_convs: int = 4):
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.fcos import FCOSHead

    # FCOS's default anchor generator has 5 levels (8..128 px), matching P3-P7 here
    body = TimmBackboneWithFPN(backbone, fpn_channels)
    head = FCOSHead(fpn_channels, 1, num_classes, num_convs=head_convs)  # one anchor (point) per location
    return FCOS(body, num_classes=num_classes, min_size=img_size, max_size=img_size, score_thresh=0.05,
                detections_per_img=100, head=head)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    ap = dc.peer_parser(__doc__, "COCO layout directory (train + test splits)", batch_size=8)
    ap.add_argument("--backbone", default="resnet18", help="timm model name (features_only)")
    ap.add_argument("--fpn-channels", type=int, default=256, help="FPN and head width (torchvision's: 256)")
    ap.add_argument("--head-convs", type=int, default=4, help="convs per head branch (torchvision's: 4)")
    ap.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw",
                    help="adamw: lr 1e-3 wd 1e-4; sgd: the references' lr 0.01 momentum 0.9 wd 1e-4")
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (adamw) / 0.01 (sgd)")
    ap.add_argument("--max-epochs", type=int, default=10_000, help="a cap besides the budget (default: none)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    info = dc.machine()

    train_paths, train_t, _, names = dc.read_coco_split(args.data, "train")
    test_paths, test_t, test_sizes, test_names = dc.read_coco_split(args.data, "test")
    assert names == test_names, (names, test_names)
    K = len(names)
    print(f"data {args.data}: {len(train_paths)} train / {len(test_paths)} test images, {K} classes, "
          f"{sum(map(len, train_t))} train boxes", flush=True)

    model = build_model(args.backbone, K, args.img_size, args.fpn_channels, args.head_convs)
    n_params = sum(p.numel() for p in model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        lr = args.lr or 0.01
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    else:
        lr = args.lr or 1e-3
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        CocoBoxes(train_paths, train_t, train=True), batch_size=args.batch_size, shuffle=True,
        num_workers=args.workers, collate_fn=collate, drop_last=len(train_paths) > args.batch_size,
        persistent_workers=args.workers > 0, generator=torch.Generator().manual_seed(args.seed))
    # references/detection/engine.py: linear warm-up over the first epoch, factor 1/1000, at most 1000 steps
    warmup_iters = max(1, min(1000, len(loader) - 1))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.001 * (1 - s / warmup_iters) + s / warmup_iters if s < warmup_iters else 1.0)
    print(f"model FCOS + {args.backbone} FPN P3-P7, {n_params / 1e6:.2f} M params, {args.optimizer} lr {lr}, "
          f"batch {args.batch_size}, {len(loader)} steps/epoch, warm-up {warmup_iters} steps, "
          f"budget {args.budget_s:.0f} s, {torch.get_num_threads()} threads", flush=True)

    # ---- train: the clock runs only inside the epochs (the loader's start-up included), not at evaluation
    model.train()
    train_s, images_seen, steps, epochs_done, epoch_log = 0.0, 0, 0, 0.0, []
    stop, nonfinite = False, 0
    for epoch in range(args.max_epochs):
        t0 = time.perf_counter()
        e_images, e_loss, e_steps, e_bad = 0, 0.0, 0, 0
        for images, targets in loader:
            losses = model(list(images), list(targets))
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):  # the references exit here; we skip the step and count it
                e_bad += 1
                opt.zero_grad(set_to_none=True)
            else:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                e_loss += loss.item()
            sched.step()
            e_images += len(images)
            e_steps += 1
            if train_s + time.perf_counter() - t0 >= args.budget_s:
                stop = True
                break
        dt = time.perf_counter() - t0
        train_s += dt
        images_seen += e_images
        steps += e_steps
        nonfinite += e_bad
        epochs_done += e_images / len(loader.dataset) if stop else 1.0
        row = {"epoch": epoch + 1, "loss": e_loss / max(1, e_steps - e_bad), "images": e_images,
               "seconds": dt, "images_per_s": e_images / dt, "train_s_total": train_s}
        epoch_log.append(row)
        print(f"epoch {epoch + 1}: loss {row['loss']:.4f} | {e_images} images in {dt:.1f} s "
              f"({row['images_per_s']:.2f} img/s) | {train_s:.1f}/{args.budget_s:.0f} s"
              + (" | budget spent" if stop else ""), flush=True)
        if stop:
            break
    del loader

    # ---- evaluate the last weights on the test split (list of images, batch of --batch-size, no flip)
    model.eval()
    test_set = CocoBoxes(test_paths, test_t, train=False)
    detections, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(test_set), args.batch_size):
            items = [test_set[j] for j in range(i, min(i + args.batch_size, len(test_set)))]
            for (img, _), out in zip(items, model([img for img, _ in items])):
                h, w = img.shape[-2:]  # FCOS returns boxes in the input image's pixels
                b = out["boxes"].numpy() / np.array([w, h, w, h], np.float32)
                detections.append(np.c_[b, out["scores"].numpy(), out["labels"].numpy()].astype(np.float32))
    eval_s = time.perf_counter() - t0
    scores = dc.score(test_t, detections, test_sizes, num_classes=K)

    result = {"peer": "torchvision_fcos_loop", "backbone": args.backbone, "img_size": args.img_size,
              "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr, "budget_s": args.budget_s,
              "train_s": train_s, "images_seen": images_seen, "steps": steps, "epochs": epochs_done,
              "train_images_per_s": images_seen / train_s if train_s else 0.0, "nonfinite_steps": nonfinite,
              "eval_s": eval_s, "eval_images_per_s": len(test_set) / eval_s, "params": n_params,
              "train_images": len(train_paths), "test_images": len(test_paths), "classes": K, **scores}
    print("test " + dc.format_scores(scores))
    print(f"RESULT torchvision FCOS+{args.backbone}: mAP {scores['map']:.4f} mAP50 {scores['map50']:.4f} "
          f"mAP75 {scores['map75']:.4f} | {result['train_images_per_s']:.2f} train img/s | "
          f"{epochs_done:.2f} epochs in {train_s:.1f} s (budget {args.budget_s:.0f} s) | eval {eval_s:.1f} s", flush=True)
    dc.write_json(args.json, {"command": " ".join([sys.executable] + sys.argv), "args": vars(args),
                              "machine": info, "result": result, "epochs": epoch_log})
    return result


if __name__ == "__main__":
    main()
