from ocula.models.registry import (create_model, default_contract, describe, get_spec, list_models,
                                   register_model)

__all__ = ["create_model", "default_contract", "describe", "get_spec", "list_models", "register_model"]
