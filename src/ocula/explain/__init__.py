"""Explain predictions: class activation maps for CNNs, attention rollout for ViTs, occlusion and
integrated gradients as references, per-frame maps for video.

    from ocula.explain import explain
    maps = explain("runs/shoes", ["a.jpg"], method="gradcam")    # list of (H, W) arrays in [0, 1]

Heavy imports (pytorch-grad-cam, Captum) happen inside the functions that use them.
"""
from __future__ import annotations

__all__ = ["explain", "explain_images", "explain_tensor", "explain_to_folder", "explain_errors", "Explanation",
           "METHODS"]


def __getattr__(name):
    if name in ("explain", "explain_images", "explain_tensor", "explain_to_folder", "Explanation", "METHODS"):
        from ocula.explain import api  # lazy: `ocula --help` imports this package (explain/cli.py), not its code

        return getattr(api, name)
    if name == "explain_errors":
        from ocula.explain.gallery import explain_errors  # lazy: as above

        return explain_errors
    raise AttributeError(f"module 'ocula.explain' has no attribute {name!r}")
