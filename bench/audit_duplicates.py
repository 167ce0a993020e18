"""Benchmark: planted exact copies, near copies and train/test leakage in a folder of real photos.

    .venv/bin/python bench/audit_duplicates.py [--out /tmp/audit-dups] [--crop 80]

The folder: non-overlapping crops of scikit-image's sample photos (one class per photo, a train
and a test split). Planted, with a seeded RNG: exact byte copies, near copies (resized, re-encoded
at another JPEG quality, slightly cropped), train→test leakage and copies under another label.
Scored on pairs: two files are a true pair when they come from the same crop.
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "hubble_deep_field",
          "immunohistochemistry", "retina", "coins", "clock", "brick", "grass", "gravel", "cell"]


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def base_crops(size: int) -> list[tuple[str, np.ndarray]]:
    """(photo name, RGB crop) for every non-overlapping crop with some texture (flat sky is not)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        h, w = img.shape[:2]
        for y, x in itertools.product(range(0, h - size + 1, size), range(0, w - size + 1, size)):
            crop = img[y:y + size, x:x + size]
            if has_detail(crop):
                out.append((name, crop))
    return out


def has_detail(crop: np.ndarray) -> bool:
    """Contrast and fine structure in grey: flat sky or a plain wall is not a distinct photo."""
    grey = crop.astype(np.float64).mean(-1)
    detail = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return grey.std() >= 25 and detail >= 6


def near_copy(img, kind: str, rng):
    from PIL import Image

    w, h = img.size
    if kind == "resized":
        f = rng.uniform(0.5, 0.8)
        return img.resize((round(w * f), round(h * f)), Image.Resampling.BILINEAR), ".png"
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(30, 60)))
        return Image.open(io.BytesIO(buf.getvalue())), ".jpg"
    left, top, right, bottom = (int(rng.integers(1, max(2, round(w * 0.05)))) for _ in range(4))
    return img.crop((left, top, w - right, h - bottom)), ".png"


def build(root: Path, size: int, seed: int) -> dict:
    """Write the folder; → ground truth {file: origin id} and the planted lists."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    crops = base_crops(size)
    origin, planted = {}, {"exact": [], "near": [], "leak": [], "conflict": []}
    test_ids = set(rng.choice(len(crops), len(crops) // 5, replace=False).tolist())
    for k, (name, crop) in enumerate(crops):
        split = "test" if k in test_ids else "train"
        path = root / split / name / f"{k:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(path)
        origin[str(path)] = k
    train_ids = [k for k in range(len(crops)) if k not in test_ids]
    chosen = rng.permutation(train_ids)
    plan = [("exact", "train", 30), ("resized", "train", 30), ("jpeg", "train", 30), ("cropped", "train", 30),
            ("exact", "test", 10), ("jpeg", "test", 10), ("exact", "other-class", 5)]
    cursor = 0
    for kind, where, count in plan:
        for k in chosen[cursor:cursor + count]:
            name = crops[k][0]
            src = root / "train" / name / f"{k:04d}.png"
            if where == "other-class":
                name = PHOTOS[(PHOTOS.index(name) + 1) % len(PHOTOS)]
            split = "test" if where == "test" else "train"
            dest = root / split / name / f"{k:04d}-{kind}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if kind == "exact":
                dest = dest.with_suffix(".png")
                shutil.copyfile(src, dest)
            else:
                img, ext = near_copy(Image.open(src).convert("RGB"), kind, rng)
                dest = dest.with_suffix(ext)
                img.save(dest)
            origin[str(dest)] = int(k)
            bucket = {"test": "leak", "other-class": "conflict"}.get(where, "exact" if kind == "exact" else "near")
            planted[bucket].append((str(src), str(dest), kind))
        cursor += count
    return {"origin": origin, "planted": planted, "base_images": len(crops)}


def score(result, truth: dict) -> dict:
    origin = truth["origin"]
    groups = {"exact": [], "near": []}
    leak_files = set()
    for f in result.findings:
        if f.check != "duplicates":
            continue
        paths = [r.path for r in f.items]
        groups[f.details["match"]].append(paths)
        if f.category == "leakage":
            leak_files.update(paths)
    found_pairs = {frozenset(p) for g in groups["exact"] + groups["near"] for p in itertools.combinations(g, 2)}
    exact_pairs = {frozenset(p) for g in groups["exact"] for p in itertools.combinations(g, 2)}
    false_pairs = [p for p in found_pairs if len({origin[x] for x in p}) > 1]
    planted = truth["planted"]

    def recall(items, pool):
        return sum(frozenset((a, b)) in pool for a, b, _ in items) / max(1, len(items))

    near_by_kind = {kind: recall([p for p in planted["near"] if p[2] == kind], found_pairs)
                    for kind in ("resized", "jpeg", "cropped")}
    return {
        "exact_recall": recall(planted["exact"], exact_pairs),
        "near_recall": recall(planted["near"], found_pairs),
        "near_recall_by_kind": near_by_kind,
        "leakage_recall": sum(b in leak_files for _, b, _ in planted["leak"]) / max(1, len(planted["leak"])),
        "conflict_recall": recall(planted["conflict"], found_pairs),
        "reported_pairs": len(found_pairs),
        "false_pairs": len(false_pairs),
        "false_pair_rate": len(false_pairs) / max(1, len(found_pairs)),
        "false_pair_examples": [sorted(p) for p in false_pairs[:5]],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/ocula-bench-audit-dups")
    parser.add_argument("--crop", type=int, default=80, help="side of the base crops in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="docs/bench/audit_duplicates.json")
    args = parser.parse_args(argv)
    import ocula.audit

    root = Path(args.out) / "data"
    shutil.rmtree(args.out, ignore_errors=True)
    truth = build(root, args.crop, args.seed)
    t0 = time.perf_counter()
    result = ocula.audit.audit(str(root), folds=0, out=str(Path(args.out) / "report"))
    elapsed = time.perf_counter() - t0
    figures = score(result, truth)
    record = {"command": " ".join([sys.executable, *sys.argv]), "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "machine": machine(), "files": len(truth["origin"]),
        "base_images": truth["base_images"], "planted": {k: len(v) for k, v in truth["planted"].items()},
        "audit_s": round(elapsed, 2), "near_threshold": result.counts.get("near_similarity_threshold"), **figures}
    print(json.dumps(record, indent=2))
    if args.json:
        from ocula.io import write_json

        write_json(args.json, record)
    ok = (figures["exact_recall"] == 1.0 and figures["near_recall"] >= 0.9 and figures["false_pair_rate"] <= 0.01
          and figures["leakage_recall"] == 1.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
