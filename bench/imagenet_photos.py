"""An ImageNet model with no training: `ocula import` of the PyPI EfficientNet-Lite0 file, then top-5 on
scikit-image's sample photos, through the same API a user calls.

    python bench/imagenet_photos.py [--out /tmp/ocula-lite0]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_machine  # noqa: E402

PHOTOS = ("chelsea", "coffee", "rocket", "camera", "astronaut")


def main(argv=None) -> int:
    from skimage import data as photos

    import ocula
    from transfer_lowdata import lite0_file

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    print_machine()
    out = Path(args.out or tempfile.mkdtemp(prefix="ocula-lite0-")) / "lite0"
    shutil.rmtree(out, ignore_errors=True)
    model = ocula.load(ocula.import_model("efficientnet_lite0", pretrained=lite0_file(), out=str(out)))
    print("| photo | top-5 (probability) |\n|---|---|")
    for name in PHOTOS:
        image = getattr(photos, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        cells = ", ".join(f"{label} {p:.2f}" for label, p in model.predict(image, topk=5).topk)
        print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
