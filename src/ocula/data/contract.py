"""A model's input contract: what a raw image must become before the model sees it.

It travels inside every saved model, so predict, serve, export and explain build the same
preprocessing from it (nothing guesses twice).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional


@dataclass
class DataContract:
    input_size: int = 224  # square side in pixels
    channels: int = 3  # 1 = grey, 3 = RGB
    mean: tuple = (0.485, 0.456, 0.406)  # per channel, on the [0, 1] scale
    std: tuple = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    crop_pct: float = 1.0  # eval: resize the short side to input_size / crop_pct, then centre-crop
    resize: str = "crop"  # crop: as crop_pct says; stretch: the whole image to the square (boxes must stay whole)
    frames: Optional[int] = None  # clip length for video models; None for images

    def __post_init__(self):
        self.mean = _per_channel(self.mean, self.channels)
        self.std = _per_channel(self.std, self.channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataContract":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


def _per_channel(values, channels: int) -> tuple:
    """Fit a mean/std tuple to the channel count: RGB stats averaged for grey, grey repeated for RGB."""
    values = tuple(float(v) for v in (values if isinstance(values, (tuple, list)) else (values,)))
    if len(values) == channels:
        return values
    if channels == 1:
        return (sum(values) / len(values),)
    if len(values) == 1:
        return values * channels
    raise ValueError(f"cannot fit {len(values)} statistics to {channels} channels")
