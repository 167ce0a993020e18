"""Right by default: `ocula train FOLDER` with no flags on folders nobody tuned ocula on.

    python bench/right_by_default.py [--which digits,digits_old,motion,photos,fmnist] [--json OUT]

Datasets, written fresh by this script (none of them is used by ocula's tests or recipes):
- digits-png   scikit-learn's 1,797 handwritten digits as 32×32 grey PNGs (upscaled from 8×8), an 80/20
               stratified train/test split on disk. Mirroring changes labels.
- motion       moving-shapes clips written as H.264 files, horizontal motion: left vs right.
               Mirroring and reversing time both swap the labels.
- photos       crops of 8 of scikit-image's colour photographs (class = the photo), 64×64 JPEG.
               Mirroring keeps labels.
- faces        scikit-image's LFW subset, face vs not-face, 25×25 grey photos. Mirroring keeps labels.
- fashion-mnist the built-in. Mirroring keeps labels.

Each dataset is trained with no flags (hflip=auto) and, for the flip comparison, with --hflip true and
--hflip false (same seed). `digits_old` runs the default of ocula before this change (commit
3ff4c1a, a git worktree) on digits-png, for the speed comparison.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

from ocula.run_dir import monitor_value  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "3ff4c1a"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
          "immunohistochemistry")


def make_digits_png(root: Path, size: int = 32, seed: int = 0) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    train, test = train_test_split(idx, test_size=0.2, stratify=d.target, random_state=seed)
    for split, rows in (("train", train), ("test", test)):
        for i in rows:
            img = Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8), "L").resize((size, size),
                                                                                          Image.BILINEAR)
            out = root / split / str(d.target[i])
            out.mkdir(parents=True, exist_ok=True)
            img.save(out / f"digit_{i:04d}.png")
    return root


def make_photos(root: Path, per_class: int = 90, test_per_class: int = 40, size: int = 64, seed: int = 0) -> Path:
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        pixels = getattr(skimage.data, name)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo_motorcycle: the left view
        photo = Image.fromarray(pixels).convert("RGB")
        w, h = photo.size
        for split, n in (("train", per_class), ("test", test_per_class)):
            out = root / split / name
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = int(min(w, h) * rng.uniform(0.25, 0.6))
                x0, y0 = rng.integers(0, w - side), rng.integers(0, h - side)
                crop = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
                crop.save(out / f"{name}_{i:03d}.jpg", quality=90)
    return root


def make_faces(root: Path, seed: int = 0) -> Path:
    """scikit-image's LFW subset: 100 faces and 100 non-face patches, 25×25 grey; a 75/25 split."""
    import skimage.data
    from PIL import Image

    images = skimage.data.lfw_subset()  # (200, 25, 25) floats in [0, 1]; the first 100 are faces
    order = np.random.default_rng(seed).permutation(100)
    for label, offset in (("face", 0), ("other", 100)):
        for rank, i in enumerate(order):
            split = "train" if rank < 75 else "test"
            out = root / split / label
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray((images[offset + i] * 255).astype(np.uint8), "L").save(out / f"{label}_{i:03d}.png")
    return root


def make_motion(root: Path) -> Path:
    from ocula.modality.video.moving_shapes import write_moving_shapes

    write_moving_shapes(root, per_class=500, test_per_class=100, motion="horizontal", frames=16, size=32)
    return root


def run(data: Path, out: Path, flags: list[str], src: Path = ROOT / "src") -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OCULA_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ocula", "train", str(data), "--out", str(out), *flags],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"train failed ({' '.join(flags)}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("input ", "hflip", "time_flip", "augment"))]
    ev = subprocess.run([sys.executable, "-m", "ocula", "evaluate", str(out), str(data), "--json", "-"], env=env,
                        capture_output=True, text=True)
    if ev.returncode:
        raise SystemExit(f"evaluate failed:\n{ev.stderr[-3000:]}")
    report = json.loads(ev.stdout)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((out / "summary.json").read_text())
    data_json = json.loads((out / "data.json").read_text())
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_avg_1m": round(os.getloadavg()[0], 2),
            "flags": flags, "printed": lines, "test_accuracy": report["accuracy"], "split": report["split"],
            "val_acc_by_epoch": [float(monitor_value(r)) for r in rows if monitor_value(r)],  # old and new runs
            "train_time_s": summary["train_time_s"], "wall_s": round(wall, 1),
            "epoch_s": [round(float(r["epoch_s"]), 2) for r in rows],
            "contract": data_json.get("contract"), "flips": data_json.get("flips")}


def flip_trio(data: Path, work: Path, name: str, extra: list[str]) -> dict:
    results = {}
    for label, flags in (("auto", []), ("true", ["--hflip", "true"]), ("false", ["--hflip", "false"])):
        results[label] = run(data, work / f"{name}-{label}", extra + flags)
        r = results[label]
        print(f"{name} hflip={label}: test {r['test_accuracy']:.4f}, {r['train_time_s']:.1f} s training; "
              f"{' | '.join(r['printed'])}", flush=True)
    return results


def old_worktree(work: Path) -> Path:
    tree = work / "ocula-old"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), OLD_COMMIT], check=True,
                       capture_output=True)
    return tree


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--which", default="digits,digits_old,motion,photos,faces,fmnist")
    p.add_argument("--json", default=str(ROOT / "docs/bench/right_by_default.json"))
    p.add_argument("--work", default=None)
    args = p.parse_args()
    which = args.which.split(",")
    out = {"machine": print_machine(), "results": {}}
    if Path(args.json).is_file():
        out["results"] = json.loads(Path(args.json).read_text()).get("results", {})
    work = Path(args.work or tempfile.mkdtemp(prefix="ocula-rbd-"))
    res = out["results"]
    if {"digits", "digits_old"} & set(which):
        digits = make_digits_png(work / "digits-png") if not (work / "digits-png").exists() else work / "digits-png"
    if "digits" in which:
        res["digits-png"] = flip_trio(digits, work, "digits", [])
    if "digits_old" in which:
        tree = old_worktree(work)
        r = run(digits, work / "digits-old-default", [], src=tree / "src")
        res["digits-png"]["old_default"] = r
        print(f"digits old default: test {r['test_accuracy']:.4f}, {r['train_time_s']:.1f} s training", flush=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    if "motion" in which or "motion_transformer" in which:
        motion = make_motion(work / "motion") if not (work / "motion").exists() else work / "motion"
    if "motion" in which:
        res["motion-cnn_lstm"] = flip_trio(motion, work, "motion-cnn_lstm", ["--model", "cnn_lstm"])
    if "motion" in which or "motion_transformer" in which:
        r = run(motion, work / "motion-cnn_transformer", ["--model", "cnn_transformer"])
        res["motion-cnn_transformer"] = {"auto": r}
        print(f"motion cnn_transformer: test {r['test_accuracy']:.4f} | {' | '.join(r['printed'])}", flush=True)
    if "photos" in which:
        photos = make_photos(work / "photos") if not (work / "photos").exists() else work / "photos"
        res["photos"] = flip_trio(photos, work, "photos", [])
    if "faces" in which:
        faces = make_faces(work / "faces") if not (work / "faces").exists() else work / "faces"
        res["faces"] = flip_trio(faces, work, "faces", [])
    if "fmnist" in which:
        res["fashion-mnist"] = flip_trio(Path("fashion-mnist"), work, "fmnist", [])
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}; work folder {work}")


if __name__ == "__main__":
    main()
