"""Imports every family module once so their @register_model decorators run."""
from ocula.models import cnn  # noqa: F401
