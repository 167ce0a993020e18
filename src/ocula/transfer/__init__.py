"""Pretrained models and transfer learning: load any weights, fine-tune, embed, retrieve, verify.

    from ocula.transfer import read_weights, load_weights, embed_dataset, build_index, calibrate, verify_pair

Heavy pieces load on first use, so `import ocula.transfer` stays cheap.
"""
from __future__ import annotations

_EXPORTS = {
    "read_weights": "weights", "load_weights": "weights", "LoadReport": "weights",
    "layer_groups": "strategies", "param_groups": "strategies", "GradualUnfreezing": "strategies",
    "MarginTask": "margin",
    "Embedder": "embed", "Embeddings": "embed", "embed_dataset": "embed",
    "EmbeddingIndex": "retrieval", "build_index": "retrieval", "similar": "retrieval",
    "precision_at_k": "retrieval",
    "verification_metrics": "verify", "calibrate": "verify", "verify_pair": "verify", "Gallery": "verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"ocula.transfer.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ocula.transfer' has no attribute {name!r}")
