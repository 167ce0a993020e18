"""Issue 28: the plain CNN-LSTM loop of bench/clips_plain_loops.py with ocula's pieces swapped in one at a time.

    python bench/clips_speed_bisect.py --data /tmp/clips2/speed_frames --seeds 0,1,2,3 --knobs tflip
    python bench/clips_speed_bisect.py --data ... --knobs pdiff,norm,wd,warm,cos,ep10,hflip,shift

8 evenly spaced frames, batches of 8, Adam(W) 1e-3, 12 epochs, inputs x/255 − 0.5, no augmentation, last epoch
scored on DATA/test, unless a knob says otherwise:
    ocmodel  ocula's cnn_lstm (seed_cnn encoder, no frame differences) instead of the written-out one
    pdiff    frame differences (ocula.models.recurrent.with_frame_differences) into a 6-channel encoder
    norm     (x/255 − 0.5) / 0.5, ocula's scaling for data from scratch
    wd       AdamW weight decay 0.05      warm   one epoch of linear warm-up     cos   cosine decay
    ep10     10 epochs                    ep30   30 epochs
    hflip    half the clips mirrored      tflip  half the clips played backwards
    shift    one shift of ±size/7 a clip, replicate-padded
Prints one line: the knobs, the test accuracy at each seed and their mean.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import clips_plain_loops as plain  # noqa: E402

KNOBS = {"ocmodel", "pdiff", "norm", "wd", "warm", "cos", "ep10", "ep30", "hflip", "tflip", "shift"}


class WithDifferences(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        from ocula.models.recurrent import with_frame_differences

        return self.inner(with_frame_differences(x))


def build(knobs: set, size: int, classes: int) -> nn.Module:
    if "ocmodel" in knobs:
        from ocula.models.registry import create_model

        return create_model("cnn_lstm", classes, 3, size, backbone="seed_cnn", frames=plain.PLAIN["frames"])
    model = plain.PlainLSTM(size, classes)
    if "pdiff" in knobs:
        model.cnn.conv[0] = nn.Conv2d(6, 32, 3)
        model = WithDifferences(model)
    return model


def augment(x: torch.Tensor, knobs: set, gen: torch.Generator) -> torch.Tensor:
    if "hflip" in knobs:
        m = torch.rand(len(x), generator=gen) < 0.5
        x[m] = x[m].flip(-1)
    if "tflip" in knobs:
        m = torch.rand(len(x), generator=gen) < 0.5
        x[m] = x[m].flip(1)
    if "shift" in knobs:
        size = x.shape[-1]
        s = size // 7
        padded = nn.functional.pad(x.flatten(1, 2), (s, s, s, s), mode="replicate")
        out = torch.empty_like(x)
        for i in range(len(x)):
            dx, dy = torch.randint(0, 2 * s + 1, (2,), generator=gen).tolist()
            out[i] = padded[i, :, dy:dy + size, dx:dx + size].view_as(x[i])
        x = out
    return x


def run(data: Path, seed: int, knobs: set, xtr, ytr, xte, yte, classes: int) -> float:
    torch.manual_seed(seed)
    model = build(knobs, xtr.shape[-1], classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05 if "wd" in knobs else 0.0)
    epochs = 10 if "ep10" in knobs else 30 if "ep30" in knobs else 12
    per_epoch = -(-len(ytr) // 8)
    total, warm = epochs * per_epoch, per_epoch if "warm" in knobs else 0

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm))) if "cos" in knobs else 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    scale = 0.5 if "norm" in knobs else 1.0
    norm = lambda u8: (u8.float() / 255 - 0.5) / scale  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(ytr)).split(8):
            loss = nn.functional.cross_entropy(model(augment(norm(xtr[idx]), knobs, gen)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(norm(xte[i:i + 32])).argmax(1) for i in range(0, len(yte), 32)])
    return round(float((pred == yte).float().mean()), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="DATA/{train,test}/<class>/... (clips_plain_loops.py --make)")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--knobs", default="", help="comma-separated, of: " + ", ".join(sorted(KNOBS)))
    p.add_argument("--frames", type=int, default=8)
    args = p.parse_args()
    knobs = {k for k in args.knobs.split(",") if k}
    if knobs - KNOBS:
        p.error(f"unknown knobs: {', '.join(sorted(knobs - KNOBS))}")
    torch.set_num_threads(1)
    plain.PLAIN["frames"] = args.frames
    data = Path(args.data)
    xtr, ytr, classes = plain.read_split(data / "train")
    xte, yte, _ = plain.read_split(data / "test")
    accs = [run(data, int(s), knobs, xtr, ytr, xte, yte, len(classes)) for s in args.seeds.split(",")]
    print(f"knobs={sorted(knobs)} accs={accs} mean={np.mean(accs):.3f}", flush=True)


if __name__ == "__main__":
    main()
