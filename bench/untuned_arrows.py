"""A folder nobody tuned on: left/right arrows, odd non-square sizes (33-60 × 29-46 px), grey saved as RGB
JPEGs, mirror-asymmetric classes. Trained and evaluated with no flags.

    python bench/untuned_arrows.py /tmp/untuned     # then: ocula train /tmp/untuned/arrows --out RUN;
                                                    #       ocula evaluate RUN /tmp/untuned/arrows [--tta]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_arrows(root: Path, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", 300), ("test", 120)):
        for cls in ("left", "right"):
            out = root / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = int(rng.integers(33, 61)), int(rng.integers(29, 47))
                img = Image.new("RGB", (w, h), tuple([int(rng.integers(150, 255))] * 3))
                draw = ImageDraw.Draw(img)
                cy, cx = h / 2 + rng.normal(0, 3), w / 2 + rng.normal(0, 3)
                half = min(w, h) * rng.uniform(0.3, 0.45)
                ink = (int(rng.integers(0, 90)),) * 3
                draw.line([(cx - half, cy), (cx + half, cy)], fill=ink, width=3)
                side = -1 if cls == "left" else 1
                tip = cx + side * half
                draw.polygon([(tip + side * 6, cy), (tip - side * 4, cy - 6), (tip - side * 4, cy + 6)], fill=ink)
                img.save(out / f"{cls}_{i:03d}.jpg", quality=85)
    return root


if __name__ == "__main__":
    print(make_arrows(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/untuned") / "arrows"))
