"""ocula: image and video recognition with large models — data → train → evaluate → explain → export → serve.

Heavy modules load on first use, so `import ocula` stays fast.
"""
from ocula.version import __version__

__all__ = ["train", "load", "evaluate", "predict", "batch_predict", "import_model", "create_model", "list_models",
           "Trainer", "TrainConfig", "__version__"]


def __getattr__(name):
    if name in ("train", "load", "evaluate", "predict", "batch_predict"):
        from ocula import api

        return getattr(api, name)
    if name in ("create_model", "list_models"):
        from ocula.models import registry

        return getattr(registry, name)
    if name == "import_model":
        from ocula.engine.model_import import import_model

        return import_model
    if name == "Trainer":
        from ocula.engine.trainer import Trainer

        return Trainer
    if name == "TrainConfig":
        from ocula.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'ocula' has no attribute {name!r}")
