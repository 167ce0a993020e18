"""Imports every family module once so their @register_model decorators run."""
from ocula.models import cnn  # noqa: F401
from ocula.models import recurrent  # noqa: F401
from ocula.models import attention  # noqa: F401
from ocula.models import vit_small  # noqa: F401
from ocula.models import detectors  # noqa: F401
