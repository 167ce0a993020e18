"""Some of scikit-learn's digits as PNG files, as a user would send them to a model (tests/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def digit_files(folder: Path, n: int = 12) -> list[str]:
    """The last `n` digits (values 0..16 scaled to 0..255, as ocula's built-in digits) as 8×8 grey PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(load_digits().images[-n:]):
        paths.append(str(folder / f"digit-{i}.png"))
        Image.fromarray((img * 255 / 16).round().astype(np.uint8), "L").save(paths[-1])
    return paths
