"""Pretrained models and transfer learning: load any weights, fine-tune, embed, retrieve, verify.

Loading weights and the fine-tuning strategies are part of training (ocula.engine.weights,
ocula.engine.strategies, ocula.engine.plan); margin losses are a task (ocula.tasks.margin). This
package adds what is built on a trained model: embeddings, retrieval and verification.

    from ocula.transfer import read_weights, load_weights, embed_dataset, build_index, calibrate, verify_pair

Heavy pieces load on first use, so `import ocula.transfer` stays cheap.
"""
from __future__ import annotations

from ocula.lazy import lazy_getattr

_EXPORTS = {
    "read_weights": "ocula.engine.weights", "load_weights": "ocula.engine.weights",
    "LoadReport": "ocula.engine.weights", "layer_groups": "ocula.engine.strategies",
    "param_groups": "ocula.engine.strategies", "GradualUnfreezing": "ocula.engine.strategies",
    "MarginTask": "ocula.tasks.margin",
    "Embedder": "ocula.transfer.embed", "Embeddings": "ocula.transfer.embed", "embed_dataset": "ocula.transfer.embed",
    "EmbeddingIndex": "ocula.transfer.retrieval", "build_index": "ocula.transfer.retrieval",
    "similar": "ocula.transfer.retrieval", "precision_at_k": "ocula.transfer.retrieval",
    "verification_metrics": "ocula.transfer.verify", "calibrate": "ocula.transfer.verify",
    "verify_pair": "ocula.transfer.verify", "Gallery": "ocula.transfer.verify",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
