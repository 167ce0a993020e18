"""Issue 28: ocula's clip defaults beside a plain hand-written CNN-LSTM (and temporal-attention) loop.

    python bench/clips_plain_loops.py --make direction --data /tmp/clips/direction     # write the clip set once
    python bench/clips_plain_loops.py --data /tmp/clips/direction \
        --rows plain_lstm,plain_attention,issue,no_flags --json docs/bench/clips_plain_loops.json
    python bench/clips_plain_loops.py --data ... --rows issue --ocula 'lr1e-3={"lr": 0.001}'   # a bisect step

The plain loops read DATA/{train,test}/<class>/ (mp4 files or frame folders) with PyAV/PIL, keep every
clip in RAM, and train a per-frame CNN (the layers of ocula's seed_cnn, written out: 3×(conv3×3-ReLU-
maxpool) 32/64/128, dense 512) → LSTM(256) → linear on the last step (`plain_lstm`), or the same CNN →
learned positions → one transformer layer → mean → linear (`plain_attention`): Adam 1e-3, 12 epochs,
batches of 8, inputs x/255 − 0.5, no augmentation, no validation split, the last epoch scored. ocula's
rows call `ocula.train` with the options named in ROWS (or given with --ocula NAME=JSON) and score the
run with `ocula.evaluate` on DATA/test, which no row trains or selects on. Writes JSON with every row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

PLAIN = dict(epochs=12, batch_size=8, lr=1e-3, frames=16, hidden=256)
ROWS = {  # ocula rows: options for ocula.train (data and out are added)
    "issue": dict(model="cnn_lstm", backbone="seed_cnn", frames=16, epochs=12),  # the command
    "no_flags": dict(model="cnn_lstm"),  # what a new user types (a video model must be named)
    "transformer": dict(model="cnn_transformer", backbone="seed_cnn", frames=16, epochs=12),
    "seed_lstm": dict(model="seed_lstm", frames=16, epochs=12),
    "seed_attention": dict(model="seed_attention_video", frames=16, epochs=12),
}


# ------------------------------------------------------------------------------ plain data
def read_split(root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """root/<class>/<clip>(.mp4 | /*.png) → uint8 (N, T, 3, H, W), labels, classes."""
    import av
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    clips, labels = [], []
    for label, cls in enumerate(classes):
        for item in sorted((root / cls).iterdir()):
            if item.is_dir():
                frames = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(item.iterdir())]
            else:
                with av.open(str(item)) as c:
                    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            idx = np.minimum(((np.arange(PLAIN["frames"]) + 0.5) * len(frames) / PLAIN["frames"]).astype(int),
                             len(frames) - 1)
            clips.append(np.stack([frames[i] for i in idx]))
            labels.append(label)
    x = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).contiguous()
    return x, torch.tensor(labels), classes


# ------------------------------------------------------------------------------ plain models
class FrameCNN(nn.Module):
    def __init__(self, size: int, out: int = 512):
        super().__init__()
        layers, cin = [], 3
        for w in (32, 64, 128):
            layers += [nn.Conv2d(cin, w, 3), nn.ReLU(), nn.MaxPool2d(2)]
            cin = w
        self.conv = nn.Sequential(*layers)
        flat = self.conv(torch.zeros(1, 3, size, size)).numel()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, out), nn.ReLU())

    def forward(self, x):  # (B, T, C, H, W) → (B, T, out)
        b, t = x.shape[:2]
        return self.fc(self.conv(x.flatten(0, 1))).view(b, t, -1)


class PlainLSTM(nn.Module):
    def __init__(self, size, classes):
        super().__init__()
        self.cnn, self.rnn = FrameCNN(size), nn.LSTM(512, PLAIN["hidden"], batch_first=True)
        self.head = nn.Linear(PLAIN["hidden"], classes)

    def forward(self, x):
        out, _ = self.rnn(self.cnn(x))
        return self.head(out[:, -1])


class PlainAttention(nn.Module):
    """cnn_transformer's kind, written out: frame CNN → linear → class token + learned positions → two pre-norm
    transformer layers → LayerNorm → the class token → linear."""

    def __init__(self, size, classes, dim=256):
        super().__init__()
        self.cnn, self.proj = FrameCNN(size), nn.Linear(512, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, PLAIN["frames"] + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        z = self.proj(self.cnn(x))
        z = torch.cat([self.cls.expand(len(z), -1, -1), z], 1) + self.pos
        return self.head(self.norm(self.blocks(z))[:, 0])


class PlainSeedLSTM(nn.Module):
    """seed_lstm written out: three stacked LSTM(128) over flattened frames, linear on the last step."""

    def __init__(self, size, classes):
        super().__init__()
        self.rnn = nn.LSTM(3 * size * size, 128, num_layers=3, batch_first=True)
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        out, _ = self.rnn(x.flatten(2))
        return self.head(out[:, -1])


class PlainSeedAttention(nn.Module):
    """seed_attention_video written out: Dense(256, relu) on each flattened frame + learned positions,
    Q/K/V = Dense(64, relu), softmax(QKᵀ/√d)·V, mean over frames, linear."""

    def __init__(self, size, classes):
        super().__init__()
        self.embed = nn.Linear(3 * size * size, 256)
        self.pos = nn.Parameter(torch.zeros(1, PLAIN["frames"], 256))
        self.q, self.k, self.v = nn.Linear(256, 64), nn.Linear(256, 64), nn.Linear(256, 64)
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        h = torch.relu(self.embed(x.flatten(2))) + self.pos
        q, k, v = torch.relu(self.q(h)), torch.relu(self.k(h)), torch.relu(self.v(h))
        w = (q @ k.transpose(1, 2) / 8.0).softmax(-1)
        return self.head((w @ v).mean(1))


PLAIN_MODELS = {"plain_lstm": PlainLSTM, "plain_attention": PlainAttention, "plain_seed_lstm": PlainSeedLSTM,
                "plain_seed_attention": PlainSeedAttention}
# The transformer gets the usual transformer recipe (AdamW 3e-4, a one-epoch linear warmup, then cosine,
# gradient norm clipped at 1): with plain Adam 1e-3 and no warmup one mean-pooled layer stayed at chance.
RECIPES = {"plain_attention": dict(opt="adamw", lr=3e-4, warmup_epochs=1, cosine=True, clip=1.0)}


def plain_row(name: str, data: Path, seed: int) -> dict:
    torch.manual_seed(seed)
    xtr, ytr, classes = read_split(data / "train")
    xte, yte, _ = read_split(data / "test")
    model = PLAIN_MODELS[name](xtr.shape[-1], len(classes))
    recipe = dict(opt="adam", lr=PLAIN["lr"], warmup_epochs=0, cosine=False, clip=None, **{})
    recipe.update(RECIPES.get(name, {}))
    opt = (torch.optim.AdamW if recipe["opt"] == "adamw" else torch.optim.Adam)(model.parameters(), lr=recipe["lr"])
    steps_per_epoch = -(-len(ytr) // PLAIN["batch_size"])
    total, warm = PLAIN["epochs"] * steps_per_epoch, recipe["warmup_epochs"] * steps_per_epoch

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        if recipe["cosine"]:
            return 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    norm = lambda u8: u8.float() / 255 - 0.5  # noqa: E731
    t0 = time.perf_counter()
    for _ in range(PLAIN["epochs"]):
        model.train()
        for idx in torch.randperm(len(ytr)).split(PLAIN["batch_size"]):
            loss = nn.functional.cross_entropy(model(norm(xtr[idx])), ytr[idx])
            opt.zero_grad()
            loss.backward()
            if recipe["clip"]:
                nn.utils.clip_grad_norm_(model.parameters(), recipe["clip"])
            opt.step()
            sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(norm(xte[i:i + 32])).argmax(1) for i in range(0, len(yte), 32)])
    return {"row": name, "options": {**PLAIN, **recipe}, "test_accuracy": round(float((pred == yte).float().mean()), 4),
            "test_clips": len(yte), "train_clips": len(ytr), "train_time_s": round(train_s, 1),
            "test_pred": pred.tolist()}


# ------------------------------------------------------------------------------ ocula rows
def ocula_row(name: str, options: dict, data: Path, seed: int, work: Path) -> dict:
    import ocula

    t0 = time.perf_counter()
    run = ocula.train(str(data), out=str(work / name), seed=seed, threads=1, report=False, **options)
    wall = time.perf_counter() - t0
    report = ocula.evaluate(run.dir, str(data), split="test")
    resolved = json.loads((Path(run.dir) / "resolved.json").read_text())
    chosen = {k: v["value"] for k, v in resolved["choices"].items()
              if k in ("batch_size", "epochs", "peak_lr", "augment", "cross_fit", "input_size")}
    cfg = resolved["config"]
    test = data / "test"  # per-clip predictions in read_split's order, for paired differences with the plain rows
    classes = sorted(d.name for d in test.iterdir() if d.is_dir())
    clips = [str(item) for cls in classes for item in sorted((test / cls).iterdir())]
    pred = [classes.index(p.label) if p.label in classes else -1 for p in ocula.predict(run.dir, clips)]
    return {"row": name, "options": options, "test_accuracy": round(float(report["accuracy"]), 4),
            "test_clips": int(report.get("n", report.get("samples", 0)) or 0), "resolved": chosen,
            "flips": {k: v.get("use") for k, v in resolved.get("flips", {}).items()},
            "schedule": cfg.get("optim", {}).get("schedule"), "wall_s": round(wall, 1),
            "val_split": (Path(data) / "val").is_dir(), "test_pred": pred}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="DATA/{train,test}/<class>/...")
    p.add_argument("--make", help="write a synth_clips set (direction, rotation, speed, appear) to --data first")
    p.add_argument("--format", default="mp4", help="with --make: mp4 or frames")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--val-per-class", type=int, default=0, help="with --make: also a val/ split")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--rows", default="", help="comma-separated: plain_lstm, plain_attention, " + ", ".join(ROWS))
    p.add_argument("--ocula", action="append", default=[], help="NAME=JSON: an extra ocula row")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--json", help="append the rows to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    if args.make:
        from ocula.data.synth_clips import write_clip_set

        print(write_clip_set(data, args.make, per_class=args.per_class, test_per_class=args.test_per_class,
                             val_per_class=args.val_per_class, size=args.size, fmt=args.format))
    rows = dict(ROWS)
    wanted = [r for r in args.rows.split(",") if r]
    for extra in args.ocula:
        name, _, options = extra.partition("=")
        rows[name] = json.loads(options)
        wanted.append(name)
    info = print_machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for name in wanted:
                row = plain_row(name, data, seed) if name.startswith("plain_") else ocula_row(
                    name, rows[name], data, seed, Path(tmp) / f"s{seed}")
                row.update(seed=seed, data=str(data))
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        old = json.loads(Path(args.json).read_text()) if os.path.exists(args.json) else {"runs": []}
        old["runs"].append({"machine": info, "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                                 time.gmtime()),
                            "rows": results})
        Path(args.json).write_text(json.dumps(old, indent=1))


if __name__ == "__main__":
    main()
