"""Models: one registry for every family (ocula's own and any timm name).

Importing the package registers ocula's own families (their @register_model decorators run in
`families`), after the registry they register into.
"""
from ocula.models.registry import (create_model, default_contract, describe, get_spec, list_models,
                                   register_model)
from ocula.models import families  # noqa: F401,E402  (registers the built-in families)

__all__ = ["create_model", "default_contract", "describe", "get_spec", "list_models", "register_model"]
